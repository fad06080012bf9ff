//! The pinger: checks every endpoint on its own fixed-rate schedule and
//! writes each result to `api_metrics`.
//!
//! Each endpoint has its own task and timer, so a slow or hanging endpoint
//! delays nobody else, and at most one of its requests is in flight: when a
//! check outlasts its interval, the ticks it overran are skipped, and the
//! schedule stays on its original grid. Results go to a bounded in-memory
//! [`buffer::Buffer`] that a [`writer::Writer`] flushes in batches. Old
//! rows are deleted by a retention task of their own ([`retention_rules`]).

pub mod buffer;
pub mod catalog;
pub mod certificate;
pub mod check;
pub mod config;
mod dns;
pub mod heartbeat;
pub mod stats;
mod tcp;
pub mod writer;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apimon_core::apis::{Endpoint, Probe};
use apimon_core::health::Health;
use apimon_core::retention::{self, Rule, Table};
use apimon_core::shard::stable_hash;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::buffer::Buffer;
use crate::check::Checker;
use crate::config::PingerConfig;
use crate::stats::Stats;
use crate::writer::Writer;

/// What a run did, returned when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    pub checks: u64,
    pub written: u64,
    /// INSERT statements issued (one per batch).
    pub batches: u64,
    /// Rows dropped because the buffer was full.
    pub dropped: u64,
    /// Rows still unwritten at exit.
    pub lost: usize,
}

impl RunOutcome {
    /// Check results that never reached the database: dropped from a full
    /// buffer, or still unwritten at exit.
    pub fn rows_lost(&self) -> u64 {
        self.dropped + self.lost as u64
    }
}

/// The tables the pinger keeps `RETENTION_DAYS` of: its checks, and the
/// endpoints retired longer ago than that (once their checks are gone).
/// One line of `pinger --check-config`: name, what is checked (the URL
/// redacted: no userinfo, no query values), schedule, and what must hold.
pub fn describe(ep: &apimon_core::apis::Endpoint) -> String {
    let target = match &ep.probe {
        Probe::Http => format!("{} {}", ep.method, ep.url.redacted()),
        Probe::Tcp { address } => format!("tcp {address}"),
        Probe::Heartbeat(h) => format!(
            "heartbeat POST /heartbeat/<token> (grace {})",
            humantime::format_duration(h.grace)
        ),
        Probe::Dns(dns) => {
            let mut t = format!("dns {} {}", dns.record_type, dns.name);
            if let Some(server) = dns.resolver {
                t.push_str(&format!(" @{server}"));
            }
            t
        }
    };
    let mut line = format!(
        "{}\t{target}\tevery {:?}\ttimeout {:?}",
        ep.name, ep.interval, ep.timeout
    );
    if matches!(ep.probe, Probe::Http) {
        line.push_str(&format!("\texpect {}", ep.expected_status));
    }
    if let Probe::Dns(apimon_core::apis::DnsProbe {
        expect: Some(want), ..
    }) = &ep.probe
    {
        line.push_str(&format!("\texpect {}", want.escape_debug()));
    }
    for a in ep.assertions.describe() {
        line.push_str(&format!("\t{a}"));
    }
    if ep.follow_redirects {
        line.push_str("\tfollows redirects");
    }
    if let Some(ca) = &ep.ca {
        line.push_str(&format!(
            "\ttrusts ca_file {} ({} certificate{})",
            ca.path.display(),
            ca.certificates,
            if ca.certificates == 1 { "" } else { "s" }
        ));
    }
    line
}

pub fn retention_rules(retention_days: u32) -> Vec<Rule> {
    vec![
        Rule::new(Table::ApiMetrics, retention_days),
        Rule::new(Table::RetiredEndpoints, retention_days),
    ]
}

/// Delay of an endpoint's first check after start: spread over one interval
/// by a hash of its name, so that many endpoints don't all fire at once and
/// a restart keeps each one's phase.
pub fn first_check_offset(name: &str, interval: Duration) -> Duration {
    let ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(stable_hash(name) % ms)
}

