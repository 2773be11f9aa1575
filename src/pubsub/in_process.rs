//! The single-process adapter: publishing hands the envelope straight to our own inbox, and
//! each stream's recent history is kept in memory (the last messages within the window). The
//! epoch is new with every start, so a client holding offsets from before a restart is told to
//! refresh instead of being replayed someone else's history.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use tokio::{sync::Mutex, time::Instant};

use super::{Envelope, HistoryWindow, Inbox, Position, PublishError, Replay, Topic};

#[derive(Clone)]
pub struct InProcess {
    inner: Arc<Inner>,
}

struct Inner {
    inbox: Inbox,
    epoch: Arc<str>,
    window: HistoryWindow,
    /// Held across the hand-off to the inbox, so envelopes reach it in offset order.
    streams: Mutex<HashMap<Arc<str>, StreamLog>>,
}

#[derive(Default)]
struct StreamLog {
    last: u64,
    kept: VecDeque<(u64, Instant, Arc<str>)>,
}

impl StreamLog {
    /// Drops what fell out of the window: beyond the count, or older than the time limit.
    fn trim(&mut self, window: HistoryWindow, now: Instant) {
        while self.kept.len() > window.limit
            || self
                .kept
                .front()
                .is_some_and(|(_, at, _)| now.duration_since(*at) > window.ttl)
        {
            self.kept.pop_front();
        }
    }
}

impl InProcess {
    pub fn new(window: HistoryWindow, inbox: Inbox) -> Self {
        Self {
            inner: Arc::new(Inner {
                inbox,
                epoch: format!("{:016x}", rand::random::<u64>()).into(),
                window,
                streams: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub async fn publish(&self, mut envelope: Envelope) -> Result<(), PublishError> {
        let mut streams = self.inner.streams.lock().await;
        if envelope.topic == Topic::Cable {
            let log = streams.entry(envelope.stream.clone()).or_default();
            log.last += 1;
            envelope.offset = log.last;
            let now = Instant::now();
            log.kept
                .push_back((log.last, now, envelope.payload.clone()));
            log.trim(self.inner.window, now);
        }
        self.inner
            .inbox
            .send(envelope)
            .await
            .map_err(|_| PublishError::Closed)
    }

    pub async fn position(&self, stream: &str) -> Position {
        let streams = self.inner.streams.lock().await;
        Position {
            epoch: self.inner.epoch.clone(),
            offset: streams.get(stream).map_or(0, |log| log.last),
        }
    }

    pub async fn replay(&self, stream: &str, after: u64) -> Replay {
        let mut streams = self.inner.streams.lock().await;
        let (last, messages, oldest) = match streams.get_mut(stream) {
            Some(log) => {
                log.trim(self.inner.window, Instant::now());
                let messages: Vec<(u64, Arc<str>)> = log
                    .kept
                    .iter()
                    .filter(|(offset, _, _)| *offset > after)
                    .map(|(offset, _, payload)| (*offset, payload.clone()))
                    .collect();
                (log.last, messages, log.kept.front().map(|(o, _, _)| *o))
            }
            None => (0, Vec::new(), None),
        };
        // Complete when nothing was missed, or everything missed is still kept.
        let complete = after == last || (after < last && oldest.is_some_and(|o| o <= after + 1));
        Replay {
            epoch: self.inner.epoch.clone(),
            messages,
            complete,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;

    fn adapter(limit: usize) -> (InProcess, mpsc::Receiver<Envelope>) {
        let (tx, rx) = mpsc::channel(64);
        let window = HistoryWindow {
            limit,
            ttl: Duration::from_secs(60),
        };
        (InProcess::new(window, tx), rx)
    }

    async fn publish(adapter: &InProcess, stream: &str, payload: &str) {
        adapter
            .publish(Envelope::new(Topic::Cable, stream, payload))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn cable_messages_get_consecutive_offsets_per_stream() {
        let (adapter, mut rx) = adapter(10);
        publish(&adapter, "rooms:1", "a").await;
        publish(&adapter, "rooms:2", "b").await;
        publish(&adapter, "rooms:1", "c").await;
        let offsets: Vec<(String, u64)> = (0..3)
            .map(|_| rx.try_recv().unwrap())
            .map(|e| (e.stream.to_string(), e.offset))
            .collect();
        assert_eq!(
            offsets,
            [
                ("rooms:1".into(), 1),
                ("rooms:2".into(), 1),
                ("rooms:1".into(), 2)
            ]
        );
        assert_eq!(adapter.position("rooms:1").await.offset, 2);
        assert_eq!(adapter.position("rooms:9").await.offset, 0);
        adapter
            .publish(Envelope::new(Topic::Presence, "presence", "{}"))
            .await
            .unwrap();
        assert_eq!(
            rx.try_recv().unwrap().offset,
            0,
            "presence keeps no history"
        );
    }

    #[tokio::test]
    async fn a_replay_returns_what_came_after_the_offset_while_it_is_kept() {
        let (adapter, _rx) = adapter(3);
        for payload in ["1", "2", "3", "4", "5"] {
            publish(&adapter, "rooms:1", payload).await;
        }
        let replay = adapter.replay("rooms:1", 2).await;
        assert!(replay.complete);
        let offsets: Vec<u64> = replay.messages.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, [3, 4, 5]);
        assert!(
            adapter.replay("rooms:1", 5).await.complete,
            "nothing missed"
        );
        let too_old = adapter.replay("rooms:1", 1).await;
        assert!(!too_old.complete, "offset 2 is no longer kept");
        assert!(
            !adapter.replay("rooms:1", 9).await.complete,
            "from the future"
        );
        assert!(
            adapter.replay("rooms:7", 0).await.complete,
            "an empty stream"
        );
    }
}
