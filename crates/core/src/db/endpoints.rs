//! The `api_endpoints` table: the endpoints the pinger is configured with.
//! An endpoint removed from the configuration is *retired* (`retired_at`
//! set): its history stays, but it is no longer reported, trained or
//! scored. Registering it again makes it active.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::apis::Endpoint;

/// The longest check timeout of the active endpoints, if any: a check that
/// started before some instant may report up to this long after it.
pub async fn longest_timeout(pool: &PgPool) -> Result<Option<std::time::Duration>, sqlx::Error> {
    let ms: Option<i64> =
        sqlx::query_scalar("SELECT max(timeout_ms) FROM api_endpoints WHERE retired_at IS NULL")
            .fetch_one(pool)
            .await?;
    Ok(ms.map(|ms| std::time::Duration::from_millis(ms.max(0) as u64)))
}

/// Upserts every endpoint of the configuration (in one statement); a
/// retired one among them is active again.
#[tracing::instrument(skip_all, fields(endpoints = endpoints.len()))]
pub async fn upsert(pool: &PgPool, endpoints: &[Endpoint]) -> Result<(), sqlx::Error> {
    let names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
    // Shown on dashboards and read by other roles: never the secrets.
    let urls: Vec<&str> = endpoints
        .iter()
        .map(|e| e.url.redacted().as_str())
        .collect();
    let methods: Vec<&str> = endpoints.iter().map(|e| e.method.as_str()).collect();
    let intervals: Vec<i64> = endpoints
        .iter()
        .map(|e| e.interval.as_millis() as i64)
        .collect();
    let timeouts: Vec<i64> = endpoints
        .iter()
        .map(|e| e.timeout.as_millis() as i64)
        .collect();
    let statuses: Vec<String> = endpoints
        .iter()
        .map(|e| e.expected_status.to_string())
        .collect();
    let kinds: Vec<&str> = endpoints.iter().map(|e| e.probe.kind()).collect();
    sqlx::query(
        r#"
        INSERT INTO api_endpoints (api_name, url, method, interval_ms, timeout_ms, expected_status,
                                   kind)
        SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::text[],
                             $7::text[])
        ON CONFLICT (api_name) DO UPDATE SET
            url = EXCLUDED.url, method = EXCLUDED.method, interval_ms = EXCLUDED.interval_ms,
            timeout_ms = EXCLUDED.timeout_ms, expected_status = EXCLUDED.expected_status,
            kind = EXCLUDED.kind, updated_at = now(), retired_at = NULL
        "#,
    )
    .bind(&names)
    .bind(&urls)
    .bind(&methods)
    .bind(&intervals)
    .bind(&timeouts)
    .bind(&statuses)
    .bind(&kinds)
    .execute(pool)
    .await?;
    Ok(())
}

/// Registers the endpoints of the configuration, as [`upsert`], and
/// retires every other endpoint that is still active. Returns the names
/// retired now.
#[tracing::instrument(skip_all, fields(endpoints = endpoints.len()))]
pub async fn sync(pool: &PgPool, endpoints: &[Endpoint]) -> Result<Vec<String>, sqlx::Error> {
    upsert(pool, endpoints).await?;
    let names: Vec<&str> = endpoints.iter().map(|e| e.name.as_str()).collect();
    sqlx::query_scalar(
        "UPDATE api_endpoints SET retired_at = now(), updated_at = now()
         WHERE retired_at IS NULL AND NOT (api_name = ANY($1))
         RETURNING api_name",
    )
    .bind(&names)
    .fetch_all(pool)
    .await
}

/// Names of every active (not retired) endpoint.
pub async fn names(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT api_name FROM api_endpoints WHERE retired_at IS NULL ORDER BY api_name",
    )
    .fetch_all(pool)
    .await
}

/// Names of every retired endpoint.
pub async fn retired(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT api_name FROM api_endpoints WHERE retired_at IS NOT NULL ORDER BY api_name",
    )
    .fetch_all(pool)
    .await
}

/// Retention: deletes up to `limit` endpoints retired before `before`
/// whose checks are all gone. Returns how many.
pub async fn delete_retired_batch(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    super::delete_batch(
        pool,
        r#"DELETE FROM api_endpoints WHERE api_name = ANY(ARRAY(
               SELECT e.api_name FROM api_endpoints e
               WHERE e.retired_at < $1
                 AND NOT EXISTS (SELECT 1 FROM api_metrics m WHERE m.api_name = e.api_name)
               LIMIT $2))"#,
        before,
        limit,
    )
    .await
}

/// The active APIs being checked (a row or a registration at or after
/// `active_since`) with no row at or after `end` yet: their rows up to
/// `end` have not all arrived.
#[tracing::instrument(skip_all)]
pub async fn not_arrived(
    pool: &PgPool,
    end: chrono::DateTime<chrono::Utc>,
    active_since: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        r#"SELECT e.api_name FROM api_endpoints e
           WHERE e.retired_at IS NULL
             AND (e.updated_at >= $2
                  OR EXISTS (SELECT 1 FROM api_metrics m
                             WHERE m.api_name = e.api_name AND m."timestamp" >= $2))
             AND NOT EXISTS (SELECT 1 FROM api_metrics m
                             WHERE m.api_name = e.api_name AND m."timestamp" >= $1)
           ORDER BY 1"#,
    )
    .bind(end)
    .bind(active_since)
    .fetch_all(pool)
    .await
}
