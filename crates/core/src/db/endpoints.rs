//! The `api_endpoints` table: the endpoints the pinger is configured with.

use sqlx::PgPool;

use crate::apis::Endpoint;

/// Upserts every endpoint of the configuration (in one statement).
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
    sqlx::query(
        r#"
        INSERT INTO api_endpoints (api_name, url, method, interval_ms, timeout_ms, expected_status)
        SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::text[])
        ON CONFLICT (api_name) DO UPDATE SET
            url = EXCLUDED.url, method = EXCLUDED.method, interval_ms = EXCLUDED.interval_ms,
            timeout_ms = EXCLUDED.timeout_ms, expected_status = EXCLUDED.expected_status,
            updated_at = now()
        "#,
    )
    .bind(&names)
    .bind(&urls)
    .bind(&methods)
    .bind(&intervals)
    .bind(&timeouts)
    .bind(&statuses)
    .execute(pool)
    .await?;
    Ok(())
}

/// Names of every registered endpoint.
pub async fn names(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT api_name FROM api_endpoints ORDER BY api_name")
        .fetch_all(pool)
        .await
}
