//! Incidents: the rules that turn checks into something worth waking a
//! person for. A single odd check is an anomaly (a dashboard row); an
//! incident is a sustained symptom: an API that keeps failing (`down`) or
//! whose typical response time stays well above its own healthy baseline
//! (`slow`).
//!
//! [`Tracker`] is a pure state machine fed one check at a time, in data
//! time: the streaming detector and `alerter replay` run the same code, so
//! a replay of history shows exactly what the service would have paged.
//!
//! The rules (defaults in [`IncidentPolicy::default`], each a variable):
//! - **down** opens at `ALERT_DOWN_AFTER` consecutive failed checks, or
//!   when at least `ALERT_DOWN_RATIO` of the last `ALERT_DOWN_WINDOW` checks
//!   failed (an endpoint flapping between 200 and 503). It recovers after
//!   `ALERT_RECOVER_AFTER` successful checks in a row.
//! - **slow** compares the median response time of the latest checks with
//!   the API's baseline: an exponentially weighted mean and spread of
//!   log(response time), learnt only from healthy checks (checks of an
//!   incident never enter it, so a baseline does not absorb an incident).
//!   It opens when the median of the last `ALERT_SLOW_FAST_WINDOW` checks is
//!   `ALERT_SLOW_FAST_RATIO` times the baseline or more (a large slowdown,
//!   paged in about a minute), or when the median of the last
//!   `ALERT_SLOW_WINDOW` checks is `ALERT_SLOW_RATIO` times the baseline or
//!   more (a lasting level shift). Both also need the median to be
//!   `ALERT_SLOW_MIN_MS` above the baseline, and above what the API's own
//!   noise explains (5 standard errors of a median of that many checks; 4
//!   for the quick rule). A median ignores single slow checks: one check,
//!   however slow, never opens an incident.
//! - While a slow incident is open, its shift (level / baseline) is
//!   measured over its first [`SHIFT_WINDOWS`] × `ALERT_SLOW_WINDOW`
//!   checks; after that, checks seen while the API is still slow are learnt
//!   divided by the shift, so the baseline follows the daily cycle through a
//!   long incident without absorbing it.
//! - It recovers when the median of the last `ALERT_SLOW_RESOLVE_WINDOW`
//!   checks (more on a noisy API, up to 2 × `ALERT_SLOW_WINDOW`) is back under
//!   √`ALERT_SLOW_RATIO` × the baseline.
//! - **certificate** opens when an https check's certificate expires within
//!   `TLS_EXPIRY_WARN_DAYS` (severity high), and is replaced by a critical
//!   one within `TLS_EXPIRY_CRITICAL_DAYS` (the warning is closed as
//!   `escalated`, without a resolve notification). It resolves at once when
//!   a check presents a certificate valid for longer than the warning (it
//!   was renewed). Checks without a certificate (failed, plain HTTP)
//!   change nothing.
//! - A recovered incident is held for `ALERT_FLAP_WINDOW` (in data time):
//!   if its rule fires again meanwhile it re-opens as the same incident
//!   (a flap, counted), else it is resolved for good. After a recovery the
//!   rules start afresh: only checks after it count. A slow incident is
//!   also held until the rule matching its level has a whole window of
//!   checks since the recovery, with their median under the recovery
//!   threshold.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Env};
use crate::model::Severity;

/// Standard errors of a window's median that the API's own noise may
/// explain; a slowdown must be beyond them.
const NOISE_Z: f64 = 5.0;
/// The same for the quick rule, whose 2× ratio already sits far above the
/// noise of most APIs: a lower guard keeps a 3× slowdown on a noisy API
/// (sigma 0.35) paged within two minutes.
const NOISE_Z_FAST: f64 = 4.0;
/// A median's standard error is about this times sigma / sqrt(n).
const MEDIAN_SE: f64 = 1.2533;
/// Outliers are clipped to this many standard deviations before they
/// update the baseline.
const CLIP_SD: f64 = 4.0;
/// Response times below this are taken as this (log of 0).
const MIN_MS: f64 = 0.01;
/// Most characters of an error message kept as evidence.
const MAX_ERROR_CHARS: usize = 300;

/// What an incident is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The API keeps failing.
    Down,
    /// The API's typical response time is well above its baseline.
    Slow,
    /// The API's TLS certificate expires soon.
    Certificate,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Down, Kind::Slow, Kind::Certificate];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Down => "down",
            Kind::Slow => "slow",
            Kind::Certificate => "certificate",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "down" => Ok(Kind::Down),
            "slow" => Ok(Kind::Slow),
            "certificate" => Ok(Kind::Certificate),
            _ => Err(format!("unknown incident kind `{s}`")),
        }
    }
}

/// The opening and resolution rules, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentPolicy {
    /// Consecutive failed checks that open `down` (`ALERT_DOWN_AFTER`).
    pub down_after: u32,
    /// Checks the failure ratio is taken over (`ALERT_DOWN_WINDOW`).
    pub down_window: u32,
    /// Share of failed checks in that window that opens `down`
    /// (`ALERT_DOWN_RATIO`).
    pub down_ratio: f64,
    /// Successful checks in a row that end `down` (`ALERT_RECOVER_AFTER`).
    pub recover_after: u32,
    /// Checks whose median must be `fast_ratio` × baseline
    /// (`ALERT_SLOW_FAST_WINDOW`).
    pub slow_fast_window: u32,
    /// `ALERT_SLOW_FAST_RATIO`: a large slowdown, paged quickly.
    pub slow_fast_ratio: f64,
    /// Checks whose median must be `slow_ratio` × baseline
    /// (`ALERT_SLOW_WINDOW`).
    pub slow_window: u32,
    /// `ALERT_SLOW_RATIO`: a lasting level shift.
    pub slow_ratio: f64,
    /// The median must also be this far above the baseline
    /// (`ALERT_SLOW_MIN_MS`): practical significance.
    pub slow_min_ms: f64,
    /// Checks whose median must be back under the threshold to recover
    /// (`ALERT_SLOW_RESOLVE_WINDOW`).
    pub slow_resolve_window: u32,
    /// Time constant of the baseline, in healthy checks
    /// (`ALERT_BASELINE_CHECKS`).
    pub baseline_checks: u32,
    /// Healthy checks the baseline needs before `slow` can open
    /// (`ALERT_BASELINE_MIN_CHECKS`).
    pub baseline_min_checks: u32,
    /// A recovered incident that fires again within this time is the same
    /// incident (`ALERT_FLAP_WINDOW`, data time).
    pub flap_window: Duration,
    /// Days before a certificate's expiry that a `certificate` incident
    /// opens (`TLS_EXPIRY_WARN_DAYS`; 0: none).
    pub tls_warn_days: u32,
    /// Days before it that the incident becomes critical
    /// (`TLS_EXPIRY_CRITICAL_DAYS`).
    pub tls_critical_days: u32,
}

impl Default for IncidentPolicy {
    fn default() -> Self {
        IncidentPolicy {
            down_after: 2,
            down_window: 10,
            down_ratio: 0.5,
            recover_after: 3,
            slow_fast_window: 8,
            slow_fast_ratio: 2.0,
            slow_window: 40,
            slow_ratio: 1.3,
            slow_min_ms: 10.0,
            slow_resolve_window: 16,
            baseline_checks: 120,
            baseline_min_checks: 120,
            flap_window: Duration::from_secs(300),
            tls_warn_days: 14,
            tls_critical_days: 3,
        }
    }
}

