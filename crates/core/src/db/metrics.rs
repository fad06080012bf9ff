//! The `api_metrics` table: one row per check.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::METRICS_CHANNEL;

/// One check of one endpoint.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct MetricRow {
    /// When the check started (wall clock, microsecond precision).
    pub timestamp: DateTime<Utc>,
    pub api_name: String,
    /// The endpoint's URL redacted ([`crate::redact`]): no userinfo, no
    /// query values.
    pub url: String,
    /// Time to the end of the body; `None` when no complete response came.
    pub response_time_ms: Option<f64>,
    pub status_code: Option<i32>,
    /// The response came and had an expected status.
    pub success: bool,
    pub response_size_bytes: Option<i64>,
    /// `timeout`, `dns`, `connect`, `tls`, `http_status`, `body`, ...
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    /// The notAfter of the leaf certificate of an https check's TLS
    /// session; `None` for plain HTTP, other kinds, and checks that did
    /// not complete a handshake.
    pub tls_expires_at: Option<DateTime<Utc>>,
}

impl MetricRow {
    /// A failed check of `api_name` at `timestamp` with nothing measured
    /// yet: what a check fills in.
    pub fn empty(timestamp: DateTime<Utc>, api_name: &str, url: &str) -> MetricRow {
        MetricRow {
            timestamp,
            api_name: api_name.to_string(),
            url: url.to_string(),
            response_time_ms: None,
            status_code: None,
            success: false,
            response_size_bytes: None,
            error_kind: None,
            error_message: None,
            tls_expires_at: None,
        }
    }
}

/// Inserts `rows` in one statement and, in the same statement (so on
/// commit), notifies [`METRICS_CHANNEL`] with the number of new rows. Rows
/// already present (same api_name and timestamp, e.g. a batch retried after
/// its commit was lost) are skipped. Returns how many rows were new.
#[tracing::instrument(skip_all, fields(rows = rows.len()))]
pub async fn insert_batch(pool: &PgPool, rows: &[MetricRow]) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let n = rows.len();
    let mut ts = Vec::with_capacity(n);
    let mut name = Vec::with_capacity(n);
    let mut url = Vec::with_capacity(n);
    let mut rt = Vec::with_capacity(n);
    let mut status = Vec::with_capacity(n);
    let mut success = Vec::with_capacity(n);
    let mut size = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut msg = Vec::with_capacity(n);
    let mut tls = Vec::with_capacity(n);
    for r in rows {
        ts.push(r.timestamp);
        name.push(r.api_name.as_str());
        url.push(r.url.as_str());
        rt.push(r.response_time_ms);
        status.push(r.status_code);
        success.push(r.success);
        size.push(r.response_size_bytes);
        kind.push(r.error_kind.as_deref());
        msg.push(r.error_message.as_deref());
        tls.push(r.tls_expires_at);
    }
    let inserted: i64 = sqlx::query_scalar(
        r#"
        WITH ins AS (
            INSERT INTO api_metrics ("timestamp", api_name, url, response_time_ms, status_code,
                                     success, response_size_bytes, error_kind, error_message,
                                     tls_expires_at)
            SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::float8[],
                                 $5::int4[], $6::bool[], $7::int8[], $8::text[], $9::text[],
                                 $11::timestamptz[])
            ON CONFLICT (api_name, "timestamp") DO NOTHING
            RETURNING 1
        )
        SELECT s.n FROM (SELECT count(*) AS n FROM ins) AS s, pg_notify($10, s.n::text)
        "#,
    )
    .bind(&ts)
    .bind(&name)
    .bind(&url)
    .bind(&rt)
    .bind(&status)
    .bind(&success)
    .bind(&size)
    .bind(&kind)
    .bind(&msg)
    .bind(METRICS_CHANNEL)
    .bind(&tls)
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(inserted).unwrap_or(0))
}

/// The rows of one API in time order (tests, replay).
pub async fn for_api(pool: &PgPool, api_name: &str) -> Result<Vec<MetricRow>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT "timestamp", api_name, url, response_time_ms, status_code, success,
                  response_size_bytes, error_kind, error_message, tls_expires_at
           FROM api_metrics WHERE api_name = $1 ORDER BY "timestamp""#,
    )
    .bind(api_name)
    .fetch_all(pool)
    .await
}

