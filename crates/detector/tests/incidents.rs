//! The detector's incident rules against a real PostgreSQL: incidents and
//! their events written with the watermark, and a restart that resumes
//! the rules where they stopped.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use apimon_core::db::{self, metrics::MetricRow};
use apimon_core::{DbConfig, Env};
use chrono::{DateTime, SubsecRound, Utc};
use detector::config::DetectorConfig;
use detector::service::DetectorOutcome;
use sqlx::PgPool;
use tokio::sync::oneshot;

struct Db {
    url: String,
    pool: PgPool,
}

async fn database() -> Db {
    let t = apimon_testkit::fresh_database().await;
    let pool = db::connect(&DbConfig::from_url(&t.url).unwrap())
        .await
        .unwrap();
    db::migrate(&pool).await.unwrap();
    Db { url: t.url, pool }
}

fn config(url: &str, extra: &[(&str, &str)]) -> DetectorConfig {
    let mut env = vec![
        ("DATABASE_URL", url),
        ("MIN_TRAINING_SAMPLES", "100"),
        ("DETECTOR_POLL_INTERVAL", "200ms"),
        ("DETECTOR_BACKFILL", "30d"),
    ];
    env.extend_from_slice(extra);
    DetectorConfig::from_env(&Env::from_pairs(env)).unwrap()
}

async fn register(pool: &PgPool, names: &[&str]) {
    let toml: String = names
        .iter()
        .map(|n| format!("[[api]]\nname = \"{n}\"\nurl = \"http://{n}.test/\"\n"))
        .collect();
    let eps = apimon_core::apis::parse(&toml, "test", &Env::default()).unwrap();
    db::endpoints::upsert(pool, &eps).await.unwrap();
}

fn row(api: &str, ts: DateTime<Utc>, rt: Option<f64>) -> MetricRow {
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
    }
}

/// `n` healthy checks of `api`, 15 s apart, ending a minute ago.
fn history(api: &str, n: i64, seed: u64) -> Vec<MetricRow> {
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

struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<DetectorOutcome>>,
}

fn start(cfg: DetectorConfig, url: &str) -> Running {
    let pool = db::lazy_pool(&DbConfig::from_url(url).unwrap());
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(detector::service::run(cfg, pool, async {
        let _ = rx.await;
    }));
    Running { stop, task }
}

impl Running {
    async fn stop(self) -> DetectorOutcome {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap()
    }
}

async fn wait_for<F, Fut>(what: &str, mut f: F)
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

async fn incidents(pool: &PgPool) -> Vec<(String, String, String, DateTime<Utc>)> {
    sqlx::query_as("SELECT api_name, kind, state, started_at FROM incidents ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn events(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT i.api_name, e.event FROM incident_events e JOIN incidents i ON i.id = e.incident_id ORDER BY e.id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_opens_one_down_incident_and_its_recovery_resolves_it_across_a_restart() {
    let db = database().await;
    register(&db.pool, &["api", "calm"]).await;
    let mut rows = history("api", 200, 3);
    rows.extend(history("calm", 200, 5));
    db::metrics::insert_batch(&db.pool, &rows).await.unwrap();
    let cfg = config(&db.url, &[("ALERT_FLAP_WINDOW", "30s")]);
    let run = start(cfg.clone(), &db.url);
    wait_for("the history scored", || async {
        db::watermarks::all(&db.pool).await.unwrap().len() == 2
    })
    .await;
    // Three failed checks after the history: opened at the second.
    let t0 = Utc::now() - chrono::Duration::seconds(50);
    let fails: Vec<MetricRow> = (0..3)
        .map(|i| row("api", t0 + chrono::Duration::seconds(i), None))
        .collect();
    db::metrics::insert_batch(&db.pool, &fails).await.unwrap();
    wait_for("a down incident", || async {
        !incidents(&db.pool).await.is_empty()
    })
    .await;
    let got = incidents(&db.pool).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].0.as_str(), got[0].1.as_str(), got[0].2.as_str()),
        ("api", "down", "open")
    );
    assert_eq!(
        got[0].3,
        t0.trunc_subsecs(6),
        "since the first failed check"
    );
    assert_eq!(
        events(&db.pool).await,
        [("api".to_string(), "open".to_string())]
    );
    // The rules' state is saved with the watermark.
    let saved: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT incident_state FROM detector_watermarks WHERE api_name = 'api'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(saved.unwrap()["down"]["state"] == "open");
    run.stop().await;

    // A restarted detector sees the recovery and holds it for the flap
    // window (30 s of data time), then resolves: one resolve event.
    let run = start(cfg, &db.url);
    let ok: Vec<MetricRow> = (0..6)
        .map(|i| {
            row(
                "api",
                t0 + chrono::Duration::seconds(5 + 10 * i),
                Some(100.0),
            )
        })
        .collect();
    db::metrics::insert_batch(&db.pool, &ok).await.unwrap();
    wait_for("the resolution", || async {
        events(&db.pool).await.len() == 2
    })
    .await;
    let got = incidents(&db.pool).await;
    assert_eq!(got.len(), 1, "the same incident, not a new one: {got:?}");
    assert_eq!(got[0].2, "resolved");
    assert_eq!(
        events(&db.pool).await,
        [
            ("api".to_string(), "open".to_string()),
            ("api".to_string(), "resolve".to_string())
        ]
    );
    let (recovered, resolved): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT recovered_at, resolved_at FROM incidents")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        recovered,
        Some((t0 + chrono::Duration::seconds(5)).trunc_subsecs(6))
    );
    assert!(resolved.unwrap() - recovered.unwrap() >= chrono::Duration::seconds(30));
    run.stop().await;
    assert!(
        incidents(&db.pool).await.iter().all(|i| i.0 != "calm"),
        "nothing for the healthy API"
    );
}
