//! PostgreSQL LISTEN/NOTIFY adapter. Every process LISTENs on one channel, `tasksync_pubsub`,
//! over a dedicated connection it drives itself (a pooled connection's driver would swallow the
//! notifications), and publishes with `pg_notify` through a small pool. NOTIFY is scoped to the
//! database, so processes meet exactly when they share the app's database. A NOTIFY payload is
//! capped at 8000 bytes: an envelope whose encoding fits in 7900 bytes travels inline, as
//! `Envelope::encode` text (`v1\t...`); a bigger one is stored in `tasksync_pubsub_payloads`
//! and the notification carries only `ref\t<row id>`, which every listener reads back through
//! the pool before handing the envelope on. Insert and notify are one statement, so the row is
//! committed before anyone hears of it. Publishers delete rows older than five minutes, at most
//! once a minute each, which keeps the table to a few minutes of large broadcasts. When the
//! listening connection drops, the adapter reports `Degraded`, refuses publishes, reconnects
//! with jittered exponential backoff and LISTENs again; notifications sent while it was away are
//! lost, as LISTEN/NOTIFY keeps nothing for absent listeners; the stream history keeps the cable
//! messages, and the process's sequencer reads them back after the reconnect.
//!
//! Cable messages also go into the stream history (`tasksync_stream_messages`). A change's
//! broadcast is written in the change's own transaction ([`PostgresPubSub::commit`]), so the
//! two commit together; [`publish`](PostgresPubSub::publish) does the same on a connection of its
//! own. Either way one transaction takes the stream's next offset (the upsert on `tasksync_streams` holds that row's lock until
//! commit, so offsets follow commit order, which is NOTIFY's delivery order), keeps the message,
//! drops what falls out of the count window, and notifies. A message too big to travel inline
//! is announced as `hist\t<offset>\t<stream>` and read back from the history row. Replays read
//! the same table; rows older than the time window are deleted at most once a minute.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, Client, Config, Connection, NoTls, Socket, tls::NoTlsStream};

use super::{
    Envelope, Health, HistoryWindow, Inbox, Position, PublishError, Replay, Topic,
    supervisor::{Ended, Feed, SHUTDOWN_GRACE, Supervisor, until_stopped},
};
use crate::store::{RoomChange, StoreError, redact};

/// The one channel every process listens on.
const CHANNEL: &str = "tasksync_pubsub";

/// How operators (and tests) find the listening connection in `pg_stat_activity`.
const LISTENER_APPLICATION_NAME: &str = "tasksync-pubsub-listener";

/// Used for the publishing pool unless the URL names the application itself.
const PUBLISHER_APPLICATION_NAME: &str = "tasksync-pubsub";

/// Largest encoded envelope sent inline; PostgreSQL rejects payloads of 8000 bytes or more, and
/// the margin leaves room should the wire format grow a field.
pub const INLINE_LIMIT: usize = 7900;

/// Marks a notification that names a stored payload. Inline payloads start with the wire
/// version (`v1\t`), so the two never collide.
const REFERENCE_PREFIX: &str = "ref\t";

const POOL_SIZE: usize = 4;

/// Applied when the URL sets no `connect_timeout`, so an unreachable server fails start-up (and
/// each reconnect attempt) promptly instead of hanging on the operating system's TCP timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bounds a whole publish, so a server that stops answering cannot hold a broadcast forever.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// The listener's connection is otherwise idle for long stretches; keepalives notice a peer
/// that vanished without closing the connection (a crashed host, a dropped route) in about 30 s.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

const TRIM_EVERY: Duration = Duration::from_secs(60);

const LISTEN: &str = "LISTEN tasksync_pubsub";
const NOTIFY: &str = "SELECT pg_notify($1::text, $2::text)";
const STORE_AND_NOTIFY: &str = "WITH stored AS (\
         INSERT INTO tasksync_pubsub_payloads (payload) VALUES ($3::text) RETURNING id) \
     SELECT pg_notify($1::text, $2::text || stored.id::text) FROM stored";
