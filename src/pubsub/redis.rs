//! Redis pub/sub adapter. Envelopes are PUBLISHed, as `Envelope::encode` text, on the configured
//! channel through a `ConnectionManager`, and every process SUBSCRIBEs to that channel on a
//! connection of its own. The subscriber speaks RESP3, whatever the URL asks for: a RESP2
//! connection in subscribed mode accepts nothing but (un)subscribe and PING, so it could not be
//! named with CLIENT SETNAME, and a named connection is what lets operators (and the tests) find
//! it in CLIENT LIST; RESP3 needs Redis 6 or newer. Redis payloads have no practical size limit,
//! so every envelope travels inline. When the subscriber's connection drops (or stops answering
//! the periodic PING), the adapter reports `Degraded`, refuses publishes, reconnects with
//! jittered exponential backoff and subscribes again; messages published while it was away are
//! lost, as Redis pub/sub keeps nothing for absent subscribers.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use ::redis::{
    AsyncConnectionConfig, Client, IntoConnectionInfo as _, Msg, ProtocolVersion, PushInfo,
    PushKind, RedisError,
    aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    cmd,
};
use anyhow::Context as _;
use tokio::sync::{mpsc, watch};

use super::{
    Envelope, Health, HistoryWindow, Inbox, Position, PublishError, Replay,
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
    publisher: Mutex<Option<ConnectionManager>>,
    channel: Arc<str>,
    subscriber: Supervisor,
}

impl RedisPubSub {
    pub async fn start(
        url: &str,
        channel: &str,
        window: HistoryWindow,
        inbox: Inbox,
    ) -> anyhow::Result<Self> {
        let _ = window; // this adapter keeps no history yet

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
        let publisher = ConnectionManager::new_with_config(
            client,
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_number_of_retries(PUBLISH_RETRIES)
                .set_max_delay(Duration::from_secs(1)),
        )
        .await
        .with_context(|| format!("cannot connect to Redis at {}", redact(url)))?;

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
            }),
        })
    }

    pub async fn publish(&self, envelope: Envelope) -> Result<(), PublishError> {
        let publisher = self
            .inner
            .publisher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(mut publisher) = publisher else {
            return Err(PublishError::Closed);
        };
        // A publish while our own subscriber is away would reach every process but this one.
        if let Health::Degraded(reason) = self.health() {
            return Err(PublishError::Unavailable(reason));
        }
        cmd("PUBLISH")
            .arg(&*self.inner.channel)
            .arg(envelope.encode())
            .query_async::<i64>(&mut publisher)
            .await
            .map(drop)
            .map_err(|err| PublishError::Unavailable(err.to_string()))
    }

    /// Where `stream`'s history stands; `None` while this adapter keeps no history.
    pub async fn position(&self, _stream: &str) -> Option<Position> {
        None
    }

    /// What `stream` published after `after`; `None` while this adapter keeps no history.
    pub async fn replay(&self, _stream: &str, _after: u64) -> Option<Replay> {
        None
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