impl IncidentPolicy {
    /// Reads the `ALERT_*` incident variables (defaults when unset).
    pub fn from_env(env: &Env) -> Result<IncidentPolicy, ConfigError> {
        let d = IncidentPolicy::default();
        let ratio = |key: &str, default: f64, lo: f64, hi: f64| -> Result<f64, ConfigError> {
            let expected = format!("a number from {lo} to {hi}");
            let v: f64 = env.parse_or(key, default, &expected)?;
            if v.is_finite() && v >= lo && v <= hi {
                Ok(v)
            } else {
                Err(ConfigError::new(
                    key,
                    format!("expected {expected}, got `{v}`"),
                ))
            }
        };
        let p = IncidentPolicy {
            down_after: env.int_in("ALERT_DOWN_AFTER", d.down_after, 1..=1000)?,
            down_window: env.int_in("ALERT_DOWN_WINDOW", d.down_window, 2..=1000)?,
            down_ratio: ratio("ALERT_DOWN_RATIO", d.down_ratio, 0.05, 1.0)?,
            recover_after: env.int_in("ALERT_RECOVER_AFTER", d.recover_after, 1..=1000)?,
            slow_fast_window: env.int_in("ALERT_SLOW_FAST_WINDOW", d.slow_fast_window, 3..=1000)?,
            slow_fast_ratio: ratio("ALERT_SLOW_FAST_RATIO", d.slow_fast_ratio, 1.01, 1000.0)?,
            slow_window: env.int_in("ALERT_SLOW_WINDOW", d.slow_window, 3..=1000)?,
            slow_ratio: ratio("ALERT_SLOW_RATIO", d.slow_ratio, 1.01, 1000.0)?,
            slow_min_ms: ratio("ALERT_SLOW_MIN_MS", d.slow_min_ms, 0.0, 1e9)?,
            slow_resolve_window: env.int_in(
                "ALERT_SLOW_RESOLVE_WINDOW",
                d.slow_resolve_window,
                3..=1000,
            )?,
            baseline_checks: env.int_in(
                "ALERT_BASELINE_CHECKS",
                d.baseline_checks,
                10..=100_000,
            )?,
            baseline_min_checks: env.int_in(
                "ALERT_BASELINE_MIN_CHECKS",
                d.baseline_min_checks,
                1..=100_000,
            )?,
            flap_window: env.duration_or("ALERT_FLAP_WINDOW", d.flap_window)?,
            tls_warn_days: env.int_in("TLS_EXPIRY_WARN_DAYS", d.tls_warn_days, 0..=3650)?,
            tls_critical_days: env.int_in(
                "TLS_EXPIRY_CRITICAL_DAYS",
                d.tls_critical_days,
                0..=3650,
            )?,
        };
        if p.tls_warn_days > 0 && p.tls_critical_days >= p.tls_warn_days {
            return Err(ConfigError::new(
                "TLS_EXPIRY_CRITICAL_DAYS",
                format!(
                    "expected fewer days than TLS_EXPIRY_WARN_DAYS ({}), got `{}`",
                    p.tls_warn_days, p.tls_critical_days
                ),
            ));
        }
        if p.slow_fast_ratio < p.slow_ratio {
            return Err(ConfigError::new(
                "ALERT_SLOW_FAST_RATIO",
                format!(
                    "expected at least ALERT_SLOW_RATIO ({}), got `{}`",
                    p.slow_ratio, p.slow_fast_ratio
                ),
            ));
        }
        Ok(p)
    }

    /// Checks kept in the rolling window: the longest rule's.
    fn window_len(&self) -> usize {
        self.longest_resolve_window()
            .max(self.slow_window as usize)
            .max(self.slow_fast_window as usize)
            .max(self.down_window as usize)
    }

    /// The most checks a slow recovery is judged on, for the noisiest
    /// APIs: two lasting windows.
    fn longest_resolve_window(&self) -> usize {
        (2 * self.slow_window as usize).max(self.slow_resolve_window as usize)
    }
}

/// One check, as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    pub timestamp: DateTime<Utc>,
    /// Response time of a successful check.
    pub response_time_ms: Option<f64>,
    pub success: bool,
    /// The detector's verdict, when the check was anomalous.
    pub severity: Option<Severity>,
    /// `kind: message` of a failed check.
    pub error: Option<&'a str>,
    /// The notAfter of the certificate the check's TLS session presented.
    pub tls_expires_at: Option<DateTime<Utc>>,
}

/// `d` as whole days and hours, e.g. `9 days 23 h`.
fn days_left(d: chrono::Duration) -> String {
    let hours = d.num_hours().max(0);
    match (hours / 24, hours % 24) {
        (0, h) => format!("{h} h"),
        (1, h) => format!("1 day {h} h"),
        (days, h) => format!("{days} days {h} h"),
    }
}

/// The baseline: exponentially weighted mean and variance of
/// log(response time) over healthy checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Mean of ln(ms).
    pub mean: f64,
    /// Variance of ln(ms).
    pub var: f64,
    /// Checks learnt (saturates).
    pub n: u64,
}

impl Baseline {
    fn learn(&mut self, ms: f64, time_constant: u32) {
        let mut x = ms.max(MIN_MS).ln();
        if self.n >= 20 {
            let sd = self.var.sqrt().max(0.01);
            x = x.clamp(self.mean - CLIP_SD * sd, self.mean + CLIP_SD * sd);
        }
        let alpha = (1.0 / (self.n as f64 + 1.0)).max(1.0 / f64::from(time_constant.max(1)));
        let d = x - self.mean;
        self.mean += alpha * d;
        self.var = (1.0 - alpha) * (self.var + alpha * d * d);
        self.n = self.n.saturating_add(1);
    }

    /// The typical response time (the median of a log-normal).
    pub fn median_ms(&self) -> f64 {
        self.mean.exp()
    }

    /// The baseline's 95th percentile.
    pub fn p95_ms(&self) -> f64 {
        (self.mean + 1.645 * self.var.sqrt()).exp()
    }

    /// The smallest median of `n` checks that is a slowdown at `ratio`.
    fn threshold_ms(&self, ratio: f64, n: usize, z: f64, min_ms: f64) -> f64 {
        let noise = z * MEDIAN_SE * self.var.sqrt() / (n.max(1) as f64).sqrt();
        let by_ratio = self.mean + ratio.ln().max(noise);
        by_ratio.exp().max(self.median_ms() + min_ms)
    }
}

/// Checks a slow incident's shift is measured over, in lasting windows: a
/// mean of 80 log response times has a fifth of the noise of one check,
/// small next to the gap between the recovery threshold and a +60% shift.
pub const SHIFT_WINDOWS: u32 = 2;
/// Standard errors of a median between the shift and the recovery
/// threshold: an API too noisy for the resolve window is judged on more
/// checks, up to 2 × `ALERT_SLOW_WINDOW`.
const RECOVERY_Z: f64 = 4.0;

/// A running mean of log(check / baseline) over a slow incident's checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ShiftMeter {
    pub n: u32,
    /// Mean of ln(ms) − the baseline's log mean.
    pub mean: f64,
}

impl ShiftMeter {
    fn add(&mut self, d: f64, sd: f64) {
        // A single 2–4× check among the incident's must not move the
        // estimate much: clip to the API's noise once a few are in.
        let d = if self.n >= 10 {
            d.clamp(self.mean - CLIP_SD * sd, self.mean + CLIP_SD * sd)
        } else {
            d
        };
        self.n += 1;
        self.mean += (d - self.mean) / f64::from(self.n);
    }
}

/// One check in the rolling window.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    timestamp: DateTime<Utc>,
    /// Response time of a successful check; `None` for a failure.
    ms: Option<f64>,
    /// Part of an incident: never learnt by the baseline as it is.
    excluded: bool,
    /// Seen during a slow incident whose shift is measured: learnt divided
    /// by the shift, so that the baseline keeps following the API's daily
    /// cycle while the incident lasts.
    scale: Option<f64>,
}

