//! Scoring one API's observations, one at a time, in time order: the code
//! path shared by the streaming service and by replay.

use std::sync::Arc;

use apimon_core::db::anomalies::AnomalyRow;
use apimon_core::features::{FeatureState, Features, Observed, FEATURE_NAMES};
use apimon_core::incidents::{Check, IncidentPolicy, Tracker, Transition};
use apimon_core::model::{Model, Place, SeenRange, Severity, Thresholds};
use chrono::{DateTime, Utc};

/// The current model of an API, shared with the trainer.
#[derive(Debug, Clone)]
pub struct ActiveModel {
    pub model: Arc<Model>,
    pub version: i64,
    /// In the clock of whoever trained it: wall time when streaming, data
    /// time in replay.
    pub trained_at: DateTime<Utc>,
}

/// One observation's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub timestamp: DateTime<Utc>,
    pub response_time_ms: Option<f64>,
    /// `None` when there was nothing to score it with (a success before the
    /// first model).
    pub score: Option<f64>,
    pub severity: Option<Severity>,
    pub features: Option<Features>,
    /// Consecutive failed checks, this one included (0 for a success).
    pub consecutive_failures: u32,
    pub model_version: Option<i64>,
    /// For an anomalous success scored by a model: what the model's
    /// healthy baseline says about it (see [`explain`]).
    pub explanation: Option<String>,
}

/// Rolling state and model of one API.
#[derive(Debug, Clone, Default)]
pub struct ApiDetector {
    pub state: FeatureState,
    pub model: Option<ActiveModel>,
    /// Timestamp of the last observation taken; older or equal ones are
    /// refused (duplicates, a clock that went back).
    pub last_timestamp: Option<DateTime<Utc>>,
    /// What the current model has seen, with that model's version and
    /// training time (see `Model::score_seen`); starts again at each new
    /// model.
    pub seen: Option<(ModelId, SeenRange)>,
    /// The incident rules' state (see `apimon_core::incidents`).
    pub incidents: Tracker,
}

impl ApiDetector {
    /// Feeds one observation without scoring it (warming the state after a
    /// restart).
    pub fn warm(
        &mut self,
        policy: &IncidentPolicy,
        timestamp: DateTime<Utc>,
        rt: Option<f64>,
        success: bool,
    ) {
        self.state.push(timestamp, rt, success);
        self.incidents
            .warm(policy, timestamp, rt.filter(|_| success));
        self.last_timestamp = Some(timestamp);
    }

    /// Runs the incident rules on a scored observation.
    pub fn incidents(
        &mut self,
        policy: &IncidentPolicy,
        v: &Verdict,
        success: bool,
        error: Option<&str>,
        tls_expires_at: Option<DateTime<Utc>>,
    ) -> Vec<Transition> {
        self.incidents.observe(
            policy,
            &Check {
                timestamp: v.timestamp,
                response_time_ms: v.response_time_ms,
                success,
                severity: v.severity,
                error,
                tls_expires_at,
            },
        )
    }

    /// Scores one observation. `None` when it is not after the previous one
    /// (a duplicate or a clock that went back): it is skipped, not scored
    /// twice.
    pub fn observe(
        &mut self,
        timestamp: DateTime<Utc>,
        rt: Option<f64>,
        success: bool,
        thresholds: &Thresholds,
    ) -> Option<Verdict> {
        if self.last_timestamp.is_some_and(|last| timestamp <= last) {
            return None;
        }
        self.last_timestamp = Some(timestamp);
        let observed = self.state.push(timestamp, rt, success);
        let mut explanation = None;
        let (score, severity, features, consecutive, version) = match observed {
            Observed::Scored(f) => match &self.model {
                Some(m) => {
                    let x = f.to_array();
                    let score = score_seen(m, &mut self.seen, &x);
                    let change = m.model.change(f.rt);
                    let severity = thresholds.severity(score, change.as_ref());
                    if severity.is_some() {
                        explanation = Some(explain(&m.model, &f));
                    }
                    (Some(score), severity, Some(f), 0, Some(m.version))
                }
                None => (None, None, Some(f), 0, None),
            },
            Observed::Failed { consecutive, score } => (
                Some(score),
                thresholds.classify(score),
                None,
                consecutive,
                self.model.as_ref().map(|m| m.version),
            ),
        };
        Some(Verdict {
            timestamp,
            response_time_ms: rt.filter(|v| v.is_finite()),
            score,
            severity,
            features,
            consecutive_failures: consecutive,
            model_version: version,
            explanation,
        })
    }
}

