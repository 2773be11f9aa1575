//! Makes a process's cable delivery gapless. An adapter hands over what it hears at most once,
//! and hears nothing while its connection is away (LISTEN/NOTIFY and Redis pub/sub keep nothing
//! for absent listeners). The history does keep it, so the [`Sequencer`] follows each stream's
//! offsets as envelopes arrive: the next offset goes straight on; one already passed on is a
//! duplicate and goes nowhere; a jump means notifications were missed, and what lies between is
//! read back from the history and passed on first, in order. After the adapter reconnects it
//! reads every stream it follows, so a stream that fell silent during the outage catches up too.
//! When history cannot fill a gap (it is older than the window, or the history was lost and
//! started a new epoch) the stream is [reset](Delivery::Reset): its subscribers refresh.
//!
//! One sequencer runs per process, between the adapter's inbox and the hub, so a catch-up costs
//! one history read per stream, not one per subscriber.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Envelope, PubSub, Topic};
use crate::metrics::Metrics;

/// Streams not heard from for this long are forgotten, so the table stays as small as the set
/// of rooms in use. A stream heard of again is followed from the offset it then has.
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);

/// What to hand the hub (or the presence server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The next message of its stream, or a presence event.
    Message(Envelope),
    /// Messages of `stream` (every stream, when `None`: the history epoch changed) were lost
    /// beyond what history can replay. Subscribers must refresh; the stream goes on from
    /// `offset` (what they are now level with).
    Reset {
        stream: Option<Arc<str>>,
        offset: u64,
    },
}

struct Track {
    /// The last offset passed on.
    last: u64,
    heard: Instant,
}

pub struct Sequencer {
    pubsub: PubSub,
    /// The history epoch offsets are counted in; `None` for an adapter without history.
    epoch: Option<Arc<str>>,
    streams: HashMap<Arc<str>, Track>,
    /// The adapter's reconnect count when last checked.
    reconnects: u64,
    metrics: Metrics,
}

impl Sequencer {
    /// Starts following `pubsub`'s streams, in the epoch its history is in now.
    pub async fn new(pubsub: PubSub, metrics: Metrics) -> Self {
        let epoch = pubsub.position("").await.map(|p| p.epoch);
        Self {
            reconnects: pubsub.reconnects(),
            pubsub,
            epoch,
            streams: HashMap::new(),
            metrics,
        }
    }

    /// What to deliver for `envelope`, in order.
    pub async fn accept(&mut self, envelope: Envelope) -> Vec<Delivery> {
        if envelope.topic != Topic::Cable || envelope.offset == 0 {
            return vec![Delivery::Message(envelope)];
        }
        let now = Instant::now();
        let Some(track) = self.streams.get_mut(&envelope.stream) else {
            self.streams.insert(
                envelope.stream.clone(),
                Track {
                    last: envelope.offset,
                    heard: now,
                },
            );
            return vec![Delivery::Message(envelope)];
        };
        track.heard = now;
        let last = track.last;
        if envelope.offset == last + 1 {
            track.last = envelope.offset;
            return vec![Delivery::Message(envelope)];
        }
        if envelope.offset <= last {
            // Either a message a catch-up already passed on, or the history started over.
            if self.epoch_changed().await {
                return self.reset_all(envelope);
            }
            self.metrics.pubsub_duplicates.inc();
            return Vec::new();
        }
        let stream = envelope.stream.clone();
        let offset = envelope.offset;
        let mut out = self.catch_up(&stream, last, Some(envelope.clone())).await;
        let covered = out.iter().any(|d| match d {
            Delivery::Message(e) => e.offset >= offset,
            // A reset covers it: the refreshed page shows it.
            Delivery::Reset { .. } => true,
        });
        if !covered {
            self.advance(&stream, offset);
            out.push(Delivery::Message(envelope));
        }
        out
    }

