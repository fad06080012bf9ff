//! Feature engineering: turns one API's checks, in time order, into the
//! eight numbers its Isolation Forest scores. Pure functions, no I/O.
//!
//! The streaming path ([`FeatureState::push`], used by the detector as rows
//! arrive) and the batch path ([`compute_series`], used for training and
//! replay) are the same code, so a model trained on replayed history sees
//! exactly the features it will be asked to score live.
//!
//! # Features
//!
//! Per API, over its *successful* observations in the order given (the
//! caller feeds them in time order; the order is not checked):
//!
//! | name             | definition                                                     |
//! |------------------|----------------------------------------------------------------|
//! | `rt`             | response time in ms                                            |
//! | `rolling_mean`   | mean of the last 10 rt, the current one included               |
//! | `rolling_std`    | sample standard deviation (ddof = 1) of the last 10 rt         |
//! | `z_score`        | `(rt - mean_60) / std_60` over the last 60 rt (current included, ddof = 1) |
//! | `pct_deviation`  | `(rt - mean_10) / abs(mean_10) * 100`                          |
//! | `rate_of_change` | `(rt_t - rt_{t-1}) / abs(rt_{t-1})`, `rt_{t-1}` the previous success |
//! | `hour`           | hour of the timestamp in UTC, 0-23                             |
//! | `weekday`        | day of the week in UTC, Monday = 0 .. Sunday = 6 (pandas `dayofweek`) |
//!
//! # Edge rules
//!
//! - **First rows.** A window holds the points available so far: on the
//!   first row `rolling_mean` is `rt` itself; with fewer than 2 points a
//!   standard deviation is 0 (pandas would give NaN).
//! - **Equal values.** A window whose values are all equal has a standard
//!   deviation of exactly 0 and a mean of exactly that value (no rounding
//!   residue such as `1e-17`).
//! - **Zero standard deviation**: `z_score` is 0.
//! - **Zero mean** (all of the last 10 rt are 0): `pct_deviation` is 0.
//! - **Zero or missing previous rt** (the first success, or a previous rt
//!   of 0): `rate_of_change` is 0.
//! - **Time gaps.** Windows count observations, not time: a gap between two
//!   checks (the pinger was down, the API was paused) does not reset the
//!   baseline. Only `hour` and `weekday` depend on the timestamp.
//! - **Never non-finite.** A usable rt is finite and in
//!   `0..=`[`MAX_RESPONSE_TIME_MS`], which keeps every sum and square far
//!   from overflow and bounds `z_score` (Samuelson: `|z| <= 59/sqrt(60)`)
//!   and `pct_deviation` (-100 ..= 900). As a last resort any feature that
//!   would still be non-finite (only `rate_of_change` after a denormal
//!   previous rt such as `1e-310` ms) is 0.
//!
//! # Failures
//!
//! A failed check (`success = false`, with `rt = None` for a timeout or a
//! connection error, or `Some` for an unexpected HTTP status) does **not**
//! enter the rt windows, so the baseline stays the API's healthy behaviour,
//! and the next success's `rate_of_change` compares with the last success.
//! A "success" without a usable rt (`None`, NaN, infinite, negative or above
//! [`MAX_RESPONSE_TIME_MS`]: data from outside can be anything) is treated
//! as a failure too.
//!
//! Replaying a CSV of another metric ([`ValueDomain::AnyValue`]) takes
//! negative values as values (`|v| <=` [`MAX_RESPONSE_TIME_MS`]); the `abs`
//! in `pct_deviation` and `rate_of_change` keeps their sign meaning "above
//! the reference" there, and changes nothing for response times.
//!
//! A failure is not scored by the forest but by [`failure_score`] of the
//! number of consecutive failures so far (the state counts them; a success
//! resets the count to 0). Scores follow scikit-learn's `decision_function`
//! convention (below 0 is anomalous, lower is worse; severities: critical
//! `< -0.2`, high `< -0.1`, medium `< 0`):
//!
//! | consecutive failures `n` | score                              | severity |
//! |--------------------------|------------------------------------|----------|
//! | 1                        | -0.15                              | high: one blip is worth noting, not paging |
//! | 2 and more               | `-0.25 - 0.05 * min(n - 2, 10)`    | critical, deepening to -0.75 at `n >= 12` |

