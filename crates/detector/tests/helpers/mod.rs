//! What the detector's integration tests share: a fresh database, the
//! detector's config, registered APIs, metric rows, a running detector.

#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use apimon_core::db::{self, metrics::MetricRow};
use apimon_core::{DbConfig, Env};
use chrono::{DateTime, SubsecRound, Utc};
use detector::config::DetectorConfig;
use detector::service::DetectorOutcome;
use sqlx::PgPool;
use tokio::sync::oneshot;

pub struct Db {
    pub url: String,
    pub pool: PgPool,
}

pub async fn database() -> Db {
    let t = apimon_testkit::fresh_database().await;
    let pool = db::connect(&DbConfig::from_url(&t.url).unwrap())
        .await
        .unwrap();
    db::migrate(&pool).await.unwrap();
    Db { url: t.url, pool }
}

pub fn config(url: &str, extra: &[(&str, &str)]) -> DetectorConfig {
    let mut env = vec![
        ("DATABASE_URL", url),
        ("MIN_TRAINING_SAMPLES", "100"),
        ("DETECTOR_POLL_INTERVAL", "200ms"),
        ("DETECTOR_BACKFILL", "30d"),
    ];
    env.extend_from_slice(extra);
    DetectorConfig::from_env(&Env::from_pairs(env)).unwrap()
}

pub async fn register(pool: &PgPool, names: &[&str]) {
    let toml: String = names
        .iter()
        .map(|n| format!("[[api]]\nname = \"{n}\"\nurl = \"http://{n}.test/\"\n"))
        .collect();
    let eps = apimon_core::apis::parse(&toml, "test", &Env::default()).unwrap();
    db::endpoints::upsert(pool, &eps).await.unwrap();
}

pub fn row(api: &str, ts: DateTime<Utc>, rt: Option<f64>) -> MetricRow {
    MetricRow {
        timestamp: ts.trunc_subsecs(6),
        api_name: api.into(),
        url: format!("http://{api}.test/"),
        response_time_ms: rt,
        status_code: rt.map(|_| 200),
        success: rt.is_some(),
        response_size_bytes: rt.map(|_| 10),
        error_kind: rt.is_none().then(|| "timeout".into()),
        error_message: rt.is_none().then(|| "operation timed out".into()),
        tls_expires_at: None,
    }
}

/// `n` healthy checks of `api`, 15 s apart, ending a minute ago.
pub fn history(api: &str, n: i64, seed: u64) -> Vec<MetricRow> {
    let end = Utc::now() - chrono::Duration::minutes(1);
    let mut x = seed.max(1);
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x % 100_000) as f64 / 100_000.0;
            let ts = end - chrono::Duration::seconds(15 * (n - 1 - i));
            row(api, ts, Some(100.0 + 20.0 * -(1.0 - u).ln()))
        })
        .collect()
}

pub struct Running {
    pub stop: oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<anyhow::Result<DetectorOutcome>>,
}

pub fn start(cfg: DetectorConfig, url: &str) -> Running {
    let pool = db::lazy_pool(&DbConfig::from_url(url).unwrap());
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(detector::service::run(cfg, pool, async {
        let _ = rx.await;
    }));
    Running { stop, task }
}

impl Running {
    pub async fn stop(self) -> DetectorOutcome {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap()
    }
}

pub async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}
