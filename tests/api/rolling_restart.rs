//! Zero-loss rolling restarts: two processes on one PostgreSQL database, 200 cable subscribers
//! spread over both, a poster adding 20 tasks a second, and each process restarted in turn
//! (with SIGTERM, or killed with SIGKILL), or the database itself restarted under them.
//! Subscribers behave like the stock ActionCable client: when their socket closes they subscribe
//! again, on a live process, with the identifier their page gave them. Afterwards every
//! subscriber's view of the room must equal the database's task list.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    cable_client::{ACTIONCABLE_PROTOCOLS, page_identifier},
    helpers::{Backend, TURBO_ACCEPT, TestApp, TestDatabase, csrf_from, task_id_in},
    private_servers::PrivatePostgres,
    processes::{self, ServerProcess},
};

const SUBSCRIBERS: usize = 200;
const POSTS_PER_SECOND: u64 = 20;

/// The addresses of the processes currently up, for clients to (re)connect to.
type Live = Arc<Mutex<Vec<String>>>;

/// The task ids a room page shows.
fn ids_on_page(html: &str) -> BTreeSet<i64> {
    let list = html.split("id=\"tasks\"").nth(1).expect("task list");
    list.match_indices("<div id=\"task_")
        .filter_map(|(at, m)| list[at + m.len()..].split('"').next()?.parse().ok())
        .collect()
}

/// Applies one broadcast to a view; `false` when it asks for a refresh.
fn apply(view: &mut BTreeSet<i64>, html: &str) -> bool {
    for action in html.split("<turbo-stream ").skip(1) {
        if action.starts_with("action=\"refresh\"") {
            return false;
        }
        if action.starts_with("action=\"append\"")
            && let Some(id) = task_id_in(action)
        {
            view.insert(id);
        }
        if let Some(rest) = action.strip_prefix("action=\"remove\" target=\"task_")
            && let Some(id) = rest.split('"').next().and_then(|id| id.parse().ok())
        {
            view.remove(&id);
        }
    }
    true
}

/// One browser tab: subscribes, applies what arrives, and comes back after every disconnect
/// until `done` is set. Returns its final view.
async fn subscriber(
    n: usize,
    live: Live,
    cookie: String,
    room: i64,
    identifier: String,
    mut done: tokio::sync::watch::Receiver<bool>,
) -> BTreeSet<i64> {
    let mut view = BTreeSet::new();
    let client = reqwest::Client::new();
    let mut attempt = n;
    loop {
        if *done.borrow() {
            return view;
        }
        attempt += 1;
        let address = {
            let live = live.lock().unwrap();
            live[attempt % live.len()].clone()
        };
        let url = format!("{}/cable", address.replacen("http", "ws", 1));
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
                .unwrap();
        let headers = request.headers_mut();
        headers.insert(
            "Sec-WebSocket-Protocol",
            ACTIONCABLE_PROTOCOLS.parse().unwrap(),
        );
        headers.insert("Origin", address.parse().unwrap());
        headers.insert("Cookie", cookie.parse().unwrap());
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(request).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let subscribe = json!({"command": "subscribe", "identifier": identifier}).to_string();
        if futures_util::SinkExt::send(&mut ws, Message::text(subscribe))
            .await
            .is_err()
        {
            continue;
        }
        loop {
            let message = tokio::select! {
                message = ws.next() => message,
                _ = done.wait_for(|done| *done) => return view,
            };
            let Some(Ok(Message::Text(text))) = message else {
                break; // closed: come back, as the ActionCable client does
            };
            let frame: Value = serde_json::from_str(&text).unwrap();
            let Some(html) = frame["message"].as_str() else {
                continue;
            };
            if !apply(&mut view, html) {
                // Refresh: the page reloads from whichever process answers.
                let page = client
                    .get(format!("{address}/rooms/{room}"))
                    .header("Cookie", &cookie)
                    .send()
                    .await;
                if let Ok(page) = page
                    && let Ok(html) = page.text().await
                {
                    view = ids_on_page(&html);
                }
            }
        }
    }
}

/// A task the poster added, and how many of its attempts may have added it without saying so.
struct Posted {
    id: i64,
    /// Attempts whose request was sent but whose answer never came (the process died, or the
    /// connection dropped): the task may or may not have been made.
    unanswered: usize,
}

