//! Giving the allocator's free memory back to the system once a burst of requests is over.
//!
//! glibc's malloc keeps what a thread frees in that thread's arena for its next allocations,
//! and gives memory back to the system on its own only from the top of a heap. A burst of
//! requests leaves the HTTP workers' arenas holding what the burst needed at its peak: after the
//! benchmark's HTTP ramp, about 9 MB free in the two workers' arenas, in chunks of 100 KB to
//! 1.4 MB (a room page's response buffers), resident for as long as the process runs.
//! `malloc_trim(0)` releases every whole free page in every arena (about 2 ms for the
//! benchmark's heap); [`release_after_bursts`] calls it once the server has answered requests
//! or closed sockets and then gone a [`QUIET`] period without either. A steady stream of
//! requests never triggers it, so it costs nothing under load; an idle server trims at most
//! once. Other allocators and C libraries return memory on their own terms, and there this
//! does nothing.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;

/// How long the server must go without a request before its free memory is given back.
pub const QUIET: Duration = Duration::from_secs(1);

/// Counts requests and closed sockets, for [`release_after_bursts`] to tell a burst from quiet.
#[derive(Debug, Clone, Default)]
pub struct Activity(Arc<AtomicU64>);

impl Activity {
    /// A request arrived, or a socket closed.
    pub fn record(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// When to release, from the request count read once every [`QUIET`] period: after a period
/// with requests, the first period without any.
#[derive(Debug, Default)]
struct AfterBursts {
    seen: u64,
    busy: bool,
}

impl AfterBursts {
    /// Takes the count at the end of a period; true when memory should be released now.
    fn period_ended(&mut self, count: u64) -> bool {
        if count != self.seen {
            self.seen = count;
            self.busy = true;
            return false;
        }
        std::mem::take(&mut self.busy)
    }
}

/// Releases the allocator's free memory after each burst of `activity`, until `stop` turns true
/// (or its sender is gone).
pub async fn release_after_bursts(activity: Activity, mut stop: watch::Receiver<bool>) {
    let mut period = tokio::time::interval(QUIET);
    period.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut policy = AfterBursts {
        seen: activity.count(),
        busy: false,
    };
    loop {
        tokio::select! {
            _ = period.tick() => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
                continue;
            }
        }
        if policy.period_ended(activity.count()) {
            let started = std::time::Instant::now();
            let released = release();
            tracing::debug!(
                released,
                elapsed_us = started.elapsed().as_micros() as u64,
                "gave free memory back after a burst"
            );
        }
    }
}

/// Returns the allocator's free pages to the system; true if any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release() -> bool {
    // SAFETY: `malloc_trim` takes each arena's own lock and only gives back pages that no
    // allocation uses; glibc allows it from any thread at any time.
    unsafe { libc::malloc_trim(0) != 0 }
}

/// Returns the allocator's free pages to the system; true if any were. Only glibc's malloc
/// needs telling.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_once_after_each_burst_and_never_while_busy() {
        let mut policy = AfterBursts::default();
        assert!(!policy.period_ended(0), "nothing happened yet");
        assert!(!policy.period_ended(5), "a busy period");
        assert!(!policy.period_ended(9), "still busy");
        assert!(
            policy.period_ended(9),
            "the first quiet period after the burst"
        );
        assert!(!policy.period_ended(9), "once per burst");
        assert!(!policy.period_ended(9));
        assert!(!policy.period_ended(10), "the next burst");
        assert!(policy.period_ended(10));
    }

    /// Resident anonymous memory of this process, in KiB.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn resident_anonymous_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
        status
            .lines()
            .find_map(|line| line.strip_prefix("RssAnon:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("an RssAnon line")
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn release_gives_freed_pages_back() {
        const BLOCK: usize = 64 * 1024;
        const BLOCKS: usize = 256; // 16 MiB
        // On a thread of its own, as in the server, so the freed blocks stay in that thread's
        // arena; each between two live allocations, so none is at the top of a heap, where
        // free() would give it back by itself.
        let allocating = std::thread::spawn(|| {
            let mut blocks = Vec::with_capacity(BLOCKS);
            let mut kept = Vec::with_capacity(BLOCKS);
            for _ in 0..BLOCKS {
                blocks.push(vec![1u8; BLOCK]);
                kept.push(vec![1u8; 256]);
            }
            drop(std::hint::black_box(blocks));
            (resident_anonymous_kib(), kept)
        });
        let (resident, kept) = allocating.join().expect("the allocating thread");
        assert!(release(), "there were free pages to give back");
        let after = resident_anonymous_kib();
        drop(kept);
        let given_back = resident.saturating_sub(after);
        assert!(
            given_back >= 8 * 1024,
            "at least half of the 16 MiB freed is given back: {resident} KiB -> {after} KiB"
        );
    }
}
