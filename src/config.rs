//! Settings: `config/default.toml`, then `config/<environment>.toml`, then environment variables
//! named after each key in upper case (`PORT`, `DATABASE_URL`, `SECRET_KEY_BASE`, ...). The files
//! are compiled into the binary, so it runs from any directory; the environment is picked by
//! `TASKSYNC_ENV` (development, test or production; development when unset).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use figment::{
    Figment,
    providers::{Env, Format as _, Toml},
};
use serde::Deserialize;

use crate::{
    presence::PresenceConfig,
    pubsub::{AdapterConfig, HistoryWindow},
};

/// Which set of defaults applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Test,
    Production,
}

impl Environment {
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var("TASKSYNC_ENV").as_deref() {
            Err(_) | Ok("") | Ok("development") => Ok(Self::Development),
            Ok("test") => Ok(Self::Test),
            Ok("production") => Ok(Self::Production),
            Ok(other) => {
                bail!("TASKSYNC_ENV must be development, test or production, not {other:?}")
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Test => "test",
            Self::Production => "production",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Self::Development => include_str!("../config/development.toml"),
            Self::Test => include_str!("../config/test.toml"),
            Self::Production => include_str!("../config/production.toml"),
        }
    }
}

/// Every key the configuration files and environment variables may set.
pub const KEYS: &[&str] = &[
    "host",
    "port",
    "workers",
    "shutdown_timeout_secs",
    "database_url",
    "database_pool_size",
    "secret_key_base",
    "secret_key_base_previous",
    "secure_cookies",
    "max_body_bytes",
    "max_tasks_per_room",
    "mutation_burst",
    "mutations_per_second",
    "mutation_rate_sessions",
    "max_connections_per_address",
    "client_request_timeout_ms",
    "history_limit",
    "history_ttl_secs",
    "pubsub_adapter",
    "redis_url",
    "pubsub_channel",
    "allowed_origins",
    "log_level",
    "log_format",
    "metrics_token",
    "trusted_proxies",
    "presence_ping_interval_ms",
    "presence_idle_timeout_ms",
];

/// The environment variable that overrides `key`: the key in upper case (`PORT` for `port`).
pub fn env_var(key: &str) -> String {
    key.to_ascii_uppercase()
}

/// The key an environment variable overrides, if it names one: the inverse of [`env_var`],
/// ignoring case as the loader does.
pub fn key_for_env_var(name: &str) -> Option<&'static str> {
    KEYS.iter()
        .copied()
        .find(|key| env_var(key).eq_ignore_ascii_case(name))
}

/// The application's settings, resolved.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    #[serde(skip, default = "default_environment")]
    pub environment: Environment,
    pub host: String,
    pub port: u16,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// How long a graceful shutdown may take before connections are dropped.
    pub shutdown_timeout_secs: u64,
    pub database_url: Option<String>,
    pub database_pool_size: u32,
    pub secret_key_base: Option<String>,
    /// Comma-separated secrets from before a rotation: they still verify, never sign.
    #[serde(default)]
    pub secret_key_base_previous: Option<String>,
    pub secure_cookies: bool,
    pub max_body_bytes: usize,
    pub max_tasks_per_room: i64,
    /// Mutations one session may make at once, then per second (0 per second: no limit), and
    /// how many sessions' allowances each process tracks at most.
    pub mutation_burst: u32,
    pub mutations_per_second: f64,
    pub mutation_rate_sessions: usize,
    /// Sockets (cable and presence together) one client address may hold open; 0: no limit.
    pub max_connections_per_address: usize,
    /// How long a client may take to send a request's headers before it gets 408.
    pub client_request_timeout_ms: u64,
    /// Messages each stream keeps for clients catching up, and for how long.
    pub history_limit: usize,
    pub history_ttl_secs: u64,
    /// auto, in_process, postgres or redis.
    pub pubsub_adapter: String,
    pub redis_url: String,
    pub pubsub_channel: String,
    /// Comma-separated origins allowed to open sockets; empty means the app's own origin.
    pub allowed_origins: String,
    pub log_level: String,
    pub log_format: LogFormat,
    /// Unset or empty: `GET /metrics` answers 404. Set: it wants `Authorization: Bearer <this>`.
    pub metrics_token: Option<String>,
    /// Comma-separated addresses or CIDR ranges whose X-Forwarded-* headers are believed.
    pub trusted_proxies: String,
    /// How often the server pings each presence socket (0: never), and how long a presence
    /// socket may stay silent (no frame, no pong) before it is closed (0: forever).
    pub presence_ping_interval_ms: u64,
    pub presence_idle_timeout_ms: u64,
}

