//! The ActionCable wire format (`actioncable-v1-json`) and AnyCable's extension of it
//! (`actioncable-v1-ext-json`): commands clients send and the frames the server answers with.
//! Frames are built with serde_json so every string is escaped properly.

use std::collections::HashMap;

use actix_web::http::header::{HeaderMap, SEC_WEBSOCKET_PROTOCOL};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The subprotocol of the stock ActionCable clients.
pub const SUBPROTOCOL: &str = "actioncable-v1-json";

/// AnyCable's extended protocol: session ids, stream positions on every broadcast, and
/// `history` requests that replay what a client missed.
pub const EXT_SUBPROTOCOL: &str = "actioncable-v1-ext-json";

/// The one channel tasksync serves.
pub const TURBO_STREAMS_CHANNEL: &str = "Turbo::StreamsChannel";

/// Which protocol a socket speaks, chosen in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    ActionCable,
    Extended,
}

impl Protocol {
    /// The extended protocol when the client offers it, wherever in its list: a client that
    /// offers it can use it, and WebSocket leaves the choice to the server. Otherwise plain
    /// ActionCable, also for clients that offer nothing, as before.
    pub fn offered(headers: &HeaderMap) -> Self {
        let extended = headers
            .get_all(SEC_WEBSOCKET_PROTOCOL)
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|name| name.trim() == EXT_SUBPROTOCOL);
        if extended {
            Protocol::Extended
        } else {
            Protocol::ActionCable
        }
    }

    /// The subprotocol name the handshake answers with (when the client offered it).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::ActionCable => SUBPROTOCOL,
            Protocol::Extended => EXT_SUBPROTOCOL,
        }
    }
}

/// A command from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `history` is what the extended protocol's client asks to be replayed right after the
    /// confirmation; a malformed one is the reason to log (the subscription still stands).
    Subscribe {
        identifier: String,
        history: Option<Result<HistoryRequest, CommandError>>,
    },
    Unsubscribe {
        identifier: String,
    },
    Message {
        identifier: String,
    },
    /// Extended protocol only.
    History {
        identifier: String,
        history: HistoryRequest,
    },
    /// Extended protocol only: the answer to a ping, from clients configured to send one.
    Pong,
}

/// Why a frame from a client is not a command we understand.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("the frame is not a JSON command: {0}")]
    Malformed(String),
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("malformed history request: {0}")]
    MalformedHistory(String),
}

#[derive(Deserialize)]
struct RawCommand {
    command: String,
    #[serde(default)]
    identifier: Option<String>,
    /// Kept unparsed: plain ActionCable ignores it, as it always has.
    #[serde(default)]
    history: Option<serde_json::Value>,
}

/// Whether `text` holds a JSON object, rather than, say, an array: serde reads a struct from an
/// array of its fields too (`["subscribe", "..."]`), and commands and identifiers are objects.
fn is_json_object(text: &str) -> bool {
    text.trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
}

impl Command {
    pub fn parse(text: &str, protocol: Protocol) -> Result<Self, CommandError> {
        if !is_json_object(text) {
            return Err(CommandError::Malformed("expected a JSON object".into()));
        }
        let raw: RawCommand =
            serde_json::from_str(text).map_err(|e| CommandError::Malformed(e.to_string()))?;
        let extended = protocol == Protocol::Extended;
        if extended && raw.command == "pong" {
            return Ok(Command::Pong);
        }
        let identifier = raw
            .identifier
            .ok_or_else(|| CommandError::Malformed("missing field `identifier`".into()))?;
        match raw.command.as_str() {
            "subscribe" => Ok(Command::Subscribe {
                identifier,
                history: raw.history.filter(|_| extended).map(HistoryRequest::parse),
            }),
            "unsubscribe" => Ok(Command::Unsubscribe { identifier }),
            "message" => Ok(Command::Message { identifier }),
            "history" if extended => Ok(Command::History {
                identifier,
                history: HistoryRequest::parse(raw.history.unwrap_or_default())?,
            }),
            _ => Err(CommandError::UnknownCommand(raw.command)),
        }
    }
}

/// What an extended-protocol client asks to be replayed: everything after the positions it
/// holds, by stream id, and for streams it holds none for, everything since a moment (unix
/// seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRequest {
    pub since: Option<u64>,
    pub streams: HashMap<String, Since>,
}

#[derive(Deserialize)]
struct RawHistory {
    #[serde(default)]
    since: Option<u64>,
    #[serde(default)]
    streams: Option<HashMap<String, RawPosition>>,
}

#[derive(Deserialize)]
struct RawPosition {
    epoch: String,
    offset: u64,
}

