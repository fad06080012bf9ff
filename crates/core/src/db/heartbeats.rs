//! The `heartbeats` table: when each `kind = "heartbeat"` endpoint last
//! called `POST /heartbeat/<token>`, and the time before.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// The last two heartbeats of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beats {
    pub last_at: DateTime<Utc>,
    pub previous_at: Option<DateTime<Utc>>,
    /// How many were received in all.
    pub beats: i64,
}

/// Records a heartbeat of `api_name` now (the database's clock, the same
/// for every replica) and returns its time.
pub async fn record(pool: &PgPool, api_name: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO heartbeats (api_name, last_at) VALUES ($1, now()) \
         ON CONFLICT (api_name) DO UPDATE SET previous_at = heartbeats.last_at, \
             last_at = EXCLUDED.last_at, beats = heartbeats.beats + 1 \
         RETURNING last_at",
    )
    .bind(api_name)
    .fetch_one(pool)
    .await
}

/// last_at, previous_at, beats (NULL when none came) and the time now.
type LastRow = (
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<i64>,
    DateTime<Utc>,
);

/// The last heartbeats of `api_name`, if any came, and the database's time
/// now (to judge them on the clock that stamped them).
pub async fn last(
    pool: &PgPool,
    api_name: &str,
) -> Result<(Option<Beats>, DateTime<Utc>), sqlx::Error> {
    let row: LastRow = sqlx::query_as(
        "SELECT h.last_at, h.previous_at, h.beats, now() \
             FROM (SELECT 1) AS one LEFT JOIN heartbeats h ON h.api_name = $1",
    )
    .bind(api_name)
    .fetch_one(pool)
    .await?;
    let beats = row.0.map(|last_at| Beats {
        last_at,
        previous_at: row.1,
        beats: row.2.unwrap_or(1),
    });
    Ok((beats, row.3))
}
