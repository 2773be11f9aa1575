//! Redis pub/sub adapter. Envelopes are PUBLISHed, as `Envelope::encode` text, on the configured
//! channel through a `ConnectionManager`, and every process SUBSCRIBEs to that channel on a
//! connection of its own. The subscriber speaks RESP3, whatever the URL asks for: a RESP2
//! connection in subscribed mode accepts nothing but (un)subscribe and PING, so it could not be
//! named with CLIENT SETNAME, and a named connection is what lets operators (and the tests) find
//! it in CLIENT LIST; RESP3 needs Redis 6 or newer. Redis payloads have no practical size limit,
//! so every envelope travels inline. When the subscriber's connection drops (or stops answering
//! the periodic PING), the adapter reports `Degraded`, refuses publishes, reconnects with
//! jittered exponential backoff and subscribes again; messages published while it was away do
//! not reach it, as Redis pub/sub keeps nothing for absent subscribers.
//!
//! History lives in Redis, next to the channel, so every process sees the same one and a server
//! restart keeps it. A cable envelope is published by one Lua script, which Redis runs without
//! interleaving anything else: it INCRs the stream's counter (`<channel>:offset:<stream>`), appends
//! the payload and the server's time to the stream's Redis stream (`<channel>:history:<stream>`)
//! under the entry ID `<offset>-1`, trims that to about `window.limit` entries and PUBLISHes the
//! envelope carrying its offset. So offsets are consecutive whichever process publishes, and
//! every subscriber receives a stream's messages in offset order. A replay reads the counter, the
//! newest entries and the server's time in one MULTI, and applies the window exactly (the trim is
//! approximate, which is cheaper). The epoch (`<channel>:epoch`) is a random id that the first
//! process to find it missing creates; it is read with every position and replay, so if Redis
//! loses its data the epoch goes with it, a new one is made, and pages from before refresh.
//! Presence envelopes keep offset 0 and no history. Keys are named after the channel, so
//! deployments (and tests) sharing one Redis keep apart; an idle stream's history expires after
//! the window's ttl, its counter a month later (see `COUNTER_GRACE`), and the epoch a month
//! after the channel's last cable message.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use ::redis::{
    AsyncConnectionConfig, Client, ErrorKind, FromRedisValue, IntoConnectionInfo as _, Msg,
    ProtocolVersion, PushInfo, PushKind, RedisError, RedisResult, ServerErrorKind,
    aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    cmd, pipe,
};
use anyhow::Context as _;
use tokio::sync::{mpsc, watch};

use super::{
    Envelope, Health, HistoryWindow, Inbox, Position, PublishError, Replay, Topic,
    supervisor::{Ended, Feed, Supervisor, until_stopped},
};
use crate::store::redact;

/// Bounds each connection attempt, so an unreachable server fails start-up promptly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bounds each command, publishes included.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A subscriber only ever reads, so a peer that vanished without closing the connection would go
/// unnoticed; a PING this often notices it.
const PING_EVERY: Duration = Duration::from_secs(15);

/// How many times the publishing connection retries a reconnect before a publish reports the
/// server unavailable; kept low so start-up fails fast and callers hear of trouble quickly.
const PUBLISH_RETRIES: usize = 2;

/// How long a stream's counter is kept after its last message, beyond the history's own ttl.
/// While it lives, offsets only grow, so no page's offset comes round again. Once it has expired
/// the stream counts from 1 again under the same epoch: a page from before holds an offset beyond
/// the new counter, so its replay is not complete and it refreshes. Only a page left open through
/// the whole idle period that comes back once the new counter has caught up with its offset would
/// be misled (replayed from the wrong place; a socket connected throughout would even skip the
/// new offsets it believes it has sent), hence a month rather than a day: a counter is a few
/// dozen bytes.
const COUNTER_GRACE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Publishes a cable envelope under its stream's next offset, atomically. KEYS: the counter, the
/// history and the epoch. ARGV: the channel, the envelope's wire text before and after its offset (see
/// `wire_around_offset`; the part after is a tab and the payload), the entries to keep, and the
/// history's and the counter's (and epoch's) lifetimes in milliseconds. Numbers go through `%d` because Lua's
/// own conversion switches to exponents past 14 digits; the time is the server's, the one clock
/// every process shares.
const PUBLISH_SCRIPT: &str = r"
local offset = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
-- The epoch outlives every counter, so it only goes once nothing counted under it is left.
redis.call('PEXPIRE', KEYS[3], ARGV[6])
if offset == 1 then
  -- A new counter (a new stream, or one whose counter expired or was evicted): what history is
  -- left was counted by the old one, and its IDs would be ahead of ours.
  redis.call('DEL', KEYS[2])