use std::collections::VecDeque;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// How many features there are.
pub const N_FEATURES: usize = 8;

/// Feature names, in the order of [`Features::to_array`] (and of the fields
/// of [`Features`], hence of its JSON form).
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    "rt",
    "rolling_mean",
    "rolling_std",
    "z_score",
    "pct_deviation",
    "rate_of_change",
    "hour",
    "weekday",
];

/// Observations in the window of `rolling_mean`, `rolling_std` and
/// `pct_deviation`.
pub const SHORT_WINDOW: usize = 10;

/// Observations in the window of `z_score`; also how many successful rt a
/// [`FeatureState`] keeps.
pub const LONG_WINDOW: usize = 60;

/// The largest response time taken as a measurement (1e9 ms, about 11.6
/// days, far beyond any check's timeout). Anything above is treated as a
/// failure; the bound keeps the arithmetic far from overflow.
pub const MAX_RESPONSE_TIME_MS: f64 = 1e9;

/// The features of one successful observation. See the module doc for the
/// definitions and edge rules.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Response time in ms: the raw signal.
    pub rt: f64,
    /// Mean of the last 10 rt: the short-term level.
    pub rolling_mean: f64,
    /// Sample standard deviation of the last 10 rt: short-term jitter.
    pub rolling_std: f64,
    /// How unusual rt is against the last 60 rt, in standard deviations.
    pub z_score: f64,
    /// How far rt is from the short-term level, in percent.
    pub pct_deviation: f64,
    /// Relative jump from the previous successful rt.
    pub rate_of_change: f64,
    /// Hour in UTC (0-23): daily seasonality.
    pub hour: f64,
    /// Day of the week in UTC, Monday = 0: weekly seasonality.
    pub weekday: f64,
}

impl Features {
    /// The values in the order of [`FEATURE_NAMES`], as the model takes them.
    pub fn to_array(&self) -> [f64; N_FEATURES] {
        [
            self.rt,
            self.rolling_mean,
            self.rolling_std,
            self.z_score,
            self.pct_deviation,
            self.rate_of_change,
            self.hour,
            self.weekday,
        ]
    }

    /// The inverse of [`Features::to_array`].
    pub fn from_array(a: [f64; N_FEATURES]) -> Features {
        let [rt, rolling_mean, rolling_std, z_score, pct_deviation, rate_of_change, hour, weekday] =
            a;
        Features {
            rt,
            rolling_mean,
            rolling_std,
            z_score,
            pct_deviation,
            rate_of_change,
            hour,
            weekday,
        }
    }

    /// `(name, value)` pairs in the order of [`FEATURE_NAMES`], e.g. to
    /// build a JSON object (`serde_json::Map`) or a log line.
    pub fn named(&self) -> [(&'static str, f64); N_FEATURES] {
        let v = self.to_array();
        std::array::from_fn(|i| (FEATURE_NAMES[i], v[i]))
    }
}

/// What one observation turned into.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observed {
    /// A success: score these features with the forest.
    Scored(Features),
    /// A failure (or a success without a usable rt): scored by rule.
    Failed {
        /// Consecutive failures so far, this one included (>= 1).
        consecutive: u32,
        /// [`failure_score`]`(consecutive)`.
        score: f64,
    },
}

impl Observed {
    /// The features, if this observation is to be scored by the forest.
    pub fn features(&self) -> Option<&Features> {
        match self {
            Observed::Scored(f) => Some(f),
            Observed::Failed { .. } => None,
        }
    }
}