const FETCH: &str = "SELECT payload FROM tasksync_pubsub_payloads WHERE id = $1";

/// Marks a notification of a cable message too large to travel inline: it names the history
/// row (`hist\t<offset>\t<stream>`) listeners read it back from.
const HISTORY_PREFIX: &str = "hist\t";

/// Appends a cable message to its stream's history and returns its offset. The upsert takes the
/// stream's row lock until the transaction commits, so offsets are given in commit order, which
/// is also the order NOTIFY delivers in. Rows beyond the count window go in the same statement.
const APPEND: &str = "WITH next AS (\
         INSERT INTO tasksync_streams (stream, last_offset) VALUES ($1, 1) \
         ON CONFLICT (stream) DO UPDATE SET last_offset = tasksync_streams.last_offset + 1 \
         RETURNING last_offset), \
     kept AS (\
         INSERT INTO tasksync_stream_messages (stream, stream_offset, payload) \
         SELECT $1, last_offset, $2 FROM next RETURNING stream_offset), \
     trimmed AS (\
         DELETE FROM tasksync_stream_messages \
         WHERE stream = $1 AND stream_offset <= (SELECT last_offset FROM next) - $3) \
     SELECT stream_offset FROM kept";
const LAST_OFFSET: &str = "SELECT last_offset FROM tasksync_streams WHERE stream = $1";
const REPLAY: &str = "SELECT stream_offset, payload FROM tasksync_stream_messages \
     WHERE stream = $1 AND stream_offset > $2 AND created_at > now() - make_interval(secs => $3) \
     ORDER BY stream_offset LIMIT $4";
const FETCH_HISTORY: &str =
    "SELECT payload FROM tasksync_stream_messages WHERE stream = $1 AND stream_offset = $2";
const TRIM_HISTORY: &str =
    "DELETE FROM tasksync_stream_messages WHERE created_at < now() - make_interval(secs => $1)";
const EPOCH: &str = "SELECT epoch FROM tasksync_stream_epoch LIMIT 1";
const TRIM: &str =
    "DELETE FROM tasksync_pubsub_payloads WHERE created_at < now() - interval '5 minutes'";

/// What a cable message's notification says: the envelope itself when it fits, otherwise where
/// its history row is.
fn notification(envelope: &Envelope) -> String {
    let text = envelope.encode();
    if text.len() <= INLINE_LIMIT {
        text
    } else {
        format!("{HISTORY_PREFIX}{}\t{}", envelope.offset, envelope.stream)
    }
}

/// What a notification's payload carries.
#[derive(Debug, PartialEq, Eq)]
enum Notified<'a> {
    /// The encoded envelope itself.
    Inline(&'a str),
    /// The id of the `tasksync_pubsub_payloads` row holding it.
    Stored(i64),
    /// A cable message kept in the stream history: its offset and stream.
    History(u64, &'a str),
}

fn classify(payload: &str) -> Notified<'_> {
    if let Some(rest) = payload.strip_prefix(HISTORY_PREFIX)
        && let Some((offset, stream)) = rest.split_once('\t')
        && let Ok(offset) = offset.parse::<u64>()
        && offset > 0
        && !stream.is_empty()
    {
        return Notified::History(offset, stream);
    }
    payload
        .strip_prefix(REFERENCE_PREFIX)
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|id| id.parse().ok())
        .filter(|id: &i64| *id > 0)
        .map_or(Notified::Inline(payload), Notified::Stored)
}

/// An error and its causes on one line: tokio-postgres keeps the useful part (the server's
/// message, the I/O error) in the source chain.
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[derive(Clone)]
pub struct PostgresPubSub {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    listener: Supervisor,
    last_trim: Mutex<Option<Instant>>,
    last_history_trim: Mutex<Option<Instant>>,
    window: HistoryWindow,
    epoch: Arc<str>,
}