end
local now = redis.call('TIME')
local micros = now[1] .. string.format('%06d', tonumber(now[2]))
local n = string.format('%d', offset)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], n .. '-1',
  't', micros, 'p', string.sub(ARGV[3], 2))
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. n .. ARGV[3])
return offset
";

/// Sets the epoch unless there is one, and returns the one there is, in one step, so processes
/// starting together agree. KEYS: the epoch. ARGV: a fresh random epoch, and how long it lasts
/// in milliseconds if no cable message is published (a channel given up leaves nothing behind).
const EPOCH_SCRIPT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
return redis.call('GET', KEYS[1])
";

fn epoch_key(channel: &str) -> String {
    format!("{channel}:epoch")
}

fn counter_key(channel: &str, stream: &str) -> String {
    format!("{channel}:offset:{stream}")
}

fn history_key(channel: &str, stream: &str) -> String {
    format!("{channel}:history:{stream}")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `envelope`'s wire text, cut where its offset goes, which only the publish script knows. The
/// payload comes last, after the offset and a tab, so the cut is found from the end, whatever
/// the payload holds.
fn wire_around_offset(envelope: &Envelope) -> (String, String) {
    let mut before = Envelope {
        offset: 0,
        ..envelope.clone()
    }
    .encode();
    let after = before.split_off(before.len() - envelope.payload.len() - 1);
    debug_assert!(before.ends_with("\t0"), "the offset precedes the payload");
    before.pop();
    (before, after)
}

/// An entry of a stream's history as XRANGE returns it: its ID and its fields.
type Entry = (String, HashMap<String, String>);

/// One entry of a stream's history.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Kept {
    offset: u64,
    /// When it was published, in microseconds of the Redis server's clock.
    at: u64,
    payload: Arc<str>,
}

impl Kept {
    /// The entry XRANGE returned as `(id, fields)`; `None` if it is not one the script wrote,
    /// which leaves a gap in the replay, and so a refresh rather than a silent miss.
    fn from_entry((id, mut fields): Entry) -> Option<Self> {
        let (offset, _) = id.split_once('-')?;
        Some(Self {
            offset: offset.parse().ok()?,
            at: fields.get("t")?.parse().ok()?,
            payload: fields.remove("p")?.into(),
        })
    }
}

/// What a client at `after` is replayed, given the stream's `last` offset, the server's clock
/// `now` and the newest entries at or after `after + 1`, newest first. The window is applied
/// here, exactly. Complete only if every offset from `after + 1` to `last` is there: an offset
/// beyond `last`, a message that aged out or was trimmed, or one a failed publish never wrote
/// all send the client to refresh instead.
fn replay_of(
    epoch: Arc<str>,
    after: u64,
    last: u64,
    now: u64,
    window: HistoryWindow,
    newest_first: Vec<Kept>,
) -> Replay {
    let ttl = u64::try_from(window.ttl.as_micros()).unwrap_or(u64::MAX);
    let mut messages: Vec<(u64, Arc<str>)> = newest_first
        .into_iter()
        .take(window.limit)
        .take_while(|kept| now.saturating_sub(kept.at) <= ttl)
        // Entries beyond the counter are left over from a counter that is gone.
        .filter(|kept| kept.offset > after && kept.offset <= last)
        .map(|kept| (kept.offset, kept.payload))
        .collect();
    messages.reverse();
    let complete = after == last
        || (after < last
            && messages
                .iter()
                .map(|(offset, _)| *offset)
                .eq(after + 1..=last));
    if after == last {
        messages.clear();
    }
    Replay {
        epoch,
        messages,
        complete,
    }
}

/// A Lua script run by EVALSHA, and sent whole by EVAL (which caches it again) when the server
/// has lost it: a restart, a failover, a SCRIPT FLUSH. `redis::Script` does the same, but needs
/// the crate's `script` feature.
struct Script {
    source: &'static str,
    sha: String,
}

