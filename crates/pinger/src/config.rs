//! The pinger's configuration, read from the environment and `apis.toml`.

use std::path::PathBuf;
use std::time::Duration;

use apimon_core::apis::{self, Endpoint};
use apimon_core::shard::Shard;
use apimon_core::{ConfigError, DbConfig, Env};

/// Connections the pinger holds at once: see [`DbConfig::require_pool`].
pub const POOL_NEEDED: u32 = 2;
const POOL_HOLDS: &str = "the writer's flush and the retention task";

/// Everything the pinger needs, validated.
#[derive(Debug, Clone)]
pub struct PingerConfig {
    pub db: DbConfig,
    /// Where the endpoints came from (`APIS_FILE`).
    pub apis_file: PathBuf,
    /// Every endpoint in the file; [`PingerConfig::owned_endpoints`] filters
    /// them by shard.
    pub endpoints: Vec<Endpoint>,
    /// This replica's share of the endpoints (`PINGER_SHARD`).
    pub shard: Shard,
    /// Rows kept in memory while the database is unreachable
    /// (`PINGER_BUFFER_SIZE`); beyond it the oldest are dropped.
    pub buffer_capacity: usize,
    /// Time between two flushes to the database (`PINGER_FLUSH_INTERVAL`).
    pub flush_interval: Duration,
    /// Most rows in one INSERT (`PINGER_BATCH_SIZE`).
    pub batch_size: usize,
    /// How long shutdown waits for requests in flight and the last flush
    /// (`SHUTDOWN_GRACE`).
    pub shutdown_grace: Duration,
    /// Days of data kept (`RETENTION_DAYS`).
    pub retention_days: u32,
    /// Sent as `User-Agent` unless an endpoint sets its own
    /// (`PINGER_USER_AGENT`).
    pub user_agent: String,
    /// Time between two summary lines in the log (`PINGER_SUMMARY_INTERVAL`);
    /// default: the shortest endpoint interval, one "round".
    pub summary_interval: Duration,
    /// `/healthz` and `/metrics` (`PINGER_HTTP_PORT`, 9101; 0 turns it off).
    pub http: Option<std::net::SocketAddr>,
    /// Time between two handshake-only probes of an https endpoint's
    /// certificate (`PINGER_TLS_RECHECK`, 1h; 0 turns them off): see
    /// `crate::certificate`.
    pub tls_recheck: Duration,
}

impl PingerConfig {
    pub fn from_env(env: &Env) -> Result<PingerConfig, ConfigError> {
        let db = DbConfig::from_env(env)?;
        db.require_pool(POOL_NEEDED, POOL_HOLDS)?;
        let apis_file = PathBuf::from(env.get("APIS_FILE").unwrap_or("./apis.toml"));
        let endpoints = apis::load_file(&apis_file, env)?;
        let shard = Shard::from_env(env, "PINGER_SHARD")?;
        let buffer_capacity = env.int_in("PINGER_BUFFER_SIZE", 100_000usize, 1..=100_000_000)?;
        let flush_interval =
            env.duration_or("PINGER_FLUSH_INTERVAL", Duration::from_millis(250))?;
        if flush_interval.is_zero() || flush_interval > Duration::from_secs(1) {
            return Err(ConfigError::new(
                "PINGER_FLUSH_INTERVAL",
                "expected a duration above 0 and at most 1s",
            ));
        }
        let batch_size = env.int_in("PINGER_BATCH_SIZE", 5_000usize, 1..=100_000)?;
        let shutdown_grace = env.duration_or("SHUTDOWN_GRACE", Duration::from_secs(10))?;
        let retention_days = env.retention_days()?;
        let user_agent = env
            .get("PINGER_USER_AGENT")
            .unwrap_or(concat!("apimon-pinger/", env!("CARGO_PKG_VERSION")))
            .to_string();
        let shortest = endpoints
            .iter()
            .map(|e| e.interval)
            .min()
            .unwrap_or(apis::DEFAULT_INTERVAL);
        let summary_interval = env.duration_or("PINGER_SUMMARY_INTERVAL", shortest)?;
        if summary_interval.is_zero() {
            return Err(ConfigError::new(
                "PINGER_SUMMARY_INTERVAL",
                "expected a duration above 0",
            ));
        }
        let tls_recheck =
            env.duration_or("PINGER_TLS_RECHECK", crate::check::DEFAULT_TLS_RECHECK)?;
        let http = apimon_core::health::http_addr(env, "pinger", 9101)?;
        if http.is_none() {
            if let Some(ep) = endpoints
                .iter()
                .find(|e| matches!(e.probe, apis::Probe::Heartbeat(_)))
            {
                return Err(ConfigError::new(
                    "PINGER_HTTP_PORT",
                    format!(
                        "0 turns off the HTTP port, where heartbeat endpoints such as `{}` \
                         receive POST /heartbeat/<token>: give it a port",
                        ep.name
                    ),
                ));
            }
        }
        Ok(PingerConfig {
            http,
            tls_recheck,
            db,
            apis_file,
            endpoints,
            shard,
            buffer_capacity,
            flush_interval,
            batch_size,
            shutdown_grace,
            retention_days,
            user_agent,
            summary_interval,
        })
    }

    /// The endpoints this replica checks.
    pub fn owned_endpoints(&self) -> Vec<Endpoint> {
        self.endpoints
            .iter()
            .filter(|e| self.shard.owns(&e.name))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_smaller_than_what_the_pinger_holds_at_once_is_refused() {
        let small = (POOL_NEEDED - 1).to_string();
        let e = PingerConfig::from_env(&Env::from_pairs([("DB_POOL_SIZE", small)])).unwrap_err();
        assert_eq!(e.key, "DB_POOL_SIZE");
        assert!(e.message.contains("retention"), "{e}");
    }
}
