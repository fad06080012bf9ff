//! The `incidents` and `incident_events` tables: the detector records what
//! its incident rules decide (in the transaction that moves its
//! watermark), and queues an event for each opening and final resolution;
//! the alerter claims the events and notifies.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use crate::incidents::{Change, Incident, Transition};

/// Records `changes` of `api`'s incidents, in order, inside `tx`. Openings
/// and final resolutions also queue an event for the alerter.
pub async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    api: &str,
    changes: &[Transition],
) -> Result<(), sqlx::Error> {
    for t in changes {
        let i = &t.incident;
        let evidence = serde_json::to_value(&i.evidence).unwrap_or_default();
        match t.change {
            Change::Opened => {
                // A row left current by an earlier run is adopted rather
                // than duplicated (at most one current per API and kind).
                let (id, inserted): (i64, bool) = sqlx::query_as(
                    r#"INSERT INTO incidents (api_name, kind, state, started_at, opened_at,
                                              peak_severity, reason, evidence)
                       VALUES ($1, $2, 'open', $3, $4, $5, $6, $7)
                       ON CONFLICT (api_name, kind) WHERE state <> 'resolved'
                       DO UPDATE SET state = 'open', recovered_at = NULL, updated_at = now()
                       RETURNING id, (xmax = 0)"#,
                )
                .bind(api)
                .bind(i.kind.as_str())
                .bind(i.started_at)
                .bind(i.opened_at)
                .bind(i.severity.as_str())
                .bind(&i.reason)
                .bind(&evidence)
                .fetch_one(&mut **tx)
                .await?;
                if inserted {
                    queue(tx, id, "open", i.opened_at, i.started_at).await?;
                }
            }
            Change::Recovering | Change::Reopened => {
                sqlx::query(
                    r#"UPDATE incidents SET state = $3, recovered_at = $4, flaps = $5,
                              peak_severity = $6, evidence = $7, updated_at = now()
                       WHERE api_name = $1 AND kind = $2 AND state <> 'resolved'"#,
                )
                .bind(api)
                .bind(i.kind.as_str())
                .bind(i.state.as_str())
                .bind(i.recovered_at)
                .bind(i32::try_from(i.flaps).unwrap_or(i32::MAX))
                .bind(i.severity.as_str())
                .bind(&evidence)
                .execute(&mut **tx)
                .await?;
            }
            Change::Escalated => {
                // Replaced by the incident opened next: no notification.
                sqlx::query(
                    r#"UPDATE incidents SET state = 'resolved', resolution = 'escalated',
                              resolved_at = $3, evidence = $4, updated_at = now()
                       WHERE api_name = $1 AND kind = $2 AND state <> 'resolved'"#,
                )
                .bind(api)
                .bind(i.kind.as_str())
                .bind(i.resolved_at.unwrap_or(i.opened_at))
                .bind(&evidence)
                .execute(&mut **tx)
                .await?;
            }
            Change::Resolved => {
                let id: Option<i64> = sqlx::query_scalar(
                    r#"UPDATE incidents SET state = 'resolved', recovered_at = $3,
                              resolved_at = $4, flaps = $5, peak_severity = $6, evidence = $7,
                              updated_at = now()
                       WHERE api_name = $1 AND kind = $2 AND state <> 'resolved'
                       RETURNING id"#,
                )
                .bind(api)
                .bind(i.kind.as_str())
                .bind(i.recovered_at)
                .bind(i.resolved_at)
                .bind(i32::try_from(i.flaps).unwrap_or(i32::MAX))
                .bind(i.severity.as_str())
                .bind(&evidence)
                .fetch_optional(&mut **tx)
                .await?;
                if let Some(id) = id {
                    let at = i.resolved_at.unwrap_or(i.opened_at);
                    queue(tx, id, "resolve", at, i.recovered_at.unwrap_or(at)).await?;
                }
            }
        }
    }
    Ok(())
}

