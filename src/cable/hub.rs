//! Who is subscribed to what, on this process. One task owns the registry; sockets and the
//! pub/sub inbox reach it through a cloneable [`HubHandle`]. A broadcast is framed once per
//! distinct subscription identifier (in practice once per stream) and the same bytes are queued
//! for every subscriber; a subscriber whose queue is full is dropped, which closes its socket,
//! instead of letting memory grow.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use bytestring::ByteString;
use tokio::sync::{mpsc, oneshot};

use super::{ConnectionId, protocol};

/// Frames queued for one connection.
pub type Outbound = mpsc::Sender<Queued>;

/// A frame waiting for its socket, with the instant its broadcast started out, so the socket
/// can time the whole trip once the frame is written.
#[derive(Debug, Clone)]
pub struct Queued {
    pub frame: ByteString,
    pub published: Instant,
    /// The subscription it is for, and its offset in the stream (0: no history), so a socket
    /// that is catching up can skip what its replay already sent.
    pub identifier: Arc<str>,
    pub offset: u64,
}

enum Command {
    Connect {
        conn: ConnectionId,
        outbound: Outbound,
    },
    Subscribe {
        conn: ConnectionId,
        stream: Arc<str>,
        identifier: Arc<str>,
        reply: oneshot::Sender<bool>,
    },
    Unsubscribe {
        conn: ConnectionId,
        identifier: Arc<str>,
    },
    Disconnect {
        conn: ConnectionId,
    },
    Deliver {
        stream: Arc<str>,
        payload: Arc<str>,
        offset: u64,
        published: Instant,
    },
    Stats {
        reply: oneshot::Sender<HubStats>,
    },
}

/// A snapshot of the registry, for health checks, metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    pub connections: usize,
    pub subscriptions: usize,
    pub streams: usize,
    /// Connections dropped so far because their queue was full.
    pub slow_disconnects: u64,
    /// Frames queued to sockets so far (one per subscriber reached by a broadcast).
    pub delivered: u64,
}

/// The way into the hub task.
#[derive(Clone)]
pub struct HubHandle {
    tx: mpsc::Sender<Command>,
    next_id: Arc<AtomicU64>,
}

