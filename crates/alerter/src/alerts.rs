//! Instant alerts: anomalies of at least `ALERT_MIN_SEVERITY` alert at
//! once unless their API is in its cooldown (then they are counted and
//! listed later), and APIs that keep failing get a down alert and, when
//! they answer again, a recovery message.
//!
//! All state lives in `alert_state`, one row per API, locked for update
//! while an API's anomalies are handled; with the outbox's unique event
//! keys, a restarted alerter or a second replica never sends an alert twice.

use std::collections::BTreeMap;
use std::time::Duration;

use apimon_core::model::Severity;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use crate::baseline::Baselines;
use crate::compose::{self, AlertFacts};
use crate::config::AlerterConfig;
use crate::outbox;

/// Commits of the detector may land slightly out of `detected_at` order;
/// each scan looks this far behind its cursor (rows already handled are
/// skipped by the per-API watermark).
const OVERLAP: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, sqlx::FromRow)]
struct Anomaly {
    timestamp: DateTime<Utc>,
    api_name: String,
    response_time_ms: Option<f64>,
    anomaly_score: f64,
    severity: String,
    details: Option<String>,
    features: Option<serde_json::Value>,
    detected_at: DateTime<Utc>,
}

#[derive(Debug, sqlx::FromRow)]
struct State {
    last_alert_at: Option<DateTime<Utc>>,
    suppressed: i32,
    watermark: Option<DateTime<Utc>>,
}

/// Reads the scan cursor (or starts `backfill` ago).
pub async fn load_cursor(pool: &PgPool, backfill: Duration) -> Result<DateTime<Utc>, sqlx::Error> {
    let stored: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT detected_at FROM alerter_progress WHERE id = 1")
            .fetch_optional(pool)
            .await?;
    Ok(stored.unwrap_or_else(|| {
        Utc::now() - chrono::Duration::from_std(backfill).unwrap_or(chrono::Duration::minutes(10))
    }))
}

async fn lock_state(tx: &mut Transaction<'_, Postgres>, api: &str) -> Result<State, sqlx::Error> {
    sqlx::query("INSERT INTO alert_state (api_name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(api)
        .execute(&mut **tx)
        .await?;
    sqlx::query_as(
        "SELECT last_alert_at, suppressed, watermark FROM alert_state WHERE api_name = $1 FOR UPDATE",
    )
    .bind(api)
    .fetch_one(&mut **tx)
    .await
}

/// Handles the anomalies detected since `cursor`; returns the new cursor
/// and the number of alerts queued.
#[tracing::instrument(skip_all)]
pub async fn process_anomalies(
    pool: &PgPool,
    cfg: &AlerterConfig,
    baselines: &mut Baselines,
    cursor: DateTime<Utc>,
) -> anyhow::Result<(DateTime<Utc>, usize)> {
    let from = cursor - chrono::Duration::from_std(OVERLAP).unwrap_or_default();
    let rows: Vec<Anomaly> = sqlx::query_as(
        r#"SELECT "timestamp", api_name, response_time_ms, anomaly_score, severity, details,
                  features, detected_at
           FROM anomalies WHERE detected_at > $1 ORDER BY api_name, "timestamp""#,
    )
    .bind(from)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok((cursor, 0));
    }
    let new_cursor = rows
        .iter()
        .map(|r| r.detected_at)
        .max()
        .unwrap_or(cursor)
        .max(cursor);
    let mut by_api: BTreeMap<&str, Vec<&Anomaly>> = BTreeMap::new();
    for r in &rows {
        by_api.entry(r.api_name.as_str()).or_default().push(r);
    }
    let cooldown =
        chrono::Duration::from_std(cfg.cooldown).unwrap_or(chrono::Duration::minutes(10));
    let mut alerts = 0;
    let alerting = |a: &Anomaly| a.severity.parse().unwrap_or(Severity::Medium) >= cfg.min_severity;
    for (api, anomalies) in by_api {
        // Anomalies below ALERT_MIN_SEVERITY change nothing (most anomalies
        // are medium): no transaction for an API that has only those.
        if !anomalies.iter().any(|a| alerting(a)) {
            continue;
        }
        let mut tx = pool.begin().await?;
        let mut st = lock_state(&mut tx, api).await?;
        for a in anomalies {
            if st.watermark.is_some_and(|w| a.timestamp <= w) {
                continue;
            }
            st.watermark = Some(a.timestamp);
            let severity: Severity = a.severity.parse().unwrap_or(Severity::Medium);
            if severity < cfg.min_severity {
                continue;
            }
            let in_cooldown = st
                .last_alert_at
                .is_some_and(|last| a.timestamp.signed_duration_since(last) < cooldown);
            if in_cooldown {
                st.suppressed += 1;
                continue;
            }
            let since: Option<DateTime<Utc>> = sqlx::query_scalar(
                r#"SELECT min("timestamp") FROM anomalies
                   WHERE api_name = $1 AND "timestamp" > $2 AND "timestamp" <= $3
                     AND severity = ANY($4)"#,
            )
            .bind(api)
            .bind(a.timestamp - cooldown)
            .bind(a.timestamp)
            .bind(severities_at_least(cfg.min_severity))
            .fetch_one(&mut *tx)
            .await?;
            let facts = AlertFacts {
                api_name: api.to_string(),
                timestamp: a.timestamp,
                since: since.unwrap_or(a.timestamp),
                severity: a.severity.clone(),
                score: a.anomaly_score,
                response_time_ms: a.response_time_ms,
                details: a.details.clone().unwrap_or_default(),
                rolling_mean_ms: a
                    .features
                    .as_ref()
                    .and_then(|f| f.get("rolling_mean"))
                    .and_then(|v| v.as_f64()),
                baseline: baselines
                    .get(pool, api, a.timestamp - chrono::Duration::minutes(15))
                    .await?,
                suppressed: st.suppressed,
            };
            let msg = compose::alert(&facts, &cfg.dashboard_url);
            if outbox::queue(&mut tx, &msg, &cfg.channels).await? > 0 {
                alerts += 1;
                tracing::info!(api, severity = %a.severity, score = a.anomaly_score, "alert queued");
            }
            st.last_alert_at = Some(a.timestamp);
            st.suppressed = 0;
        }
        sqlx::query(
            "UPDATE alert_state SET last_alert_at = $2, suppressed = $3, watermark = $4,
                    updated_at = now() WHERE api_name = $1",
        )
        .bind(api)
        .bind(st.last_alert_at)
        .bind(st.suppressed)
        .bind(st.watermark)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    sqlx::query(
        "INSERT INTO alerter_progress (id, detected_at) VALUES (1, $1)
         ON CONFLICT (id) DO UPDATE SET detected_at = GREATEST(alerter_progress.detected_at, EXCLUDED.detected_at)",
    )
    .bind(new_cursor)
    .execute(pool)
    .await?;
    Ok((new_cursor, alerts))
}

fn severities_at_least(min: Severity) -> Vec<&'static str> {
    [Severity::Medium, Severity::High, Severity::Critical]
        .into_iter()
        .filter(|s| *s >= min)
        .map(Severity::as_str)
        .collect()
}

