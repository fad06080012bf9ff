//! Status reports: every `ALERT_CHECK_INTERVAL`, a digest of the period:
//! which APIs were slow and which were down, then one row per API.
//!
//! The report lists the open incidents first, then the incidents of the
//! period (opened or resolved in it, with their durations), then the table.
//!
//! An API is **down** over a period when it had checks and none succeeded,
//! or when its `down` incident is open. It is **slow** when its `slow`
//! incident is open, or when the p95 of its successful checks in the
//! period is above its baseline p95 times `SLOW_FACTOR`, or above
//! `SLOW_THRESHOLD_MS` when that is set. **No data**: no check in the
//! period.
//!
//! A report covers only rows that have arrived. The pinger buffers its
//! rows (through a database outage too), so a period is reported once every
//! API that is being checked has a row at or after the period's end: its
//! checks up to the end are then in. An API whose rows have still not come
//! one report interval after the end is reported as **data missing**, with
//! the checks that did arrive; never as healthy.
//!
//! Endpoints removed from the configuration (retired) are not reported.

use std::collections::HashMap;
use std::time::Duration;

use apimon_core::db;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::baseline::Baselines;
use crate::compose::{self, Baseline, Report, ReportRow, Status};
use crate::config::AlerterConfig;
use crate::outbox;

/// A period's data must be in before its report is written: the pinger
/// flushes within a second, the detector follows within another. A check
/// that started just before the end may take its whole timeout on top:
/// see [`settle_time`].
pub const SETTLE: Duration = Duration::from_secs(5);

/// How long after a period's end its report waits at least: [`SETTLE`]
/// plus the longest check timeout configured (`longest_timeout`).
pub fn settle_time(longest_timeout: Option<Duration>) -> Duration {
    SETTLE + longest_timeout.unwrap_or_default()
}

/// End of the last period that closed at least [`SETTLE`] before `now`;
/// periods are aligned on multiples of `interval` since the epoch.
pub fn last_period_end(now: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    last_period_end_after(now, interval, SETTLE)
}

/// End of the last period that closed at least `settle` before `now`.
pub fn last_period_end_after(
    now: DateTime<Utc>,
    interval: Duration,
    settle: Duration,
) -> DateTime<Utc> {
    let step = interval.as_millis().max(1) as i64;
    let t = (now - chrono::Duration::from_std(settle).unwrap_or_default()).timestamp_millis();
    let end = t.div_euclid(step) * step;
    DateTime::from_timestamp_millis(end).unwrap_or(now)
}

/// The status of one API from its period figures.
#[allow(clippy::too_many_arguments)]
pub fn classify(
    checks: i64,
    successes: i64,
    p95_ms: Option<f64>,
    baseline: Option<Baseline>,
    open_outage: bool,
    open_slow: bool,
    slow_factor: f64,
    slow_threshold_ms: Option<f64>,
) -> Status {
    if open_outage || (checks > 0 && successes == 0) {
        return Status::Down;
    }
    if checks == 0 {
        return Status::NoData;
    }
    let slow_vs_baseline =
        matches!((p95_ms, baseline), (Some(p), Some(b)) if p > b.p95_ms * slow_factor);
    let slow_vs_threshold = matches!((p95_ms, slow_threshold_ms), (Some(p), Some(t)) if p > t);
    if open_slow || slow_vs_baseline || slow_vs_threshold {
        Status::Slow
    } else {
        Status::Healthy
    }
}

/// An API checked recently (a row or a registration within this time
/// before the period) is expected to have rows in it; older ones are
/// endpoints no pinger checks any more.
const EXPECTED_WITHIN: chrono::Duration = chrono::Duration::hours(1);

/// The APIs being checked whose rows up to `end` have not all arrived: no
/// row at or after `end` yet.
pub async fn not_arrived(pool: &PgPool, end: DateTime<Utc>) -> Result<Vec<String>, sqlx::Error> {
    db::endpoints::not_arrived(pool, end, end - EXPECTED_WITHIN).await
}

