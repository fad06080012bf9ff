//! The `anomalies` table: one row per anomalous observation.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use super::ANOMALIES_CHANNEL;

/// An anomaly to insert (or read back).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AnomalyRow {
    /// Time of the observation.
    pub timestamp: DateTime<Utc>,
    pub api_name: String,
    pub response_time_ms: Option<f64>,
    pub anomaly_score: f64,
    /// `critical`, `high` or `medium`.
    pub severity: String,
    /// One sentence a person can read.
    pub details: String,
    /// Feature values by name (JSON), when the forest scored it.
    pub features: Option<serde_json::Value>,
    pub model_version: Option<i64>,
}

/// Inserts `rows` (skipping any already there) inside `tx` and notifies
/// [`ANOMALIES_CHANNEL`] on commit with the number of new rows. Returns it.
pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[AnomalyRow],
) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ts: Vec<DateTime<Utc>> = rows.iter().map(|r| r.timestamp).collect();
    let api: Vec<&str> = rows.iter().map(|r| r.api_name.as_str()).collect();
    let rt: Vec<Option<f64>> = rows.iter().map(|r| r.response_time_ms).collect();
    let score: Vec<f64> = rows.iter().map(|r| r.anomaly_score).collect();
    let sev: Vec<&str> = rows.iter().map(|r| r.severity.as_str()).collect();
    let details: Vec<&str> = rows.iter().map(|r| r.details.as_str()).collect();
    let features: Vec<Option<serde_json::Value>> =
        rows.iter().map(|r| r.features.clone()).collect();
    let version: Vec<Option<i64>> = rows.iter().map(|r| r.model_version).collect();
    let n: i64 = sqlx::query_scalar(
        r#"
        WITH ins AS (
            INSERT INTO anomalies ("timestamp", api_name, response_time_ms, anomaly_score, severity,
                                   details, features, model_version, detected_at)
            SELECT t, a, r, s, v, d, f, m, clock_timestamp()
            FROM UNNEST($1::timestamptz[], $2::text[], $3::float8[], $4::float8[], $5::text[],
                        $6::text[], $7::jsonb[], $8::int8[]) AS u(t, a, r, s, v, d, f, m)
            ON CONFLICT (api_name, "timestamp") DO NOTHING
            RETURNING 1
        )
        SELECT s.n FROM (SELECT count(*) AS n FROM ins) AS s, pg_notify($9, s.n::text)
        "#,
    )
    .bind(&ts)
    .bind(&api)
    .bind(&rt)
    .bind(&score)
    .bind(&sev)
    .bind(&details)
    .bind(&features)
    .bind(&version)
    .bind(ANOMALIES_CHANNEL)
    .fetch_one(&mut **tx)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The anomalies of one API in time order.
pub async fn for_api(pool: &PgPool, api_name: &str) -> Result<Vec<AnomalyRow>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT "timestamp", api_name, response_time_ms, anomaly_score, severity, details,
                  features, model_version
           FROM anomalies WHERE api_name = $1 ORDER BY "timestamp""#,
    )
    .bind(api_name)
    .fetch_all(pool)
    .await
}
