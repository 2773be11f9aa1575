//! One cable socket: a task that reads client commands, writes queued broadcasts and pings every
//! few seconds, all in one `select!`, and always unregisters from the hub when it ends, however
//! it ends.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use actix_ws::{CloseCode, MessageStream, Session};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use super::{
    CableConfig, ConnectionId, HubHandle, StreamSigner,
    protocol::{self, Command, DisconnectReason, Identifier, TURBO_STREAMS_CHANNEL},
};
use crate::{
    models::User,
    socket::{self, End, Frame},
};

/// What every cable socket shares.
pub struct CableContext {
    pub hub: HubHandle,
    pub signer: StreamSigner,
    pub config: CableConfig,
}

/// Serves one socket until it closes. `user` is who the session cookie says; without one the
/// client is told it is unauthorized and must not reconnect.
pub async fn serve(
    mut session: Session,
    messages: MessageStream,
    user: Option<User>,
    ctx: Arc<CableContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(user) = user else {
        let _ = session
            .text(protocol::disconnect(DisconnectReason::Unauthorized))
            .await;
        let _ = session.close(Some(CloseCode::Policy.into())).await;
        return;
    };
    let mut messages = socket::limited(messages, ctx.config.max_frame_bytes);
    let (outbound, mut queued) = mpsc::channel(ctx.config.outbound_queue);
    let conn = ctx.hub.connect(outbound).await;
    let span = tracing::debug_span!("cable", conn = conn.0, user = user.id.0);
    let _enter = span.enter();
    let mut subscriber = Subscriber {
        conn,
        ctx: &ctx,
        subscriptions: HashSet::new(),
    };

    let period = ctx.config.ping_interval;
    let mut ping = tokio::time::interval_at(Instant::now() + period, period);
    let end = if session.text(protocol::welcome()).await.is_err() {
        End::Closed
    } else {
        loop {
            tokio::select! {
                frame = socket::next_frame(&mut messages, &mut session) => match frame {
                    Ok(Frame::Text(text)) => {
                        let replies = subscriber.command(&text).await;
                        if send_all(&mut session, replies).await.is_err() {
                            break End::Closed;
                        }
                    }
                    Ok(Frame::Binary) => {
                        tracing::debug!("ignoring a binary frame: the protocol is JSON text");
                    }
                    Err(end) => break end,
                },
                frame = queued.recv() => match frame {
                    Some(frame) => {
                        if session.text(frame).await.is_err() {
                            break End::Closed;
                        }
                    }
                    None => break End::FellBehind,
                },
                _ = shutdown.wait_for(|stopping| *stopping) => break End::ServerRestart,
                _ = ping.tick() => {
                    if session.text(protocol::ping(unix_seconds())).await.is_err() {
                        break End::Closed;
                    }
                }
            }
        }
    };
    ctx.hub.disconnect(conn).await;

    // Tell ActionCable why, so its reconnect logic does the right thing, then close.
    let reason = match end {
        End::ServerRestart => Some(DisconnectReason::ServerRestart),
        End::FellBehind => Some(DisconnectReason::SlowClient),
        End::Closed | End::Protocol(_) => None,
    };
    if let Some(reason) = reason {
        let _ = session.text(protocol::disconnect(reason)).await;
    }
    socket::close(session, &end).await;
}

async fn send_all(session: &mut Session, frames: Vec<String>) -> Result<(), actix_ws::Closed> {
    for frame in frames {
        session.text(frame).await?;
    }
    Ok(())
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A socket's subscriptions, and how it answers commands.
struct Subscriber<'a> {
    conn: ConnectionId,
    ctx: &'a CableContext,
    subscriptions: HashSet<Arc<str>>,
}

impl Subscriber<'_> {
    /// Carries out one command frame; returns the frames to answer with. Frames we cannot use
    /// are logged and dropped, as ActionCable does: the socket stays up.
    async fn command(&mut self, text: &str) -> Vec<String> {
        match Command::parse(text) {
            Ok(Command::Subscribe { identifier }) => vec![self.subscribe(identifier).await],
            Ok(Command::Unsubscribe { identifier }) => {
                let identifier: Arc<str> = identifier.into();
                if self.subscriptions.remove(&identifier) {
                    self.ctx.hub.unsubscribe(self.conn, identifier).await;
                }
                Vec::new()
            }
            Ok(Command::Message { .. }) => {
                tracing::debug!("ignoring a message: Turbo::StreamsChannel has no actions");
                Vec::new()
            }
            Err(err) => {
                tracing::info!(error = %err, "ignoring a cable frame");
                Vec::new()
            }
        }
    }

    async fn subscribe(&mut self, identifier: String) -> String {
        let stream = match Identifier::parse(&identifier) {
            Some(Identifier {
                channel,
                signed_stream_name: Some(signed),
            }) if channel == TURBO_STREAMS_CHANNEL => self.ctx.signer.verify(&signed),
            _ => None,
        };
        let Some(stream) = stream else {
            tracing::info!(
                identifier,
                "rejecting a subscription to an unknown channel or stream"
            );
            return protocol::reject(&identifier);
        };
        let identifier: Arc<str> = identifier.into();
        if !self.subscriptions.contains(&identifier)
            && self.subscriptions.len() >= self.ctx.config.max_subscriptions
        {
            tracing::info!("rejecting a subscription over the per-connection limit");
            return protocol::reject(&identifier);
        }
        if self
            .ctx
            .hub
            .subscribe(self.conn, stream.into(), identifier.clone())
            .await
        {
            self.subscriptions.insert(identifier.clone());
            protocol::confirm(&identifier)
        } else {
            protocol::reject(&identifier)
        }
    }
}
