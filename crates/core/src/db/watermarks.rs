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

/// Saves the incident rules' state of the given APIs (inside the
/// transaction that moves their watermarks).
pub async fn set_incident_state(
    tx: &mut Transaction<'_, Postgres>,
    states: &[(String, serde_json::Value)],
) -> Result<(), sqlx::Error> {
    if states.is_empty() {
        return Ok(());
    }
    let api: Vec<&str> = states.iter().map(|(a, _)| a.as_str()).collect();
    let st: Vec<&serde_json::Value> = states.iter().map(|(_, s)| s).collect();
    sqlx::query(
        r#"UPDATE detector_watermarks w SET incident_state = u.s
           FROM UNNEST($1::text[], $2::jsonb[]) AS u(a, s) WHERE w.api_name = u.a"#,
    )
    .bind(&api)
    .bind(&st)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The saved incident rules' state of every API that has one.
pub async fn incident_states(
    pool: &PgPool,
) -> Result<Vec<(String, serde_json::Value)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT api_name, incident_state FROM detector_watermarks WHERE incident_state IS NOT NULL",
    )
    .fetch_all(pool)
    .await
}

/// Saves what the current model of each given API has seen (see
/// `Model::score_seen`), inside the transaction that moves their
/// watermarks; `None` clears it.
pub async fn set_seen_state(
    tx: &mut Transaction<'_, Postgres>,
    states: &[(String, Option<serde_json::Value>)],
) -> Result<(), sqlx::Error> {
    if states.is_empty() {
        return Ok(());
    }
    let api: Vec<&str> = states.iter().map(|(a, _)| a.as_str()).collect();
    let st: Vec<Option<&serde_json::Value>> = states.iter().map(|(_, s)| s.as_ref()).collect();
    sqlx::query(
        r#"UPDATE detector_watermarks w SET seen_state = u.s
           FROM UNNEST($1::text[], $2::jsonb[]) AS u(a, s) WHERE w.api_name = u.a"#,
    )
    .bind(&api)
    .bind(&st)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The saved seen state of every API that has one.
pub async fn seen_states(pool: &PgPool) -> Result<Vec<(String, serde_json::Value)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT api_name, seen_state FROM detector_watermarks WHERE seen_state IS NOT NULL",
    )
    .fetch_all(pool)
    .await
}

/// Forgets the incident rules' state of `apis` (their incidents were
/// closed for them, inside `tx`): a re-added API starts its rules afresh.
pub async fn clear_incident_state(
    tx: &mut Transaction<'_, Postgres>,
    apis: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE detector_watermarks SET incident_state = NULL WHERE api_name = ANY($1)")
        .bind(apis)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Retention: deletes up to `limit` watermarks of APIs that are no longer
/// checked: retired before `before`, or not registered at all and not
/// moved since `before`. Returns how many.
pub async fn delete_retired_batch(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    super::delete_batch(
        pool,
        r#"DELETE FROM detector_watermarks WHERE api_name = ANY(ARRAY(
               SELECT w.api_name FROM detector_watermarks w
               LEFT JOIN api_endpoints e ON e.api_name = w.api_name
               WHERE e.retired_at < $1 OR (e.api_name IS NULL AND w.updated_at < $1)
               LIMIT $2))"#,
        before,
        limit,
    )
    .await
}