impl HubHandle {
    /// Starts the hub task; it ends when every handle is dropped.
    pub fn start() -> Self {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(Hub::default().run(rx));
        Self {
            tx,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Registers a connection and the queue its frames go to.
    pub async fn connect(&self, outbound: Outbound) -> ConnectionId {
        let conn = ConnectionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let _ = self.tx.send(Command::Connect { conn, outbound }).await;
        conn
    }

    /// Subscribes `conn` to `stream` under `identifier`. Returns once the subscription is live,
    /// so a confirmation sent afterwards never precedes it; `false` if the connection is gone.
    pub async fn subscribe(
        &self,
        conn: ConnectionId,
        stream: Arc<str>,
        identifier: Arc<str>,
    ) -> bool {
        let (reply, answer) = oneshot::channel();
        let command = Command::Subscribe {
            conn,
            stream,
            identifier,
            reply,
        };
        self.tx.send(command).await.is_ok() && answer.await.unwrap_or(false)
    }

    pub async fn unsubscribe(&self, conn: ConnectionId, identifier: Arc<str>) {
        let _ = self
            .tx
            .send(Command::Unsubscribe { conn, identifier })
            .await;
    }

    /// Forgets a connection and all its subscriptions.
    pub async fn disconnect(&self, conn: ConnectionId) {
        let _ = self.tx.send(Command::Disconnect { conn }).await;
    }

    /// Queues `payload` for every subscriber of `stream` on this process.
    pub async fn deliver(&self, stream: Arc<str>, payload: Arc<str>) {
        self.deliver_at(stream, payload, 0, Instant::now()).await;
    }

    /// [`deliver`](Self::deliver) for the message at `offset` of its stream's history, whose
    /// broadcast started out at `published`.
    pub async fn deliver_at(
        &self,
        stream: Arc<str>,
        payload: Arc<str>,
        offset: u64,
        published: Instant,
    ) {
        let command = Command::Deliver {
            stream,
            payload,
            offset,
            published,
        };
        let _ = self.tx.send(command).await;
    }

    pub async fn stats(&self) -> HubStats {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Command::Stats { reply }).await.is_err() {
            return HubStats::default();
        }
        answer.await.unwrap_or_default()
    }
}

struct Connection {
    outbound: Outbound,
    /// identifier -> stream
    subscriptions: HashMap<Arc<str>, Arc<str>>,
}

#[derive(Default)]
struct Hub {
    connections: HashMap<ConnectionId, Connection>,
    /// stream -> identifier -> subscribed connections
    streams: HashMap<Arc<str>, HashMap<Arc<str>, HashSet<ConnectionId>>>,
    slow_disconnects: u64,
    delivered: u64,
}

impl Hub {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(command) = rx.recv().await {
            match command {
                Command::Connect { conn, outbound } => {
                    self.connections.insert(
                        conn,
                        Connection {
                            outbound,
                            subscriptions: HashMap::new(),
                        },
                    );
                }
                Command::Subscribe {
                    conn,
                    stream,
                    identifier,
                    reply,
                } => {
                    let _ = reply.send(self.subscribe(conn, stream, identifier));
                }
                Command::Unsubscribe { conn, identifier } => self.unsubscribe(conn, &identifier),
                Command::Disconnect { conn } => self.remove(conn),
                Command::Deliver {
                    stream,
                    payload,
                    offset,
                    published,
                } => self.deliver(&stream, &payload, offset, published),
                Command::Stats { reply } => {
                    let _ = reply.send(HubStats {
                        connections: self.connections.len(),
                        subscriptions: self
                            .connections
                            .values()
                            .map(|c| c.subscriptions.len())
                            .sum(),
                        streams: self.streams.len(),
                        slow_disconnects: self.slow_disconnects,
                        delivered: self.delivered,
                    });
                }
            }
        }
    }