/// What has been seen during an incident.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Checks since the incident started.
    pub checks: u64,
    pub failures: u64,
    /// Anomalies the detector flagged since it started, by severity.
    pub anomalies_critical: u64,
    pub anomalies_high: u64,
    pub anomalies_medium: u64,
    /// The healthy baseline when it opened (median and p95, ms).
    pub baseline_ms: Option<f64>,
    pub baseline_p95_ms: Option<f64>,
    /// Median of the window that opened it, and the highest window median
    /// since (ms).
    pub median_ms: Option<f64>,
    pub peak_median_ms: Option<f64>,
    /// Slowest single check (ms).
    pub max_ms: Option<f64>,
    /// The last failure's error.
    pub last_error: Option<String>,
    /// Certificate incidents: the notAfter of the latest certificate seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_expires_at: Option<DateTime<Utc>>,
}

impl Evidence {
    fn add(&mut self, c: &Check<'_>) {
        self.checks += 1;
        if !c.success {
            self.failures += 1;
            if let Some(e) = c.error {
                self.last_error = Some(e.chars().take(MAX_ERROR_CHARS).collect());
            }
        }
        match c.severity {
            Some(Severity::Critical) => self.anomalies_critical += 1,
            Some(Severity::High) => self.anomalies_high += 1,
            Some(Severity::Medium) => self.anomalies_medium += 1,
            None => {}
        }
        if let Some(ms) = c.response_time_ms.filter(|_| c.success) {
            self.max_ms = Some(self.max_ms.map_or(ms, |m| m.max(ms)));
        }
    }

    /// Latency against the baseline, in words (slow incidents).
    pub fn latency_summary(&self) -> Option<String> {
        let (base, median) = (self.baseline_ms?, self.median_ms?);
        let peak = self.peak_median_ms.unwrap_or(median);
        Some(format!(
            "median {median:.0} ms against a healthy baseline of {base:.0} ms ({:.1}x; p95 {:.0} ms); worst median {peak:.0} ms",
            median / base.max(MIN_MS),
            self.baseline_p95_ms.unwrap_or(base),
        ))
    }
}

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Open,
    /// Recovered, held for the flap window.
    Resolving,
    Resolved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Resolving => "resolving",
            State::Resolved => "resolved",
        }
    }
}

/// An incident as the rules know it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub kind: Kind,
    pub state: State,
    /// First bad check of the episode.
    pub started_at: DateTime<Utc>,
    /// The check that met the opening rule.
    pub opened_at: DateTime<Utc>,
    /// First check of the current recovery.
    pub recovered_at: Option<DateTime<Utc>>,
    /// When the resolution became final.
    pub resolved_at: Option<DateTime<Utc>>,
    pub severity: Severity,
    /// The rule that opened it, in words.
    pub reason: String,
    pub evidence: Evidence,
    /// Times it re-opened within the flap window.
    pub flaps: u32,
}

/// A change of an incident, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub change: Change,
    /// The incident after the change.
    pub incident: Incident,
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new incident: to be notified.
    Opened,
    /// Its rule no longer holds: held for the flap window.
    Recovering,
    /// It fired again within the flap window: the same incident.
    Reopened,
    /// Final: to be notified.
    Resolved,
    /// Replaced by a more severe incident of its kind (a certificate
    /// warning that became critical): closed without a notification.
    Escalated,
}

/// The rules' state of one API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tracker {
    pub baseline: Baseline,
    /// Checks up to this time do not count for opening (a recovery
    /// started the rules afresh).
    pub clear_before: Option<DateTime<Utc>>,
    /// Checks up to this time belonged to an incident (never learnt).
    pub excluded_until: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub down: Option<Incident>,
    pub slow: Option<Incident>,
    #[serde(default)]
    pub certificate: Option<Incident>,
    /// How many times slower than the baseline the current slow incident
    /// is: the geometric mean of its first [`SHIFT_WINDOWS`] ×
    /// `ALERT_SLOW_WINDOW` checks after it opened, against the baseline.
    #[serde(default)]
    pub slow_shift: Option<f64>,
    /// The shift being measured, until it has enough checks.
    #[serde(default)]
    pub shift_meter: Option<ShiftMeter>,
    /// The latest checks; rebuilt from `api_metrics` after a restart.
    #[serde(skip)]
    window: VecDeque<Entry>,
}

impl Tracker {
    /// The incidents not resolved yet.
    pub fn current(&self) -> impl Iterator<Item = &Incident> {
        self.down
            .iter()
            .chain(self.slow.iter())
            .chain(self.certificate.iter())
    }

    /// An incident about the checks themselves (down or slow) is not
    /// resolved: their checks stay out of the baseline.
    fn in_check_incident(&self) -> bool {
        self.down.is_some() || self.slow.is_some()
    }

    fn slot(&mut self, kind: Kind) -> &mut Option<Incident> {
        match kind {
            Kind::Down => &mut self.down,
            Kind::Slow => &mut self.slow,
            Kind::Certificate => &mut self.certificate,
        }
    }

    /// Feeds a check seen before the saved state (after a restart): it
    /// fills the window and nothing else.
    pub fn warm(&mut self, p: &IncidentPolicy, timestamp: DateTime<Utc>, ms: Option<f64>) {
        let excluded = self.excluded_until.is_some_and(|t| timestamp <= t)
            || [&self.down, &self.slow]
                .into_iter()
                .flatten()
                .any(|i| timestamp >= i.started_at);
        self.window.push_back(Entry {
            timestamp,
            ms,
            excluded,
            scale: None,
        });
        while self.window.len() > p.window_len() {
            self.window.pop_front();
        }
    }

    /// Feeds one check; returns what changed, in order.
    pub fn observe(&mut self, p: &IncidentPolicy, c: &Check<'_>) -> Vec<Transition> {
        let ms = c
            .response_time_ms
            .filter(|v| c.success && v.is_finite() && *v >= 0.0);
        let success = c.success && ms.is_some();
        if success {
            self.consecutive_successes += 1;
            self.consecutive_failures = 0;
        } else {
            self.consecutive_failures += 1;
            self.consecutive_successes = 0;
        }
        let in_incident = self.in_check_incident();
        // `scale` is set by the slow rule, when the check is still slow.
        self.window.push_back(Entry {
            timestamp: c.timestamp,
            ms,
            excluded: in_incident,
            scale: None,
        });
        while self.window.len() > p.window_len() {
            if let Some(old) = self.window.pop_front() {
                self.learn(p, old);
            }
        }
        for inc in [&mut self.down, &mut self.slow].into_iter().flatten() {
            inc.evidence.add(c);
        }
        let mut out = Vec::new();
        self.step_down(p, c, &mut out);
        self.step_slow(p, c, &mut out);
        self.step_certificate(p, c, &mut out);
        out
    }

