//! Each service's own HTTP port: `/healthz` (200 only while the database
//! answers and the service's loop is alive) and `/metrics` (Prometheus text
//! format, from the `metrics` facade).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::{ConfigError, Env};

/// Liveness shared by a service's loop and its `/healthz`.
#[derive(Debug)]
pub struct Health {
    /// Why the service cannot do its work now (`None`: the last database
    /// operation succeeded). Starts as "connecting to the database".
    problem: Mutex<Option<String>>,
    /// When this `Health` was made: heartbeats count from it on the
    /// monotonic clock, which a wall-clock step (NTP, a VM resumed) cannot
    /// move.
    origin: Instant,
    /// Milliseconds after `origin` of the loop's last heartbeat.
    beat: AtomicU64,
    /// A loop silent for longer than this is dead.
    stale_after: Duration,
}

impl Health {
    pub fn new(stale_after: Duration) -> Arc<Health> {
        Arc::new(Health {
            problem: Mutex::new(Some("connecting to the database".into())),
            origin: Instant::now(),
            beat: AtomicU64::new(0),
            stale_after,
        })
    }

    /// The loop is alive.
    pub fn beat(&self) {
        self.beat.store(self.elapsed_ms(), Ordering::Relaxed);
    }

    /// The last database operation succeeded (`true`) or failed.
    pub fn set_db(&self, ok: bool) {
        self.set(if ok {
            None
        } else {
            Some("database unreachable".into())
        });
    }

    /// The service cannot work, and why (shown by `/healthz`).
    pub fn set_problem(&self, reason: impl Into<String>) {
        self.set(Some(reason.into()));
    }

    fn set(&self, problem: Option<String>) {
        metrics::gauge!("apimon_database_up").set(if problem.is_none() { 1.0 } else { 0.0 });
        let mut p = self.problem.lock().unwrap_or_else(|e| e.into_inner());
        *p = problem;
    }

    /// `Ok` when healthy, else why not.
    pub fn check(&self) -> Result<(), String> {
        if let Some(why) = self
            .problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Err(why);
        }
        let silent = self
            .elapsed_ms()
            .saturating_sub(self.beat.load(Ordering::Relaxed));
        if u128::from(silent) > self.stale_after.as_millis() {
            return Err(format!("loop silent for {} ms", silent));
        }
        Ok(())
    }
}

impl Health {
    /// Milliseconds since `origin`, on the monotonic clock.
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Where a service listens: `{SERVICE}_HTTP_PORT` on `HTTP_BIND`; port 0
/// disables it. [`DEFAULT_BIND`] unless set: `/metrics` tells which APIs are
/// watched, so it is not offered to the network unless asked for (Docker
/// Compose sets `HTTP_BIND=0.0.0.0` inside its containers).
/// `HTTP_BIND` when unset: loopback only.
pub const DEFAULT_BIND: &str = "127.0.0.1";

pub fn http_addr(
    env: &Env,
    service: &str,
    default_port: u16,
) -> Result<Option<SocketAddr>, ConfigError> {
    let key = format!("{}_HTTP_PORT", service.to_ascii_uppercase());
    let port = env.int_in(&key, default_port, 0..=65535)?;
    if port == 0 {
        return Ok(None);
    }
    let bind = env.get("HTTP_BIND").unwrap_or(DEFAULT_BIND);
    let ip: std::net::IpAddr = bind.parse().map_err(|_| {
        ConfigError::new(
            "HTTP_BIND",
            format!("expected an IP address such as 0.0.0.0, got `{bind}`"),
        )
    })?;
    Ok(Some(SocketAddr::new(ip, port)))
}

/// Installs the Prometheus recorder (once per process) and returns its
/// handle.
pub fn install_metrics() -> Option<PrometheusHandle> {
    let buckets = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .ok()?
        .install_recorder()
        .ok()
}

/// Describes the metrics every service exports (call once the recorder is
/// installed).
pub fn describe_common() {
    metrics::describe_gauge!(
        "apimon_database_up",
        "1 when the last database operation succeeded, else 0"
    );
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Option<PrometheusHandle>,
}

async fn healthz(State(s): State<AppState>) -> (StatusCode, String) {
    match s.health.check() {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        ),
    }
}