impl Inner {
    fn trim_due(&self) -> bool {
        Self::due(&self.last_trim)
    }

    fn history_trim_due(&self) -> bool {
        Self::due(&self.last_history_trim)
    }

    /// True at most once per `TRIM_EVERY` for the clock in `last`.
    fn due(last: &Mutex<Option<Instant>>) -> bool {
        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < TRIM_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
}

impl PostgresPubSub {
    pub async fn start(url: &str, window: HistoryWindow, inbox: Inbox) -> anyhow::Result<Self> {
        let mut config: Config = url
            .parse()
            .with_context(|| format!("invalid PostgreSQL URL {}", redact(url)))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }

        let mut listener_config = config.clone();
        listener_config
            .application_name(LISTENER_APPLICATION_NAME)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES);
        let listener = Listener::connect(&listener_config).await.with_context(|| {
            format!(
                "cannot listen for PostgreSQL notifications at {}",
                redact(url)
            )
        })?;

        if config.get_application_name().is_none() {
            config.application_name(PUBLISHER_APPLICATION_NAME);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(PUBLISH_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .context("cannot build the PostgreSQL pub/sub pool")?;
        // One connection now, so bad credentials or limits fail start-up rather than the first
        // broadcast.
        drop(pool.get().await.with_context(|| {
            format!(
                "cannot open a PostgreSQL pub/sub connection at {}",
                redact(url)
            )
        })?);

        let epoch: String = pool
            .get()
            .await
            .map_err(|err| anyhow::anyhow!(describe(&err)))?
            .query_one(EPOCH, &[])
            .await
            .map_err(|err| anyhow::anyhow!(describe(&err)))
            .and_then(|row| Ok(row.try_get(0)?))
            .context("cannot read the stream history epoch (are the migrations applied?)")?;

        let notifications = Notifications {
            config: listener_config,
            pool: pool.clone(),
            inbox,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                listener: Supervisor::spawn(notifications, listener),
                last_trim: Mutex::new(None),
                last_history_trim: Mutex::new(None),
                window,
                epoch: epoch.into(),
            }),
        })
    }

    pub async fn publish(&self, envelope: Envelope) -> Result<(), PublishError> {
        if self.inner.pool.is_closed() {
            return Err(PublishError::Closed);
        }
        // A publish while our own listener is away would reach every process but this one.
        if let Health::Degraded(reason) = self.health() {
            return Err(PublishError::Unavailable(reason));
        }
        let publish = async {
            match envelope.topic {
                Topic::Cable => self.append(envelope).await,
                Topic::Presence => self.send(envelope.encode()).await,
            }
        };
        tokio::time::timeout(PUBLISH_TIMEOUT, publish)
            .await
            .unwrap_or_else(|_| {
                Err(PublishError::Unavailable(
                    "PostgreSQL did not answer the publish in time".into(),
                ))
            })
    }

    async fn send(&self, text: String) -> Result<(), PublishError> {
        let client = self.inner.pool.get().await.map_err(|err| match err {
            PoolError::Closed => PublishError::Closed,
            err => PublishError::Unavailable(describe(&err)),
        })?;
        let unavailable = |err: tokio_postgres::Error| PublishError::Unavailable(describe(&err));
        if text.len() <= INLINE_LIMIT {
            let statement = client.prepare_cached(NOTIFY).await.map_err(unavailable)?;
            client
                .execute(&statement, &[&CHANNEL, &text])
                .await
                .map_err(unavailable)?;
            return Ok(());
        }
        let statement = client
            .prepare_cached(STORE_AND_NOTIFY)
            .await
            .map_err(unavailable)?;
        client
            .execute(&statement, &[&CHANNEL, &REFERENCE_PREFIX, &text])
            .await
            .map_err(unavailable)?;
        // Only large publishes add rows, so only they need to clear old ones out.
        if self.inner.trim_due()
            && let Err(err) = client.execute(TRIM, &[]).await
        {
            tracing::warn!(error = %describe(&err), "cannot trim old pub/sub payloads");
        }
        Ok(())
    }

    /// Keeps a cable message in its stream's history and notifies every listener, in one
    /// transaction: the notification goes out at commit, after the row is there to read.
    async fn append(&self, mut envelope: Envelope) -> Result<(), PublishError> {
        let unavailable = |err: tokio_postgres::Error| PublishError::Unavailable(describe(&err));
        let mut client = self.inner.pool.get().await.map_err(|err| match err {
            PoolError::Closed => PublishError::Closed,
            err => PublishError::Unavailable(describe(&err)),
        })?;
        let limit = i64::try_from(self.inner.window.limit).unwrap_or(i64::MAX);
        let tx = client.transaction().await.map_err(unavailable)?;
        let append = tx.prepare_cached(APPEND).await.map_err(unavailable)?;
        let row = tx
            .query_one(&append, &[&&*envelope.stream, &&*envelope.payload, &limit])
            .await
            .map_err(unavailable)?;
        let offset: i64 = row.try_get(0).map_err(unavailable)?;
        envelope.offset = u64::try_from(offset).unwrap_or_default();
        let notify = tx.prepare_cached(NOTIFY).await.map_err(unavailable)?;
        tx.execute(&notify, &[&CHANNEL, &notification(&envelope)])
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        drop(client);
        self.trim_history_if_due().await;
        Ok(())
    }

    /// Commits `change` with the cable message that announces it, in the change's own
    /// transaction: the history row and the NOTIFY commit with the change or not at all, so a
    /// change is never kept without its broadcast, even if this process dies the moment after.
    /// The same statements as `append`, on the store's connection.
    pub async fn commit(
        &self,
        mut change: RoomChange,
        mut envelope: Envelope,
    ) -> Result<(), StoreError> {
        let limit = i64::try_from(self.inner.window.limit).unwrap_or(i64::MAX);
        let conn = change.postgres().ok_or_else(|| {
            StoreError::Database("the PostgreSQL adapter needs the PostgreSQL store".into())
        })?;
        let offset: i64 = sqlx::query_scalar(APPEND)
            .bind(&*envelope.stream)
            .bind(&*envelope.payload)
            .bind(limit)
            .fetch_one(&mut *conn)
            .await?;
        envelope.offset = u64::try_from(offset).unwrap_or_default();
        sqlx::query(NOTIFY)
            .bind(CHANNEL)
            .bind(notification(&envelope))
            .execute(&mut *conn)
            .await?;
        change.commit().await?;
        self.trim_history_if_due().await;
        Ok(())
    }

    /// Deletes history older than the window, at most once per `TRIM_EVERY` per process.
    async fn trim_history_if_due(&self) {
        if !self.inner.history_trim_due() {
            return;
        }
        let ttl = self.inner.window.ttl.as_secs_f64();
        let trimmed = match self.inner.pool.get().await {
            Ok(client) => client
                .execute(TRIM_HISTORY, &[&ttl])
                .await
                .map_err(|e| describe(&e)),
            Err(err) => Err(describe(&err)),
        };
        if let Err(error) = trimmed {
            tracing::warn!(%error, "cannot trim old stream history");
        }
    }

    /// Where `stream`'s history stands; `None` if the database cannot say right now (the page
    /// then renders without a position and is served live only).
    pub async fn position(&self, stream: &str) -> Option<Position> {
        match self.last_offset(stream).await {
            Ok(offset) => Some(Position {
                epoch: self.inner.epoch.clone(),
                offset,
            }),
            Err(err) => {
                tracing::warn!(stream, error = %err, "cannot read a stream position");
                None
            }
        }
    }

    async fn last_offset(&self, stream: &str) -> Result<u64, String> {
        let client = self.inner.pool.get().await.map_err(|err| describe(&err))?;
        let row = client
            .query_opt(LAST_OFFSET, &[&stream])
            .await
            .map_err(|err| describe(&err))?;
        let offset: i64 = match row {
            Some(row) => row.try_get(0).map_err(|err| describe(&err))?,
            None => 0,
        };
        Ok(u64::try_from(offset).unwrap_or_default())
    }

    /// What `stream` published after `after`. When the database cannot say, the answer is
    /// "incomplete", so the client refreshes rather than silently missing messages.
    pub async fn replay(&self, stream: &str, after: u64) -> Option<Replay> {
        let (messages, complete) = match self.try_replay(stream, after).await {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(stream, error = %err, "cannot replay stream history");
                (Vec::new(), false)
            }
        };
        Some(Replay {
            epoch: self.inner.epoch.clone(),
            messages,
            complete,
        })
    }

    async fn try_replay(
        &self,
        stream: &str,
        after: u64,
    ) -> Result<(Vec<(u64, Arc<str>)>, bool), String> {
        let last = self.last_offset(stream).await?;
        if after >= last {
            // Nothing missed, or a position from the future (a reset history): only the first
            // is complete.
            return Ok((Vec::new(), after == last));
        }
        let client = self.inner.pool.get().await.map_err(|err| describe(&err))?;
        let after_i64 = i64::try_from(after).map_err(|_| "offset out of range".to_owned())?;
        let ttl = self.inner.window.ttl.as_secs_f64();
        let limit = i64::try_from(self.inner.window.limit).unwrap_or(i64::MAX);
        let rows = client
            .query(REPLAY, &[&stream, &after_i64, &ttl, &limit])
            .await
            .map_err(|err| describe(&err))?;
        let mut messages = Vec::with_capacity(rows.len());
        for row in rows {
            let offset: i64 = row.try_get(0).map_err(|err| describe(&err))?;
            let payload: String = row.try_get(1).map_err(|err| describe(&err))?;
            messages.push((u64::try_from(offset).unwrap_or_default(), payload.into()));
        }
        // Kept offsets are contiguous up to the last, so the replay is complete exactly when it
        // starts right after what the client has and reaches the last.
        let complete = messages.first().is_some_and(|(o, _)| *o == after + 1)
            && messages.last().is_some_and(|(o, _)| *o == last);
        Ok((messages, complete))
    }

    pub fn health(&self) -> Health {
        self.inner.listener.health()
    }

    pub fn reconnects(&self) -> u64 {
        self.inner.listener.reconnects()
    }

    pub async fn shutdown(&self) {
        self.inner.listener.shutdown().await;
        self.inner.pool.close();
    }
}

