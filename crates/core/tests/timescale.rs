//! What only TimescaleDB does: compressed chunks and retention policies.
//! Each test asserts what is right for the backend it got, and says so when
//! that is plain PostgreSQL (run `APIMON_TEST_TIMESCALEDB=1 cargo test` on a
//! machine with TimescaleDB installed for the TimescaleDB half).

#![allow(clippy::unwrap_used)]

use std::io::Write;

use apimon_core::db::{self, metrics::MetricRow, Backend};
use apimon_core::DbConfig;
use chrono::{DateTime, Duration, DurationRound, Utc};
use sqlx::PgPool;

async fn migrated() -> (PgPool, Backend) {
    let t = apimon_testkit::fresh_database().await;
    let pool = db::connect(&DbConfig::from_url(&t.url).unwrap())
        .await
        .unwrap();
    let backend = db::migrate(&pool).await.unwrap();
    (pool, backend)
}

/// Says, past the test harness's capture, that `test` checked only the
/// plain-PostgreSQL half of what it is about.
fn say_plain(test: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "{test}: ran on plain PostgreSQL; its TimescaleDB half needs APIMON_TEST_TIMESCALEDB=1"
    );
}

fn row(ts: DateTime<Utc>, rt: f64) -> MetricRow {
    MetricRow {
        timestamp: ts,
        api_name: "compressed".to_string(),
        url: "http://compressed.test/".to_string(),
        response_time_ms: Some(rt),
        status_code: Some(200),
        success: true,
        response_size_bytes: Some(10),
        error_kind: None,
        error_message: None,
        tls_expires_at: None,
    }
}

/// timescale/timescaledb#7672: before 2.18.1, `INSERT … ON CONFLICT DO
/// NOTHING` into a compressed chunk lost or miscounted rows when the
/// batch's first row was a duplicate. The pinger's own batch statement
/// (a retried batch starts with rows already stored) must store every new
/// row and count exactly those.
#[tokio::test]
async fn a_batch_into_a_compressed_chunk_whose_first_row_is_a_duplicate_keeps_every_new_row() {
    let (pool, backend) = migrated().await;
    let day = (Utc::now() - Duration::days(10))
        .duration_trunc(Duration::days(1))
        .unwrap();
    // 100 checks every 30 s, stored and then compressed (older than the
    // 7-day policy, as a pinger's late batch would find them).
    let stored: Vec<MetricRow> = (0..100)
        .map(|i| row(day + Duration::seconds(30 * i), 100.0 + i as f64))
        .collect();
    assert_eq!(
        db::metrics::insert_batch(&pool, &stored).await.unwrap(),
        100
    );
    if backend.is_timescale() {
        let compressed: i64 = sqlx::query_scalar(
            "SELECT count(compress_chunk(c, if_not_compressed => TRUE)) \
             FROM show_chunks('api_metrics') c",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(compressed, 1, "one chunk, compressed");
        let is_compressed: bool = sqlx::query_scalar(
            "SELECT bool_and(is_compressed) FROM timescaledb_information.chunks \
             WHERE hypertable_name = 'api_metrics'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(is_compressed);
    } else {
        say_plain(
            "a_batch_into_a_compressed_chunk_whose_first_row_is_a_duplicate_keeps_every_new_row",
        );
    }
    // The batch: a duplicate first, then new rows between the stored ones,
    // with another duplicate in the middle.
    let mut batch = vec![row(stored[0].timestamp, 999.0)];
    let new: Vec<MetricRow> = (0..50)
        .map(|i| row(day + Duration::seconds(30 * i + 15), 500.0 + i as f64))
        .collect();
    batch.extend(new[..25].iter().cloned());
    batch.push(row(stored[60].timestamp, 999.0));
    batch.extend(new[25..].iter().cloned());
    let counted = db::metrics::insert_batch(&pool, &batch).await.unwrap();
    assert_eq!(counted, 50, "new rows counted");
    let mut expected: Vec<MetricRow> = stored.iter().chain(new.iter()).cloned().collect();
    expected.sort_by_key(|r| r.timestamp);
    let all = db::metrics::for_api(&pool, "compressed").await.unwrap();
    assert_eq!(all.len(), 150, "stored rows");
    assert_eq!(
        all, expected,
        "every new row stored once, the duplicates left as they were"
    );
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Policy {
    job_id: i32,
    table: String,
    drop_after: String,
    schedule_interval: String,
}

async fn policies(pool: &PgPool) -> Vec<Policy> {
    sqlx::query_as(
        "SELECT job_id, hypertable_name::text AS table, config->>'drop_after' AS drop_after, \
                schedule_interval::text AS schedule_interval \
         FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention' \
         ORDER BY hypertable_name::text",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Each pinger start applies `RETENTION_DAYS`. The policies are created when
/// missing; a restart keeps their jobs (ids and an operator's `alter_job`
/// settings), and a new `RETENTION_DAYS` changes only `drop_after`.
#[tokio::test]
async fn retention_policies_are_created_once_and_keep_their_jobs_across_restarts() {
    let (pool, backend) = migrated().await;
    if !backend.is_timescale() {
        // Nothing to create: the services delete in batches instead (the
        // retention tests of schema.rs), and the call must not fail.
        db::apply_retention(&pool, &backend, 30).await.unwrap();
        let jobs_schema: bool =
            sqlx::query_scalar("SELECT to_regnamespace('timescaledb_information') IS NOT NULL")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(!jobs_schema);
        say_plain("retention_policies_are_created_once_and_keep_their_jobs_across_restarts");
        return;
    }
    db::apply_retention(&pool, &backend, 30).await.unwrap();
    let first = policies(&pool).await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(first[0].table, "anomalies");
    assert_eq!(first[1].table, "api_metrics");
    assert!(first.iter().all(|p| p.drop_after == "30 days"), "{first:?}");

    // An operator changes a job's schedule; the pinger restarts.
    sqlx::query("SELECT alter_job($1, schedule_interval => INTERVAL '6 hours')")
        .bind(first[1].job_id)
        .execute(&pool)
        .await
        .unwrap();
    db::apply_retention(&pool, &backend, 30).await.unwrap();
    let restarted = policies(&pool).await;
    assert_eq!(restarted[0], first[0]);
    assert_eq!(restarted[1].job_id, first[1].job_id, "same job");
    assert_eq!(
        restarted[1].schedule_interval, "06:00:00",
        "the operator's schedule kept"
    );

    // RETENTION_DAYS changes: the same jobs, a new drop_after.
    db::apply_retention(&pool, &backend, 45).await.unwrap();
    let changed = policies(&pool).await;
    assert_eq!(
        changed.iter().map(|p| p.job_id).collect::<Vec<_>>(),
        first.iter().map(|p| p.job_id).collect::<Vec<_>>()
    );
    assert!(
        changed.iter().all(|p| p.drop_after == "45 days"),
        "{changed:?}"
    );
    assert_eq!(changed[1].schedule_interval, "06:00:00");

    // The policy still works: a run drops the chunks older than 45 days.
    let old = Utc::now() - Duration::days(60);
    let recent = Utc::now() - Duration::days(5);
    db::metrics::insert_batch(&pool, &[row(old, 1.0), row(recent, 2.0)])
        .await
        .unwrap();
    sqlx::query("CALL run_job($1)")
        .bind(changed[1].job_id)
        .execute(&pool)
        .await
        .unwrap();
    let left = db::metrics::for_api(&pool, "compressed").await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].response_time_ms, Some(2.0));
}