impl Script {
    async fn load(connection: &mut ConnectionManager, source: &'static str) -> RedisResult<Self> {
        let sha = cmd("SCRIPT")
            .arg("LOAD")
            .arg(source)
            .query_async(connection)
            .await?;
        Ok(Self { source, sha })
    }

    async fn run<T: FromRedisValue>(
        &self,
        connection: &mut ConnectionManager,
        keys: &[&str],
        args: &[&str],
    ) -> RedisResult<T> {
        let call = |command: &str, script: &str| {
            let mut call = cmd(command);
            call.arg(script).arg(keys.len()).arg(keys).arg(args);
            call
        };
        match call("EVALSHA", &self.sha).query_async(connection).await {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                call("EVAL", self.source).query_async(connection).await
            }
            result => result,
        }
    }
}

/// How long a stream's counter, and the channel's epoch, outlive the last message.
fn counter_lifetime(window: HistoryWindow) -> u64 {
    millis(window.ttl.saturating_add(COUNTER_GRACE))
}

/// The channel's epoch, made now if there is none.
async fn establish_epoch(
    connection: &mut ConnectionManager,
    channel: &str,
    window: HistoryWindow,
) -> RedisResult<Arc<str>> {
    let fresh = format!("{:016x}", rand::random::<u64>());
    let epoch: String = cmd("EVAL")
        .arg(EPOCH_SCRIPT)
        .arg(1)
        .arg(epoch_key(channel))
        .arg(fresh)
        .arg(counter_lifetime(window))
        .query_async(connection)
        .await?;
    Ok(epoch.into())
}

/// The subscriber's CLIENT SETNAME: the channel, with anything Redis refuses in a name (spaces
/// and anything outside printable ASCII) replaced by `_`.
fn subscriber_name(channel: &str) -> String {
    let channel: String = channel
        .chars()
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .collect();
    format!("tasksync-pubsub:{channel}")
}

/// The envelope a pub/sub message carries, if it is one of ours.
fn envelope_from(message: &Msg) -> Option<Envelope> {
    std::str::from_utf8(message.get_payload_bytes())
        .ok()
        .and_then(Envelope::decode)
}

#[derive(Clone)]
pub struct RedisPubSub {
    inner: Arc<Inner>,
}

struct Inner {
    /// Taken on shutdown, which closes the connection once in-flight publishes finish.
    /// Publishes, positions and replays share it.
    publisher: Mutex<Option<ConnectionManager>>,
    channel: Arc<str>,
    subscriber: Supervisor,
    window: HistoryWindow,
    publish_script: Script,
    /// The epoch last read, for the replay that cannot read it (it is incomplete anyway).
    epoch: Mutex<Arc<str>>,
}

