//! The presence server of one process: a task that owns this node's sockets and its
//! [`Presence`] view, reached through a cloneable [`PresenceHandle`]. It tells other nodes about
//! joins, leaves and typing through the pub/sub adapter, sends a heartbeat snapshot every few
//! seconds, drops nodes that go quiet, and flushes batched diffs to its sockets on a short tick.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytestring::ByteString;
use tokio::sync::{mpsc, oneshot};

use super::{
    protocol::{self, Event},
    state::{NodeId, Person, Presence},
};
use crate::{
    cable::ConnectionId,
    models::{RoomId, UserId},
    pubsub::{self, Envelope, PubSub, Topic},
};

/// The stream every presence event travels on.
const STREAM: &str = "presence";

/// Timings and limits of presence.
#[derive(Debug, Clone)]
pub struct PresenceConfig {
    /// How long changes gather before a batched diff goes out.
    pub flush_interval: Duration,
    /// How often this node sends its snapshot to the others.
    pub heartbeat_interval: Duration,
    /// A node not heard from for this long is dropped with its people.
    pub node_timeout: Duration,
    /// A typing indicator with no "stop" clears itself after this long.
    pub typing_ttl: Duration,
    /// Typing events a person may send in a burst, and how many per second after that.
    pub typing_burst: f64,
    pub typing_per_second: f64,
    /// Frames waiting for one slow socket before it is closed.
    pub outbound_queue: usize,
    /// Largest frame a client may send.
    pub max_frame_bytes: usize,
    /// How often the server sends each socket a WebSocket Ping; `None`: never.
    pub ping_interval: Option<Duration>,
    /// A socket from which nothing at all (frame or pong) has arrived for this long is closed
    /// (1001) and its person leaves; `None`: never.
    pub idle_timeout: Option<Duration>,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_millis(100),
            heartbeat_interval: Duration::from_secs(2),
            node_timeout: Duration::from_secs(6),
            typing_ttl: Duration::from_secs(5),
            typing_burst: 5.0,
            typing_per_second: 2.0,
            outbound_queue: 64,
            max_frame_bytes: 4096,
            ping_interval: Some(Duration::from_secs(5)),
            idle_timeout: Some(Duration::from_secs(15)),
        }
    }
}

/// Events taken at most from the publishing queue at once (see [`publish_events`]).
const PUBLISHED_AT_ONCE: usize = 256;

/// Commands handled in one go before the sockets opened among them are answered (see
/// [`Server::run`]).
const BATCH: usize = 256;

/// A frame in a socket's queue: built once for a room and shared by every socket it goes to.
/// One pointer, so the first block of a socket's queue, allocated with it (32 slots), is 288
/// bytes rather than the 1,056 that `ByteString` slots take.
pub type Queued = Arc<ByteString>;

enum Command {
    Open {
        room: RoomId,
        person: Person,
        outbound: mpsc::Sender<Queued>,
        reply: oneshot::Sender<(ConnectionId, ByteString)>,
    },
    Close {
        conn: ConnectionId,
    },
    Typing {
        conn: ConnectionId,
        typing: bool,
    },
    Remote(Box<Event>),
    Stop {
        reply: oneshot::Sender<()>,
    },
    Stats {
        reply: oneshot::Sender<PresenceStats>,
    },
}

/// A snapshot for health checks, metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresenceStats {
    pub connections: usize,
    pub rooms: usize,
    /// Sockets closed so far because their queue was full.
    pub slow_disconnects: u64,
}

/// The way into the presence task.
#[derive(Clone)]
pub struct PresenceHandle {
    tx: mpsc::Sender<Command>,
    pub config: Arc<PresenceConfig>,
}