impl HistoryRequest {
    fn parse(value: serde_json::Value) -> Result<Self, CommandError> {
        // Objects all the way down: serde would read these structs from arrays too.
        let objects = value.as_object().is_some_and(|history| {
            history
                .get("streams")
                .and_then(serde_json::Value::as_object)
                .is_none_or(|streams| streams.values().all(serde_json::Value::is_object))
        });
        if !objects {
            return Err(CommandError::MalformedHistory(
                "the request and its stream positions must be objects".into(),
            ));
        }
        let raw: RawHistory = serde_json::from_value(value)
            .map_err(|e| CommandError::MalformedHistory(e.to_string()))?;
        let since = raw.since.filter(|&since| since > 0);
        if since.is_none() && raw.streams.is_none() {
            return Err(CommandError::MalformedHistory(
                "neither `since` nor `streams`".into(),
            ));
        }
        let streams = raw
            .streams
            .unwrap_or_default()
            .into_iter()
            .map(|(stream, p)| {
                let position = Since {
                    epoch: p.epoch,
                    offset: p.offset,
                };
                (stream, position)
            })
            .collect();
        Ok(Self { since, streams })
    }
}

/// What a subscription identifier names: the channel and its signed stream, and, when the page
/// rendered them, where in the stream's history the page stands (`data-epoch`, `data-offset`).
#[derive(Debug, PartialEq, Eq)]
pub struct Identifier {
    pub channel: String,
    pub signed_stream_name: Option<String>,
    pub since: Option<Since>,
}

/// The history position a subscriber has seen up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    pub epoch: String,
    pub offset: u64,
}

#[derive(Deserialize)]
struct RawIdentifier {
    channel: String,
    #[serde(default)]
    signed_stream_name: Option<String>,
    #[serde(default)]
    epoch: Option<String>,
    /// A string when it comes from a `data-*` attribute, a number from other clients.
    #[serde(default)]
    offset: Option<serde_json::Value>,
}

impl Identifier {
    /// The identifier is itself JSON, carried as a string. An offset that is not a whole
    /// number makes the identifier invalid.
    pub fn parse(identifier: &str) -> Option<Self> {
        if !is_json_object(identifier) {
            return None;
        }
        let raw: RawIdentifier = serde_json::from_str(identifier).ok()?;
        let offset = match raw.offset {
            None => None,
            Some(serde_json::Value::Number(n)) => Some(n.as_u64()?),
            Some(serde_json::Value::String(s)) => Some(
                s.parse()
                    .ok()
                    .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))?,
            ),
            Some(_) => return None,
        };
        let since = match (raw.epoch, offset) {
            (Some(epoch), Some(offset)) => Some(Since { epoch, offset }),
            _ => None,
        };
        Some(Self {
            channel: raw.channel,
            signed_stream_name: raw.signed_stream_name,
            since,
        })
    }
}

pub fn welcome() -> String {
    json!({"type": "welcome"}).to_string()
}

/// The extended welcome. `restored` is always false: sessions are not kept across
/// connections, so a reconnecting client subscribes again and asks for history.
pub fn welcome_ext(sid: &str) -> String {
    json!({"type": "welcome", "sid": sid, "restored": false}).to_string()
}

pub fn ping(unix_seconds: u64) -> String {
    json!({"type": "ping", "message": unix_seconds}).to_string()
}

pub fn confirm(identifier: &str) -> String {
    json!({"identifier": identifier, "type": "confirm_subscription"}).to_string()
}

pub fn reject(identifier: &str) -> String {
    json!({"identifier": identifier, "type": "reject_subscription"}).to_string()
}

pub fn confirm_history(identifier: &str) -> String {
    json!({"identifier": identifier, "type": "confirm_history"}).to_string()
}

pub fn reject_history(identifier: &str) -> String {
    json!({"identifier": identifier, "type": "reject_history"}).to_string()
}

/// Where a broadcast sits in its stream, as extended-protocol data frames carry it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StreamPosition<'a> {
    pub stream_id: &'a str,
    pub epoch: &'a str,
    pub offset: u64,
}

/// Borrows the payload instead of copying it into a `serde_json::Value` first: broadcasts can
/// be tens of kilobytes and the hub frames each one per identifier.
#[derive(Serialize)]
struct Data<'a> {
    identifier: &'a str,
    message: &'a str,
    #[serde(flatten)]
    position: Option<StreamPosition<'a>>,
}

pub fn message(identifier: &str, payload: &str) -> String {
    data_frame(identifier, payload, None)
}

/// A data frame of the extended protocol, with its stream position.
pub fn message_at(identifier: &str, payload: &str, position: StreamPosition<'_>) -> String {
    data_frame(identifier, payload, Some(position))
}

fn data_frame(identifier: &str, message: &str, position: Option<StreamPosition<'_>>) -> String {
    let data = Data {
        identifier,
        message,
        position,
    };
    serde_json::to_string(&data).expect("a struct of strings and numbers serializes")
}

