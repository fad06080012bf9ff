//! The migrated schema, against a real PostgreSQL.

#![allow(clippy::unwrap_used)]

use apimon_core::db::{self, metrics::MetricRow, Backend};
use apimon_core::DbConfig;
use chrono::{Duration, DurationRound, SubsecRound, TimeZone, Utc};
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Row};

async fn migrated_pool() -> PgPool {
    let test_db = apimon_testkit::fresh_database().await;
    let cfg = DbConfig::from_url(&test_db.url).expect("test URL is valid");
    let pool = db::connect(&cfg).await.expect("connect");
    db::migrate(&pool).await.expect("migrate");
    pool
}

fn row(api: &str, ts: chrono::DateTime<Utc>, rt: Option<f64>) -> MetricRow {
    MetricRow {
        timestamp: ts,
        api_name: api.to_string(),
        url: format!("http://{api}.test/"),
        response_time_ms: rt,
        status_code: rt.map(|_| 200),
        success: rt.is_some(),
        response_size_bytes: rt.map(|_| 42),
        error_kind: rt.is_none().then(|| "timeout".to_string()),
        error_message: rt.is_none().then(|| "timed out".to_string()),
        tls_expires_at: None,
    }
}

#[tokio::test]
async fn migrations_run_twice_are_a_no_op() {
    let pool = migrated_pool().await;
    let count = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = count(pool.clone()).await;
    db::migrate(&pool).await.expect("second run");
    assert_eq!(count(pool.clone()).await, before);
    assert!(before >= 1);
}

