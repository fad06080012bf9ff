//! Replaying history through the online code path: the same features,
//! cold start and retraining cadence as the streaming detector, with time
//! taken from the data. This is how users tune thresholds on their own
//! history and how accuracy is measured.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::Arc;

use apimon_core::features::{FeatureState, ValueDomain, N_FEATURES};
use apimon_core::incidents::{IncidentPolicy, Transition};
use apimon_core::model::{
    ignored_features, model_seed, Model, ModelParams, Severity, Thresholds, TrainingSpec,
};
use chrono::{DateTime, NaiveDateTime, Utc};

use crate::config::TrainingPolicy;
use crate::engine::{ActiveModel, ApiDetector};

/// One observation of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub timestamp: DateTime<Utc>,
    /// `None` (or a failed check) when there was no usable value.
    pub value: Option<f64>,
    pub success: bool,
}

/// One output row: `timestamp,value,anomaly_score,severity`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub timestamp: DateTime<Utc>,
    pub value: Option<f64>,
    /// `None` before the first model (successes only).
    pub score: Option<f64>,
    pub severity: Option<Severity>,
}

/// Settings of a replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    pub params: ModelParams,
    pub thresholds: Thresholds,
    pub policy: TrainingPolicy,
    /// When `hour` and `weekday` enter the model (for measurements; the
    /// service always uses [`TimeFeatures::Auto`]).
    pub time_features: TimeFeatures,
    /// Which values are measurements: response times (api_metrics, the
    /// default) or any metric (a CSV).
    pub domain: ValueDomain,
    /// The API the series belongs to: with the model version (1, 2, ...
    /// as the service numbers them) it seeds each model's forest
    /// (`apimon_core::model::model_seed`), so a replay scores as the
    /// service did from the same rows. Empty for a CSV of no API.
    pub api_name: String,
}

impl ReplayOptions {
    /// The model, thresholds and training policy the service would use
    /// with `env`; the other settings at their defaults.
    pub fn from_env(env: &apimon_core::Env) -> Result<ReplayOptions, apimon_core::ConfigError> {
        Ok(ReplayOptions {
            params: crate::config::model_params(env)?,
            thresholds: crate::config::thresholds(env)?,
            policy: crate::config::policy(env)?,
            ..ReplayOptions::default()
        })
    }
}

/// When `hour` and `weekday` enter the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimeFeatures {
    /// Once the training rows span [`apimon_core::model::SEASONAL_SPAN`],
    /// as the streaming detector does.
    #[default]
    Auto,
    Never,
    Always,
}

/// Streams `points` (in time order) through the detector. Points that are
/// not after the previous one (duplicates, a clock going back) are passed
/// through unscored, so the output has one row per input row.
pub fn replay(points: &[Point], opts: &ReplayOptions) -> Vec<Scored> {
    replay_with_incidents(points, opts, None).0
}