impl PresenceHandle {
    /// Starts the presence task for this node, publishing through `pubsub`.
    pub fn start(pubsub: PubSub, config: PresenceConfig) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let (outgoing, to_publish) = mpsc::channel(1024);
        let node = NodeId::random();
        tokio::spawn(publish_events(pubsub, to_publish));
        let config = Arc::new(config);
        let server = Server {
            node,
            config: config.clone(),
            presence: Presence::default(),
            conns: HashMap::new(),
            rooms: HashMap::new(),
            buckets: HashMap::new(),
            outgoing,
            next_id: AtomicU64::new(1),
            stopped: false,
            slow_disconnects: 0,
            opened: Vec::new(),
        };
        tokio::spawn(server.run(rx));
        Self { tx, config }
    }

    /// Registers a socket in `room`; returns its id and the `presence_state` frame to send first.
    pub async fn open(
        &self,
        room: RoomId,
        person: Person,
        outbound: mpsc::Sender<Queued>,
    ) -> Option<(ConnectionId, ByteString)> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Open {
            room,
            person,
            outbound,
            reply,
        };
        self.tx.send(command).await.ok()?;
        answer.await.ok()
    }

    pub async fn close(&self, conn: ConnectionId) {
        let _ = self.tx.send(Command::Close { conn }).await;
    }

    pub async fn typing(&self, conn: ConnectionId, typing: bool) {
        let _ = self.tx.send(Command::Typing { conn, typing }).await;
    }

    /// Events from another node, as the pub/sub adapter received them (see [`protocol::pack`]).
    pub async fn remote(&self, payload: &str) {
        match protocol::unpack(payload) {
            Ok(events) => {
                for event in events {
                    let _ = self.tx.send(Command::Remote(Box::new(event))).await;
                }
            }
            Err(err) => tracing::warn!(error = %err, "dropping an unreadable presence event"),
        }
    }

    /// Tells the other nodes this one is leaving, so its people leave everyone's lists at once.
    pub async fn stop(&self) {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Command::Stop { reply }).await.is_ok() {
            let _ = answer.await;
        }
    }

    pub async fn stats(&self) -> PresenceStats {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Command::Stats { reply }).await.is_err() {
            return PresenceStats::default();
        }
        answer.await.unwrap_or_default()
    }
}

/// Publishes events in order, off the presence task, so a slow backend never stalls it. The
/// events waiting when one is published go out together, packed into as few messages as the
/// adapters carry as they are (see [`protocol::pack`] and [`pubsub::INLINE_LIMIT`]).
async fn publish_events(pubsub: PubSub, mut events: mpsc::Receiver<Event>) {
    let envelope = Envelope::new(Topic::Presence, STREAM, "").encode().len();
    let limit = pubsub::INLINE_LIMIT - envelope;
    let mut waiting = Vec::new();
    while events.recv_many(&mut waiting, PUBLISHED_AT_ONCE).await > 0 {
        let stop = waiting
            .iter()
            .any(|event| matches!(event, Event::Bye { .. }));
        let encoded = waiting
            .drain(..)
            .filter_map(|event| match serde_json::to_string(&event) {
                Ok(encoded) => Some(encoded),
                Err(err) => {
                    tracing::error!(error = %err, "cannot encode a presence event");
                    None
                }
            });
        for payload in protocol::pack(encoded, limit) {
            if let Err(err) = pubsub
                .publish(Envelope::new(Topic::Presence, STREAM, payload))
                .await
            {
                // Heartbeats carry the whole picture every few seconds, so a lost event heals.
                tracing::warn!(error = %err, "presence events not published");
            }
        }
        if stop {
            break;
        }
    }
}

struct Socket {
    room: RoomId,
    person: Person,
    outbound: mpsc::Sender<Queued>,
}

/// A token bucket: bursts up to `burst`, then `per_second`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A socket registered but not yet answered: it gets its room's list once the batch of
/// commands it came in is handled.
struct Opened {
    conn: ConnectionId,
    room: RoomId,
    reply: oneshot::Sender<(ConnectionId, ByteString)>,
}

struct Server {
    node: NodeId,
    config: Arc<PresenceConfig>,
    presence: Presence,
    conns: HashMap<ConnectionId, Socket>,
    rooms: HashMap<RoomId, HashSet<ConnectionId>>,
    buckets: HashMap<UserId, Bucket>,
    outgoing: mpsc::Sender<Event>,
    next_id: AtomicU64,
    /// Set once this node has said goodbye: it no longer speaks for itself.
    stopped: bool,
    slow_disconnects: u64,
    opened: Vec<Opened>,
}