/// Migrations 0001 (its TimescaleDB check) and 0004 (its comment) were
/// changed after release: a database that applied the old text starts as
/// before, and any other checksum change is still refused.
#[tokio::test]
async fn a_database_that_applied_a_reworded_migration_accepts_its_new_text() {
    let pool = migrated_pool().await;
    let checksum = |version: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, Vec<u8>>(
                "SELECT checksum FROM _sqlx_migrations WHERE version = $1",
            )
            .bind(version)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let set = |version: i64, bytes: Vec<u8>| {
        let pool = pool.clone();
        async move {
            sqlx::query("UPDATE _sqlx_migrations SET checksum = $2 WHERE version = $1")
                .bind(version)
                .bind(bytes)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    assert_eq!(db::REWORDED.len(), 2);
    for (version, old) in db::REWORDED {
        let current = checksum(*version).await;
        assert_ne!(current, decode_hex(old), "{version}: the text did change");
        set(*version, decode_hex(old)).await;
        db::migrate(&pool)
            .await
            .unwrap_or_else(|e| panic!("{version}: the old text is accepted: {e:?}"));
        assert_eq!(
            checksum(*version).await,
            current,
            "{version}: record updated"
        );

        set(*version, vec![0]).await;
        let e = db::migrate(&pool).await.unwrap_err();
        assert!(e.is_migration_failure(), "{version}: {e:?}");
        // sqlx's advisory lock goes with the failed attempt's session: the
        // next attempt, on any connection, does not wait for it.
        let mut held = 1;
        for _ in 0..40 {
            held = sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if held == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(held, 0, "{version}: a failed migration left its lock");
        set(*version, current).await;
    }
}

fn decode_hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn concurrent_migrations_do_not_conflict() {
    let test_db = apimon_testkit::fresh_database().await;
    let cfg = DbConfig::from_url(&test_db.url).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let cfg = cfg.clone();
        tasks.push(tokio::spawn(async move {
            let pool = db::connect(&cfg).await.unwrap();
            db::migrate(&pool).await.map(|_| ())
        }));
    }
    for t in tasks {
        t.await
            .unwrap()
            .expect("each concurrent migration succeeds");
    }
}

#[tokio::test]
async fn the_backend_is_what_the_server_offers_and_time_bucket_matches_timescale_origin() {
    let pool = migrated_pool().await;
    let backend = db::backend(&pool).await.unwrap();
    let (installed, preloaded): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'), \
                current_setting('shared_preload_libraries') ~ 'timescaledb'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    match (installed, preloaded) {
        // Installed but not preloaded: CREATE EXTENSION would end the
        // session, so the schema falls back to plain tables (and the
        // binaries warn with the fix).
        (true, false) => assert!(
            matches!(
                backend,
                Backend::Postgres {
                    timescale_available: true,
                    ..
                }
            ),
            "{backend}"
        ),
        (true, true) => assert!(matches!(backend, Backend::TimescaleDb { .. }), "{backend}"),
        (false, _) => {
            eprintln!("TimescaleDB is not installed on this server: ran on plain PostgreSQL");
            assert!(
                matches!(
                    backend,
                    Backend::Postgres {
                        timescale_available: false,
                        ..
                    }
                ),
                "{backend}"
            );
        }
    }
    // TimescaleDB buckets weeks from Monday 2000-01-03; so does ours.
    let b: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT time_bucket('7 days', TIMESTAMPTZ '2026-11-25 13:14:15+00')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(b, Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap());
    let b: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT time_bucket('15m', TIMESTAMPTZ '2026-11-25 13:14:15+00')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(b, Utc.with_ymd_and_hms(2026, 11, 25, 13, 0, 0).unwrap());
}

#[tokio::test]
async fn insert_batch_writes_every_row_once_and_notifies() {
    let pool = migrated_pool().await;
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen(db::METRICS_CHANNEL).await.unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
    let rows: Vec<MetricRow> = (0..100)
        .map(|i| {
            let rt = if i % 10 == 0 { None } else { Some(i as f64) };
            row(&format!("api{}", i % 4), t0 + Duration::seconds(i), rt)
        })
        .collect();
    assert_eq!(db::metrics::insert_batch(&pool, &rows).await.unwrap(), 100);
    let note = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification within 5 s")
        .unwrap();
    assert_eq!(note.payload(), "100");
    // The same batch again (a retry after a lost commit) adds nothing.
    assert_eq!(db::metrics::insert_batch(&pool, &rows).await.unwrap(), 0);
    let back = db::metrics::for_api(&pool, "api1").await.unwrap();
    let expected: Vec<MetricRow> = rows
        .iter()
        .filter(|r| r.api_name == "api1")
        .cloned()
        .collect();
    assert_eq!(back, expected);
}

#[tokio::test]
async fn the_original_sample_grafana_queries_run_unchanged() {
    let pool = migrated_pool().await;
    // At the start of an hour, so that the anomalies' first minutes share
    // one hourly bucket whatever the time of day.
    let t0 = (Utc::now() - Duration::hours(3))
        .duration_trunc(Duration::hours(1))
        .unwrap();
    let rows: Vec<MetricRow> = (0..240)
        .map(|i| {
            row(
                ["a", "b"][i % 2],
                t0 + Duration::seconds(30 * i as i64),
                Some(100.0 + i as f64),
            )
        })
        .collect();
    db::metrics::insert_batch(&pool, &rows).await.unwrap();
    for (i, score) in [-0.3, -0.15, -0.05, 0.1].iter().enumerate() {
        sqlx::query(
            "INSERT INTO anomalies (\"timestamp\", api_name, response_time_ms, anomaly_score, severity, details)
             VALUES ($1, 'a', 500, $2, $3, 'test')",
        )
        .bind(t0 + Duration::minutes(i as i64))
        .bind(score)
        .bind(["critical", "high", "medium", "medium"][i])
        .execute(&pool)
        .await
        .unwrap();
    }
    let q1 =
        "SELECT time_bucket('15m', timestamp) AS time, api_name, AVG(response_time_ms) AS avg_rt,
         percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time_ms) AS p95
  FROM api_metrics GROUP BY 1, 2 ORDER BY 1;";
    let r1 = sqlx::query(q1)
        .fetch_all(&pool)
        .await
        .expect("query 1 runs");
    // 2 h of data in 15-minute buckets, two APIs: 8 or 9 buckets each.
    assert!((16..=18).contains(&r1.len()), "{} rows", r1.len());
    let avg: f64 = r1[0].get("avg_rt");
    let p95: f64 = r1[0].get("p95");
    assert!(avg >= 100.0 && p95 >= avg);

    let q2 =
        "SELECT time_bucket('1h', timestamp) AS time, api_name, AVG(anomaly_score) AS avg_score,
         COUNT(*) FILTER (WHERE anomaly_score < -0.2) AS critical_count
  FROM anomalies WHERE anomaly_score < 0 GROUP BY 1, 2;";
    let r2 = sqlx::query(q2)
        .fetch_all(&pool)
        .await
        .expect("query 2 runs");
    assert_eq!(r2.len(), 1);
    let avg_score: f64 = r2[0].get("avg_score");
    let critical: i64 = r2[0].get("critical_count");
    assert!((avg_score - (-0.5 / 3.0)).abs() < 1e-9, "{avg_score}");
    assert_eq!(critical, 1);
}

