//! The streaming detector against a real PostgreSQL: scoring, restart
//! without gap or duplicate, model persistence, sharding.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use apimon_core::db::{self, metrics::MetricRow};
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::PgPool;

mod helpers;
use helpers::*;

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn watermark(pool: &PgPool, api: &str) -> Option<DateTime<Utc>> {
    sqlx::query_scalar("SELECT last_timestamp FROM detector_watermarks WHERE api_name = $1")
        .bind(api)
        .fetch_optional(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_slow_check_and_a_down_api_become_critical_anomalies_within_seconds() {
    let d = database().await;
    register(&d.pool, &["api"]).await;
    let hist = history("api", 300, 42);
    db::metrics::insert_batch(&d.pool, &hist).await.unwrap();
    let run = start(config(&d.url, &[]), &d.url);
    wait_for("a first model", || async {
        scalar(&d.pool, "SELECT count(*) FROM models").await == 1
    })
    .await;
    let last = hist.last().unwrap().timestamp;
    wait_for("the history to be scored", || async {
        watermark(&d.pool, "api").await == Some(last)
    })
    .await;

    let mut listener = sqlx::postgres::PgListener::connect_with(&d.pool)
        .await
        .unwrap();
    listener.listen(db::ANOMALIES_CHANNEL).await.unwrap();
    let now = Utc::now();
    db::metrics::insert_batch(&d.pool, &[row("api", now, Some(1000.0))])
        .await
        .unwrap();
    let note = tokio::time::timeout(Duration::from_secs(10), listener.recv()).await;
    assert!(note.is_ok(), "the alerter's channel is notified");
    let slow = db::anomalies::for_api(&d.pool, "api").await.unwrap();
    let slow = slow
        .iter()
        .find(|a| a.timestamp == now.trunc_subsecs(6))
        .expect("an anomaly for the slow check");
    assert_eq!(slow.severity, "critical", "score {}", slow.anomaly_score);
    assert_eq!(slow.model_version, Some(1));
    assert_eq!(slow.features.as_ref().unwrap().rt, 1000.0);

    // The API stops answering: the second failure in a row is critical.
    let t1 = now + chrono::Duration::seconds(15);
    let t2 = now + chrono::Duration::seconds(30);
    db::metrics::insert_batch(&d.pool, &[row("api", t1, None)])
        .await
        .unwrap();
    db::metrics::insert_batch(&d.pool, &[row("api", t2, None)])
        .await
        .unwrap();
    wait_for("the failures to be scored", || async {
        watermark(&d.pool, "api").await == Some(t2.trunc_subsecs(6))
    })
    .await;
    let all = db::anomalies::for_api(&d.pool, "api").await.unwrap();
    let down = all
        .iter()
        .find(|a| a.timestamp == t2.trunc_subsecs(6))
        .unwrap();
    assert_eq!(down.severity, "critical");
    assert!(
        down.details
            .contains("2 consecutive failed checks: timeout"),
        "{}",
        down.details
    );
    // Detection lag: from the metric's commit to the anomaly's, well under 1 s.
    let lag_ms: f64 = sqlx::query_scalar(
        "SELECT max(extract(epoch FROM a.detected_at - m.ingested_at) * 1000)::float8
         FROM anomalies a JOIN api_metrics m USING (api_name, \"timestamp\") WHERE a.\"timestamp\" >= $1",
    )
    .bind(now.trunc_subsecs(6))
    .fetch_one(&d.pool)
    .await
    .unwrap();
    assert!(lag_ms < 1000.0, "lag {lag_ms} ms");
    run.stop().await;
}

#[tokio::test]
async fn the_service_trains_the_same_forest_as_a_seeded_training_of_the_same_rows() {
    use apimon_core::features::{compute_series, ValueDomain};
    use apimon_core::model::{ignored_features, model_seed, Model, TrainingSpec};
    let d = database().await;
    register(&d.pool, &["checkout"]).await;
    let hist = history("checkout", 300, 7);
    db::metrics::insert_batch(&d.pool, &hist).await.unwrap();
    let cfg = config(&d.url, &[]);
    let params = cfg.params.clone();
    let run = start(cfg, &d.url);
    wait_for("a first model", || async {
        scalar(&d.pool, "SELECT count(*) FROM models").await == 1
    })
    .await;
    run.stop().await;
    let stored = db::models::load(&d.pool, &["checkout".to_string()])
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(stored.version, 1);

    // The same rows, trained here with the seed of (API, version 1).
    let rows: Vec<[f64; 8]> = compute_series(
        hist.iter()
            .map(|r| (r.timestamp, r.response_time_ms, r.success)),
    )
    .iter()
    .filter_map(|o| o.features().map(|f| f.to_array()))
    .collect();
    let span = hist.last().unwrap().timestamp - hist[0].timestamp;
    let spec = TrainingSpec {
        ignored: ignored_features(span),
        domain: ValueDomain::ResponseTime,
        seed: model_seed("checkout", 1),
    };
    let here = Model::train_for(&rows, &params, &spec).unwrap();
    assert_eq!(stored.model.sample_count, here.sample_count);
    assert_eq!(
        stored.model.forest_bytes().unwrap(),
        here.forest_bytes().unwrap()
    );
    assert_eq!(stored.model.offset.to_bits(), here.offset.to_bits());
    for r in &rows {
        assert_eq!(stored.model.score(r).to_bits(), here.score(r).to_bits());
    }
}

#[tokio::test]
async fn a_restart_resumes_from_the_watermark_with_the_stored_model() {
    let d = database().await;
    register(&d.pool, &["api"]).await;
    let hist = history("api", 200, 7);
    db::metrics::insert_batch(&d.pool, &hist).await.unwrap();
    let run = start(config(&d.url, &[]), &d.url);
    let last = hist.last().unwrap().timestamp;
    wait_for("model and watermark", || async {
        watermark(&d.pool, "api").await == Some(last)
            && scalar(&d.pool, "SELECT count(*) FROM models").await == 1
    })
    .await;
    let first = run.stop().await;

    // While the detector is down: 5 failures, then a very slow check.
    let base = Utc::now();
    let mut rows: Vec<MetricRow> = (1..=5)
        .map(|i| row("api", base + chrono::Duration::seconds(15 * i), None))
        .collect();
    rows.push(row(
        "api",
        base + chrono::Duration::seconds(90),
        Some(5000.0),
    ));
    db::metrics::insert_batch(&d.pool, &rows).await.unwrap();
    let before = scalar(&d.pool, "SELECT count(*) FROM anomalies").await;

    let run = start(config(&d.url, &[]), &d.url);
    let end = rows.last().unwrap().timestamp;
    wait_for("the rows written while down", || async {
        watermark(&d.pool, "api").await == Some(end)
    })
    .await;
    let second = run.stop().await;

    // Every row scored exactly once across the two runs.
    assert_eq!(first.scored + second.scored, 206, "{first:?} {second:?}");
    assert_eq!(second.scored, 6);
    let after = scalar(&d.pool, "SELECT count(*) FROM anomalies").await;
    assert_eq!(after - before, 6, "5 failures and the slow check");
    let all = db::anomalies::for_api(&d.pool, "api").await.unwrap();
    // The 5th failure continues the count from before the restart.
    let fifth = all
        .iter()
        .find(|a| a.timestamp == rows[4].timestamp)
        .unwrap();
    assert!(
        fifth.details.starts_with("5 consecutive"),
        "{}",
        fifth.details
    );
    // The slow check was scored at once with the stored model (version 1).
    let slow = all.iter().find(|a| a.timestamp == end).unwrap();
    assert_eq!(slow.model_version, Some(1));
    assert_eq!(scalar(&d.pool, "SELECT max(version) FROM models").await, 1);
}

#[tokio::test]
async fn shards_split_the_apis_and_score_each_row_once() {
    let d = database().await;
    let names: Vec<String> = (0..10).map(|i| format!("svc-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    register(&d.pool, &refs).await;
    let base = Utc::now() - chrono::Duration::minutes(10);
    let rows: Vec<MetricRow> = names
        .iter()
        .flat_map(|n| (0..3).map(move |i| row(n, base + chrono::Duration::seconds(15 * i), None)))
        .collect();
    db::metrics::insert_batch(&d.pool, &rows).await.unwrap();
    let a = start(config(&d.url, &[("DETECTOR_SHARD", "0/2")]), &d.url);
    let b = start(config(&d.url, &[("DETECTOR_SHARD", "1/2")]), &d.url);
    wait_for("all watermarks", || async {
        scalar(&d.pool, "SELECT count(*) FROM detector_watermarks").await == 10
            && scalar(&d.pool, "SELECT count(*) FROM anomalies").await == 30
    })
    .await;
    let (oa, ob) = (a.stop().await, b.stop().await);
    assert!(oa.scored > 0 && ob.scored > 0, "{oa:?} {ob:?}");
    assert_eq!(oa.scored + ob.scored, 30);
    assert_eq!(oa.anomalies + ob.anomalies, 30);
}

#[tokio::test]
async fn an_unreadable_stored_model_is_logged_and_retrained() {
    let d = database().await;
    register(&d.pool, &["api"]).await;
    db::metrics::insert_batch(&d.pool, &history("api", 150, 3))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO models (api_name, version, trained_at, sample_count, score_offset, params, forest)
         VALUES ('api', 7, now(), 10, 0.5, '{}'::jsonb, '\\x00'::bytea)",
    )
    .execute(&d.pool)
    .await
    .unwrap();
    let run = start(config(&d.url, &[]), &d.url);
    wait_for("a retrained model", || async {
        scalar(&d.pool, "SELECT version FROM models").await == 8
    })
    .await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_healthz_and_metrics() {
    let d = database().await;
    register(&d.pool, &["api"]).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_detector"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &d.url)
        .env("DETECTOR_HTTP_PORT", port.to_string())
        .env("HTTP_BIND", "127.0.0.1")
        .env("DETECTOR_POLL_INTERVAL", "200ms")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_for("/healthz 200", || async {
        matches!(reqwest::get(format!("{base}/healthz")).await, Ok(r) if r.status() == 200)
    })
    .await;
    let now = Utc::now();
    let rows: Vec<MetricRow> = (0..3)
        .map(|i| row("api", now + chrono::Duration::seconds(i), None))
        .collect();
    db::metrics::insert_batch(&d.pool, &rows).await.unwrap();
    wait_for("anomalies counted in /metrics", || async {
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.contains("apimon_anomalies_total{severity=\"critical\"} 2")
            && text.contains("apimon_detection_lag_seconds_bucket")
            && text.contains("apimon_rows_scored_total 3")
    })
    .await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

/// The severities of the anomalies of `api` at `times` (`None`: no
/// anomaly).
async fn severities(pool: &PgPool, api: &str, times: &[DateTime<Utc>]) -> Vec<Option<String>> {
    let all = db::anomalies::for_api(pool, api).await.unwrap();
    times
        .iter()
        .map(|t| {
            all.iter()
                .find(|a| a.timestamp == *t)
                .map(|a| a.severity.clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_detector_does_not_flag_again_a_level_it_already_flagged() {
    let d = database().await;
    register(&d.pool, &["api"]).await;
    let hist = history("api", 300, 42);
    db::metrics::insert_batch(&d.pool, &hist).await.unwrap();
    let cfg = config(&d.url, &[]);
    let run = start(cfg.clone(), &d.url);
    let last = hist.last().unwrap().timestamp;
    wait_for("a first model and the history scored", || async {
        scalar(&d.pool, "SELECT count(*) FROM models").await == 1
            && watermark(&d.pool, "api").await == Some(last)
    })
    .await;
    // The API moves to a new level: its first checks there are critical.
    let level: Vec<MetricRow> = (1..=LEVEL_CHECKS)
        .map(|i| row("api", last + chrono::Duration::seconds(i), Some(LEVEL_MS)))
        .collect();
    db::metrics::insert_batch(&d.pool, &level).await.unwrap();
    let end = level.last().unwrap().timestamp;
    wait_for("the level scored", || async {
        watermark(&d.pool, "api").await == Some(end)
    })
    .await;
    let first = severities(&d.pool, "api", &[level[0].timestamp]).await;
    assert_eq!(first, [Some("critical".to_string())]);
    run.stop().await;

    // A new detector process reads what the model had seen with the
    // watermark: the same level is not flagged critical again.
    let run = start(cfg, &d.url);
    let next = row("api", end + chrono::Duration::seconds(1), Some(LEVEL_MS));
    db::metrics::insert_batch(&d.pool, std::slice::from_ref(&next))
        .await
        .unwrap();
    wait_for("the next check scored", || async {
        watermark(&d.pool, "api").await == Some(next.timestamp)
    })
    .await;
    run.stop().await;
    let again = severities(&d.pool, "api", &[next.timestamp]).await;
    assert_ne!(again, [Some("critical".to_string())], "flagged again");
    assert_eq!(scalar(&d.pool, "SELECT max(version) FROM models").await, 1);
}

/// The new level of that test, and how many checks it lasts before the
/// restart.
const LEVEL_MS: f64 = 1000.0;
const LEVEL_CHECKS: i64 = 20;
