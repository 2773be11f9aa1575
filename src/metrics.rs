//! Prometheus metrics for `GET /metrics`. One [`Metrics`] is built at start-up and owned by the
//! app state; the places that record get a clone (every metric is a cheap handle onto shared
//! atomics), so there is no global registry. Values that the hub, the presence server, the
//! pub/sub adapter and the database pool already keep are not counted twice: they are read when
//! a scrape comes in and copied into the registry ([`Metrics::record`]).

use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets, in seconds, from half a millisecond (a local broadcast) to ten seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric the app exports, registered in a registry of its own.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Two scrapes at once must not both add the same difference to a copied counter.
    recording: Arc<Mutex<()>>,
    pub sockets_open: IntGaugeVec,
    pub cable_subscriptions: IntGauge,
    pub broadcasts_published: IntCounter,
    pub broadcasts_delivered: IntCounter,
    pub delivery_seconds: Histogram,
    pub slow_disconnects: IntCounterVec,
    pub pubsub_reconnects: IntCounter,
    pub pubsub_healthy: IntGauge,
    pub pubsub_lag_seconds: Histogram,
    pub pubsub_backlog: IntGauge,
    pub pubsub_recovered: IntCounter,
    pub pubsub_duplicates: IntCounter,
    pub stream_resets: IntCounter,
    pub http_requests: IntCounterVec,
    pub http_seconds: HistogramVec,
    pub db_pool_connections: IntGauge,
    pub db_pool_idle: IntGauge,
    pub db_pool_max: IntGauge,
    pub task_markup_cached: IntGauge,
    pub task_markup_bytes: IntGauge,
}

/// What the rest of the process knows at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub cable_connections: u64,
    pub cable_subscriptions: u64,
    pub cable_delivered: u64,
    pub cable_slow_disconnects: u64,
    pub presence_connections: u64,
    pub presence_slow_disconnects: u64,
    pub pubsub_healthy: bool,
    pub pubsub_reconnects: u64,
    pub db_pool_connections: u64,
    pub db_pool_idle: u64,
    pub db_pool_max: u64,
    pub task_markup_cached: u64,
    pub task_markup_bytes: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("tasksync".into()), None).expect("a valid registry prefix");
        let reg = Registrar(&registry);
        Self {
            sockets_open: reg.gauge_vec(
                Opts::new(
                    "sockets_open",
                    "Open WebSockets, by kind (cable, presence).",
                ),
                &["kind"],
            ),
            cable_subscriptions: reg.gauge(Opts::new(
                "cable_subscriptions",
                "Cable subscriptions held by this process's sockets.",
            )),
            broadcasts_published: reg.counter(Opts::new(
                "broadcasts_published_total",
                "Turbo Stream broadcasts this process published to the pub/sub adapter.",
            )),
            broadcasts_delivered: reg.counter(Opts::new(
                "broadcasts_delivered_total",
                "Broadcast frames the hub queued to cable sockets (one per subscriber reached).",
            )),
            delivery_seconds: reg.histogram(
                HistogramOpts::new(
                    "broadcast_delivery_seconds",
                    "From publish (in-process adapter) or receipt from the adapter (PostgreSQL, \
                     Redis) to the frame written to a cable socket.",
                )
                .buckets(BUCKETS.to_vec()),
            ),
            slow_disconnects: reg.counter_vec(
                Opts::new(
                    "slow_client_disconnects_total",
                    "Sockets closed because their outbound queue was full, by kind.",
                ),
                &["kind"],
            ),
            pubsub_reconnects: reg.counter(Opts::new(
                "pubsub_reconnects_total",
                "Times the pub/sub adapter's receiving connection was re-established.",
            )),
            pubsub_healthy: reg.gauge(Opts::new(
                "pubsub_healthy",
                "1 while the pub/sub adapter is connected, 0 while it reconnects.",
            )),
            pubsub_lag_seconds: reg.histogram(
                HistogramOpts::new(
                    "pubsub_lag_seconds",
                    "How long envelopes waited between arriving from the pub/sub adapter and \
                     reaching the hub or the presence server: grows when this process falls \
                     behind its adapter.",
                )
                .buckets(BUCKETS.to_vec()),
            ),
            pubsub_backlog: reg.gauge(Opts::new(
                "pubsub_backlog",
                "Envelopes received from the pub/sub adapter and not yet handed on.",
            )),
            pubsub_recovered: reg.counter(Opts::new(
                "pubsub_messages_recovered_total",
                "Cable messages read back from stream history because their notification was \
                 missed (while the adapter reconnected, say).",
            )),
            pubsub_duplicates: reg.counter(Opts::new(
                "pubsub_duplicates_dropped_total",
                "Cable messages heard again after a catch-up had already delivered them.",
            )),
            stream_resets: reg.counter(Opts::new(
                "cable_stream_resets_total",
                "Times subscribers were told to refresh because messages were lost beyond \
                 the history window (or the history started over).",
            )),
            http_requests: reg.counter_vec(
                Opts::new(
                    "http_requests_total",
                    "HTTP requests, by method, route pattern and status.",
                ),
                &["method", "route", "status"],
            ),
            http_seconds: reg.histogram_vec(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "HTTP request latency until the response head, by method, route pattern \
                     and status.",
                )
                .buckets(BUCKETS.to_vec()),
                &["method", "route", "status"],
            ),
            db_pool_connections: reg.gauge(Opts::new(
                "db_pool_connections",
                "Database connections open in the pool, idle or in use.",
            )),
            db_pool_idle: reg.gauge(Opts::new(
                "db_pool_idle_connections",
                "Database connections open in the pool and idle.",
            )),
            db_pool_max: reg.gauge(Opts::new(
                "db_pool_max_connections",
                "The most connections the pool may open: DATABASE_POOL_SIZE (with SQLite, plus \
                 its one writer connection).",
            )),
            task_markup_cached: reg.gauge(Opts::new(
                "task_markup_cached_tasks",
                "Tasks whose page markup is cached for room pages (a deleted task's leaves once \
                 the deletion is committed).",
            )),
            task_markup_bytes: reg.gauge(Opts::new(
                "task_markup_cached_bytes",
                "Bytes of cached task markup; the cache starts over past 2 MiB.",
            )),
            recording: Arc::default(),
            registry,
        }
    }

    /// Records one answered HTTP request. `route` must be a matched pattern (or a fixed word),
    /// never a raw path, or every room id would become a time series.
    pub fn http_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_seconds
            .with_label_values(&labels)
            .observe(seconds);
    }

    /// Copies what other parts of the process keep into the registry.
    pub fn record(&self, now: &Snapshot) {
        let _one_at_a_time = self
            .recording
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.sockets_open
            .with_label_values(&["cable"])
            .set(gauge(now.cable_connections));
        self.sockets_open
            .with_label_values(&["presence"])
            .set(gauge(now.presence_connections));
        self.cable_subscriptions.set(gauge(now.cable_subscriptions));
        catch_up(&self.broadcasts_delivered, now.cable_delivered);
        catch_up(
            &self.slow_disconnects.with_label_values(&["cable"]),
            now.cable_slow_disconnects,
        );
        catch_up(
            &self.slow_disconnects.with_label_values(&["presence"]),
            now.presence_slow_disconnects,
        );
        catch_up(&self.pubsub_reconnects, now.pubsub_reconnects);
        self.pubsub_healthy.set(i64::from(now.pubsub_healthy));
        self.db_pool_connections.set(gauge(now.db_pool_connections));
        self.db_pool_idle.set(gauge(now.db_pool_idle));
        self.db_pool_max.set(gauge(now.db_pool_max));
        self.task_markup_cached.set(gauge(now.task_markup_cached));
        self.task_markup_bytes.set(gauge(now.task_markup_bytes));
    }

    /// The registry in Prometheus's text exposition format.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        // Encoding our own well-formed families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Moves a counter up to a total kept elsewhere; totals only grow, so it never goes back.
