//! One presence socket: sends `presence_state` first, then whatever the presence server queues
//! (diffs, typing), relays the client's typing frames, answers bad frames with an error frame,
//! pings the client and closes it when it goes quiet, and always leaves the room when it ends.

use actix_http::ws::CloseCode;
use bytestring::ByteString;
use tokio::sync::{mpsc, watch};

use super::{PresenceHandle, protocol, protocol::ClientFrame, state::Person};
use crate::{
    models::{RoomId, User},
    socket::{self, End, Frame, Pending},
};

/// Serves one presence socket in `room`, once its handshake is answered, until it closes.
/// Without a signed-in `user` the client gets an `unauthorized` error and a policy close
/// (1008), which its reconnect logic honours.
pub async fn serve(
    pending: Pending,
    user: Option<User>,
    room: RoomId,
    presence: PresenceHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(mut socket) = pending.socket().await else {
        return;
    };
    let Some(user) = user else {
        let _ = socket.text(protocol::error("unauthorized")).await;
        socket.close(Some(CloseCode::Policy.into())).await;
        return;
    };
    let (outbound, mut queued) = mpsc::channel(presence.config.outbound_queue);
    let person = Person {
        id: user.id,
        name: user.name.as_str().to_owned(),
    };
    let Some((conn, state)) = presence.open(room, person, outbound).await else {
        socket.close(Some(CloseCode::Restart.into())).await;
        return;
    };
    let mut keepalive =
        socket::Keepalive::new(presence.config.ping_interval, presence.config.idle_timeout);
    let end = if socket.text(state).await.is_err() {
        End::Closed
    } else {
        loop {
            tokio::select! {
                frame = socket::next_frame_alive(&mut socket, &mut keepalive) => {
                    let reply = match frame {
                        Ok(Frame::Text(text)) => match ClientFrame::parse(&text) {
                            Ok(ClientFrame::Typing(typing)) => {
                                presence.typing(conn, typing).await;
                                None
                            }
                            Err(err) => Some(protocol::error(&err.to_string())),
                        },
                        Ok(Frame::Binary) => Some(protocol::error("frames must be JSON text")),
                        Err(end) => break end,
                    };
                    if let Some(reply) = reply
                        && socket.text(reply).await.is_err()
                    {
                        break End::Closed;
                    }
                }
                _ = shutdown.wait_for(|stopping| *stopping) => break End::ServerRestart,
                frame = queued.recv() => match frame {
                    Some(frame) => {
                        if let Err(end) = keepalive.send(&mut socket, ByteString::clone(&frame)).await {
                            break end;
                        }
                    }
                    None => break End::FellBehind,
                },
            }
        }
    };
    presence.close(conn).await;
    socket::close(socket, &end).await;
}