/// The score of a failure, in the `decision_function` convention (below 0
/// is anomalous, lower is worse): -0.15 for the 1st consecutive failure
/// (high), `-0.25 - 0.05 * min(n - 2, 10)` from the 2nd on (critical,
/// down to -0.75). `0` (no failure) scores 0.0, the normal boundary.
pub fn failure_score(consecutive_failures: u32) -> f64 {
    match consecutive_failures {
        0 => 0.0,
        1 => -0.15,
        n => -0.25 - 0.05 * f64::from((n - 2).min(10)),
    }
}

/// The rolling state of one API: its last [`LONG_WINDOW`] successful rt and
/// its current run of failures. Memory is bounded; every push recomputes the
/// statistics from the window (O(60), exact, no drifting running sums).
#[derive(Debug, Clone, Default)]
pub struct FeatureState {
    /// The last successful rt, oldest first, at most [`LONG_WINDOW`]: the
    /// API's healthy baseline.
    window: VecDeque<f64>,
    /// Failures since the last success.
    consecutive_failures: u32,
    /// What counts as a measurement.
    domain: ValueDomain,
}

/// Which values are measurements; anything else is a failed check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ValueDomain {
    /// Response times: finite, `0..=`[`MAX_RESPONSE_TIME_MS`]. A negative
    /// response time is broken data, scored as a failure.
    #[default]
    ResponseTime,
    /// Any metric (replaying a CSV of CPU, counts, temperatures...):
    /// finite, `|v| <=` [`MAX_RESPONSE_TIME_MS`]; negative values are
    /// values.
    AnyValue,
}

impl FeatureState {
    /// A state with no history, for response times.
    pub fn new() -> FeatureState {
        FeatureState::with_domain(ValueDomain::ResponseTime)
    }

    /// A state with no history, for values of `domain`.
    pub fn with_domain(domain: ValueDomain) -> FeatureState {
        FeatureState {
            window: VecDeque::with_capacity(LONG_WINDOW),
            consecutive_failures: 0,
            domain,
        }
    }

    /// Takes the next observation of the API (in time order) and returns
    /// its features, or its failure score.
    pub fn push(
        &mut self,
        timestamp: DateTime<Utc>,
        response_time_ms: Option<f64>,
        success: bool,
    ) -> Observed {
        let Some(rt) = usable_rt(response_time_ms, success, self.domain) else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            return Observed::Failed {
                consecutive: self.consecutive_failures,
                score: failure_score(self.consecutive_failures),
            };
        };
        self.consecutive_failures = 0;

        let previous = self.window.back().copied();
        if self.window.len() == LONG_WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(rt);

        let (mean_60, std_60) = mean_std(self.window.iter().copied());
        let short_start = self.window.len().saturating_sub(SHORT_WINDOW);
        let (mean_10, std_10) = mean_std(self.window.range(short_start..).copied());

        let z_score = if std_60 > 0.0 {
            (rt - mean_60) / std_60
        } else {
            0.0
        };
        let pct_deviation = if mean_10 != 0.0 {
            (rt - mean_10) / mean_10.abs() * 100.0
        } else {
            0.0
        };
        let rate_of_change = match previous {
            Some(p) if p != 0.0 => (rt - p) / p.abs(),
            _ => 0.0,
        };

        Observed::Scored(Features {
            rt,
            rolling_mean: finite_or_zero(mean_10),
            rolling_std: finite_or_zero(std_10),
            z_score: finite_or_zero(z_score),
            pct_deviation: finite_or_zero(pct_deviation),
            rate_of_change: finite_or_zero(rate_of_change),
            hour: f64::from(timestamp.hour()),
            weekday: f64::from(timestamp.weekday().num_days_from_monday()),
        })
    }

    /// How many successful rt the state holds (at most [`LONG_WINDOW`]).
    pub fn len(&self) -> usize {
        self.window.len()
    }

    /// Whether the state holds no successful rt yet.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// Whether every window is full, i.e. the features no longer depend on
    /// how short the history is.
    pub fn is_warm(&self) -> bool {
        self.window.len() == LONG_WINDOW
    }

    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }
}