#[derive(Debug, sqlx::FromRow)]
struct Recent {
    api_name: String,
    down_since: Option<DateTime<Utc>>,
    n: i64,
    fails: i64,
    latest_ts: Option<DateTime<Utc>>,
    latest_ok: Option<bool>,
    last_error: Option<String>,
}

/// Sends down alerts for APIs whose last `ALERT_DOWN_AFTER` checks all
/// failed, and recovery messages for down APIs that answer again. Returns
/// the number of messages queued.
#[tracing::instrument(skip_all)]
pub async fn check_down(pool: &PgPool, cfg: &AlerterConfig) -> anyhow::Result<usize> {
    let recent: Vec<Recent> = sqlx::query_as(
        r#"
        SELECT e.api_name, s.down_since, l.n, l.fails, l.latest_ts, l.latest_ok, l.last_error
        FROM api_endpoints e
        LEFT JOIN alert_state s USING (api_name)
        CROSS JOIN LATERAL (
            SELECT count(*) AS n,
                   count(*) FILTER (WHERE NOT t.success) AS fails,
                   max(t."timestamp") AS latest_ts,
                   (array_agg(t.success ORDER BY t."timestamp" DESC))[1] AS latest_ok,
                   (array_agg(concat_ws(': ', t.error_kind, t.error_message)
                              ORDER BY t."timestamp" DESC))[1] AS last_error
            FROM (SELECT "timestamp", success, error_kind, error_message FROM api_metrics m
                  WHERE m.api_name = e.api_name ORDER BY "timestamp" DESC LIMIT $1) AS t
        ) AS l
        "#,
    )
    .bind(i64::from(cfg.down_after))
    .fetch_all(pool)
    .await?;
    let mut queued = 0;
    for r in recent {
        let all_failed = r.n >= i64::from(cfg.down_after) && r.fails == r.n;
        if r.down_since.is_none() && all_failed {
            let mut tx = pool.begin().await?;
            lock_state(&mut tx, &r.api_name).await?;
            let current: Option<DateTime<Utc>> =
                sqlx::query_scalar("SELECT down_since FROM alert_state WHERE api_name = $1")
                    .bind(&r.api_name)
                    .fetch_one(&mut *tx)
                    .await?;
            if current.is_some() {
                tx.rollback().await?;
                continue;
            }
            let (since, failures): (Option<DateTime<Utc>>, i64) = sqlx::query_as(
                r#"SELECT min("timestamp"), count(*) FROM api_metrics
                   WHERE api_name = $1 AND "timestamp" > COALESCE(
                       (SELECT max("timestamp") FROM api_metrics WHERE api_name = $1 AND success),
                       '-infinity')"#,
            )
            .bind(&r.api_name)
            .fetch_one(&mut *tx)
            .await?;
            let since = since.or(r.latest_ts).unwrap_or_else(Utc::now);
            let msg = compose::down(
                &r.api_name,
                since,
                failures,
                r.last_error.as_deref(),
                &cfg.dashboard_url,
            );
            queued += outbox::queue(&mut tx, &msg, &cfg.channels).await?.min(1);
            sqlx::query(
                "UPDATE alert_state SET down_since = $2, updated_at = now() WHERE api_name = $1",
            )
            .bind(&r.api_name)
            .bind(since)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::warn!(api = %r.api_name, since = %since, failures, "API down");
        } else if let (Some(since), Some(true)) = (r.down_since, r.latest_ok) {
            let mut tx = pool.begin().await?;
            lock_state(&mut tx, &r.api_name).await?;
            let current: Option<DateTime<Utc>> =
                sqlx::query_scalar("SELECT down_since FROM alert_state WHERE api_name = $1")
                    .bind(&r.api_name)
                    .fetch_one(&mut *tx)
                    .await?;
            if current != Some(since) {
                tx.rollback().await?;
                continue;
            }
            let at = r.latest_ts.unwrap_or_else(Utc::now);
            let msg = compose::recovered(&r.api_name, since, at, &cfg.dashboard_url);
            queued += outbox::queue(&mut tx, &msg, &cfg.channels).await?.min(1);
            sqlx::query(
                "UPDATE alert_state SET down_since = NULL, updated_at = now() WHERE api_name = $1",
            )
            .bind(&r.api_name)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(api = %r.api_name, "API recovered");
        }
    }
    Ok(queued)
}