/// Which model a seen range belongs to.
pub type ModelId = (i64, DateTime<Utc>);

/// `Model::score_seen` with the seen range of model `m`.
fn score_seen(
    m: &ActiveModel,
    seen: &mut Option<(ModelId, SeenRange)>,
    x: &[f64; apimon_core::features::N_FEATURES],
) -> f64 {
    let id = (m.version, m.trained_at);
    let mut range = seen.take().filter(|(of, _)| *of == id).map(|(_, r)| r);
    let score = m.model.score_seen(x, &mut range);
    *seen = range.map(|r| (id, r));
    score
}

impl Verdict {
    /// The anomaly row for this verdict, when it is anomalous. The feature
    /// values are kept for high and critical anomalies only: a medium one
    /// (most anomalies: the tail of healthy checks that `CONTAMINATION`
    /// calls anomalous) is explained by its details, and its features can
    /// be computed again from `api_metrics` (docs/storage.md).
    pub fn anomaly(&self, api_name: &str, error: Option<&str>) -> Option<AnomalyRow> {
        let severity = self.severity?;
        let score = self.score?;
        Some(AnomalyRow {
            timestamp: self.timestamp,
            api_name: api_name.to_string(),
            response_time_ms: self.response_time_ms,
            anomaly_score: score,
            severity: severity.as_str().to_string(),
            details: self.details(error),
            features: self.features.filter(|_| severity >= Severity::High),
            model_version: self.model_version,
        })
    }

    /// One sentence saying why: the model's explanation when there is one
    /// (see [`explain`]).
    pub fn details(&self, error: Option<&str>) -> String {
        if let (Some(e), Some(_)) = (&self.explanation, &self.features) {
            return e.clone();
        }
        match &self.features {
            None => {
                let n = self.consecutive_failures;
                let what = error.unwrap_or("failed check");
                format!(
                    "{n} consecutive failed check{}: {what}",
                    if n == 1 { "" } else { "s" }
                )
            }
            Some(f) => {
                let ratio = if f.rolling_mean.abs() > f64::EPSILON {
                    format!(" ({:.1}x the mean of the last 10)", f.rt / f.rolling_mean)
                } else {
                    String::new()
                };
                format!(
                    "response time {:.0} ms{ratio}; z-score {:.1} over the last 60; change {:+.0}% from the previous check",
                    f.rt,
                    f.z_score,
                    f.rate_of_change * 100.0
                )
            }
        }
    }
}

/// How many features an explanation names at most.
const MAX_DRIVERS: usize = 3;

