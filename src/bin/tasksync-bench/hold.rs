//! Holding more sockets than one process may open: the pairs beyond the flood are opened by
//! worker processes (this same binary, run with `--hold-worker`), each under its own open-file
//! limit and from its own loopback address. A worker reads one job from stdin, connects its
//! pairs in bounded waves, reports progress and then its outcome on stdout, and keeps the
//! sockets open until its stdin closes.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use futures_util::{StreamExt as _, stream};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    process::{Child, ChildStdin, ChildStdout, Command},
};

use crate::{stats, ws};

pub const WORKER_FLAG: &str = "--hold-worker";

/// One cable + presence pair to open: the room it is in and who opens it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairSpec {
    pub origin: String,
    pub cookie: String,
    pub room: i64,
    pub identifier: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Job {
    source: Ipv4Addr,
    concurrency: usize,
    deadline_secs: u64,
    pairs: Vec<PairSpec>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub connected: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    /// Handshake times, microseconds.
    pub cable_us: Vec<u64>,
    pub presence_us: Vec<u64>,
}

/// The worker's side: run by `main` when the binary is started with [`WORKER_FLAG`].
pub async fn worker() -> Result<()> {
    // Plain blocking stdio: one line in at the start, a few short lines out, one wait at the end.
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let job: Job = serde_json::from_str(&line).context("hold job")?;
    let source = Some(IpAddr::V4(job.source));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(job.deadline_secs);
    let total = job.pairs.len();

    let mut attempts = stream::iter(job.pairs)
        .map(|pair| async move {
            let open = async {
                let start = Instant::now();
                let cable = ws::cable(&pair.origin, &pair.cookie, &pair.identifier, source)
                    .await
                    .context("cable")?;
                let cable_took = start.elapsed();
                let start = Instant::now();
                let presence = ws::presence(&pair.origin, &pair.cookie, pair.room, source)
                    .await
                    .context("presence")?;
                anyhow::Ok(((cable, cable_took), (presence, start.elapsed())))
            };
            match tokio::time::timeout(ws::CONNECT_TIMEOUT * 2, open).await {
                Ok(result) => result,
                Err(_) => bail!("pair not open within {:?}", ws::CONNECT_TIMEOUT * 2),
            }
        })
        .buffer_unordered(job.concurrency.max(1));

    let mut out = std::io::stdout();
    let mut outcome = Outcome::default();
    let mut held = Vec::with_capacity(total * 2);
    let mut last_report = Instant::now();
    loop {
        match tokio::time::timeout_at(deadline, attempts.next()).await {
            Ok(Some(Ok(((cable, cable_took), (presence, presence_took))))) => {
                outcome.connected += 1;
                outcome.cable_us.push(cable_took.as_micros() as u64);
                outcome.presence_us.push(presence_took.as_micros() as u64);
                held.push(ws::hold(cable));
                held.push(ws::hold(presence));
            }
            Ok(Some(Err(e))) => {
                outcome.failed += 1;
                outcome.first_error.get_or_insert(format!("{e:#}"));
            }
            Ok(None) => break,
            Err(_) => {
                outcome.first_error.get_or_insert(format!(
                    "{} s deadline reached with pairs still opening",
                    job.deadline_secs
                ));
                break;
            }
        }
        if last_report.elapsed() > Duration::from_millis(250) {
            let done = outcome.connected + outcome.failed;
            writeln!(out, "progress {done}")?;
            out.flush()?;
            last_report = Instant::now();
        }
    }
    drop(attempts);
    outcome.failed = total - outcome.connected;
    let report = serde_json::to_string(&outcome)?;
    writeln!(out, "done {report}")?;
    out.flush()?;

    // Hold until the parent closes our stdin (or dies).
    let _ = tokio::task::spawn_blocking(|| {
        let mut rest = Vec::new();
        std::io::stdin().read_to_end(&mut rest)
    })
    .await;
    for socket in held {
        socket.abort();
    }
    Ok(())
}

/// The parent's handle on one worker.
pub struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pid: u32,
}

impl Worker {
    /// Starts a worker on `pairs`, connecting from `source`, `concurrency` at a time.
    pub async fn start(
        pairs: Vec<PairSpec>,
        source: Ipv4Addr,
        concurrency: usize,
        deadline: Duration,
    ) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg(WORKER_FLAG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("start a hold worker")?;
        let pid = child.id().context("worker pid")?;
        stats::add_helper(pid);
        let mut stdin = child.stdin.take().context("worker stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("worker stdout")?);
        let job = Job {
            source,
            concurrency,
            deadline_secs: deadline.as_secs().max(1),
            pairs,
        };
        stdin
            .write_all((serde_json::to_string(&job)? + "\n").as_bytes())
            .await?;
        stdin.flush().await?;
        Ok(Self {
            child,
            stdin: Some(stdin),
            stdout,
            pid,
        })
    }

    /// Reads the worker's reports: `progress(n)` for every progress line, then its outcome.
    pub async fn outcome(&mut self, mut progress: impl FnMut(usize)) -> Result<Outcome> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line).await? == 0 {
                bail!("hold worker {} exited without an outcome", self.pid);
            }
            if let Some(n) = line.trim().strip_prefix("progress ") {
                progress(n.parse().unwrap_or(0));
            } else if let Some(json) = line.trim().strip_prefix("done ") {
                return serde_json::from_str(json).context("hold worker outcome");
            }
        }
    }

    /// Closes the worker's stdin, so it closes its sockets and exits; kills it after 10 s.
    pub async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        stats::remove_helper(self.pid);
    }
}

/// The loopback address worker `i` connects from: 127.0.0.2, 127.0.0.3, ...
pub fn source_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (i % 250) as u8)
}
