//! The `detector_watermarks` table: how far the detector has scored each
//! API.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

/// Sets the watermarks of the given APIs (inside the transaction that
/// inserts the anomalies they produced).
pub async fn set(
    tx: &mut Transaction<'_, Postgres>,
    marks: &[(String, DateTime<Utc>)],
) -> Result<(), sqlx::Error> {
    if marks.is_empty() {
        return Ok(());
    }
    let api: Vec<&str> = marks.iter().map(|(a, _)| a.as_str()).collect();
    let ts: Vec<DateTime<Utc>> = marks.iter().map(|(_, t)| *t).collect();
    sqlx::query(
        r#"
        INSERT INTO detector_watermarks (api_name, last_timestamp)
        SELECT * FROM UNNEST($1::text[], $2::timestamptz[])
        ON CONFLICT (api_name) DO UPDATE
            SET last_timestamp = GREATEST(detector_watermarks.last_timestamp, EXCLUDED.last_timestamp),
                updated_at = now()
        "#,
    )
    .bind(&api)
    .bind(&ts)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Every watermark.
pub async fn all(pool: &PgPool) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("SELECT api_name, last_timestamp FROM detector_watermarks")
        .fetch_all(pool)
        .await
}
