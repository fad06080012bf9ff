//! From incidents to notifications: one notification when incidents open,
//! a reminder every `ALERT_REPEAT_INTERVAL` while they stay open, one when
//! they resolve. Incidents that open within `ALERT_GROUP_WAIT` of each
//! other go out as one notification; their recoveries likewise.
//!
//! The detector queues an `incident_events` row for every opening and final
//! resolution, in the transaction that records the incident. Here they are
//! claimed (`FOR UPDATE SKIP LOCKED`, a page at a time), and marked handled
//! in the transaction that queues their notification in the outbox: an
//! event committed late is still read, and none is handled twice. Delivery
//! from the outbox is at least once: a crash between sending and recording
//! the send sends that notification again.
//!
//! Grouping waits from the *first sign* of trouble (the first bad check),
//! not from the opening: the checks that confirm an incident count towards
//! the wait, so grouping adds little or nothing to the time to page.

use std::collections::HashSet;
use std::time::Duration;

use apimon_core::db::incidents::{IncidentRow, COLUMNS};
use apimon_core::incidents::{Evidence, Kind};
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use crate::compose;
use crate::config::AlerterConfig;
use crate::outbox;

/// Events claimed per page.
const PAGE: i64 = 1000;
/// Only one alerter dispatches at a time (a transaction-level advisory
/// lock): two replicas never split a group between them.
const LOCK_KEY: i64 = 0x6170_696d_6f6e_0010;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Open,
    Reminder,
    Resolve,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Open => "open",
            Event::Reminder => "reminder",
            Event::Resolve => "resolve",
        }
    }
}

/// One incident in a notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub incident_id: i64,
    pub api_name: String,
    pub kind: Kind,
    pub severity: String,
    pub started_at: DateTime<Utc>,
    pub opened_at: DateTime<Utc>,
    pub recovered_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub reason: String,
    pub evidence: Evidence,
    pub flaps: i32,
    /// It ended because its endpoint was removed from the configuration
    /// (retired), not because the API recovered.
    pub retired: bool,
}

impl Item {
    pub fn from_row(r: &IncidentRow) -> Option<Item> {
        Some(Item {
            incident_id: r.id,
            api_name: r.api_name.clone(),
            kind: r.kind.parse().ok()?,
            severity: r.peak_severity.clone(),
            started_at: r.started_at,
            opened_at: r.opened_at,
            recovered_at: r.recovered_at,
            resolved_at: r.resolved_at,
            reason: r.reason.clone(),
            evidence: r.evidence(),
            flaps: r.flaps,
            retired: r.resolution.as_deref() == Some("retired"),
        })
    }
}

/// A notification: one event about one or more incidents.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub event: Event,
    pub items: Vec<Item>,
    /// Its identity in the outbox.
    pub key: String,
    /// When it is sent (wall time; data time in replay).
    pub at: DateTime<Utc>,
}

/// When a group is due: `wait` after the earliest of its `signs`.
pub fn group_due(
    signs: impl IntoIterator<Item = DateTime<Utc>>,
    wait: Duration,
) -> Option<DateTime<Utc>> {
    let first = signs.into_iter().min()?;
    Some(first + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::zero()))
}

/// Why an incident's notification is held back, if it is (silences and
/// maintenance windows).
pub type SilenceCheck<'a> = dyn Fn(&str, DateTime<Utc>) -> Option<String> + Send + Sync + 'a;

#[derive(Debug, sqlx::FromRow)]
struct Pending {
    event_id: i64,
    event: String,
    at: DateTime<Utc>,
    first_sign_at: DateTime<Utc>,
    #[sqlx(flatten)]
    incident: IncidentRow,
}

