//! Keeps an adapter's receiving connection (the PostgreSQL listener, the Redis subscriber) alive
//! in a background task: when the connection drops, the task reports `Degraded`, reconnects with
//! jittered exponential backoff and reports `Healthy` again, until it is told to stop. An adapter
//! says how to connect and what to do with a connection by implementing [`Feed`], and holds the
//! [`Supervisor`] that owns the task, its health and its stop signal.

use std::{
    future::Future,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};

use super::Health;

/// How long a shutdown waits for the task to close its connection politely.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// A backend's stream of envelopes, over connections that can drop.
pub(super) trait Feed: Send + Sync + 'static {
    type Connection: Send + 'static;

    /// The backend and the task's role, as health reports name them ("PostgreSQL", "listener").
    const BACKEND: &'static str;
    const ROLE: &'static str;

    fn connect(&self) -> impl Future<Output = anyhow::Result<Self::Connection>> + Send;

    /// Hands what arrives to the inbox until the connection fails or a stop is asked for.
    fn serve(
        &self,
        connection: Self::Connection,
        stop: &mut watch::Receiver<bool>,
    ) -> impl Future<Output = Ended> + Send;

    // The adapters log these themselves so that their events keep the adapter's module as their
    // target, which is what log filters select on.
    fn lost(&self, reason: &str);
    fn cannot_reconnect(&self, attempt: u32, err: &anyhow::Error);
    fn reconnected(&self);
}

/// Why a session on one connection ended.
pub(super) enum Ended {
    /// Asked to stop, or nobody reads the inbox any more.
    Stopped(&'static str),
    /// The connection failed; worth reconnecting.
    Lost(String),
}

pub(super) struct Supervisor {
    role: &'static str,
    health: watch::Receiver<Health>,
    /// Dropping it (with the adapter's last handle) stops the task as surely as sending `true`.
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Successful reconnections so far, for the metrics: health alone cannot show an outage
    /// that came and went between two scrapes.
    reconnects: Arc<AtomicU64>,
}

impl Supervisor {
    /// Starts serving `connection`, already open so that start-up reports a backend it cannot
    /// reach, and keeps `feed` connected from then on.
    pub(super) fn spawn<F: Feed>(feed: F, connection: F::Connection) -> Self {
        let (health_tx, health_rx) = watch::channel(Health::Healthy);
        let (stop_tx, stop_rx) = watch::channel(false);
        let reconnects = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(supervise(
            feed,
            connection,
            health_tx,
            stop_rx,
            reconnects.clone(),
        ));
        Self {
            role: F::ROLE,
            health: health_rx,
            stop: stop_tx,
            task: Mutex::new(Some(task)),
            reconnects,
        }
    }

    pub(super) fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    pub(super) fn health(&self) -> Health {
        // The task owns the sender; if it is gone, nothing is receiving any more.
        if self.health.has_changed().is_err() {
            return match &*self.health.borrow() {
                Health::Healthy => Health::Degraded(format!("the {} has stopped", self.role)),
                degraded => degraded.clone(),
            };
        }
        self.health.borrow().clone()
    }