/// Runs until `shutdown` completes, or until every endpoint has been checked
/// `max_rounds` times when that is set. Then it stops scheduling, waits for
/// requests in flight and the last flush, both within one grace period
/// ([`ShutdownBudget`]), and returns.
pub async fn run(
    cfg: PingerConfig,
    pool: PgPool,
    max_rounds: Option<u64>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunOutcome> {
    let health = Health::new(Duration::from_secs(30));
    run_with_health(cfg, pool, max_rounds, health, shutdown).await
}

/// [`run`], reporting liveness to `health` (served on `/healthz`).
pub async fn run_with_health(
    cfg: PingerConfig,
    pool: PgPool,
    max_rounds: Option<u64>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<RunOutcome> {
    let endpoints = cfg.owned_endpoints();
    tracing::info!(
        endpoints = endpoints.len(),
        configured = cfg.endpoints.len(),
        shard = %cfg.shard,
        file = %cfg.apis_file.display(),
        "pinger starting"
    );
    if endpoints.is_empty() {
        tracing::warn!(shard = %cfg.shard, "this shard owns no endpoint; nothing to check");
    }
    let checker = Checker::new(&cfg.user_agent)?.with_tls_recheck(cfg.tls_recheck);
    let buffer = Arc::new(Buffer::new(cfg.buffer_capacity, cfg.batch_size));
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = watch::channel(false);

    let retention_task = tokio::spawn(retention::run(
        pool.clone(),
        retention_rules(cfg.retention_days),
        retention::Settings::default(),
        stop_rx.clone(),
    ));
    let writer = Writer {
        pool: pool.clone(),
        buffer: buffer.clone(),
        stats: stats.clone(),
        flush_interval: cfg.flush_interval,
        retention_days: cfg.retention_days,
        endpoints: cfg.endpoints.clone(),
        health,
    };
    let (writer_stop_tx, writer_stop_rx) = watch::channel(None);
    let writer_task = tokio::spawn(writer.run(writer_stop_rx));
    let summary_task = tokio::spawn(summary_loop(
        stats.clone(),
        buffer.clone(),
        cfg.summary_interval,
        stop_rx.clone(),
    ));

    let start = Instant::now();
    let mut loops = JoinSet::new();
    for ep in endpoints {
        let first_due = start + first_check_offset(&ep.name, ep.interval);
        loops.spawn(endpoint_loop(
            ep,
            Probers {
                checker: checker.clone(),
                pool: pool.clone(),
            },
            buffer.clone(),
            stats.clone(),
            stop_rx.clone(),
            first_due,
            max_rounds,
        ));
    }

    // A replica that owns no endpoint stays up until told to stop: it
    // still takes heartbeats (and a restart loop would help nobody).
    let idle = loops.is_empty() && max_rounds.is_none();
    let all_done = async {
        if idle {
            std::future::pending::<()>().await;
        }
        while loops.join_next().await.is_some() {}
    };
    let finished = tokio::select! {
        _ = shutdown => false,
        _ = all_done => true,
    };
    // One budget from here to exit: checks in flight may use it but for
    // the share kept for the last flush.
    let budget = ShutdownBudget::start(cfg.shutdown_grace);
    if !finished {
        tracing::info!(
            grace_secs = cfg.shutdown_grace.as_secs_f64(),
            "shutting down: no new checks; waiting for those in flight"
        );
    }
    let _ = stop_tx.send(true);
    let in_flight = async { while loops.join_next().await.is_some() {} };
    if tokio::time::timeout_at(budget.checks_until(), in_flight)
        .await
        .is_err()
    {
        tracing::warn!(
            abandoned = loops.len(),
            waited_secs = budget.elapsed().as_secs_f64(),
            "checks still in flight; abandoning them to keep time for the last flush"
        );
        loops.abort_all();
    }
    let _ = summary_task.await;
    // A retention pass stops between batches; it shares the budget.
    let _ = tokio::time::timeout_at(budget.checks_until(), retention_task).await;
    let _ = writer_stop_tx.send(Some(budget.flush_until()));
    let lost = writer_task.await?;
    let outcome = RunOutcome {
        checks: stats.checks(),
        written: stats.written(),
        batches: stats.batches(),
        dropped: stats.dropped(),
        lost,
    };
    tracing::info!(?outcome, "pinger stopped");
    Ok(outcome)
}

/// The time from shutdown to exit (`SHUTDOWN_GRACE`), spent once: checks
/// in flight get it but for a reserve, then the last flush gets what is
/// left. Docker's `stop_grace_period` must exceed it.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownBudget {
    began: Instant,
    grace: Duration,
}

impl ShutdownBudget {
    /// The part of the grace kept for the last flush: a quarter, at most 2 s.
    pub fn flush_reserve(grace: Duration) -> Duration {
        (grace / 4).min(Duration::from_secs(2))
    }

    pub fn start(grace: Duration) -> ShutdownBudget {
        ShutdownBudget {
            began: Instant::now(),
            grace,
        }
    }

    /// Checks still running at this instant are abandoned.
    pub fn checks_until(&self) -> Instant {
        self.flush_until() - Self::flush_reserve(self.grace)
    }

    /// The last flush gives up at this instant; the budget ends.
    pub fn flush_until(&self) -> Instant {
        self.began + self.grace
    }

    pub fn elapsed(&self) -> Duration {
        self.began.elapsed()
    }
}

/// What an endpoint's loop checks with: the HTTP client (and TCP), and the
/// database for heartbeats.
struct Probers {
    checker: Checker,
    pool: PgPool,
}

async fn endpoint_loop(
    ep: Endpoint,
    probers: Probers,
    buffer: Arc<Buffer>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
    first_due: Instant,
    max_rounds: Option<u64>,
) {
    let watching_since = chrono::Utc::now();
    let mut timer = tokio::time::interval_at(first_due, ep.interval);
    timer.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut done = 0u64;
    loop {
        let due = tokio::select! {
            biased;
            _ = stop.changed() => break,
            due = timer.tick() => due,
        };
        if *stop.borrow() {
            break;
        }
        let late = due.elapsed();
        let row = match &ep.probe {
            Probe::Heartbeat(h) => {
                match heartbeat::check(&probers.pool, &ep, h, watching_since).await {
                    Some(row) => row,
                    None => {
                        done += 1;
                        if max_rounds.is_some_and(|m| done >= m) {
                            break;
                        }
                        continue;
                    }
                }
            }
            _ => probers.checker.check(&ep).await,
        };
        if !row.success {
            tracing::warn!(
                api = %ep.name,
                kind = row.error_kind.as_deref().unwrap_or(""),
                status = row.status_code,
                message = row.error_message.as_deref().unwrap_or(""),
                "check failed"
            );
        }
        stats.record(row.response_time_ms, row.success, late);
        let outcome = row.error_kind.clone().unwrap_or_else(|| "ok".to_string());
        metrics::counter!("apimon_checks_total", "api" => ep.name.clone(), "outcome" => outcome)
            .increment(1);
        if let Some(ms) = row.response_time_ms {
            metrics::histogram!("apimon_response_time_seconds").record(ms / 1000.0);
        }
        metrics::histogram!("apimon_check_late_seconds").record(late.as_secs_f64());
        buffer.push(row);
        done += 1;
        if max_rounds.is_some_and(|m| done >= m) {
            break;
        }
    }
}

async fn summary_loop(
    stats: Arc<Stats>,
    buffer: Arc<Buffer>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut timer = tokio::time::interval_at(Instant::now() + every, every);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = timer.tick() => {}
        }
        let s = stats.take_period();
        tracing::info!(
            checks = s.checks,
            failed = s.failures,
            p50_ms = format_args!("{:.1}", s.p50_ms),
            p95_ms = format_args!("{:.1}", s.p95_ms),
            late_p99_ms = format_args!("{:.1}", s.late_p99_ms),
            buffered = buffer.len(),
            written_total = stats.written(),
            "round"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shutdown_budget_is_spent_once_checks_first_then_the_flush() {
        let b = ShutdownBudget::start(Duration::from_secs(10));
        assert_eq!(b.flush_until() - b.began, Duration::from_secs(10));
        assert_eq!(b.checks_until() - b.began, Duration::from_secs(8));
        let b = ShutdownBudget::start(Duration::from_millis(400));
        assert_eq!(b.checks_until() - b.began, Duration::from_millis(300));
        assert_eq!(b.flush_until() - b.began, Duration::from_millis(400));
    }

    #[test]
    fn first_checks_spread_within_one_interval_and_are_stable() {
        let iv = Duration::from_secs(15);
        let offsets: Vec<Duration> = (0..100)
            .map(|i| first_check_offset(&format!("api-{i}"), iv))
            .collect();
        assert!(offsets.iter().all(|o| *o < iv));
        assert_eq!(first_check_offset("api-7", iv), offsets[7]);
        let distinct: std::collections::HashSet<_> = offsets.iter().collect();
        assert!(distinct.len() > 90, "{} distinct offsets", distinct.len());
    }
}
