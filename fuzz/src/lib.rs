//! What each fuzz target checks, one function per target. The targets in `fuzz_targets/` call
//! these with libFuzzer's inputs, and the app's test suite (`tests/api/fuzz_corpus.rs`) replays
//! the files in `regressions/` through the same functions, so a fixed crash stays fixed.
//!
//! Every function takes raw bytes and panics when a property fails; a parser that panics on its
//! own fails the same way.

use std::rc::Rc;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use tasksync::{
    cable::{
        protocol::{Command, Identifier, Protocol},
        streams::StreamSigner,
    },
    form_guard::{FormParams, decode_form},
    models::{LockVersion, RoomId, Task, TaskChanges, TaskId, TaskNotes, TaskTitle, parse_flag},
    presence::protocol::{ClientFrame, FrameError},
};

/// Whether `text` is, as JSON, an object (and not, say, an array serde could also read a
/// struct from).
fn is_json_object(text: &str) -> bool {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => value.is_object(),
        // JSON that a `Value` cannot hold, such as `1e999` in a field the parser skips: the
        // first token says what it is.
        Err(_) => text
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{'),
    }
}

/// A cable frame, parsed under both protocols.
pub fn cable_command(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let plain = Command::parse(text, Protocol::ActionCable);
    let extended = Command::parse(text, Protocol::Extended);
    for parsed in [&plain, &extended] {
        match parsed {
            Ok(command) => {
                assert!(is_json_object(text), "accepted a non-object: {text:?}");
                // What the socket does next with a command: read its identifier.
                if let Some(identifier) = identifier(command) {
                    let _ = Identifier::parse(identifier);
                }
            }
            // The reason is logged and may be sent back.
            Err(error) => {
                let _ = error.to_string();
            }
        }
    }
    match &plain {
        Ok(Command::History { .. } | Command::Pong) => {
            panic!("an extended-only command in plain ActionCable: {plain:?}")
        }
        Ok(Command::Subscribe {
            identifier,
            history,
        }) => {
            assert!(history.is_none(), "plain ActionCable ignores history");
            assert!(
                matches!(&extended, Ok(Command::Subscribe { identifier: id, .. }) if id == identifier),
                "subscribes under one protocol only: {plain:?} / {extended:?}"
            );
        }
        Ok(Command::Unsubscribe { .. } | Command::Message { .. }) => {
            assert_eq!(plain, extended, "the protocols agree on these")
        }
        Err(_) => {}
    }
    let history_accepted = matches!(
        &extended,
        Ok(Command::History { .. }
            | Command::Subscribe {
                history: Some(Ok(_)),
                ..
            })
    );
    // (Unless a skipped field holds what a `Value` cannot, like `1e999`.)
    if history_accepted && let Ok(value) = serde_json::from_str::<Value>(text) {
        let history = &value["history"];
        assert!(history.is_object(), "accepted history {history}");
        if let Some(streams) = history["streams"].as_object() {
            assert!(
                streams.values().all(Value::is_object),
                "accepted positions {history}"
            );
        }
    }
}

fn identifier(command: &Command) -> Option<&str> {
    match command {
        Command::Subscribe { identifier, .. }
        | Command::Unsubscribe { identifier }
        | Command::Message { identifier }
        | Command::History { identifier, .. } => Some(identifier),
        Command::Pong => None,
    }
}

/// A subscription identifier: what parses, written back out as JSON (with the offset as a
/// number and as text), parses to the same thing.
pub fn cable_identifier(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(parsed) = Identifier::parse(text) else {
        return;
    };
    assert!(is_json_object(text), "accepted a non-object: {text:?}");
    let mut numeric = json!({ "channel": parsed.channel });
    if let Some(name) = &parsed.signed_stream_name {
        numeric["signed_stream_name"] = json!(name);
    }
    let mut textual = numeric.clone();
    if let Some(since) = &parsed.since {
        numeric["epoch"] = json!(since.epoch);
        numeric["offset"] = json!(since.offset);
        textual["epoch"] = json!(since.epoch);
        textual["offset"] = json!(since.offset.to_string());
    }
    for again in [numeric, textual] {
        assert_eq!(
            Identifier::parse(&again.to_string()).as_ref(),
            Some(&parsed),
            "{again}"
        );
    }
}

/// A presence socket frame: a typing frame is accepted only as the JSON object it claims to be.
pub fn presence_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClientFrame::parse(text) {
        Ok(ClientFrame::Typing(typing)) => {
            assert!(is_json_object(text), "accepted a non-object: {text:?}");
            // (Unless a skipped field holds what a `Value` cannot, like `1e999`.)
            if let Ok(value) = serde_json::from_str::<Value>(text) {
                assert_eq!(value["type"], "typing");
                assert_eq!(value["typing"], typing);
            }
        }
        Err(FrameError::UnknownType(kind)) => assert_ne!(kind, "typing"),
        Err(error) => {
            let _ = tasksync::presence::protocol::error(&error.to_string());
        }
    }
}

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const PREVIOUS: &str = "fedcba9876543210fedcba9876543210";