/// `(timestamp, response_time_ms, success)` of one API since `from`, in
/// time order: what features are computed from.
pub async fn series_since(
    pool: &PgPool,
    api_name: &str,
    from: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, Option<f64>, bool)>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT "timestamp", response_time_ms, success FROM api_metrics
           WHERE api_name = $1 AND "timestamp" > $2 ORDER BY "timestamp""#,
    )
    .bind(api_name)
    .bind(from)
    .fetch_all(pool)
    .await
}

/// Successful checks since `from`, per API of `apis` (APIs without any are
/// left out).
pub async fn success_counts(
    pool: &PgPool,
    apis: &[String],
    from: DateTime<Utc>,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT api_name, count(*) FROM api_metrics
           WHERE api_name = ANY($1) AND "timestamp" > $2 AND success
           GROUP BY api_name"#,
    )
    .bind(apis)
    .bind(from)
    .fetch_all(pool)
    .await
}

/// A row as the detector reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NewRow {
    pub timestamp: DateTime<Utc>,
    pub api_name: String,
    pub response_time_ms: Option<f64>,
    pub success: bool,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub ingested_at: DateTime<Utc>,
    pub tls_expires_at: Option<DateTime<Utc>>,
}

/// Rows after each API's watermark, by API then time, at most `limit`.
pub async fn after_watermarks(
    pool: &PgPool,
    marks: &[(String, DateTime<Utc>)],
    limit: i64,
) -> Result<Vec<NewRow>, sqlx::Error> {
    let names: Vec<&str> = marks.iter().map(|(a, _)| a.as_str()).collect();
    let ts: Vec<DateTime<Utc>> = marks.iter().map(|(_, t)| *t).collect();
    sqlx::query_as(
        r#"SELECT m."timestamp", m.api_name, m.response_time_ms, m.success, m.error_kind,
                  m.error_message, m.ingested_at, m.tls_expires_at
           FROM UNNEST($1::text[], $2::timestamptz[]) AS w(api_name, wm)
           CROSS JOIN LATERAL (
               SELECT * FROM api_metrics a
               WHERE a.api_name = w.api_name AND a."timestamp" > w.wm
               ORDER BY a."timestamp" LIMIT $3
           ) AS m
           ORDER BY m.api_name, m."timestamp"
           LIMIT $3"#,
    )
    .bind(&names)
    .bind(&ts)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The last `per_api` rows at or before each API's watermark, oldest first
/// within each API: what a restarted detector warms its state with.
pub async fn before_watermarks(
    pool: &PgPool,
    marks: &[(String, DateTime<Utc>)],
    per_api: i64,
) -> Result<Vec<(String, DateTime<Utc>, Option<f64>, bool)>, sqlx::Error> {
    let names: Vec<&str> = marks.iter().map(|(a, _)| a.as_str()).collect();
    let ts: Vec<DateTime<Utc>> = marks.iter().map(|(_, t)| *t).collect();
    sqlx::query_as(
        r#"SELECT w.api_name, m."timestamp", m.response_time_ms, m.success
           FROM UNNEST($1::text[], $2::timestamptz[]) AS w(api_name, wm)
           CROSS JOIN LATERAL (
               SELECT "timestamp", response_time_ms, success FROM api_metrics a
               WHERE a.api_name = w.api_name AND a."timestamp" <= w.wm
               ORDER BY a."timestamp" DESC LIMIT $3
           ) AS m
           ORDER BY w.api_name, m."timestamp""#,
    )
    .bind(&names)
    .bind(&ts)
    .bind(per_api)
    .fetch_all(pool)
    .await
}

/// One API's checks over a period: name, checks, successes, mean and p95
/// of the successes' response times, and whether a `down` / `slow`
/// incident was open at the period's end.
pub type PeriodStats = (String, i64, i64, Option<f64>, Option<f64>, bool, bool);

/// The certificates of the active APIs that expire before `before`, as
/// the latest check in `[start, end)` of each saw them: `(api, notAfter)`,
/// soonest first.
pub async fn expiring_certificates(
    pool: &PgPool,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    before: DateTime<Utc>,
) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT api_name, tls_expires_at FROM (
               SELECT DISTINCT ON (m.api_name) m.api_name, m.tls_expires_at
               FROM api_metrics m
               JOIN api_endpoints e ON e.api_name = m.api_name AND e.retired_at IS NULL
               WHERE m."timestamp" >= $1 AND m."timestamp" < $2
                 AND m.tls_expires_at IS NOT NULL
               ORDER BY m.api_name, m."timestamp" DESC
           ) latest
           WHERE tls_expires_at < $3
           ORDER BY tls_expires_at, api_name"#,
    )
    .bind(start)
    .bind(end)
    .bind(before)
    .fetch_all(pool)
    .await
}

