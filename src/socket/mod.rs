//! What the two WebSocket servers (the cable and presence) share: the connection itself
//! ([`upgrade`] hands it over after the handshake, [`websocket`] frames it), answering pings,
//! server-side pings with an idle timeout, and how a socket's loop ends and what close frame
//! that ending sends.

pub mod upgrade;
pub mod websocket;

use std::time::Duration;

use actix_http::ws::{CloseCode, CloseReason, ProtocolError};
use bytestring::ByteString;
use tokio::time::{Instant, Interval, MissedTickBehavior};

pub use self::{
    upgrade::{Pending, accept},
    websocket::{Closed, Incoming, WebSocket},
};

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
    /// Nothing at all (no frame, no pong) arrived from the client for the idle timeout: the
    /// peer is presumed gone (a closed laptop lid, a dropped NAT mapping).
    IdleTimeout,
}

impl End {
    /// The close frame this ending sends.
    pub fn close_reason(&self) -> Option<CloseReason> {
        let (code, description) = match self {
            End::Closed => return None,
            End::FellBehind => (CloseCode::Again, "fell behind".to_owned()),
            End::ServerRestart => (CloseCode::Restart, "server restart".to_owned()),
            // 1001, going away: this endpoint is leaving a connection it considers dead. Not
            // 1011, which RFC 6455 reserves for an unexpected condition inside the server; a
            // client that was only slow reconnects on either.
            End::IdleTimeout => (CloseCode::Away, "idle timeout".to_owned()),
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

/// What one incoming message means: a frame for the caller, the end of the socket, or `None`
/// (a ping, answered here, or a pong) to read on.
async fn take(
    message: Option<Result<Incoming, ProtocolError>>,
    socket: &mut WebSocket,
) -> Option<Result<Frame, End>> {
    match message {
        Some(Ok(Incoming::Text(text))) => Some(Ok(Frame::Text(text))),
        Some(Ok(Incoming::Binary(_))) => Some(Ok(Frame::Binary)),
        // Boxed here and for the server's own pings below: rare writes, which inline would make
        // every socket's task larger for its whole life.
        Some(Ok(Incoming::Ping(bytes))) => Box::pin(socket.pong(&bytes))
            .await
            .err()
            .map(|_| Err(End::Closed)),
        Some(Ok(Incoming::Pong(_))) => None,
        Some(Ok(Incoming::Close(_))) | None => Some(Err(End::Closed)),
        Some(Err(err)) => Some(Err(End::Protocol(err))),
    }
}

/// The next text or binary frame, answering pings on the way; `Err` once the socket is done.
/// Cancel-safe (see [`WebSocket::recv`]): a pong cut short is finished by the next write.
pub async fn next_frame(socket: &mut WebSocket) -> Result<Frame, End> {
    loop {
        let message = socket.recv().await;
        if let Some(frame) = take(message, socket).await {
            return frame;
        }
    }
}

/// A socket's server-side liveness check: a WebSocket Ping every `ping_interval`, and the end of
/// the socket once nothing at all has arrived from the client for `idle_timeout`. Browsers
/// answer pings in their network stack, so a background tab still answers; a peer that is
/// gone does not. `None` turns either part off.
pub struct Keepalive {
    ping: Option<Interval>,
    idle_timeout: Option<Duration>,
    last_heard: Instant,
}

impl Keepalive {
    /// Starts the clocks now: the first ping goes out one interval from now.
    pub fn new(ping_interval: Option<Duration>, idle_timeout: Option<Duration>) -> Self {
        let now = Instant::now();
        let ping = ping_interval.filter(|p| !p.is_zero()).map(|period| {
            let mut ping = tokio::time::interval_at(now + period, period);
            // After a stall, one ping, not a burst of catch-up pings.
            ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ping
        });
        Self {
            ping,
            idle_timeout: idle_timeout.filter(|t| !t.is_zero()),
            last_heard: now,
        }
    }

    /// When the socket is closed unless something arrives before.
    fn idle_deadline(&self) -> Option<Instant> {
        self.idle_timeout.map(|timeout| self.last_heard + timeout)
    }

    /// Sends `text`; a write still blocked at the idle deadline ends the socket as idle. A peer
    /// that reads nothing eventually fills the connection's buffers, and a loop waiting on such
    /// a write would otherwise never look at the deadline.
    pub async fn send(&self, socket: &mut WebSocket, text: ByteString) -> Result<(), End> {
        write_by(self.idle_deadline(), socket.text(text)).await
    }
}

/// Waits for a write to the socket, ending it as idle if the write is still blocked at
/// `deadline`.
async fn write_by(
    deadline: Option<Instant>,
    write: impl Future<Output = Result<(), Closed>>,
) -> Result<(), End> {
    let written = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, write)
            .await
            .map_err(|_| End::IdleTimeout)?,
        None => write.await,
    };
    written.map_err(|_| End::Closed)
}

async fn next_ping(ping: &mut Option<Interval>) {
    match ping {
        Some(ping) => {
            ping.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn idle(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// [`next_frame`] with a [`Keepalive`]: also pings the client when a ping is due, and ends with
/// [`End::IdleTimeout`] once nothing has arrived for the idle timeout. Any incoming message
/// (a frame, a ping, a pong) counts as a sign of life. Safe to drop at any await, as in a
/// `select!`: the clocks live in `keepalive`.
pub async fn next_frame_alive(
    socket: &mut WebSocket,
    keepalive: &mut Keepalive,
) -> Result<Frame, End> {
    loop {
        let deadline = keepalive.idle_deadline();
        tokio::select! {
            // A message waiting since before the deadline is still a sign of life.
            biased;
            message = socket.recv() => {
                keepalive.last_heard = Instant::now();
                if let Some(frame) = take(message, socket).await {
                    return frame;
                }
            }
            () = next_ping(&mut keepalive.ping) => {
                Box::pin(write_by(deadline, socket.ping(b""))).await?;
            }
            () = idle(deadline) => return Err(End::IdleTimeout),
        }
    }
}

/// Sends the close frame for `end` and lets the socket go.
pub async fn close(socket: WebSocket, end: &End) {
    if let End::Protocol(err) = end {
        tracing::info!(error = %err, "closing a socket that broke the protocol");
    }
    if let End::IdleTimeout = end {
        tracing::debug!("closing a socket that went quiet");
    }
    socket.close(end.close_reason()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_socket_is_closed_as_going_away() {
        let reason = End::IdleTimeout.close_reason().unwrap();
        assert_eq!(u16::from(reason.code), 1001);
        assert_eq!(reason.description.as_deref(), Some("idle timeout"));
    }

    #[tokio::test]
    async fn keepalive_pings_each_interval_and_gives_up_after_the_idle_timeout() {
        let start = Instant::now();
        let mut keepalive = Keepalive::new(
            Some(Duration::from_millis(50)),
            Some(Duration::from_millis(150)),
        );
        let deadline = keepalive.idle_deadline().unwrap();
        assert!(deadline >= start + Duration::from_millis(150));
        next_ping(&mut keepalive.ping).await;
        assert!(start.elapsed() >= Duration::from_millis(50));
        keepalive.last_heard = Instant::now();
        assert!(keepalive.idle_deadline().unwrap() >= deadline + Duration::from_millis(50));

        let off = Keepalive::new(None, Some(Duration::ZERO));
        assert!(off.ping.is_none());
        assert_eq!(off.idle_deadline(), None);
    }
}
