//! Scoring one API's observations, one at a time, in time order: the code
//! path shared by the streaming service and by replay.

use std::sync::Arc;

use apimon_core::db::anomalies::AnomalyRow;
use apimon_core::features::{FeatureState, Features, Observed};
use apimon_core::incidents::{Check, IncidentPolicy, Tracker, Transition};
use apimon_core::model::{Model, SeenRange, Severity, Thresholds};
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
    ) -> Vec<Transition> {
        self.incidents.observe(
            policy,
            &Check {
                timestamp: v.timestamp,
                response_time_ms: v.response_time_ms,
                success,
                severity: v.severity,
                error,
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
        let (score, features, consecutive, version) = match observed {
            Observed::Scored(f) => match &self.model {
                Some(m) => (
                    Some(score_seen(m, &mut self.seen, &f.to_array())),
                    Some(f),
                    0,
                    Some(m.version),
                ),
                None => (None, Some(f), 0, None),
            },
            Observed::Failed { consecutive, score } => (
                Some(score),
                None,
                consecutive,
                self.model.as_ref().map(|m| m.version),
            ),
        };
        Some(Verdict {
            timestamp,
            response_time_ms: rt.filter(|v| v.is_finite()),
            score,
            severity: score.and_then(|s| thresholds.classify(s)),
            features,
            consecutive_failures: consecutive,
            model_version: version,
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

    /// One sentence saying why.
    pub fn details(&self, error: Option<&str>) -> String {
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
