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

/// https checks whose certificate expires within TLS_EXPIRY_WARN_DAYS open
/// a `certificate` incident (high); within TLS_EXPIRY_CRITICAL_DAYS a
/// critical one replaces it (the warning closes as `escalated`, with no
/// event of its own); a renewed certificate resolves it, with one resolve
/// event. Failed checks, which carry no certificate, change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_certificates_open_a_warning_then_a_critical_incident_and_renewal_resolves_it() {
    let db = database().await;
    register(&db.pool, &["in10", "in2", "far"]).await;
    let t0 = Utc::now() - chrono::Duration::minutes(10);
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    let tls = |api: &str, ts: DateTime<Utc>, days: f64| MetricRow {
        tls_expires_at: Some(
            (ts + chrono::Duration::minutes((days * 1440.0) as i64)).trunc_subsecs(0),
        ),
        ..row(api, ts, Some(100.0))
    };
    let mut rows = Vec::new();
    for i in 0..4 {
        rows.push(tls("in10", at(15 * i), 10.0));
        rows.push(tls("in2", at(15 * i), 2.0));
        rows.push(tls("far", at(15 * i), 90.0));
    }
    db::metrics::insert_batch(&db.pool, &rows).await.unwrap();
    let run = start(config(&db.url, &[]), &db.url);
    wait_for("two certificate incidents", || async {
        incidents(&db.pool).await.len() == 2
    })
    .await;
    let severities = || async {
        let rows: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT api_name, kind, state, peak_severity, resolution FROM incidents ORDER BY id",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        rows
    };
    let got = severities().await;
    assert!(
        got.contains(&(
            "in10".into(),
            "certificate".into(),
            "open".into(),
            "high".into(),
            None
        )),
        "{got:?}"
    );
    assert!(
        got.contains(&(
            "in2".into(),
            "certificate".into(),
            "open".into(),
            "critical".into(),
            None
        )),
        "{got:?}"
    );
    let reason: String = sqlx::query_scalar("SELECT reason FROM incidents WHERE api_name = 'in10'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        reason.contains("(9 days 23 h left)") || reason.contains("(10 days 0 h left)"),
        "{reason}"
    );
    // A failed check, then in10's certificate within 3 days, then in2's
    // renewed.
    let later = vec![
        row("in10", at(100), None),
        tls("in10", at(115), 2.5),
        tls("in10", at(130), 2.5),
        tls("in2", at(115), 365.0),
    ];
    db::metrics::insert_batch(&db.pool, &later).await.unwrap();
    wait_for("the escalation and the renewal", || async {
        incidents(&db.pool).await.len() == 3
            && severities()
                .await
                .iter()
                .any(|r| r.0 == "in2" && r.2 == "resolved")
    })
    .await;
    run.stop().await;
    let got = severities().await;
    assert_eq!(
        got,
        vec![
            (
                "in10".into(),
                "certificate".into(),
                "resolved".into(),
                "high".into(),
                Some("escalated".into())
            ),
            (
                "in2".into(),
                "certificate".into(),
                "resolved".into(),
                "critical".into(),
                None
            ),
            (
                "in10".into(),
                "certificate".into(),
                "open".into(),
                "critical".into(),
                None
            ),
        ],
    );
    // Events: each opening, and in2's resolution; none for the warning
    // the critical incident replaced.
    let mut ev = events(&db.pool).await;
    ev.sort();
    assert_eq!(
        ev,
        vec![
            ("in10".to_string(), "open".to_string()),
            ("in10".to_string(), "open".to_string()),
            ("in2".to_string(), "open".to_string()),
            ("in2".to_string(), "resolve".to_string()),
        ]
    );
}
