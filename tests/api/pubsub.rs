//! The PostgreSQL and Redis pub/sub adapters against the real servers. Two adapters on the same
//! database (or Redis channel) stand in for two server processes. Connections are killed from
//! the outside, never by restarting a server: other tests share both servers.

use std::time::Duration;

use tasksync::{
    metrics::Metrics,
    pubsub::{
        AdapterConfig, Delivery, Envelope, Health, HistoryWindow, PubSub, PublishError, Sequencer,
        Topic,
    },
};
use tokio::{sync::mpsc, time::timeout};

/// How long an envelope may take to reach every process.
const ARRIVAL: Duration = Duration::from_secs(1);

/// How long a killed connection may take to be noticed.
const DETECTION: Duration = Duration::from_secs(5);

/// How long a listener may take to come back; its backoff starts at about 100 ms.
const RECOVERY: Duration = Duration::from_secs(15);

/// One "process": an adapter and the inbox it delivers to.
struct Process {
    name: &'static str,
    adapter: PubSub,
    inbox: mpsc::Receiver<Envelope>,
}

impl Process {
    async fn start(name: &'static str, config: &AdapterConfig) -> Self {
        let (tx, inbox) = mpsc::channel(64);
        let adapter = timeout(
            Duration::from_secs(20),
            PubSub::start(config, HistoryWindow::default(), tx),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: the adapter did not start within 20 s"))
        .unwrap_or_else(|e| panic!("{name}: the adapter cannot start: {e:#}"));
        assert_eq!(adapter.health(), Health::Healthy, "{name} starts healthy");
        Self {
            name,
            adapter,
            inbox,
        }
    }

    async fn publish(&self, envelope: Envelope) {
        timeout(Duration::from_secs(10), self.adapter.publish(envelope))
            .await
            .unwrap_or_else(|_| panic!("{}: publish did not finish within 10 s", self.name))
            .unwrap_or_else(|e| panic!("{}: publish failed: {e}", self.name));
    }

    async fn receive(&mut self) -> Envelope {
        timeout(ARRIVAL, self.inbox.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: nothing arrived within {ARRIVAL:?}", self.name))
            .unwrap_or_else(|| panic!("{}: the inbox closed", self.name))
    }

    /// Fails if anything more arrives within a short while.
    async fn assert_nothing_more(&mut self) {
        if let Ok(extra) = timeout(Duration::from_millis(300), self.inbox.recv()).await {
            panic!("{}: unexpected delivery {extra:?}", self.name);
        }
    }

    async fn wait_for_health(&self, wanted: fn(&Health) -> bool, what: &str, within: Duration) {
        let watching = async {
            loop {
                if wanted(&self.adapter.health()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        if timeout(within, watching).await.is_err() {
            panic!(
                "{}: health did not become {what} within {within:?}; it is {:?}",
                self.name,
                self.adapter.health()
            );
        }
    }

    async fn shutdown(&self) {
        timeout(Duration::from_secs(10), self.adapter.shutdown())
            .await
            .unwrap_or_else(|_| panic!("{}: shutdown took over 10 s", self.name));
    }
}

fn is_healthy(health: &Health) -> bool {
    *health == Health::Healthy
}

fn is_degraded(health: &Health) -> bool {
    matches!(health, Health::Degraded(_))
}

/// Exactly 20,000 bytes of text with multi-byte UTF-8, tabs and newlines throughout.
fn large_payload() -> String {
    const PIECES: [&str; 6] = ["<li>tâche ", "\t", "日本語", "\n", "🚀", "ok\r\n"];
    let mut text = String::with_capacity(20_000);
    for piece in PIECES.iter().cycle() {
        if text.len() + piece.len() > 20_000 {
            break;
        }
        text.push_str(piece);
    }
    while text.len() < 20_000 {
        text.push('x');
    }
    assert_eq!(text.len(), 20_000);
    text
}

/// Both processes get `envelope`, intact, when `from` publishes it.
async fn assert_reaches_both(from: usize, processes: &mut [Process; 2], envelope: Envelope) {
    processes[from].publish(envelope.clone()).await;
    for process in processes.iter_mut() {
        let got = process.receive().await;
        // Offsets are the history's business (tested with it); the message itself must match.
        let got = Envelope { offset: 0, ..got };
        assert!(
            got == envelope,
            "{}: the envelope arrived changed ({} payload bytes sent, {} received)",
            process.name,
            envelope.payload.len(),
            got.payload.len()
        );
    }
}

async fn assert_start_fails_fast(config: AdapterConfig, secret: &str, address: &str) {
    let (tx, _inbox) = mpsc::channel(1);
    let started = tokio::time::Instant::now();
    let result = timeout(
        Duration::from_secs(15),
        PubSub::start(&config, HistoryWindow::default(), tx),
    )
    .await
    .expect("start gives up within 15 s when the server is unreachable");
    let Err(err) = result else {
        panic!("start succeeded against an unreachable server");
    };
    let message = format!("{err:#}");
    assert!(message.contains(address), "names the server: {message}");
    assert!(
        message.contains("***"),
        "shows the password redacted: {message}"
    );
    assert!(!message.contains(secret), "leaks the password: {message}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?} to fail",
        started.elapsed()
    );
}

// Scenarios both backends run; each backend's test of the same story calls one.

/// The server behind a backend as the shared scenarios reach it, from outside the adapters.
trait Server {
    /// What the backend calls the connection a process receives on.
    const LISTENER: &'static str;
    /// What `kill_listeners` hands to `assert_listening_again`.
    type Killed;

    /// How many listener connections the server sees for the processes under test.
    async fn listener_count(&mut self) -> usize;
    /// Kills the two processes' listener connections, checking that there are two.
    async fn kill_listeners(&mut self) -> Self::Killed;
    /// Both processes listen again.
    async fn assert_listening_again(&mut self, killed: Self::Killed);
}

/// Whether the reconnect scenario also publishes while the listeners are down.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WhileDown {
    /// Publishing fails cleanly or gets through; what gets through is drained after recovery.
    Publish,
    /// Nothing is published until the listeners are back.
    Wait,
}

/// A cable envelope from the first and a presence envelope from the second reach both, and
/// nothing else arrives; then both shut down.
async fn envelopes_from_either_reach_both(mut processes: [Process; 2]) {
    let cable = Envelope::new(
        Topic::Cable,
        "rooms:7",
        "<turbo-stream>é\tß\n</turbo-stream>",
    );
    assert_reaches_both(0, &mut processes, cable).await;
    let presence = Envelope::new(Topic::Presence, "rooms:7", "");
    assert_reaches_both(1, &mut processes, presence).await;

    for process in &mut processes {
        process.assert_nothing_more().await;
        process.shutdown().await;
    }
}

/// After junk was sent on the wire: an envelope still reaches both, nothing else arrives and
/// both stay healthy; then both shut down.
async fn junk_was_dropped(mut processes: [Process; 2]) {
    let envelope = Envelope::new(Topic::Cable, "rooms:3", "after the junk");
    assert_reaches_both(0, &mut processes, envelope).await;
    for process in &mut processes {
        process.assert_nothing_more().await;
        assert_eq!(process.adapter.health(), Health::Healthy);
        process.shutdown().await;
    }
}

/// Both listeners are killed: both processes notice, come back by themselves,
/// and deliver again. Leaves both running.
async fn listeners_reconnect_after_being_killed(
    server: &mut impl Server,
    processes: &mut [Process; 2],
    while_down: WhileDown,
) {
    assert_reaches_both(
        0,
        processes,
        Envelope::new(Topic::Cable, "rooms:1", "before"),
    )
    .await;

    let killed = server.kill_listeners().await;

    for process in processes.iter() {
        process
            .wait_for_health(is_degraded, "Degraded", DETECTION)
            .await;
    }
    if while_down == WhileDown::Publish {
        let during = processes[0]
            .adapter
            .publish(Envelope::new(Topic::Cable, "rooms:1", "during"))
            .await;
        assert!(
            matches!(during, Err(PublishError::Unavailable(_)) | Ok(())),
            "publishing while degraded fails cleanly: {during:?}"
        );
    }
    for process in processes.iter() {
        process
            .wait_for_health(is_healthy, "Healthy again", RECOVERY)
            .await;
    }
    server.assert_listening_again(killed).await;
    if while_down == WhileDown::Publish {
        // A publish the listener lost, if it got through, may still be on its way to the other.
        for process in processes.iter_mut() {
            while timeout(Duration::from_millis(200), process.inbox.recv())
                .await
                .is_ok_and(|e| e.is_some_and(|e| &*e.payload == "during"))
            {}
        }
    }

    assert_reaches_both(
        1,
        processes,
        Envelope::new(Topic::Cable, "rooms:1", "after"),
    )
    .await;
}

/// The second process's sequencer is handed only some of what its adapter hears, as if the
/// rest of the notifications were lost: a jump is filled from history in order, a late
/// duplicate goes nowhere, and after the listener reconnects a tick catches a stream up on
/// what it published meanwhile. Leaves both running.
async fn the_sequencer_recovers_what_notifications_missed(
    server: &mut impl Server,
    processes: &mut [Process; 2],
) {
    let stream = format!("rooms:{}", uuid::Uuid::new_v4().simple());
    let mut sequencer = Sequencer::new(processes[1].adapter.clone(), Metrics::new()).await;
    let mut heard = Vec::new();
    for i in 1..=4 {
        let envelope = Envelope::new(Topic::Cable, stream.as_str(), format!("m{i}"));
        processes[0].publish(envelope).await;
        heard.push(processes[1].receive().await);
    }
    let offsets = |deliveries: &[Delivery]| -> Vec<(u64, String)> {
        deliveries
            .iter()
            .map(|d| match d {
                Delivery::Message(e) => (e.offset, e.payload.to_string()),
                Delivery::Reset { .. } => panic!("unexpected reset {d:?}"),
            })
            .collect()
    };
    let first = heard[0].offset;
    assert_eq!(
        offsets(&sequencer.accept(heard[0].clone()).await),
        [(first, "m1".into())]
    );
    // 2 and 3 were "lost": 4 brings them back from history, in order.
    assert_eq!(
        offsets(&sequencer.accept(heard[3].clone()).await),
        [
            (first + 1, "m2".into()),
            (first + 2, "m3".into()),
            (first + 3, "m4".into())
        ]
    );
    assert!(
        sequencer.accept(heard[2].clone()).await.is_empty(),
        "a duplicate"
    );
    assert!(
        sequencer.tick().await.is_empty(),
        "no reconnect, nothing to read"
    );

    // Published while the listeners are away or not yet handed over: the tick after the
    // reconnect reads it from history.
    let before = processes[1].adapter.reconnects();
    let killed = server.kill_listeners().await;
    let reconnected = async {
        while processes
            .iter()
            .any(|p| p.adapter.health() != Health::Healthy)
            || processes[1].adapter.reconnects() == before
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    timeout(DETECTION + RECOVERY, reconnected)
        .await
        .expect("both listeners reconnect");
    server.assert_listening_again(killed).await;
    processes[0]
        .publish(Envelope::new(Topic::Cable, stream.as_str(), "m5"))
        .await;
    let unheard = processes[1].receive().await;
    assert_eq!(
        offsets(&sequencer.tick().await),
        [(first + 4, "m5".into())],
        "the tick after the reconnect catches up"
    );
    assert!(
        sequencer.accept(unheard).await.is_empty(),
        "already delivered"
    );
}

/// Shutting the first down closes its listener connection and refuses its publishes; then the
/// second shuts down too.
async fn shutdown_closes_the_listener<S: Server>(server: &mut S, [first, second]: [Process; 2]) {
    assert_eq!(server.listener_count().await, 2);

    first.shutdown().await;
    let gone = async {
        while server.listener_count().await != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(Duration::from_secs(5), gone)
        .await
        .unwrap_or_else(|_| panic!("the {}'s connection closes on shutdown", S::LISTENER));
    assert!(is_degraded(&first.adapter.health()));
    let result = first
        .adapter
        .publish(Envelope::new(Topic::Cable, "rooms:1", "late"))
        .await;
    assert!(
        matches!(result, Err(PublishError::Closed)),
        "publish after shutdown: {result:?}"
    );
    second.shutdown().await;
}

mod postgres {
    use sqlx::{Connection as _, PgConnection};
    use tasksync::store::Store;

    use super::*;
    use crate::helpers::{Backend, TestDatabase};

    /// A fresh database with the app's migrations applied, and its URL.
    async fn database() -> (TestDatabase, String) {
        let (database, url) = TestDatabase::create(Backend::Postgres).await;
        Store::connect(&url, 2)
            .await
            .expect("the app's migrations apply")
            .close()
            .await;
        (database, url)
    }

    async fn pair(url: &str) -> [Process; 2] {
        let config = AdapterConfig::Postgres { url: url.into() };
        [
            Process::start("first", &config).await,
            Process::start("second", &config).await,
        ]
    }

    async fn admin(url: &str) -> PgConnection {
        PgConnection::connect(url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {url}: {e}"))
    }

    async fn stored_rows(conn: &mut PgConnection) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM tasksync_pubsub_payloads")
            .fetch_one(conn)
            .await
            .expect("count stored payloads")
    }

    async fn listeners(conn: &mut PgConnection) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() \
               AND application_name = 'tasksync-pubsub-listener'",
        )
        .fetch_one(conn)
        .await
        .expect("count listeners")
    }

    /// The test database, through an admin connection to it.
    impl Server for PgConnection {
        const LISTENER: &'static str = "listener";
        type Killed = ();

        async fn listener_count(&mut self) -> usize {
            usize::try_from(listeners(self).await).expect("a count is not negative")
        }

        async fn kill_listeners(&mut self) {
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() \
                   AND application_name = 'tasksync-pubsub-listener'",
            )
            .fetch_all(&mut *self)
            .await
            .expect("terminate the listeners");
            assert_eq!(killed, [true, true], "one listener per process");
        }

        async fn assert_listening_again(&mut self, (): ()) {
            assert_eq!(listeners(self).await, 2, "both listen again");
        }
    }

    #[tokio::test]
    async fn an_envelope_published_by_one_process_reaches_both() {
        let (_database, url) = database().await;
        envelopes_from_either_reach_both(pair(&url).await).await;
    }

    #[tokio::test]
    async fn large_payloads_travel_through_the_table_and_arrive_intact() {
        let (_database, url) = database().await;
        let mut conn = admin(&url).await;
        let mut processes = pair(&url).await;

        // 7900 encoded bytes is the most that goes inline; one more goes through the table.
        // (Presence uses the payload table; cable messages travel by their history row, which
        // tests/api/history_processes.rs and cross_process.rs cover.)
        let overhead = Envelope::new(Topic::Presence, "rooms:1", "").encode().len();
        let inline = Envelope::new(Topic::Presence, "rooms:1", "a".repeat(7900 - overhead));
        assert_reaches_both(0, &mut processes, inline).await;
        assert_eq!(stored_rows(&mut conn).await, 0, "7900 bytes travel inline");
        let stored = Envelope::new(Topic::Presence, "rooms:1", "b".repeat(7901 - overhead));
        assert_reaches_both(0, &mut processes, stored).await;
        assert_eq!(stored_rows(&mut conn).await, 1, "7901 bytes are stored");

        let large = Envelope::new(Topic::Presence, "rooms:1", large_payload());
        assert_reaches_both(1, &mut processes, large).await;
        assert_eq!(stored_rows(&mut conn).await, 2);

        // Rows past their five minutes go with the next trim; the first large publish of each
        // process ran one, so a fresh process is needed to trim again right away.
        sqlx::query(
            "UPDATE tasksync_pubsub_payloads SET created_at = now() - interval '6 minutes'",
        )
        .execute(&mut conn)
        .await
        .expect("age the stored rows");
        let mut third = Process::start(
            "third",
            &AdapterConfig::Postgres {
                url: url.as_str().into(),
            },
        )
        .await;
        let again = Envelope::new(Topic::Presence, "rooms:2", large_payload());
        third.publish(again.clone()).await;
        assert_eq!(third.receive().await, again);
        assert_eq!(
            stored_rows(&mut conn).await,
            1,
            "only the fresh row is left"
        );

        for process in processes.iter().chain([&third]) {
            process.shutdown().await;
        }
    }

    #[tokio::test]
    async fn notifications_that_are_not_envelopes_are_dropped() {
        let (_database, url) = database().await;
        let mut conn = admin(&url).await;
        let processes = pair(&url).await;

        for junk in [
            "not an envelope",
            "v2\tcable\trooms:1\tx",
            "ref\t999999",
            "ref\tx",
        ] {
            sqlx::query("SELECT pg_notify('tasksync_pubsub', $1)")
                .bind(junk)
                .execute(&mut conn)
                .await
                .expect("NOTIFY junk");
        }
        junk_was_dropped(processes).await;
    }

    #[tokio::test]
    async fn the_listener_reconnects_by_itself_after_its_connection_is_killed() {
        let (_database, url) = database().await;
        let mut conn = admin(&url).await;
        let mut processes = pair(&url).await;
        listeners_reconnect_after_being_killed(&mut conn, &mut processes, WhileDown::Publish).await;
        assert_reaches_both(
            0,
            &mut processes,
            Envelope::new(Topic::Cable, "rooms:1", large_payload()),
        )
        .await;
        for process in &processes {
            process.shutdown().await;
        }
    }

    #[tokio::test]
    async fn the_sequencer_recovers_missed_notifications_from_history() {
        let (_database, url) = database().await;
        let mut conn = admin(&url).await;
        let mut processes = pair(&url).await;
        the_sequencer_recovers_what_notifications_missed(&mut conn, &mut processes).await;
        for process in &processes {
            process.shutdown().await;
        }
    }

    #[tokio::test]
    async fn shutdown_closes_the_listener_and_refuses_publishes() {
        let (_database, url) = database().await;
        let mut conn = admin(&url).await;
        let processes = pair(&url).await;
        shutdown_closes_the_listener(&mut conn, processes).await;
    }

    #[tokio::test]
    async fn start_fails_fast_with_the_password_redacted() {
        assert_start_fails_fast(
            AdapterConfig::Postgres {
                url: "postgres://app:s3cret-pw@127.0.0.1:1/tasksync".into(),
            },
            "s3cret-pw",
            "127.0.0.1:1",
        )
        .await;
    }
}

mod redis {
    use ::redis::{Client, aio::MultiplexedConnection, cmd};
    use tasksync::pubsub::{Position, Replay};

    use super::*;

    fn redis_url() -> String {
        std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
    }

    /// A channel no other test uses: Redis is shared by every test running in parallel.
    fn unique_channel() -> String {
        format!("tasksync-test-{}", uuid::Uuid::new_v4().simple())
    }

    fn config(channel: &str) -> AdapterConfig {
        AdapterConfig::Redis {
            url: redis_url(),
            channel: channel.into(),
        }
    }

    async fn pair(channel: &str) -> [Process; 2] {
        // Fails with a clear message when Redis is down, before any adapter tries.
        drop(admin().await);
        [
            Process::start("first", &config(channel)).await,
            Process::start("second", &config(channel)).await,
        ]
    }

    async fn admin() -> MultiplexedConnection {
        let url = redis_url();
        let connect = async {
            Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await
        };
        timeout(Duration::from_secs(10), connect)
            .await
            .unwrap_or_else(|_| panic!("Redis did not answer at {url} within 10 s"))
            .unwrap_or_else(|e| {
                panic!(
                    "Redis is required for these tests and is not reachable at {url}: {e}. \
                     Start it (see README) or set TEST_REDIS_URL."
                )
            })
    }

    /// Ids of the connections whose client name mentions `channel`.
    async fn subscribers(conn: &mut MultiplexedConnection, channel: &str) -> Vec<String> {
        let list: String = cmd("CLIENT")
            .arg("LIST")
            .query_async(conn)
            .await
            .expect("CLIENT LIST");
        list.lines()
            .filter(|line| {
                line.split(' ').any(|field| {
                    field
                        .strip_prefix("name=")
                        .is_some_and(|n| n.contains(channel))
                })
            })
            .filter_map(|line| {
                line.split(' ')
                    .find_map(|field| field.strip_prefix("id="))
                    .map(str::to_owned)
            })
            .collect()
    }

    /// A channel of its own, and an admin connection to Redis.
    struct Channel {
        name: String,
        conn: MultiplexedConnection,
    }

    impl Channel {
        async fn new() -> Self {
            let name = unique_channel();
            let conn = admin().await;
            Self { name, conn }
        }
    }

    impl Server for Channel {
        const LISTENER: &'static str = "subscriber";
        /// The ids of the connections killed.
        type Killed = Vec<String>;

        async fn listener_count(&mut self) -> usize {
            subscribers(&mut self.conn, &self.name).await.len()
        }

        async fn kill_listeners(&mut self) -> Vec<String> {
            let ids = subscribers(&mut self.conn, &self.name).await;
            assert_eq!(ids.len(), 2, "one named subscriber per process: {ids:?}");
            for id in &ids {
                cmd("CLIENT")
                    .arg("KILL")
                    .arg("ID")
                    .arg(id)
                    .exec_async(&mut self.conn)
                    .await
                    .expect("CLIENT KILL");
            }
            ids
        }

        async fn assert_listening_again(&mut self, ids: Vec<String>) {
            let fresh = subscribers(&mut self.conn, &self.name).await;
            assert_eq!(fresh.len(), 2, "both subscribe again: {fresh:?}");
            assert!(
                fresh.iter().all(|id| !ids.contains(id)),
                "on new connections"
            );
        }
    }

    #[tokio::test]
    async fn an_envelope_published_by_one_process_reaches_both() {
        let channel = unique_channel();
        let processes = pair(&channel).await;
        let mut elsewhere = Process::start("elsewhere", &config(&unique_channel())).await;
        envelopes_from_either_reach_both(processes).await;
        elsewhere.assert_nothing_more().await;
        elsewhere.shutdown().await;
    }

    #[tokio::test]
    async fn large_payloads_arrive_intact() {
        let channel = unique_channel();
        let mut processes = pair(&channel).await;
        let large = Envelope::new(Topic::Cable, "rooms:1", large_payload());
        assert_reaches_both(0, &mut processes, large).await;
        let larger = Envelope::new(Topic::Presence, "rooms:1", large_payload().repeat(10));
        assert_reaches_both(1, &mut processes, larger).await;
        for process in &processes {
            process.shutdown().await;
        }
    }

    #[tokio::test]
    async fn messages_that_are_not_envelopes_are_dropped() {
        let channel = unique_channel();
        let mut conn = admin().await;
        let processes = pair(&channel).await;
        for junk in ["not an envelope", "v2\tcable\trooms:1\tx"] {
            cmd("PUBLISH")
                .arg(&channel)
                .arg(junk)
                .exec_async(&mut conn)
                .await
                .expect("PUBLISH junk");
        }
        cmd("PUBLISH")
            .arg(&channel)
            .arg(b"v1\tcable\trooms:1\t\xff\xfe".as_slice())
            .exec_async(&mut conn)
            .await
            .expect("PUBLISH invalid UTF-8");
        junk_was_dropped(processes).await;
    }

    #[tokio::test]
    async fn the_subscriber_reconnects_by_itself_after_its_connection_is_killed() {
        let mut channel = Channel::new().await;
        let mut processes = pair(&channel.name).await;
        listeners_reconnect_after_being_killed(&mut channel, &mut processes, WhileDown::Wait).await;
        for process in &processes {
            process.shutdown().await;
        }
    }

    #[tokio::test]
    async fn the_sequencer_recovers_missed_messages_from_the_redis_stream() {
        let mut channel = Channel::new().await;
        let mut processes = pair(&channel.name).await;
        the_sequencer_recovers_what_notifications_missed(&mut channel, &mut processes).await;
        for process in &processes {
            process.shutdown().await;
        }
    }

    #[tokio::test]
    async fn when_redis_loses_the_history_every_stream_is_reset_and_goes_on() {
        let mut channel = Channel::new().await;
        let [first, mut second] = pair(&channel.name).await;
        let mut sequencer = Sequencer::new(second.adapter.clone(), Metrics::new()).await;
        for text in ["a", "b"] {
            first
                .publish(Envelope::new(Topic::Cable, "rooms:1", text))
                .await;
            let heard = second.receive().await;
            assert!(matches!(
                &sequencer.accept(heard).await[..],
                [Delivery::Message(_)]
            ));
        }
        // What a Redis restart without persistence does to this channel's keys.
        let keys: Vec<String> = cmd("KEYS")
            .arg(format!("{}:*", channel.name))
            .query_async(&mut channel.conn)
            .await
            .expect("KEYS");
        assert!(!keys.is_empty());
        cmd("DEL")
            .arg(&keys)
            .exec_async(&mut channel.conn)
            .await
            .expect("DEL");
        first
            .publish(Envelope::new(Topic::Cable, "rooms:1", "c"))
            .await;
        let heard = second.receive().await;
        assert_eq!(heard.offset, 1, "counting starts over");
        assert_eq!(
            sequencer.accept(heard.clone()).await,
            [
                Delivery::Reset {
                    stream: None,
                    offset: 0
                },
                Delivery::Message(heard)
            ]
        );
        first
            .publish(Envelope::new(Topic::Cable, "rooms:1", "d"))
            .await;
        let next = second.receive().await;
        assert_eq!(
            sequencer.accept(next.clone()).await,
            [Delivery::Message(next)]
        );
        first.shutdown().await;
        second.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_closes_the_subscriber_and_refuses_publishes() {
        let mut channel = Channel::new().await;
        let processes = pair(&channel.name).await;
        shutdown_closes_the_listener(&mut channel, processes).await;
    }

    #[tokio::test]
    async fn start_fails_fast_with_the_password_redacted() {
        assert_start_fails_fast(
            AdapterConfig::Redis {
                url: "redis://app:s3cret-pw@127.0.0.1:1".into(),
                channel: unique_channel(),
            },
            "s3cret-pw",
            "127.0.0.1:1",
        )
        .await;
    }

    // Stream history.

    /// One process with its own history window, and room in its inbox for a burst.
    async fn start_with(name: &'static str, channel: &str, window: HistoryWindow) -> Process {
        let (tx, inbox) = mpsc::channel(256);
        let adapter = timeout(
            Duration::from_secs(20),
            PubSub::start(&config(channel), window, tx),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: the adapter did not start within 20 s"))
        .unwrap_or_else(|e| panic!("{name}: the adapter cannot start: {e:#}"));
        Process {
            name,
            adapter,
            inbox,
        }
    }

    fn window(limit: usize, ttl: Duration) -> HistoryWindow {
        HistoryWindow { limit, ttl }
    }

    async fn position(process: &Process, stream: &str) -> Position {
        timeout(Duration::from_secs(10), process.adapter.position(stream))
            .await
            .unwrap_or_else(|_| panic!("{}: position took over 10 s", process.name))
            .unwrap_or_else(|| panic!("{}: no position for {stream}", process.name))
    }

    async fn replay(process: &Process, stream: &str, after: u64) -> Replay {
        timeout(
            Duration::from_secs(10),
            process.adapter.replay(stream, after),
        )
        .await
        .unwrap_or_else(|_| panic!("{}: replay took over 10 s", process.name))
        .unwrap_or_else(|| panic!("{}: no replay for {stream}", process.name))
    }

    fn offsets(replay: &Replay) -> Vec<u64> {
        replay.messages.iter().map(|(offset, _)| *offset).collect()
    }

    /// Publishes `payloads` on `stream` one by one, each received before the next is sent.
    async fn publish_all(process: &mut Process, stream: &str, payloads: &[&str]) -> Vec<u64> {
        let mut offsets = Vec::new();
        for payload in payloads {
            process
                .publish(Envelope::new(Topic::Cable, stream, *payload))
                .await;
            let got = process.receive().await;
            assert_eq!(&*got.payload, *payload);
            offsets.push(got.offset);
        }
        offsets
    }

    async fn keys(conn: &mut MultiplexedConnection, channel: &str) -> Vec<String> {
        let mut keys: Vec<String> = cmd("KEYS")
            .arg(format!("{channel}:*"))
            .query_async(conn)
            .await
            .expect("KEYS");
        keys.sort();
        keys
    }

    async fn pttl(conn: &mut MultiplexedConnection, key: &str) -> i64 {
        cmd("PTTL").arg(key).query_async(conn).await.expect("PTTL")
    }

    #[tokio::test]
    async fn cable_offsets_are_consecutive_across_processes_and_arrive_in_order_at_both() {
        let channel = unique_channel();
        let mut conn = admin().await;
        let mut processes = pair(&channel).await;

        // Both publish at once: the offsets interleave, but never repeat or skip.
        let burst = |from: usize, count: usize| {
            let process = &processes[from];
            async move {
                for i in 0..count {
                    let payload = format!("{} {i:02}", process.name);
                    process
                        .publish(Envelope::new(Topic::Cable, "rooms:1", payload))
                        .await;
                }
            }
        };
        let other_stream = async {
            for i in 0..3 {
                processes[0]
                    .publish(Envelope::new(Topic::Cable, "rooms:2", format!("other {i}")))
                    .await;
            }
        };
        tokio::join!(burst(0, 15), burst(1, 15), other_stream);

        let mut seen = Vec::new();
        for process in &mut processes {
            let mut arrived = Vec::new();
            for _ in 0..33 {
                let got = process.receive().await;
                arrived.push((got.stream.to_string(), got.offset, got.payload.to_string()));
            }
            process.assert_nothing_more().await;
            let of = |stream: &str| -> Vec<(u64, String)> {
                arrived
                    .iter()
                    .filter(|(s, _, _)| s == stream)
                    .map(|(_, offset, payload)| (*offset, payload.clone()))
                    .collect()
            };
            let rooms_1 = of("rooms:1");
            let order: Vec<u64> = rooms_1.iter().map(|(offset, _)| *offset).collect();
            assert_eq!(order, (1..=30).collect::<Vec<_>>(), "{}", process.name);
            for name in ["first", "second"] {
                let own: Vec<&String> = rooms_1
                    .iter()
                    .map(|(_, payload)| payload)
                    .filter(|payload| payload.starts_with(name))
                    .collect();
                let mut sorted = own.clone();
                sorted.sort();
                assert_eq!(own.len(), 15);
                assert_eq!(own, sorted, "each publisher's messages keep its order");
            }
            let rooms_2 = of("rooms:2");
            assert_eq!(
                rooms_2,
                [(1, "other 0"), (2, "other 1"), (3, "other 2")]
                    .map(|(offset, payload)| (offset, payload.to_owned()))
            );
            seen.push(arrived);
        }
        assert_eq!(seen[0], seen[1], "both receive the same sequence");

        let [first, second] = &processes;
        let at = position(first, "rooms:1").await;
        assert_eq!(at.offset, 30);
        assert_eq!(position(second, "rooms:1").await, at);
        assert_eq!(position(second, "rooms:2").await.offset, 3);
        assert_eq!(position(second, "rooms:9").await.offset, 0);
        let tail = replay(second, "rooms:1", 27).await;
        assert!(tail.complete);
        assert_eq!(offsets(&tail), [28, 29, 30]);
        assert_eq!(tail.epoch, at.epoch);

        assert_eq!(
            keys(&mut conn, &channel).await,
            [
                format!("{channel}:epoch"),
                format!("{channel}:history:rooms:1"),
                format!("{channel}:history:rooms:2"),
                format!("{channel}:offset:rooms:1"),
                format!("{channel}:offset:rooms:2"),
            ],
            "everything is named after the channel"
        );
        for process in &processes {
            process.shutdown().await;
        }
    }

    #[tokio::test]
    async fn presence_gets_no_offset_and_no_history() {
        let channel = unique_channel();
        let mut conn = admin().await;
        let mut processes = pair(&channel).await;
        let presence = Envelope::new(Topic::Presence, "rooms:5", "{}");
        processes[0].publish(presence.clone()).await;
        for process in &mut processes {
            let got = process.receive().await;
            assert_eq!(got, presence, "{}: offset 0, as sent", process.name);
        }
        assert_eq!(position(&processes[1], "rooms:5").await.offset, 0);
        let replay = replay(&processes[1], "rooms:5", 0).await;
        assert!(replay.complete && replay.messages.is_empty());
        assert_eq!(
            keys(&mut conn, &channel).await,
            [format!("{channel}:epoch")]
        );
        for process in &processes {
            process.shutdown().await;
        }
    }

    // The in-process adapter's unit test of the same name, against Redis.
    #[tokio::test]
    async fn a_replay_returns_what_came_after_the_offset_while_it_is_kept() {
        let channel = unique_channel();
        drop(admin().await);
        let small = window(3, Duration::from_secs(60));
        let mut process = start_with("first", &channel, small).await;
        let offsets_given = publish_all(&mut process, "rooms:1", &["1", "2", "3", "4", "5"]).await;
        assert_eq!(offsets_given, [1, 2, 3, 4, 5]);

        let got = replay(&process, "rooms:1", 2).await;
        assert!(got.complete);
        let messages: Vec<(u64, &str)> = got.messages.iter().map(|(o, p)| (*o, &**p)).collect();
        assert_eq!(messages, [(3, "3"), (4, "4"), (5, "5")]);
        let current = replay(&process, "rooms:1", 5).await;
        assert!(
            current.complete && current.messages.is_empty(),
            "nothing missed"
        );
        let too_old = replay(&process, "rooms:1", 1).await;
        assert!(!too_old.complete, "offset 2 is no longer kept");
        assert!(
            !replay(&process, "rooms:1", 9).await.complete,
            "from the future"
        );
        assert!(
            replay(&process, "rooms:7", 0).await.complete,
            "an empty stream"
        );

        // History lives in Redis: a process started later (a restart) replays the same.
        process.shutdown().await;
        let later = start_with("later", &channel, small).await;
        let again = replay(&later, "rooms:1", 2).await;
        assert_eq!(again, got);
        later.shutdown().await;
    }

    #[tokio::test]
    async fn messages_older_than_the_ttl_are_not_replayed_and_idle_streams_expire() {
        let channel = unique_channel();
        let mut conn = admin().await;
        let ttl = Duration::from_millis(1_500);
        let mut process = start_with("first", &channel, window(100, ttl)).await;
        publish_all(&mut process, "rooms:1", &["a", "b"]).await;

        let history = pttl(&mut conn, &format!("{channel}:history:rooms:1")).await;
        assert!(0 < history && history <= 1_500, "history PTTL {history}");
        let counter = pttl(&mut conn, &format!("{channel}:offset:rooms:1")).await;
        assert!(
            counter > 24 * 3_600 * 1_000,
            "the counter outlives the history by far: PTTL {counter}"
        );
        let epoch = pttl(&mut conn, &format!("{channel}:epoch")).await;
        assert!(
            epoch > counter - 1_000,
            "the epoch lasts as long as the counters: PTTL {epoch}"
        );
        assert_eq!(offsets(&replay(&process, "rooms:1", 0).await), [1, 2]);

        tokio::time::sleep(ttl + Duration::from_millis(300)).await;
        let stale = replay(&process, "rooms:1", 0).await;
        assert!(!stale.complete, "what offsets 1 and 2 said is gone");
        assert!(stale.messages.is_empty());
        assert!(
            replay(&process, "rooms:1", 2).await.complete,
            "nothing missed"
        );
        assert_eq!(position(&process, "rooms:1").await.offset, 2);
        assert_eq!(
            keys(&mut conn, &channel).await,
            [
                format!("{channel}:epoch"),
                format!("{channel}:offset:rooms:1")
            ],
            "the idle stream's history expired"
        );
        // Offsets go on from the counter.
        assert_eq!(publish_all(&mut process, "rooms:1", &["c"]).await, [3]);
        process.shutdown().await;
    }

    #[tokio::test]
    async fn a_counter_that_expired_starts_over_and_pages_from_before_refresh() {
        let channel = unique_channel();
        let mut conn = admin().await;
        let mut process = start_with("first", &channel, HistoryWindow::default()).await;
        publish_all(&mut process, "rooms:1", &["1", "2", "3", "4", "5"]).await;
        // What expiry would do, sooner.
        cmd("DEL")
            .arg(format!("{channel}:offset:rooms:1"))
            .exec_async(&mut conn)
            .await
            .expect("DEL");
        assert_eq!(position(&process, "rooms:1").await.offset, 0);
        assert!(!replay(&process, "rooms:1", 5).await.complete);

        assert_eq!(publish_all(&mut process, "rooms:1", &["new"]).await, [1]);
        assert!(
            !replay(&process, "rooms:1", 5).await.complete,
            "a page at 5 is beyond the new counter"
        );
        let fresh = replay(&process, "rooms:1", 0).await;
        assert!(fresh.complete);
        let messages: Vec<(u64, &str)> = fresh.messages.iter().map(|(o, p)| (*o, &**p)).collect();
        assert_eq!(
            messages,
            [(1, "new")],
            "the old history went with its counter"
        );
        process.shutdown().await;
    }

    #[tokio::test]
    async fn the_epoch_is_shared_survives_restarts_and_is_renewed_when_redis_loses_it() {
        let channel = unique_channel();
        let mut conn = admin().await;
        let mut processes = pair(&channel).await;
        let elsewhere = start_with("elsewhere", &unique_channel(), HistoryWindow::default()).await;
        let epoch = position(&processes[0], "rooms:1").await.epoch;
        assert_eq!(position(&processes[1], "rooms:1").await.epoch, epoch);
        assert_ne!(position(&elsewhere, "rooms:1").await.epoch, epoch);
        elsewhere.shutdown().await;
        publish_all(&mut processes[0], "rooms:1", &["a"]).await;
        processes[1].receive().await;

        processes[1].shutdown().await;
        let restarted = start_with("restarted", &channel, HistoryWindow::default()).await;
        assert_eq!(position(&restarted, "rooms:1").await.epoch, epoch);

        // Redis loses its data (a restart without persistence, a flush): a new epoch, which
        // every process then reports, so pages from before refresh.
        let lost: Vec<String> = keys(&mut conn, &channel).await;
        cmd("DEL")
            .arg(&lost)
            .exec_async(&mut conn)
            .await
            .expect("DEL");
        let renewed = position(&restarted, "rooms:1").await;
        assert_ne!(renewed.epoch, epoch);
        assert_eq!(renewed.offset, 0);
        assert_eq!(position(&processes[0], "rooms:1").await, renewed);
        let stale = replay(&processes[0], "rooms:1", 1).await;
        assert_eq!(stale.epoch, renewed.epoch);
        assert!(!stale.complete);
        processes[0].shutdown().await;
        restarted.shutdown().await;
    }

    #[tokio::test]
    async fn publishes_go_on_after_redis_forgets_the_script() {
        let channel = unique_channel();
        let mut conn = admin().await;
        let mut process = start_with("first", &channel, HistoryWindow::default()).await;
        assert_eq!(publish_all(&mut process, "rooms:1", &["a"]).await, [1]);
        // As after a failover to a server that never saw it. (Global, but harmless to the
        // tests running alongside: they take the same way back.)
        cmd("SCRIPT")
            .arg("FLUSH")
            .exec_async(&mut conn)
            .await
            .expect("SCRIPT FLUSH");
        assert_eq!(
            publish_all(&mut process, "rooms:1", &["b", "c"]).await,
            [2, 3]
        );
        process.shutdown().await;
    }

    #[tokio::test]
    async fn when_redis_cannot_answer_a_replay_is_incomplete_and_a_publish_fails() {
        let channel = unique_channel();
        let mut conn = admin().await;
        let mut process = start_with("first", &channel, HistoryWindow::default()).await;
        publish_all(&mut process, "rooms:1", &["a"]).await;
        // The history key holds something else, so reading or appending to it fails.
        cmd("SET")
            .arg(format!("{channel}:history:rooms:1"))
            .arg("not a stream")
            .exec_async(&mut conn)
            .await
            .expect("SET");
        let unreadable = replay(&process, "rooms:1", 0).await;
        assert!(!unreadable.complete, "the client is told to refresh");
        assert!(unreadable.messages.is_empty());
        let result = process
            .adapter
            .publish(Envelope::new(Topic::Cable, "rooms:1", "b"))
            .await;
        assert!(
            matches!(result, Err(PublishError::Unavailable(_))),
            "{result:?}"
        );
        process.assert_nothing_more().await;

        process.shutdown().await;
        assert_eq!(process.adapter.position("rooms:1").await, None);
        let after_shutdown = process.adapter.replay("rooms:1", 0).await;
        assert!(after_shutdown.is_some_and(|replay| !replay.complete));
    }
}
