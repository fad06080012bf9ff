//! The `status_reports` table: one row per report period claimed by an
//! alerter (whoever inserts the row writes the report).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

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
