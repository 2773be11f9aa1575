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
    pubsub::{Envelope, PubSub, Topic},
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

    /// Sends `stream` to the room. The change it describes is already committed, so a failure
    /// here is logged rather than failing the request that made it.
    pub async fn room(&self, room: RoomId, stream: &TurboStream) {
        let envelope = Envelope::new(
            Topic::Cable,
            room_stream(room),
            Arc::<str>::from(stream.as_str()),
        );
        match self.pubsub.publish(envelope).await {
            Ok(()) => self.metrics.broadcasts_published.inc(),
            Err(err) => tracing::warn!(%room, error = %err, "broadcast failed"),
        }
    }
}
