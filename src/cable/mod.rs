//! The cable: an ActionCable-compatible WebSocket (`/cable`) that streams Turbo Stream HTML to
//! the tabs subscribed to a room. The [`hub`] owns who is subscribed to what; each socket is one
//! task ([`connection`]); [`protocol`] is the wire format; [`streams`] signs stream names so a
//! socket can only subscribe to streams a page handed it.

pub mod connection;
pub mod hub;
pub mod protocol;
pub mod streams;

use std::{sync::Arc, time::Duration};

pub use hub::HubHandle;
pub use streams::StreamSigner;

use crate::{
    metrics::Metrics,
    models::RoomId,
    pubsub::{Envelope, Health, PubSub, PublishError, Topic},
    store::{RoomChange, StoreError},
    views::turbo_stream::TurboStream,
};

/// A socket connection's id, unique within this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// Limits and timings of the cable.
#[derive(Debug, Clone)]
pub struct CableConfig {
    /// How often the server pings; the ActionCable client reconnects after two missed pings.
    pub ping_interval: Duration,
    /// Frames waiting for one slow client before it is disconnected.
    pub outbound_queue: usize,
    /// Largest command frame a client may send.
    pub max_frame_bytes: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
}

impl Default for CableConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(3),
            outbound_queue: 256,
            max_frame_bytes: 16 * 1024,
            max_subscriptions: 100,
        }
    }
}

/// The stream name of a room, as the room page signs it and broadcasts address it.
pub fn room_stream(room: RoomId) -> String {
    format!("rooms:{room}")
}

/// What subscribers are sent when their page may have missed messages: Turbo 8's `refresh`
/// action, which reloads the page (morphing it, where the page asks for that).
pub fn refresh() -> String {
    TurboStream::new().refresh().into_string()
}

/// Publishes rendered Turbo Streams to every tab of a room, on every process.
#[derive(Clone)]
pub struct Broadcaster {
    pubsub: PubSub,
    metrics: Metrics,
}

impl Broadcaster {
    pub fn new(pubsub: PubSub) -> Self {
        Self {
            pubsub,
            metrics: Metrics::default(),
        }
    }

    /// Counts what is published in `metrics` (a new broadcaster counts into a registry of its
    /// own that nobody reads).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Commits `change` and broadcasts `stream`, which announces it, to the room's tabs on
    /// every process. With the PostgreSQL adapter both happen in the change's transaction, so
    /// neither is kept without the other. The other adapters cannot join the store's
    /// transaction: while their backend is unreachable the change is refused (rolled back) so
    /// that nothing is changed that nobody would hear of; otherwise it commits and then
    /// publishes, and a broadcast lost in between (the backend failing at that instant, or the
    /// process dying) is logged, not reported as a failed change, since the change was made.
    pub async fn commit(
        &self,
        change: RoomChange,
        stream: &TurboStream,
    ) -> Result<(), CommitError> {
        let envelope = Envelope::new(
            Topic::Cable,
            room_stream(change.room().id),
            Arc::<str>::from(stream.as_str()),
        );
        if let PubSub::Postgres(adapter) = &self.pubsub {
            adapter.commit(change, envelope).await?;
            self.metrics.broadcasts_published.inc();
            return Ok(());
        }
        if let Health::Degraded(reason) = self.pubsub.health() {
            return Err(PublishError::Unavailable(reason).into());
        }
        let room = change.room().id;
        change.commit().await?;
        match self.pubsub.publish(envelope).await {
            Ok(()) => self.metrics.broadcasts_published.inc(),
            Err(err) => {
                tracing::warn!(%room, error = %err, "broadcast failed after its change was committed")
            }
        }
        Ok(())
    }
}

/// Why a change and its broadcast were not made.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}
