//! The PostgreSQL and Redis pub/sub adapters against the real servers. Two adapters on the same
//! database (or Redis channel) stand in for two server processes. Connections are killed from
//! the outside, never by restarting a server: other tests share both servers.

use std::time::Duration;

use tasksync::pubsub::{
    AdapterConfig, Envelope, Health, HistoryWindow, PubSub, PublishError, Topic,
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

    #[tokio::test]
    async fn an_envelope_published_by_one_process_reaches_both() {
        let (_database, url) = database().await;
        let mut processes = pair(&url).await;

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
        let mut processes = pair(&url).await;

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
        let envelope = Envelope::new(Topic::Cable, "rooms:3", "after the junk");
        assert_reaches_both(0, &mut processes, envelope).await;
        for process in &mut processes {
            process.assert_nothing_more().await;
            assert_eq!(process.adapter.health(), Health::Healthy);
            process.shutdown().await;
        }
    }

    #[tokio::test]
    async fn the_listener_reconnects_by_itself_after_its_connection_is_killed() {
        let (_database, url) = database().await;
        let mut conn = admin(&url).await;
        let mut processes = pair(&url).await;
        assert_reaches_both(
            0,
            &mut processes,
            Envelope::new(Topic::Cable, "rooms:1", "before"),
        )
        .await;

        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() \
               AND application_name = 'tasksync-pubsub-listener'",
        )
        .fetch_all(&mut conn)
        .await
        .expect("terminate the listeners");
        assert_eq!(killed, [true, true], "one listener per process");

        for process in &processes {
            process
                .wait_for_health(is_degraded, "Degraded", DETECTION)
                .await;
        }
        let during = processes[0]
            .adapter
            .publish(Envelope::new(Topic::Cable, "rooms:1", "during"))
            .await;
        assert!(
            matches!(during, Err(PublishError::Unavailable(_)) | Ok(())),
            "publishing while degraded fails cleanly: {during:?}"
        );
        for process in &processes {
            process
                .wait_for_health(is_healthy, "Healthy again", RECOVERY)
                .await;
        }
        assert_eq!(listeners(&mut conn).await, 2, "both listen again");
        // A publish the listener lost, if it got through, may still be on its way to the other.
        for process in &mut processes {
            while timeout(Duration::from_millis(200), process.inbox.recv())
                .await
                .is_ok_and(|e| e.is_some_and(|e| &*e.payload == "during"))
            {}
        }

        assert_reaches_both(
            1,
            &mut processes,
            Envelope::new(Topic::Cable, "rooms:1", "after"),
        )
        .await;
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
    async fn shutdown_closes_the_listener_and_refuses_publishes() {
        let (_database, url) = database().await;
        let mut conn = admin(&url).await;
        let [first, second] = pair(&url).await;
        assert_eq!(listeners(&mut conn).await, 2);

        first.shutdown().await;
        let gone = async {
            while listeners(&mut conn).await != 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        timeout(Duration::from_secs(5), gone)
            .await
            .expect("the listener's connection closes on shutdown");
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

    #[tokio::test]
    async fn an_envelope_published_by_one_process_reaches_both() {
        let channel = unique_channel();
        let mut processes = pair(&channel).await;
        let mut elsewhere = Process::start("elsewhere", &config(&unique_channel())).await;

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
        let mut processes = pair(&channel).await;
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
        let envelope = Envelope::new(Topic::Cable, "rooms:3", "after the junk");
        assert_reaches_both(0, &mut processes, envelope).await;
        for process in &mut processes {
            process.assert_nothing_more().await;
            assert_eq!(process.adapter.health(), Health::Healthy);
            process.shutdown().await;
        }
    }

    #[tokio::test]
    async fn the_subscriber_reconnects_by_itself_after_its_connection_is_killed() {
        let channel = unique_channel();
        let mut conn = admin().await;
        let mut processes = pair(&channel).await;
        assert_reaches_both(
            0,
            &mut processes,
            Envelope::new(Topic::Cable, "rooms:1", "before"),
        )
        .await;

        let ids = subscribers(&mut conn, &channel).await;
        assert_eq!(ids.len(), 2, "one named subscriber per process: {ids:?}");
        for id in &ids {
            cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .exec_async(&mut conn)
                .await
                .expect("CLIENT KILL");
        }

        for process in &processes {
            process
                .wait_for_health(is_degraded, "Degraded", DETECTION)
                .await;
        }
        for process in &processes {
            process
                .wait_for_health(is_healthy, "Healthy again", RECOVERY)
                .await;
        }
        let fresh = subscribers(&mut conn, &channel).await;
        assert_eq!(fresh.len(), 2, "both subscribe again: {fresh:?}");
        assert!(
            fresh.iter().all(|id| !ids.contains(id)),
            "on new connections"
        );

        assert_reaches_both(
            1,
            &mut processes,
            Envelope::new(Topic::Cable, "rooms:1", "after"),
        )
        .await;
        for process in &processes {
            process.shutdown().await;
        }
    }

    #[tokio::test]
    async fn shutdown_closes_the_subscriber_and_refuses_publishes() {
        let channel = unique_channel();
        let mut conn = admin().await;
        let [first, second] = pair(&channel).await;
        assert_eq!(subscribers(&mut conn, &channel).await.len(), 2);

        first.shutdown().await;
        let gone = async {
            while subscribers(&mut conn, &channel).await.len() != 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        timeout(Duration::from_secs(5), gone)
            .await
            .expect("the subscriber's connection closes on shutdown");
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
}