    /// The certificate rule (see the module's documentation).
    fn step_certificate(&mut self, p: &IncidentPolicy, c: &Check<'_>, out: &mut Vec<Transition>) {
        let Some(expires) = c.tls_expires_at else {
            return;
        };
        let left = expires.signed_duration_since(c.timestamp);
        let within = |days: u32| left <= chrono::Duration::days(i64::from(days));
        let level = if p.tls_warn_days == 0 {
            None
        } else if within(p.tls_critical_days) {
            Some(Severity::Critical)
        } else if within(p.tls_warn_days) {
            Some(Severity::High)
        } else {
            None
        };
        let reason = || {
            if left <= chrono::Duration::zero() {
                format!(
                    "the TLS certificate expired at {}",
                    expires.format("%Y-%m-%d %H:%M UTC")
                )
            } else {
                format!(
                    "the TLS certificate expires at {} ({} left)",
                    expires.format("%Y-%m-%d %H:%M UTC"),
                    days_left(left)
                )
            }
        };
        let opening = match (self.certificate.take(), level) {
            (None, level) => level,
            (Some(mut inc), None) => {
                // Renewed: a certificate valid beyond the warning.
                inc.evidence.tls_expires_at = Some(expires);
                inc.state = State::Resolved;
                inc.recovered_at = Some(c.timestamp);
                inc.resolved_at = Some(c.timestamp);
                inc.reason = format!(
                    "{} (renewed: the certificate now expires at {})",
                    inc.reason,
                    expires.format("%Y-%m-%d %H:%M UTC")
                );
                out.push(Transition {
                    change: Change::Resolved,
                    incident: inc,
                });
                None
            }
            (Some(mut inc), Some(severity)) if severity > inc.severity => {
                // Replaced by the more severe incident opened below.
                inc.state = State::Resolved;
                inc.resolved_at = Some(c.timestamp);
                out.push(Transition {
                    change: Change::Escalated,
                    incident: inc,
                });
                Some(severity)
            }
            (Some(mut inc), Some(_)) => {
                inc.evidence.tls_expires_at = Some(expires);
                self.certificate = Some(inc);
                None
            }
        };
        if let Some(severity) = opening {
            let inc = Incident {
                kind: Kind::Certificate,
                state: State::Open,
                started_at: c.timestamp,
                opened_at: c.timestamp,
                recovered_at: None,
                resolved_at: None,
                severity,
                reason: reason(),
                evidence: Evidence {
                    tls_expires_at: Some(expires),
                    ..Evidence::default()
                },
                flaps: 0,
            };
            out.push(Transition {
                change: Change::Opened,
                incident: inc.clone(),
            });
            self.certificate = Some(inc);
        }
    }

    /// An entry leaving the window enters the baseline when healthy.
    fn learn(&mut self, p: &IncidentPolicy, e: Entry) {
        let Some(ms) = e.ms else { return };
        if let Some(shift) = e.scale {
            self.baseline.learn(ms / shift, p.baseline_checks);
            return;
        }
        if e.excluded || self.excluded_until.is_some_and(|t| e.timestamp <= t) {
            return;
        }
        self.baseline.learn(ms, p.baseline_checks);
    }

    /// The entries that count for opening: the last `n` after the last
    /// recovery. `None` until there are `n` of them.
    fn recent(&self, n: usize) -> Option<impl Iterator<Item = &Entry> + Clone> {
        let fresh = self
            .window
            .iter()
            .rev()
            .take(n)
            .take_while(|e| self.clear_before.is_none_or(|t| e.timestamp > t));
        (fresh.clone().count() >= n).then_some(fresh)
    }

    /// The `k`-th latest entry (1 is the latest), or the oldest one kept
    /// when the window is shorter.
    fn kth_latest(&self, k: usize) -> Option<&Entry> {
        self.window.get(self.window.len().saturating_sub(k.max(1)))
    }

    fn down_rule(&self, p: &IncidentPolicy) -> Option<(DateTime<Utc>, String)> {
        let run = self.consecutive_failures as usize;
        if run >= p.down_after as usize {
            // The run's first failure, if still in the window.
            let first = self.kth_latest(run)?.timestamp;
            let n = self.consecutive_failures;
            return Some((first, format!("{n} consecutive failed checks")));
        }
        let w = p.down_window as usize;
        let recent = self.recent(w)?;
        let failed: Vec<DateTime<Utc>> = recent
            .filter(|e| e.ms.is_none())
            .map(|e| e.timestamp)
            .collect();
        let need = (p.down_ratio * w as f64).ceil().max(1.0) as usize;
        if failed.len() >= need {
            let first = failed.last().copied()?;
            return Some((
                first,
                format!("{} of the last {w} checks failed", failed.len()),
            ));
        }
        None
    }

    fn step_down(&mut self, p: &IncidentPolicy, c: &Check<'_>, out: &mut Vec<Transition>) {
        let fired = self.down_rule(p);
        match self.down.as_ref().map(|i| i.state) {
            None => {
                if let Some((started, reason)) = fired {
                    let mut evidence = Evidence::default();
                    for e in self.window.iter().filter(|e| e.timestamp >= started) {
                        evidence.checks += 1;
                        evidence.failures += u64::from(e.ms.is_none());
                    }
                    evidence.last_error =
                        c.error.map(|e| e.chars().take(MAX_ERROR_CHARS).collect());
                    self.open(
                        Kind::Down,
                        started,
                        c.timestamp,
                        Severity::Critical,
                        reason,
                        evidence,
                        out,
                    );
                }
            }
            Some(State::Open) => {
                if self.consecutive_successes >= p.recover_after {
                    let first_ok = self
                        .kth_latest(self.consecutive_successes as usize)
                        .map_or(c.timestamp, |e| e.timestamp);
                    self.recovering(Kind::Down, first_ok, out);
                }
            }
            Some(State::Resolving) => self.hold(Kind::Down, p, c, fired.is_some(), true, out),
            Some(State::Resolved) => self.down = None,
        }
    }

    /// The median of the successful checks among the last `n` that count,
    /// when at least half of them succeeded.
    fn median_of(&self, n: usize) -> Option<f64> {
        let mut v: Vec<f64> = self.recent(n)?.filter_map(|e| e.ms).collect();
        if v.len() * 2 < n {
            return None;
        }
        Some(crate::model::quantile(&mut v, 0.5))
    }

    /// The slow rule that fires, with its severity and words.
    fn slow_rule(&self, p: &IncidentPolicy) -> Option<(Severity, f64, String, usize, f64)> {
        if self.baseline.n < u64::from(p.baseline_min_checks) {
            return None;
        }
        let b = &self.baseline;
        let fast_n = p.slow_fast_window as usize;
        let slow_n = p.slow_window as usize;
        if let Some(m) = self.median_of(fast_n) {
            let t = b.threshold_ms(p.slow_fast_ratio, fast_n, NOISE_Z_FAST, p.slow_min_ms);
            if m >= t {
                let why = format!(
                    "the median of the last {fast_n} checks went above {:.1}x the baseline",
                    t / b.median_ms()
                );
                return Some((Severity::Critical, m, why, fast_n, t));
            }
        }
        if let Some(m) = self.median_of(slow_n) {
            let t = b.threshold_ms(p.slow_ratio, slow_n, NOISE_Z, p.slow_min_ms);
            if m >= t {
                let why = format!(
                    "the median of the last {slow_n} checks went above {:.1}x the baseline",
                    t / b.median_ms()
                );
                return Some((Severity::High, m, why, slow_n, t));
            }
        }
        None
    }

