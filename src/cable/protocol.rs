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

/// What a subscription identifier names: the channel and its signed stream.
#[derive(Debug, PartialEq, Eq, Deserialize)]
pub struct Identifier {
    pub channel: String,
    #[serde(default)]
    pub signed_stream_name: Option<String>,
}

impl Identifier {
    /// The identifier is itself JSON, carried as a string.
    pub fn parse(identifier: &str) -> Option<Self> {
        serde_json::from_str(identifier).ok()
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
        assert_eq!(Identifier::parse("not json"), None);
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