async fn queue(
    tx: &mut Transaction<'_, Postgres>,
    incident_id: i64,
    event: &str,
    at: DateTime<Utc>,
    first_sign_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO incident_events (incident_id, event, at, first_sign_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(incident_id)
    .bind(event)
    .bind(at)
    .bind(first_sign_at)
    .execute(&mut **tx)
    .await?;
    // Delivered at commit, once per transaction and channel.
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(super::INCIDENTS_CHANNEL)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Saves the evidence and peak severity of `api`'s current incidents.
pub async fn refresh(
    tx: &mut Transaction<'_, Postgres>,
    api: &str,
    current: &[&Incident],
) -> Result<(), sqlx::Error> {
    for i in current {
        sqlx::query(
            r#"UPDATE incidents SET peak_severity = $3, evidence = $4, updated_at = now()
               WHERE api_name = $1 AND kind = $2 AND state <> 'resolved'"#,
        )
        .bind(api)
        .bind(i.kind.as_str())
        .bind(i.severity.as_str())
        .bind(serde_json::to_value(&i.evidence).unwrap_or_default())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// An incident as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct IncidentRow {
    pub id: i64,
    pub api_name: String,
    pub kind: String,
    pub state: String,
    pub started_at: DateTime<Utc>,
    pub opened_at: DateTime<Utc>,
    pub recovered_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub peak_severity: String,
    pub reason: String,
    pub evidence: serde_json::Value,
    pub flaps: i32,
    pub silenced: bool,
    pub silence_reason: Option<String>,
    pub notified_at: Option<DateTime<Utc>>,
    pub last_notified_at: Option<DateTime<Utc>>,
    pub reminders: i32,
    pub resolve_notified_at: Option<DateTime<Utc>>,
    /// How it ended when it did not recover: `retired` (its endpoint was
    /// removed from the configuration while it was open).
    pub resolution: Option<String>,
}

impl IncidentRow {
    /// The evidence, read back (missing fields are empty).
    pub fn evidence(&self) -> crate::incidents::Evidence {
        serde_json::from_value(self.evidence.clone()).unwrap_or_default()
    }
}

/// Columns of [`IncidentRow`], for queries that select them.
pub const COLUMNS: &str = "i.id, i.api_name, i.kind, i.state, i.started_at, i.opened_at, \
    i.recovered_at, i.resolved_at, i.peak_severity, i.reason, i.evidence, i.flaps, i.silenced, \
    i.silence_reason, i.notified_at, i.last_notified_at, i.reminders, i.resolve_notified_at, \
    i.resolution";

/// Every incident, oldest first (tests, tools).
pub async fn all(pool: &PgPool) -> Result<Vec<IncidentRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM incidents i ORDER BY i.id"))
        .fetch_all(pool)
        .await
}

/// Incidents open at some time in `[from, to)`: open at its end, or opened
/// or resolved in it; by opening.
pub async fn for_period(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<IncidentRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM incidents i
         WHERE i.opened_at < $2 AND (i.resolved_at IS NULL OR i.resolved_at >= $1)
         ORDER BY i.opened_at, i.id"
    ))
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

/// Closes the incidents still current (open or resolving) of `apis` whose
/// endpoint is retired, as resolved with resolution `retired` at the
/// retirement, and queues their resolution for the alerter, inside `tx`:
/// a page is always followed by its end, and a removed endpoint is not
/// left down. Returns the APIs whose incidents were closed.
pub async fn close_retired(
    tx: &mut Transaction<'_, Postgres>,
    apis: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    if apis.is_empty() {
        return Ok(Vec::new());
    }
    let mut closed: Vec<String> = sqlx::query_scalar(
        r#"WITH closed AS (
               UPDATE incidents i SET state = 'resolved', resolution = 'retired',
                      resolved_at = GREATEST(e.retired_at, i.opened_at), updated_at = now()
               FROM api_endpoints e
               WHERE e.api_name = i.api_name AND e.retired_at IS NOT NULL
                 AND i.api_name = ANY($1) AND i.state <> 'resolved'
               RETURNING i.id, i.api_name, i.resolved_at, i.recovered_at),
           queued AS (
               INSERT INTO incident_events (incident_id, event, at, first_sign_at)
               SELECT id, 'resolve', resolved_at, COALESCE(recovered_at, resolved_at)
               FROM closed)
           SELECT api_name FROM closed"#,
    )
    .bind(apis)
    .fetch_all(&mut **tx)
    .await?;
    if !closed.is_empty() {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(super::INCIDENTS_CHANNEL)
            .execute(&mut **tx)
            .await?;
    }
    closed.sort();
    closed.dedup();
    Ok(closed)
}

/// Retention: deletes up to `limit` incidents resolved before `before`
/// whose events have all been handled by the alerter (with their events).
/// Never an incident that is open or resolving, nor one with an event
/// still to deliver. Returns how many incidents.
pub async fn delete_resolved_batch(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    super::delete_batch(
        pool,
        r#"DELETE FROM incidents WHERE id = ANY(ARRAY(
               SELECT i.id FROM incidents i
               WHERE i.state = 'resolved' AND i.resolved_at < $1
                 AND NOT EXISTS (SELECT 1 FROM incident_events e
                                 WHERE e.incident_id = i.id AND e.handled_at IS NULL)
               ORDER BY i.id LIMIT $2))"#,
        before,
        limit,
    )
    .await
}
