//! Faults, with nothing lost or corrupted: the database restarted while people are connected,
//! Redis restarted under the Redis adapter, and one of two processes killed with SIGKILL. The
//! database and Redis that go away are private to each test (see `private_servers`), so the
//! shared ones keep serving the rest of the suite.
//!
//! Covered elsewhere: a database unreachable at start (one clear line, non-zero exit) in
//! `startup`; a killed node's people leaving the others' presence lists in `presence`; a client
//! replayed what it missed after reconnecting to another process in `history_processes`.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use futures_util::StreamExt as _;
use reqwest::{Response, StatusCode, header};
use serde_json::Value;
use tokio::{sync::mpsc, time::Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    cable_client::{Cable, Socket, identifier, page_identifier, presence, signed_stream_in},
    helpers::{Backend, TestApp, TestDatabase, free_port, task_id_in, task_title},
    private_servers::{PrivatePostgres, PrivateRedis},
    processes::{self, Cluster, ServerProcess},
};

/// How long a service may take to be usable again after it is back.
const RECOVERY: Duration = Duration::from_secs(30);

/// How long a broadcast may take to arrive once everything is up.
const BROADCAST: Duration = Duration::from_secs(3);

/// What a socket's reader saw.
#[derive(Debug)]
enum Event {
    Frame(Value),
    /// The socket closed (with this close frame, or failed with this error).
    Closed(String),
}

/// A socket read all the time, as a browser reads its own (answering the server's pings in the
/// background, however long the test spends elsewhere); the test takes its frames from here.
struct Tab {
    events: mpsc::UnboundedReceiver<Event>,
    reader: tokio::task::JoinHandle<()>,
}

impl Tab {
    fn new(mut ws: Socket) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let closed = loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let frame = serde_json::from_str(&text).expect("frames are JSON");
                        if tx.send(Event::Frame(frame)).is_err() {
                            return;
                        }
                    }
                    Some(Ok(Message::Close(close))) => break format!("close frame {close:?}"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break format!("error: {e}"),
                    None => break "end of stream".to_owned(),
                }
            };
            let _ = tx.send(Event::Closed(closed));
        });
        Self { events, reader }
    }

    /// The next event before `deadline`, if any.
    async fn next_before(&mut self, deadline: Instant) -> Option<Event> {
        tokio::time::timeout_at(deadline, self.events.recv())
            .await
            .ok()
            .map(|event| event.unwrap_or(Event::Closed("reader gone".to_owned())))
    }

    /// Reads for `wait`: the socket must stay open. Returns the pings and the other frames.
    async fn stays_open(&mut self, wait: Duration) -> (usize, Vec<Value>) {
        let deadline = Instant::now() + wait;
        let (mut pings, mut others) = (0, Vec::new());
        while let Some(event) = self.next_before(deadline).await {
            match event {
                Event::Frame(frame) if frame["type"] == "ping" => pings += 1,
                Event::Frame(frame) => others.push(frame),
                Event::Closed(why) => panic!("the socket closed during the outage: {why}"),
            }
        }
        (pings, others)
    }

    /// Whether the socket closes within `wait`.
    async fn closes_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            match self.next_before(deadline).await {
                Some(Event::Frame(_)) => {}
                Some(Event::Closed(_)) => return true,
                None => return false,
            }
        }
    }

    /// Reads until a broadcast's HTML contains `text`; `false` if `within` passes first.
    /// Logs the other broadcasts it skips when that happens, as a clue.
    async fn broadcast_containing(&mut self, text: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut skipped = Vec::new();
        loop {
            match self.next_before(deadline).await {
                Some(Event::Frame(frame)) => match frame["message"].as_str() {
                    Some(html) if html.contains(text) => return true,
                    Some(html) => skipped.push(html.chars().take(120).collect::<String>()),
                    None => {}
                },
                Some(Event::Closed(why)) => panic!("the cable closed waiting for {text:?}: {why}"),
                None => {
                    eprintln!("no broadcast with {text:?} within {within:?}; got {skipped:#?}");
                    return false;
                }
            }
        }
    }

    /// The titles of the tasks appended by the broadcasts that arrive within `wait`, in order.
    async fn appended_titles(&mut self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut titles = Vec::new();
        while let Some(Event::Frame(frame)) = self.next_before(deadline).await {
            let html = frame["message"].as_str().unwrap_or_default();
            if html.starts_with("<turbo-stream action=\"append\"")
                && let Some(title) = task_title(html)
            {
                titles.push(title.to_owned());
            }
        }
        titles
    }
}