/// Adds a task through any live process, trying another on failure.
async fn post_task(live: &Live, cookie: &str, room: i64, title: &str) -> Posted {
    let client = reqwest::Client::new();
    let mut unanswered = 0;
    for attempt in 0.. {
        let address = {
            let live = live.lock().unwrap();
            live[attempt % live.len()].clone()
        };
        let page = client
            .get(format!("{address}/rooms/{room}"))
            .header("Cookie", cookie)
            .send()
            .await;
        let token = match page {
            Ok(page) if page.status().is_success() => page.text().await.ok().map(|t| csrf_from(&t)),
            _ => None,
        };
        if let Some(token) = token {
            let res = client
                .post(format!("{address}/rooms/{room}/tasks"))
                .header("Cookie", cookie)
                .header("Accept", TURBO_ACCEPT)
                .form(&[
                    ("authenticity_token", token.as_str()),
                    ("task[title]", title),
                ])
                .send()
                .await;
            match res {
                Ok(res) if res.status().is_success() => {
                    if let Some(id) = res.text().await.ok().and_then(|t| task_id_in(&t)) {
                        return Posted { id, unanswered };
                    }
                    unanswered += 1;
                }
                // Refused before anything was written (503 while the database is away).
                Ok(res) => assert!(
                    res.status().is_server_error(),
                    "{title}: unexpected {}",
                    res.status()
                ),
                Err(_) => unanswered += 1,
            }
        }
        assert!(attempt < 400, "no process took {title}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!()
}

/// How the scenario disturbs the deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disruption {
    /// Each process in turn stops gracefully and starts again.
    Sigterm,
    /// Each process in turn is killed without warning and started again.
    Sigkill,
    /// PostgreSQL is stopped and started again under both processes, which stay up.
    DatabaseRestart,
}

async fn restart(
    process: &mut ServerProcess,
    live: &Live,
    env: &[(&str, &str)],
    disruption: Disruption,
) {
    live.lock().unwrap().retain(|a| *a != process.address);
    let pid = process.child.id().unwrap().to_string();
    let signal = match disruption {
        Disruption::Sigkill => "-KILL",
        _ => "-TERM",
    };
    assert!(
        std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(12), process.child.wait())
        .await
        .expect("exits within the shutdown timeout")
        .unwrap();
    if disruption == Disruption::Sigterm {
        assert!(status.success(), "{status:?}");
    }
    *process = processes::start(env).await;
    live.lock().unwrap().push(process.address.clone());
}

#[tokio::test]
async fn a_rolling_restart_with_sigterm_loses_and_duplicates_no_task() {
    rolling_restart(Disruption::Sigterm).await;
}

#[tokio::test]
async fn a_rolling_restart_with_sigkill_loses_and_duplicates_no_task() {
    rolling_restart(Disruption::Sigkill).await;
}

#[tokio::test]
async fn a_database_restart_under_both_processes_loses_and_duplicates_no_task() {
    rolling_restart(Disruption::DatabaseRestart).await;
}

async fn rolling_restart(disruption: Disruption) {
    // The database restart needs a server of its own: the shared one serves every other test.
    let private = match disruption {
        Disruption::DatabaseRestart => Some(PrivatePostgres::start().await),
        _ => None,
    };
    let (database, url) = match &private {
        Some(server) => (TestDatabase::Private, server.url()),
        None => TestDatabase::create(Backend::Postgres).await,
    };
    let database = Arc::new(database);
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("PUBSUB_ADAPTER", "postgres"),
    ];
    let mut a = processes::start(&env).await;
    let mut b = processes::start(&env).await;
    let live: Live = Arc::new(Mutex::new(vec![a.address.clone(), b.address.clone()]));

    let ada = TestApp::at(a.address.clone(), Backend::Postgres, database.clone());
    let room = ada.signed_in_room().await;
    let cookie = ada.cookie_header().expect("signed in");
    let identifier = page_identifier(&ada.get_html(&format!("/rooms/{room}")).await);

    let (stop, done) = tokio::sync::watch::channel(false);
    let subscribers: Vec<_> = (0..SUBSCRIBERS)
        .map(|n| {
            tokio::spawn(subscriber(
                n,
                live.clone(),
                cookie.clone(),
                room,
                identifier.clone(),
                done.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let poster = {
        let (live, cookie) = (live.clone(), cookie.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(1000 / POSTS_PER_SECOND));
            let mut posted = Vec::new();
            for i in 0..(POSTS_PER_SECOND * 8) {
                ticks.tick().await;
                posted.push(post_task(&live, &cookie, room, &format!("task {i:03}")).await);
            }
            posted
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    match &private {
        Some(server) => {
            server.stop().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            server.start_again().await;
        }
        None => {
            restart(&mut a, &live, &env, disruption).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            restart(&mut b, &live, &env, disruption).await;
        }
    }
    let posted = poster.await.unwrap();

    // Let the last broadcasts land, then compare every view with the database.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let truth = ids_on_page(&ada_page(&live, &cookie, room).await);
    let ids: BTreeSet<i64> = posted.iter().map(|p| p.id).collect();
    assert_eq!(
        ids.len(),
        posted.len(),
        "each post answered with its own task"
    );
    assert!(
        ids.is_subset(&truth),
        "every task a post was told about is kept"
    );
    // A post whose answer was lost may have made its task before the retry made another.
    let unanswered: usize = posted.iter().map(|p| p.unanswered).sum();
    assert!(
        truth.len() - ids.len() <= unanswered,
        "{} tasks more than posts, with only {unanswered} unanswered attempts",
        truth.len() - ids.len()
    );
    if disruption == Disruption::Sigterm {
        assert_eq!(truth, ids, "a graceful restart answers every request");
    }
    stop.send_replace(true);
    let mut wrong = 0;
    for subscriber in subscribers {
        let view = tokio::time::timeout(Duration::from_secs(5), subscriber)
            .await
            .expect("subscriber stops")
            .unwrap();
        if view != truth {
            wrong += 1;
            let missing: Vec<_> = truth.difference(&view).collect();
            let extra: Vec<_> = view.difference(&truth).collect();
            eprintln!("a view differs: missing {missing:?}, extra {extra:?}");
        }
    }
    assert_eq!(
        wrong, 0,
        "{wrong} of {SUBSCRIBERS} views differ from the database ({disruption:?})"
    );
}

async fn ada_page(live: &Live, cookie: &str, room: i64) -> String {
    let address = live.lock().unwrap()[0].clone();
    reqwest::Client::new()
        .get(format!("{address}/rooms/{room}"))
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