/// [`replay`], also running the incident rules of `policy` (when given) on
/// every scored observation: the changes of the API's incidents, in order.
pub fn replay_with_incidents(
    points: &[Point],
    opts: &ReplayOptions,
    policy: Option<&IncidentPolicy>,
) -> (Vec<Scored>, Vec<Transition>) {
    let mut changes = Vec::new();
    let mut det = ApiDetector {
        state: FeatureState::with_domain(opts.domain),
        ..ApiDetector::default()
    };
    // The training window: times and feature rows side by side, so that a
    // training takes the rows as one slice without copying them.
    let mut times: VecDeque<DateTime<Utc>> = VecDeque::new();
    let mut history: VecDeque<[f64; N_FEATURES]> = VecDeque::new();
    let window = chrono::Duration::from_std(opts.policy.window).unwrap_or(chrono::Duration::MAX);
    let mut version = 0;
    let mut out = Vec::with_capacity(points.len());
    for p in points {
        let Some(v) = det.observe(p.timestamp, p.value, p.success, &opts.thresholds) else {
            out.push(Scored {
                timestamp: p.timestamp,
                value: p.value,
                score: None,
                severity: None,
            });
            continue;
        };
        out.push(Scored {
            timestamp: p.timestamp,
            value: p.value,
            score: v.score,
            severity: v.severity,
        });
        if let Some(policy) = policy {
            changes.extend(det.incidents(policy, &v, p.success, None, None));
        }
        if let Some(f) = v.features {
            times.push_back(p.timestamp);
            history.push_back(f.to_array());
        }
        while times
            .front()
            .is_some_and(|t| p.timestamp.signed_duration_since(*t) > window)
        {
            times.pop_front();
            history.pop_front();
        }
        let trained_at = det.model.as_ref().map(|m| m.trained_at);
        if opts.policy.due(trained_at, p.timestamp, history.len()) {
            let span = match (times.front(), times.back()) {
                (Some(a), Some(b)) => *b - *a,
                _ => chrono::Duration::zero(),
            };
            let rows: &[[f64; N_FEATURES]] = history.make_contiguous();
            let ignored = match opts.time_features {
                TimeFeatures::Auto => ignored_features(span),
                TimeFeatures::Never => ignored_features(chrono::Duration::zero()),
                TimeFeatures::Always => [false; N_FEATURES],
            };
            let spec = TrainingSpec {
                ignored,
                domain: opts.domain,
                seed: model_seed(&opts.api_name, version + 1),
            };
            match Model::train_for(rows, &opts.params, &spec) {
                Ok(model) => {
                    version += 1;
                    det.model = Some(ActiveModel {
                        model: Arc::new(model),
                        version,
                        trained_at: p.timestamp,
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "replay: training failed; keeping the previous model")
                }
            }
        }
    }
    (out, changes)
}

/// Why a CSV could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("reading CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("column `{0}` not found in the header")]
    MissingColumn(String),
    #[error(
        "row {row}: cannot parse timestamp `{value}` (expected RFC 3339 or YYYY-MM-DD HH:MM:SS)"
    )]
    Timestamp { row: usize, value: String },
}

/// Reads `timestamp,value` rows from CSV. An empty, non-numeric, NaN or
/// infinite value becomes a failed observation (kept, not dropped).
pub fn read_csv(input: impl Read, time_col: &str, value_col: &str) -> Result<Vec<Point>, CsvError> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let headers = rdr.headers()?.clone();
    let find = |c: &str| {
        headers
            .iter()
            .position(|h| h == c)
            .ok_or_else(|| CsvError::MissingColumn(c.to_string()))
    };
    let (ti, vi) = (find(time_col)?, find(value_col)?);
    let mut points = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec?;
        let raw_t = rec.get(ti).unwrap_or("");
        let timestamp = parse_timestamp(raw_t).ok_or_else(|| CsvError::Timestamp {
            row: i + 2,
            value: raw_t.to_string(),
        })?;
        let value = rec
            .get(vi)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite());
        points.push(Point {
            timestamp,
            value,
            success: value.is_some(),
        });
    }
    Ok(points)
}

/// RFC 3339, or `YYYY-MM-DD HH:MM:SS[.f]` / `YYYY-MM-DDTHH:MM:SS` taken as UTC.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    .map(|n| n.and_utc())
}