impl Drop for Tab {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A cable socket subscribed to a page's stream with `identifier`, read all the time.
async fn subscribed_cable(app: &TestApp, identifier: &str) -> Tab {
    Tab::new(Cable::subscribed(app, identifier).await.ws)
}

/// A presence socket, read all the time, and the people it shows, kept as the page keeps them.
struct PresenceTab {
    tab: Tab,
    people: BTreeSet<String>,
}

fn names(users: &Value) -> impl Iterator<Item = String> + '_ {
    users
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|user| user["name"].as_str().map(str::to_owned))
}

impl PresenceTab {
    async fn connect(app: &TestApp, room: i64) -> Self {
        Self {
            tab: Tab::new(presence(app, room).await),
            people: BTreeSet::new(),
        }
    }

    fn apply(&mut self, frame: &Value) {
        match frame["type"].as_str() {
            Some("presence_state") => self.people = names(&frame["users"]).collect(),
            Some("presence_diff") => {
                for gone in names(&frame["leaves"]) {
                    self.people.remove(&gone);
                }
                self.people.extend(names(&frame["joins"]));
            }
            _ => {}
        }
    }

    /// Applies frames until the list is `expected`; panics if that takes longer than `within`
    /// or the socket closes. Returns how long it took.
    async fn wait_for(&mut self, expected: &[&str], within: Duration) -> Duration {
        let started = Instant::now();
        let expected: BTreeSet<String> = expected.iter().map(|n| (*n).to_owned()).collect();
        while self.people != expected {
            match self.tab.next_before(started + within).await {
                Some(Event::Frame(frame)) => self.apply(&frame),
                Some(Event::Closed(why)) => {
                    panic!(
                        "the presence socket closed showing {:?}: {why}",
                        self.people
                    )
                }
                None => panic!(
                    "presence showed {:?}, not {expected:?}, after {within:?}",
                    self.people
                ),
            }
        }
        started.elapsed()
    }

    /// Reads for `wait`: the socket must stay open. Returns the frames read.
    async fn stays_open(&mut self, wait: Duration) -> Vec<Value> {
        let (_, frames) = self.tab.stays_open(wait).await;
        for frame in &frames {
            self.apply(frame);
        }
        frames
    }
}

/// Posts a new task as Turbo does; the response and how long it took.
async fn post_task(app: &TestApp, room: i64, title: &str) -> (Response, Duration) {
    let started = Instant::now();
    let res = app
        .post_turbo(&format!("/rooms/{room}/tasks"), &[("task[title]", title)])
        .await;
    (res, started.elapsed())
}

/// Asserts a response is the app's own 503 page: retry later, nothing else said.
async fn assert_unavailable_page(res: Response, what: &str) {
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
    assert_eq!(
        res.headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap()),
        Some("5"),
        "{what}"
    );
    let body = res.text().await.unwrap();
    assert!(
        body.contains("<h1>503 Service Unavailable</h1>")
            && body.contains("temporarily unavailable"),
        "{what}: {body}"
    );
}

async fn up(app: &TestApp) -> (StatusCode, Value) {
    let res = app.get("/up").await;
    (res.status(), res.json().await.expect("/up is JSON"))
}