fn default_environment() -> Environment {
    Environment::Development
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A secret shorter than this is refused: it would make cookies forgeable by brute force.
const MIN_SECRET_LEN: usize = 32;

impl Settings {
    /// Reads the settings for `environment` from the files and the process environment.
    pub fn load(environment: Environment) -> anyhow::Result<Self> {
        let mut settings: Settings = Figment::new()
            .merge(Toml::string(include_str!("../config/default.toml")))
            .merge(Toml::string(environment.file()))
            .merge(Env::raw().filter_map(|name| key_for_env_var(name.as_str()).map(Into::into)))
            .extract()
            .context("invalid configuration")?;
        settings.environment = environment;
        // Refuse contradictory timings before anything starts.
        settings.presence()?;
        Ok(settings)
    }

    /// Where the database lives: `DATABASE_URL`, or SQLite under `storage/`.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://storage/{}.sqlite3", self.environment.name()))
    }

    /// Which pub/sub adapter carries broadcasts between processes. `auto` picks PostgreSQL
    /// LISTEN/NOTIFY when the database is PostgreSQL, and the in-process adapter otherwise.
    pub fn pubsub(&self) -> anyhow::Result<AdapterConfig> {
        let database = self.database_url();
        let is_postgres = database.starts_with("postgres:") || database.starts_with("postgresql:");
        match self.pubsub_adapter.as_str() {
            "auto" if is_postgres => Ok(AdapterConfig::Postgres { url: database }),
            "auto" | "in_process" => Ok(AdapterConfig::InProcess),
            "postgres" if is_postgres => Ok(AdapterConfig::Postgres { url: database }),
            "postgres" => {
                bail!("PUBSUB_ADAPTER=postgres needs DATABASE_URL to be a PostgreSQL URL")
            }
            "redis" => Ok(AdapterConfig::Redis {
                url: self.redis_url.clone(),
                channel: self.pubsub_channel.clone(),
            }),
            other => {
                bail!("PUBSUB_ADAPTER must be auto, in_process, postgres or redis, not {other:?}")
            }
        }
    }

    /// How much of each stream's history is kept for clients catching up.
    pub fn history_window(&self) -> HistoryWindow {
        HistoryWindow {
            limit: self.history_limit,
            ttl: std::time::Duration::from_secs(self.history_ttl_secs),
        }
    }

    /// Presence's timings and limits, with the server pings and idle timeout set here. An idle
    /// timeout needs pings (a quiet client sends nothing else) at a shorter interval.
    pub fn presence(&self) -> anyhow::Result<PresenceConfig> {
        let ping = self.presence_ping_interval_ms;
        let idle = self.presence_idle_timeout_ms;
        if idle != 0 && (ping == 0 || idle <= ping) {
            bail!(
                "PRESENCE_IDLE_TIMEOUT_MS ({idle}) must be longer than PRESENCE_PING_INTERVAL_MS \
                 ({ping}), which must not be 0 (or set the idle timeout to 0 to turn it off)"
            );
        }
        let millis = |ms: u64| (ms != 0).then(|| std::time::Duration::from_millis(ms));
        Ok(PresenceConfig {
            ping_interval: millis(ping),
            idle_timeout: millis(idle),
            ..PresenceConfig::default()
        })
    }

    /// The secrets `SECRET_KEY_BASE_PREVIOUS` lists, for a rotation in progress.
    pub fn previous_secrets(&self) -> Vec<String> {
        self.secret_key_base_previous
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The secret that signs cookies. Production insists on `SECRET_KEY_BASE`; elsewhere a
    /// random one is generated once and kept in `storage/<environment>_secret.txt`.
    pub fn secret_key_base(&self) -> anyhow::Result<String> {
        if let Some(secret) = self.secret_key_base.as_deref() {
            if secret.len() < MIN_SECRET_LEN {
                bail!("SECRET_KEY_BASE must be at least {MIN_SECRET_LEN} characters long");
            }
            return Ok(secret.to_owned());
        }
        if self.environment == Environment::Production {
            bail!(
                "SECRET_KEY_BASE is not set: production needs a secret of at least \
                 {MIN_SECRET_LEN} characters (generate one with `openssl rand -hex 64`)"
            );
        }
        let path = PathBuf::from(format!("storage/{}_secret.txt", self.environment.name()));
        local_secret(&path)
    }
}

fn local_secret(path: &Path) -> anyhow::Result<String> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let existing = existing.trim();
        if existing.len() >= MIN_SECRET_LEN {
            return Ok(existing.to_owned());
        }
    }
    let secret: String = (0..64)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, &secret).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_refuses_to_start_without_a_secret() {
        let mut settings = Settings::load(Environment::Production).unwrap();
        settings.secret_key_base = None;
        let err = settings.secret_key_base().unwrap_err().to_string();
        assert!(err.contains("SECRET_KEY_BASE is not set"), "{err}");
    }

    #[test]
    fn short_secrets_are_refused() {
        let mut settings = Settings::load(Environment::Test).unwrap();
        settings.secret_key_base = Some("too-short".into());
        assert!(settings.secret_key_base().is_err());
    }

    #[test]
    fn a_local_secret_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/secret.txt");
        let first = local_secret(&path).unwrap();
        assert_eq!(first.len(), 128);
        assert_eq!(local_secret(&path).unwrap(), first);
    }

    #[test]
    fn environment_variables_are_the_keys_in_upper_case() {
        assert_eq!(env_var("database_url"), "DATABASE_URL");
        assert_eq!(key_for_env_var("DATABASE_URL"), Some("database_url"));
        assert_eq!(key_for_env_var("database_url"), Some("database_url"));
        assert_eq!(
            key_for_env_var("PRESENCE_IDLE_TIMEOUT_MS"),
            Some("presence_idle_timeout_ms")
        );
        assert_eq!(key_for_env_var("HOME"), None);
        assert_eq!(key_for_env_var("TASKSYNC_ENV"), None);
    }

    #[test]
    fn presence_pings_and_idle_timeout_come_from_the_settings() {
        let mut settings = Settings::load(Environment::Test).unwrap();
        let config = settings.presence().unwrap();
        assert_eq!(
            config.ping_interval,
            Some(std::time::Duration::from_secs(5))
        );
        assert_eq!(
            config.idle_timeout,
            Some(std::time::Duration::from_secs(15))
        );

        settings.presence_ping_interval_ms = 200;
        settings.presence_idle_timeout_ms = 0;
        let config = settings.presence().unwrap();
        assert_eq!(
            config.ping_interval,
            Some(std::time::Duration::from_millis(200))
        );
        assert_eq!(config.idle_timeout, None);

        for (ping, idle) in [(0, 1000), (1000, 1000), (1000, 500)] {
            settings.presence_ping_interval_ms = ping;
            settings.presence_idle_timeout_ms = idle;
            assert!(
                settings.presence().is_err(),
                "{ping} ms pings, {idle} ms idle"
            );
        }
    }

    #[test]
    fn the_embedded_defaults_parse_for_every_environment() {
        for env in [
            Environment::Development,
            Environment::Test,
            Environment::Production,
        ] {
            let settings = Settings::load(env).unwrap();
            assert_eq!(settings.environment, env);
            assert!(settings.max_tasks_per_room > 0);
        }
    }
}
