//! The detector's retention pass against a real PostgreSQL: anomalies,
//! resolved incidents (with their events), and the models and watermarks
//! of endpoints gone are deleted once older than `RETENTION_DAYS`, in
//! batches; newer rows, open incidents and undelivered events stay.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use apimon_core::db::{self, anomalies::AnomalyRow};
use apimon_core::incidents::{Change, Evidence, Incident, Kind, State, Transition};
use apimon_core::model::{Model, ModelParams, Severity};
use apimon_core::retention::{self, Deleted, Settings};
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::PgPool;
use tokio::sync::watch;

mod helpers;
use helpers::*;

fn days_ago(d: i64) -> DateTime<Utc> {
    (Utc::now() - chrono::Duration::days(d)).trunc_subsecs(6)
}

/// The detector's own retention rules with small batches.
async fn retention_pass(db: &Db) -> Vec<Deleted> {
    let cfg = config(&db.url, &[("RETENTION_DAYS", "90")]);
    let settings = Settings {
        batch_size: 4,
        pause: Duration::from_millis(1),
        ..Settings::default()
    };
    let (_stop_tx, stop) = watch::channel(false);
    retention::pass(
        &db.pool,
        &detector::service::retention_rules(cfg.retention_days),
        &settings,
        &stop,
    )
    .await
    .unwrap()
}

fn deleted(report: &[Deleted], table: &str) -> Deleted {
    report.iter().find(|d| d.table == table).cloned().unwrap()
}

async fn names(pool: &PgPool, sql: &str) -> Vec<String> {
    sqlx::query_scalar(sql).fetch_all(pool).await.unwrap()
}

fn anomaly(api: &str, ts: DateTime<Utc>) -> AnomalyRow {
    AnomalyRow {
        timestamp: ts,
        api_name: api.into(),
        response_time_ms: Some(900.0),
        anomaly_score: -0.3,
        severity: "critical".into(),
        details: "slow".into(),
        features: None,
        model_version: Some(1),
    }
}

#[tokio::test]
async fn anomalies_older_than_the_retention_are_deleted_in_batches() {
    let db = database().await;
    let mut rows: Vec<AnomalyRow> = (0..10)
        .map(|i| anomaly("api", days_ago(100) + chrono::Duration::seconds(i)))
        .collect();
    rows.push(anomaly("api", days_ago(89)));
    let mut tx = db.pool.begin().await.unwrap();
    db::anomalies::insert(&mut tx, &rows).await.unwrap();
    tx.commit().await.unwrap();

    let report = retention_pass(&db).await;

    let backend = db::backend(&db.pool).await.unwrap();
    if backend.is_timescale() {
        // A hypertable: the pass leaves it to the retention policy, which
        // drops the old chunks.
        assert!(report.iter().all(|d| d.table != "anomalies"), "{report:?}");
        db::apply_retention(&db.pool, &backend, 90).await.unwrap();
        assert!(apimon_testkit::run_retention_policy(&db.pool, "anomalies").await);
    } else {
        let d = deleted(&report, "anomalies");
        assert_eq!((d.rows, d.statements, d.largest), (10, 3, 4), "4 + 4 + 2");
    }
    let left = db::anomalies::for_api(&db.pool, "api").await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].timestamp > days_ago(90));
}

fn incident(started: DateTime<Utc>, resolved: Option<DateTime<Utc>>) -> Incident {
    Incident {
        kind: Kind::Down,
        state: if resolved.is_some() {
            State::Resolved
        } else {
            State::Open
        },
        started_at: started,
        opened_at: started + chrono::Duration::seconds(15),
        recovered_at: resolved.map(|r| r - chrono::Duration::minutes(5)),
        resolved_at: resolved,
        severity: Severity::Critical,
        reason: "2 consecutive failed checks".into(),
        evidence: Evidence::default(),
        flaps: 0,
    }
}