/// Polls `/up` until its status is `wanted`; returns how long that took.
async fn until_up_says(app: &TestApp, wanted: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (_, body) = up(app).await;
        if body["status"] == wanted {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "/up did not say {wanted:?} within {within:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A room with people in it, on one server: Ada's cable subscribed to the room and her presence
/// socket open, and Grace signed in.
struct Room {
    ada: TestApp,
    grace: TestApp,
    id: i64,
    cable: Tab,
    presence: PresenceTab,
    /// The tasks successfully posted so far, in order.
    posted: Vec<i64>,
    /// The tasks Ada's page shows, kept up to date from her cable as Turbo keeps it.
    view: BTreeSet<i64>,
    /// How many times the cable told the page to refresh.
    refreshes: usize,
}

impl Room {
    async fn open(server: &ServerProcess, database: Arc<TestDatabase>, backend: Backend) -> Self {
        let ada = TestApp::at(server.address.clone(), backend, database);
        let id = ada.signed_in_room().await;
        let grace = ada.new_visitor_signed_in("Grace").await;
        let page = ada.get_html(&format!("/rooms/{id}")).await;
        let cable = subscribed_cable(&ada, &identifier(&signed_stream_in(&page))).await;
        let mut presence = PresenceTab::connect(&ada, id).await;
        presence.wait_for(&["Ada"], Duration::from_secs(5)).await;
        let mut room = Self {
            ada,
            grace,
            id,
            cable,
            presence,
            posted: Vec::new(),
            view: BTreeSet::new(),
            refreshes: 0,
        };
        // A few changes while all is well, each reaching the subscriber.
        for title in ["first", "second", "third"] {
            room.post_and_receive(title).await;
        }
        room
    }

    /// Applies a cable frame to Ada's page as Turbo would: an append adds its task, a remove
    /// takes one away, a refresh reloads the page.
    async fn apply(&mut self, frame: &Value) {
        let Some(html) = frame["message"].as_str() else {
            return;
        };
        for action in html.split("<turbo-stream ").skip(1) {
            if action.starts_with("action=\"refresh\"") {
                self.refreshes += 1;
                self.view = self.ada.task_ids(self.id).await.into_iter().collect();
            } else if action.starts_with("action=\"append\"")
                && let Some(id) = task_id_in(action)
            {
                self.view.insert(id);
            } else if let Some(target) = action.strip_prefix("action=\"remove\" target=\"task_")
                && let Some(id) = target.split('"').next().and_then(|id| id.parse().ok())
            {
                self.view.remove(&id);
            }
        }
    }

    /// Applies what Ada's cable has brought so far, as her page has by now, so that a refresh
    /// reloads the page as it was when the refresh came, not later.
    async fn catch_up(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(100);
        while let Some(event) = self.cable.next_before(deadline).await {
            match event {
                Event::Frame(frame) => self.apply(&frame).await,
                Event::Closed(why) => panic!("the cable closed: {why}"),
            }
        }
    }

    /// Reads Ada's cable, applying what arrives, until her page shows `task`; `false` if
    /// `within` passes first.
    async fn until_page_shows(&mut self, task: i64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.view.contains(&task) {
            match self.cable.next_before(deadline).await {
                Some(Event::Frame(frame)) => self.apply(&frame).await,
                Some(Event::Closed(why)) => {
                    panic!("the cable closed waiting for task {task}: {why}")
                }
                None => return false,
            }
        }
        true
    }

    /// Posts a task, which must succeed and reach the subscriber's page as an append.
    async fn post_and_receive(&mut self, title: &str) {
        self.catch_up().await;
        let id = self.ada.create_task(self.id, title).await;
        self.posted.push(id);
        let refreshes = self.refreshes;
        assert!(
            self.until_page_shows(id, BROADCAST).await && self.refreshes == refreshes,
            "the broadcast of {title:?} reached the subscriber connected all along"
        );
    }

    /// The first change after the outage reaches the page connected all along: appended, or
    /// through a refresh (the stream's history could not say what was missed, so the page
    /// reloads, and shows it).
    async fn assert_page_caught_up_with(&mut self, task: i64) {
        let (started, refreshes) = (Instant::now(), self.refreshes);
        assert!(
            self.until_page_shows(task, BROADCAST).await,
            "the first change after the outage reached the page connected all along"
        );
        eprintln!(
            "recovery: the first change reached the page {:?} after the post answered, {}",
            started.elapsed(),
            if self.refreshes > refreshes {
                "through a refresh"
            } else {
                "appended"
            }
        );
    }

    /// Reads both of Ada's sockets for `wait`: they must stay open. Returns the cable's pings
    /// and other frames (applied to her page), and the presence frames.
    async fn sockets_stay_up(&mut self, wait: Duration) -> (usize, Vec<Value>, Vec<Value>) {
        let ((pings, frames), presence) =
            tokio::join!(self.cable.stays_open(wait), self.presence.stays_open(wait));
        for frame in &frames {
            self.apply(frame).await;
        }
        (pings, frames, presence)
    }

    /// Posts tasks until one succeeds (the service is back); returns how long that took and
    /// the id of the task that was accepted.
    async fn post_until_accepted(&mut self, title: &str) -> (Duration, i64) {
        let started = Instant::now();
        for attempt in 1.. {
            let title = format!("{title} {attempt}");
            self.catch_up().await;
            let (res, _) = post_task(&self.ada, self.id, &title).await;
            match res.status() {
                StatusCode::OK => {
                    let body = res.text().await.unwrap();
                    let id = task_id_in(&body).expect("the new task's id");
                    self.posted.push(id);
                    return (started.elapsed(), id);
                }
                StatusCode::SERVICE_UNAVAILABLE => {}
                other => panic!("while recovering, a post got {other}"),
            }
            assert!(
                started.elapsed() < RECOVERY,
                "no post succeeded within {RECOVERY:?} of the service coming back"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        unreachable!()
    }

    /// The room page lists exactly the tasks successfully posted: none lost, none twice, none
    /// that was refused; and so does the page kept up to date by the cable all along.
    async fn assert_holds_exactly_what_was_posted(&mut self) {
        let (_, frames) = self.cable.stays_open(Duration::from_millis(500)).await;
        for frame in &frames {
            self.apply(frame).await;
        }
        let shown = self.ada.task_ids(self.id).await;
        let unique: BTreeSet<i64> = shown.iter().copied().collect();
        assert_eq!(
            unique.len(),
            shown.len(),
            "a task is listed twice: {shown:?}"
        );
        let posted: BTreeSet<i64> = self.posted.iter().copied().collect();
        assert_eq!(unique, posted, "the room holds what was posted");
        assert_eq!(
            self.view, posted,
            "the page kept by the cable shows what was posted"
        );
    }

    /// Once the service is back, the sockets connected all along work as before: new posts reach
    /// the cable, and a newcomer reaches the presence list.
    async fn assert_sockets_work_again(&mut self) {
        for title in ["after one", "after two"] {
            self.post_and_receive(title).await;
        }
        let mut grace = PresenceTab::connect(&self.grace, self.id).await;
        grace
            .wait_for(&["Ada", "Grace"], Duration::from_secs(5))
            .await;
        self.presence
            .wait_for(&["Ada", "Grace"], Duration::from_secs(12))
            .await;
    }
}

#[tokio::test]
async fn a_database_restart_fails_changes_cleanly_keeps_sockets_up_and_heals_by_itself() {
    let postgres = PrivatePostgres::start().await;
    let url = postgres.url();
    let server = processes::start(&[
        ("DATABASE_URL", url.as_str()),
        ("PUBSUB_ADAPTER", "postgres"),
    ])
    .await;
    let mut room = Room::open(&server, Arc::new(TestDatabase::Private), Backend::Postgres).await;
    let first = room.posted[0];

    let stopping = Instant::now();
    postgres.stop().await;
    eprintln!("outage: PostgreSQL stopped in {:?}", stopping.elapsed());

    // Changes are refused with the app's 503 page, within the pool's acquire timeout.
    let (res, took) = post_task(&room.ada, room.id, "during the outage").await;
    eprintln!(
        "outage: a new task was answered {} in {took:?}",
        res.status()
    );
    assert_unavailable_page(res, "a new task during the outage").await;
    assert!(took < Duration::from_secs(10), "{took:?}");
    let started = Instant::now();
    let res = room
        .ada
        .post_turbo(
            &format!("/rooms/{}/tasks/{first}", room.id),
            &[("_method", "delete")],
        )
        .await;
    eprintln!(
        "outage: a delete was answered {} in {:?}",
        res.status(),
        started.elapsed()
    );
    assert_unavailable_page(res, "a delete during the outage").await;
    let res = room.ada.get(&format!("/rooms/{}", room.id)).await;
    assert_unavailable_page(res, "the room page during the outage").await;
    let (status, body) = up(&room.ada).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "down", "{body}");
    assert_eq!(body["database"], "down", "{body}");

    // The sockets stay up: the cable keeps pinging, presence stays open.
    let (pings, frames, presence) = room.sockets_stay_up(Duration::from_secs(7)).await;
    eprintln!(
        "outage: over 7 s the cable got {pings} pings and {} other frames; presence got {presence:?}",
        frames.len()
    );
    assert!(pings >= 2, "{pings} pings in 7 s");
    assert!(frames.is_empty(), "{frames:?}");

    // Back on the same port: tasksync reconnects by itself.
    let starting = Instant::now();
    postgres.start_again().await;
    eprintln!("recovery: PostgreSQL started in {:?}", starting.elapsed());
    let (accepted, first_back) = room.post_until_accepted("back").await;
    eprintln!("recovery: first change accepted {accepted:?} after the database was up");
    let healthy = until_up_says(&room.ada, "ok", RECOVERY).await;
    eprintln!("recovery: /up said ok {healthy:?} later");
    room.assert_page_caught_up_with(first_back).await;
    room.assert_sockets_work_again().await;
    room.assert_holds_exactly_what_was_posted().await;
    assert!(
        room.ada.task_ids(room.id).await.contains(&first),
        "the refused delete did not happen"
    );
    drop(server);
}

#[tokio::test]
async fn a_redis_restart_under_the_redis_adapter_loses_nothing_and_heals_by_itself() {
    let mut redis = PrivateRedis::start().await;
    let redis_url = redis.url();
    let (database, url) = TestDatabase::create(Backend::Sqlite).await;
    let channel = format!("tasksync-test-{}", uuid::Uuid::new_v4().simple());
    let server = processes::start(&[
        ("DATABASE_URL", url.as_str()),
        ("PUBSUB_ADAPTER", "redis"),
        ("REDIS_URL", redis_url.as_str()),
        ("PUBSUB_CHANNEL", channel.as_str()),
    ])
    .await;
    let mut room = Room::open(&server, Arc::new(database), Backend::Sqlite).await;

    redis.kill();
    let noticed = until_up_says(&room.ada, "degraded", Duration::from_secs(10)).await;
    eprintln!("outage: /up said degraded {noticed:?} after Redis was killed");
    let (status, body) = up(&room.ada).await;
    assert_eq!(status, StatusCode::OK, "pages still work: {body}");
    assert_eq!(body["database"], "ok", "{body}");
    assert_eq!(body["pubsub"]["status"], "reconnecting", "{body}");

    // A change either commits (its broadcast is lost, as documented) or is refused with the
    // 503 page; nothing in between, and never a 500.
    for n in 1..=3 {
        let (res, took) = post_task(&room.ada, room.id, &format!("during the outage {n}")).await;
        eprintln!(
            "outage: a new task was answered {} in {took:?}",
            res.status()
        );
        assert!(took < Duration::from_secs(12), "{took:?}");
        match res.status() {
            StatusCode::OK => {
                let body = res.text().await.unwrap();
                room.posted
                    .push(task_id_in(&body).expect("the new task's id"));
            }
            _ => assert_unavailable_page(res, "a new task during the Redis outage").await,
        }
    }
    let page = room.ada.get(&format!("/rooms/{}", room.id)).await;
    assert_eq!(page.status(), StatusCode::OK, "the room page without Redis");

    let (pings, _, presence) = room.sockets_stay_up(Duration::from_secs(7)).await;
    eprintln!("outage: over 7 s the cable got {pings} pings; presence got {presence:?}");
    assert!(pings >= 2, "{pings} pings in 7 s");

    // Back on the same port, empty (it kept nothing): the adapter subscribes again by itself.
    let starting = Instant::now();
    redis.start_again().await;
    eprintln!("recovery: Redis started in {:?}", starting.elapsed());
    let healthy = until_up_says(&room.ada, "ok", RECOVERY).await;
    eprintln!("recovery: /up said ok {healthy:?} after Redis was up");
    let (accepted, first_back) = room.post_until_accepted("back").await;
    eprintln!("recovery: a change was accepted {accepted:?} after that");
    room.assert_page_caught_up_with(first_back).await;
    room.assert_sockets_work_again().await;
    room.assert_holds_exactly_what_was_posted().await;
    drop(server);
}

#[tokio::test]
async fn when_one_of_two_processes_is_killed_the_other_serves_on_and_its_clients_come_over() {
    let cluster = Cluster::new(&[("PUBSUB_ADAPTER", "postgres")]).await;
    let mut a = cluster.start().await;
    let b = cluster.start().await;

    // Ada on A and Grace on B, each with a page, a cable subscription and a presence socket.
    let mut ada = cluster.client(&a.address);
    let room = ada.signed_in_room().await;
    let grace = cluster.client(&b.address);
    grace.sign_in("Grace").await;
    let ada_page = ada.get_html(&format!("/rooms/{room}")).await;
    let grace_page = grace.get_html(&format!("/rooms/{room}")).await;
    let mut ada_cable = subscribed_cable(&ada, &page_identifier(&ada_page)).await;
    let mut grace_cable = subscribed_cable(&grace, &page_identifier(&grace_page)).await;
    let mut ada_presence = PresenceTab::connect(&ada, room).await;
    let mut grace_presence = PresenceTab::connect(&grace, room).await;
    let both = ["Ada", "Grace"];
    ada_presence.wait_for(&both, Duration::from_secs(12)).await;
    grace_presence
        .wait_for(&both, Duration::from_secs(12))
        .await;
    let mut posted = vec![ada.create_task(room, "before the kill").await];
    for cable in [&mut ada_cable, &mut grace_cable] {
        assert!(
            cable
                .broadcast_containing(">before the kill</p>", BROADCAST)
                .await
        );
    }

    let killed = Instant::now();
    a.child.start_kill().expect("SIGKILL");
    a.child.wait().await.expect("A exits");
    assert!(
        ada_cable.closes_within(Duration::from_secs(5)).await,
        "Ada's cable on A is gone with it"
    );
    assert!(ada_presence.tab.closes_within(Duration::from_secs(5)).await);

    // B serves on at once, and its subscriber connected all along gets what is posted to it.
    let (res, took) = post_task(&grace, room, "after the kill").await;
    assert_eq!(res.status(), StatusCode::OK);
    posted.push(task_id_in(&res.text().await.unwrap()).expect("the new task's id"));
    eprintln!("kill: B accepted a change {took:?} after the kill");
    assert!(
        grace_cable
            .broadcast_containing(">after the kill</p>", BROADCAST)
            .await
    );
    eprintln!(
        "kill: ...and its broadcast arrived {:?} after the kill",
        killed.elapsed()
    );

    // B's presence drops A's people once A's node expires.
    grace_presence
        .wait_for(&["Grace"], Duration::from_secs(12))
        .await;
    let expired = killed.elapsed();
    eprintln!("kill: Ada left B's presence list {expired:?} after the kill");
    assert!(expired <= Duration::from_secs(10), "{expired:?}");

    // Ada's page, its only server gone, comes back through B, the one left (the same session:
    // cookies do not depend on the port), and is replayed what it missed.
    ada.address = b.address.clone();
    let mut ada_cable = subscribed_cable(&ada, &page_identifier(&ada_page)).await;
    assert_eq!(
        ada_cable.appended_titles(Duration::from_millis(800)).await,
        ["before the kill", "after the kill"],
        "replayed since the page was rendered"
    );
    let mut ada_presence = PresenceTab::connect(&ada, room).await;
    ada_presence.wait_for(&both, Duration::from_secs(5)).await;
    grace_presence.wait_for(&both, Duration::from_secs(5)).await;

    // Live again on B for both of them.
    posted.push(ada.create_task(room, "together on B").await);
    for cable in [&mut ada_cable, &mut grace_cable] {
        assert!(
            cable
                .broadcast_containing(">together on B</p>", BROADCAST)
                .await
        );
    }
    let shown = grace.task_ids(room).await;
    assert_eq!(shown, posted, "nothing lost, nothing twice");
    let (status, body) = up(&grace).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok", "{body}");
}

/// The database's case is `startup::an_unreachable_database_fails_fast_with_one_clear_line`;
/// this is the same for Redis under the Redis adapter.
#[test]
fn an_unreachable_redis_fails_start_up_fast_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let redis_url = format!("redis://127.0.0.1:{}", free_port());
    let started = std::time::Instant::now();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tasksync"));
    for key in ["SECRET_KEY_BASE", "PUBSUB_CHANNEL", "RUST_LOG"] {
        cmd.env_remove(key);
    }
    let out = cmd
        .current_dir(dir.path())
        .env("TASKSYNC_ENV", "test")
        .env("PORT", "0")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/test.sqlite3", dir.path().display()),
        )
        .env("PUBSUB_ADAPTER", "redis")
        .env("REDIS_URL", &redis_url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10), "fails fast");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("tasksync: cannot ")
            && lines[0].contains("Redis")
            && lines[0].contains(&redis_url)
            && lines[0].contains("Connection refused"),
        "{stderr}"
    );
}