/// [`PeriodStats`] of every active (not retired) API over `[start, end)`, by name.
#[tracing::instrument(skip_all)]
pub async fn period_stats(
    pool: &PgPool,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<PeriodStats>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT e.api_name,
                  count(m.success) AS checks,
                  count(*) FILTER (WHERE m.success) AS ok,
                  avg(m.response_time_ms) FILTER (WHERE m.success),
                  percentile_cont(0.95) WITHIN GROUP (ORDER BY m.response_time_ms)
                      FILTER (WHERE m.success),
                  EXISTS (SELECT 1 FROM incidents i WHERE i.api_name = e.api_name
                          AND i.kind = 'down' AND i.opened_at < $2
                          AND (i.resolved_at IS NULL OR i.resolved_at >= $2)),
                  EXISTS (SELECT 1 FROM incidents i WHERE i.api_name = e.api_name
                          AND i.kind = 'slow' AND i.opened_at < $2
                          AND (i.resolved_at IS NULL OR i.resolved_at >= $2))
           FROM api_endpoints e
           LEFT JOIN api_metrics m
                  ON m.api_name = e.api_name AND m."timestamp" >= $1 AND m."timestamp" < $2
           WHERE e.retired_at IS NULL
           GROUP BY e.api_name
           ORDER BY e.api_name"#,
    )
    .bind(start)
    .bind(end)
    .fetch_all(pool)
    .await
}

/// One API's usual response times: name, mean and p95 (ms).
pub type BaselineStats = (String, Option<f64>, Option<f64>);

/// Mean and p95 response time of the successful checks in `[from, until)`
/// of each API (or of `api` alone), leaving out the checks that belong to
/// an incident (from its first bad check to its recovery, or still open).
#[tracing::instrument(skip_all)]
pub async fn baselines(
    pool: &PgPool,
    api: Option<&str>,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<BaselineStats>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT api_name, avg(response_time_ms),
                  percentile_cont(0.95) WITHIN GROUP (ORDER BY response_time_ms)
           FROM api_metrics m
           WHERE "timestamp" >= $1 AND "timestamp" < $3 AND success
             AND response_time_ms IS NOT NULL AND ($2::text IS NULL OR api_name = $2)
             AND NOT EXISTS (
                 SELECT 1 FROM incidents i
                 WHERE i.api_name = m.api_name AND m."timestamp" >= i.started_at
                   AND m."timestamp" < COALESCE(i.recovered_at, i.resolved_at, 'infinity'))
           GROUP BY api_name"#,
    )
    .bind(from)
    .bind(api)
    .bind(until)
    .fetch_all(pool)
    .await
}

/// Retention on plain PostgreSQL: deletes up to `limit` checks older than
/// `before`. Returns how many. (On TimescaleDB a retention policy drops
/// whole chunks instead: see [`super::apply_retention`].)
pub async fn delete_batch_before(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    super::delete_batch(
        pool,
        r#"DELETE FROM api_metrics WHERE ctid = ANY(ARRAY(
               SELECT ctid FROM api_metrics WHERE "timestamp" < $1 LIMIT $2))"#,
        before,
        limit,
    )
    .await
}
