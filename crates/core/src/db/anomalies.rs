//! The `anomalies` table: one row per anomalous observation.
//!
//! The feature values are stored as `real[]` in the order of
//! [`FEATURE_NAMES`] (column `feature_values`); rows written before
//! migration `20261201000006` hold them as JSON by name (column
//! `features`). [`for_api`] reads both; SQL reads both with
//! `coalesce(feature_values, anomaly_features_from_json(features))`.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::ANOMALIES_CHANNEL;
use crate::features::{Features, FEATURE_NAMES, N_FEATURES};

/// An anomaly to insert (or read back).
#[derive(Debug, Clone, PartialEq)]
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
    /// The feature values the forest scored, kept for high and critical
    /// anomalies (the detector's choice). Stored as float4: read back, a
    /// value keeps about 7 significant digits.
    pub features: Option<Features>,
    pub model_version: Option<i64>,
}

/// Reads a row that has the columns of [`AnomalyRow`], the feature values
/// as `feature_values` (a `real[]` of [`N_FEATURES`] values, or NULL).
impl<'r> sqlx::FromRow<'r, PgRow> for AnomalyRow {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let values: Option<Vec<f32>> = row.try_get("feature_values")?;
        let features = values
            .map(|v| {
                <[f32; N_FEATURES]>::try_from(v.as_slice())
                    .map(|a| Features::from_array(a.map(f64::from)))
                    .map_err(|_| sqlx::Error::ColumnDecode {
                        index: "feature_values".into(),
                        source: format!(
                            "{} feature values where {N_FEATURES} ({}) were expected",
                            v.len(),
                            FEATURE_NAMES.join(", ")
                        )
                        .into(),
                    })
            })
            .transpose()?;
        Ok(AnomalyRow {
            timestamp: row.try_get("timestamp")?,
            api_name: row.try_get("api_name")?,
            response_time_ms: row.try_get("response_time_ms")?,
            anomaly_score: row.try_get("anomaly_score")?,
            severity: row.try_get("severity")?,
            details: row.try_get("details")?,
            features,
            model_version: row.try_get("model_version")?,
        })
    }
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
    // An array of arrays cannot go through UNNEST (it would be flattened,
    // and it cannot hold NULL rows): all values in one flat array, each
    // row's N_FEATURES at its offset, and whether the row has them.
    let has: Vec<bool> = rows.iter().map(|r| r.features.is_some()).collect();
    let values: Vec<f32> = rows
        .iter()
        .flat_map(|r| {
            // Stored as float4, by design.
            r.features
                .map_or([0.0; N_FEATURES], |f| f.to_array().map(|v| v as f32))
        })
        .collect();
    let version: Vec<Option<i64>> = rows.iter().map(|r| r.model_version).collect();
    let n: i64 = sqlx::query_scalar(
        r#"
        WITH ins AS (
            INSERT INTO anomalies ("timestamp", api_name, response_time_ms, anomaly_score, severity,
                                   details, feature_values, model_version, detected_at)
            SELECT t, a, r, s, v, d,
                   CASE WHEN h THEN ($7::real[])[(i::int - 1) * $10 + 1 : i::int * $10] END,
                   m, clock_timestamp()
            FROM UNNEST($1::timestamptz[], $2::text[], $3::float8[], $4::float8[], $5::text[],
                        $6::text[], $8::bool[], $9::int8[])
                 WITH ORDINALITY AS u(t, a, r, s, v, d, h, m, i)
            ON CONFLICT (api_name, "timestamp") DO NOTHING
            RETURNING 1
        )
        SELECT s.n FROM (SELECT count(*) AS n FROM ins) AS s, pg_notify($11, s.n::text)
        "#,
    )
    .bind(&ts)
    .bind(&api)
    .bind(&rt)
    .bind(&score)
    .bind(&sev)
    .bind(&details)
    .bind(&values)
    .bind(&has)
    .bind(&version)
    .bind(N_FEATURES as i32)
    .bind(ANOMALIES_CHANNEL)
    .fetch_one(&mut **tx)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The anomalies of one API in time order, with the feature values of
/// rows written before and after the compact form.
pub async fn for_api(pool: &PgPool, api_name: &str) -> Result<Vec<AnomalyRow>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT "timestamp", api_name, response_time_ms, anomaly_score, severity, details,
                  coalesce(feature_values, anomaly_features_from_json(features)) AS feature_values,
                  model_version
           FROM anomalies WHERE api_name = $1 ORDER BY "timestamp""#,
    )
    .bind(api_name)
    .fetch_all(pool)
    .await
}

/// Anomalies in `[start, end)` by API and severity: `(api, severity, count)`.
#[tracing::instrument(skip_all)]
pub async fn severity_counts(
    pool: &PgPool,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT api_name, severity, count(*) FROM anomalies
           WHERE "timestamp" >= $1 AND "timestamp" < $2 GROUP BY 1, 2"#,
    )
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await
}

/// Retention on plain PostgreSQL: deletes up to `limit` anomalies observed
/// before `before`. Returns how many. (On TimescaleDB a retention policy
/// drops whole chunks instead: see [`super::apply_retention`].)
pub async fn delete_batch_before(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    super::delete_batch(
        pool,
        r#"DELETE FROM anomalies WHERE ctid = ANY(ARRAY(
               SELECT ctid FROM anomalies WHERE "timestamp" < $1 LIMIT $2))"#,
        before,
        limit,
    )
    .await
}
