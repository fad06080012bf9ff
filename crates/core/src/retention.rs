//! Retention: every table that grows keeps a bounded history. Each service
//! deletes the old rows of the tables it writes (the pinger `api_metrics`
//! and retired endpoints; the detector `anomalies`, resolved incidents and
//! the models and watermarks of endpoints gone; the alerter notifications,
//! status reports and ended silences), in a task of its own beside its
//! main loop, so that a large delete never stalls its work.
//!
//! A pass deletes each table's old rows in batches of at most
//! [`Settings::batch_size`] rows, one short statement each, with a pause
//! between batches, until a batch comes back short; it stops between two
//! batches when the service shuts down. On TimescaleDB, `api_metrics` and
//! `anomalies` are hypertables whose retention policies drop whole chunks
//! (see [`crate::db::apply_retention`]): a pass leaves them alone.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::db;

/// A table, or a part of one, with a retention rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Checks older than the period (plain PostgreSQL only).
    ApiMetrics,
    /// Endpoints retired longer than the period, once their checks are gone.
    RetiredEndpoints,
    /// Anomalies older than the period (plain PostgreSQL only).
    Anomalies,
    /// Incidents resolved longer ago than the period, whose events have
    /// been handled (with their events).
    Incidents,
    /// Models of endpoints retired (or unregistered) longer than the period.
    Models,
    /// Detector watermarks of endpoints retired (or unregistered) longer
    /// than the period.
    Watermarks,
    /// Notifications done with (sent, failed, skipped) created before the
    /// period.
    Notifications,
    /// Status report periods that ended before the period.
    StatusReports,
    /// Silences that ended or were expired before the period.
    Silences,
}

impl Table {
    /// The table's name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Table::ApiMetrics => "api_metrics",
            Table::RetiredEndpoints => "api_endpoints",
            Table::Anomalies => "anomalies",
            Table::Incidents => "incidents",
            Table::Models => "models",
            Table::Watermarks => "detector_watermarks",
            Table::Notifications => "notifications",
            Table::StatusReports => "status_reports",
            Table::Silences => "silences",
        }
    }

    /// A hypertable on TimescaleDB, whose retention policy does the work.
    fn has_policy(self) -> bool {
        matches!(self, Table::ApiMetrics | Table::Anomalies)
    }

    /// Deletes one batch of at most `limit` rows older than `before`.
    async fn delete_batch(
        self,
        pool: &PgPool,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<u64, sqlx::Error> {
        match self {
            Table::ApiMetrics => db::metrics::delete_batch_before(pool, before, limit).await,
            Table::RetiredEndpoints => {
                db::endpoints::delete_retired_batch(pool, before, limit).await
            }
            Table::Anomalies => db::anomalies::delete_batch_before(pool, before, limit).await,
            Table::Incidents => db::incidents::delete_resolved_batch(pool, before, limit).await,
            Table::Models => db::models::delete_retired_batch(pool, before, limit).await,
            Table::Watermarks => db::watermarks::delete_retired_batch(pool, before, limit).await,
            Table::Notifications => db::notifications::delete_done_batch(pool, before, limit).await,
            Table::StatusReports => {
                db::status_reports::delete_batch_before(pool, before, limit).await
            }
            Table::Silences => db::silences::delete_ended_before(pool, before, limit).await,
        }
    }
}

/// One table's rule: keep `days` days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub table: Table,
    pub days: u32,
}

impl Rule {
    pub fn new(table: Table, days: u32) -> Rule {
        Rule { table, days }
    }
}

/// How a retention task deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Most rows deleted by one statement.
    pub batch_size: i64,
    /// Pause between two batches, so that other work gets the table.
    pub pause: Duration,
    /// Time between two passes.
    pub every: Duration,
    /// Delay of the first pass after start (the schema is readied first).
    pub first_after: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            batch_size: 5_000,
            pause: Duration::from_millis(100),
            every: Duration::from_secs(3600),
            first_after: Duration::from_secs(60),
        }
    }
}

/// What a pass deleted from one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    pub table: &'static str,
    pub rows: u64,
    /// DELETE statements run.
    pub statements: u32,
    /// Most rows one statement deleted.
    pub largest: u64,
}

/// One retention pass at `now`: each rule's old rows, batch by batch.
/// Returns what each rule deleted (rules skipped on TimescaleDB are left
/// out). Stops between two batches once `stop` is true.
pub async fn pass(
    pool: &PgPool,
    rules: &[Rule],
    settings: &Settings,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<Deleted>, sqlx::Error> {
    let timescale = db::backend(pool).await?.is_timescale();
    let limit = settings.batch_size.max(1);
    let mut out = Vec::with_capacity(rules.len());
    for rule in rules {
        if timescale && rule.table.has_policy() {
            continue;
        }
        let before = Utc::now() - chrono::Duration::days(i64::from(rule.days));
        let mut d = Deleted {
            table: rule.table.name(),
            ..Deleted::default()
        };
        loop {
            if *stop.borrow() {
                out.push(d);
                return Ok(out);
            }
            let n = rule.table.delete_batch(pool, before, limit).await?;
            d.rows += n;
            d.statements += 1;
            d.largest = d.largest.max(n);
            if n < limit as u64 {
                break;
            }
            tokio::time::sleep(settings.pause).await;
        }
        if d.rows > 0 {
            tracing::info!(
                table = d.table,
                deleted = d.rows,
                batches = d.statements,
                days = rule.days,
                "retention: deleted old rows"
            );
        }
        out.push(d);
    }
    Ok(out)
}

/// Runs a pass every [`Settings::every`] (the first one
/// [`Settings::first_after`] after start) until `stop` turns true. A
/// failed pass is logged and tried again at the next interval.
pub async fn run(
    pool: PgPool,
    rules: Vec<Rule>,
    settings: Settings,
    mut stop: watch::Receiver<bool>,
) {
    let mut wait = settings.first_after;
    loop {
        tokio::select! {
            changed = stop.changed() => if changed.is_err() {
                // The service is gone.
                return;
            },
            _ = tokio::time::sleep(wait) => {}
        }
        if *stop.borrow() {
            return;
        }
        wait = settings.every;
        if let Err(e) = pass(&pool, &rules, &settings, &stop).await {
            tracing::warn!(
                error.message = %e,
                error.cause_chain = ?e,
                retry_in_secs = wait.as_secs_f64(),
                "retention pass failed; will retry"
            );
        }
    }
}