/// One dispatch pass at `now`: due groups of openings and resolutions,
/// reminders, and openings whose silence has ended. Returns the number of
/// notifications queued.
#[tracing::instrument(skip_all)]
pub async fn pass(
    pool: &PgPool,
    cfg: &AlerterConfig,
    silenced: &SilenceCheck<'_>,
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        tx.rollback().await?;
        return Ok(0);
    }
    let mut queued = 0;
    let mut after = 0i64;
    loop {
        let page: Vec<Pending> = sqlx::query_as(&format!(
            "SELECT e.id AS event_id, e.event, e.at, e.first_sign_at, {COLUMNS}
             FROM incident_events e JOIN incidents i ON i.id = e.incident_id
             WHERE e.handled_at IS NULL AND e.id > $1
             ORDER BY e.id LIMIT $2
             FOR UPDATE OF e SKIP LOCKED"
        ))
        .bind(after)
        .bind(PAGE)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = page.last() else { break };
        after = last.event_id;
        let full = page.len() as i64 == PAGE;
        queued += handle_events(&mut tx, cfg, silenced, now, &page).await?;
        if !full {
            break;
        }
    }
    queued += reminders(&mut tx, cfg, silenced, now).await?;
    tx.commit().await?;
    Ok(queued)
}

async fn handle_events(
    tx: &mut Transaction<'_, Postgres>,
    cfg: &AlerterConfig,
    silenced: &SilenceCheck<'_>,
    now: DateTime<Utc>,
    page: &[Pending],
) -> Result<usize, sqlx::Error> {
    let opens: Vec<&Pending> = page.iter().filter(|p| p.event == "open").collect();
    let resolves: Vec<&Pending> = page.iter().filter(|p| p.event == "resolve").collect();
    let mut queued = 0;
    let mut notified_now: HashSet<i64> = HashSet::new();
    if group_due(opens.iter().map(|p| p.first_sign_at), cfg.group_wait).is_some_and(|d| d <= now) {
        let mut items = Vec::new();
        for p in &opens {
            let i = &p.incident;
            if let Some(why) = silenced(&i.api_name, now) {
                sqlx::query(
                    "UPDATE incidents SET silenced = true, silence_reason = $2 WHERE id = $1",
                )
                .bind(i.id)
                .bind(&why)
                .execute(&mut **tx)
                .await?;
                handled(tx, p.event_id, "silenced").await?;
                tracing::info!(api = %i.api_name, kind = %i.kind, reason = %why, "incident opened while silenced: not notified");
                continue;
            }
            if let Some(item) = Item::from_row(i) {
                items.push(item);
            }
            opening_notified(tx, i.id, now).await?;
            handled(tx, p.event_id, "notified").await?;
            notified_now.insert(i.id);
        }
        if !items.is_empty() {
            let key = format!(
                "open:{}",
                opens.iter().map(|p| p.event_id).min().unwrap_or(0)
            );
            queued += send(tx, cfg, Event::Open, items, key, now).await?;
        }
    }
    // An opening still waiting for its group holds its resolution back.
    let waiting: HashSet<i64> = opens
        .iter()
        .map(|p| p.incident.id)
        .filter(|id| !notified_now.contains(id))
        .collect();
    let any_open_handled = !notified_now.is_empty()
        || group_due(opens.iter().map(|p| p.first_sign_at), cfg.group_wait)
            .is_some_and(|d| d <= now);
    let resolves: Vec<&Pending> = resolves
        .into_iter()
        .filter(|p| any_open_handled || !waiting.contains(&p.incident.id))
        .collect();
    if group_due(resolves.iter().map(|p| p.at), cfg.group_wait).is_some_and(|d| d <= now) {
        let mut items = Vec::new();
        for p in &resolves {
            let i = &p.incident;
            // Never a page without its recovery, even if a silence began
            // since; and no recovery for what was never paged.
            if i.notified_at.is_none() && !notified_now.contains(&i.id) {
                handled(tx, p.event_id, "silenced").await?;
                continue;
            }
            if let Some(item) = Item::from_row(i) {
                items.push(item);
            }
            sqlx::query("UPDATE incidents SET resolve_notified_at = $2 WHERE id = $1")
                .bind(i.id)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            handled(tx, p.event_id, "notified").await?;
        }
        if !items.is_empty() {
            let key = format!(
                "resolve:{}",
                resolves.iter().map(|p| p.event_id).min().unwrap_or(0)
            );
            queued += send(tx, cfg, Event::Resolve, items, key, now).await?;
        }
    }
    Ok(queued)
}