/// The notifications on `CHANNEL`, heard on a listening connection.
struct Notifications {
    config: Config,
    pool: Pool,
    inbox: Inbox,
}

impl Feed for Notifications {
    type Connection = Listener;
    const BACKEND: &'static str = "PostgreSQL";
    const ROLE: &'static str = "listener";

    async fn connect(&self) -> anyhow::Result<Listener> {
        Listener::connect(&self.config).await
    }

    async fn serve(&self, listener: Listener, stop: &mut watch::Receiver<bool>) -> Ended {
        listener.run(&self.pool, &self.inbox, stop).await
    }

    fn lost(&self, reason: &str) {
        tracing::warn!(%reason, "PostgreSQL pub/sub listener lost its connection; reconnecting");
    }

    fn cannot_reconnect(&self, attempt: u32, err: &anyhow::Error) {
        tracing::warn!(error = %format!("{err:#}"), attempt, "PostgreSQL pub/sub listener cannot reconnect yet");
    }

    fn reconnected(&self) {
        tracing::info!("PostgreSQL pub/sub listener reconnected");
    }
}

/// A connection that has LISTENed, with the notifications that arrived while it did.
struct Listener {
    client: Client,
    connection: Connection<Socket, NoTlsStream>,
    early: Vec<String>,
}

