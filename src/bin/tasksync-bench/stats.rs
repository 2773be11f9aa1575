//! Latency summaries, percentile curves, and CPU and memory accounting from /proc.

use std::{
    fs,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

#[derive(Clone, Copy, Default)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// Nearest-rank percentiles, in milliseconds.
    pub fn of(samples: &mut [Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let at = |p: f64| {
            let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            ms(samples[rank.clamp(1, samples.len()) - 1])
        };
        let total: Duration = samples.iter().sum();
        Self {
            count: samples.len(),
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            max: ms(samples[samples.len() - 1]),
            mean: ms(total) / samples.len() as f64,
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "count": self.count,
            "p50_ms": round(self.p50),
            "p90_ms": round(self.p90),
            "p99_ms": round(self.p99),
            "max_ms": round(self.max),
            "mean_ms": round(self.mean),
        })
    }

    pub fn line(&self) -> String {
        format!(
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n = {})",
            self.p50, self.p90, self.p99, self.max, self.count
        )
    }
}

/// A latency distribution as a percentile curve, for the chart: points `(1 / (1 - q), ms)` at
/// quantiles `q` spaced evenly on that log axis, from the minimum (x = 1) to the maximum
/// (x = n, the last quantile n samples can tell apart). `samples` must be sorted.
pub fn percentile_curve(samples: &[Duration]) -> Vec<(f64, f64)> {
    const POINTS: usize = 400;
    let n = samples.len();
    if n == 0 {
        return Vec::new();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    if n == 1 {
        return vec![(1.0, ms(samples[0]))];
    }
    let decades = (n as f64).log10();
    let mut curve: Vec<(f64, f64)> = (0..POINTS)
        .map(|i| {
            let x = 10f64.powf(decades * i as f64 / POINTS as f64);
            let q = 1.0 - 1.0 / x;
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            (x, ms(samples[rank - 1]))
        })
        .collect();
    curve.push((n as f64, ms(samples[n - 1])));
    curve
}

pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Processes of the load generator besides this one (hold workers): their CPU counts as the
/// generator's.
static HELPERS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

pub fn add_helper(pid: u32) {
    HELPERS.lock().expect("helpers").push(pid);
}

pub fn remove_helper(pid: u32) {
    HELPERS.lock().expect("helpers").retain(|p| *p != pid);
}

/// Resident memory of a process in KiB (0 once it is gone).
pub fn proc_rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// User plus system CPU time a process has used, all its threads, to the nanosecond (zero
/// once it is gone). Read from the process's CPU-time clock: `/proc/PID/stat` counts in clock
/// ticks (10 ms here), too coarse for a flood of handshakes that is over in 50 ms.
pub fn proc_cpu_time(pid: u32) -> Duration {
    let mut clock: libc::clockid_t = 0;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both calls only write into the values we hand them.
    let read = unsafe {
        libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) == 0
            && libc::clock_gettime(clock, &mut now) == 0
    };
    if read {
        Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
    } else {
        proc_cpu_ticks(pid)
    }
}

/// [`proc_cpu_time`] from `/proc/PID/stat`, in clock ticks, where the clock cannot be read.
fn proc_cpu_ticks(pid: u32) -> Duration {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The command name may hold spaces; the fields after its closing parenthesis don't.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// Resident memory of the whole load generator: this process and its hold workers.
pub fn generator_rss_kib() -> u64 {
    let helpers = HELPERS.lock().expect("helpers").clone();
    proc_rss_kib(std::process::id()) + helpers.into_iter().map(proc_rss_kib).sum::<u64>()
}

/// CPU the load generator has used, user plus system, all threads, with its hold workers.
fn own_cpu_time() -> Duration {
    let helpers = HELPERS.lock().expect("helpers").clone();
    self_cpu_time() + helpers.into_iter().map(proc_cpu_time).sum::<Duration>()
}

fn self_cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we hand it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The shortest phase whose whole-machine figures are given: /proc/stat counts in ticks of
/// 10 ms a core, so a burst of 30 ms could read anywhere from idle to more than busy.
pub const MACHINE_WINDOW: Duration = Duration::from_secs(1);

/// Busy time of the whole machine, all cores, from /proc/stat (everything but idle and iowait).
fn machine_busy_time() -> Duration {
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return Duration::ZERO;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return Duration::ZERO;
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(busy * 1_000_000 / hz)
}

/// How long every task on the machine that wanted to run was waiting on the disk at once, since
/// boot (the `full` line of `/proc/pressure/io`); zero where the kernel has no pressure stall
/// information. A PostgreSQL commit waits on its WAL flush, so this is the time commits (and
/// the broadcasts that go out with them) may have been held up by the machine's disk.
fn io_stalled_time() -> Duration {
    let Ok(pressure) = fs::read_to_string("/proc/pressure/io") else {
        return Duration::ZERO;
    };
    pressure
        .lines()
        .find(|l| l.starts_with("full "))
        .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("total=")))
        .and_then(|micros| micros.parse().ok())
        .map_or(Duration::ZERO, Duration::from_micros)
}

/// Where the CPU went during a phase: the generator's own share against the servers', and
/// what the rest of the machine (PostgreSQL, Redis, anything else running) used; and how long
/// the machine was stalled on its disk.
pub struct CpuMeter {
    wall: Instant,
    generator: Duration,
    servers: Duration,
    machine: Duration,
    io_stalled: Duration,
}

#[derive(Clone, Copy, Default)]
pub struct CpuShare {
    pub wall_secs: f64,
    /// Cores' worth of CPU used, on average (1.0 = one core busy the whole time).
    pub generator_cores: f64,
    pub server_cores: f64,
    /// Every process on the machine, the two above included; `None` for a phase shorter than
    /// [`MACHINE_WINDOW`].
    pub machine_cores: Option<f64>,
    /// Milliseconds during which everything runnable waited on the disk (see [`io_stalled_time`]).
    pub io_stalled_ms: f64,
}