impl Server {
    /// Handles commands as they come. Whatever else is already waiting when one arrives is
    /// handled with it (up to [`BATCH`]), and only then are the sockets opened among them sent
    /// their room's `presence_state`, built once per room: when a crowd joins one room at once,
    /// the list is serialized once per batch rather than once per person, which made the flood
    /// quadratic (500 joins wrote 4.6 MB of lists).
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        self.announce(Event::Sync { node: self.node });
        let mut flush = tokio::time::interval(self.config.flush_interval);
        let mut heartbeat = tokio::time::interval(self.config.heartbeat_interval);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    Some(command) => {
                        self.handle(command);
                        for _ in 1..BATCH {
                            match rx.try_recv() {
                                Ok(command) => self.handle(command),
                                Err(_) => break,
                            }
                        }
                        self.answer_opened();
                    }
                    None => break,
                },
                _ = flush.tick() => self.flush(),
                _ = heartbeat.tick() => self.heartbeat(),
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Open {
                room,
                person,
                outbound,
                reply,
            } => {
                let conn = ConnectionId(self.next_id.fetch_add(1, Ordering::Relaxed));
                if self.presence.open_tab(room, &person) {
                    self.announce(Event::Join {
                        node: self.node,
                        room,
                        person: person.clone(),
                    });
                }
                self.rooms.entry(room).or_default().insert(conn);
                self.conns.insert(
                    conn,
                    Socket {
                        room,
                        person,
                        outbound,
                    },
                );
                self.opened.push(Opened { conn, room, reply });
            }
            Command::Close { conn } => self.close(conn),
            Command::Typing { conn, typing } => self.local_typing(conn, typing),
            Command::Remote(event) => self.remote(*event),
            Command::Stats { reply } => {
                let _ = reply.send(PresenceStats {
                    connections: self.conns.len(),
                    rooms: self.presence.room_count(),
                    slow_disconnects: self.slow_disconnects,
                });
            }
            Command::Stop { reply } => {
                self.announce(Event::Bye { node: self.node });
                self.stopped = true;
                let _ = reply.send(());
                // Keep serving sockets until they close; just stop speaking for the node.
            }
        }
    }

    /// Sends each socket opened since the last call its room's list, built once per room. A
    /// socket that is gone by now (its task ended while waiting) leaves again at once.
    fn answer_opened(&mut self) {
        if self.opened.is_empty() {
            return;
        }
        let mut lists: HashMap<RoomId, ByteString> = HashMap::new();
        for Opened { conn, room, reply } in std::mem::take(&mut self.opened) {
            let list = lists
                .entry(room)
                .or_insert_with(|| protocol::presence_state(&self.presence.people(room)).into());
            if reply.send((conn, list.clone())).is_err() {
                self.close(conn);
            }
        }
    }

    fn announce(&self, event: Event) {
        if self.stopped {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.outgoing.try_send(event) {
            tracing::warn!("presence publish queue full: an event waits for the next heartbeat");
        }
    }

    fn close(&mut self, conn: ConnectionId) {
        let Some(socket) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(conns) = self.rooms.get_mut(&socket.room) {
            conns.remove(&conn);
            if conns.is_empty() {
                self.rooms.remove(&socket.room);
            }
        }
        if self.presence.close_tab(socket.room, socket.person.id) {
            self.announce(Event::Leave {
                node: self.node,
                room: socket.room,
                user: socket.person.id,
            });
            self.buckets.remove(&socket.person.id);
        }
    }

    /// A typing event from one of our sockets: rate-limited per person, excess dropped.
    fn local_typing(&mut self, conn: ConnectionId, typing: bool) {
        let Some(socket) = self.conns.get(&conn) else {
            return;
        };
        let (room, person) = (socket.room, socket.person.clone());
        let now = Instant::now();
        let config = &self.config;
        let bucket = self.buckets.entry(person.id).or_insert(Bucket {
            tokens: config.typing_burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * config.typing_per_second;
        bucket.tokens = (bucket.tokens + refill).min(config.typing_burst);
        bucket.at = now;
        // A "stopped typing" always passes: it can only clear an indicator, and letting it
        // through means a burst never leaves someone shown as typing until the expiry.
        if typing && bucket.tokens < 1.0 {
            tracing::debug!(
                user = person.id.0,
                "typing event over the rate limit, dropped"
            );
            return;
        }
        if typing {
            bucket.tokens -= 1.0;
        }
        self.apply_typing(room, &person, typing);
        self.announce(Event::Typing {
            node: self.node,
            room,
            person,
            typing,
        });
    }

    /// Records typing and relays news of it to this node's sockets in the room, except the
    /// typist's own tabs.
    fn apply_typing(&mut self, room: RoomId, person: &Person, typing: bool) {
        let until = Instant::now() + self.config.typing_ttl;
        if self.presence.typing(room, person.id, typing, until) {
            self.send_to_room(room, &protocol::typing(person, typing), Some(person.id));
        }
    }

    fn remote(&mut self, event: Event) {
        if event.node() == self.node {
            return;
        }
        let now = Instant::now();
        match event {
            Event::Join { node, room, person } => {
                self.presence.remote_join(node, room, person, now)
            }
            Event::Leave { node, room, user } => self.presence.remote_leave(node, room, user, now),
            Event::Typing {
                room,
                person,
                typing,
                ..
            } => self.apply_typing(room, &person, typing),
            Event::Heartbeat { node, rooms } => {
                self.presence
                    .heartbeat(node, rooms.into_iter().collect(), now)
            }
            Event::Bye { node } => self.presence.forget_node(node),
            Event::Sync { .. } => self.heartbeat(),
        }
    }

    fn heartbeat(&mut self) {
        self.announce(Event::Heartbeat {
            node: self.node,
            rooms: self.presence.local_snapshot().into_iter().collect(),
        });
        let gone = self
            .presence
            .expire_nodes(Instant::now(), self.config.node_timeout);
        for node in gone {
            tracing::info!(node = node.0, "a node went quiet; its people left");
        }
    }

    fn flush(&mut self) {
        for (room, person) in self.presence.expire_typing(Instant::now()) {
            self.send_to_room(room, &protocol::typing(&person, false), Some(person.id));
        }
        for diff in self.presence.flush() {
            let frame = protocol::presence_diff(&diff.joins, &diff.leaves);
            self.send_to_room(diff.room, &frame, None);
        }
    }

    /// Queues one frame, built once, for every socket in `room` (but `except` a person's own).
    fn send_to_room(&mut self, room: RoomId, frame: &str, except: Option<UserId>) {
        let Some(conns) = self.rooms.get(&room) else {
            return;
        };
        let frame = Arc::new(ByteString::from(frame));
        let mut slow = Vec::new();
        for conn in conns {
            let Some(socket) = self.conns.get(conn) else {
                continue;
            };
            if Some(socket.person.id) == except {
                continue;
            }
            match socket.outbound.try_send(frame.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => slow.push((*conn, true)),
                Err(mpsc::error::TrySendError::Closed(_)) => slow.push((*conn, false)),
            }
        }
        for (conn, fell_behind) in slow {
            if fell_behind {
                tracing::warn!(conn = conn.0, "closing a presence socket that fell behind");
                self.slow_disconnects += 1;
            }
            self.close(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{FutureExt, future::join_all};

    use super::*;
    use crate::pubsub::{HistoryWindow, InProcess};

    fn handle() -> (PresenceHandle, mpsc::Receiver<Envelope>) {
        let (inbox, published) = mpsc::channel(1024);
        let pubsub = PubSub::InProcess(InProcess::new(HistoryWindow::default(), inbox));
        (
            PresenceHandle::start(pubsub, PresenceConfig::default()),
            published,
        )
    }

    fn person(id: u64) -> Person {
        Person {
            id: UserId(id),
            name: format!("person {id:02}"),
        }
    }

    /// Opens a socket for `person(id)` in `room`: its `presence_state`, and its queue, which
    /// must be kept for the socket to stay in the room.
    async fn open(
        presence: &PresenceHandle,
        room: RoomId,
        id: u64,
    ) -> (ByteString, mpsc::Receiver<Queued>) {
        let (outbound, queued) = mpsc::channel(8);
        let (_, list) = presence.open(room, person(id), outbound).await.unwrap();
        (list, queued)
    }

    /// Opens sockets for people 1 to `n` in `room` at once: their lists, and their queues.
    async fn open_crowd(
        presence: &PresenceHandle,
        room: RoomId,
        n: u64,
    ) -> (Vec<ByteString>, Vec<mpsc::Receiver<Queued>>) {
        join_all((1..=n).map(|id| open(presence, room, id)))
            .await
            .into_iter()
            .unzip()
    }

    fn listed(frame: &str) -> Vec<u64> {
        let frame: serde_json::Value = serde_json::from_str(frame).unwrap();
        assert_eq!(frame["type"], "presence_state");
        frame["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|user| user["id"].as_u64().unwrap())
            .collect()
    }

    /// On this single-threaded runtime every open is queued before the presence task runs, so
    /// they arrive as one batch: everyone gets the same list, the whole crowd, built once.
    #[tokio::test]
    async fn sockets_opening_together_get_one_list_with_everyone_in_it() {
        let (presence, _published) = handle();
        let room = RoomId(1);
        let (lists, _queues) = open_crowd(&presence, room, 50).await;
        let everyone: Vec<u64> = (1..=50).collect();
        for list in &lists {
            assert_eq!(listed(list), everyone);
            assert_eq!(list.as_ptr(), lists[0].as_ptr(), "the same bytes, shared");
        }

        // One who opens later gets the list as it is then, and a room of their own is theirs.
        let (list, _late) = open(&presence, room, 51).await;
        assert_eq!(listed(&list).len(), 51);
        let (list, _alone) = open(&presence, RoomId(2), 52).await;
        assert_eq!(listed(&list), vec![52]);
    }

    /// A crowd opening on one node reaches the others packed into a few messages, which they
    /// unpack into everyone.
    #[tokio::test]
    async fn a_crowd_joining_on_one_node_reaches_another_in_a_few_messages() {
        let (here, mut published) = handle();
        let (there, _) = handle();
        let room = RoomId(1);
        let (_, _queues) = open_crowd(&here, room, 50).await;

        let (mut joins, mut messages) = (0, 0);
        while joins < 50 {
            let envelope = tokio::time::timeout(Duration::from_secs(5), published.recv())
                .await
                .expect("the joins are published")
                .unwrap();
            let events = protocol::unpack(&envelope.payload).unwrap();
            let joined = events
                .iter()
                .filter(|e| matches!(e, Event::Join { .. }))
                .count();
            if joined > 0 {
                joins += joined;
                messages += 1;
            }
            there.remote(&envelope.payload).await;
        }
        assert!(messages < 5, "50 joins took {messages} messages");

        let (list, _newcomer) = open(&there, room, 51).await;
        assert_eq!(listed(&list), (1..=51).collect::<Vec<u64>>());
    }

    /// A socket whose task ended while it waited for its list leaves again: it is not left
    /// behind as a ghost in the room.
    #[tokio::test]
    async fn a_socket_gone_before_its_answer_leaves_the_room() {
        let (presence, _published) = handle();
        let room = RoomId(1);
        let (outbound, _queued) = mpsc::channel(8);
        // Polled once, so the open is queued, then dropped before the answer comes.
        assert!(
            presence
                .open(room, person(1), outbound)
                .now_or_never()
                .is_none()
        );
        tokio::task::yield_now().await;
        assert_eq!(presence.stats().await.connections, 0);

        let (list, _next) = open(&presence, room, 2).await;
        assert_eq!(listed(&list), vec![2]);
        assert_eq!(presence.stats().await.connections, 1);
    }
}