impl Listener {
    async fn connect(config: &Config) -> anyhow::Result<Self> {
        // connect_timeout bounds each TCP connect; this bounds authentication and LISTEN too.
        let deadline = CONNECT_TIMEOUT.saturating_mul(2);
        tokio::time::timeout(deadline, Self::connect_and_listen(config))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {deadline:?}")))
    }

    async fn connect_and_listen(config: &Config) -> anyhow::Result<Self> {
        let (client, mut connection) = config
            .connect(NoTls)
            .await
            .map_err(|err| anyhow::anyhow!(describe(&err)))?;
        let mut early = Vec::new();
        {
            // Nobody else drives this connection, so it must be polled for LISTEN to complete.
            let listen = client.batch_execute(LISTEN);
            tokio::pin!(listen);
            loop {
                tokio::select! {
                    done = &mut listen => {
                        done.map_err(|err| anyhow::anyhow!(describe(&err)))?;
                        break;
                    }
                    message = next_message(&mut connection) => match message {
                        // The server can send a notification right behind LISTEN's reply, in
                        // the same read, before the reply reaches `listen`.
                        Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CHANNEL => {
                            early.push(n.payload().to_owned());
                        }
                        Some(Ok(_)) => {}
                        Some(Err(err)) => anyhow::bail!(describe(&err)),
                        None => anyhow::bail!("the server closed the connection"),
                    },
                }
            }
        }
        Ok(Self {
            client,
            connection,
            early,
        })
    }

