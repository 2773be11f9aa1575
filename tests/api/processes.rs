//! Real `tasksync` processes, for what only separate processes can show: broadcasts crossing
//! between them, memory use, signals.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::helpers::{Backend, TestApp, TestDatabase, free_port};

/// The secret every test process shares, so a cookie or a signed stream name from one process
/// is good on another, as in a real deployment.
pub const SHARED_SECRET: &str = "shared-test-secret-0123456789abcdef0123456789";

/// A running server process; killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub address: String,
}

/// Starts the binary with `env` on a free port and waits until `/up` answers.
pub async fn start(env: &[(&str, &str)]) -> ServerProcess {
    start_with_stdout(env, Stdio::null()).await
}

/// Starts the binary as [`start`] does, logging JSON at info level to its piped standard output.
pub async fn start_logging_json(env: &[(&str, &str)]) -> ServerProcess {
    let env: Vec<(&str, &str)> = [("LOG_FORMAT", "json"), ("LOG_LEVEL", "info")]
        .into_iter()
        .chain(env.iter().copied())
        .collect();
    start_with_stdout(&env, Stdio::piped()).await
}

/// Starts the binary as [`start`] does, its standard output going to `stdout`.
async fn start_with_stdout(env: &[(&str, &str)], stdout: Stdio) -> ServerProcess {
    let port = free_port();
    let dir = std::env::temp_dir();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tasksync"));
    for key in [
        "DATABASE_URL",
        "PUBSUB_ADAPTER",
        "PUBSUB_CHANNEL",
        "RUST_LOG",
        "PORT",
    ] {
        cmd.env_remove(key);
    }
    cmd.current_dir(dir)
        .env("TASKSYNC_ENV", "test")
        .env("PORT", port.to_string())
        .env("SECRET_KEY_BASE", SHARED_SECRET)
        .env("LOG_LEVEL", "warn")
        .envs(env.iter().copied())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("the tasksync binary starts");
    let address = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(res) = client.get(format!("{address}/up")).send().await
            && res.status().is_success()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tasksync did not answer /up on {address} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ServerProcess { child, address }
}

/// Waits until a captured JSON log line satisfies `found`, and returns it.
pub async fn log_line_where(lines: &Mutex<Vec<Value>>, found: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(line) = lines.lock().unwrap().iter().find(|l| found(l)) {
            return line.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no such log line in {:#?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl ServerProcess {
    /// The process's resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// `/up` as JSON.
    pub async fn up(&self) -> serde_json::Value {
        reqwest::get(format!("{}/up", self.address))
            .await
            .expect("GET /up")
            .json()
            .await
            .expect("JSON")
    }
}

/// Server processes sharing one fresh PostgreSQL database, each started with the same environment.
pub struct Cluster {
    pub database: Arc<TestDatabase>,
    /// The database's URL.
    pub url: String,
    /// What every process is started with: `DATABASE_URL`, then the rest.
    env: Vec<(String, String)>,
}

impl Cluster {
    /// A fresh PostgreSQL database, for processes started with `env` beside its `DATABASE_URL`.
    pub async fn new(env: &[(&str, &str)]) -> Cluster {
        let (database, url) = TestDatabase::create(Backend::Postgres).await;
        let env = std::iter::once(("DATABASE_URL", url.as_str()))
            .chain(env.iter().copied())
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
        Cluster {
            database: Arc::new(database),
            url,
            env,
        }
    }

    /// Starts one more process on the database.
    pub async fn start(&self) -> ServerProcess {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        start(&env).await
    }

    /// A client, with a cookie jar of its own, of the server at `address`.
    pub fn client(&self, address: &str) -> TestApp {
        TestApp::at(address.to_owned(), Backend::Postgres, self.database.clone())
    }
}
