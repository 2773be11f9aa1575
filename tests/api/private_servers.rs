//! A PostgreSQL and a Redis of the test's own, which it may stop, start again and kill. The
//! shared servers serve every other test running in parallel, so a test that takes its database
//! or its Redis away needs one nobody else uses. Both live in a temporary folder, listen on a free
//! port on 127.0.0.1 (the same port after every restart) and are stopped when dropped, also when
//! the test panics. Missing binaries fail the test with a clear message: nothing is skipped.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Child, Output, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::helpers::free_port;

/// Whether this process runs as root (its effective user id is 0), read from /proc.
fn running_as_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .expect("an effective uid in /proc/self/status")
        == "0"
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Where PostgreSQL's server programs are: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian keeps them off the PATH).
fn postgres_bindir() -> PathBuf {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_tools(&dir) {
            return dir;
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, dir)) => dir,
        None => panic!(
            "the fault tests need PostgreSQL's server programs (initdb and pg_ctl) to run a \
             PostgreSQL of their own, and found them neither through `pg_config --bindir` nor in \
             /usr/lib/postgresql/*/bin. Install the PostgreSQL server (Debian: apt-get install \
             postgresql)."
        ),
    }
}

/// A PostgreSQL cluster of the test's own, with trust authentication for the `postgres` user.
pub struct PrivatePostgres {
    /// The socket folder; holds `data/` and `postgres.log`. Removed last, when dropped.
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    /// PostgreSQL refuses to run as root: as root, its programs run as the `postgres` user.
    as_postgres_user: bool,
}

impl PrivatePostgres {
    /// Creates a cluster in a temporary folder and starts it (a few seconds: initdb).
    pub async fn start() -> Self {
        let bindir = postgres_bindir();
        let dir = tempfile::tempdir().expect("temp dir");
        let as_postgres_user = running_as_root();
        if as_postgres_user {
            let chown = std::process::Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .output()
                .expect("chown runs");
            assert!(
                chown.status.success(),
                "running as root, the fault tests hand their PostgreSQL folder to the `postgres` \
                 user, which failed (is there a `postgres` user?): {}",
                describe(&chown)
            );
        }
        let postgres = Self {
            dir,
            bindir,
            port: free_port(),
            as_postgres_user,
        };
        let data = postgres.data_dir();
        let mut initdb: Vec<OsString> = vec!["-D".into(), data.into_os_string()];
        for arg in [
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        ] {
            initdb.push(arg.into());
        }
        let out = postgres.run("initdb", initdb).await;
        assert!(
            out.status.success(),
            "initdb failed for the private PostgreSQL: {}",
            describe(&out)
        );
        postgres.start_again().await;
        postgres
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The program and arguments that run `tool` with `args`, as the `postgres` user if need be.
    fn command_line(&self, tool: &str, args: Vec<OsString>) -> (OsString, Vec<OsString>) {
        let program = self.bindir.join(tool).into_os_string();
        if self.as_postgres_user {
            let mut all: Vec<OsString> = vec!["-u".into(), "postgres".into(), "--".into(), program];
            all.extend(args);
            ("runuser".into(), all)
        } else {
            (program, args)
        }
    }

    async fn run(&self, tool: &str, args: Vec<OsString>) -> Output {
        let (program, args) = self.command_line(tool, args);
        tokio::process::Command::new(&program)
            .args(&args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run {program:?} for the private PostgreSQL: {e}"))
    }

    fn pg_ctl_args(&self, action: &str, extra: &[&str]) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![action.into(), "-D".into(), self.data_dir().into()];
        args.extend(extra.iter().map(OsString::from));
        args
    }

    /// Starts the server on its port and waits until it accepts connections.
    pub async fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let mut args = self.pg_ctl_args("start", &["-w", "-t", "30", "-o"]);
        args.push(options.into());
        args.push("-l".into());
        args.push(self.log_file().into());
        let out = self.run("pg_ctl", args).await;
        assert!(
            out.status.success(),
            "the private PostgreSQL did not start on port {}: {}\nlog:\n{}",
            self.port,
            describe(&out),
            std::fs::read_to_string(self.log_file()).unwrap_or_default()
        );
    }

    /// Stops the server as an operator's restart does (`-m fast`: sessions are ended, open
    /// transactions rolled back) and waits until it is down.
    pub async fn stop(&self) {
        let out = self
            .run("pg_ctl", self.pg_ctl_args("stop", &["-m", "fast", "-w"]))
            .await;
        assert!(
            out.status.success(),
            "the private PostgreSQL did not stop: {}",
            describe(&out)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // `immediate`: nothing is left to keep, and a drop during a panic should not wait.
        let (program, args) = self.command_line(
            "pg_ctl",
            self.pg_ctl_args("stop", &["-m", "immediate", "-w"]),
        );
        let stopped = std::process::Command::new(program)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            // Not running (stopped by the test), or pg_ctl failed: make sure of the first.
            let pid = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
                .ok()
                .and_then(|f| f.lines().next().map(str::to_owned));
            if let Some(pid) = pid {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// A redis-server of the test's own, without persistence.
pub struct PrivateRedis {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let mut redis = Self {
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            child: None,
        };
        redis.start_again().await;
        redis
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Starts redis-server on its port (again) and waits until it answers PING.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "the private Redis is already running");
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--dir"])
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_file())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "the fault tests need redis-server on the PATH to run a Redis of their own \
                     and cannot start it: {e}. Install Redis (Debian: apt-get install \
                     redis-server)."
                )
            });
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.answers_ping().await {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!(
                    "the private redis-server on port {} exited ({status}); log:\n{}",
                    self.port,
                    std::fs::read_to_string(self.log_file()).unwrap_or_default()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the private redis-server did not answer PING on port {} within 10 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn answers_ping(&self) -> bool {
        let Ok(mut conn) = TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        if conn.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut reply = [0; 7];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), conn.read_exact(&mut reply)).await,
            Ok(Ok(_)) if &reply == b"+PONG\r\n"
        )
    }

    /// Kills the server with SIGKILL, as a crash would, and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
