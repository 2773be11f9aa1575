//! The presence socket's JSON frames, and the events nodes exchange through the pub/sub adapter.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::state::{NodeId, Person, PersonRef};
use crate::models::{RoomId, UserId};

/// A frame from a browser.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    Typing(bool),
}

/// Why a client frame was refused; sent back as `{"type":"error","reason":...}`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frames must be JSON objects with a type")]
    Malformed,
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    #[error("typing frames need \"typing\": true or false")]
    BadTyping,
}

#[derive(Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    kind: String,
    typing: Option<serde_json::Value>,
}

impl ClientFrame {
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        // serde reads a struct from an array of its fields too (`["typing", true]`).
        if !text
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{')
        {
            return Err(FrameError::Malformed);
        }
        let raw: RawFrame = serde_json::from_str(text).map_err(|_| FrameError::Malformed)?;
        match raw.kind.as_str() {
            "typing" => match raw.typing {
                Some(serde_json::Value::Bool(typing)) => Ok(ClientFrame::Typing(typing)),
                _ => Err(FrameError::BadTyping),
            },
            _ => Err(FrameError::UnknownType(raw.kind)),
        }
    }
}

/// The frames that list people, serialized straight from the list: through `json!` each
/// person became a map of `Value`s first, and a join sends the whole room's list.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum PeopleFrame<'a, P> {
    PresenceState { users: &'a [P] },
    PresenceDiff { joins: &'a [P], leaves: &'a [P] },
}

