//! Moves rows from the [`Buffer`] to `api_metrics` in batches: one statement
//! per batch, at least every flush interval, retried with backoff while the
//! database is unreachable. It also readies the schema (migrations, the
//! endpoints of the configuration, TimescaleDB's retention policies) on its
//! first contact with the database. It never deletes: old rows go in the
//! pinger's retention task (`apimon_core::retention`), so a large delete
//! never stalls a flush.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apimon_core::backoff::Backoff;
use apimon_core::db::{self, Backend};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::buffer::Buffer;
use crate::stats::Stats;

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// With nothing to write, check the database this often (for /healthz).
const PING_EVERY: Duration = Duration::from_secs(5);

pub struct Writer {
    pub pool: PgPool,
    pub buffer: Arc<Buffer>,
    pub stats: Arc<Stats>,
    pub flush_interval: Duration,
    pub retention_days: u32,
    /// Every configured endpoint, registered in `api_endpoints` once the
    /// schema is ready; the others there are retired.
    pub endpoints: Vec<apimon_core::apis::Endpoint>,
    /// `/healthz`: the database answered, the loop is alive.
    pub health: std::sync::Arc<apimon_core::health::Health>,
}

struct State {
    backend: Option<Backend>,
    backoff: Backoff,
    /// How long to wait before the next try while the database fails.
    retry_in: Duration,
    /// When the current outage began, if the database is failing.
    failing_since: Option<Instant>,
    /// Last time the database answered (a flush or a ping).
    last_contact: Instant,
}

impl Writer {
    /// Runs until `stop` holds a deadline, then writes what is left until
    /// that instant. Returns the number of rows that could not be written.
    pub async fn run(self, mut stop: watch::Receiver<Option<tokio::time::Instant>>) -> usize {
        let mut st = State {
            backend: None,
            backoff: Backoff::new(BACKOFF_START, BACKOFF_MAX),
            retry_in: BACKOFF_START,
            failing_since: None,
            last_contact: Instant::now(),
        };
        loop {
            let wait = if st.failing_since.is_some() {
                st.retry_in
            } else {
                self.flush_interval
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.buffer.wake.notified(), if st.failing_since.is_none() => {}
                _ = stop.changed() => {}
            }
            if stop.borrow().is_some() {
                break;
            }
            self.health.beat();
            // A step stuck on the database must not hold up shutdown: once
            // stop comes, it has until the deadline (its rows stay buffered
            // if it does not finish, and a batch that did commit is skipped
            // row by row when retried); then the final flush takes over.
            let step = self.step(&mut st);
            tokio::pin!(step);
            let stopping = tokio::select! {
                _ = &mut step => false,
                _ = stop.wait_for(Option::is_some) => true,
            };
            if stopping {
                let deadline = (*stop.borrow()).unwrap_or_else(tokio::time::Instant::now);
                let _ = tokio::time::timeout_at(deadline, step).await;
                break;
            }
            metrics::gauge!("apimon_buffered_rows").set(self.buffer.len() as f64);
        }
        // Final flush: keep trying until the buffer is empty or the
        // shutdown budget is spent; a statement still running then is
        // abandoned (its rows count as lost).
        let deadline = (*stop.borrow()).unwrap_or_else(tokio::time::Instant::now);
        while !self.buffer.is_empty() && tokio::time::Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, self.step(&mut st)).await {
                Ok(true) => {}
                Ok(false) => {
                    tokio::time::sleep_until(
                        deadline.min(tokio::time::Instant::now() + st.retry_in),
                    )
                    .await
                }
                Err(_) => break,
            }
        }
        // Rows dropped since the last step count even when the budget left
        // no time for another.
        self.count_dropped();
        let lost = self.buffer.len();
        if lost > 0 {
            tracing::error!(
                rows = lost,
                "shutting down with rows the database did not take; they are lost"
            );
        }
        lost
    }

    /// Moves the buffer's count of dropped rows into the stats, saying so.
    fn count_dropped(&self) {
        let dropped = self.buffer.take_dropped();
        if dropped > 0 {
            self.stats.add_dropped(dropped);
            metrics::counter!("apimon_rows_dropped_total").increment(dropped);
            tracing::warn!(
                dropped,
                total_dropped = self.stats.dropped(),
                "buffer full: dropped the oldest rows"
            );
        }
    }

    /// Readies the schema if needed and writes every buffered row. Returns
    /// false after a database error.
    async fn step(&self, st: &mut State) -> bool {
        self.count_dropped();
        match self.try_flush(st).await {
            Ok(()) => {
                self.health.set_db(true);
                if let Some(since) = st.failing_since.take() {
                    tracing::info!(
                        outage_secs = since.elapsed().as_secs_f64(),
                        "database reachable again; buffered rows written"
                    );
                }
                st.backoff.reset();
                true
            }
            Err(e) => {
                // A failed migration is not an outage: say which it is.
                self.health.set_problem(e.health_reason());
                let first = st.failing_since.is_none();
                let since = *st.failing_since.get_or_insert_with(Instant::now);
                st.retry_in = st.backoff.next_delay();
                if first || st.retry_in >= st.backoff.max() {
                    tracing::warn!(
                        error.message = %e,
                        error.cause_chain = ?e,
                        buffered = self.buffer.len(),
                        outage_secs = since.elapsed().as_secs_f64(),
                        "cannot write to the database; keeping rows in memory and retrying"
                    );
                }
                false
            }
        }
    }

    async fn try_flush(&self, st: &mut State) -> Result<(), db::DbError> {
        if st.backend.is_none() {
            let backend = db::migrate(&self.pool).await?;
            let retired = db::endpoints::sync(&self.pool, &self.endpoints).await?;
            if !retired.is_empty() {
                tracing::info!(
                    ?retired,
                    "endpoints no longer in the configuration retired (history kept)"
                );
            }
            db::apply_retention(&self.pool, &backend, self.retention_days).await?;
            st.backend = Some(backend);
        }
        let mut wrote = false;
        // Only the rows buffered when the flush began: those that arrive
        // while a batch is written wait for the next flush. Otherwise
        // nearly every flush under load ends with a second statement for a
        // few rows, and a second NOTIFY: one more detector pass each time.
        let mut left = self.buffer.len();
        while left > 0 {
            let Some(batch) = self.buffer.peek_batch() else {
                break;
            };
            left = left.saturating_sub(batch.rows.len());
            let inserted = db::metrics::insert_batch(&self.pool, &batch.rows).await?;
            self.buffer.ack(&batch);
            self.stats.add_written(inserted);
            metrics::counter!("apimon_rows_written_total").increment(inserted);
            wrote = true;
        }
        // With nothing to write, still make sure the database answers, so
        // that /healthz tells an outage.
        if wrote {
            st.last_contact = Instant::now();
        } else if st.last_contact.elapsed() >= PING_EVERY {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            st.last_contact = Instant::now();
        }
        Ok(())
    }
}