    /// Called every so often: after the adapter has reconnected, reads every followed stream
    /// for what was published while it was away; forgets streams long silent.
    pub async fn tick(&mut self) -> Vec<Delivery> {
        let now = Instant::now();
        self.streams
            .retain(|_, track| now.duration_since(track.heard) < FORGET_AFTER);
        let reconnects = self.pubsub.reconnects();
        if reconnects == self.reconnects {
            return Vec::new();
        }
        self.reconnects = reconnects;
        if self.epoch_changed().await {
            self.streams.clear();
            self.metrics.stream_resets.inc();
            return vec![Delivery::Reset {
                stream: None,
                offset: 0,
            }];
        }
        let mut streams: Vec<(Arc<str>, u64)> = self
            .streams
            .iter()
            .map(|(stream, track)| (stream.clone(), track.last))
            .collect();
        streams.sort();
        let mut out = Vec::new();
        for (stream, last) in streams {
            out.extend(self.catch_up(&stream, last, None).await);
        }
        out
    }

    /// The messages of `stream` after `last`, from history; a reset if history cannot say.
    /// `heard` is the message whose arrival showed the gap: it goes out as it arrived.
    async fn catch_up(
        &mut self,
        stream: &Arc<str>,
        last: u64,
        heard: Option<Envelope>,
    ) -> Vec<Delivery> {
        let replay = self.pubsub.replay(stream, last).await;
        let usable = replay.filter(|r| r.complete && Some(&r.epoch) == self.epoch.as_ref());
        let Some(replay) = usable else {
            let offset = match self.pubsub.position(stream).await {
                Some(position) if Some(&position.epoch) == self.epoch.as_ref() => position.offset,
                _ => return self.reset_everything_if_epoch_changed(stream).await,
            };
            self.advance(stream, offset);
            self.metrics.stream_resets.inc();
            return vec![Delivery::Reset {
                stream: Some(stream.clone()),
                offset,
            }];
        };
        let mut out = Vec::with_capacity(replay.messages.len());
        for (offset, payload) in replay.messages {
            if offset <= last {
                continue;
            }
            self.advance(stream, offset);
            match &heard {
                Some(envelope) if envelope.offset == offset => {
                    out.push(Delivery::Message(envelope.clone()));
                }
                _ => {
                    self.metrics.pubsub_recovered.inc();
                    out.push(Delivery::Message(Envelope {
                        offset,
                        ..Envelope::new(Topic::Cable, stream.clone(), payload)
                    }));
                }
            }
        }
        out
    }

    /// A stream's history could not be read in our epoch: if the epoch moved, every stream is
    /// reset; if the history is only unreachable, this one is, from where we are.
    async fn reset_everything_if_epoch_changed(&mut self, stream: &Arc<str>) -> Vec<Delivery> {
        self.metrics.stream_resets.inc();
        if self.epoch_changed().await {
            self.streams.clear();
            return vec![Delivery::Reset {
                stream: None,
                offset: 0,
            }];
        }
        let offset = self.streams.get(stream).map_or(0, |t| t.last);
        vec![Delivery::Reset {
            stream: Some(stream.clone()),
            offset,
        }]
    }

    fn reset_all(&mut self, envelope: Envelope) -> Vec<Delivery> {
        self.streams.clear();
        self.streams.insert(
            envelope.stream.clone(),
            Track {
                last: envelope.offset,
                heard: Instant::now(),
            },
        );
        self.metrics.stream_resets.inc();
        vec![
            Delivery::Reset {
                stream: None,
                offset: 0,
            },
            Delivery::Message(envelope),
        ]
    }

    fn advance(&mut self, stream: &Arc<str>, offset: u64) {
        let track = self.streams.entry(stream.clone()).or_insert(Track {
            last: 0,
            heard: Instant::now(),
        });
        track.last = track.last.max(offset);
    }