fn catch_up(counter: &IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// Creates metrics and registers them; the names are fixed above, so registering cannot clash.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> M {
        self.0
            .register(Box::new(metric.clone()))
            .expect("each metric is registered once");
        metric
    }

    fn gauge(&self, opts: Opts) -> IntGauge {
        self.add(IntGauge::with_opts(opts).expect("valid gauge"))
    }

    fn gauge_vec(&self, opts: Opts, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(opts, labels).expect("valid gauge"))
    }

    fn counter(&self, opts: Opts) -> IntCounter {
        self.add(IntCounter::with_opts(opts).expect("valid counter"))
    }

    fn counter_vec(&self, opts: Opts, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(opts, labels).expect("valid counter"))
    }

    fn histogram(&self, opts: HistogramOpts) -> Histogram {
        self.add(Histogram::with_opts(opts).expect("valid histogram"))
    }

    fn histogram_vec(&self, opts: HistogramOpts, labels: &[&str]) -> HistogramVec {
        self.add(HistogramVec::new(opts, labels).expect("valid histogram"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_totals_only_move_forward_and_render_as_prometheus_text() {
        let metrics = Metrics::new();
        let mut now = Snapshot {
            cable_connections: 3,
            cable_delivered: 10,
            cable_slow_disconnects: 1,
            pubsub_healthy: true,
            db_pool_max: 5,
            ..Snapshot::default()
        };
        metrics.record(&now);
        metrics.record(&now);
        now.cable_delivered = 12;
        metrics.record(&now);
        let text = metrics.encode();
        assert!(
            text.contains("tasksync_broadcasts_delivered_total 12"),
            "{text}"
        );
        assert!(text.contains(r#"tasksync_sockets_open{kind="cable"} 3"#));
        assert!(text.contains(r#"tasksync_slow_client_disconnects_total{kind="cable"} 1"#));
        assert!(text.contains("tasksync_pubsub_healthy 1"));
        assert!(text.contains("# TYPE tasksync_broadcast_delivery_seconds histogram"));
    }

    #[test]
    fn http_requests_are_counted_by_pattern_and_status_with_a_latency_histogram() {
        let metrics = Metrics::new();
        metrics.http_request("POST", "/rooms/{room_id}/tasks", 200, 0.003);
        metrics.http_request("POST", "/rooms/{room_id}/tasks", 200, 0.2);
        let text = metrics.encode();
        assert!(text.contains(
            r#"tasksync_http_requests_total{method="POST",route="/rooms/{room_id}/tasks",status="200"} 2"#
        ), "{text}");
        assert!(text.contains(
            r#"tasksync_http_request_duration_seconds_bucket{method="POST",route="/rooms/{room_id}/tasks",status="200",le="0.005"} 1"#
        ));
    }

    #[test]
    fn each_instance_has_its_own_registry() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.broadcasts_published.inc();
        assert!(b.encode().contains("tasksync_broadcasts_published_total 0"));
    }
}