    /// A task wedged on a server that stopped answering must not hold up the process's exit,
    /// hence the abort once `SHUTDOWN_GRACE` has passed.
    pub(super) async fn shutdown(&self) {
        self.stop.send_replace(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut task) = task
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

async fn supervise<F: Feed>(
    feed: F,
    mut connection: F::Connection,
    health: watch::Sender<Health>,
    mut stop: watch::Receiver<bool>,
    reconnects: Arc<AtomicU64>,
) {
    let (backend, role) = (F::BACKEND, F::ROLE);
    let why_stopped = loop {
        let reason = match feed.serve(connection, &mut stop).await {
            Ended::Stopped(why) => break why,
            Ended::Lost(reason) => reason,
        };
        feed.lost(&reason);
        health.send_replace(Health::Degraded(format!(
            "{backend} {role} disconnected ({reason}); reconnecting"
        )));
        match reconnect(&feed, &health, &mut stop).await {
            Some(fresh) => connection = fresh,
            None => break "shut down",
        }
        health.send_replace(Health::Healthy);
        reconnects.fetch_add(1, Ordering::Relaxed);
        feed.reconnected();
    };
    health.send_replace(Health::Degraded(format!("{backend} {role} {why_stopped}")));
}

/// A new connection, after backing off; `None` when told to stop first.
async fn reconnect<F: Feed>(
    feed: &F,
    health: &watch::Sender<Health>,
    stop: &mut watch::Receiver<bool>,
) -> Option<F::Connection> {
    let mut attempt = 0;
    loop {
        until_stopped(stop, tokio::time::sleep(backoff(attempt, rand::random()))).await?;
        match until_stopped(stop, feed.connect()).await? {
            Ok(connection) => return Some(connection),
            Err(err) => {
                attempt = attempt.saturating_add(1);
                feed.cannot_reconnect(attempt, &err);
                health.send_replace(Health::Degraded(format!(
                    "{} {} reconnecting (attempt {attempt} failed: {err:#})",
                    F::BACKEND,
                    F::ROLE
                )));
            }
        }
    }
}

/// How long to wait before reconnect attempt `attempt` (0-based): exponential from 100 ms, capped
/// at 5 s, with "equal jitter" (half fixed, half random from `jitter` in [0, 1)) so processes
/// that lost the server together do not return in lockstep, and no wait collapses to zero.
fn backoff(attempt: u32, jitter: f64) -> Duration {
    let ceiling = BACKOFF_START
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(BACKOFF_CAP);
    let jitter = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    let half = ceiling / 2;
    half + half.mul_f64(jitter)
}

/// `fut`'s output, or `None` as soon as a stop is asked for (or every handle is dropped).
pub(super) async fn until_stopped<F: Future>(
    stop: &mut watch::Receiver<bool>,
    fut: F,
) -> Option<F::Output> {
    tokio::select! {
        biased;
        _ = stop.wait_for(|stopped| *stopped) => None,
        out = fut => Some(out),
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::{Mutex as AsyncMutex, mpsc};

    use super::*;

    #[test]
    fn backoff_doubles_from_about_100ms_and_stops_at_5s() {
        assert_eq!(backoff(0, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(0, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(1, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(3, 0.0), Duration::from_millis(400));
        assert_eq!(backoff(6, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(u32::MAX, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(u32::MAX, 0.0), Duration::from_millis(2500));
    }

    #[test]
    fn backoff_jitter_stays_within_its_band() {
        for attempt in 0..10 {
            let low = backoff(attempt, 0.0);
            let high = backoff(attempt, 1.0);
            let mid = backoff(attempt, 0.5);
            assert!(low < mid && mid < high, "attempt {attempt}");
            assert_eq!(backoff(attempt, -3.0), low);
            assert_eq!(backoff(attempt, 7.0), high);
            assert_eq!(backoff(attempt, f64::NAN), low);
        }
    }

    /// A feed the test drives: each session ends, and each reconnect attempt finishes, when the
    /// test says how.
    struct Scripted {
        sessions: AsyncMutex<mpsc::UnboundedReceiver<Ended>>,
        connects: AsyncMutex<mpsc::UnboundedReceiver<Result<(), String>>>,
        /// Whether a session ignores the stop signal, as a wedged connection would.
        deaf: bool,
    }

    struct Controls {
        sessions: mpsc::UnboundedSender<Ended>,
        connects: mpsc::UnboundedSender<Result<(), String>>,
    }

    fn scripted(deaf: bool) -> (Scripted, Controls) {
        let (sessions_tx, sessions) = mpsc::unbounded_channel();
        let (connects_tx, connects) = mpsc::unbounded_channel();
        let feed = Scripted {
            sessions: AsyncMutex::new(sessions),
            connects: AsyncMutex::new(connects),
            deaf,
        };
        let controls = Controls {
            sessions: sessions_tx,
            connects: connects_tx,
        };
        (feed, controls)
    }

    impl Feed for Scripted {
        type Connection = ();
        const BACKEND: &'static str = "Test";
        const ROLE: &'static str = "feed";

        async fn connect(&self) -> anyhow::Result<()> {
            match self.connects.lock().await.recv().await {
                Some(Ok(())) => Ok(()),
                Some(Err(err)) => Err(anyhow::anyhow!(err)),
                None => std::future::pending().await,
            }
        }

        async fn serve(&self, (): (), stop: &mut watch::Receiver<bool>) -> Ended {
            let mut sessions = self.sessions.lock().await;
            let next = if self.deaf {
                Some(sessions.recv().await)
            } else {
                until_stopped(stop, sessions.recv()).await
            };
            match next {
                Some(Some(ended)) => ended,
                Some(None) => std::future::pending().await,
                None => Ended::Stopped("shut down"),
            }
        }

        fn lost(&self, _: &str) {}
        fn cannot_reconnect(&self, _: u32, _: &anyhow::Error) {}
        fn reconnected(&self) {}
    }

    /// The supervisor's health once it differs from `from`.
    async fn health_after(supervisor: &Supervisor, from: &Health) -> Health {
        let changed = async {
            loop {
                let now = supervisor.health();
                if &now != from {
                    return now;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), changed)
            .await
            .expect("the health changes")
    }

    #[tokio::test]
    async fn health_follows_a_lost_connection_until_it_is_back_and_then_the_shutdown() {
        let (feed, controls) = scripted(false);
        let supervisor = Supervisor::spawn(feed, ());
        assert_eq!(supervisor.health(), Health::Healthy);

        controls.sessions.send(Ended::Lost("reset".into())).unwrap();
        let lost = health_after(&supervisor, &Health::Healthy).await;
        assert_eq!(
            lost,
            Health::Degraded("Test feed disconnected (reset); reconnecting".into())
        );

        controls.connects.send(Err("refused".into())).unwrap();
        let failed = health_after(&supervisor, &lost).await;
        assert_eq!(
            failed,
            Health::Degraded("Test feed reconnecting (attempt 1 failed: refused)".into())
        );

        assert_eq!(supervisor.reconnects(), 0);
        controls.connects.send(Ok(())).unwrap();
        assert_eq!(health_after(&supervisor, &failed).await, Health::Healthy);
        assert_eq!(supervisor.reconnects(), 1);

        supervisor.shutdown().await;
        assert_eq!(
            supervisor.health(),
            Health::Degraded("Test feed shut down".into())
        );
    }

    #[tokio::test]
    async fn a_session_that_ends_by_itself_stops_the_task() {
        let (feed, controls) = scripted(false);
        let supervisor = Supervisor::spawn(feed, ());
        controls
            .sessions
            .send(Ended::Stopped("stopped: the inbox is closed"))
            .unwrap();
        assert_eq!(
            health_after(&supervisor, &Health::Healthy).await,
            Health::Degraded("Test feed stopped: the inbox is closed".into())
        );
    }

    #[tokio::test]
    async fn shutdown_aborts_a_task_that_ignores_the_stop_and_health_says_it_is_gone() {
        let (feed, _controls) = scripted(true);
        let supervisor = Supervisor::spawn(feed, ());
        let started = tokio::time::Instant::now();
        supervisor.shutdown().await;
        assert!(started.elapsed() >= SHUTDOWN_GRACE);
        let gone = health_after(&supervisor, &Health::Healthy).await;
        assert_eq!(gone, Health::Degraded("the feed has stopped".into()));
    }
}