    fn subscribe(&mut self, conn: ConnectionId, stream: Arc<str>, identifier: Arc<str>) -> bool {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return false;
        };
        if connection.subscriptions.contains_key(&identifier) {
            return true;
        }
        connection
            .subscriptions
            .insert(identifier.clone(), stream.clone());
        self.streams
            .entry(stream)
            .or_default()
            .entry(identifier)
            .or_default()
            .insert(conn);
        true
    }

    fn unsubscribe(&mut self, conn: ConnectionId, identifier: &Arc<str>) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        if let Some(stream) = connection.subscriptions.remove(identifier) {
            self.forget(&stream, identifier, conn);
        }
    }

    fn remove(&mut self, conn: ConnectionId) {
        if let Some(connection) = self.connections.remove(&conn) {
            for (identifier, stream) in connection.subscriptions {
                self.forget(&stream, &identifier, conn);
            }
        }
    }

    /// Drops one subscription from the stream index, and empty entries with it, so nothing
    /// outlives the sockets that made it.
    fn forget(&mut self, stream: &Arc<str>, identifier: &Arc<str>, conn: ConnectionId) {
        let Some(by_identifier) = self.streams.get_mut(stream) else {
            return;
        };
        if let Some(conns) = by_identifier.get_mut(identifier) {
            conns.remove(&conn);
            if conns.is_empty() {
                by_identifier.remove(identifier);
            }
        }
        if by_identifier.is_empty() {
            self.streams.remove(stream);
        }
    }

    fn deliver(&mut self, stream: &str, payload: &str, offset: u64, published: Instant) {
        let Some(by_identifier) = self.streams.get(stream) else {
            return;
        };
        let mut gone = Vec::new();
        for (identifier, conns) in by_identifier {
            let frame = Queued {
                frame: ByteString::from(protocol::message(identifier, payload)),
                published,
                identifier: identifier.clone(),
                offset,
            };
            for conn in conns {
                let Some(connection) = self.connections.get(conn) else {
                    continue;
                };
                match connection.outbound.try_send(frame.clone()) {
                    Ok(()) => self.delivered += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(conn = conn.0, "disconnecting a client that fell behind");
                        self.slow_disconnects += 1;
                        gone.push(*conn);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => gone.push(*conn),
                }
            }
        }
        // Dropping a connection's queue sender is what tells its socket task to close.
        for conn in gone {
            self.remove(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(stream: &str) -> Arc<str> {
        format!(r#"{{"channel":"Turbo::StreamsChannel","signed_stream_name":"{stream}"}}"#).into()
    }

    #[tokio::test]
    async fn a_broadcast_reaches_each_subscriber_of_its_stream_once() {
        let hub = HubHandle::start();
        let (tx_a, mut rx_a) = mpsc::channel(8);
        let (tx_b, mut rx_b) = mpsc::channel(8);
        let a = hub.connect(tx_a).await;
        let b = hub.connect(tx_b).await;
        assert!(hub.subscribe(a, "rooms:1".into(), id("one")).await);
        assert!(
            hub.subscribe(a, "rooms:1".into(), id("one")).await,
            "idempotent"
        );
        assert!(hub.subscribe(b, "rooms:2".into(), id("two")).await);

        hub.deliver("rooms:1".into(), "<p>hi</p>".into()).await;
        hub.deliver("rooms:3".into(), "nobody".into()).await;
        let queued = rx_a.recv().await.unwrap();
        let frame: serde_json::Value = serde_json::from_str(&queued.frame).unwrap();
        assert_eq!(frame["message"], "<p>hi</p>");
        assert_eq!(frame["identifier"], &*id("one"));
        let stats = hub.stats().await;
        assert!(rx_a.try_recv().is_err(), "delivered once");
        assert!(rx_b.try_recv().is_err(), "other streams get nothing");
        assert_eq!(stats.subscriptions, 2);
        assert_eq!(stats.delivered, 1);
    }

    #[tokio::test]
    async fn unsubscribing_and_disconnecting_leave_nothing_behind() {
        let hub = HubHandle::start();
        let (tx, _rx) = mpsc::channel(8);
        let conn = hub.connect(tx).await;
        hub.subscribe(conn, "rooms:1".into(), id("one")).await;
        hub.subscribe(conn, "rooms:2".into(), id("two")).await;
        hub.unsubscribe(conn, id("one")).await;
        let stats = hub.stats().await;
        assert_eq!((stats.subscriptions, stats.streams), (1, 1));
        hub.disconnect(conn).await;
        assert_eq!(hub.stats().await, HubStats::default());
        assert!(
            !hub.subscribe(conn, "rooms:1".into(), id("one")).await,
            "gone"
        );
    }

    #[tokio::test]
    async fn a_subscriber_whose_queue_is_full_is_dropped_and_the_rest_still_receive() {
        let hub = HubHandle::start();
        let (slow_tx, mut slow_rx) = mpsc::channel(2);
        let (fast_tx, mut fast_rx) = mpsc::channel(64);
        let slow = hub.connect(slow_tx).await;
        let fast = hub.connect(fast_tx).await;
        hub.subscribe(slow, "rooms:1".into(), id("one")).await;
        hub.subscribe(fast, "rooms:1".into(), id("one")).await;
        for i in 0..5 {
            hub.deliver("rooms:1".into(), format!("m{i}").into()).await;
            assert!(fast_rx.recv().await.is_some());
        }
        let stats = hub.stats().await;
        assert_eq!(stats.connections, 1);
        assert_eq!(stats.slow_disconnects, 1);
        // The slow socket drains what was queued, then sees its queue closed.
        assert!(slow_rx.recv().await.is_some());
        assert!(slow_rx.recv().await.is_some());
        assert!(slow_rx.recv().await.is_none());
    }
}
