//! The `status_reports` table: one row per report period, inserted by the
//! alerter that writes the period's report (in the transaction that queues
//! it), so that two alerters never report the same period.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

/// Which of the periods ending at `ends` have been reported.
#[tracing::instrument(skip_all)]
pub async fn reported_among(
    pool: &PgPool,
    ends: &[DateTime<Utc>],
) -> Result<Vec<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT period_end FROM status_reports WHERE period_end = ANY($1)")
        .bind(ends)
        .fetch_all(pool)
        .await
}

/// Claims the report of `[start, end)` in `tx`. Returns false when some
/// alerter has claimed it already.
#[tracing::instrument(skip_all, fields(period_end = %end))]
pub async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO status_reports (period_end, period_start) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(end)
    .bind(start)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1)
}

/// Retention: deletes up to `limit` report periods that ended before
/// `before`. Returns how many.
pub async fn delete_batch_before(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    super::delete_batch(
        pool,
        "DELETE FROM status_reports WHERE period_end = ANY(ARRAY(
             SELECT period_end FROM status_reports WHERE period_end < $1
             ORDER BY period_end LIMIT $2))",
        before,
        limit,
    )
    .await
}