impl<P: Serialize> PeopleFrame<'_, P> {
    fn to_json(&self) -> String {
        // Serializing string keys and plain data into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

pub fn presence_state(people: &[PersonRef<'_>]) -> String {
    PeopleFrame::PresenceState { users: people }.to_json()
}

pub fn presence_diff(joins: &[Person], leaves: &[Person]) -> String {
    PeopleFrame::PresenceDiff { joins, leaves }.to_json()
}

pub fn typing(person: &Person, typing: bool) -> String {
    json!({"type": "typing", "user": person, "typing": typing}).to_string()
}

pub fn error(reason: &str) -> String {
    json!({"type": "error", "reason": reason}).to_string()
}

/// What one node tells the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// Someone's first tab in a room opened on `node`.
    Join {
        node: NodeId,
        room: RoomId,
        person: Person,
    },
    /// Someone's last tab in a room on `node` closed.
    Leave {
        node: NodeId,
        room: RoomId,
        user: UserId,
    },
    Typing {
        node: NodeId,
        room: RoomId,
        person: Person,
        typing: bool,
    },
    /// Everyone `node` has, room by room; sent every few seconds and on request. A list of
    /// pairs rather than a map: JSON object keys are strings, and serde's internally tagged
    /// enums cannot read integers back out of them.
    Heartbeat {
        node: NodeId,
        rooms: Vec<(RoomId, Vec<Person>)>,
    },
    /// `node` is stopping: forget its people now.
    Bye { node: NodeId },
    /// `node` just started: please send your heartbeats now.
    Sync { node: NodeId },
}

/// Packs encoded events, in order, into as few payloads of at most `limit` bytes as they fit
/// (one event larger than that still travels, alone):
/// a payload of one event is that event's JSON object, as nodes have always sent them; one of
/// several is a JSON array of them. A crowd joining a room on one node then reaches the others
/// as a few messages instead of one `NOTIFY` (one transaction) per person. A node from before
/// arrays cannot read them and drops them; its view heals at the next heartbeat (2 s).
pub fn pack(encoded: impl IntoIterator<Item = String>, limit: usize) -> Vec<String> {
    // Each group with its length as an array: brackets, events and the commas between them.
    let mut groups: Vec<(Vec<String>, usize)> = Vec::new();
    for event in encoded {
        match groups.last_mut() {
            Some((group, len)) if *len + 1 + event.len() <= limit => {
                *len += 1 + event.len();
                group.push(event);
            }
            _ => {
                let len = event.len() + 2;
                groups.push((vec![event], len));
            }
        }
    }
    groups
        .into_iter()
        .map(|(mut group, _)| match group.as_mut_slice() {
            [one] => std::mem::take(one),
            _ => format!("[{}]", group.join(",")),
        })
        .collect()
}

/// The events in a payload [`pack`] made: one object, or an array of them.
pub fn unpack(payload: &str) -> Result<Vec<Event>, serde_json::Error> {
    if payload.trim_start().starts_with('[') {
        serde_json::from_str(payload)
    } else {
        serde_json::from_str(payload).map(|event| vec![event])
    }
}

impl Event {
    pub fn node(&self) -> NodeId {
        match self {
            Event::Join { node, .. }
            | Event::Leave { node, .. }
            | Event::Typing { node, .. }
            | Event::Heartbeat { node, .. }
            | Event::Bye { node }
            | Event::Sync { node } => *node,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_frames_parse_and_everything_else_is_a_clear_error() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"typing","typing":true}"#),
            Ok(ClientFrame::Typing(true))
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"typing","typing":false,"extra":1}"#),
            Ok(ClientFrame::Typing(false))
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"typing","typing":"yes"}"#),
            Err(FrameError::BadTyping)
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"typing"}"#),
            Err(FrameError::BadTyping)
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"dance"}"#),
            Err(FrameError::UnknownType("dance".into()))
        );
        for bad in [
            "",
            "[]",
            "null",
            "{",
            r#"{"typing":true}"#,
            r#"{"type":5}"#,
            r#"["typing",true]"#,
        ] {
            assert_eq!(ClientFrame::parse(bad), Err(FrameError::Malformed), "{bad}");
        }
    }

    #[test]
    fn people_frames_are_the_documented_json() {
        let people = [
            Person {
                id: UserId(1),
                name: "Ada \"A\"".into(),
            },
            Person {
                id: UserId(2),
                name: "Bob".into(),
            },
        ];
        let listed = people.each_ref().map(|p| PersonRef {
            id: p.id,
            name: &p.name,
        });
        assert_eq!(
            presence_state(&listed),
            r#"{"type":"presence_state","users":[{"id":1,"name":"Ada \"A\""},{"id":2,"name":"Bob"}]}"#
        );
        assert_eq!(
            presence_diff(&people[1..], &people[..1]),
            r#"{"type":"presence_diff","joins":[{"id":2,"name":"Bob"}],"leaves":[{"id":1,"name":"Ada \"A\""}]}"#
        );
        assert_eq!(
            presence_state(&[]),
            r#"{"type":"presence_state","users":[]}"#
        );
    }

    #[test]
    fn events_pack_in_order_into_payloads_within_the_limit() {
        let events: Vec<Event> = (0..200)
            .map(|i| Event::Join {
                node: NodeId(1),
                room: RoomId(7),
                person: Person {
                    id: UserId(i),
                    name: format!("person {i} \"quoted\" [bracketed]"),
                },
            })
            .collect();
        let encoded = || events.iter().map(|e| serde_json::to_string(e).unwrap());
        const LIMIT: usize = 7_000;
        let payloads = pack(encoded(), LIMIT);
        assert!(payloads.len() > 1, "200 joins do not fit in one payload");
        assert!(payloads.iter().all(|p| p.len() <= LIMIT));
        let unpacked: Vec<Event> = payloads.iter().flat_map(|p| unpack(p).unwrap()).collect();
        assert_eq!(unpacked, events);

        // One event is sent as it always was, an object; one over the limit still goes, alone.
        let one = pack(encoded().take(1), LIMIT);
        assert_eq!(one, vec![serde_json::to_string(&events[0]).unwrap()]);
        assert_eq!(unpack(&one[0]).unwrap(), vec![events[0].clone()]);
        let tiny = pack(encoded().take(3), 10);
        assert_eq!(tiny.len(), 3);
        assert_eq!(pack(Vec::new(), LIMIT), Vec::<String>::new());
        assert!(unpack("[{\"kind\":\"nope\"}]").is_err());
    }

    #[test]
    fn events_round_trip_through_json() {
        let person = Person {
            id: UserId(3),
            name: "Ada \"<b>\"".into(),
        };
        let events = [
            Event::Join {
                node: NodeId(1),
                room: RoomId(7),
                person: person.clone(),
            },
            Event::Heartbeat {
                node: NodeId(1),
                rooms: vec![(RoomId(7), vec![person])],
            },
            Event::Bye { node: NodeId(2) },
        ];
        for event in events {
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(
                serde_json::from_str::<Event>(&json).unwrap(),
                event,
                "{json}"
            );
        }
    }
}