    /// Whether the history's epoch is no longer the one we count in; adopts the new one.
    async fn epoch_changed(&mut self) -> bool {
        let Some(position) = self.pubsub.position("").await else {
            return false;
        };
        if self.epoch.as_ref() == Some(&position.epoch) {
            return false;
        }
        self.epoch = Some(position.epoch);
        true
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::pubsub::{HistoryWindow, InProcess};

    /// An in-process adapter whose envelopes the test hands to the sequencer itself, so it
    /// can leave some out as a lost notification would.
    async fn setup(limit: usize) -> (Sequencer, PubSub, mpsc::Receiver<Envelope>, Metrics) {
        let (inbox, received) = mpsc::channel(64);
        let window = HistoryWindow {
            limit,
            ..HistoryWindow::default()
        };
        let pubsub = PubSub::InProcess(InProcess::new(window, inbox));
        let metrics = Metrics::new();
        let sequencer = Sequencer::new(pubsub.clone(), metrics.clone()).await;
        (sequencer, pubsub, received, metrics)
    }

    async fn publish(
        pubsub: &PubSub,
        received: &mut mpsc::Receiver<Envelope>,
        n: usize,
    ) -> Vec<Envelope> {
        let mut out = Vec::new();
        for i in 0..n {
            let envelope = Envelope::new(Topic::Cable, "rooms:1", format!("m{i}"));
            pubsub.publish(envelope).await.unwrap();
            out.push(received.recv().await.unwrap());
        }
        out
    }

    fn offsets(deliveries: &[Delivery]) -> Vec<u64> {
        deliveries
            .iter()
            .map(|d| match d {
                Delivery::Message(e) => e.offset,
                Delivery::Reset { .. } => panic!("unexpected reset: {d:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn in_order_messages_pass_straight_through() {
        let (mut sequencer, pubsub, mut received, _) = setup(100).await;
        for envelope in publish(&pubsub, &mut received, 3).await {
            let offset = envelope.offset;
            assert_eq!(
                sequencer.accept(envelope.clone()).await,
                vec![Delivery::Message(envelope)]
            );
            assert!(offset > 0);
        }
    }

    #[tokio::test]
    async fn a_gap_is_filled_from_history_in_order_and_duplicates_are_dropped() {
        let (mut sequencer, pubsub, mut received, metrics) = setup(100).await;
        let sent = publish(&pubsub, &mut received, 5).await;
        assert_eq!(offsets(&sequencer.accept(sent[0].clone()).await), [1]);
        // 2, 3 and 4 were never heard.
        let filled = sequencer.accept(sent[4].clone()).await;
        assert_eq!(offsets(&filled), [2, 3, 4, 5]);
        let payloads: Vec<_> = filled
            .iter()
            .map(|d| match d {
                Delivery::Message(e) => e.payload.to_string(),
                Delivery::Reset { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(payloads, ["m1", "m2", "m3", "m4"]);
        assert_eq!(metrics.pubsub_recovered.get(), 3);
        // The late notifications of what history already supplied go nowhere.
        assert!(sequencer.accept(sent[2].clone()).await.is_empty());
        assert_eq!(metrics.pubsub_duplicates.get(), 1);
    }

    #[tokio::test]
    async fn a_gap_older_than_the_window_resets_the_stream() {
        let (mut sequencer, pubsub, mut received, metrics) = setup(2).await;
        let sent = publish(&pubsub, &mut received, 6).await;
        sequencer.accept(sent[0].clone()).await;
        assert_eq!(
            sequencer.accept(sent[5].clone()).await,
            vec![Delivery::Reset {
                stream: Some("rooms:1".into()),
                offset: 6
            }]
        );
        assert_eq!(metrics.stream_resets.get(), 1);
        // The stream goes on from there.
        let next = publish(&pubsub, &mut received, 1).await.remove(0);
        assert_eq!(offsets(&sequencer.accept(next).await), [7]);
    }

    #[tokio::test]
    async fn a_tick_without_a_reconnect_reads_nothing() {
        let (mut sequencer, pubsub, mut received, _) = setup(100).await;
        let sent = publish(&pubsub, &mut received, 3).await;
        sequencer.accept(sent[0].clone()).await;
        assert!(sequencer.tick().await.is_empty());
    }

    #[tokio::test]
    async fn presence_and_offsetless_envelopes_are_not_sequenced() {
        let (mut sequencer, _, _, _) = setup(100).await;
        let presence = Envelope::new(Topic::Presence, "rooms:1", "{}");
        assert_eq!(
            sequencer.accept(presence.clone()).await,
            vec![Delivery::Message(presence)]
        );
        let plain = Envelope::new(Topic::Cable, "rooms:1", "x");
        assert_eq!(
            sequencer.accept(plain.clone()).await,
            vec![Delivery::Message(plain)]
        );
    }
}
