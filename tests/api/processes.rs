//! Real `tasksync` processes, for what only separate processes can show: broadcasts crossing
//! between them, memory use, signals.

use std::{process::Stdio, time::Duration};

use tokio::process::{Child, Command};

/// The secret every test process shares, so a cookie or a signed stream name from one process
/// is good on another, as in a real deployment.
pub const SHARED_SECRET: &str = "shared-test-secret-0123456789abcdef0123456789";

/// A running server process; killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub address: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts the binary with `env` on a free port and waits until `/up` answers.
pub async fn start(env: &[(&str, &str)]) -> ServerProcess {
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
        .stdout(Stdio::null())
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
