//! The `notifications` table: the alerter's outbox. A notification is
//! written first (one row per channel), then sent; failures are retried
//! with backoff; the state of each row is visible to anyone.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

/// A notification to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub kind: String,
    pub api_name: Option<String>,
    pub channel: String,
    pub dedup_key: String,
    pub subject: String,
    pub body_text: String,
    pub body_html: Option<String>,
    pub payload: serde_json::Value,
    /// `pending`, or `skipped` when no channel is configured.
    pub state: String,
}

/// A queued notification.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Notification {
    pub id: i64,
    pub kind: String,
    pub api_name: Option<String>,
    pub channel: String,
    pub dedup_key: String,
    pub subject: String,
    pub body_text: String,
    pub body_html: Option<String>,
    pub payload: serde_json::Value,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// Queues `n` unless the same event is queued on that channel already.
/// Returns whether it was new.
pub async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    n: &NewNotification,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        r#"INSERT INTO notifications (kind, api_name, channel, dedup_key, subject, body_text,
                                      body_html, payload, state)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (channel, dedup_key) DO NOTHING"#,
    )
    .bind(&n.kind)
    .bind(&n.api_name)
    .bind(&n.channel)
    .bind(&n.dedup_key)
    .bind(&n.subject)
    .bind(&n.body_text)
    .bind(&n.body_html)
    .bind(&n.payload)
    .bind(&n.state)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Locks the oldest due pending notification (skipping those another
/// sender holds) inside `tx`.
pub async fn claim_due(
    tx: &mut Transaction<'_, Postgres>,
) -> Result<Option<Notification>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT id, kind, api_name, channel, dedup_key, subject, body_text, body_html, payload,
                  state, attempts, last_error, created_at, sent_at
           FROM notifications
           WHERE state = 'pending' AND next_attempt_at <= now()
           ORDER BY id
           FOR UPDATE SKIP LOCKED
           LIMIT 1"#,
    )
    .fetch_optional(&mut **tx)
    .await
}

/// Marks a claimed notification sent.
pub async fn mark_sent(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET state = 'sent', attempts = attempts + 1, sent_at = now(),
                last_error = NULL WHERE id = $1",
    )
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records a failed attempt: retried after `retry_in`, or `failed` when
/// this was the last attempt.
pub async fn mark_failed(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    error: &str,
    retry_in: Option<std::time::Duration>,
) -> Result<(), sqlx::Error> {
    let (state, secs) = match retry_in {
        Some(d) => ("pending", d.as_secs_f64()),
        None => ("failed", 0.0),
    };
    sqlx::query(
        "UPDATE notifications SET state = $2, attempts = attempts + 1, last_error = $3,
                next_attempt_at = now() + make_interval(secs => $4) WHERE id = $1",
    )
    .bind(id)
    .bind(state)
    .bind(error)
    .bind(secs)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The incident openings (`incident_open`) queued on `channel` that named
/// any of `incident_ids`, oldest first: their dedup keys and creation
/// times, from which their emails' `Message-ID`s are derived.
pub async fn openings_of(
    tx: &mut Transaction<'_, Postgres>,
    channel: &str,
    incident_ids: &[i64],
) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    if incident_ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        r#"SELECT n.dedup_key, n.created_at
           FROM notifications n
           WHERE n.channel = $1 AND n.kind = 'incident_open'
             AND EXISTS (
                 SELECT 1
                 FROM jsonb_array_elements(CASE jsonb_typeof(n.payload -> 'incidents')
                                           WHEN 'array' THEN n.payload -> 'incidents'
                                           ELSE '[]'::jsonb END) e
                 WHERE e ->> 'id' = ANY($2))
           ORDER BY n.id"#,
    )
    .bind(channel)
    .bind(incident_ids.iter().map(i64::to_string).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await
}

/// Every notification, oldest first (tests, previews).
pub async fn all(pool: &PgPool) -> Result<Vec<Notification>, sqlx::Error> {
    sqlx::query_as(
        r#"SELECT id, kind, api_name, channel, dedup_key, subject, body_text, body_html, payload,
                  state, attempts, last_error, created_at, sent_at
           FROM notifications ORDER BY id"#,
    )
    .fetch_all(pool)
    .await
}

/// Retention: deletes up to `limit` notifications created before `before`
/// that are done with (sent, failed or skipped; never one still pending).
/// The opening notification of an incident still current is kept: its
/// resolution's email threads under it. Returns how many.
pub async fn delete_done_batch(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    super::delete_batch(
        pool,
        r#"DELETE FROM notifications WHERE id = ANY(ARRAY(
               SELECT n.id FROM notifications n
               WHERE n.created_at < $1 AND n.state <> 'pending'
                 AND NOT (n.kind = 'incident_open' AND EXISTS (
                     SELECT 1
                     FROM jsonb_array_elements(CASE jsonb_typeof(n.payload -> 'incidents')
                                               WHEN 'array' THEN n.payload -> 'incidents'
                                               ELSE '[]'::jsonb END) e
                     JOIN incidents i ON i.id::text = e ->> 'id'
                     WHERE i.state <> 'resolved'))
               ORDER BY n.id LIMIT $2))"#,
        before,
        limit,
    )
    .await
}
