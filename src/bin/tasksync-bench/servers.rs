//! The servers under test: real `tasksync` release processes on a database made for the run,
//! and what /proc tells about them (resident memory, CPU time).

use std::{
    fs,
    net::SocketAddr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use sqlx::Connection as _;

use crate::{
    http::Client,
    stats::{proc_cpu_time, proc_rss_kib},
};

/// Every process signs cookies and stream names with it, so either process accepts a session
/// or a stream name made by the other, as in a real deployment.
const SECRET_KEY_BASE: &str = "tasksync-bench-shared-secret-0123456789abcdef0123456789";

/// Each process's database pool, set explicitly (it is also the app's default) so the pgbench
/// comparison knows how many connections the servers write through.
pub const SERVER_POOL_SIZE: usize = 10;

pub const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub enum Database {
    Sqlite { dir: PathBuf },
    Postgres { name: String },
}

impl Database {
    pub fn sqlite() -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("tasksync-bench-{:016x}", rand::random::<u64>()));
        fs::create_dir_all(&dir)?;
        Ok(Self::Sqlite { dir })
    }

    pub async fn postgres() -> Result<Self> {
        let name = format!("tasksync_bench_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(POSTGRES_ADMIN_URL)
            .await
            .with_context(|| {
                format!("PostgreSQL at {POSTGRES_ADMIN_URL} (needed for 2 processes)")
            })?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await?;
        Ok(Self::Postgres { name })
    }

    pub fn url(&self) -> String {
        match self {
            Self::Sqlite { dir } => format!("sqlite://{}/bench.sqlite3", dir.display()),
            Self::Postgres { name } => format!("postgres://postgres@127.0.0.1:5432/{name}"),
        }
    }

    /// The PostgreSQL database's name; `None` on SQLite.
    pub fn postgres_name(&self) -> Option<&str> {
        match self {
            Self::Postgres { name } => Some(name),
            Self::Sqlite { .. } => None,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "SQLite",
            Self::Postgres { .. } => "PostgreSQL",
        }
    }

    pub async fn remove(self) {
        match self {
            Self::Sqlite { dir } => {
                let _ = fs::remove_dir_all(dir);
            }
            Self::Postgres { name } => {
                if let Ok(mut conn) = sqlx::PgConnection::connect(POSTGRES_ADMIN_URL).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            }
        }
    }
}

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub origin: String,
    pub log: PathBuf,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Server {
    /// Starts the release binary and waits for `/up`.
    pub async fn start(binary: &Path, database_url: &str, log: PathBuf) -> Result<Self> {
        let port = free_port()?;
        let mut cmd = Command::new(binary);
        for key in ["RUST_LOG", "PUBSUB_ADAPTER", "WORKERS", "ALLOWED_ORIGINS"] {
            cmd.env_remove(key);
        }
        cmd.env("TASKSYNC_ENV", "production")
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATABASE_URL", database_url)
            .env("DATABASE_POOL_SIZE", SERVER_POOL_SIZE.to_string())
            .env("SECRET_KEY_BASE", SECRET_KEY_BASE)
            .env("SECURE_COOKIES", "false")
            .env("LOG_LEVEL", "warn")
            .env("LOG_FORMAT", "pretty")
            // The generator is thousands of clients behind one address, posting faster than
            // any person: the per-address and per-session limits would measure themselves.
            .env("MUTATIONS_PER_SECOND", "0")
            .env("MAX_CONNECTIONS_PER_ADDRESS", "0")
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?);
        // SAFETY: prctl is async-signal-safe. It makes the kernel stop the server if the
        // benchmark dies (Ctrl-C, panic) so no server outlives the run.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut server = Self {
            child,
            addr,
            origin: format!("http://{addr}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "tasksync exited at start ({status}); its log, {}:\n{}",
                    server.log.display(),
                    fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            let mut client = Client::new(addr);
            let last = match client.get("/up").await {
                Ok(res) if res.status == 200 => return Ok(server),
                Ok(res) => format!("status {}", res.status),
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() > deadline {
                server.stop().await;
                bail!("tasksync did not answer /up on {addr} within 30 s; the last try: {last}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_rss_kib(self.pid())
    }

    /// User plus system CPU time the process has used.
    pub fn cpu_time(&self) -> Duration {
        proc_cpu_time(self.pid())
    }

    /// SIGTERM, the graceful path; a kill if it has not exited in 15 s.
    pub async fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.pid() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A set of processes on one database, stopped and cleaned up together.
pub struct Deployment {
    pub servers: Vec<Server>,
    pub database: Option<Database>,
}

impl Deployment {
    /// One process on SQLite, or several on one PostgreSQL database.
    pub async fn start(binary: &Path, processes: usize, log_dir: &Path, tag: &str) -> Result<Self> {
        let database = if processes == 1 {
            Database::sqlite()?
        } else {
            Database::postgres().await?
        };
        let url = database.url();
        let mut deployment = Self {
            servers: Vec::new(),
            database: Some(database),
        };
        // One at a time: the first migrates the fresh database, the next find it ready.
        for i in 0..processes {
            let log = log_dir.join(format!("server-{tag}-{i}.log"));
            match Server::start(binary, &url, log).await {
                Ok(server) => deployment.servers.push(server),
                Err(e) => {
                    deployment.stop().await;
                    return Err(e);
                }
            }
        }
        Ok(deployment)
    }

    pub fn label(&self) -> String {
        let db = self.database.as_ref().map_or("?", Database::label);
        format!("{} process(es) on {db}", self.servers.len())
    }

    pub fn rss_kib(&self) -> u64 {
        self.servers.iter().map(Server::rss_kib).sum()
    }

    pub fn cpu_time(&self) -> Duration {
        self.servers.iter().map(Server::cpu_time).sum()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(Server::pid).collect()
    }

    pub async fn stop(&mut self) {
        for server in &mut self.servers {
            server.stop().await;
        }
        if let Some(database) = self.database.take() {
            database.remove().await;
        }
    }
}
