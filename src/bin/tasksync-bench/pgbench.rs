//! PostgreSQL's own ceiling for the HTTP phase's writes: Debian's `pgbench` runs the statements
//! a task POST and its DELETE run (the same SQL as `src/store/mod.rs`, prepared, in the same
//! room, so on the same row lock) against the benchmark's database, with as many clients as the
//! HTTP phase had users. Its rate is the most any app on this PostgreSQL could commit.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::stats::{CpuMeter, CpuShare, round};

/// One script run is one task created and deleted: two of tasksync's mutations, each its own
/// transaction, with the room touch that takes the room's row lock first (`src/store/mod.rs`).
const STORE: &str = "\
-- create_task
BEGIN;
UPDATE rooms SET updated_at = CURRENT_TIMESTAMP WHERE id = :room;
SELECT COUNT(*) FILTER (WHERE NOT done) AS open, COUNT(*) FILTER (WHERE done) AS done FROM tasks WHERE room_id = :room;
INSERT INTO tasks (room_id, title, notes, updated_by) VALUES (:room, 'pgbench task', '', 'pgbench') RETURNING id, room_id, title, notes, done, lock_version, updated_by \\gset
{broadcast}COMMIT;
-- delete_task
BEGIN;
UPDATE rooms SET updated_at = CURRENT_TIMESTAMP WHERE id = :room;
DELETE FROM tasks WHERE room_id = :room AND id = :id;
SELECT COUNT(*) FILTER (WHERE NOT done) AS open, COUNT(*) FILTER (WHERE done) AS done FROM tasks WHERE room_id = :room;
{broadcast}COMMIT;
";

/// What the PostgreSQL pub/sub adapter adds to each change (`src/pubsub/postgres.rs`): the
/// message appended to the stream's history (which takes the stream's row lock) and its NOTIFY,
/// on a channel and a stream of pgbench's own so the servers' listeners ignore them.
const BROADCAST: &str = "\
WITH next AS (INSERT INTO tasksync_streams (stream, last_offset) VALUES (:stream, 1) ON CONFLICT (stream) DO UPDATE SET last_offset = tasksync_streams.last_offset + 1 RETURNING last_offset), kept AS (INSERT INTO tasksync_stream_messages (stream, stream_offset, payload) SELECT :stream, last_offset, :payload FROM next RETURNING stream_offset), trimmed AS (DELETE FROM tasksync_stream_messages WHERE stream = :stream AND stream_offset <= (SELECT last_offset FROM next) - 100) SELECT stream_offset FROM kept;
SELECT pg_notify('tasksync_bench_pgbench', :stream);
";

/// Which statements a script run executes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// The store's statements only.
    Store,
    /// The store's, plus the broadcast's history append and NOTIFY in the same transaction.
    WithBroadcast,
}

impl Script {
    pub fn label(self) -> &'static str {
        match self {
            Self::Store => "store statements",
            Self::WithBroadcast => "store + broadcast history and NOTIFY",
        }
    }

    fn text(self) -> String {
        STORE.replace(
            "{broadcast}",
            match self {
                Self::Store => "",
                Self::WithBroadcast => BROADCAST,
            },
        )
    }
}

/// About the size of a task's turbo-stream broadcast.
const PAYLOAD_BYTES: usize = 600;

pub struct PgbenchRun {
    pub script: Script,
    pub clients: usize,
    pub secs: u64,
    /// Script runs per second, as pgbench counts them (each is two mutations).
    pub tps: f64,
    pub latency_ms: f64,
    pub failed: u64,
    pub cpu: CpuShare,
}

impl PgbenchRun {
    pub fn mutations_per_sec(&self) -> f64 {
        self.tps * 2.0
    }

    pub fn json(&self) -> Value {
        json!({
            "script": self.script.label(),
            "clients": self.clients,
            "secs": self.secs,
            "script_runs_per_sec": round(self.tps),
            "mutations_per_sec": round(self.mutations_per_sec()),
            "latency_avg_ms": round(self.latency_ms),
            "failed": self.failed,
            "cpu": self.cpu.json(),
        })
    }
}

fn binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("pgbench"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| Some(e.ok()?.path().join("bin").join("pgbench")))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        found.pop()
    })
}

/// Runs `script` for `secs` with `clients` connections on `database`, in room `room`.
/// `cpu_of_servers` reads the tasksync processes' CPU time, for the CPU share.
pub async fn run(
    script: Script,
    database: &str,
    room: i64,
    clients: usize,
    secs: u64,
    cpu_of_servers: impl Fn() -> Duration,
) -> Result<PgbenchRun> {
    let pgbench =
        binary().context("pgbench not found (Debian: apt-get install postgresql-client)")?;
    let file = std::env::temp_dir().join(format!(
        "tasksync-bench-pgbench-{:016x}.sql",
        rand::random::<u64>()
    ));
    std::fs::write(&file, script.text())?;
    let threads = crate::stats::cores().min(clients).max(1);
    let meter = CpuMeter::start(cpu_of_servers());
    let run = Command::new(pgbench)
        .args(["-h", "127.0.0.1", "-p", "5432", "-U", "postgres"])
        .args(["-n", "-M", "prepared"])
        .arg(format!("--client={clients}"))
        .arg(format!("--jobs={threads}"))
        .arg(format!("--time={secs}"))
        .arg(format!("--define=room={room}"))
        .arg("--define=stream=pgbench")
        .arg(format!("--define=payload={}", "x".repeat(PAYLOAD_BYTES)))
        .arg(format!("--file={}", file.display()))
        .arg(database)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(secs + 60), run).await;
    let cpu = meter.stop(cpu_of_servers());
    let _ = std::fs::remove_file(&file);
    let output = output.context("pgbench did not finish in time")??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let field = |prefix: &str| {
        stdout.lines().find_map(|l| {
            l.strip_prefix(prefix)?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
    };
    Ok(PgbenchRun {
        script,
        clients,
        secs,
        tps: field("tps = ").context("pgbench printed no tps")?,
        latency_ms: field("latency average = ").unwrap_or(0.0),
        failed: field("number of failed transactions: ").unwrap_or(0.0) as u64,
        cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::Script;

    #[test]
    fn scripts_are_two_transactions_with_the_store_statements() {
        for script in [Script::Store, Script::WithBroadcast] {
            let text = script.text();
            assert!(!text.contains("{broadcast}"));
            assert_eq!(text.matches("BEGIN;").count(), 2);
            assert_eq!(text.matches("COMMIT;").count(), 2);
            assert_eq!(text.matches("UPDATE rooms SET updated_at").count(), 2);
            assert!(text.contains(
                "RETURNING id, room_id, title, notes, done, lock_version, updated_by \\gset"
            ));
            assert_eq!(text.contains("pg_notify"), script == Script::WithBroadcast);
        }
    }
}