/// Signed stream names, from a signer that also accepts names signed under a previous secret.
///
/// The input is tried three ways: as a signed name (anything that verifies must be exactly what
/// one of the two secrets signs for that stream), and split at its first newline into a stream
/// name and edits. The name, signed under either secret, must verify to itself when it names a
/// room stream and to nothing otherwise; the signed name changed by the edits must verify to
/// nothing unless the edits left it as it was.
pub fn stream_name(data: &[u8]) {
    let current = StreamSigner::new(SECRET);
    let previous = StreamSigner::new(PREVIOUS);
    let signer = StreamSigner::rotating(SECRET, &[PREVIOUS.to_owned()]);

    if let Ok(token) = std::str::from_utf8(data)
        && let Some(stream) = signer.verify(token)
    {
        assert!(is_room_stream(&stream), "verified to {stream:?}");
        assert!(
            token == current.sign(&stream) || token == previous.sign(&stream),
            "{token:?} is not what we sign for {stream:?}"
        );
    }

    let (name, edits) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let name = String::from_utf8_lossy(name);
    let expected = is_room_stream(&name).then(|| name.to_string());
    for signed_with in [&current, &previous] {
        let signed = signed_with.sign(&name);
        assert_eq!(signer.verify(&signed), expected, "round trip of {signed:?}");
        let edited = edit(&signed, edits);
        if let Some(stream) = signer.verify(&edited) {
            assert_eq!(edited, signed, "an edited name verified");
            assert_eq!(Some(stream), expected);
        }
    }
}

/// The check the app makes after verifying: `rooms:<id>`.
fn is_room_stream(stream: &str) -> bool {
    stream
        .strip_prefix("rooms:")
        .and_then(RoomId::parse)
        .is_some()
}

/// `signed` changed by `edits`, four bytes an edit: what (replace, insert, remove), where (two
/// bytes, little-endian, wrapped to the length), and the byte to write.
fn edit(signed: &str, edits: &[u8]) -> String {
    let mut bytes = signed.as_bytes().to_vec();
    for chunk in edits.chunks_exact(4) {
        let at = usize::from(u16::from_le_bytes([chunk[1], chunk[2]]));
        match chunk[0] % 3 {
            0 if !bytes.is_empty() => {
                let at = at % bytes.len();
                bytes[at] = chunk[3];
            }
            1 => bytes.insert(at % (bytes.len() + 1), chunk[3]),
            2 if !bytes.is_empty() => {
                bytes.remove(at % bytes.len());
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A form body, decoded as the form guard does and then read into task fields as the tasks
/// controller does for `create` (title, notes) and `update` (lock version, done, title,
/// notes).
pub fn task_form(data: &[u8]) {
    let fields = match decode_form(data) {
        Ok(fields) => fields,
        Err(error) => {
            // Only bytes that are not UTF-8, sent as such or escaped, are refused.
            assert!(
                data.contains(&b'%') || std::str::from_utf8(data).is_err(),
                "refused {data:?}: {error}"
            );
            return;
        }
    };
    let encode = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let encoded: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect();
    let decoded = decode_form(encoded.join("&").as_bytes());
    assert_eq!(decoded.ok().as_ref(), Some(&fields), "re-encoded fields");

    let params = FormParams(Rc::new(fields));
    let last = |name: &str| {
        params
            .0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    for name in [
        "task[title]",
        "task[notes]",
        "task[done]",
        "task[lock_version]",
    ] {
        assert_eq!(params.get(name), last(name), "the last {name} wins");
    }

    let title = params.get("task[title]").map(|raw| {
        let parsed = TaskTitle::parse(raw);
        if let Ok(title) = &parsed {
            check_text(raw, title.as_str(), 1, TaskTitle::MAX, &[]);
            assert_eq!(TaskTitle::parse(title.as_str()).as_ref(), Ok(title));
        }
        parsed
    });
    let notes = params.get("task[notes]").map(|raw| {
        let parsed = TaskNotes::parse(raw);
        if let Ok(notes) = &parsed {
            check_text(raw, notes.as_str(), 0, TaskNotes::MAX, &['\n', '\t']);
            assert_eq!(TaskNotes::parse(notes.as_str()).as_ref(), Ok(notes));
        }
        parsed
    });
    let done = params.get("task[done]").map(|raw| {
        let flag = parse_flag(raw);
        let expected = match raw.trim() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        };
        assert_eq!(flag, expected, "task[done]={raw:?}");
        flag
    });
    let lock_version = params.get("task[lock_version]").map(|raw| {
        let version = LockVersion::parse(raw);
        if let Some(LockVersion(n)) = version {
            assert!(n >= 0, "lock version {n} from {raw:?}");
            assert_eq!(raw.trim().parse::<i64>(), Ok(n));
        }
        version
    });

    // An update whose every field parsed, against a task that already holds those values.
    if let Some(Some(lock_version)) = lock_version {
        let changes = TaskChanges {
            title: title.and_then(Result::ok),
            notes: notes.and_then(Result::ok),
            done: done.flatten(),
            lock_version,
        };
        let task = Task {
            id: TaskId(1),
            room_id: RoomId(1),
            title: changes
                .title
                .as_ref()
                .map_or("Ship", TaskTitle::as_str)
                .to_owned(),
            notes: changes
                .notes
                .as_ref()
                .map_or("", TaskNotes::as_str)
                .to_owned(),
            done: changes.done.unwrap_or(false),
            lock_version,
            updated_by: "Ada".to_owned(),
        };
        assert!(changes.already_applied_to(&task), "{changes:?}");
    }
}

/// A parsed text field: `raw` trimmed, within its length, with no control characters but the
/// `allowed` ones.
fn check_text(raw: &str, parsed: &str, min: usize, max: usize, allowed: &[char]) {
    assert_eq!(parsed, parsed.trim(), "{raw:?} parsed untrimmed");
    let len = parsed.chars().count();
    assert!((min..=max).contains(&len), "{raw:?} parsed to {len} chars");
    assert!(
        parsed
            .chars()
            .all(|c| !c.is_control() || allowed.contains(&c)),
        "{raw:?} parsed to {parsed:?}"
    );
}
