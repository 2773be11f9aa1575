//! One cable socket: a task that reads client commands, writes queued broadcasts and pings every
//! few seconds, all in one `select!`, and always unregisters from the hub when it ends, however
//! it ends.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use actix_http::ws::CloseCode;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use super::{
    CableConfig, HubHandle, StreamSigner,
    hub::{Member, Queued},
    protocol::{
        self, Command, DisconnectReason, HistoryRequest, Identifier, Protocol, StreamPosition,
        TURBO_STREAMS_CHANNEL,
    },
};
use crate::{
    metrics::Metrics,
    models::User,
    pubsub::PubSub,
    socket::{self, End, Frame, Pending, WebSocket},
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

/// Serves one socket, once its handshake is answered, until it closes. `user` is who the
/// session cookie says; without one the client is told it is unauthorized and must not
/// reconnect. `protocol` is what the handshake chose.
pub async fn serve(
    pending: Pending,
    user: Option<User>,
    protocol: Protocol,
    ctx: Arc<CableContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(mut socket) = pending.socket().await else {
        return;
    };
    let Some(user) = user else {
        let _ = socket
            .text(protocol::disconnect(DisconnectReason::Unauthorized))
            .await;
        socket.close(Some(CloseCode::Policy.into())).await;
        return;
    };
    let (outbound, mut queued) = mpsc::channel(ctx.config.outbound_queue);
    let member = ctx.hub.connect(outbound, protocol);
    // The upgrade request's span (see controllers::cable) covers this task's log lines; a span
    // entered here would be held across awaits and mislabel other tasks' lines.
    tracing::debug!(conn = member.id().0, user = user.id.0, "cable socket open");
    let mut subscriber = Subscriber {
        member,
        protocol,
        ctx: &ctx,
        subscriptions: HashMap::new(),
    };

    let period = ctx.config.ping_interval;
    let mut ping = tokio::time::interval_at(Instant::now() + period, period);
    let welcome = match protocol {
        Protocol::ActionCable => protocol::welcome(),
        // Only names this connection: sessions are never restored, so it grants nothing.
        Protocol::Extended => protocol::welcome_ext(&format!("{:032x}", rand::random::<u128>())),
    };
    let end = if socket.text(welcome).await.is_err() {
        End::Closed
    } else {
        loop {
            tokio::select! {
                frame = socket::next_frame(&mut socket) => match frame {
                    Ok(Frame::Text(text)) => {
                        // Boxed: a subscribe may read history, and that future would
                        // otherwise make every socket's task as large, for its whole life.
                        let replies = Box::pin(subscriber.command(&text)).await;
                        if send_all(&mut socket, replies).await.is_err() {
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
                        if socket.text(queued.frame.clone()).await.is_err() {
                            break End::Closed;
                        }
                        ctx.metrics.delivery_seconds.observe(queued.published.elapsed().as_secs_f64());
                    }
                    None => break End::FellBehind,
                },
                _ = shutdown.wait_for(|stopping| *stopping) => break End::ServerRestart,
                _ = ping.tick() => {
                    if socket.text(protocol::ping(unix_seconds())).await.is_err() {
                        break End::Closed;
                    }
                }
            }
        }
    };
    ctx.hub.disconnect(subscriber.member).await;

    // Tell ActionCable why, so its reconnect logic does the right thing, then close.
    let reason = match end {
        End::ServerRestart => Some(DisconnectReason::ServerRestart),
        End::FellBehind => Some(DisconnectReason::SlowClient),
        // The cable never ends for idleness itself: its clients watch the server's pings.
        End::Closed | End::Protocol(_) | End::IdleTimeout => None,
    };
    if let Some(reason) = reason {
        let _ = socket.text(protocol::disconnect(reason)).await;
    }
    socket::close(socket, &end).await;
}

async fn send_all(socket: &mut WebSocket, frames: Vec<String>) -> Result<(), socket::Closed> {
    for frame in frames {
        socket.text(frame).await?;
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
    member: Member,
    protocol: Protocol,
    ctx: &'a CableContext,
    /// By identifier.
    subscriptions: HashMap<Arc<str>, Subscription>,
}

struct Subscription {
    /// The stream name, which is also its `stream_id` in the extended protocol.
    stream: Arc<str>,
    /// The last offset sent on it (0: none, or no history).
    last: u64,
    /// Whether the client holds every message of the stream after a position it had already
    /// seen (the page's, or one it asked history from), having been replayed the rest here; a
    /// history request without a position for the stream then needs nothing more.
    caught_up: bool,
}

/// Why a replay from a position cannot be served.
#[derive(Debug, Clone, Copy)]
enum Unreplayable {
    /// The adapter keeps no history.
    NoHistory,
    /// The position is from another epoch, or outside the window (too old, or ahead).
    Gone,
}

impl Subscriber<'_> {
    /// Whether a live frame still has to be sent: a replay may already have sent it, and the
    /// subscription may be gone. Records it as sent.
    fn is_news(&mut self, queued: &Queued) -> bool {
        let Some(subscription) = self.subscriptions.get_mut(&queued.identifier) else {
            return false;
        };
        if queued.reset {
            subscription.last = queued.offset;
            return true;
        }
        if queued.offset == 0 {
            return true;
        }
        if queued.offset <= subscription.last {
            return false;
        }
        subscription.last = queued.offset;
        true
    }

    /// Carries out one command frame; returns the frames to answer with. Frames we cannot use
    /// are logged and dropped, as ActionCable does: the socket stays up.
    async fn command(&mut self, text: &str) -> Vec<String> {
        match Command::parse(text, self.protocol) {
            Ok(Command::Subscribe {
                identifier,
                history,
            }) => {
                let history = match history {
                    Some(Ok(history)) => Some(history),
                    Some(Err(err)) => {
                        tracing::info!(error = %err, "ignoring the history asked with a subscription");
                        None
                    }
                    None => None,
                };
                self.subscribe(identifier, history).await
            }
            Ok(Command::Unsubscribe { identifier }) => {
                let identifier: Arc<str> = identifier.into();
                if self.subscriptions.remove(&identifier).is_some() {
                    self.ctx.hub.unsubscribe(&self.member, identifier).await;
                }
                Vec::new()
            }
            Ok(Command::Message { .. }) => {
                tracing::debug!("ignoring a message: Turbo::StreamsChannel has no actions");
                Vec::new()
            }
            Ok(Command::History {
                identifier,
                history,
            }) => {
                let identifier: Arc<str> = identifier.into();
                if !self.subscriptions.contains_key(&identifier) {
                    tracing::info!(
                        "ignoring a history request for a subscription this socket does not hold"
                    );
                    return Vec::new();
                }
                self.history(&identifier, &history).await
            }
            Ok(Command::Pong) => Vec::new(),
            Err(err) => {
                tracing::info!(error = %err, "ignoring a cable frame");
                Vec::new()
            }
        }
    }

    /// Subscribes, then replays what the page has not seen: everything after the position in
    /// the identifier, or a refresh when that is no longer kept; then answers the history
    /// request an extended-protocol client sends along. Live frames queue from the moment of
    /// subscribing; those the replays already covered are skipped by [`Self::is_news`].
    async fn subscribe(
        &mut self,
        identifier: String,
        history: Option<HistoryRequest>,
    ) -> Vec<String> {
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
            // A repeated subscribe (the client's guarantor retrying): confirm, replay nothing
            // but what it asks for.
            let mut frames = vec![protocol::confirm(&identifier)];
            if let Some(history) = &history {
                frames.extend(self.history(&identifier, history).await);
            }
            return frames;
        }
        if self.subscriptions.len() >= self.ctx.config.max_subscriptions {
            tracing::info!("rejecting a subscription over the per-connection limit");
            return vec![protocol::reject(&identifier)];
        }
        let stream: Arc<str> = stream.into();
        // The extended protocol's live frames carry the epoch, which the hub learns here.
        let position = match self.protocol {
            Protocol::Extended => self.ctx.pubsub.position(&stream).await,
            Protocol::ActionCable => None,
        };
        let epoch = position.as_ref().map(|p| p.epoch.clone());
        if !self
            .ctx
            .hub
            .subscribe(&mut self.member, stream.clone(), identifier.clone(), epoch)
            .await
        {
            return vec![protocol::reject(&identifier)];
        }
        let subscription = Subscription {
            stream: stream.clone(),
            last: 0,
            caught_up: false,
        };
        self.subscriptions.insert(identifier.clone(), subscription);
        let mut frames = vec![protocol::confirm(&identifier)];
        if let Some(since) = since {
            match self.replay(&identifier, &since.epoch, since.offset).await {
                Ok(replayed) => frames.extend(replayed),
                Err(Unreplayable::Gone) => {
                    tracing::debug!(%stream, "history does not reach back far enough: refresh");
                    frames.push(self.refresh(&identifier));
                }
                Err(Unreplayable::NoHistory) => {}
            }
        }
        if let Some(history) = history {
            let caught_up = self.subscriptions[&identifier].caught_up;
            if let Some(empty) = position.filter(|p| p.offset == 0 && !caught_up) {
                // The stream was empty just before the hub took the subscription, so the client
                // lacks at most what was published since, which this replays.
                if let Ok(replayed) = self.replay(&identifier, &empty.epoch, 0).await {
                    frames.extend(replayed);
                }
            }
            frames.extend(self.history(&identifier, &history).await);
        }
        frames
    }

    /// Answers a history request for a subscription this socket holds: replays what came after
    /// the client's position in the subscription's stream, then `confirm_history`; or
    /// `reject_history` when that cannot be done. Positions for other streams are never
    /// replayed, whatever the client names.
    async fn history(&mut self, identifier: &Arc<str>, history: &HistoryRequest) -> Vec<String> {
        let Some(subscription) = self.subscriptions.get(identifier) else {
            return Vec::new();
        };
        let stream = subscription.stream.clone();
        let Some(position) = history.streams.get(&*stream) else {
            if subscription.caught_up {
                return vec![protocol::confirm_history(identifier)];
            }
            // History is kept by offset, not by time: what came after `since` is unknowable.
            tracing::debug!(%stream, "rejecting history without a position for the stream");
            return vec![protocol::reject_history(identifier)];
        };
        match self
            .replay(identifier, &position.epoch, position.offset)
            .await
        {
            Ok(mut frames) => {
                frames.push(protocol::confirm_history(identifier));
                frames
            }
            Err(Unreplayable::NoHistory) => {
                tracing::debug!(%stream, "rejecting history: the adapter keeps none");
                vec![protocol::reject_history(identifier)]
            }
            Err(Unreplayable::Gone) => {
                // The client may have missed anything: a Turbo page morphs to the present, as
                // one with a stale position in its identifier does.
                tracing::debug!(%stream, "rejecting history from another epoch or outside the window");
                vec![
                    self.refresh(identifier),
                    protocol::reject_history(identifier),
                ]
            }
        }
    }

    /// The frames of every message after `after` in `epoch` that this subscription has not
    /// been sent yet, in order; marks it caught up.
    async fn replay(
        &mut self,
        identifier: &Arc<str>,
        epoch: &str,
        after: u64,
    ) -> Result<Vec<String>, Unreplayable> {
        let Some(subscription) = self.subscriptions.get(identifier) else {
            return Ok(Vec::new());
        };
        let stream = subscription.stream.clone();
        let replay = self
            .ctx
            .pubsub
            .replay(&stream, after)
            .await
            .ok_or(Unreplayable::NoHistory)?;
        if !replay.complete || *replay.epoch != *epoch {
            return Err(Unreplayable::Gone);
        }
        let Some(subscription) = self.subscriptions.get_mut(identifier) else {
            return Ok(Vec::new());
        };
        // The client has everything up to `after`; what went out on this socket already was
        // written before these frames, so it has that too.
        let mut last = subscription.last.max(after);
        let mut frames = Vec::new();
        for (offset, payload) in &replay.messages {
            if *offset <= last {
                continue;
            }
            frames.push(match self.protocol {
                Protocol::ActionCable => protocol::message(identifier, payload),
                Protocol::Extended => {
                    let position = StreamPosition {
                        stream_id: &stream,
                        epoch: &replay.epoch,
                        offset: *offset,
                    };
                    protocol::message_at(identifier, payload, position)
                }
            });
            last = *offset;
        }
        subscription.last = last;
        subscription.caught_up = true;
        Ok(frames)
    }

    fn refresh(&self, identifier: &str) -> String {
        protocol::message(identifier, &super::refresh())
    }
}