    /// Hands notifications to `inbox` until the connection fails or a stop is asked for.
    async fn run(mut self, pool: &Pool, inbox: &Inbox, stop: &mut watch::Receiver<bool>) -> Ended {
        for payload in std::mem::take(&mut self.early) {
            match until_stopped(stop, deliver(&payload, pool, inbox)).await {
                None => return self.close("shut down").await,
                Some(Err(InboxClosed)) => return self.close("stopped: the inbox is closed").await,
                Some(Ok(())) => {}
            }
        }
        loop {
            let Some(message) = until_stopped(stop, next_message(&mut self.connection)).await
            else {
                return self.close("shut down").await;
            };
            match message {
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CHANNEL => {
                    match until_stopped(stop, deliver(n.payload(), pool, inbox)).await {
                        None => return self.close("shut down").await,
                        Some(Err(InboxClosed)) => {
                            return self.close("stopped: the inbox is closed").await;
                        }
                        Some(Ok(())) => {}
                    }
                }
                Some(Ok(AsyncMessage::Notice(notice))) => {
                    tracing::debug!(%notice, "PostgreSQL notice on the pub/sub listener");
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Ended::Lost(describe(&err)),
                None => return Ended::Lost("the server closed the connection".into()),
            }
        }
    }

    /// Ends the session with a Terminate message rather than a dropped socket, so the server
    /// does not log an unexpected EOF.
    async fn close(self, why: &'static str) -> Ended {
        let Self {
            client,
            mut connection,
            ..
        } = self;
        // Without a client the connection says goodbye and finishes.
        drop(client);
        let drained = async { while let Some(Ok(_)) = next_message(&mut connection).await {} };
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, drained).await;
        Ended::Stopped(why)
    }
}

/// The next message from a connection we drive ourselves; cancel-safe, since `poll_message`
/// only hands over a message when it returns it.
async fn next_message(
    connection: &mut Connection<Socket, NoTlsStream>,
) -> Option<Result<AsyncMessage, tokio_postgres::Error>> {
    std::future::poll_fn(|cx| connection.poll_message(cx)).await
}

struct InboxClosed;

