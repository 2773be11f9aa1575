//! Who is subscribed to what, on this process. One task owns the registry; sockets and the
//! pub/sub inbox reach it through a cloneable [`HubHandle`]. A socket joins the registry with its
//! first subscription, and nothing waits for the task's answer: commands are carried out in the
//! order they are queued, so a socket's handshake costs the task one message. A broadcast is
//! framed once per distinct subscription identifier (in practice once per stream) and the same
//! bytes are queued for every subscriber; a subscriber whose queue is full is dropped, which
//! closes its socket, instead of letting memory grow.
//!
//! Sockets speaking AnyCable's extended protocol get a second frame per identifier, the same
//! message with its stream position (`stream_id`, `epoch`, `offset`). Each variant is built only
//! when the identifier has a subscriber that needs it, so a broadcast costs at most two frames
//! per identifier whatever the number of subscribers, and each subscriber is still queued a
//! reference-counted handle to shared bytes.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Instant,
};

use bytestring::ByteString;
use tokio::sync::{mpsc, oneshot};

use super::{
    ConnectionId,
    protocol::{self, Protocol, StreamPosition},
};

/// Frames queued for one connection.
/// A socket's queue. A broadcast is queued as one shared [`Queued`] for all of a stream's
/// subscribers: each queue slot is a pointer, not a copy of the frame.
pub type Outbound = mpsc::Sender<Arc<Queued>>;

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
    /// A refresh after messages were lost: the subscription goes on from `offset`, whatever
    /// it had been sent before.
    pub reset: bool,
}

enum Command {
    Subscribe {
        conn: ConnectionId,
        /// With a socket's first subscription: where its frames go, and in which protocol.
        joining: Option<(Outbound, Protocol)>,
        stream: Arc<str>,
        identifier: Arc<str>,
        epoch: Option<Arc<str>>,
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
    Reset {
        stream: Option<Arc<str>>,
        offset: u64,
    },
    Stats {
        reply: oneshot::Sender<HubStats>,
    },
}

/// A snapshot of the registry, for health checks, metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Open cable sockets, subscribed or not.
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
    /// Open [`Member`]s, counted here rather than by the task, which meets a socket only once
    /// it subscribes.
    open: Arc<AtomicUsize>,
}

/// One socket's place in the hub, from [`HubHandle::connect`] to [`HubHandle::disconnect`].
pub struct Member {
    conn: ConnectionId,
    /// Until the first subscription carries it to the hub task.
    joining: Option<(Outbound, Protocol)>,
    open: Arc<AtomicUsize>,
}