/// The features of a whole series of one API, in the order given: the
/// batch path (training, replay). Equal to pushing each observation into a
/// fresh [`FeatureState`].
pub fn compute_series(
    obs: impl IntoIterator<Item = (DateTime<Utc>, Option<f64>, bool)>,
) -> Vec<Observed> {
    let mut state = FeatureState::new();
    obs.into_iter()
        .map(|(timestamp, rt, success)| state.push(timestamp, rt, success))
        .collect()
}

/// The rt of an observation if it counts as a success with a measurement.
fn usable_rt(response_time_ms: Option<f64>, success: bool, domain: ValueDomain) -> Option<f64> {
    let low = match domain {
        ValueDomain::ResponseTime => 0.0,
        ValueDomain::AnyValue => -MAX_RESPONSE_TIME_MS,
    };
    response_time_ms.filter(|rt| success && (low..=MAX_RESPONSE_TIME_MS).contains(rt))
}

/// Mean and sample standard deviation (ddof = 1) of a non-empty window;
/// the standard deviation is 0 below 2 points or when all values are equal.
fn mean_std<I>(values: I) -> (f64, f64)
where
    I: Iterator<Item = f64> + Clone,
{
    let (mut n, mut sum) = (0usize, 0.0);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.clone() {
        n += 1;
        sum += v;
        min = min.min(v);
        max = max.max(v);
    }
    if n == 0 {
        return (0.0, 0.0);
    }
    if min == max {
        return (min, 0.0);
    }
    let mean = sum / n as f64;
    let squares: f64 = values.map(|v| (v - mean) * (v - mean)).sum();
    (mean, (squares / (n - 1) as f64).sqrt())
}

fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    /// Monday 2024-01-01 00:00:00 UTC.
    fn monday() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
    }

    /// Successes at `rt`, one minute apart from [`monday`].
    fn successes(rts: &[f64]) -> Vec<(DateTime<Utc>, Option<f64>, bool)> {
        rts.iter()
            .enumerate()
            .map(|(i, &rt)| (monday() + Duration::minutes(i as i64), Some(rt), true))
            .collect()
    }

    fn scored(o: &Observed) -> Features {
        match o {
            Observed::Scored(f) => *f,
            Observed::Failed { .. } => panic!("expected features, got {o:?}"),
        }
    }

    fn last_features(rts: &[f64]) -> Features {
        let out = compute_series(successes(rts));
        scored(out.last().unwrap())
    }

    fn assert_close(actual: f64, expected: f64) {
        let tol = 1e-9 * expected.abs().max(1.0);
        assert!(
            (actual - expected).abs() <= tol,
            "expected {expected}, got {actual}"
        );
    }

    fn assert_all_finite(out: &[Observed]) {
        for o in out {
            match o {
                Observed::Scored(f) => assert!(
                    f.to_array().iter().all(|x| x.is_finite()),
                    "non-finite features: {f:?}"
                ),
                Observed::Failed { score, .. } => assert!(score.is_finite()),
            }
        }
    }

    #[test]
    fn first_row_has_its_own_mean_and_zero_spread_score_and_change() {
        let f = last_features(&[100.0]);
        assert_eq!(
            f,
            Features {
                rt: 100.0,
                rolling_mean: 100.0,
                rolling_std: 0.0,
                z_score: 0.0,
                pct_deviation: 0.0,
                rate_of_change: 0.0,
                hour: 0.0,
                weekday: 0.0,
            }
        );
    }

    #[test]
    fn second_and_third_rows_match_hand_computed_values() {
        let out = compute_series(successes(&[100.0, 110.0, 90.0]));

        // [100, 110]: mean 105, std sqrt((25 + 25) / 1).
        let f = scored(&out[1]);
        assert_close(f.rolling_mean, 105.0);
        assert_close(f.rolling_std, 50f64.sqrt());
        assert_close(f.z_score, 5.0 / 50f64.sqrt());
        assert_close(f.pct_deviation, 5.0 / 105.0 * 100.0);
        assert_close(f.rate_of_change, 0.1);

        // [100, 110, 90]: mean 100, std sqrt((0 + 100 + 100) / 2) = 10.
        let f = scored(&out[2]);
        assert_close(f.rolling_mean, 100.0);
        assert_close(f.rolling_std, 10.0);
        assert_close(f.z_score, -1.0);
        assert_close(f.pct_deviation, -10.0);
        assert_close(f.rate_of_change, -20.0 / 110.0);
        assert_eq!(f.hour, 0.0);
    }

    #[test]
    fn short_window_keeps_last_ten_while_z_score_uses_all_points() {
        // Two slow rows, then ten rows at 100.
        let mut rts = vec![1000.0, 1000.0];
        rts.extend([100.0; 10]);
        let f = last_features(&rts);

        // The last 10 are all 100.
        assert_eq!(f.rolling_mean, 100.0);
        assert_eq!(f.rolling_std, 0.0);
        assert_eq!(f.pct_deviation, 0.0);
        // All 12: mean 3000 / 12 = 250; squares 2 * 750^2 + 10 * 150^2 = 1_350_000.
        assert_close(f.z_score, -150.0 / (1_350_000.0f64 / 11.0).sqrt());
        assert_eq!(f.rate_of_change, 0.0);
    }

    #[test]
    fn long_window_forgets_observations_older_than_sixty() {
        let mut rts = vec![10_000.0];
        rts.extend([100.0; 60]);
        let mut state = FeatureState::new();
        let out: Vec<Observed> = successes(&rts)
            .into_iter()
            .map(|(t, rt, ok)| state.push(t, rt, ok))
            .collect();

        // Row 60 still sees the 10_000: mean 15_900 / 60 = 265,
        // squares 9735^2 + 59 * 165^2.
        let expected_std = ((9735.0f64 * 9735.0 + 59.0 * 165.0 * 165.0) / 59.0).sqrt();
        assert_close(scored(&out[59]).z_score, -165.0 / expected_std);
        assert!(state.is_warm());
        // Row 61 sees sixty 100s only.
        assert_eq!(scored(&out[60]).z_score, 0.0);
        assert_eq!(state.len(), LONG_WINDOW);
    }

    #[test]
    fn state_is_warm_only_with_a_full_long_window() {
        let mut state = FeatureState::new();
        assert!(state.is_empty());
        for (i, (t, rt, ok)) in successes(&[100.0; 60]).into_iter().enumerate() {
            assert!(!state.is_warm(), "warm after {i} rows");
            state.push(t, rt, ok);
        }
        assert!(state.is_warm());
        assert_eq!(state.len(), 60);
    }

    #[test]
    fn equal_values_give_exactly_zero_std_and_zero_z_score() {
        // 0.1 does not add up exactly: no rounding residue may leak.
        let f = last_features(&[0.1; 60]);
        assert_eq!(f.rolling_mean, 0.1);
        assert_eq!(f.rolling_std, 0.0);
        assert_eq!(f.z_score, 0.0);
        assert_eq!(f.pct_deviation, 0.0);
        assert_eq!(f.rate_of_change, 0.0);
    }

    #[test]
    fn zero_mean_gives_zero_pct_deviation() {
        let out = compute_series(successes(&[0.0, 0.0, 0.0]));
        for o in &out {
            let f = scored(o);
            assert_eq!(f.rolling_mean, 0.0);
            assert_eq!(f.pct_deviation, 0.0);
            assert_eq!(f.z_score, 0.0);
            assert_eq!(f.rate_of_change, 0.0);
        }
    }

    #[test]
    fn zero_previous_rt_gives_zero_rate_of_change() {
        let f = last_features(&[0.0, 50.0]);
        assert_eq!(f.rate_of_change, 0.0);
        // [0, 50]: mean 25, std sqrt(2 * 625).
        assert_close(f.pct_deviation, 100.0);
        assert_close(f.z_score, 25.0 / 1250f64.sqrt());
    }

    #[test]
    fn hour_and_weekday_are_utc_with_monday_zero() {
        let cases = [
            (Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(), 0.0, 0.0),
            (
                Utc.with_ymd_and_hms(2024, 1, 3, 13, 30, 0).unwrap(),
                13.0,
                2.0,
            ),
            (
                Utc.with_ymd_and_hms(2024, 1, 7, 23, 59, 59).unwrap(),
                23.0,
                6.0,
            ),
        ];
        for (t, hour, weekday) in cases {
            let f = scored(&FeatureState::new().push(t, Some(100.0), true));
            assert_eq!((f.hour, f.weekday), (hour, weekday), "at {t}");
        }
    }

    #[test]
    fn time_gap_changes_only_hour_and_weekday() {
        let rts = [100.0, 120.0, 80.0, 300.0, 95.0, 105.0, 110.0, 90.0];
        let steady = successes(&rts);
        // The same checks with a gap of 3 days 5 hours after the 4th.
        let gapped: Vec<_> = steady
            .iter()
            .enumerate()
            .map(|(i, &(t, rt, ok))| {
                let t = if i >= 4 {
                    t + Duration::days(3) + Duration::hours(5)
                } else {
                    t
                };
                (t, rt, ok)
            })
            .collect();

        let a = compute_series(steady);
        let b = compute_series(gapped);

        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            let (a, b) = (scored(a), scored(b));
            assert_eq!(a.to_array()[..6], b.to_array()[..6], "row {i}");
            if i >= 4 {
                assert_eq!((b.hour, b.weekday), (5.0, 3.0), "row {i}");
            } else {
                assert_eq!(a, b, "row {i}");
            }
        }
    }

    #[test]
    fn failures_do_not_enter_the_windows() {
        let t = |m| monday() + Duration::minutes(m);
        let with_failures = compute_series([
            (t(0), Some(100.0), true),
            (t(1), None, false),
            (t(2), Some(5000.0), false),
            (t(3), Some(110.0), true),
        ]);
        let without = compute_series([(t(0), Some(100.0), true), (t(3), Some(110.0), true)]);

        // The success after the failures is as if they never happened,
        // including rate_of_change against the last success (100).
        assert_eq!(with_failures[3], without[1]);
        assert_close(scored(&with_failures[3]).rate_of_change, 0.1);
    }

    #[test]
    fn consecutive_failures_count_up_and_reset_on_success() {
        let mut state = FeatureState::new();
        let t = monday();
        let mut push = |rt, ok| state.push(t, rt, ok);

        assert!(matches!(push(Some(100.0), true), Observed::Scored(_)));
        assert!(matches!(
            push(None, false),
            Observed::Failed { consecutive: 1, .. }
        ));
        assert!(matches!(
            push(Some(503.0), false),
            Observed::Failed { consecutive: 2, .. }
        ));
        assert!(matches!(
            push(None, false),
            Observed::Failed { consecutive: 3, .. }
        ));
        assert!(matches!(push(Some(100.0), true), Observed::Scored(_)));
        assert_eq!(
            push(None, false),
            Observed::Failed {
                consecutive: 1,
                score: -0.15
            }
        );
        assert_eq!(state.consecutive_failures(), 1);
        assert_eq!(state.len(), 2);
    }

    #[test]
    fn failure_as_first_observation_is_scored_by_rule() {
        let mut state = FeatureState::new();
        let o = state.push(monday(), None, false);
        assert_eq!(
            o,
            Observed::Failed {
                consecutive: 1,
                score: -0.15
            }
        );
        assert!(state.is_empty());
        assert_eq!(o.features(), None);
    }

    #[test]
    fn success_without_usable_rt_is_treated_as_failure() {
        for rt in [
            None,
            Some(f64::NAN),
            Some(f64::INFINITY),
            Some(f64::NEG_INFINITY),
            Some(-1.0),
            Some(MAX_RESPONSE_TIME_MS * 2.0),
        ] {
            let mut state = FeatureState::new();
            state.push(monday(), Some(100.0), true);
            let o = state.push(monday(), rt, true);
            assert!(
                matches!(o, Observed::Failed { consecutive: 1, .. }),
                "{rt:?} gave {o:?}"
            );
            assert_eq!(state.len(), 1, "{rt:?} entered the window");
        }
        // The bounds themselves are measurements.
        for rt in [0.0, MAX_RESPONSE_TIME_MS] {
            let o = FeatureState::new().push(monday(), Some(rt), true);
            assert_eq!(scored(&o).rt, rt);
        }
    }

    #[test]
    fn any_value_domain_takes_negative_values_as_values() {
        let mut state = FeatureState::with_domain(ValueDomain::AnyValue);
        state.push(monday(), Some(-4.0), true);
        let o = state.push(monday(), Some(-2.0), true);
        let f = scored(&o);
        assert_eq!(f.rt, -2.0);
        assert_eq!(f.rolling_mean, -3.0);
        // Up from -4 to -2: +50% of |previous|, above the mean: positive.
        assert_eq!(f.rate_of_change, 0.5);
        assert!((f.pct_deviation - 100.0 / 3.0).abs() < 1e-12);
        // Still refused: non-finite and absurd magnitudes.
        for rt in [Some(f64::NAN), Some(-MAX_RESPONSE_TIME_MS * 2.0), None] {
            let o = state.push(monday(), rt, true);
            assert!(matches!(o, Observed::Failed { .. }), "{rt:?}");
        }
        // Response times keep refusing negative values.
        let o = FeatureState::new().push(monday(), Some(-2.0), true);
        assert!(matches!(o, Observed::Failed { .. }));
    }

    #[test]
    fn failure_score_follows_documented_rule() {
        assert_eq!(failure_score(0), 0.0);
        assert_eq!(failure_score(1), -0.15);
        assert_eq!(failure_score(2), -0.25);
        assert_close(failure_score(3), -0.30);
        assert_close(failure_score(7), -0.50);
        assert_close(failure_score(12), -0.75);
        assert_close(failure_score(13), -0.75);
        assert_close(failure_score(u32::MAX), -0.75);
    }

    #[test]
    fn failure_scores_fall_in_documented_severity_bands() {
        // One blip: high (-0.2 <= s < -0.1), not critical.
        let s = failure_score(1);
        assert!((-0.2..-0.1).contains(&s));
        // Two and more: critical, never better than the previous one.
        let mut previous = s;
        for n in 2..100 {
            let s = failure_score(n);
            assert!(s < -0.2, "n = {n}: {s}");
            assert!(s <= previous, "n = {n}: {s} > {previous}");
            assert!(s >= -0.75 - 1e-12, "n = {n}: {s}");
            previous = s;
        }
    }

    #[test]
    fn extreme_inputs_never_produce_non_finite_features() {
        let rts = [
            0.0,
            MAX_RESPONSE_TIME_MS,
            f64::MIN_POSITIVE,
            5e-324,
            MAX_RESPONSE_TIME_MS,
            0.0,
            1e-310,
            MAX_RESPONSE_TIME_MS,
            1e-300,
            f64::EPSILON,
            MAX_RESPONSE_TIME_MS,
        ];
        let mut obs = successes(&rts);
        obs.push((monday(), Some(f64::MAX), true));
        obs.push((monday(), Some(f64::NAN), true));
        obs.push((monday(), None, true));
        obs.extend(successes(&[MAX_RESPONSE_TIME_MS; 70]));
        let out = compute_series(obs);
        assert_all_finite(&out);
        // MAX after a denormal previous rt overflows: last-resort 0.
        assert_eq!(scored(&out[4]).rate_of_change, 0.0);
    }

    /// A deterministic series of one API: mostly successes around 50-250 ms,
    /// spikes, zeros, failures of every kind, and time gaps.
    fn mixed_series(n: usize) -> Vec<(DateTime<Utc>, Option<f64>, bool)> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut t = Utc.with_ymd_and_hms(2024, 3, 8, 21, 0, 0).unwrap();
        (0..n)
            .map(|_| {
                let r = next();
                t += if r % 50 == 0 {
                    Duration::hours(7)
                } else {
                    Duration::seconds(30)
                };
                let rt = 50.0 + ((r >> 8) % 20_000) as f64 / 100.0;
                let obs = match (r >> 32) % 20 {
                    0 => (None, false),
                    1 => (Some(rt), false),
                    2 => (None, true),
                    3 => (Some(f64::NAN), true),
                    4 => (Some(rt * 20.0), true),
                    5 => (Some(0.0), true),
                    _ => (Some(rt), true),
                };
                (t, obs.0, obs.1)
            })
            .collect()
    }

    #[test]
    fn batch_equals_streaming_on_500_mixed_points() {
        let series = mixed_series(500);
        let batch = compute_series(series.clone());

        let mut state = FeatureState::new();
        let streamed: Vec<Observed> = series
            .into_iter()
            .map(|(t, rt, ok)| state.push(t, rt, ok))
            .collect();

        assert_eq!(batch, streamed);
        assert_all_finite(&batch);
        let failures = batch.iter().filter(|o| o.features().is_none()).count();
        assert!((50..150).contains(&failures), "{failures} failures");
        assert!(state.is_warm());
    }

    #[test]
    fn streaming_matches_a_naive_reference_on_500_mixed_points() {
        // Straight from the definitions, over the whole history, with slices.
        fn mean_std(w: &[f64]) -> (f64, f64) {
            let mean = w.iter().sum::<f64>() / w.len() as f64;
            if w.len() < 2 || w.iter().all(|&v| v == w[0]) {
                return (w[0], 0.0);
            }
            let var = w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (w.len() - 1) as f64;
            (mean, var.sqrt())
        }

        let series = mixed_series(500);
        let out = compute_series(series.clone());
        let mut history: Vec<f64> = Vec::new();
        let mut run = 0u32;
        for (i, ((t, rt, ok), o)) in series.into_iter().zip(&out).enumerate() {
            let rt = match rt {
                Some(rt) if ok && rt.is_finite() && rt >= 0.0 => rt,
                _ => {
                    run += 1;
                    assert_eq!(
                        *o,
                        Observed::Failed {
                            consecutive: run,
                            score: failure_score(run)
                        },
                        "row {i}"
                    );
                    continue;
                }
            };
            run = 0;
            let prev = history.last().copied();
            history.push(rt);
            let w60 = &history[history.len().saturating_sub(60)..];
            let w10 = &history[history.len().saturating_sub(10)..];
            let (m60, s60) = mean_std(w60);
            let (m10, s10) = mean_std(w10);

            let f = scored(o);
            assert_eq!(f.rt, rt, "row {i}");
            assert_close(f.rolling_mean, m10);
            assert_close(f.rolling_std, s10);
            assert_close(f.z_score, if s60 > 0.0 { (rt - m60) / s60 } else { 0.0 });
            assert_close(
                f.pct_deviation,
                if m10 != 0.0 {
                    (rt - m10) / m10 * 100.0
                } else {
                    0.0
                },
            );
            assert_close(
                f.rate_of_change,
                match prev {
                    Some(p) if p != 0.0 => (rt - p) / p,
                    _ => 0.0,
                },
            );
            assert_eq!(f.hour, f64::from(t.hour()), "row {i}");
            assert_eq!(
                f.weekday,
                f64::from(t.weekday().num_days_from_monday()),
                "row {i}"
            );
        }
    }

    #[test]
    fn feature_array_and_named_pairs_follow_feature_names() {
        let f = Features {
            rt: 1.0,
            rolling_mean: 2.0,
            rolling_std: 3.0,
            z_score: 4.0,
            pct_deviation: 5.0,
            rate_of_change: 6.0,
            hour: 7.0,
            weekday: 8.0,
        };
        assert_eq!(f.to_array(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        assert_eq!(Features::from_array(f.to_array()), f);
        let named = f.named();
        for (i, (name, value)) in named.iter().enumerate() {
            assert_eq!(*name, FEATURE_NAMES[i]);
            assert_eq!(*value, f.to_array()[i]);
        }
        assert_eq!(named[3], ("z_score", 4.0));
        assert_eq!(FEATURE_NAMES.len(), N_FEATURES);
    }
}