/// Records an incident through the detector's own path: opened, then
/// resolved when `resolved` is set.
async fn record(pool: &PgPool, api: &str, started: DateTime<Utc>, resolved: Option<DateTime<Utc>>) {
    let mut changes = vec![Transition {
        change: Change::Opened,
        incident: incident(started, None),
    }];
    if resolved.is_some() {
        changes.push(Transition {
            change: Change::Resolved,
            incident: incident(started, resolved),
        });
    }
    let mut tx = pool.begin().await.unwrap();
    db::incidents::apply(&mut tx, api, &changes).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn resolved_incidents_go_after_the_retention_but_never_open_ones_nor_undelivered_events() {
    let db = database().await;
    record(&db.pool, "old-resolved", days_ago(120), Some(days_ago(100))).await;
    record(
        &db.pool,
        "old-undelivered",
        days_ago(120),
        Some(days_ago(100)),
    )
    .await;
    record(&db.pool, "old-open", days_ago(120), None).await;
    record(&db.pool, "recent", days_ago(30), Some(days_ago(29))).await;
    // The alerter handled every event but those of `old-undelivered`.
    sqlx::query(
        "UPDATE incident_events e SET handled_at = now(), outcome = 'notified'
         FROM incidents i WHERE i.id = e.incident_id AND i.api_name <> 'old-undelivered'",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let report = retention_pass(&db).await;

    assert_eq!(deleted(&report, "incidents").rows, 1);
    assert_eq!(
        names(&db.pool, "SELECT api_name FROM incidents ORDER BY api_name").await,
        ["old-open", "old-undelivered", "recent"]
    );
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM incident_events e
         WHERE NOT EXISTS (SELECT 1 FROM incidents i WHERE i.id = e.incident_id)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(orphans, 0);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM incident_events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(events, 5, "the deleted incident's two events went with it");
}

fn tiny_model() -> Model {
    let rows: Vec<[f64; 8]> = (0..200)
        .map(|i| {
            let x = 100.0 + (i % 17) as f64;
            [x, x, 3.0, 0.1, 1.0, 0.01, 12.0, 2.0]
        })
        .collect();
    Model::train(&rows, &ModelParams::default()).unwrap()
}

#[tokio::test]
async fn models_and_watermarks_of_endpoints_gone_longer_than_the_retention_are_deleted() {
    let db = database().await;
    register(&db.pool, &["active", "retired-long", "retired-recently"]).await;
    sqlx::query(
        "UPDATE api_endpoints SET retired_at = now() - make_interval(days => \
         CASE api_name WHEN 'retired-long' THEN 100 ELSE 10 END) WHERE api_name LIKE 'retired%'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let model = tiny_model();
    // "active" was trained long ago (retraining failed since): it stays.
    for (api, trained) in [
        ("active", days_ago(120)),
        ("retired-long", days_ago(120)),
        ("retired-recently", days_ago(20)),
        ("unregistered-old", days_ago(100)),
        ("unregistered-new", days_ago(1)),
    ] {
        db::models::save(&db.pool, api, trained, &model)
            .await
            .unwrap();
        let mut tx = db.pool.begin().await.unwrap();
        db::watermarks::set(&mut tx, &[(api.to_string(), trained)])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        sqlx::query("UPDATE detector_watermarks SET updated_at = $2 WHERE api_name = $1")
            .bind(api)
            .bind(trained)
            .execute(&db.pool)
            .await
            .unwrap();
    }

    let report = retention_pass(&db).await;

    assert_eq!(deleted(&report, "models").rows, 2);
    assert_eq!(deleted(&report, "detector_watermarks").rows, 2);
    let kept = ["active", "retired-recently", "unregistered-new"];
    assert_eq!(
        names(&db.pool, "SELECT api_name FROM models ORDER BY api_name").await,
        kept
    );
    assert_eq!(
        names(
            &db.pool,
            "SELECT api_name FROM detector_watermarks ORDER BY api_name"
        )
        .await,
        kept
    );
}