/// Writes `timestamp,value,anomaly_score,severity`.
pub fn write_csv(out: impl Write, rows: &[Scored]) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(["timestamp", "value", "anomaly_score", "severity"])?;
    for r in rows {
        w.write_record([
            r.timestamp
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            r.value.map(|v| v.to_string()).unwrap_or_default(),
            r.score.map(|s| format!("{s:.6}")).unwrap_or_default(),
            r.severity
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
        ])?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn series(n: i64, spike_at: i64) -> Vec<Point> {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
        let mut x: u64 = 0x2545F4914F6CDD1D;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = (x % 100_000) as f64 / 100_000.0;
                let v = if i == spike_at {
                    2000.0
                } else {
                    100.0 + 20.0 * -(1.0 - u).ln()
                };
                Point {
                    timestamp: t0 + Duration::seconds(15 * i),
                    value: Some(v),
                    success: true,
                }
            })
            .collect()
    }

    #[test]
    fn replay_has_a_cold_start_then_flags_the_planted_spike_lowest() {
        let pts = series(1500, 1200);
        let out = replay(&pts, &ReplayOptions::default());
        assert_eq!(out.len(), pts.len());
        // Cold start: no score before MIN_TRAINING_SAMPLES (120) successes.
        assert!(out[..119].iter().all(|r| r.score.is_none()));
        assert!(out[120].score.is_some());
        let spike = &out[1200];
        assert_eq!(
            spike.severity,
            Some(Severity::Critical),
            "{:?}",
            spike.score
        );
        let lowest = out
            .iter()
            .filter_map(|r| r.score)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(spike.score, Some(lowest), "the spike ranks lowest");
    }

    #[test]
    fn a_replay_of_the_same_rows_and_api_scores_bit_identically() {
        let pts = series(1500, 1200);
        let opts = |api: &str| ReplayOptions {
            api_name: api.to_string(),
            ..ReplayOptions::default()
        };
        let bits = |out: Vec<Scored>| -> Vec<Option<u64>> {
            out.iter().map(|r| r.score.map(f64::to_bits)).collect()
        };
        let a = bits(replay(&pts, &opts("checkout")));
        let b = bits(replay(&pts, &opts("checkout")));
        assert_eq!(a, b);
        // Another API name seeds other forests.
        let other = bits(replay(&pts, &opts("payments")));
        assert_ne!(a, other);
    }

    #[test]
    fn negative_values_are_values_for_any_metric_and_failures_for_response_times() {
        // A signal around 0 (as NAB's art_daily_flatmiddle): shifted down.
        let pts: Vec<Point> = series(400, -1)
            .into_iter()
            .map(|p| Point {
                value: p.value.map(|v| v - 130.0),
                ..p
            })
            .collect();
        assert!(pts.iter().filter(|p| p.value < Some(0.0)).count() > 100);
        let any = replay(
            &pts,
            &ReplayOptions {
                domain: ValueDomain::AnyValue,
                ..ReplayOptions::default()
            },
        );
        let critical = any
            .iter()
            .filter(|r| r.severity == Some(Severity::Critical))
            .count();
        assert!(critical < 20, "{critical} critical rows on a quiet series");
        let latency = replay(&pts, &ReplayOptions::default());
        let down = latency
            .iter()
            .zip(&pts)
            .filter(|(r, p)| p.value < Some(0.0) && r.severity >= Some(Severity::High))
            .count();
        let negative = pts.iter().filter(|p| p.value < Some(0.0)).count();
        assert_eq!(down, negative, "every negative response time is a failure");
    }

    #[test]
    fn gaps_in_the_values_are_failures_not_lost_rows() {
        let csv = "timestamp,value\n2026-01-01 00:00:00,1\n2026-01-01 00:05:00,\n2026-01-01 00:10:00,NaN\n2026-01-01 00:15:00,3\n";
        let pts = read_csv(csv.as_bytes(), "timestamp", "value").unwrap();
        assert_eq!(pts.len(), 4);
        assert!(!pts[1].success && !pts[2].success);
        let out = replay(&pts, &ReplayOptions::default());
        assert_eq!(
            out[2].severity,
            Some(Severity::Critical),
            "2nd failure in a row"
        );
        let mut buf = Vec::new();
        write_csv(&mut buf, &out).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.starts_with("timestamp,value,anomaly_score,severity\n2026-01-01T00:00:00Z,1,,\n"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 5);
    }

    #[test]
    fn bad_csv_input_names_the_problem() {
        let err = read_csv("time,v\n".as_bytes(), "timestamp", "value").unwrap_err();
        assert!(err.to_string().contains("`timestamp`"), "{err}");
        let err = read_csv(
            "timestamp,value\nyesterday,1\n".as_bytes(),
            "timestamp",
            "value",
        )
        .unwrap_err();
        assert!(err.to_string().contains("row 2"), "{err}");
    }

    #[test]
    fn duplicate_timestamps_are_passed_through_unscored() {
        let mut pts = series(200, -1);
        pts.insert(150, pts[149].clone());
        let out = replay(&pts, &ReplayOptions::default());
        assert_eq!(out.len(), 201);
        assert!(out[150].score.is_none());
        assert!(out[151].score.is_some());
    }
}