impl Member {
    pub fn id(&self) -> ConnectionId {
        self.conn
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl HubHandle {
    /// Starts the hub task; it ends when every handle is dropped.
    pub fn start() -> Self {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(Hub::default().run(rx));
        Self {
            tx,
            next_id: Arc::new(AtomicU64::new(1)),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A new socket, with the queue its frames go to and the protocol they are framed in. The
    /// hub task learns of it with its first subscription.
    pub fn connect(&self, outbound: Outbound, protocol: Protocol) -> Member {
        self.open.fetch_add(1, Ordering::Relaxed);
        Member {
            conn: ConnectionId(self.next_id.fetch_add(1, Ordering::Relaxed)),
            joining: Some((outbound, protocol)),
            open: self.open.clone(),
        }
    }

    /// Subscribes `member` to `stream` under `identifier`. Returns once the subscription is
    /// queued: the task carries out commands in order, so it is in place before any broadcast
    /// queued later, and a confirmation sent afterwards never precedes it. `false` if the hub
    /// has stopped. A connection the hub dropped for falling behind stays dropped; its socket
    /// learns that from its closed queue.
    ///
    /// `epoch` is the stream's history epoch as the subscriber just read it from the adapter.
    /// Envelopes carry only their offset, so extended-protocol frames take the epoch from here;
    /// the latest subscriber's reading wins.
    pub async fn subscribe(
        &self,
        member: &mut Member,
        stream: Arc<str>,
        identifier: Arc<str>,
        epoch: Option<Arc<str>>,
    ) -> bool {
        let command = Command::Subscribe {
            conn: member.conn,
            joining: member.joining.take(),
            stream,
            identifier,
            epoch,
        };
        self.tx.send(command).await.is_ok()
    }

    pub async fn unsubscribe(&self, member: &Member, identifier: Arc<str>) {
        let conn = member.conn;
        let _ = self
            .tx
            .send(Command::Unsubscribe { conn, identifier })
            .await;
    }

    /// Forgets a socket and all its subscriptions.
    pub async fn disconnect(&self, member: Member) {
        if member.joining.is_none() {
            let conn = member.conn;
            let _ = self.tx.send(Command::Disconnect { conn }).await;
        }
    }

    /// [`deliver_at`](Self::deliver_at) at offset 0, published now: for tests, which need no
    /// history.
    #[cfg(test)]
    pub async fn deliver(&self, stream: Arc<str>, payload: Arc<str>) {
        self.deliver_at(stream, payload, 0, Instant::now()).await;
    }

    /// Queues `payload`, the message at `offset` of its stream's history whose broadcast
    /// started out at `published`, for every subscriber of `stream` on this process.
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

    /// Tells every subscriber of `stream` (of every stream, when `None`) to refresh, because
    /// messages were lost beyond what history can replay; the stream goes on from `offset`.
    pub async fn reset(&self, stream: Option<Arc<str>>, offset: u64) {
        let _ = self.tx.send(Command::Reset { stream, offset }).await;
    }

    pub async fn stats(&self) -> HubStats {
        let (reply, answer) = oneshot::channel();
        let stats = if self.tx.send(Command::Stats { reply }).await.is_err() {
            HubStats::default()
        } else {
            answer.await.unwrap_or_default()
        };
        HubStats {
            connections: self.open.load(Ordering::Relaxed),
            ..stats
        }
    }
}

struct Connection {
    outbound: Outbound,
    protocol: Protocol,
    /// identifier -> stream
    subscriptions: HashMap<Arc<str>, Arc<str>>,
}

/// The subscribers of one stream.
#[derive(Default)]
struct Stream {
    /// The history epoch extended-protocol frames carry; `None` until an extended-protocol
    /// subscriber brings one (and with an adapter that keeps no history).
    epoch: Option<Arc<str>>,
    identifiers: HashMap<Arc<str>, Subscribers>,
}

/// The connections subscribed under one identifier, by the frame they need.
#[derive(Default)]
struct Subscribers {
    plain: HashSet<ConnectionId>,
    extended: HashSet<ConnectionId>,
}

impl Subscribers {
    fn of(&mut self, protocol: Protocol) -> &mut HashSet<ConnectionId> {
        match protocol {
            Protocol::ActionCable => &mut self.plain,
            Protocol::Extended => &mut self.extended,
        }
    }

    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.extended.is_empty()
    }
}

#[derive(Default)]
struct Hub {
    connections: HashMap<ConnectionId, Connection>,
    streams: HashMap<Arc<str>, Stream>,
    slow_disconnects: u64,
    delivered: u64,
}

impl Hub {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(command) = rx.recv().await {
            match command {
                Command::Subscribe {
                    conn,
                    joining,
                    stream,
                    identifier,
                    epoch,
                } => {
                    if let Some((outbound, protocol)) = joining {
                        let connection = Connection {
                            outbound,
                            protocol,
                            subscriptions: HashMap::new(),
                        };
                        self.connections.insert(conn, connection);
                    }
                    self.subscribe(conn, stream, identifier, epoch);
                }
                Command::Unsubscribe { conn, identifier } => self.unsubscribe(conn, &identifier),
                Command::Disconnect { conn } => self.remove(conn),
                Command::Deliver {
                    stream,
                    payload,
                    offset,
                    published,
                } => self.deliver(&stream, &payload, offset, published, false),
                Command::Reset { stream, offset } => {
                    let refresh = super::refresh();
                    let streams = match stream {
                        Some(stream) => vec![stream],
                        None => self.streams.keys().cloned().collect(),
                    };
                    for stream in streams {
                        self.deliver(&stream, &refresh, offset, Instant::now(), true);
                    }
                }
                Command::Stats { reply } => {
                    let _ = reply.send(HubStats {
                        // Counted by the handles.
                        connections: 0,
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

    fn subscribe(
        &mut self,
        conn: ConnectionId,
        stream: Arc<str>,
        identifier: Arc<str>,
        epoch: Option<Arc<str>>,
    ) {
        // Gone: dropped for falling behind.
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        let entry = self.streams.entry(stream.clone()).or_default();
        if epoch.is_some() {
            entry.epoch = epoch;
        }
        if connection.subscriptions.contains_key(&identifier) {
            return;
        }
        connection.subscriptions.insert(identifier.clone(), stream);
        entry
            .identifiers
            .entry(identifier)
            .or_default()
            .of(connection.protocol)
            .insert(conn);
    }

    fn unsubscribe(&mut self, conn: ConnectionId, identifier: &Arc<str>) {
        let Some(connection) = self.connections.get_mut(&conn) else {
            return;
        };
        if let Some(stream) = connection.subscriptions.remove(identifier) {
            let protocol = connection.protocol;
            self.forget(&stream, identifier, conn, protocol);
        }
    }

    fn remove(&mut self, conn: ConnectionId) {
        if let Some(connection) = self.connections.remove(&conn) {
            for (identifier, stream) in connection.subscriptions {
                self.forget(&stream, &identifier, conn, connection.protocol);
            }
        }
    }

    /// Drops one subscription from the stream index, and empty entries with it, so nothing
    /// outlives the sockets that made it.
    fn forget(
        &mut self,
        stream: &Arc<str>,
        identifier: &Arc<str>,
        conn: ConnectionId,
        protocol: Protocol,
    ) {
        let Some(entry) = self.streams.get_mut(stream) else {
            return;
        };
        if let Some(subscribers) = entry.identifiers.get_mut(identifier) {
            subscribers.of(protocol).remove(&conn);
            if subscribers.is_empty() {
                entry.identifiers.remove(identifier);
            }
        }
        if entry.identifiers.is_empty() {
            self.streams.remove(stream);
        }
    }

    fn deliver(
        &mut self,
        stream: &str,
        payload: &str,
        offset: u64,
        published: Instant,
        reset: bool,
    ) {
        let Some(entry) = self.streams.get(stream) else {
            return;
        };
        // Without an offset (an adapter that keeps no history) or an epoch there is no position
        // to tell, and extended-protocol subscribers get the plain frame, as AnyCable sends
        // for streams without history.
        let position = entry
            .epoch
            .as_deref()
            .filter(|_| offset > 0)
            .map(|epoch| StreamPosition {
                stream_id: stream,
                epoch,
                offset,
            });
        let mut outcome = Outcome::default();
        for (identifier, subscribers) in &entry.identifiers {
            let queued = |frame: String| {
                Arc::new(Queued {
                    frame: ByteString::from(frame),
                    published,
                    identifier: identifier.clone(),
                    offset,
                    reset,
                })
            };
            let plain = (!subscribers.plain.is_empty()
                || (position.is_none() && !subscribers.extended.is_empty()))
            .then(|| queued(protocol::message(identifier, payload)));
            let extended = position
                .filter(|_| !subscribers.extended.is_empty())
                .map(|position| queued(protocol::message_at(identifier, payload, position)));
            if let Some(frame) = &plain {
                outcome.offer(&self.connections, &subscribers.plain, frame);
            }
            if let Some(frame) = extended.as_ref().or(plain.as_ref()) {
                outcome.offer(&self.connections, &subscribers.extended, frame);
            }
        }
        self.delivered += outcome.delivered;
        self.slow_disconnects += outcome.slow;
        // Dropping a connection's queue sender is what tells its socket task to close.
        for conn in outcome.gone {
            self.remove(conn);
        }
    }
}

/// What queueing one broadcast did.
#[derive(Default)]
struct Outcome {
    delivered: u64,
    slow: u64,
    gone: Vec<ConnectionId>,
}

impl Outcome {
    fn offer(
        &mut self,
        connections: &HashMap<ConnectionId, Connection>,
        conns: &HashSet<ConnectionId>,
        frame: &Arc<Queued>,
    ) {
        for conn in conns {
            let Some(connection) = connections.get(conn) else {
                continue;
            };
            match connection.outbound.try_send(frame.clone()) {
                Ok(()) => self.delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(conn = conn.0, "disconnecting a client that fell behind");
                    self.slow += 1;
                    self.gone.push(*conn);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => self.gone.push(*conn),
            }
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
        let mut a = hub.connect(tx_a, Protocol::ActionCable);
        let mut b = hub.connect(tx_b, Protocol::ActionCable);
        assert!(
            hub.subscribe(&mut a, "rooms:1".into(), id("one"), None)
                .await
        );
        assert!(
            hub.subscribe(&mut a, "rooms:1".into(), id("one"), None)
                .await,
            "idempotent"
        );
        assert!(
            hub.subscribe(&mut b, "rooms:2".into(), id("two"), None)
                .await
        );

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
    async fn a_reset_sends_a_refresh_to_the_streams_it_names() {
        let hub = HubHandle::start();
        let (tx_a, mut rx_a) = mpsc::channel(8);
        let (tx_b, mut rx_b) = mpsc::channel(8);
        let mut a = hub.connect(tx_a, Protocol::ActionCable);
        let mut b = hub.connect(tx_b, Protocol::ActionCable);
        hub.subscribe(&mut a, "rooms:1".into(), id("one"), None)
            .await;
        hub.subscribe(&mut b, "rooms:2".into(), id("two"), None)
            .await;

        hub.reset(Some("rooms:1".into()), 9).await;
        let queued = rx_a.recv().await.unwrap();
        assert!(queued.reset);
        assert_eq!(queued.offset, 9);
        let frame: serde_json::Value = serde_json::from_str(&queued.frame).unwrap();
        assert!(
            frame["message"]
                .as_str()
                .unwrap()
                .contains(r#"action="refresh""#),
            "{frame}"
        );
        assert_eq!(hub.stats().await.delivered, 1);
        assert!(rx_b.try_recv().is_err(), "only the stream named");

        hub.reset(None, 0).await;
        for rx in [&mut rx_a, &mut rx_b] {
            let queued = rx.recv().await.unwrap();
            assert!(queued.reset && queued.offset == 0);
        }
    }

    #[tokio::test]
    async fn unsubscribing_and_disconnecting_leave_nothing_behind() {
        let hub = HubHandle::start();
        let (tx, _rx) = mpsc::channel(8);
        let mut conn = hub.connect(tx, Protocol::ActionCable);
        hub.subscribe(&mut conn, "rooms:1".into(), id("one"), None)
            .await;
        hub.subscribe(&mut conn, "rooms:2".into(), id("two"), None)
            .await;
        hub.unsubscribe(&conn, id("one")).await;
        let stats = hub.stats().await;
        assert_eq!((stats.subscriptions, stats.streams), (1, 1));
        hub.disconnect(conn).await;
        assert_eq!(hub.stats().await, HubStats::default());
    }

    #[tokio::test]
    async fn a_socket_counts_from_connect_and_joins_the_registry_with_its_first_subscription() {
        let hub = HubHandle::start();
        let (tx, mut rx) = mpsc::channel(8);
        let mut member = hub.connect(tx, Protocol::ActionCable);
        let stats = hub.stats().await;
        assert_eq!((stats.connections, stats.subscriptions), (1, 0));
        hub.subscribe(&mut member, "rooms:1".into(), id("one"), None)
            .await;
        // Queued right behind the subscription, without waiting for the task: still delivered.
        hub.deliver("rooms:1".into(), "<p>first</p>".into()).await;
        let frame: serde_json::Value =
            serde_json::from_str(&rx.recv().await.unwrap().frame).unwrap();
        assert_eq!(frame["message"], "<p>first</p>");
        let never_subscribed = hub.connect(mpsc::channel(8).0, Protocol::ActionCable);
        assert_eq!(hub.stats().await.connections, 2);
        hub.disconnect(never_subscribed).await;
        hub.disconnect(member).await;
        let stats = hub.stats().await;
        assert_eq!(
            (stats.connections, stats.subscriptions, stats.streams),
            (0, 0, 0)
        );
    }

    #[tokio::test]
    async fn a_subscriber_whose_queue_is_full_is_dropped_and_the_rest_still_receive() {
        let hub = HubHandle::start();
        let (slow_tx, mut slow_rx) = mpsc::channel(2);
        let (fast_tx, mut fast_rx) = mpsc::channel(64);
        let mut slow = hub.connect(slow_tx, Protocol::ActionCable);
        let mut fast = hub.connect(fast_tx, Protocol::ActionCable);
        hub.subscribe(&mut slow, "rooms:1".into(), id("one"), None)
            .await;
        hub.subscribe(&mut fast, "rooms:1".into(), id("one"), None)
            .await;
        for i in 0..5 {
            hub.deliver("rooms:1".into(), format!("m{i}").into()).await;
            assert!(fast_rx.recv().await.is_some());
        }
        let stats = hub.stats().await;
        assert_eq!(stats.subscriptions, 1);
        assert_eq!(stats.slow_disconnects, 1);
        // Dropped for good: a later subscription does not bring it back.
        hub.subscribe(&mut slow, "rooms:2".into(), id("two"), None)
            .await;
        hub.deliver("rooms:2".into(), "late".into()).await;
        assert_eq!(hub.stats().await.subscriptions, 1);
        // The slow socket drains what was queued, then sees its queue closed.
        assert!(slow_rx.recv().await.is_some());
        assert!(slow_rx.recv().await.is_some());
        // Within a second: a queue the hub kept open would otherwise hang the test.
        let closed = tokio::time::timeout(std::time::Duration::from_secs(1), slow_rx.recv());
        assert!(closed.await.expect("the queue closes").is_none());
    }

    #[tokio::test]
    async fn extended_subscribers_get_the_position_and_each_variant_is_framed_once() {
        let hub = HubHandle::start();
        let (plain_a, mut plain_a_rx) = mpsc::channel(8);
        let (plain_b, mut plain_b_rx) = mpsc::channel(8);
        let (ext_a, mut ext_a_rx) = mpsc::channel(8);
        let (ext_b, mut ext_b_rx) = mpsc::channel(8);
        let mut plain_a = hub.connect(plain_a, Protocol::ActionCable);
        let mut plain_b = hub.connect(plain_b, Protocol::ActionCable);
        let mut ext_a = hub.connect(ext_a, Protocol::Extended);
        let mut ext_b = hub.connect(ext_b, Protocol::Extended);
        for conn in [&mut plain_a, &mut plain_b] {
            assert!(hub.subscribe(conn, "rooms:1".into(), id("one"), None).await);
        }
        for conn in [&mut ext_a, &mut ext_b] {
            assert!(
                hub.subscribe(conn, "rooms:1".into(), id("one"), Some("e1".into()))
                    .await
            );
        }

        hub.deliver_at("rooms:1".into(), "<p>hi</p>".into(), 7, Instant::now())
            .await;
        let plain = [
            plain_a_rx.recv().await.unwrap(),
            plain_b_rx.recv().await.unwrap(),
        ];
        let extended = [
            ext_a_rx.recv().await.unwrap(),
            ext_b_rx.recv().await.unwrap(),
        ];
        let json = |q: &Queued| serde_json::from_str::<serde_json::Value>(&q.frame).unwrap();
        assert_eq!(
            json(&plain[0]),
            serde_json::json!({"identifier": &*id("one"), "message": "<p>hi</p>"})
        );
        assert_eq!(
            json(&extended[0]),
            serde_json::json!({"identifier": &*id("one"), "message": "<p>hi</p>",
                               "stream_id": "rooms:1", "epoch": "e1", "offset": 7})
        );
        // Shared bytes, not copies: one allocation per variant, whatever the subscriber count.
        assert_eq!(plain[0].frame.as_ptr(), plain[1].frame.as_ptr());
        assert_eq!(extended[0].frame.as_ptr(), extended[1].frame.as_ptr());
        assert_eq!(extended[0].offset, 7);

        // No history, no position: the extended subscribers get the plain frame.
        hub.deliver("rooms:1".into(), "<p>bare</p>".into()).await;
        assert_eq!(
            json(&ext_a_rx.recv().await.unwrap()),
            serde_json::json!({"identifier": &*id("one"), "message": "<p>bare</p>"})
        );
        assert_eq!(hub.stats().await.delivered, 8);

        for conn in [plain_a, plain_b, ext_a, ext_b] {
            hub.disconnect(conn).await;
        }
        assert_eq!(
            hub.stats().await,
            HubStats {
                delivered: 8,
                ..HubStats::default()
            }
        );
    }
}