impl RedisPubSub {
    pub async fn start(
        url: &str,
        channel: &str,
        window: HistoryWindow,
        inbox: Inbox,
    ) -> anyhow::Result<Self> {
        let client =
            Client::open(url).with_context(|| format!("invalid Redis URL {}", redact(url)))?;
        let subscriber_client =
            resp3_client(url).with_context(|| format!("invalid Redis URL {}", redact(url)))?;
        let channel: Arc<str> = channel.into();

        let subscriber = Subscriber::connect(&subscriber_client, &channel)
            .await
            .with_context(|| {
                format!(
                    "cannot subscribe to Redis channel {channel:?} at {}",
                    redact(url)
                )
            })?;
        let mut publisher = ConnectionManager::new_with_config(
            client,
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_number_of_retries(PUBLISH_RETRIES)
                .set_max_delay(Duration::from_secs(1)),
        )
        .await
        .with_context(|| format!("cannot connect to Redis at {}", redact(url)))?;
        let publish_script = Script::load(&mut publisher, PUBLISH_SCRIPT)
            .await
            .with_context(|| {
                format!(
                    "cannot load the publish script into Redis at {}",
                    redact(url)
                )
            })?;
        let epoch = establish_epoch(&mut publisher, &channel, window)
            .await
            .with_context(|| {
                format!(
                    "cannot read the history epoch from Redis at {}",
                    redact(url)
                )
            })?;

        let messages = Messages {
            client: subscriber_client,
            channel: channel.clone(),
            inbox,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                publisher: Mutex::new(Some(publisher)),
                channel,
                subscriber: Supervisor::spawn(messages, subscriber),
                window,
                publish_script,
                epoch: Mutex::new(epoch),
            }),
        })
    }

    fn publisher(&self) -> Option<ConnectionManager> {
        self.inner
            .publisher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub async fn publish(&self, envelope: Envelope) -> Result<(), PublishError> {
        let Some(mut publisher) = self.publisher() else {
            return Err(PublishError::Closed);
        };
        // A publish while our own subscriber is away would reach every process but this one.
        if let Health::Degraded(reason) = self.health() {
            return Err(PublishError::Unavailable(reason));
        }
        let channel = &*self.inner.channel;
        let published = match envelope.topic {
            Topic::Presence => {
                cmd("PUBLISH")
                    .arg(channel)
                    .arg(envelope.encode())
                    .query_async::<i64>(&mut publisher)
                    .await
            }
            Topic::Cable => {
                let (before, after) = wire_around_offset(&envelope);
                let window = self.inner.window;
                let limit = window.limit.max(1).to_string();
                // PEXPIRE 0 would delete the history as soon as it is written.
                let history_ms = millis(window.ttl).max(1).to_string();
                let counter_ms = counter_lifetime(window).to_string();
                self.inner
                    .publish_script
                    .run::<i64>(
                        &mut publisher,
                        &[
                            &counter_key(channel, &envelope.stream),
                            &history_key(channel, &envelope.stream),
                            &epoch_key(channel),
                        ],
                        &[channel, &before, &after, &limit, &history_ms, &counter_ms],
                    )
                    .await
            }
        };
        published
            .map(drop)
            .map_err(|err| PublishError::Unavailable(err.to_string()))
    }

    /// Where `stream`'s history stands, or `None` if Redis cannot say (the page then carries no
    /// position, and gets no replay).
    pub async fn position(&self, stream: &str) -> Option<Position> {
        let mut publisher = self.publisher()?;
        let channel = &*self.inner.channel;
        let read = async {
            let (epoch, offset): (Option<String>, Option<u64>) = cmd("MGET")
                .arg(epoch_key(channel))
                .arg(counter_key(channel, stream))
                .query_async(&mut publisher)
                .await?;
            let epoch = self.epoch_or_new(&mut publisher, epoch).await?;
            RedisResult::Ok(Position {
                epoch,
                offset: offset.unwrap_or(0),
            })
        };
        match read.await {
            Ok(position) => Some(position),
            Err(err) => {
                tracing::warn!(error = %err, %channel, stream, "cannot read a stream's position from Redis");
                None
            }
        }
    }

    /// What `stream` published after `after`. When Redis cannot say, a replay that is not
    /// complete, so the client refreshes rather than silently missing messages.
    pub async fn replay(&self, stream: &str, after: u64) -> Option<Replay> {
        let channel = &*self.inner.channel;
        let read = async {
            let Some(mut publisher) = self.publisher() else {
                return Err(RedisError::from((
                    ErrorKind::Client,
                    "the adapter is shut down",
                )));
            };
            let window = self.inner.window;
            let (time, epoch, last, entries): (Vec<u64>, Option<String>, Option<u64>, Vec<Entry>) =
                pipe()
                    .atomic()
                    .cmd("TIME")
                    .cmd("GET")
                    .arg(epoch_key(channel))
                    .cmd("GET")
                    .arg(counter_key(channel, stream))
                    .cmd("XREVRANGE")
                    .arg(history_key(channel, stream))
                    .arg("+")
                    .arg(after.saturating_add(1))
                    .arg("COUNT")
                    .arg(window.limit.max(1))
                    .query_async(&mut publisher)
                    .await?;
            let epoch = self.epoch_or_new(&mut publisher, epoch).await?;
            let now = match time[..] {
                [seconds, micros] => seconds.saturating_mul(1_000_000).saturating_add(micros),
                _ => return Err(RedisError::from((ErrorKind::Parse, "TIME"))),
            };
            let kept = entries.into_iter().filter_map(Kept::from_entry).collect();
            Ok(replay_of(
                epoch,
                after,
                last.unwrap_or(0),
                now,
                window,
                kept,
            ))
        };
        Some(match read.await {
            Ok(replay) => replay,
            Err(err) => {
                tracing::warn!(error = %err, %channel, stream, "cannot read a stream's history from Redis; the client will refresh");
                Replay {
                    epoch: self
                        .inner
                        .epoch
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone(),
                    messages: Vec::new(),
                    complete: false,
                }
            }
        })
    }

    /// `read`, the epoch as Redis has it, or a new one if Redis has none: it lost its data (a
    /// restart without persistence, a flush), so offsets from before mean nothing.
    async fn epoch_or_new(
        &self,
        publisher: &mut ConnectionManager,
        read: Option<String>,
    ) -> RedisResult<Arc<str>> {
        let epoch: Arc<str> = match read {
            Some(epoch) => epoch.into(),
            None => establish_epoch(publisher, &self.inner.channel, self.inner.window).await?,
        };
        *self
            .inner
            .epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = epoch.clone();
        Ok(epoch)
    }

    pub fn health(&self) -> Health {
        self.inner.subscriber.health()
    }

    pub fn reconnects(&self) -> u64 {
        self.inner.subscriber.reconnects()
    }

    pub async fn shutdown(&self) {
        self.inner.subscriber.shutdown().await;
        drop(
            self.inner
                .publisher
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }
}

/// A client for `url` that negotiates RESP3, for the subscriber.
fn resp3_client(url: &str) -> Result<Client, RedisError> {
    let info = url.into_connection_info()?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Client::open(info.set_redis_settings(settings))
}

/// The messages on the channel, received on a subscribed connection.
struct Messages {
    client: Client,
    channel: Arc<str>,
    inbox: Inbox,
}

impl Feed for Messages {
    type Connection = Subscriber;
    const BACKEND: &'static str = "Redis";
    const ROLE: &'static str = "subscriber";

    async fn connect(&self) -> anyhow::Result<Subscriber> {
        Subscriber::connect(&self.client, &self.channel).await
    }

    async fn serve(&self, mut subscriber: Subscriber, stop: &mut watch::Receiver<bool>) -> Ended {
        subscriber.run(&self.channel, &self.inbox, stop).await
    }

    fn lost(&self, reason: &str) {
        let channel = &self.channel;
        tracing::warn!(%reason, %channel, "Redis pub/sub subscriber lost its connection; reconnecting");
    }

    fn cannot_reconnect(&self, attempt: u32, err: &anyhow::Error) {
        let channel = &self.channel;
        tracing::warn!(error = %format!("{err:#}"), attempt, %channel, "Redis pub/sub subscriber cannot reconnect yet");
    }

    fn reconnected(&self) {
        let channel = &self.channel;
        tracing::info!(%channel, "Redis pub/sub subscriber reconnected");
    }
}

/// A named RESP3 connection subscribed to the channel, and the pushes it receives.
struct Subscriber {
    connection: MultiplexedConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

impl Subscriber {
    async fn connect(client: &Client, channel: &str) -> anyhow::Result<Self> {
        // The push channel must not block the connection's reader, hence unbounded; the inbox
        // behind it is what bounds the work.
        let (push_tx, pushes) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_push_sender(push_tx)
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // The name only helps people find the connection; a server that refuses CLIENT
        // commands (some hosted ones do) still gets a working subscriber.
        if let Err(err) = cmd("CLIENT")
            .arg("SETNAME")
            .arg(subscriber_name(channel))
            .exec_async(&mut connection)
            .await
        {
            tracing::warn!(error = %err, %channel, "cannot name the Redis pub/sub subscriber");
        }
        connection.subscribe(channel).await.context("SUBSCRIBE")?;
        Ok(Self { connection, pushes })
    }

    /// Hands messages to `inbox` until the connection fails or a stop is asked for.
    async fn run(
        &mut self,
        channel: &str,
        inbox: &Inbox,
        stop: &mut watch::Receiver<bool>,
    ) -> Ended {
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = async {
                tokio::select! {
                    push = self.pushes.recv() => Some(push),
                    _ = ping.tick() => None,
                }
            };
            let Some(event) = until_stopped(stop, next).await else {
                return Ended::Stopped("shut down");
            };
            let push = match event {
                Some(Some(push)) => push,
                Some(None) => return Ended::Lost("the connection closed".into()),
                None => {
                    if let Err(err) = cmd("PING").exec_async(&mut self.connection).await {
                        return Ended::Lost(format!("PING failed: {err}"));
                    }
                    continue;
                }
            };
            match push.kind {
                PushKind::Message => {}
                PushKind::Disconnection => {
                    return Ended::Lost("the server closed the connection".into());
                }
                // Subscription confirmations and the like.
                _ => continue,
            }
            let Some(message) = Msg::from_push_info(push) else {
                continue;
            };
            if message.get_channel_name() != channel {
                continue;
            }
            let Some(envelope) = envelope_from(&message) else {
                let text = String::from_utf8_lossy(message.get_payload_bytes());
                let start: String = text.chars().take(40).collect();
                tracing::warn!(payload = %start, %channel, "dropping a Redis message that is not an envelope");
                continue;
            };
            match until_stopped(stop, inbox.send(envelope)).await {
                None => return Ended::Stopped("shut down"),
                Some(Err(_)) => return Ended::Stopped("stopped: the inbox is closed"),
                Some(Ok(())) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ::redis::{PushInfo, PushKind, Value};

    use super::*;
    use crate::pubsub::Topic;

    #[test]
    fn subscriber_names_carry_the_channel_and_only_characters_redis_accepts() {
        assert_eq!(
            subscriber_name("tasksync-3f2a"),
            "tasksync-pubsub:tasksync-3f2a"
        );
        assert_eq!(
            subscriber_name("my app\tbroadcasts\né"),
            "tasksync-pubsub:my_app_broadcasts__"
        );
    }

    fn message(channel: &str, payload: &[u8]) -> Msg {
        Msg::from_push_info(PushInfo {
            kind: PushKind::Message,
            data: vec![
                Value::BulkString(channel.as_bytes().to_vec()),
                Value::BulkString(payload.to_vec()),
            ],
        })
        .expect("a message push")
    }

    #[test]
    fn messages_carrying_encoded_envelopes_decode() {
        let envelope = Envelope::new(Topic::Presence, "rooms:3", "é\tx\ny");
        let msg = message("c", envelope.encode().as_bytes());
        assert_eq!(envelope_from(&msg), Some(envelope));
    }

    #[test]
    fn foreign_or_broken_messages_are_not_envelopes() {
        assert_eq!(envelope_from(&message("c", b"hello")), None);
        assert_eq!(
            envelope_from(&message("c", b"v1\tcable\trooms:1\t\xff")),
            None
        );
    }

    #[test]
    fn the_publish_script_puts_the_offset_where_encode_does() {
        for (stream, payload) in [
            ("rooms:7", "<p>a\tb\nc</p>"),
            ("rooms:1", ""),
            ("rooms:2", "ends with a tab\t0"),
            ("a\tstream that breaks the rules", "\t"),
        ] {
            let envelope = Envelope::new(Topic::Cable, stream, payload);
            let (before, after) = wire_around_offset(&envelope);
            let numbered = Envelope {
                offset: 42,
                ..envelope
            };
            assert_eq!(
                format!("{before}42{after}"),
                numbered.encode(),
                "{stream:?}"
            );
            assert_eq!(
                &after[1..],
                payload,
                "the script stores what follows the tab"
            );
        }
    }

    #[test]
    fn keys_are_named_after_the_channel() {
        assert_eq!(epoch_key("c"), "c:epoch");
        assert_eq!(counter_key("c", "rooms:7"), "c:offset:rooms:7");
        assert_eq!(history_key("c", "rooms:7"), "c:history:rooms:7");
    }

    fn entry(id: &str, fields: &[(&str, &str)]) -> Entry {
        let fields = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        (id.to_owned(), fields)
    }

    #[test]
    fn entries_the_script_wrote_are_read_back_and_others_are_not() {
        assert_eq!(
            Kept::from_entry(entry("12-1", &[("t", "1700000000123456"), ("p", "<p>")])),
            Some(Kept {
                offset: 12,
                at: 1_700_000_000_123_456,
                payload: "<p>".into()
            })
        );
        for broken in [
            entry("12", &[("t", "1"), ("p", "x")]),
            entry("x-1", &[("t", "1"), ("p", "x")]),
            entry("12-1", &[("p", "x")]),
            entry("12-1", &[("t", "soon"), ("p", "x")]),
            entry("12-1", &[("t", "1")]),
        ] {
            assert_eq!(Kept::from_entry(broken.clone()), None, "{broken:?}");
        }
    }

    const SECOND: u64 = 1_000_000;
    const NOW: u64 = 1_000 * SECOND;

    fn window(limit: usize) -> HistoryWindow {
        HistoryWindow {
            limit,
            ttl: Duration::from_secs(60),
        }
    }

    /// Offsets `from..=to`, published a second apart up to `NOW`, newest first and only those
    /// after `after`, as the XREVRANGE in `replay` returns them.
    fn kept(from: u64, to: u64, after: u64) -> Vec<Kept> {
        (from..=to)
            .rev()
            .filter(|offset| *offset > after)
            .map(|offset| Kept {
                offset,
                at: NOW - (to - offset) * SECOND,
                payload: offset.to_string().into(),
            })
            .collect()
    }

    fn replay(after: u64, last: u64, window: HistoryWindow, kept: Vec<Kept>) -> Replay {
        replay_of("e".into(), after, last, NOW, window, kept)
    }

    fn offsets(replay: &Replay) -> Vec<u64> {
        replay.messages.iter().map(|(offset, _)| *offset).collect()
    }

    // The in-process adapter's a_replay_returns_what_came_after_the_offset_while_it_is_kept,
    // with the stream trimmed only roughly, as MAXLEN ~ leaves it.
    #[test]
    fn a_replay_returns_what_came_after_the_offset_while_it_is_within_the_window() {
        let three = window(3);
        let ok = replay(2, 5, three, kept(1, 5, 2));
        assert!(ok.complete);
        assert_eq!(offsets(&ok), [3, 4, 5]);
        assert_eq!(&*ok.messages[0].1, "3");
        assert_eq!(&*ok.epoch, "e");
        let current = replay(5, 5, three, kept(1, 5, 5));
        assert!(
            current.complete && current.messages.is_empty(),
            "nothing missed"
        );
        let too_old = replay(1, 5, three, kept(1, 5, 1));
        assert!(!too_old.complete, "offset 2 is beyond the limit");
        assert_eq!(offsets(&too_old), [3, 4, 5]);
        assert!(!replay(9, 5, three, Vec::new()).complete, "from the future");
        assert!(replay(0, 0, three, Vec::new()).complete, "an empty stream");
        assert!(
            !replay(0, 5, three, Vec::new()).complete,
            "a history that expired"
        );
    }

    #[test]
    fn messages_older_than_the_ttl_are_not_replayed() {
        let short = HistoryWindow {
            limit: 100,
            ttl: Duration::from_millis(2_500),
        };
        // 3, 4 and 5 are 2, 1 and 0 seconds old; 1 and 2 are too old.
        let partly = replay(0, 5, short, kept(1, 5, 0));
        assert!(!partly.complete);
        assert_eq!(offsets(&partly), [3, 4, 5]);
        assert!(replay(2, 5, short, kept(1, 5, 2)).complete);
    }

    #[test]
    fn a_gap_or_leftovers_from_an_old_counter_are_never_passed_off_as_complete() {
        let mut gap = kept(1, 5, 0);
        gap.retain(|kept| kept.offset != 4);
        assert!(
            !replay(2, 5, window(10), gap).complete,
            "offset 4 was never written"
        );
        // The counter was evicted before the history: what is left counted under it.
        let leftovers = replay(0, 0, window(10), kept(1, 9, 0));
        assert!(leftovers.complete && leftovers.messages.is_empty());
        assert!(!replay(4, 0, window(10), kept(1, 9, 4)).complete);
        // XREVRANGE is asked for at least one entry; the limit still holds.
        assert!(offsets(&replay(0, 5, window(0), kept(1, 5, 0))).is_empty());
    }

    #[test]
    fn the_subscriber_client_speaks_resp3_whatever_the_url_says() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://127.0.0.1/?protocol=resp2",
        ] {
            let client = resp3_client(url).expect("valid URL");
            assert_eq!(
                client.get_connection_info().redis_settings().protocol(),
                ProtocolVersion::RESP3,
                "{url}"
            );
        }
        assert!(resp3_client("not a url").is_err());
    }
}
