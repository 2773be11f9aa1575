//! One cable socket: a task that reads client commands, writes queued broadcasts and pings every
//! few seconds, all in one `select!`, and always unregisters from the hub when it ends, however
//! it ends.

use std::{
    collections::HashMap,
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
    hub::Queued,
    protocol::{self, Command, DisconnectReason, Identifier, TURBO_STREAMS_CHANNEL},
};
use crate::{
    metrics::Metrics,
    models::User,
    pubsub::PubSub,
    socket::{self, End, Frame},
    views::turbo_stream::TurboStream,
};

/// What every cable socket shares.
pub struct CableContext {
    pub hub: HubHandle,
    pub signer: StreamSigner,
    pub config: CableConfig,
    pub metrics: Metrics,
    /// Where missed messages are replayed from.
    pub pubsub: PubSub,
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
    // The upgrade request's span (see controllers::cable) covers this task's log lines; a span
    // entered here would be held across awaits and mislabel other tasks' lines.
    tracing::debug!(conn = conn.0, user = user.id.0, "cable socket open");
    let mut subscriber = Subscriber {
        conn,
        ctx: &ctx,
        subscriptions: HashMap::new(),
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
                    Some(queued) => {
                        if !subscriber.is_news(&queued) {
                            continue;
                        }
                        if session.text(queued.frame).await.is_err() {
                            break End::Closed;
                        }
                        ctx.metrics.delivery_seconds.observe(queued.published.elapsed().as_secs_f64());
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
    /// identifier -> the last offset sent on it (0: none, or no history).
    subscriptions: HashMap<Arc<str>, u64>,
}

impl Subscriber<'_> {
    /// Whether a live frame still has to be sent: a replay may already have sent it, and the
    /// subscription may be gone. Records it as sent.
    fn is_news(&mut self, queued: &Queued) -> bool {
        let Some(last) = self.subscriptions.get_mut(&queued.identifier) else {
            return false;
        };
        if queued.offset == 0 {
            return true;
        }
        if queued.offset <= *last {
            return false;
        }
        *last = queued.offset;
        true
    }

    /// Carries out one command frame; returns the frames to answer with. Frames we cannot use
    /// are logged and dropped, as ActionCable does: the socket stays up.
    async fn command(&mut self, text: &str) -> Vec<String> {
        match Command::parse(text) {
            Ok(Command::Subscribe { identifier }) => self.subscribe(identifier).await,
            Ok(Command::Unsubscribe { identifier }) => {
                let identifier: Arc<str> = identifier.into();
                if self.subscriptions.remove(&identifier).is_some() {
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

    /// Subscribes, then replays what the page has not seen: everything after the position in
    /// the identifier, or a refresh when that is no longer kept. Live frames queue from the
    /// moment of subscribing; those the replay already covered are skipped by [`is_news`].
    async fn subscribe(&mut self, identifier: String) -> Vec<String> {
        let (stream, since) = match Identifier::parse(&identifier) {
            Some(Identifier {
                channel,
                signed_stream_name: Some(signed),
                since,
            }) if channel == TURBO_STREAMS_CHANNEL => (self.ctx.signer.verify(&signed), since),
            _ => (None, None),
        };
        let Some(stream) = stream else {
            tracing::info!(
                identifier,
                "rejecting a subscription to an unknown channel or stream"
            );
            return vec![protocol::reject(&identifier)];
        };
        let identifier: Arc<str> = identifier.into();
        if self.subscriptions.contains_key(&identifier) {
            // A repeated subscribe (the client's guarantor retrying): confirm, replay nothing.
            return vec![protocol::confirm(&identifier)];
        }
        if self.subscriptions.len() >= self.ctx.config.max_subscriptions {
            tracing::info!("rejecting a subscription over the per-connection limit");
            return vec![protocol::reject(&identifier)];
        }
        if !self
            .ctx
            .hub
            .subscribe(self.conn, stream.as_str().into(), identifier.clone())
            .await
        {
            return vec![protocol::reject(&identifier)];
        }
        let mut frames = vec![protocol::confirm(&identifier)];
        let mut last = 0;
        if let Some(since) = since {
            match self.ctx.pubsub.replay(&stream, since.offset).await {
                Some(replay) if replay.complete && *replay.epoch == since.epoch => {
                    last = since.offset;
                    for (offset, payload) in replay.messages {
                        frames.push(protocol::message(&identifier, &payload));
                        last = offset;
                    }
                }
                Some(_) => {
                    tracing::debug!(stream, "history does not reach back far enough: refresh");
                    let refresh = TurboStream::new().refresh();
                    frames.push(protocol::message(&identifier, refresh.as_str()));
                }
                None => {}
            }
        }
        self.subscriptions.insert(identifier, last);
        frames
    }
}