/// The note of a row: why its status reads as it does, when the figures
/// alone could mislead.
fn note(row: &ReportRow, interval: Duration) -> Option<String> {
    match row.status {
        Status::Missing => Some(format!(
            "{} of about {} checks arrived; the rest had not come in when the report was due",
            row.checks,
            expected_checks(interval)
        )),
        Status::Healthy if row.critical + row.high > 0 => Some(format!(
            "{} single-check anomal{} ({} critical, {} high), no sustained incident",
            row.critical + row.high + row.medium,
            if row.critical + row.high + row.medium == 1 {
                "y"
            } else {
                "ies"
            },
            row.critical,
            row.high
        )),
        _ => None,
    }
}

/// Checks a period holds at the default 15 s interval.
fn expected_checks(period: Duration) -> u64 {
    period.as_secs() / 15
}

/// Computes the report of `[start, end)`. APIs in `missing` (their rows
/// had not all arrived) are reported as data missing unless down.
pub async fn build(
    pool: &PgPool,
    cfg: &AlerterConfig,
    baselines: &mut Baselines,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Report, sqlx::Error> {
    build_with_missing(pool, cfg, baselines, start, end, &[]).await
}

async fn build_with_missing(
    pool: &PgPool,
    cfg: &AlerterConfig,
    baselines: &mut Baselines,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    missing: &[String],
) -> Result<Report, sqlx::Error> {
    let stats = db::metrics::period_stats(pool, start, end).await?;
    let counts = db::anomalies::severity_counts(pool, start, end).await?;
    let mut sev: HashMap<(String, String), i64> = HashMap::new();
    for (a, s, n) in counts {
        sev.insert((a, s), n);
    }
    let apis: Vec<String> = stats.iter().map(|s| s.0.clone()).collect();
    let base = baselines.all(pool, &apis, start).await?;
    let get = |a: &str, s: &str| {
        sev.get(&(a.to_string(), s.to_string()))
            .copied()
            .unwrap_or(0)
    };
    let rows = stats
        .into_iter()
        .map(|(api, checks, ok, mean, p95, down_open, slow_open)| {
            let baseline = base.get(&api).copied();
            let mut status = classify(
                checks,
                ok,
                p95,
                baseline,
                down_open,
                slow_open,
                cfg.slow_factor,
                cfg.slow_threshold_ms,
            );
            if status != Status::Down && missing.contains(&api) {
                status = Status::Missing;
            }
            let mut row = ReportRow {
                status,
                critical: get(&api, "critical"),
                high: get(&api, "high"),
                medium: get(&api, "medium"),
                api_name: api,
                checks,
                successes: ok,
                mean_ms: mean,
                p95_ms: p95,
                baseline,
                note: None,
            };
            row.note = note(&row, cfg.report_interval);
            row
        })
        .collect();
    let incidents = apimon_core::db::incidents::for_period(pool, start, end)
        .await?
        .iter()
        .filter_map(crate::dispatch::Item::from_row)
        .collect();
    let warn = chrono::Duration::days(i64::from(cfg.incidents.tls_warn_days));
    let certificates = if warn.is_zero() {
        Vec::new()
    } else {
        db::metrics::expiring_certificates(pool, start, end, end + warn).await?
    };
    Ok(Report {
        start,
        end,
        rows,
        incidents,
        certificates,
    })
}

/// Writes the report of the previous or the last closed period, whichever
/// is not written yet and is due, unless some alerter has. Returns whether
/// this call wrote one.
///
/// A period is due once the rows of every API being checked have arrived
/// up to its end (see [`not_arrived`]), or one report interval after its
/// end, with the APIs still missing reported as such.
#[tracing::instrument(skip_all)]
pub async fn maybe_report(
    pool: &PgPool,
    cfg: &AlerterConfig,
    baselines: &mut Baselines,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let step =
        chrono::Duration::from_std(cfg.report_interval).unwrap_or(chrono::Duration::minutes(5));
    let settle = settle_time(db::endpoints::longest_timeout(pool).await?);
    let last = last_period_end_after(now, cfg.report_interval, settle);
    let reported =
        db::status_reports::reported_among(pool, &[last - step * 2, last - step, last]).await?;
    // The previous period is caught up only when it was waiting for its
    // rows (the one before it was written): an alerter that starts, or
    // comes back after a while, reports from the last period on.
    let previous_waiting =
        reported.contains(&(last - step * 2)) && !reported.contains(&(last - step));
    let end = if previous_waiting {
        last - step
    } else if !reported.contains(&last) {
        last
    } else {
        return Ok(false);
    };
    let missing = not_arrived(pool, end).await?;
    let overdue = now >= end + step;
    if !missing.is_empty() && !overdue {
        tracing::debug!(
            period_end = %end,
            waiting_for = missing.len(),
            "report waits for the period's rows"
        );
        return Ok(false);
    }
    if !missing.is_empty() {
        tracing::warn!(
            period_end = %end,
            apis = missing.len(),
            "the period's rows of some APIs never arrived; reporting them as data missing"
        );
    }
    write(pool, cfg, baselines, end - step, end, &missing).await
}

/// Builds and queues the report of `[start, end)` unless some alerter has
/// claimed that period.
async fn write(
    pool: &PgPool,
    cfg: &AlerterConfig,
    baselines: &mut Baselines,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    missing: &[String],
) -> anyhow::Result<bool> {
    let report = build_with_missing(pool, cfg, baselines, start, end, missing).await?;
    let mut tx = pool.begin().await?;
    if !db::status_reports::claim(&mut tx, start, end).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    if report.rows.is_empty() {
        tx.commit().await?;
        return Ok(false);
    }
    if report.all_healthy() && !cfg.report_when_healthy {
        tx.commit().await?;
        tracing::info!(
            apis = report.rows.len(),
            "all APIs healthy; no report sent (STATUS_REPORT_WHEN_HEALTHY=false)"
        );
        return Ok(true);
    }
    let msg = compose::report(&report, &cfg.dashboard_url);
    outbox::queue(&mut tx, &msg, &cfg.channels).await?;
    tx.commit().await?;
    tracing::info!(subject = %report.subject(), "status report queued");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn periods_align_on_the_interval_after_settling() {
        let i = Duration::from_secs(300);
        let at = |h, m, s| Utc.with_ymd_and_hms(2026, 11, 25, h, m, s).unwrap();
        assert_eq!(last_period_end(at(10, 5, 10), i), at(10, 5, 0));
        assert_eq!(
            last_period_end(at(10, 5, 3), i),
            at(10, 0, 0),
            "not settled yet"
        );
        assert_eq!(last_period_end(at(10, 9, 59), i), at(10, 5, 0));
    }

    #[test]
    fn a_period_settles_for_the_longest_check_timeout() {
        let i = Duration::from_secs(300);
        let at = |h, m, s| Utc.with_ymd_and_hms(2026, 11, 25, h, m, s).unwrap();
        let settle = settle_time(Some(Duration::from_secs(30)));
        assert_eq!(settle, Duration::from_secs(35));
        assert_eq!(
            last_period_end_after(at(10, 5, 34), i, settle),
            at(10, 0, 0)
        );
        assert_eq!(
            last_period_end_after(at(10, 5, 35), i, settle),
            at(10, 5, 0)
        );
        assert_eq!(settle_time(None), SETTLE);
    }

    #[test]
    fn statuses_follow_the_documented_rules() {
        let b = Some(Baseline {
            mean_ms: 90.0,
            p95_ms: 100.0,
        });
        assert_eq!(
            classify(20, 20, Some(140.0), b, false, false, 1.5, None),
            Status::Healthy
        );
        assert_eq!(
            classify(20, 20, Some(151.0), b, false, false, 1.5, None),
            Status::Slow
        );
        assert_eq!(
            classify(20, 20, Some(120.0), b, false, false, 1.5, Some(110.0)),
            Status::Slow
        );
        assert_eq!(
            classify(20, 0, None, b, false, false, 1.5, None),
            Status::Down
        );
        assert_eq!(
            classify(20, 19, Some(90.0), b, true, false, 1.5, None),
            Status::Down
        );
        assert_eq!(
            classify(0, 0, None, b, false, false, 1.5, None),
            Status::NoData
        );
        assert_eq!(
            classify(20, 20, Some(90.0), b, false, true, 1.5, None),
            Status::Slow,
            "an open slow incident"
        );
        assert_eq!(
            classify(20, 20, Some(1000.0), None, false, false, 1.5, None),
            Status::Healthy,
            "no baseline, no threshold"
        );
    }
}