/// On plain PostgreSQL a retention pass deletes the old checks; on
/// TimescaleDB it leaves the hypertable to its retention policy (tested in
/// timescale.rs) and deletes nothing.
#[tokio::test]
async fn a_retention_pass_deletes_old_checks_on_plain_postgres_only() {
    let pool = migrated_pool().await;
    let backend = db::backend(&pool).await.unwrap();
    let now = Utc::now().trunc_subsecs(6);
    let rows = vec![
        row("a", now - Duration::days(100), Some(1.0)),
        row("a", now - Duration::days(10), Some(2.0)),
    ];
    db::metrics::insert_batch(&pool, &rows).await.unwrap();
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let rules = [apimon_core::retention::Rule::new(
        apimon_core::retention::Table::ApiMetrics,
        90,
    )];
    let settings = apimon_core::retention::Settings::default();
    let deleted = apimon_core::retention::pass(&pool, &rules, &settings, &stop)
        .await
        .unwrap();
    let left = db::metrics::for_api(&pool, "a").await.unwrap();
    if backend.is_timescale() {
        assert!(deleted.is_empty(), "{deleted:?}");
        assert_eq!(left, rows);
    } else {
        assert_eq!(deleted[0].rows, 1);
        assert_eq!(left, vec![rows[1].clone()]);
    }
}

#[tokio::test]
async fn grafana_reads_through_a_read_only_role() {
    let test_db = apimon_testkit::fresh_database().await;
    let pool = migrated_pool_at(&test_db.url).await;
    db::set_grafana_password(&pool, "gr4f'ana").await.unwrap();
    let mut url = url::Url::parse(&test_db.url).unwrap();
    url.set_username("apimon_grafana").unwrap();
    url.set_password(Some("gr4f'ana")).unwrap();
    let ro = db::connect(&DbConfig::from_url(url.as_str()).unwrap())
        .await
        .expect("the role logs in");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM api_metrics")
        .fetch_one(&ro)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let denied = sqlx::query("DELETE FROM api_metrics").execute(&ro).await;
    assert!(denied.is_err(), "read-only");
    let denied = sqlx::query("INSERT INTO anomalies (\"timestamp\", api_name, anomaly_score, severity) VALUES (now(), 'x', -1, 'critical')")
        .execute(&ro)
        .await;
    assert!(denied.is_err(), "read-only");
}

async fn migrated_pool_at(url: &str) -> PgPool {
    let pool = db::connect(&DbConfig::from_url(url).unwrap())
        .await
        .unwrap();
    db::migrate(&pool).await.unwrap();
    pool
}

#[tokio::test]
async fn the_retired_alert_state_tables_are_dropped() {
    let pool = migrated_pool().await;
    for table in ["alert_state", "alerter_progress"] {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(!exists, "{table} is still there");
    }
}
