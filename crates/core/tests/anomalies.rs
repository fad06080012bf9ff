//! The `anomalies` table's feature values: stored compactly in feature
//! order, read back by name, and still readable on rows written before the
//! compact form.

#![allow(clippy::unwrap_used)]

use apimon_core::db::{self, anomalies::AnomalyRow};
use apimon_core::features::{Features, FEATURE_NAMES};
use apimon_core::DbConfig;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use sqlx::PgPool;

/// The migration that introduced `feature_values`.
const COMPACT: i64 = 20261201000006;

async fn pool() -> PgPool {
    let t = apimon_testkit::fresh_database().await;
    db::connect(&DbConfig::from_url(&t.url).unwrap())
        .await
        .unwrap()
}

fn anomaly(ts: DateTime<Utc>, severity: &str, features: Option<Features>) -> AnomalyRow {
    AnomalyRow {
        timestamp: ts,
        api_name: "api".into(),
        response_time_ms: Some(1000.0),
        anomaly_score: -0.3,
        severity: severity.into(),
        details: "response time 1000 ms".into(),
        features,
        model_version: Some(2),
    }
}

/// Values a float4 holds exactly, each different from the others.
fn features(k: f64) -> Features {
    Features::from_array([1000.0 + k, 100.0, 3.5, 7.25, 900.0, 9.0, 13.0, 2.0])
}

async fn insert(pool: &PgPool, rows: &[AnomalyRow]) -> u64 {
    let mut tx = pool.begin().await.unwrap();
    let n = db::anomalies::insert(&mut tx, rows).await.unwrap();
    tx.commit().await.unwrap();
    n
}

#[tokio::test]
async fn feature_values_are_stored_as_eight_reals_in_feature_order_and_read_back() {
    let pool = pool().await;
    db::migrate(&pool).await.unwrap();
    let t0 = Utc::now().trunc_subsecs(6);
    // With and without features in one batch: each row gets its own.
    let rows = vec![
        anomaly(t0, "critical", Some(features(1.0))),
        anomaly(t0 + Duration::seconds(15), "medium", None),
        anomaly(t0 + Duration::seconds(30), "high", Some(features(2.0))),
    ];

    assert_eq!(insert(&pool, &rows).await, 3);

    assert_eq!(db::anomalies::for_api(&pool, "api").await.unwrap(), rows);
    let stored: Vec<(Option<Vec<f32>>, bool, Option<i32>)> = sqlx::query_as(
        r#"SELECT feature_values, features IS NULL, pg_column_size(feature_values)
           FROM anomalies ORDER BY "timestamp""#,
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let named = |f: Features| f.named().map(|(_, v)| v as f32).to_vec();
    assert_eq!(
        stored,
        vec![
            (Some(named(features(1.0))), true, Some(53)),
            (None, true, None),
            (Some(named(features(2.0))), true, Some(53)),
        ]
    );
    // SQL readers index the array in the order of FEATURE_NAMES (1-based).
    let rolling_mean = 1 + FEATURE_NAMES
        .iter()
        .position(|n| *n == "rolling_mean")
        .unwrap() as i32;
    let m: f32 = sqlx::query_scalar(
        r#"SELECT feature_values[$1] FROM anomalies ORDER BY "timestamp" LIMIT 1"#,
    )
    .bind(rolling_mean)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(m, 100.0);
}

#[tokio::test]
async fn anomalies_written_before_the_compact_form_keep_their_features_readable() {
    let pool = pool().await;
    apimon_testkit::migrations::migrate_before(&pool, &db::MIGRATOR, COMPACT).await;
    let t0 = Utc::now().trunc_subsecs(6);
    // As the detector wrote them: the features as JSON by name, or NULL
    // for a failed check; one with a feature missing.
    let json = |f: Features| {
        serde_json::Value::Object(
            f.named()
                .iter()
                .map(|(k, v)| ((*k).to_string(), serde_json::json!(v)))
                .collect(),
        )
    };
    let mut incomplete = json(features(3.0));
    incomplete.as_object_mut().unwrap().remove("weekday");
    for (i, f) in [Some(json(features(1.0))), None, Some(incomplete)]
        .into_iter()
        .enumerate()
    {
        sqlx::query(
            r#"INSERT INTO anomalies ("timestamp", api_name, response_time_ms, anomaly_score,
                                      severity, details, features, model_version)
               VALUES ($1, 'api', 1000, -0.3, 'critical', 'response time 1000 ms', $2, 2)"#,
        )
        .bind(t0 + Duration::seconds(15 * i as i64))
        .bind(f)
        .execute(&pool)
        .await
        .unwrap();
    }

    db::migrate(&pool).await.unwrap();
    insert(
        &pool,
        &[anomaly(
            t0 + Duration::seconds(45),
            "critical",
            Some(features(4.0)),
        )],
    )
    .await;

    let read: Vec<Option<Features>> = db::anomalies::for_api(&pool, "api")
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.features)
        .collect();
    assert_eq!(
        read,
        [Some(features(1.0)), None, None, Some(features(4.0))],
        "old rows by name, new rows by position"
    );
}