/// Why the server closes a connection, as the client's reconnect logic understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// No valid session: reconnecting will not help.
    Unauthorized,
    /// The client sent something we cannot serve.
    InvalidRequest,
    /// The process is stopping; another one (or this one, restarted) will take the client.
    ServerRestart,
    /// The client fell too far behind on broadcasts.
    SlowClient,
}

impl DisconnectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::InvalidRequest => "invalid_request",
            Self::ServerRestart => "server_restart",
            Self::SlowClient => "slow_client",
        }
    }

    pub fn reconnect(self) -> bool {
        !matches!(self, Self::Unauthorized)
    }
}

pub fn disconnect(reason: DisconnectReason) -> String {
    json!({"type": "disconnect", "reason": reason.as_str(), "reconnect": reason.reconnect()})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = r#"{"channel":"Turbo::StreamsChannel","signed_stream_name":"abc--def"}"#;

    #[test]
    fn commands_parse_with_their_identifier_string() {
        let frame = json!({"command": "subscribe", "identifier": ID}).to_string();
        assert_eq!(
            Command::parse(&frame, Protocol::ActionCable),
            Ok(Command::Subscribe {
                identifier: ID.into(),
                history: None,
            })
        );
        let frame = json!({"command": "message", "identifier": ID, "data": "{}"}).to_string();
        assert!(matches!(
            Command::parse(&frame, Protocol::ActionCable),
            Ok(Command::Message { .. })
        ));
    }

    #[test]
    fn garbage_and_unknown_commands_are_errors_not_panics() {
        for text in [
            "",
            "{",
            "null",
            "[]",
            r#"{"command":1}"#,
            r#"{"command":"subscribe"}"#,
            r#"["unsubscribe","{}"]"#,
        ] {
            assert!(
                matches!(
                    Command::parse(text, Protocol::ActionCable),
                    Err(CommandError::Malformed(_))
                ),
                "{text}"
            );
        }
        let frame = json!({"command": "explode", "identifier": ID}).to_string();
        assert_eq!(
            Command::parse(&frame, Protocol::ActionCable),
            Err(CommandError::UnknownCommand("explode".into()))
        );
    }

    #[test]
    fn identifiers_name_a_channel_and_a_signed_stream() {
        let id = Identifier::parse(ID).unwrap();
        assert_eq!(id.channel, TURBO_STREAMS_CHANNEL);
        assert_eq!(id.signed_stream_name.as_deref(), Some("abc--def"));
        assert_eq!(id.since, None);
        assert_eq!(Identifier::parse("not json"), None);
        assert_eq!(
            Identifier::parse(r#"["Turbo::StreamsChannel","abc--def"]"#),
            None
        );
    }

    #[test]
    fn a_page_position_rides_in_the_identifier_as_text_or_number() {
        let since = |offset: serde_json::Value| {
            let id = json!({"channel": TURBO_STREAMS_CHANNEL, "signed_stream_name": "s",
                            "epoch": "e1", "offset": offset});
            Identifier::parse(&id.to_string()).map(|id| id.since)
        };
        let at = |offset| {
            Some(Some(Since {
                epoch: "e1".into(),
                offset,
            }))
        };
        assert_eq!(since(json!("12")), at(12));
        assert_eq!(since(json!(12)), at(12));
        for bad in [
            json!("-1"),
            json!("+1"),
            json!("x"),
            json!(1.5),
            json!(-1),
            json!([]),
        ] {
            assert_eq!(since(bad.clone()), None, "{bad}");
        }
    }

    #[test]
    fn frames_escape_their_strings() {
        let frame: serde_json::Value =
            serde_json::from_str(&message(ID, "<p class=\"x\">\u{2028}</p>")).unwrap();
        assert_eq!(frame["identifier"], ID);
        assert_eq!(frame["message"], "<p class=\"x\">\u{2028}</p>");
        let frame: serde_json::Value =
            serde_json::from_str(&disconnect(DisconnectReason::Unauthorized)).unwrap();
        assert_eq!(
            frame,
            json!({"type":"disconnect","reason":"unauthorized","reconnect":false})
        );
    }

    #[test]
    fn the_extended_protocol_is_chosen_whenever_it_is_offered() {
        let offer = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(
                    SEC_WEBSOCKET_PROTOCOL,
                    actix_web::http::header::HeaderValue::from_static(value),
                );
            }
            Protocol::offered(&headers)
        };
        assert_eq!(offer(&["actioncable-v1-ext-json"]), Protocol::Extended);
        assert_eq!(
            offer(&["actioncable-v1-json, actioncable-v1-ext-json"]),
            Protocol::Extended
        );
        assert_eq!(
            offer(&["actioncable-v1-json", "actioncable-v1-ext-json"]),
            Protocol::Extended
        );
        assert_eq!(
            offer(&["actioncable-v1-json, actioncable-unsupported"]),
            Protocol::ActionCable
        );
        assert_eq!(offer(&[]), Protocol::ActionCable);
        assert_eq!(offer(&["actioncable-v1-ext-jsonx"]), Protocol::ActionCable);
    }

    #[test]
    fn history_rides_on_subscribe_or_comes_alone_in_the_extended_protocol_only() {
        let history =
            json!({"since": 1_700_000_000, "streams": {"rooms:1": {"epoch": "e", "offset": 3}}});
        let expected = HistoryRequest {
            since: Some(1_700_000_000),
            streams: HashMap::from([(
                "rooms:1".to_owned(),
                Since {
                    epoch: "e".into(),
                    offset: 3,
                },
            )]),
        };
        let subscribe =
            json!({"command": "subscribe", "identifier": ID, "history": history}).to_string();
        assert_eq!(
            Command::parse(&subscribe, Protocol::Extended),
            Ok(Command::Subscribe {
                identifier: ID.into(),
                history: Some(Ok(expected.clone())),
            })
        );
        assert_eq!(
            Command::parse(&subscribe, Protocol::ActionCable),
            Ok(Command::Subscribe {
                identifier: ID.into(),
                history: None,
            })
        );
        let alone = json!({"command": "history", "identifier": ID, "history": history}).to_string();
        assert_eq!(
            Command::parse(&alone, Protocol::Extended),
            Ok(Command::History {
                identifier: ID.into(),
                history: expected,
            })
        );
        assert_eq!(
            Command::parse(&alone, Protocol::ActionCable),
            Err(CommandError::UnknownCommand("history".into()))
        );
        assert_eq!(
            Command::parse(r#"{"command":"pong"}"#, Protocol::Extended),
            Ok(Command::Pong)
        );
        assert!(matches!(
            Command::parse(r#"{"command":"pong"}"#, Protocol::ActionCable),
            Err(CommandError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_history_requests_are_errors_with_a_reason() {
        for bad in [
            json!("since"),
            json!({}),
            json!({"since": 0}),
            json!({"since": -1}),
            json!({"since": 1.5}),
            json!({"since": "1700000000"}),
            json!({"streams": []}),
            json!({"streams": {"rooms:1": {"epoch": "e"}}}),
            json!({"streams": {"rooms:1": {"epoch": 1, "offset": 1}}}),
            json!({"streams": {"rooms:1": {"epoch": "e", "offset": -1}}}),
            json!([1_700_000_000]),
            json!({"streams": {"rooms:1": ["e", 3]}}),
        ] {
            let alone = json!({"command": "history", "identifier": ID, "history": bad}).to_string();
            assert!(
                matches!(
                    Command::parse(&alone, Protocol::Extended),
                    Err(CommandError::MalformedHistory(_))
                ),
                "{bad}"
            );
            let subscribe =
                json!({"command": "subscribe", "identifier": ID, "history": bad}).to_string();
            assert!(
                matches!(
                    Command::parse(&subscribe, Protocol::Extended),
                    Ok(Command::Subscribe {
                        history: Some(Err(CommandError::MalformedHistory(_))),
                        ..
                    })
                ),
                "{bad}"
            );
        }
        for missing in [
            json!({"command": "history", "identifier": ID}),
            json!({"command": "history", "identifier": ID, "history": null}),
        ] {
            assert!(matches!(
                Command::parse(&missing.to_string(), Protocol::Extended),
                Err(CommandError::MalformedHistory(_))
            ));
        }
        let none = json!({"command": "subscribe", "identifier": ID, "history": null}).to_string();
        assert_eq!(
            Command::parse(&none, Protocol::Extended),
            Ok(Command::Subscribe {
                identifier: ID.into(),
                history: None,
            }),
            "a null history is no history"
        );
    }

    #[test]
    fn extended_frames_carry_the_session_and_stream_positions() {
        let welcome: serde_json::Value = serde_json::from_str(&welcome_ext("s1")).unwrap();
        assert_eq!(
            welcome,
            json!({"type": "welcome", "sid": "s1", "restored": false})
        );
        let position = StreamPosition {
            stream_id: "rooms:1",
            epoch: "e",
            offset: 7,
        };
        let frame: serde_json::Value =
            serde_json::from_str(&message_at(ID, "<p>\"</p>", position)).unwrap();
        assert_eq!(
            frame,
            json!({"identifier": ID, "message": "<p>\"</p>", "stream_id": "rooms:1",
                   "epoch": "e", "offset": 7})
        );
        assert_eq!(
            message(ID, "x"),
            json!({"identifier": ID, "message": "x"}).to_string(),
            "the plain frame is byte for byte what it was"
        );
    }
}
