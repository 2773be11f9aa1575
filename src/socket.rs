//! What the two WebSocket servers (the cable and presence) share: the incoming frame limit,
//! answering pings, and how a socket's loop ends and what close frame that ending sends.

use actix_ws::{
    AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, MessageStream,
    ProtocolError, Session,
};
use bytestring::ByteString;

/// Caps incoming frames, continuations included, at `max_bytes`.
pub fn limited(messages: MessageStream, max_bytes: usize) -> AggregatedMessageStream {
    messages
        .max_frame_size(max_bytes)
        .aggregate_continuations()
        .max_continuation_size(max_bytes)
}

/// A frame the socket's own protocol has to handle.
pub enum Frame {
    Text(ByteString),
    Binary,
}

/// How a socket's loop ended.
#[derive(Debug)]
pub enum End {
    /// The client closed, or the connection dropped.
    Closed,
    /// The server dropped the socket's queue: it fell too far behind.
    FellBehind,
    /// The client broke the WebSocket protocol (an oversized frame, say).
    Protocol(ProtocolError),
    /// This process is shutting down.
    ServerRestart,
}

impl End {
    /// The close frame this ending sends.
    pub fn close_reason(&self) -> Option<CloseReason> {
        let (code, description) = match self {
            End::Closed => return None,
            End::FellBehind => (CloseCode::Again, "fell behind".to_owned()),
            End::ServerRestart => (CloseCode::Restart, "server restart".to_owned()),
            End::Protocol(ProtocolError::Overflow) => {
                (CloseCode::Size, ProtocolError::Overflow.to_string())
            }
            End::Protocol(err) => (CloseCode::Protocol, err.to_string()),
        };
        Some(CloseReason {
            code,
            description: Some(description),
        })
    }
}

/// The next text or binary frame, answering pings on the way; `Err` once the socket is done.
pub async fn next_frame(
    messages: &mut AggregatedMessageStream,
    session: &mut Session,
) -> Result<Frame, End> {
    loop {
        match messages.recv().await {
            Some(Ok(AggregatedMessage::Text(text))) => return Ok(Frame::Text(text)),
            Some(Ok(AggregatedMessage::Binary(_))) => return Ok(Frame::Binary),
            Some(Ok(AggregatedMessage::Ping(bytes))) => {
                session.pong(&bytes).await.map_err(|_| End::Closed)?;
            }
            Some(Ok(AggregatedMessage::Pong(_))) => {}
            Some(Ok(AggregatedMessage::Close(_))) | None => return Err(End::Closed),
            Some(Err(err)) => return Err(End::Protocol(err)),
        }
    }
}

/// Sends the close frame for `end` and lets the socket go.
pub async fn close(session: Session, end: &End) {
    if let End::Protocol(err) = end {
        tracing::info!(error = %err, "closing a socket that broke the protocol");
    }
    let _ = session.close(end.close_reason()).await;
}