/// Decodes one notification (reading a stored payload back if it is a reference) and hands it
/// to the inbox. Anything that cannot become an envelope is logged and dropped: one bad message
/// must not stop the others.
async fn deliver(payload: &str, pool: &Pool, inbox: &Inbox) -> Result<(), InboxClosed> {
    let envelope = match classify(payload) {
        Notified::Inline(text) => Envelope::decode(text),
        Notified::History(offset, stream) => match fetch_history(pool, stream, offset).await {
            Ok(Some(text)) => Some(Envelope {
                offset,
                ..Envelope::new(Topic::Cable, stream, text)
            }),
            Ok(None) => {
                tracing::warn!(
                    stream,
                    offset,
                    "a stream message is gone from history; dropping it"
                );
                return Ok(());
            }
            Err(err) => {
                tracing::warn!(stream, offset, error = %err, "cannot read a stream message; dropping it");
                return Ok(());
            }
        },
        Notified::Stored(id) => match fetch_stored(pool, id).await {
            Ok(Some(text)) => Envelope::decode(&text),
            Ok(None) => {
                tracing::warn!(id, "stored pub/sub payload is gone; dropping it");
                return Ok(());
            }
            Err(err) => {
                tracing::warn!(id, error = %err, "cannot read a stored pub/sub payload; dropping it");
                return Ok(());
            }
        },
    };
    let Some(envelope) = envelope else {
        let start: String = payload.chars().take(40).collect();
        tracing::warn!(payload = %start, "dropping a notification that is not an envelope");
        return Ok(());
    };
    inbox.send(envelope).await.map_err(|_| InboxClosed)
}

async fn fetch_history(pool: &Pool, stream: &str, offset: u64) -> Result<Option<String>, String> {
    let client = pool.get().await.map_err(|err| describe(&err))?;
    let offset = i64::try_from(offset).map_err(|_| "offset out of range".to_owned())?;
    let row = client
        .query_opt(FETCH_HISTORY, &[&stream, &offset])
        .await
        .map_err(|err| describe(&err))?;
    row.map(|row| row.try_get(0))
        .transpose()
        .map_err(|err| describe(&err))
}

async fn fetch_stored(pool: &Pool, id: i64) -> Result<Option<String>, String> {
    let client = pool.get().await.map_err(|err| describe(&err))?;
    let statement = client
        .prepare_cached(FETCH)
        .await
        .map_err(|err| describe(&err))?;
    let row = client
        .query_opt(&statement, &[&id])
        .await
        .map_err(|err| describe(&err))?;
    row.map(|row| row.try_get(0))
        .transpose()
        .map_err(|err| describe(&err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_positive_row_id() {
        assert_eq!(classify("ref\t42"), Notified::Stored(42));
        assert_eq!(
            classify("hist\t7\trooms:3"),
            Notified::History(7, "rooms:3")
        );
        for odd in [
            "hist\t0\trooms:3",
            "hist\tx\trooms:3",
            "hist\t7\t",
            "hist\t7",
        ] {
            assert_eq!(classify(odd), Notified::Inline(odd), "{odd:?}");
        }
        assert_eq!(
            classify(&format!("{REFERENCE_PREFIX}{}", i64::MAX)),
            Notified::Stored(i64::MAX)
        );
        for text in [
            "ref\t",
            "ref\t0",
            "ref\t-4",
            "ref\t+4",
            "ref\t4 ",
            "ref\t4\t5",
            "ref 4",
            "ref\t99999999999999999999",
        ] {
            assert_eq!(classify(text), Notified::Inline(text), "{text:?}");
        }
    }

    #[test]
    fn inline_envelopes_are_never_mistaken_for_references() {
        let envelope = Envelope::new(super::super::Topic::Cable, "ref", "ref\t1");
        let text = envelope.encode();
        assert_eq!(classify(&text), Notified::Inline(text.as_str()));
        assert_eq!(Envelope::decode("ref\t1"), None);
    }

    #[test]
    fn error_descriptions_include_their_causes() {
        let io = std::io::Error::other("connection refused");
        let outer = anyhow::Error::new(io).context("cannot connect");
        let described = describe(outer.as_ref());
        assert_eq!(described, "cannot connect: connection refused");
    }
}
