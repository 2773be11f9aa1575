//! Latency summaries and CPU accounting.

use std::time::{Duration, Instant};

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

pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// CPU the benchmark process itself has used, user plus system, all threads.
fn own_cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we hand it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Where the CPU went during a phase: the generator's own share against the servers'.
pub struct CpuMeter {
    wall: Instant,
    generator: Duration,
    servers: Duration,
}

#[derive(Clone, Copy, Default)]
pub struct CpuShare {
    pub wall_secs: f64,
    /// Cores' worth of CPU used, on average (1.0 = one core busy the whole time).
    pub generator_cores: f64,
    pub server_cores: f64,
}

impl CpuMeter {
    pub fn start(servers: Duration) -> Self {
        Self {
            wall: Instant::now(),
            generator: own_cpu_time(),
            servers,
        }
    }

    pub fn stop(&self, servers: Duration) -> CpuShare {
        let wall = self.wall.elapsed().as_secs_f64().max(1e-9);
        CpuShare {
            wall_secs: wall,
            generator_cores: (own_cpu_time() - self.generator).as_secs_f64() / wall,
            server_cores: servers.saturating_sub(self.servers).as_secs_f64() / wall,
        }
    }
}

impl CpuShare {
    pub fn json(&self) -> Value {
        json!({
            "wall_secs": round(self.wall_secs),
            "generator_cores": round(self.generator_cores),
            "server_cores": round(self.server_cores),
            "generator_share_of_machine": round(self.generator_cores / cores() as f64),
        })
    }

    pub fn line(&self) -> String {
        format!(
            "CPU: load generator {:.0}% of one core ({:.0}% of the machine), servers {:.0}% of one core",
            self.generator_cores * 100.0,
            self.generator_cores * 100.0 / cores() as f64,
            self.server_cores * 100.0
        )
    }
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