    fn step_slow(&mut self, p: &IncidentPolicy, c: &Check<'_>, out: &mut Vec<Transition>) {
        let fired = self.slow_rule(p);
        match self.slow.as_ref().map(|i| i.state) {
            None => {
                if let Some((severity, median, reason, n, threshold)) = fired {
                    // The episode starts at the earliest slow check from
                    // which slow checks are at least half of the rest.
                    let mut started = c.timestamp;
                    let (mut slow, mut total) = (0usize, 0usize);
                    let mut evidence = Evidence::default();
                    for e in self.window.iter().rev().take(n) {
                        total += 1;
                        let is_slow = e.ms.is_some_and(|ms| ms >= threshold);
                        slow += usize::from(is_slow);
                        if is_slow && slow * 2 >= total {
                            started = e.timestamp;
                        }
                    }
                    let mut episode = Vec::new();
                    for e in self.window.iter().filter(|e| e.timestamp >= started) {
                        evidence.checks += 1;
                        evidence.failures += u64::from(e.ms.is_none());
                        if let Some(ms) = e.ms {
                            evidence.max_ms = Some(evidence.max_ms.map_or(ms, |m: f64| m.max(ms)));
                            episode.push(ms);
                        }
                    }
                    // The level is that of the episode's own checks, not of
                    // the window that fired (half of which may predate it).
                    let level = if episode.is_empty() {
                        median
                    } else {
                        crate::model::quantile(&mut episode, 0.5)
                    };
                    evidence.baseline_ms = Some(self.baseline.median_ms());
                    evidence.baseline_p95_ms = Some(self.baseline.p95_ms());
                    evidence.median_ms = Some(level);
                    evidence.peak_median_ms = Some(level.max(median));
                    self.open(
                        Kind::Slow,
                        started,
                        c.timestamp,
                        severity,
                        reason,
                        evidence,
                        out,
                    );
                }
            }
            Some(state) => {
                let fast = self.median_of(p.slow_fast_window as usize);
                // Hysteresis: back under the square root of the opening
                // ratio (1.14 for 1.3).
                let threshold = self.baseline.median_ms() * p.slow_ratio.sqrt();
                if state == State::Open {
                    self.measure_shift(p, c);
                    // While the API is still slow, the baseline learns the
                    // check divided by the shift, and so keeps following
                    // the daily cycle. Once the quick window looks healthy
                    // again it learns nothing: a recovery must not teach
                    // it healthy / shift.
                    let still_slow = fast.is_some_and(|m| m >= threshold);
                    if let (Some(shift), true, false) =
                        (self.slow_shift, still_slow, self.down.is_some())
                    {
                        if let Some(e) = self.window.back_mut() {
                            e.scale = Some(shift);
                        }
                    }
                }
                // Peak: the worst fast-window median while it lasts.
                if let (Some(inc), Some(m)) = (self.slow.as_mut(), fast) {
                    inc.evidence.peak_median_ms =
                        Some(inc.evidence.peak_median_ms.map_or(m, |x| x.max(m)));
                    if let Some(base) = inc.evidence.baseline_ms {
                        if m >= base * p.slow_fast_ratio {
                            inc.severity = Severity::Critical;
                        }
                    }
                }
                match state {
                    State::Open => {
                        let n = self.resolve_window(p);
                        // Only checks of this incident's time count: none
                        // before a recovery that started the rules afresh.
                        let healthy = self.median_of(n).is_some_and(|m| m < threshold);
                        if healthy {
                            let first = self
                                .window
                                .iter()
                                .rev()
                                .take(n)
                                .filter(|e| e.ms.is_some_and(|ms| ms >= threshold))
                                .map(|e| e.timestamp)
                                .next()
                                .unwrap_or(c.timestamp);
                            // The recovery begins after the last slow check.
                            let after = self
                                .window
                                .iter()
                                .find(|e| e.timestamp > first)
                                .map_or(c.timestamp, |e| e.timestamp);
                            self.recovering(Kind::Slow, after, out);
                        }
                    }
                    State::Resolving => {
                        // Final only once the rule that matches the
                        // incident's level (the quick one from
                        // `ALERT_SLOW_FAST_RATIO` up, else the lasting one)
                        // has a whole window of checks since the recovery,
                        // and their median is still under the recovery
                        // threshold. A +60% shift that only dipped under it
                        // re-opens as the same incident; a level between
                        // the two thresholds keeps it unresolved.
                        let quick = self
                            .slow_level(p)
                            .is_some_and(|l| l >= p.slow_fast_ratio.ln());
                        let n = if quick {
                            p.slow_fast_window
                        } else {
                            p.slow_window
                        };
                        let settled = self.median_of(n as usize).is_some_and(|m| m < threshold);
                        self.hold(Kind::Slow, p, c, fired.is_some(), settled, out)
                    }
                    State::Resolved => self.slow = None,
                }
            }
        }
    }

    /// Adds an open slow incident's check to its shift's measurement, and
    /// fixes the shift once it has `SHIFT_WINDOWS` lasting windows of
    /// checks after the opening.
    fn measure_shift(&mut self, p: &IncidentPolicy, c: &Check<'_>) {
        let ms = c
            .response_time_ms
            .filter(|v| c.success && v.is_finite() && *v >= 0.0);
        let opened = self.slow.as_ref().map(|i| i.opened_at);
        let (None, Some(ms), Some(opened)) = (self.slow_shift, ms, opened) else {
            return;
        };
        if c.timestamp <= opened {
            return;
        }
        let d = ms.max(MIN_MS).ln() - self.baseline.mean;
        let sd = self.baseline.var.sqrt().max(0.01);
        let meter = self.shift_meter.get_or_insert_with(ShiftMeter::default);
        meter.add(d, sd);
        if meter.n >= SHIFT_WINDOWS * p.slow_window {
            self.slow_shift = Some(meter.mean.exp().max(1.0));
            self.shift_meter = None;
        }
    }

    /// The open slow incident's level against the baseline, as a log
    /// ratio: the measured shift, or while it is being measured, the
    /// meter's mean (once it has a lasting window of checks) or the window
    /// that opened it.
    fn slow_level(&self, p: &IncidentPolicy) -> Option<f64> {
        match (self.slow_shift, &self.shift_meter, &self.slow) {
            (Some(s), _, _) => Some(s.ln()),
            (None, Some(m), _) if m.n >= p.slow_window => Some(m.mean),
            (None, _, Some(inc)) => {
                let (m, b) = (inc.evidence.median_ms?, inc.evidence.baseline_ms?);
                Some((m / b.max(MIN_MS)).max(MIN_MS).ln())
            }
            _ => None,
        }
    }

