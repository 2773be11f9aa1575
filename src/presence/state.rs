//! Who is in which room, across every process: pure bookkeeping, no I/O, so every rule can be
//! unit-tested. A person is present while at least one tab is open on any process (a "node").
//! This node's tabs are counted exactly; other nodes' people arrive as join/leave events and as
//! periodic snapshots (heartbeats) that also heal anything missed, and a node that goes quiet
//! is dropped with all its people.
//!
//! Changes mark a room dirty; [`Presence::flush`] turns everything that changed since the last
//! flush into one diff per room, so a storm of joins reaches each client as a few batched diffs.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::models::{RoomId, UserId};

/// A server process, identified afresh each time it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl NodeId {
    pub fn random() -> Self {
        Self(rand::random())
    }
}

/// A person as the presence frames show them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Person {
    pub id: UserId,
    pub name: String,
}

/// A person as a `presence_state` frame lists them, borrowed from the room's state: a room's
/// list is built whenever sockets open in it, and copying every name into each list made a
/// flood of joins into one room quadratic in allocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PersonRef<'a> {
    pub id: UserId,
    pub name: &'a str,
}

/// What changed in one room since the last flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    pub room: RoomId,
    pub joins: Vec<Person>,
    pub leaves: Vec<Person>,
}

#[derive(Debug, Default)]
struct RoomState {
    /// This node's people and how many tabs each has open.
    local: HashMap<UserId, (String, u32)>,
    /// Other nodes' people.
    remote: HashMap<NodeId, HashMap<UserId, String>>,
    /// What this node's clients were last told: the base every diff is computed against.
    announced: BTreeMap<UserId, String>,
    /// Who is typing, until when.
    typing: HashMap<UserId, Instant>,
    dirty: bool,
}

impl RoomState {
    fn visible(&self) -> BTreeMap<UserId, String> {
        let mut people: BTreeMap<UserId, String> = self
            .remote
            .values()
            .flat_map(|users| users.iter().map(|(id, name)| (*id, name.clone())))
            .collect();
        people.extend(self.local.iter().map(|(id, (name, _))| (*id, name.clone())));
        people
    }

    fn is_empty(&self) -> bool {
        self.local.is_empty()
            && self.remote.is_empty()
            && self.announced.is_empty()
            && self.typing.is_empty()
    }
}

/// The presence of every room this node knows about.
#[derive(Debug, Default)]
pub struct Presence {
    rooms: HashMap<RoomId, RoomState>,
    /// Other nodes, and when each was last heard from.
    nodes: HashMap<NodeId, Instant>,
}

