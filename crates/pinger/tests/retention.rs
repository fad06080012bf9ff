//! The pinger's retention and its endpoint registry, against a real
//! PostgreSQL: old checks are deleted by the retention task in batches,
//! never by a flush; an endpoint removed from the file is retired with its
//! history kept, and active again when it comes back.

#![allow(clippy::unwrap_used)]

mod helpers;

use std::time::Duration;

use apimon_core::db::{self, metrics::MetricRow};
use apimon_core::retention::{self, Settings};
use apimon_testkit::http::Reply;
use chrono::{DateTime, SubsecRound, Utc};
use helpers::{endpoints, Harness};
use sqlx::PgPool;
use tokio::sync::watch;

fn check(api: &str, ts: DateTime<Utc>) -> MetricRow {
    MetricRow {
        timestamp: ts.trunc_subsecs(6),
        api_name: api.into(),
        url: format!("http://{api}.test/"),
        response_time_ms: Some(10.0),
        status_code: Some(200),
        success: true,
        response_size_bytes: Some(2),
        error_kind: None,
        error_message: None,
        tls_expires_at: None,
    }
}

/// `n` checks of `api`, a minute apart, ending `days_ago` days ago.
fn checks(api: &str, n: i64, days_ago: i64) -> Vec<MetricRow> {
    let end = Utc::now() - chrono::Duration::days(days_ago);
    (0..n)
        .map(|i| check(api, end - chrono::Duration::minutes(i)))
        .collect()
}

