//! The `silences` table: silences set by people with `alerter silence add`.
//! While one is active, incidents of the APIs its pattern matches are
//! recorded but not notified.
//!
//! A silence is active from `starts_at` (included) to `ends_at` (excluded)
//! unless someone expired it early; expiring sets `expired_at` and pulls
//! `ends_at` back to the moment it happened, so the row tells how long the
//! silence really lasted.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::glob;

/// A silence, as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Silence {
    pub id: i64,
    /// A glob on API names (see [`crate::glob`]).
    pub api_pattern: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Who set it: a name, for people asking why they were not paged.
    pub created_by: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
    /// When it was expired by hand; `None` while it was not.
    pub expired_at: Option<DateTime<Utc>>,
}

/// Where a silence stands at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilenceState {
    /// It starts later.
    Scheduled,
    /// It silences now.
    Active,
    /// It was expired by hand.
    Expired,
    /// It ran its course.
    Ended,
}

impl SilenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceState::Scheduled => "scheduled",
            SilenceState::Active => "active",
            SilenceState::Expired => "expired",
            SilenceState::Ended => "ended",
        }
    }
}

impl Silence {
    /// Whether it silences `api` at `at`: the pattern matches, `at` is in
    /// `[starts_at, ends_at)`, and it was not expired (the same rule as
    /// [`active_at`]).
    pub fn covers(&self, api: &str, at: DateTime<Utc>) -> bool {
        self.state_at(at) == SilenceState::Active && glob::matches(&self.api_pattern, api)
    }

    /// Its state at `at`.
    pub fn state_at(&self, at: DateTime<Utc>) -> SilenceState {
        if self.expired_at.is_some() {
            SilenceState::Expired
        } else if at < self.starts_at {
            SilenceState::Scheduled
        } else if at < self.ends_at {
            SilenceState::Active
        } else {
            SilenceState::Ended
        }
    }
}

const COLUMNS: &str =
    "id, api_pattern, starts_at, ends_at, created_by, reason, created_at, expired_at";

/// Stores a new silence. `ends_at` must be after `starts_at` (the table
/// refuses it otherwise).
#[tracing::instrument(skip_all, fields(pattern = %pattern))]
pub async fn add(
    pool: &PgPool,
    pattern: &str,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    created_by: &str,
    reason: &str,
) -> Result<Silence, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO silences (api_pattern, starts_at, ends_at, created_by, reason)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING {COLUMNS}"
    ))
    .bind(pattern)
    .bind(starts_at)
    .bind(ends_at)
    .bind(created_by)
    .bind(reason)
    .fetch_one(pool)
    .await
}

/// The silences that are active or scheduled, by start; with
/// `include_ended`, every silence (also expired and ended ones), by id.
#[tracing::instrument(skip(pool))]
pub async fn list(pool: &PgPool, include_ended: bool) -> Result<Vec<Silence>, sqlx::Error> {
    let sql = if include_ended {
        format!("SELECT {COLUMNS} FROM silences ORDER BY id")
    } else {
        format!(
            "SELECT {COLUMNS} FROM silences
             WHERE expired_at IS NULL AND ends_at > now()
             ORDER BY starts_at, id"
        )
    };
    sqlx::query_as(&sql).fetch_all(pool).await
}

/// Expires silence `id` now: sets `expired_at` and, when it has started,
/// pulls `ends_at` back to now (a scheduled one keeps its times and will
/// never start). Returns `false` when there is no such silence that is
/// active or scheduled.
#[tracing::instrument(skip(pool))]
pub async fn expire(pool: &PgPool, id: i64) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE silences
         SET expired_at = now(),
             ends_at = CASE WHEN starts_at < now() THEN least(ends_at, now()) ELSE ends_at END
         WHERE id = $1 AND expired_at IS NULL AND ends_at > now()",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// The silences active at `at`: `starts_at <= at < ends_at`, not expired.
#[tracing::instrument(skip(pool))]
pub async fn active_at(pool: &PgPool, at: DateTime<Utc>) -> Result<Vec<Silence>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM silences
         WHERE starts_at <= $1 AND ends_at > $1 AND expired_at IS NULL
         ORDER BY id"
    ))
    .bind(at)
    .fetch_all(pool)
    .await
}

/// Retention: deletes up to `limit` silences that ended (or were expired)
/// before `before`. Returns how many.
#[tracing::instrument(skip(pool))]
pub async fn delete_ended_before(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    super::delete_batch(
        pool,
        "DELETE FROM silences WHERE id = ANY(ARRAY(
             SELECT id FROM silences
             WHERE ends_at < $1 OR expired_at < $1
             ORDER BY id LIMIT $2))",
        before,
        limit,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn silence(pattern: &str, from_h: u32, to_h: u32) -> Silence {
        let t = |h| Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0).unwrap();
        Silence {
            id: 1,
            api_pattern: pattern.into(),
            starts_at: t(from_h),
            ends_at: t(to_h),
            created_by: "alice".into(),
            reason: "deploy".into(),
            created_at: t(from_h),
            expired_at: None,
        }
    }

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, h, m, 0).unwrap()
    }

    #[test]
    fn a_silence_covers_matching_apis_from_its_start_to_its_end() {
        let s = silence("Billing*", 10, 12);
        assert!(!s.covers("Billing", at(9, 59)));
        assert!(s.covers("Billing", at(10, 0)));
        assert!(s.covers("Billing EU", at(11, 59)));
        assert!(!s.covers("Billing", at(12, 0)));
        assert!(!s.covers("Payments", at(11, 0)));
        assert_eq!(s.state_at(at(9, 0)), SilenceState::Scheduled);
        assert_eq!(s.state_at(at(11, 0)), SilenceState::Active);
        assert_eq!(s.state_at(at(12, 0)), SilenceState::Ended);
    }

    #[test]
    fn an_expired_silence_covers_nothing() {
        let mut s = silence("*", 10, 12);
        s.expired_at = Some(at(11, 0));
        assert!(!s.covers("any", at(10, 30)));
        assert_eq!(s.state_at(at(10, 30)), SilenceState::Expired);
    }
}