impl Presence {
    /// Who is in `room` now, sorted by name (then id). Someone with tabs here and on another
    /// node is listed once, under the name this node has for them.
    pub fn people(&self, room: RoomId) -> Vec<PersonRef<'_>> {
        let Some(state) = self.rooms.get(&room) else {
            return Vec::new();
        };
        let local = state.local.iter().map(|(id, (name, _))| (id, name));
        let remote = state.remote.values().flat_map(|users| users.iter());
        let mut people: Vec<PersonRef<'_>> = local
            .chain(remote)
            .map(|(id, name)| PersonRef { id: *id, name })
            .collect();
        // A stable sort keeps this node's entry first among those with the same id.
        people.sort_by_key(|p| p.id);
        people.dedup_by_key(|p| p.id);
        people.sort_unstable_by(|a, b| a.name.cmp(b.name).then(a.id.cmp(&b.id)));
        people
    }

    /// A tab opened here. Returns true when it is the person's first tab on this node.
    pub fn open_tab(&mut self, room: RoomId, person: &Person) -> bool {
        let state = self.rooms.entry(room).or_default();
        let entry = state
            .local
            .entry(person.id)
            .or_insert_with(|| (person.name.clone(), 0));
        entry.1 += 1;
        state.dirty = true;
        entry.1 == 1
    }

    /// A tab closed here. Returns true when it was the person's last tab on this node.
    pub fn close_tab(&mut self, room: RoomId, user: UserId) -> bool {
        let Some(state) = self.rooms.get_mut(&room) else {
            return false;
        };
        let Some(entry) = state.local.get_mut(&user) else {
            return false;
        };
        entry.1 -= 1;
        if entry.1 > 0 {
            return false;
        }
        state.local.remove(&user);
        state.dirty = true;
        true
    }

    /// Another node says `person` joined `room` there.
    pub fn remote_join(&mut self, node: NodeId, room: RoomId, person: Person, now: Instant) {
        self.nodes.insert(node, now);
        let state = self.rooms.entry(room).or_default();
        state
            .remote
            .entry(node)
            .or_default()
            .insert(person.id, person.name);
        state.dirty = true;
    }

    /// Another node says `user` left `room` there.
    pub fn remote_leave(&mut self, node: NodeId, room: RoomId, user: UserId, now: Instant) {
        self.nodes.insert(node, now);
        let Some(state) = self.rooms.get_mut(&room) else {
            return;
        };
        if let Some(users) = state.remote.get_mut(&node) {
            if users.remove(&user).is_some() {
                state.dirty = true;
            }
            if users.is_empty() {
                state.remote.remove(&node);
            }
        }
    }

    /// Another node's full picture of its own people: replaces whatever we held for it.
    pub fn heartbeat(&mut self, node: NodeId, rooms: HashMap<RoomId, Vec<Person>>, now: Instant) {
        self.nodes.insert(node, now);
        for (room, state) in &mut self.rooms {
            if !rooms.contains_key(room) && state.remote.remove(&node).is_some() {
                state.dirty = true;
            }
        }
        for (room, people) in rooms {
            let users: HashMap<UserId, String> =
                people.into_iter().map(|p| (p.id, p.name)).collect();
            let state = self.rooms.entry(room).or_default();
            if state.remote.get(&node) != Some(&users) {
                state.remote.insert(node, users);
                state.dirty = true;
            }
        }
    }

    /// Forgets everything `node` contributed (it stopped, or went quiet).
    pub fn forget_node(&mut self, node: NodeId) {
        self.nodes.remove(&node);
        for state in self.rooms.values_mut() {
            if state.remote.remove(&node).is_some() {
                state.dirty = true;
            }
        }
    }

    /// Drops the nodes not heard from within `timeout`; returns them.
    pub fn expire_nodes(&mut self, now: Instant, timeout: Duration) -> Vec<NodeId> {
        let quiet: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, heard)| now.duration_since(**heard) > timeout)
            .map(|(node, _)| *node)
            .collect();
        for node in &quiet {
            self.forget_node(*node);
        }
        quiet
    }

    /// This node's own people, room by room, for heartbeats.
    pub fn local_snapshot(&self) -> HashMap<RoomId, Vec<Person>> {
        self.rooms
            .iter()
            .filter(|(_, state)| !state.local.is_empty())
            .map(|(room, state)| {
                let people = state
                    .local
                    .iter()
                    .map(|(id, (name, _))| Person {
                        id: *id,
                        name: name.clone(),
                    })
                    .collect();
                (*room, people)
            })
            .collect()
    }

    /// Records a typing event. Returns whether it is news (a start, or a stop of someone who
    /// was typing); a repeated "still typing" only extends the expiry.
    pub fn typing(&mut self, room: RoomId, user: UserId, typing: bool, until: Instant) -> bool {
        let state = self.rooms.entry(room).or_default();
        if typing {
            state.typing.insert(user, until).is_none()
        } else {
            state.typing.remove(&user).is_some()
        }
    }

    /// Typing indicators whose "stop" never came: cleared, and returned so clients can be told.
    pub fn expire_typing(&mut self, now: Instant) -> Vec<(RoomId, Person)> {
        let mut expired = Vec::new();
        for (room, state) in &mut self.rooms {
            let visible = state.visible();
            state.typing.retain(|user, until| {
                let keep = *until > now && visible.contains_key(user);
                if !keep && let Some(name) = visible.get(user).or(state.announced.get(user)) {
                    expired.push((
                        *room,
                        Person {
                            id: *user,
                            name: name.clone(),
                        },
                    ));
                }
                keep
            });
        }
        expired
    }

    /// One diff per room that changed since the last flush; rooms nobody is in are forgotten.
    pub fn flush(&mut self) -> Vec<Diff> {
        let mut diffs = Vec::new();
        for (room, state) in &mut self.rooms {
            if !state.dirty {
                continue;
            }
            state.dirty = false;
            let now = state.visible();
            let joins: Vec<Person> = now
                .iter()
                .filter(|(id, name)| state.announced.get(id) != Some(name))
                .map(|(id, name)| Person {
                    id: *id,
                    name: name.clone(),
                })
                .collect();
            let leaves: Vec<Person> = state
                .announced
                .iter()
                .filter(|(id, _)| !now.contains_key(id))
                .map(|(id, name)| Person {
                    id: *id,
                    name: name.clone(),
                })
                .collect();
            for left in &leaves {
                state.typing.remove(&left.id);
            }
            state.announced = now;
            if !joins.is_empty() || !leaves.is_empty() {
                diffs.push(Diff {
                    room: *room,
                    joins,
                    leaves,
                });
            }
        }
        self.rooms.retain(|_, state| !state.is_empty());
        diffs
    }

    /// Rooms this node holds any state for (for tests and metrics).
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: RoomId = RoomId(1);

    fn person(id: u64, name: &str) -> Person {
        Person {
            id: UserId(id),
            name: name.into(),
        }
    }

    fn listed(p: &Presence) -> Vec<Person> {
        p.people(ROOM)
            .into_iter()
            .map(|p| person(p.id.0, p.name))
            .collect()
    }

    #[test]
    fn a_person_with_several_tabs_is_listed_once_and_leaves_with_the_last() {
        let mut p = Presence::default();
        let ada = person(1, "Ada");
        assert!(p.open_tab(ROOM, &ada));
        assert!(!p.open_tab(ROOM, &ada));
        assert_eq!(listed(&p), vec![ada.clone()]);
        assert_eq!(
            p.flush(),
            vec![Diff {
                room: ROOM,
                joins: vec![ada.clone()],
                leaves: vec![]
            }]
        );
        assert!(!p.close_tab(ROOM, ada.id));
        assert_eq!(p.flush(), vec![], "one tab still open");
        assert!(p.close_tab(ROOM, ada.id));
        assert_eq!(
            p.flush(),
            vec![Diff {
                room: ROOM,
                joins: vec![],
                leaves: vec![ada]
            }]
        );
        assert_eq!(p.room_count(), 0, "an empty room is forgotten");
    }

    #[test]
    fn a_storm_of_joins_and_leaves_flushes_as_one_diff() {
        let mut p = Presence::default();
        for i in 0..300 {
            p.open_tab(ROOM, &person(i, &format!("user{i}")));
        }
        for i in 0..100 {
            p.close_tab(ROOM, UserId(i));
        }
        let diffs = p.flush();
        assert_eq!(diffs.len(), 1);
        assert_eq!(
            diffs[0].joins.len(),
            200,
            "who came and went unseen is not announced"
        );
        assert!(diffs[0].leaves.is_empty());
    }

    #[test]
    fn people_on_other_nodes_are_merged_and_someone_on_two_nodes_is_listed_once() {
        let mut p = Presence::default();
        let now = Instant::now();
        p.open_tab(ROOM, &person(1, "Ada"));
        p.remote_join(NodeId(7), ROOM, person(1, "Ada"), now);
        p.remote_join(NodeId(7), ROOM, person(2, "Grace"), now);
        assert_eq!(listed(&p), vec![person(1, "Ada"), person(2, "Grace")]);
        p.flush();
        p.close_tab(ROOM, UserId(1));
        assert_eq!(p.flush(), vec![], "Ada is still present on node 7");
        p.remote_leave(NodeId(7), ROOM, UserId(1), now);
        assert_eq!(p.flush()[0].leaves, vec![person(1, "Ada")]);
    }

    #[test]
    fn the_list_is_sorted_by_name_then_id_and_this_nodes_name_wins() {
        let mut p = Presence::default();
        let now = Instant::now();
        p.remote_join(NodeId(7), ROOM, person(3, "Bob"), now);
        p.remote_join(NodeId(7), ROOM, person(1, "Ada (before a rename)"), now);
        p.remote_join(NodeId(8), ROOM, person(2, "Bob"), now);
        p.remote_join(NodeId(8), ROOM, person(1, "Ada (before a rename)"), now);
        p.open_tab(ROOM, &person(1, "Zed"));
        assert_eq!(
            listed(&p),
            vec![person(2, "Bob"), person(3, "Bob"), person(1, "Zed")]
        );
        assert_eq!(p.people(RoomId(2)), vec![], "a room nobody is in");
    }

    #[test]
    fn a_heartbeat_replaces_what_a_node_said_before_and_heals_missed_events() {
        let mut p = Presence::default();
        let now = Instant::now();
        p.remote_join(NodeId(7), ROOM, person(1, "Ada"), now);
        p.flush();
        // The leave of Ada and the join of Grace were missed; the snapshot brings both.
        let snapshot = HashMap::from([(ROOM, vec![person(2, "Grace")])]);
        p.heartbeat(NodeId(7), snapshot, now);
        let diff = p.flush().remove(0);
        assert_eq!(diff.joins, vec![person(2, "Grace")]);
        assert_eq!(diff.leaves, vec![person(1, "Ada")]);
        p.heartbeat(NodeId(7), HashMap::new(), now);
        assert_eq!(p.flush()[0].leaves, vec![person(2, "Grace")]);
    }

    #[test]
    fn a_quiet_node_is_dropped_with_its_people_and_a_stopped_one_at_once() {
        let mut p = Presence::default();
        let start = Instant::now();
        p.remote_join(NodeId(7), ROOM, person(1, "Ada"), start);
        p.remote_join(NodeId(8), ROOM, person(2, "Grace"), start);
        p.flush();
        p.heartbeat(
            NodeId(8),
            HashMap::from([(ROOM, vec![person(2, "Grace")])]),
            start + Duration::from_secs(5),
        );
        let gone = p.expire_nodes(start + Duration::from_secs(7), Duration::from_secs(6));
        assert_eq!(gone, vec![NodeId(7)]);
        assert_eq!(p.flush()[0].leaves, vec![person(1, "Ada")]);
        p.forget_node(NodeId(8));
        assert_eq!(p.flush()[0].leaves, vec![person(2, "Grace")]);
    }

    #[test]
    fn typing_expires_by_itself_and_a_repeat_only_extends_it() {
        let mut p = Presence::default();
        let now = Instant::now();
        let ada = person(1, "Ada");
        p.open_tab(ROOM, &ada);
        assert!(p.typing(ROOM, ada.id, true, now + Duration::from_secs(5)));
        assert!(!p.typing(ROOM, ada.id, true, now + Duration::from_secs(6)));
        assert_eq!(p.expire_typing(now + Duration::from_secs(5)), vec![]);
        assert_eq!(
            p.expire_typing(now + Duration::from_secs(7)),
            vec![(ROOM, ada.clone())]
        );
        assert!(!p.typing(ROOM, ada.id, false, now), "already stopped");
        assert!(p.typing(ROOM, ada.id, true, now + Duration::from_secs(5)));
        assert!(p.typing(ROOM, ada.id, false, now));
    }

    #[test]
    fn the_local_snapshot_lists_only_this_nodes_people() {
        let mut p = Presence::default();
        p.open_tab(ROOM, &person(1, "Ada"));
        p.remote_join(NodeId(7), RoomId(2), person(2, "Grace"), Instant::now());
        let snapshot = p.local_snapshot();
        assert_eq!(snapshot.len(), 1);
        assert_eq!(snapshot[&ROOM], vec![person(1, "Ada")]);
    }
}
