//! The ActionCable wire format (`actioncable-v1-json`): commands clients send and the frames the
//! server answers with. Frames are built with serde_json so every string is escaped properly.

use serde::Deserialize;
use serde_json::json;

/// The subprotocol the server selects in the handshake.
pub const SUBPROTOCOL: &str = "actioncable-v1-json";

/// The one channel tasksync serves.
pub const TURBO_STREAMS_CHANNEL: &str = "Turbo::StreamsChannel";

/// A command from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Subscribe { identifier: String },
    Unsubscribe { identifier: String },
    Message { identifier: String },
}

/// Why a frame from a client is not a command we understand.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("the frame is not a JSON command: {0}")]
    Malformed(String),
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
}

#[derive(Deserialize)]
struct RawCommand {
    command: String,
    identifier: String,
}

impl Command {
    pub fn parse(text: &str) -> Result<Self, CommandError> {
        let raw: RawCommand =
            serde_json::from_str(text).map_err(|e| CommandError::Malformed(e.to_string()))?;
        let identifier = raw.identifier;
        match raw.command.as_str() {
            "subscribe" => Ok(Command::Subscribe { identifier }),
            "unsubscribe" => Ok(Command::Unsubscribe { identifier }),
            "message" => Ok(Command::Message { identifier }),
            _ => Err(CommandError::UnknownCommand(raw.command)),
        }
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

pub fn ping(unix_seconds: u64) -> String {
    json!({"type": "ping", "message": unix_seconds}).to_string()
}

pub fn confirm(identifier: &str) -> String {
    json!({"identifier": identifier, "type": "confirm_subscription"}).to_string()
}

pub fn reject(identifier: &str) -> String {
    json!({"identifier": identifier, "type": "reject_subscription"}).to_string()
}

pub fn message(identifier: &str, payload: &str) -> String {
    json!({"identifier": identifier, "message": payload}).to_string()
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
            Command::parse(&frame),
            Ok(Command::Subscribe {
                identifier: ID.into()
            })
        );
        let frame = json!({"command": "message", "identifier": ID, "data": "{}"}).to_string();
        assert!(matches!(
            Command::parse(&frame),
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
        ] {
            assert!(
                matches!(Command::parse(text), Err(CommandError::Malformed(_))),
                "{text}"
            );
        }
        let frame = json!({"command": "explode", "identifier": ID}).to_string();
        assert_eq!(
            Command::parse(&frame),
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
}