/// What a model says about a check, in words, against its healthy baseline
/// (the training rows), never against the window being judged: the
/// response time as a multiple of the training median, then the features
/// that make the check unusual, each in its own unit, with the training
/// value it is compared with (see `Model::drivers`). For example
/// `response time 220 ms, 10.0x the training median of 22 ms; outside the
/// training range: rt 220 ms (training max 24 ms), ...` or
/// `response time 100 ms, 1.0x the training median of 100 ms; inside the
/// training range, furthest from the training median: rolling_std 0.0 ms
/// (training median 5.8 ms, 2.9 sd)`.
pub fn explain(model: &Model, f: &Features) -> String {
    let usual = model.usual(0);
    let ratio = if usual.abs() <= f64::EPSILON {
        String::new()
    } else if (0.5..2.0).contains(&(f.rt / usual)) {
        // A small change reads as a difference: "1.0x" would hide it.
        format!(
            ", {:+.0} ms ({:+.0}%) from the training median of {}",
            f.rt - usual,
            (f.rt - usual) / usual.abs() * 100.0,
            unit(0, usual)
        )
    } else {
        format!(
            ", {:.1}x the training median of {}",
            f.rt / usual,
            unit(0, usual)
        )
    };
    let drivers = model.drivers(&f.to_array(), MAX_DRIVERS);
    let mut out = format!("response time {:.0} ms{ratio}", f.rt);
    let inside = drivers
        .first()
        .is_some_and(|d| matches!(d.place, Place::Inside(_)));
    out.push_str(if drivers.is_empty() {
        ""
    } else if inside {
        "; inside the training range, furthest from the training median: "
    } else {
        "; outside the training range: "
    });
    let named: Vec<String> = drivers
        .iter()
        .map(|d| {
            let name = FEATURE_NAMES[d.feature];
            let value = unit(d.feature, d.value);
            match d.place {
                Place::Above(b) => {
                    let (value, b) = apart(d.feature, d.value, b);
                    format!("{name} {value} (training max {b})")
                }
                Place::Below(b) => {
                    let (value, b) = apart(d.feature, d.value, b);
                    format!("{name} {value} (training min {b})")
                }
                Place::Inside(m) => format!(
                    "{name} {value} (training median {}, {:.1} sd)",
                    unit(d.feature, m),
                    d.sds
                ),
            }
        })
        .collect();
    out.push_str(&named.join(", "));
    out
}

/// A feature's value in its own unit: ms for the response times, percent
/// for `pct_deviation` and `rate_of_change`, none for `z_score`.
fn unit(feature: usize, v: f64) -> String {
    let decimals = match FEATURE_NAMES[feature] {
        "rt" | "rolling_mean" | "rolling_std" if v.abs() >= 10.0 => 0,
        "pct_deviation" | "rate_of_change" => 0,
        _ => 1,
    };
    unit_with(feature, v, decimals)
}

/// [`unit`] with `decimals` decimals.
fn unit_with(feature: usize, v: f64, decimals: usize) -> String {
    match FEATURE_NAMES[feature] {
        "rt" | "rolling_mean" | "rolling_std" => format!("{v:.decimals$} ms"),
        "pct_deviation" => format!("{v:+.decimals$}%"),
        "rate_of_change" => format!("{:+.decimals$}%", v * 100.0),
        _ => format!("{v:.decimals$}"),
    }
}