async fn count(pool: &PgPool, api: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM api_metrics WHERE api_name = $1")
        .bind(api)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Small batches, no pause: what a pass does is visible in a few rows.
fn small_batches() -> Settings {
    Settings {
        batch_size: 10,
        pause: Duration::from_millis(1),
        ..Settings::default()
    }
}

#[tokio::test]
async fn a_flush_never_deletes_and_the_retention_task_deletes_old_checks_in_batches() {
    let h = Harness::new().await;
    h.server.set("/ok", Reply::ok());
    db::metrics::insert_batch(&h.pool, &checks("api", 25, 100))
        .await
        .unwrap();
    db::metrics::insert_batch(&h.pool, &checks("api", 3, 89))
        .await
        .unwrap();
    let cfg = h.config(
        &endpoints(&h.server, &[("api", "/ok")], "200ms"),
        &[("RETENTION_DAYS", "90")],
    );
    let days = cfg.retention_days;

    // The pinger runs, flushes and stops: the old checks are still there
    // (the flush path does not delete; the task's first pass comes later).
    let outcome = pinger::run(cfg, h.pinger_pool(), Some(3), std::future::pending())
        .await
        .unwrap();
    assert_eq!(outcome.written, 3);
    assert_eq!(count(&h.pool, "api").await, 25 + 3 + 3);

    // The pinger's retention pass: 25 rows in batches of at most 10.
    let (_stop_tx, stop) = watch::channel(false);
    let rules = pinger::retention_rules(days);
    let deleted = retention::pass(&h.pool, &rules, &small_batches(), &stop)
        .await
        .unwrap();
    let backend = db::backend(&h.pool).await.unwrap();
    if backend.is_timescale() {
        // A hypertable: the pass leaves it to the retention policy (which
        // the pinger created at start), dropping whole old chunks.
        assert!(
            deleted.iter().all(|d| d.table != "api_metrics"),
            "{deleted:?}"
        );
        assert_eq!(count(&h.pool, "api").await, 25 + 3 + 3);
        assert!(apimon_testkit::run_retention_policy(&h.pool, "api_metrics").await);
    } else {
        let metrics = deleted.iter().find(|d| d.table == "api_metrics").unwrap();
        assert_eq!(metrics.rows, 25);
        assert_eq!(
            metrics.largest, 10,
            "no statement deletes more than a batch"
        );
        assert_eq!(metrics.statements, 3, "10 + 10 + 5");
    }
    assert_eq!(count(&h.pool, "api").await, 6, "the newer checks stay");
    let oldest: DateTime<Utc> = sqlx::query_scalar("SELECT min(\"timestamp\") FROM api_metrics")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert!(oldest > Utc::now() - chrono::Duration::days(90));
}

#[tokio::test]
async fn a_stopping_pinger_stops_its_retention_pass_between_two_batches() {
    let h = Harness::new().await;
    db::metrics::insert_batch(&h.pool, &checks("api", 25, 100))
        .await
        .unwrap();
    let (stop_tx, stop) = watch::channel(false);
    stop_tx.send(true).unwrap();
    let deleted = retention::pass(
        &h.pool,
        &pinger::retention_rules(90),
        &small_batches(),
        &stop,
    )
    .await
    .unwrap();
    assert_eq!(deleted.iter().map(|d| d.rows).sum::<u64>(), 0);
    assert_eq!(count(&h.pool, "api").await, 25);
}

async fn retired_at(pool: &PgPool, api: &str) -> Option<Option<DateTime<Utc>>> {
    sqlx::query_scalar("SELECT retired_at FROM api_endpoints WHERE api_name = $1")
        .bind(api)
        .fetch_optional(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_endpoint_removed_from_the_file_is_retired_with_its_history_and_comes_back_when_re_added(
) {
    let h = Harness::new().await;
    h.server.set("/ok", Reply::ok());
    let both = endpoints(&h.server, &[("kept", "/ok"), ("gone", "/ok")], "200ms");
    let one = endpoints(&h.server, &[("kept", "/ok")], "200ms");
    pinger::run(
        h.config(&both, &[]),
        h.pinger_pool(),
        Some(2),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(count(&h.pool, "gone").await, 2);

    // Removed from the file: retired at the pinger's start, history kept.
    pinger::run(
        h.config(&one, &[]),
        h.pinger_pool(),
        Some(2),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(retired_at(&h.pool, "gone").await.unwrap().is_some());
    assert_eq!(retired_at(&h.pool, "kept").await, Some(None));
    assert_eq!(db::endpoints::names(&h.pool).await.unwrap(), ["kept"]);
    assert_eq!(db::endpoints::retired(&h.pool).await.unwrap(), ["gone"]);
    assert_eq!(count(&h.pool, "gone").await, 2, "its history stays");

    // Back in the file: active again, with its history.
    pinger::run(
        h.config(&both, &[]),
        h.pinger_pool(),
        Some(1),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(retired_at(&h.pool, "gone").await, Some(None));
    assert_eq!(
        db::endpoints::names(&h.pool).await.unwrap(),
        ["gone", "kept"]
    );
    assert_eq!(count(&h.pool, "gone").await, 3);
}

#[tokio::test]
async fn an_endpoint_retired_longer_than_the_retention_goes_with_its_last_checks() {
    let h = Harness::new().await;
    let toml = "[[api]]\nname = \"long-gone\"\nurl = \"http://a.test/\"\n\
                [[api]]\nname = \"just-gone\"\nurl = \"http://b.test/\"\n\
                [[api]]\nname = \"active\"\nurl = \"http://c.test/\"\n";
    let eps = apimon_core::apis::parse(toml, "test", &apimon_core::Env::default()).unwrap();
    db::endpoints::upsert(&h.pool, &eps).await.unwrap();
    db::metrics::insert_batch(&h.pool, &checks("long-gone", 5, 120))
        .await
        .unwrap();
    db::metrics::insert_batch(&h.pool, &checks("just-gone", 5, 100))
        .await
        .unwrap();
    db::metrics::insert_batch(&h.pool, &checks("active", 5, 120))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE api_endpoints SET retired_at = now() - make_interval(days => \
         CASE api_name WHEN 'long-gone' THEN 100 ELSE 1 END) WHERE api_name <> 'active'",
    )
    .execute(&h.pool)
    .await
    .unwrap();

    // On TimescaleDB the policy drops the old checks first; the endpoint
    // goes with its last checks.
    let backend = db::backend(&h.pool).await.unwrap();
    if backend.is_timescale() {
        db::apply_retention(&h.pool, &backend, 90).await.unwrap();
        assert!(apimon_testkit::run_retention_policy(&h.pool, "api_metrics").await);
    }
    let (_stop_tx, stop) = watch::channel(false);
    retention::pass(
        &h.pool,
        &pinger::retention_rules(90),
        &small_batches(),
        &stop,
    )
    .await
    .unwrap();

    assert_eq!(retired_at(&h.pool, "long-gone").await, None, "deleted");
    assert!(
        retired_at(&h.pool, "just-gone").await.unwrap().is_some(),
        "retired 1 day ago: kept"
    );
    assert_eq!(retired_at(&h.pool, "active").await, Some(None), "kept");
}