impl CpuMeter {
    pub fn start(servers: Duration) -> Self {
        Self {
            wall: Instant::now(),
            generator: own_cpu_time(),
            servers,
            machine: machine_busy_time(),
            io_stalled: io_stalled_time(),
        }
    }

    pub fn stop(&self, servers: Duration) -> CpuShare {
        let wall = self.wall.elapsed().as_secs_f64().max(1e-9);
        CpuShare {
            wall_secs: wall,
            generator_cores: own_cpu_time().saturating_sub(self.generator).as_secs_f64() / wall,
            server_cores: servers.saturating_sub(self.servers).as_secs_f64() / wall,
            machine_cores: (wall >= MACHINE_WINDOW.as_secs_f64()).then(|| {
                machine_busy_time()
                    .saturating_sub(self.machine)
                    .as_secs_f64()
                    / wall
            }),
            io_stalled_ms: io_stalled_time()
                .saturating_sub(self.io_stalled)
                .as_secs_f64()
                * 1000.0,
        }
    }
}

impl CpuShare {
    /// Everything but the generator and the tasksync processes: PostgreSQL, Redis, others.
    pub fn other_cores(&self) -> Option<f64> {
        self.machine_cores
            .map(|machine| (machine - self.generator_cores - self.server_cores).max(0.0))
    }

    /// How busy the whole machine was, as a share of all its cores; `None` as for
    /// `machine_cores`.
    pub fn busy_share(&self) -> Option<f64> {
        self.machine_cores.map(|machine| machine / cores() as f64)
    }

    /// CPU used per item of a burst of `n` (handshakes), generator and servers, in µs.
    pub fn per_item_us(&self, n: usize) -> (f64, f64) {
        let us = |cores: f64| cores * self.wall_secs * 1e6 / n.max(1) as f64;
        (us(self.generator_cores), us(self.server_cores))
    }

    /// What a burst of `n` handshakes cost in CPU, and so how soon this machine could have
    /// finished all of them at best: their CPU spread over every core with none ever idle.
    pub fn burst_line(&self, n: usize) -> String {
        let (generator, servers) = self.per_item_us(n);
        let total_ms = (generator + servers) * n as f64 / 1000.0;
        format!(
            "CPU a handshake: load generator {generator:.0} µs + servers {servers:.0} µs; \
             all {n} took {total_ms:.1} ms of CPU: {:.1} ms on {} cores if none were ever idle",
            total_ms / cores() as f64,
            cores()
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "wall_secs": round(self.wall_secs),
            "generator_cores": round(self.generator_cores),
            "server_cores": round(self.server_cores),
            "other_cores": self.other_cores().map(round),
            "machine_busy_cores": self.machine_cores.map(round),
            "generator_share_of_machine": round(self.generator_cores / cores() as f64),
            "io_stalled_ms": round(self.io_stalled_ms),
        })
    }

    pub fn line(&self) -> String {
        let machine = match (self.other_cores(), self.busy_share()) {
            (Some(rest), Some(busy)) => format!(
                "rest of the machine {:.0}% (PostgreSQL, Redis, anything else); {:.0}% of {} cores \
                 busy",
                rest * 100.0,
                busy * 100.0,
                cores()
            ),
            _ => format!(
                "the rest of the machine not read in {:.0} ms (/proc/stat counts 10 ms ticks)",
                self.wall_secs * 1000.0
            ),
        };
        format!(
            "CPU: load generator {:.0}% of one core ({:.0}% of the machine), servers {:.0}%, \
             {machine}; disk stalls {:.0} ms",
            self.generator_cores * 100.0,
            self.generator_cores * 100.0 / cores() as f64,
            self.server_cores * 100.0,
            self.io_stalled_ms
        )
    }
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{CpuMeter, CpuShare, Summary, percentile_curve};

    #[test]
    fn curve_runs_from_min_to_max_on_the_percentile_axis() {
        let mut samples: Vec<Duration> = (1..=1000).rev().map(Duration::from_millis).collect();
        let summary = Summary::of(&mut samples);
        assert_eq!(
            (summary.p50, summary.p99, summary.max),
            (500.0, 990.0, 1000.0)
        );
        let curve = percentile_curve(&samples);
        assert_eq!(curve.first(), Some(&(1.0, 1.0)));
        assert_eq!(curve.last(), Some(&(1000.0, 1000.0)));
        // x = 100 is p99.
        let near_p99 = curve
            .iter()
            .min_by(|a, b| (a.0 - 100.0).abs().total_cmp(&(b.0 - 100.0).abs()))
            .unwrap();
        assert!((near_p99.1 - 990.0).abs() <= 1.0, "{near_p99:?}");
        assert!(
            curve
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1)
        );
    }

    #[test]
    fn a_phase_too_short_for_proc_stat_gives_no_whole_machine_figures() {
        let short = CpuMeter::start(Duration::ZERO).stop(Duration::from_millis(1));
        assert_eq!(short.machine_cores, None);
        assert_eq!(short.other_cores(), None);
        assert!(short.line().contains("not read"), "{}", short.line());
        let long = CpuShare {
            wall_secs: 2.0,
            generator_cores: 0.5,
            server_cores: 1.0,
            machine_cores: Some(1.75),
            io_stalled_ms: 0.0,
        };
        assert_eq!(long.other_cores(), Some(0.25));
        assert!(
            long.line().contains("rest of the machine 25%"),
            "{}",
            long.line()
        );
    }
}