    /// Checks whose median decides a slow recovery: `ALERT_SLOW_RESOLVE_WINDOW`,
    /// or more, up to 2 × `ALERT_SLOW_WINDOW`, when the API's noise could bring
    /// a median of that many checks from the incident's level down under
    /// the recovery threshold.
    fn resolve_window(&self, p: &IncidentPolicy) -> usize {
        let base = p.slow_resolve_window as usize;
        let longest = p.longest_resolve_window();
        // The incident's level against the baseline: measured, or while
        // being measured, the meter's or the opening window's.
        let Some(level) = self.slow_level(p) else {
            return longest;
        };
        let margin = level - p.slow_ratio.sqrt().ln();
        if margin <= 0.0 {
            return longest;
        }
        let se_one = MEDIAN_SE * self.baseline.var.sqrt();
        let need = (RECOVERY_Z * se_one / margin).powi(2).ceil();
        if need.is_finite() {
            (need as usize).clamp(base, longest)
        } else {
            longest
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        kind: Kind,
        started_at: DateTime<Utc>,
        opened_at: DateTime<Utc>,
        severity: Severity,
        reason: String,
        evidence: Evidence,
        out: &mut Vec<Transition>,
    ) {
        for e in self.window.iter_mut().filter(|e| e.timestamp >= started_at) {
            e.excluded = true;
        }
        let inc = Incident {
            kind,
            state: State::Open,
            started_at,
            opened_at,
            recovered_at: None,
            resolved_at: None,
            severity,
            reason,
            evidence,
            flaps: 0,
        };
        out.push(Transition {
            change: Change::Opened,
            incident: inc.clone(),
        });
        *self.slot(kind) = Some(inc);
    }

    fn recovering(&mut self, kind: Kind, at: DateTime<Utc>, out: &mut Vec<Transition>) {
        // A recovery starts the rules afresh: checks before it no longer
        // count, so the recovery itself cannot re-open the incident.
        let clear = self
            .window
            .iter()
            .rev()
            .find(|e| e.timestamp < at)
            .map_or(at, |e| e.timestamp);
        self.clear_before = Some(clear);
        if let Some(inc) = self.slot(kind).as_mut() {
            inc.state = State::Resolving;
            inc.recovered_at = Some(at);
            out.push(Transition {
                change: Change::Recovering,
                incident: inc.clone(),
            });
        }
    }

    /// A recovered incident in its flap window: re-opened if its rule
    /// fires, resolved for good once the window has passed and its rules
    /// have `settled` (seen enough checks since the recovery to judge).
    fn hold(
        &mut self,
        kind: Kind,
        p: &IncidentPolicy,
        c: &Check<'_>,
        fired: bool,
        settled: bool,
        out: &mut Vec<Transition>,
    ) {
        let flap = chrono::Duration::from_std(p.flap_window).unwrap_or(chrono::Duration::zero());
        let mut end = None;
        if let Some(inc) = self.slot(kind).as_mut() {
            if fired {
                inc.state = State::Open;
                inc.recovered_at = None;
                inc.flaps += 1;
                out.push(Transition {
                    change: Change::Reopened,
                    incident: inc.clone(),
                });
            } else if settled
                && inc
                    .recovered_at
                    .is_none_or(|r| c.timestamp.signed_duration_since(r) >= flap)
            {
                inc.state = State::Resolved;
                inc.resolved_at = Some(c.timestamp);
                out.push(Transition {
                    change: Change::Resolved,
                    incident: inc.clone(),
                });
                end = inc.recovered_at;
            }
        }
        if out.last().is_some_and(|t| t.change == Change::Resolved) {
            *self.slot(kind) = None;
            if kind == Kind::Slow {
                self.slow_shift = None;
                self.shift_meter = None;
            }
            let until = end.unwrap_or(c.timestamp);
            self.excluded_until = Some(self.excluded_until.map_or(until, |t| t.max(until)));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    fn t(i: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(15 * i)
    }

    /// A small deterministic generator (xorshift) for noise.
    struct Noise(u64);
    impl Noise {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        /// Log-normal around `median` with log sd `sigma`.
        fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
            let (u1, u2) = (self.uniform().max(1e-12), self.uniform());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            median * (sigma * z).exp()
        }
    }

    struct Run {
        p: IncidentPolicy,
        tr: Tracker,
        i: i64,
        log: Vec<(i64, Change, Kind)>,
    }

    impl Run {
        fn new() -> Run {
            Run {
                p: IncidentPolicy::default(),
                tr: Tracker::default(),
                i: 0,
                log: Vec::new(),
            }
        }
        fn ok(&mut self, ms: f64) -> Vec<Transition> {
            self.feed(Some(ms), true)
        }
        fn fail(&mut self) -> Vec<Transition> {
            self.feed(None, false)
        }
        fn feed(&mut self, ms: Option<f64>, success: bool) -> Vec<Transition> {
            let c = Check {
                timestamp: t(self.i),
                response_time_ms: ms,
                success,
                severity: None,
                error: (!success).then_some("connect: refused"),
                tls_expires_at: None,
            };
            let out = self.tr.observe(&self.p, &c);
            for tr in &out {
                self.log.push((self.i, tr.change, tr.incident.kind));
            }
            self.i += 1;
            out
        }
        fn healthy(&mut self, n: usize, noise: &mut Noise) {
            for _ in 0..n {
                let ms = noise.lognormal(100.0, 0.2);
                self.ok(ms);
            }
        }
        fn opened(&self, kind: Kind) -> Vec<i64> {
            self.log
                .iter()
                .filter(|(_, c, k)| *c == Change::Opened && *k == kind)
                .map(|(i, _, _)| *i)
                .collect()
        }
        fn resolved(&self, kind: Kind) -> Vec<i64> {
            self.log
                .iter()
                .filter(|(_, c, k)| *c == Change::Resolved && *k == kind)
                .map(|(i, _, _)| *i)
                .collect()
        }
    }

    #[test]
    fn down_opens_at_the_consecutive_failure_rule_and_names_the_first_failure() {
        let mut r = Run::new();
        let mut n = Noise(7);
        r.healthy(20, &mut n);
        assert!(r.fail().is_empty(), "one failure is not an incident");
        let out = r.fail();
        assert_eq!(out.len(), 1);
        let inc = &out[0].incident;
        assert_eq!((out[0].change, inc.kind), (Change::Opened, Kind::Down));
        assert_eq!(inc.started_at, t(20), "since the first failed check");
        assert_eq!(inc.opened_at, t(21));
        assert_eq!(inc.evidence.failures, 2);
        assert_eq!(inc.evidence.last_error.as_deref(), Some("connect: refused"));
        assert_eq!(inc.reason, "2 consecutive failed checks");
    }

    #[test]
    fn a_flapping_endpoint_opens_down_by_the_failure_ratio() {
        let mut r = Run::new();
        let mut n = Noise(8);
        r.healthy(20, &mut n);
        for _ in 0..10 {
            r.ok(100.0);
            r.fail();
        }
        let opened = r.opened(Kind::Down);
        assert_eq!(opened.len(), 1, "{:?}", r.log);
        // 5 failures of the last 10 checks: at the 5th failure.
        assert_eq!(opened[0], 29);
        // Alternating never gives 3 successes in a row: never recovers.
        assert!(r.tr.down.as_ref().is_some_and(|i| i.state == State::Open));
    }

    #[test]
    fn down_recovers_after_healthy_checks_and_resolves_after_the_flap_window() {
        let mut r = Run::new();
        let mut n = Noise(9);
        r.healthy(20, &mut n);
        for _ in 0..8 {
            r.fail();
        }
        r.ok(100.0);
        r.ok(100.0);
        let out = r.ok(100.0);
        assert_eq!(out[0].change, Change::Recovering);
        assert_eq!(
            out[0].incident.recovered_at,
            Some(t(28)),
            "first good check"
        );
        // Held 5 minutes (20 checks at 15 s), then resolved once.
        r.healthy(25, &mut n);
        assert_eq!(r.resolved(Kind::Down), vec![48]);
        assert_eq!(r.opened(Kind::Down).len(), 1);
        assert!(r.tr.down.is_none());
    }

    #[test]
    fn a_flap_within_the_window_is_the_same_incident() {
        let mut r = Run::new();
        let mut n = Noise(10);
        r.healthy(20, &mut n);
        for round in 0..4 {
            for _ in 0..4 {
                r.fail();
            }
            r.healthy(6 + round, &mut n);
        }
        assert_eq!(r.opened(Kind::Down).len(), 1, "{:?}", r.log);
        let inc = r.tr.down.clone().unwrap();
        assert_eq!(inc.flaps, 3);
        r.healthy(30, &mut n);
        assert_eq!(r.resolved(Kind::Down).len(), 1);
        // After the flap window it is a new incident.
        r.fail();
        r.fail();
        assert_eq!(r.opened(Kind::Down).len(), 2);
    }

    #[test]
    fn a_single_check_however_slow_never_opens_an_incident() {
        let mut r = Run::new();
        let mut n = Noise(11);
        r.healthy(300, &mut n);
        for _ in 0..20 {
            r.ok(100_000.0);
            r.healthy(30, &mut n);
        }
        assert!(r.log.is_empty(), "{:?}", r.log);
    }

    #[test]
    fn a_threefold_slowdown_opens_critical_within_two_minutes_and_resolves() {
        let mut r = Run::new();
        let mut n = Noise(12);
        r.healthy(300, &mut n);
        let start = r.i;
        for _ in 0..80 {
            let ms = 3.0 * n.lognormal(100.0, 0.2);
            r.ok(ms);
        }
        let opened = r.opened(Kind::Slow);
        assert_eq!(opened.len(), 1, "{:?}", r.log);
        assert!(
            opened[0] - start <= 7,
            "opened {} checks in",
            opened[0] - start
        );
        let inc = r.tr.slow.clone().unwrap();
        assert_eq!(inc.severity, Severity::Critical);
        assert!(
            (inc.started_at - t(start)).num_seconds().abs() <= 30,
            "since {} for a start at {}",
            inc.started_at,
            t(start)
        );
        let summary = inc.evidence.latency_summary().unwrap();
        assert!(summary.contains("baseline of"), "{summary}");
        let base = inc.evidence.baseline_ms.unwrap();
        assert!(
            (80.0..125.0).contains(&base),
            "baseline {base} for a 100 ms API"
        );
        r.healthy(60, &mut n);
        assert_eq!(r.resolved(Kind::Slow).len(), 1, "{:?}", r.log);
        assert_eq!(r.opened(Kind::Slow).len(), 1);
    }

    #[test]
    fn a_permanent_sixty_percent_shift_opens_high_within_thirty_minutes() {
        let mut r = Run::new();
        let mut n = Noise(13);
        r.healthy(600, &mut n);
        let start = r.i;
        for _ in 0..400 {
            let ms = 1.6 * n.lognormal(100.0, 0.2);
            r.ok(ms);
        }
        let opened = r.opened(Kind::Slow);
        assert_eq!(opened.len(), 1, "{:?}", r.log);
        assert!(
            opened[0] - start <= 120,
            "opened {} checks in",
            opened[0] - start
        );
        // It stays open: the baseline does not learn the incident's checks.
        assert!(r.tr.slow.as_ref().is_some_and(|i| i.state == State::Open));
        assert!(r.tr.baseline.median_ms() < 125.0, "{:?}", r.tr.baseline);
    }

    #[test]
    fn a_slowdown_after_an_earlier_incident_is_paged_as_fast() {
        let mut r = Run::new();
        let mut n = Noise(14);
        r.healthy(300, &mut n);
        for _ in 0..40 {
            let ms = 5.0 * n.lognormal(100.0, 0.2);
            r.ok(ms);
        }
        r.healthy(60, &mut n);
        assert_eq!(r.resolved(Kind::Slow).len(), 1, "{:?}", r.log);
        r.healthy(12, &mut n);
        let start = r.i;
        for _ in 0..40 {
            let ms = 3.0 * n.lognormal(100.0, 0.2);
            r.ok(ms);
        }
        let opened = r.opened(Kind::Slow);
        assert_eq!(opened.len(), 2, "{:?}", r.log);
        assert!(
            opened[1] - start <= 7,
            "second opened {} checks in",
            opened[1] - start
        );
    }

    #[test]
    fn a_slowdown_minutes_after_a_single_huge_spike_is_paged_as_fast() {
        let mut r = Run::new();
        let mut n = Noise(16);
        r.healthy(300, &mut n);
        r.ok(1000.0);
        r.healthy(16, &mut n);
        let start = r.i;
        for _ in 0..40 {
            let ms = 3.0 * n.lognormal(100.0, 0.2);
            r.ok(ms);
        }
        let opened = r.opened(Kind::Slow);
        assert_eq!(opened.len(), 1, "{:?}", r.log);
        assert!(
            opened[0] - start <= 7,
            "opened {} checks in",
            opened[0] - start
        );
    }

    /// A healthy check of a noisy API with a daily cycle (25%), `factor`
    /// times slower.
    fn cyclic(n: &mut Noise, i: i64, sigma: f64, factor: f64) -> f64 {
        let day = (i as f64) / 5760.0;
        let typical = 100.0 * (1.0 + 0.25 * (std::f64::consts::TAU * day + 1.0).sin());
        factor * n.lognormal(typical, sigma)
    }

    #[test]
    fn a_permanent_shift_on_a_noisy_cycling_api_stays_one_open_incident_for_a_day() {
        // Noisy APIs (sigma 0.33) with a daily cycle: the shift must be
        // measured well enough that a 16-check median dipping under the
        // recovery threshold does not resolve it, and the baseline must
        // keep following the cycle without absorbing the shift.
        for seed in [21, 22, 23, 24] {
            let mut r = Run::new();
            let mut n = Noise(seed);
            for _ in 0..5760 {
                let ms = cyclic(&mut n, r.i, 0.33, 1.0);
                r.ok(ms);
            }
            let healthy_opens = r.opened(Kind::Slow).len();
            let start = r.i;
            for _ in 0..5760 {
                let ms = cyclic(&mut n, r.i, 0.33, 1.6);
                r.ok(ms);
            }
            let opened: Vec<i64> = r
                .opened(Kind::Slow)
                .into_iter()
                .filter(|i| *i >= start)
                .collect();
            assert_eq!(healthy_opens, 0, "seed {seed}: {:?}", r.log);
            assert_eq!(opened.len(), 1, "seed {seed}: {:?}", r.log);
            assert!(opened[0] - start <= 120, "seed {seed}: {opened:?}");
            assert!(
                r.resolved(Kind::Slow).is_empty(),
                "seed {seed}: resolved while still 60% slower: {:?}",
                r.log
            );
            let shift = r.tr.slow_shift.unwrap();
            assert!((1.4..1.85).contains(&shift), "seed {seed}: shift {shift}");
        }
    }

    #[test]
    fn a_slow_recovery_that_was_only_a_dip_reopens_the_same_incident() {
        let mut r = Run::new();
        let mut n = Noise(25);
        r.healthy(600, &mut n);
        for _ in 0..200 {
            let ms = 1.6 * n.lognormal(100.0, 0.2);
            r.ok(ms);
        }
        assert_eq!(r.opened(Kind::Slow).len(), 1, "{:?}", r.log);
        // Fourteen healthy checks: the 16-check median recovers...
        r.healthy(14, &mut n);
        assert!(
            r.log.iter().any(|(_, c, _)| *c == Change::Recovering),
            "{:?}",
            r.log
        );
        // ...but the shift is still there: the lasting rule fires again on
        // the checks after the recovery, longer after it than the flap
        // window (20 checks), and that is the same incident.
        for _ in 0..120 {
            let ms = 1.6 * n.lognormal(100.0, 0.2);
            r.ok(ms);
        }
        assert_eq!(r.opened(Kind::Slow).len(), 1, "{:?}", r.log);
        assert!(r.resolved(Kind::Slow).is_empty(), "{:?}", r.log);
        let inc = r.tr.slow.as_ref().unwrap();
        assert_eq!((inc.state, inc.flaps), (State::Open, 1), "{:?}", r.log);
    }

    #[test]
    fn a_finished_slowdown_resolves_even_when_judged_on_long_windows() {
        // A noisy API judged on 40-check windows: the healthy checks after
        // the slowdown must not teach the baseline "healthy / shift", which
        // would lock the incident open.
        let mut r = Run::new();
        r.p.slow_resolve_window = 40;
        let mut n = Noise(26);
        for _ in 0..1200 {
            let ms = n.lognormal(100.0, 0.33);
            r.ok(ms);
        }
        for _ in 0..120 {
            let ms = 3.0 * n.lognormal(100.0, 0.33);
            r.ok(ms);
        }
        assert_eq!(r.opened(Kind::Slow).len(), 1, "{:?}", r.log);
        assert!(r.tr.slow_shift.is_some(), "the shift is measured by now");
        for _ in 0..240 {
            let ms = n.lognormal(100.0, 0.33);
            r.ok(ms);
        }
        assert_eq!(r.resolved(Kind::Slow).len(), 1, "{:?}", r.log);
        let b = r.tr.baseline.median_ms();
        assert!((85.0..118.0).contains(&b), "baseline {b} for a 100 ms API");
    }

    #[test]
    fn an_incidents_facts_come_from_its_own_episode_and_the_healthy_baseline() {
        // A 22 ms API: one unrelated 10x check, then five minutes later a
        // sustained 10x slowdown. "Since" must be the slowdown's first
        // check, not the earlier spike, and "usual" the healthy 22 ms,
        // not a window that already holds slow checks.
        let mut r = Run::new();
        let mut n = Noise(27);
        for _ in 0..600 {
            let ms = n.lognormal(22.0, 0.1);
            r.ok(ms);
        }
        let spike = r.i;
        r.ok(220.0);
        for _ in 0..20 {
            let ms = n.lognormal(22.0, 0.1);
            r.ok(ms);
        }
        let start = r.i;
        for _ in 0..20 {
            let ms = 10.0 * n.lognormal(22.0, 0.1);
            r.ok(ms);
        }
        let inc = r.tr.slow.clone().unwrap();
        assert_eq!(
            inc.started_at,
            t(start),
            "since the slowdown, not the spike at {}",
            t(spike)
        );
        let base = inc.evidence.baseline_ms.unwrap();
        assert!(
            (20.0..24.0).contains(&base),
            "usual {base} ms for a 22 ms API"
        );
        let ratio = inc.evidence.median_ms.unwrap() / base;
        assert!((8.0..12.5).contains(&ratio), "{ratio}x for a 10x slowdown");
        let words = inc.evidence.latency_summary().unwrap();
        assert!(
            words.contains("against a healthy baseline of 22 ms"),
            "{words}"
        );
    }

    #[test]
    fn a_slow_incident_needs_the_level_well_back_to_recover() {
        let mut r = Run::new();
        let mut n = Noise(17);
        r.healthy(600, &mut n);
        for _ in 0..80 {
            let ms = 1.6 * n.lognormal(100.0, 0.2);
            r.ok(ms);
        }
        assert_eq!(r.opened(Kind::Slow).len(), 1, "{:?}", r.log);
        // Down to +45%: not a recovery (the level must come back under
        // the square root of the opening ratio, 1.14).
        for _ in 0..200 {
            let ms = 1.45 * n.lognormal(100.0, 0.2);
            r.ok(ms);
        }
        assert!(
            r.resolved(Kind::Slow).is_empty() && r.tr.slow.is_some(),
            "still open at +45%: {:?}",
            r.log
        );
        r.healthy(60, &mut n);
        assert_eq!(r.resolved(Kind::Slow).len(), 1, "{:?}", r.log);
        assert_eq!(r.opened(Kind::Slow).len(), 1);
    }

    #[test]
    fn warm_state_round_trips_through_json() {
        let mut r = Run::new();
        let mut n = Noise(15);
        r.healthy(300, &mut n);
        r.fail();
        r.fail();
        let saved = serde_json::to_string(&r.tr).unwrap();
        let mut back: Tracker = serde_json::from_str(&saved).unwrap();
        assert!(back.down.is_some());
        assert_eq!(back.baseline, r.tr.baseline);
        for e in r.tr.window.iter() {
            back.warm(&r.p, e.timestamp, e.ms);
        }
        assert_eq!(back.window.len(), r.tr.window.len());
        // The two go on identically.
        for _ in 0..30 {
            let c = Check {
                timestamp: t(r.i),
                response_time_ms: Some(100.0),
                success: true,
                severity: None,
                error: None,
                tls_expires_at: None,
            };
            r.i += 1;
            assert_eq!(back.observe(&r.p, &c), r.tr.observe(&r.p, &c));
        }
    }

    #[test]
    fn policy_reads_and_validates_its_variables() {
        let p = IncidentPolicy::from_env(&Env::default()).unwrap();
        assert_eq!(p, IncidentPolicy::default());
        let env = Env::from_pairs([("ALERT_DOWN_AFTER", "3"), ("ALERT_FLAP_WINDOW", "10m")]);
        let p = IncidentPolicy::from_env(&env).unwrap();
        assert_eq!((p.down_after, p.flap_window.as_secs()), (3, 600));
        for (k, v) in [
            ("ALERT_DOWN_AFTER", "0"),
            ("ALERT_DOWN_RATIO", "2"),
            ("ALERT_SLOW_RATIO", "0.5"),
            ("ALERT_SLOW_FAST_RATIO", "1.1"),
            ("ALERT_FLAP_WINDOW", "soon"),
        ] {
            let err = IncidentPolicy::from_env(&Env::from_pairs([(k, v)])).unwrap_err();
            assert_eq!(err.key, k, "{v}");
        }
    }

    #[test]
    fn a_certificate_warns_then_turns_critical_once_and_resolves_when_renewed() {
        let p = IncidentPolicy::default();
        let day0 = t(0);
        let at = |hours: i64| day0 + chrono::Duration::hours(hours);
        let check = |hours: i64, expires: Option<DateTime<Utc>>| Check {
            timestamp: at(hours),
            response_time_ms: expires.map(|_| 80.0),
            success: expires.is_some(),
            severity: None,
            error: expires.is_none().then_some("connect: refused"),
            tls_expires_at: expires,
        };
        let expires = at(20 * 24);
        let mut tr = Tracker::default();
        let mut log = Vec::new();
        type Log = Vec<(i64, Change, Kind, Severity)>;
        let feed = |tr: &mut Tracker, log: &mut Log, hours: i64, e: Option<DateTime<Utc>>| {
            for x in tr.observe(&p, &check(hours, e)) {
                log.push((hours, x.change, x.incident.kind, x.incident.severity));
            }
        };
        // 20 days left, then 14 days and one hour: nothing.
        feed(&mut tr, &mut log, 0, Some(expires));
        feed(&mut tr, &mut log, 6 * 24 - 1, Some(expires));
        assert!(log.is_empty(), "{log:?}");
        // 14 days left: a warning, once, whatever comes next.
        feed(&mut tr, &mut log, 6 * 24, Some(expires));
        let opened = tr.certificate.clone().unwrap();
        assert_eq!(opened.severity, Severity::High);
        assert!(
            opened.reason.contains("(14 days 0 h left)"),
            "{}",
            opened.reason
        );
        for h in (6 * 24 + 1..17 * 24).step_by(5) {
            feed(&mut tr, &mut log, h, Some(expires));
        }
        // Failed checks carry no certificate: they change nothing here.
        feed(&mut tr, &mut log, 17 * 24 - 1, None);
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(!tr.in_check_incident() || tr.down.is_some());
        // 3 days left: the warning is replaced by a critical incident.
        feed(&mut tr, &mut log, 17 * 24, Some(expires));
        feed(&mut tr, &mut log, 18 * 24, Some(expires));
        // Renewed: resolved at once.
        feed(&mut tr, &mut log, 19 * 24, Some(at(110 * 24)));
        feed(&mut tr, &mut log, 20 * 24, Some(at(110 * 24)));
        let kinds: Vec<_> = log.iter().filter(|x| x.2 == Kind::Certificate).collect();
        assert_eq!(
            kinds.iter().map(|x| (x.0, x.1, x.3)).collect::<Vec<_>>(),
            vec![
                (6 * 24, Change::Opened, Severity::High),
                (17 * 24, Change::Escalated, Severity::High),
                (17 * 24, Change::Opened, Severity::Critical),
                (19 * 24, Change::Resolved, Severity::Critical),
            ]
        );
        assert!(tr.certificate.is_none());
        // The checks' own incidents and baseline are not touched: a
        // certificate incident does not keep checks out of the baseline.
        let mut quiet = Tracker::default();
        for h in 0..400 {
            quiet.observe(&p, &check(6 * 24 + h, Some(expires)));
        }
        assert!(quiet.certificate.is_some() && quiet.down.is_none() && quiet.slow.is_none());
        assert!(quiet.baseline.n > 0, "{:?}", quiet.baseline);
        // It survives a restart (the saved state).
        let back: Tracker = serde_json::from_value(serde_json::to_value(&quiet).unwrap()).unwrap();
        assert_eq!(back.certificate, quiet.certificate);
        // TLS_EXPIRY_WARN_DAYS = 0: never.
        let off = IncidentPolicy {
            tls_warn_days: 0,
            ..IncidentPolicy::default()
        };
        let mut tr = Tracker::default();
        assert!(tr
            .observe(&off, &check(19 * 24 + 23, Some(expires)))
            .is_empty());
    }

    #[test]
    fn an_expired_certificate_is_critical_at_once_and_says_so() {
        let p = IncidentPolicy::default();
        let mut tr = Tracker::default();
        let c = Check {
            timestamp: t(0),
            response_time_ms: Some(50.0),
            success: true,
            severity: None,
            error: None,
            tls_expires_at: Some(t(0) - chrono::Duration::hours(1)),
        };
        let out = tr.observe(&p, &c);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].incident.severity, Severity::Critical);
        assert!(out[0]
            .incident
            .reason
            .starts_with("the TLS certificate expired at"));
    }
}