/// Records that an incident's opening was notified at `now`.
async fn opening_notified(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE incidents SET notified_at = $2, last_notified_at = $2, silenced = false
         WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn handled(
    tx: &mut Transaction<'_, Postgres>,
    event_id: i64,
    outcome: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE incident_events SET handled_at = now(), outcome = $2 WHERE id = $1")
        .bind(event_id)
        .bind(outcome)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Reminders for incidents still open, and the late opening of incidents
/// whose silence has ended while they stayed open.
async fn reminders(
    tx: &mut Transaction<'_, Postgres>,
    cfg: &AlerterConfig,
    silenced: &SilenceCheck<'_>,
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let mut queued = 0;
    // Silenced at opening, still open, open event handled.
    let late: Vec<IncidentRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM incidents i
         WHERE i.state <> 'resolved' AND i.silenced AND i.notified_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM incident_events e
                           WHERE e.incident_id = i.id AND e.handled_at IS NULL)
         ORDER BY i.id LIMIT $1 FOR UPDATE OF i SKIP LOCKED"
    ))
    .bind(PAGE)
    .fetch_all(&mut **tx)
    .await?;
    let late: Vec<IncidentRow> = late
        .into_iter()
        .filter(|i| silenced(&i.api_name, now).is_none())
        .collect();
    if !late.is_empty() {
        for i in &late {
            opening_notified(tx, i.id, now).await?;
        }
        let key = format!("open-after-silence:{}:{}", late[0].id, now.timestamp());
        let items = late.iter().filter_map(Item::from_row).collect();
        queued += send(tx, cfg, Event::Open, items, key, now).await?;
    }
    if cfg.repeat_interval.is_zero() {
        return Ok(queued);
    }
    let due_before = now - chrono::Duration::from_std(cfg.repeat_interval).unwrap_or_default();
    let due: Vec<IncidentRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM incidents i
         WHERE i.state <> 'resolved' AND i.notified_at IS NOT NULL
           AND i.last_notified_at <= CASE WHEN i.kind = 'certificate' THEN LEAST($1, $3) ELSE $1 END
         ORDER BY i.id LIMIT $2 FOR UPDATE OF i SKIP LOCKED"
    ))
    .bind(due_before)
    .bind(PAGE)
    // A certificate that expires in days is worth a daily reminder at
    // most, whatever ALERT_REPEAT_INTERVAL says.
    .bind(now - chrono::Duration::days(1))
    .fetch_all(&mut **tx)
    .await?;
    let due: Vec<IncidentRow> = due
        .into_iter()
        .filter(|i| silenced(&i.api_name, now).is_none())
        .collect();
    if due.is_empty() {
        return Ok(queued);
    }
    for i in &due {
        sqlx::query(
            "UPDATE incidents SET last_notified_at = $2, reminders = reminders + 1 WHERE id = $1",
        )
        .bind(i.id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    let key = format!("reminder:{}:{}", due[0].id, now.timestamp());
    let items = due.iter().filter_map(Item::from_row).collect();
    queued += send(tx, cfg, Event::Reminder, items, key, now).await?;
    Ok(queued)
}

async fn send(
    tx: &mut Transaction<'_, Postgres>,
    cfg: &AlerterConfig,
    event: Event,
    items: Vec<Item>,
    key: String,
    now: DateTime<Utc>,
) -> Result<usize, sqlx::Error> {
    let n = items.len();
    let notice = Notice {
        event,
        items,
        key,
        at: now,
    };
    let msg = compose::notice(&notice, &cfg.dashboard_url);
    let queued = outbox::queue(tx, &msg, &cfg.channels).await?.min(1);
    tracing::info!(event = event.as_str(), incidents = n, subject = %msg.subject, "notification queued");
    metrics::counter!("apimon_incident_notifications_total", "event" => event.as_str())
        .increment(1);
    Ok(queued)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_group_is_due_its_wait_after_the_first_sign() {
        let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        let signs = [
            t0 + chrono::Duration::seconds(7),
            t0,
            t0 + chrono::Duration::seconds(14),
        ];
        assert_eq!(
            group_due(signs, Duration::from_secs(30)),
            Some(t0 + chrono::Duration::seconds(30))
        );
        assert_eq!(group_due([], Duration::from_secs(30)), None);
    }
}