/// A value and the training bound it passed, in [`unit`]s, with more
/// decimals (up to 3) when they would otherwise read the same.
fn apart(feature: usize, v: f64, bound: f64) -> (String, String) {
    let (mut a, mut b) = (unit(feature, v), unit(feature, bound));
    let mut decimals = 0;
    while a == b && decimals < 3 {
        decimals += 1;
        a = unit_with(feature, v, decimals);
        b = unit_with(feature, bound, decimals);
    }
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use apimon_core::model::ModelParams;
    use chrono::{Duration, TimeZone};

    fn t(i: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap() + Duration::seconds(15 * i)
    }

    #[test]
    fn without_a_model_successes_are_unscored_and_failures_are_scored_by_rule() {
        let mut d = ApiDetector::default();
        let th = Thresholds::default();
        let v = d.observe(t(0), Some(100.0), true, &th).unwrap();
        assert_eq!((v.score, v.severity), (None, None));
        let v1 = d.observe(t(1), None, false, &th).unwrap();
        assert_eq!(v1.severity, Some(Severity::High));
        let v2 = d.observe(t(2), None, false, &th).unwrap();
        assert_eq!(v2.severity, Some(Severity::Critical));
        assert_eq!(v2.consecutive_failures, 2);
        let row = v2.anomaly("api", Some("timeout: no answer")).unwrap();
        assert_eq!(row.severity, "critical");
        assert!(
            row.details
                .starts_with("2 consecutive failed checks: timeout"),
            "{}",
            row.details
        );
        assert!(row.features.is_none());
    }

    #[test]
    fn duplicates_and_a_clock_going_back_are_skipped() {
        let mut d = ApiDetector::default();
        let th = Thresholds::default();
        assert!(d.observe(t(5), Some(1.0), true, &th).is_some());
        assert!(d.observe(t(5), Some(1.0), true, &th).is_none());
        assert!(d.observe(t(4), Some(1.0), true, &th).is_none());
        assert_eq!(d.state.len(), 1);
    }

    #[test]
    fn with_a_model_a_slow_check_is_critical_and_explained() {
        let th = Thresholds::default();
        let mut d = ApiDetector::default();
        let mut rows = Vec::new();
        let mut x: u64 = 0x9E3779B97F4A7C15;
        for i in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x % 100_000) as f64 / 100_000.0;
            let v = d
                .observe(t(i), Some(100.0 + 20.0 * -(1.0 - u).ln()), true, &th)
                .unwrap();
            rows.push(v.features.unwrap().to_array());
        }
        let model = Model::train(&rows, &ModelParams::default()).unwrap();
        d.model = Some(ActiveModel {
            model: Arc::new(model),
            version: 3,
            trained_at: t(2000),
        });
        let v = d.observe(t(2001), Some(1000.0), true, &th).unwrap();
        assert_eq!(v.severity, Some(Severity::Critical), "{:?}", v.score);
        let row = v.anomaly("api", None).unwrap();
        assert_eq!(row.model_version, Some(3));
        // The same level again has been seen by this model: no longer
        // critical. A new model has seen nothing yet: critical again.
        let again = d.observe(t(2002), Some(1000.0), true, &th).unwrap();
        assert!(
            again.score > v.score,
            "{:?} then {:?}",
            v.score,
            again.score
        );
        let model = d.model.clone().unwrap();
        d.model = Some(ActiveModel {
            version: 4,
            trained_at: t(2002),
            ..model
        });
        let fresh = d.observe(t(2003), Some(1000.0), true, &th).unwrap();
        assert_eq!(
            fresh.severity,
            Some(Severity::Critical),
            "{:?}",
            fresh.score
        );
        assert!(row.details.contains("1000 ms"), "{}", row.details);
        assert_eq!(row.features.unwrap().rt, 1000.0);
    }

    /// A detector with a model of `n` healthy checks at `base` ms
    /// +- `jitter` (uniform), trained as the service does (response times,
    /// hour and weekday left out, seeded from the API and version 1) on
    /// the rows after the first 60, whose windows are full (as once the
    /// training window starts after the API's first checks); and the
    /// index of the next check.
    fn trained(n: i64, base: f64, jitter: f64) -> (ApiDetector, i64) {
        trained_with(&ModelParams::default(), n, base, jitter)
    }

    /// [`trained`] with `params`.
    fn trained_with(params: &ModelParams, n: i64, base: f64, jitter: f64) -> (ApiDetector, i64) {
        use apimon_core::features::ValueDomain;
        use apimon_core::model::{ignored_features, model_seed, TrainingSpec};
        let th = Thresholds::default();
        let mut d = ApiDetector::default();
        let mut rows = Vec::new();
        let mut x: u64 = 0x2545F4914F6CDD1D;
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x % 10_000) as f64 / 10_000.0;
            let v = d
                .observe(t(i), Some(base + jitter * (2.0 * u - 1.0)), true, &th)
                .unwrap();
            if i >= 60 {
                rows.push(v.features.unwrap().to_array());
            }
        }
        let spec = TrainingSpec {
            ignored: ignored_features(Duration::seconds(15 * n)),
            domain: ValueDomain::ResponseTime,
            seed: model_seed("api", 1),
        };
        let model = Model::train_for(&rows, params, &spec).unwrap();
        d.model = Some(ActiveModel {
            model: Arc::new(model),
            version: 1,
            trained_at: t(n),
        });
        (d, n)
    }

    #[test]
    fn one_percent_slower_on_a_very_steady_api_is_a_medium_anomaly_not_critical() {
        let th = Thresholds::default();
        let (mut d, i) = trained(400, 804.0, 0.5);
        let v = d.observe(t(i), Some(813.0), true, &th).unwrap();
        assert_eq!(v.severity, Some(Severity::Medium), "score {:?}", v.score);
        let row = v.anomaly("api", None).expect("the anomaly row stays");
        assert_eq!(row.severity, "medium");
        assert!(
            row.details.starts_with(
                "response time 813 ms, +9 ms (+1%) from the training median of 804 ms;"
            ),
            "{}",
            row.details
        );
        // Five times slower is critical.
        let v = d.observe(t(i + 1), Some(4020.0), true, &th).unwrap();
        assert_eq!(v.severity, Some(Severity::Critical), "{:?}", v.score);
    }

    #[test]
    fn a_ten_times_slowdown_is_explained_against_the_training_median() {
        let th = Thresholds::default();
        let (mut d, i) = trained(400, 22.0, 1.0);
        let verdicts: Vec<Verdict> = (0..5)
            .map(|k| d.observe(t(i + k), Some(220.0), true, &th).unwrap())
            .collect();
        assert_eq!(verdicts[0].severity, Some(Severity::Critical));
        // The third slow check: the last 10 checks hold three slow ones,
        // whose mean (81 ms) is not what is usual for this API.
        let details = verdicts[2].details(None);
        assert!(
            details.starts_with("response time 220 ms, 10.0x the training median of 22 ms"),
            "{details}"
        );
        assert!(
            details.contains("outside the training range: "),
            "{details}"
        );
        assert!(
            details.contains("rt 220 ms (training max 23 ms)"),
            "{details}"
        );
        assert!(!details.contains("mean of the last"), "{details}");
    }

    #[test]
    fn an_anomaly_from_a_low_rolling_std_is_explained_by_rolling_std() {
        let th = Thresholds::default();
        // A contamination of 0.3 (CONTAMINATION may go up to 0.5) puts the
        // lowest jitter seen in training below 0: then a check whose only
        // unusual feature is its vanished jitter is an anomaly.
        let params = ModelParams {
            contamination: 0.3,
            ..ModelParams::default()
        };
        let (mut d, i) = trained_with(&params, 400, 100.0, 10.0);
        // Ten identical checks at the usual level: the response time is
        // ordinary, the jitter is gone (rolling_std 0, below anything seen
        // in training).
        let verdicts: Vec<Verdict> = (0..12)
            .map(|k| d.observe(t(i + k), Some(100.0), true, &th).unwrap())
            .collect();
        let last = verdicts.last().unwrap();
        let f = last.features.unwrap();
        assert_eq!(f.rolling_std, 0.0);
        let model = d.model.clone().unwrap().model;
        let text = explain(&model, &f);
        assert!(
            text.contains("; outside the training range: rolling_std 0.0 ms (training min "),
            "{text}"
        );
        // The anomalies of the checks without jitter say so.
        let flat: Vec<&Verdict> = verdicts
            .iter()
            .filter(|v| v.features.unwrap().rolling_std == 0.0 && v.severity.is_some())
            .collect();
        assert!(
            !flat.is_empty(),
            "{:?}",
            verdicts.iter().map(|v| v.score).collect::<Vec<_>>()
        );
        for v in flat {
            let row = v.anomaly("api", None).unwrap();
            assert!(
                row.details
                    .contains("; outside the training range: rolling_std 0.0 ms (training min "),
                "{}",
                row.details
            );
        }
    }

    #[test]
    fn a_value_and_the_bound_it_passed_never_read_the_same() {
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        // rolling_std 0.13 ms below a training minimum of 0.14 ms.
        assert_eq!(apart(2, 0.13, 0.14), s("0.13 ms", "0.14 ms"));
        assert_eq!(apart(0, 813.0, 804.4), s("813 ms", "804 ms"));
        assert_eq!(apart(0, 804.4, 804.3), s("804.4 ms", "804.3 ms"));
        assert_eq!(apart(4, 1.2, 0.9), s("+1.2%", "+0.9%"));
        assert_eq!(apart(5, 0.4, -0.1), s("+40%", "-10%"));
    }

    /// Severities of `n` checks at `rt` ms from check `from` on.
    fn run(d: &mut ApiDetector, from: i64, n: i64, rt: f64) -> Vec<Option<Severity>> {
        let th = Thresholds::default();
        (from..from + n)
            .map(|i| d.observe(t(i), Some(rt), true, &th).unwrap().severity)
            .collect()
    }

    #[test]
    fn one_earlier_spike_does_not_stop_a_sustained_slowdown_from_being_critical() {
        for gap in [5, 20, 60] {
            // Healthy at 100 ms +- 10, one spike to 1000 ms, `gap` healthy
            // checks, then five times slower for good.
            let (mut d, i) = trained(600, 100.0, 10.0);
            let healthy = run(&mut d, i, 30, 100.0);
            assert!(!healthy.contains(&Some(Severity::Critical)), "{healthy:?}");
            let spike = run(&mut d, i + 30, 1, 1000.0);
            assert_eq!(spike, [Some(Severity::Critical)]);
            run(&mut d, i + 31, gap, 100.0);
            let slow = run(&mut d, i + 31 + gap, 20, 500.0);
            let first = slow.iter().position(|s| *s == Some(Severity::Critical));
            assert!(
                first.is_some_and(|k| k < 8),
                "gap {gap}: slowdown severities {slow:?}"
            );
            if gap > apimon_core::model::SEEN_MEMORY as i64 {
                assert_eq!(slow[0], Some(Severity::Critical), "gap {gap}: {slow:?}");
            }
        }
    }

    #[test]
    fn what_a_model_has_seen_read_back_from_json_scores_as_if_never_interrupted() {
        // Twenty checks at ten times the usual level: the first ones are
        // critical, then the level has been seen.
        let (mut d, i) = trained(600, 100.0, 10.0);
        run(&mut d, i, 30, 100.0);
        let level = run(&mut d, i + 30, 20, 1000.0);
        assert_eq!(level[0], Some(Severity::Critical));
        let json = serde_json::to_value(&d.seen).unwrap();
        let mut restored = d.clone();
        restored.seen = serde_json::from_value(json).unwrap();
        let mut forgot = d.clone();
        forgot.seen = None;

        let next = i + 50;
        let uninterrupted = d.observe(t(next), Some(1000.0), true, &Thresholds::default());
        let after_restore = restored.observe(t(next), Some(1000.0), true, &Thresholds::default());
        let after_forgetting = run(&mut forgot, next, 1, 1000.0);

        assert_eq!(after_restore, uninterrupted, "bit for bit");
        assert_ne!(uninterrupted.unwrap().severity, Some(Severity::Critical));
        assert_eq!(
            after_forgetting,
            [Some(Severity::Critical)],
            "why it is saved"
        );
    }

    #[test]
    fn the_same_checks_score_bit_identically_in_two_runs() {
        let th = Thresholds::default();
        let scores = || {
            let (mut d, i) = trained(300, 100.0, 10.0);
            [100.0, 130.0, 400.0, 500.0, 90.0]
                .iter()
                .enumerate()
                .map(|(k, rt)| {
                    d.observe(t(i + k as i64), Some(*rt), true, &th)
                        .unwrap()
                        .score
                        .unwrap()
                        .to_bits()
                })
                .collect::<Vec<u64>>()
        };
        assert_eq!(scores(), scores());
    }

    #[test]
    fn a_medium_anomaly_is_stored_with_its_details_and_without_its_features() {
        let features = Features::from_array([130.0, 100.0, 10.0, 2.5, 30.0, 0.4, 13.0, 2.0]);
        let verdict = |severity| Verdict {
            timestamp: t(0),
            response_time_ms: Some(130.0),
            score: Some(-0.05),
            severity: Some(severity),
            features: Some(features),
            consecutive_failures: 0,
            model_version: Some(1),
            explanation: None,
        };

        let medium = verdict(Severity::Medium).anomaly("api", None).unwrap();
        let high = verdict(Severity::High).anomaly("api", None).unwrap();

        assert_eq!(medium.features, None);
        assert_eq!(
            medium.details,
            "response time 130 ms (1.3x the mean of the last 10); z-score 2.5 over the last 60; \
             change +40% from the previous check"
        );
        assert_eq!(high.features, Some(features));
        assert_eq!(high.details, medium.details);
    }
}
