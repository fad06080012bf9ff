//! The detector's incident rules against a real PostgreSQL: incidents and
//! their events written with the watermark, and a restart that resumes
//! the rules where they stopped.

#![allow(clippy::unwrap_used)]

use apimon_core::db::{self, metrics::MetricRow};
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::PgPool;

mod helpers;
use helpers::*;

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