async fn metrics_text(State(s): State<AppState>) -> (StatusCode, String) {
    match &s.metrics {
        Some(h) => (StatusCode::OK, h.render()),
        None => (
            StatusCode::NOT_FOUND,
            "metrics recorder not installed\n".into(),
        ),
    }
}

/// What every binary does at start: a [`Health`] for its loop and, when
/// `addr` is set, the metrics recorder and the `/healthz` + `/metrics`
/// server (stopping on SIGTERM). `key` names the port's variable in errors.
pub async fn start(addr: Option<SocketAddr>, key: &str) -> Result<Arc<Health>, String> {
    start_with(addr, key, Router::new()).await
}

/// [`start`], serving the routes of `extra` beside `/healthz` and
/// `/metrics` (the pinger's `POST /heartbeat/<token>`).
pub async fn start_with(
    addr: Option<SocketAddr>,
    key: &str,
    extra: Router,
) -> Result<Arc<Health>, String> {
    let health = Health::new(Duration::from_secs(30));
    if let Some(addr) = addr {
        serve(
            addr,
            health.clone(),
            install_metrics(),
            extra,
            crate::shutdown::signal(),
        )
        .await
        .map_err(|e| format!("listening on {addr} ({key}): {e}"))?;
    }
    Ok(health)
}

/// Binds `addr` and serves `/healthz`, `/metrics` and the routes of
/// `extra` until `shutdown`. Returns the bound address (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Option<PrometheusHandle>,
    extra: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { health, metrics })
        .merge(extra);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
    });
    tracing::info!(%bound, "serving /healthz and /metrics");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_with_the_database_and_a_recent_heartbeat() {
        let h = Health::new(Duration::from_millis(50));
        assert!(h.check().unwrap_err().contains("database"));
        h.set_db(true);
        h.beat();
        assert!(h.check().is_ok());
        std::thread::sleep(Duration::from_millis(80));
        assert!(h.check().unwrap_err().contains("silent"));
        h.beat();
        h.set_db(false);
        assert!(h.check().is_err());
    }

    /// The heartbeat is on the monotonic clock: tokio's paused clock moves
    /// it, the wall clock (which an NTP step can move either way) does not
    /// enter into it.
    #[tokio::test(start_paused = true)]
    async fn the_heartbeat_counts_on_the_monotonic_clock() {
        let h = Health::new(Duration::from_secs(30));
        h.set_db(true);
        h.beat();
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(h.check().is_ok());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(h.check().unwrap_err().contains("silent for 31000 ms"));
        h.beat();
        assert!(h.check().is_ok());
    }

    #[test]
    fn the_http_port_listens_on_loopback_unless_told_otherwise() {
        let addr = http_addr(&Env::default(), "pinger", 9101).unwrap().unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_eq!(addr, "127.0.0.1:9101".parse().unwrap());
        let env = Env::from_pairs([("HTTP_BIND", "0.0.0.0")]);
        assert_eq!(
            http_addr(&env, "alerter", 9103).unwrap(),
            Some("0.0.0.0:9103".parse().unwrap())
        );
    }

    #[test]
    fn http_port_is_configurable_and_zero_disables() {
        let env = Env::from_pairs([("PINGER_HTTP_PORT", "9999"), ("HTTP_BIND", "127.0.0.1")]);
        assert_eq!(
            http_addr(&env, "pinger", 9101).unwrap(),
            Some("127.0.0.1:9999".parse().unwrap())
        );
        let env = Env::from_pairs([("PINGER_HTTP_PORT", "0")]);
        assert_eq!(http_addr(&env, "pinger", 9101).unwrap(), None);
        let env = Env::from_pairs([("HTTP_BIND", "nowhere")]);
        assert_eq!(
            http_addr(&env, "pinger", 9101).unwrap_err().key,
            "HTTP_BIND"
        );
    }
}
