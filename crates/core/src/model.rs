//! One Isolation Forest per API, and what its scores mean.
//!
//! Training uses the `extended-isolation-forest` crate on the API's feature
//! vectors, standardised with the training set's mean and standard
//! deviation. Scores follow scikit-learn's `decision_function`, as the
//! original system did: `anomaly_score = offset - s(x)`, where `s(x) =
//! 2^(-E(h(x)) / c(n))` is the crate's score (near 1 for isolated points,
//! about 0.5 and below for ordinary ones) and `offset` is the
//! `1 - contamination` quantile of `s` over the training rows (linear
//! interpolation, like NumPy), so that a `contamination` share of the
//! training rows score below 0. Below 0 is an anomaly; lower is worse.

use extended_isolation_forest::{Forest, ForestOptions};
use serde::{Deserialize, Serialize};

use crate::features::N_FEATURES;

/// Training parameters (`N_ESTIMATORS`, `MAX_SAMPLES`, `CONTAMINATION`,
/// `EXTENSION_LEVEL`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelParams {
    /// Trees in the forest.
    pub n_trees: usize,
    /// Samples per tree: `min(max_samples, n)`.
    pub max_samples: usize,
    /// Share of the training rows expected to be anomalous (0 < c < 0.5).
    pub contamination: f64,
    /// 0 is the classic axis-parallel Isolation Forest (as scikit-learn's);
    /// up to `N_FEATURES - 1` tilts the cuts (the "extended" forest).
    pub extension_level: usize,
}

impl Default for ModelParams {
    fn default() -> Self {
        ModelParams {
            n_trees: 100,
            max_samples: 256,
            contamination: 0.1,
            extension_level: 0,
        }
    }
}

/// Resolution of standardised features, in standard deviations.
pub const GRID: f64 = 1e-4;

/// Per-feature standardisation fitted on the training set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    pub mean: [f64; N_FEATURES],
    /// Standard deviation (population); a constant feature gets 1.
    pub std: [f64; N_FEATURES],
}

impl Scaler {
    pub fn fit(rows: &[[f64; N_FEATURES]]) -> Scaler {
        let n = rows.len().max(1) as f64;
        let mut mean = [0.0; N_FEATURES];
        let mut std = [0.0; N_FEATURES];
        for r in rows {
            for i in 0..N_FEATURES {
                mean[i] += r[i] / n;
            }
        }
        for r in rows {
            for i in 0..N_FEATURES {
                std[i] += (r[i] - mean[i]).powi(2) / n;
            }
        }
        for s in &mut std {
            *s = s.sqrt();
            if !s.is_finite() || *s < 1e-12 {
                *s = 1.0;
            }
        }
        Scaler { mean, std }
    }

    /// Standardises `x` and rounds it to [`GRID`] standard deviations.
    ///
    /// The rounding is not cosmetic: `extended-isolation-forest` 0.2.3 draws
    /// split points with rand 0.8's `Uniform::new(min, max)`, whose
    /// constructor loops about `|min| / (max - min)` times (rand#1299), so a
    /// tree node whose values differ by a few ulps (rolling means of equal
    /// values summed in another order) would take forever to train. On the
    /// grid such values are equal, and an equal range is never sampled.
    /// Scoring uses the same grid, so train and score see the same values.
    pub fn apply(&self, x: &[f64; N_FEATURES]) -> [f64; N_FEATURES] {
        let mut out = [0.0; N_FEATURES];
        for i in 0..N_FEATURES {
            let z = (x[i] - self.mean[i]) / self.std[i];
            out[i] = (z / GRID).round() * GRID;
        }
        out
    }
}

/// Why a model could not be trained or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("not enough training data: {got} rows, need at least {need}")]
    TooFewRows { got: usize, need: usize },
    #[error("invalid model parameters: {0}")]
    Params(String),
    #[error("training data holds a non-finite value")]
    NonFinite,
    #[error("cannot (de)serialise the forest: {0}")]
    Codec(#[from] postcard::Error),
}

/// A trained model for one API.
pub struct Model {
    pub params: ModelParams,
    pub scaler: Scaler,
    /// `anomaly_score = offset - s(x)`.
    pub offset: f64,
    /// Rows it was trained on.
    pub sample_count: usize,
    forest: Forest<f64, N_FEATURES>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("params", &self.params)
            .field("offset", &self.offset)
            .field("sample_count", &self.sample_count)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Trains on `rows` (feature vectors, unscaled).
    pub fn train(rows: &[[f64; N_FEATURES]], params: &ModelParams) -> Result<Model, ModelError> {
        if params.n_trees == 0 || params.max_samples < 2 {
            return Err(ModelError::Params(
                "n_trees must be at least 1 and max_samples at least 2".into(),
            ));
        }
        if !(params.contamination > 0.0 && params.contamination < 0.5) {
            return Err(ModelError::Params(format!(
                "contamination must be in (0, 0.5), got {}",
                params.contamination
            )));
        }
        if params.extension_level >= N_FEATURES {
            return Err(ModelError::Params(format!(
                "extension level must be below {N_FEATURES}, got {}",
                params.extension_level
            )));
        }
        if rows.len() < 2 {
            return Err(ModelError::TooFewRows {
                got: rows.len(),
                need: 2,
            });
        }
        if rows.iter().flatten().any(|v| !v.is_finite()) {
            return Err(ModelError::NonFinite);
        }
        let scaler = Scaler::fit(rows);
        let scaled: Vec<[f64; N_FEATURES]> = rows.iter().map(|r| scaler.apply(r)).collect();
        let options = ForestOptions {
            n_trees: params.n_trees,
            sample_size: params.max_samples.min(rows.len()),
            max_tree_depth: None,
            extension_level: params.extension_level,
        };
        let forest =
            Forest::from_slice(&scaled, &options).map_err(|e| ModelError::Params(e.to_string()))?;
        let mut s: Vec<f64> = scaled.iter().map(|x| forest.score(x)).collect();
        let offset = quantile(&mut s, 1.0 - params.contamination);
        Ok(Model {
            params: params.clone(),
            scaler,
            offset,
            sample_count: rows.len(),
            forest,
        })
    }

    /// The crate's score `s(x)`: near 1 isolated, about 0.5 and below ordinary.
    pub fn raw_score(&self, x: &[f64; N_FEATURES]) -> f64 {
        self.forest.score(&self.scaler.apply(x))
    }

    /// `offset - s(x)`: below 0 is anomalous, lower is worse.
    pub fn score(&self, x: &[f64; N_FEATURES]) -> f64 {
        self.offset - self.raw_score(x)
    }

    /// The forest, serialised (postcard).
    pub fn forest_bytes(&self) -> Result<Vec<u8>, ModelError> {
        Ok(postcard::to_stdvec(&self.forest)?)
    }

    /// Rebuilds a stored model.
    pub fn from_parts(
        params: ModelParams,
        scaler: Scaler,
        offset: f64,
        sample_count: usize,
        forest: &[u8],
    ) -> Result<Model, ModelError> {
        Ok(Model {
            params,
            scaler,
            offset,
            sample_count,
            forest: postcard::from_bytes(forest)?,
        })
    }
}

/// Quantile `q` (0..=1) with linear interpolation between closest ranks
/// (NumPy's default). Sorts `v`. 0 for an empty slice.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// How bad an anomaly is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Severity, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            _ => Err(format!("expected critical, high or medium, got `{s}`")),
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Score thresholds (`SEVERITY_CRITICAL`, `SEVERITY_HIGH`): critical below
/// `critical`, high below `high`, medium below 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub critical: f64,
    pub high: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            critical: -0.2,
            high: -0.1,
        }
    }
}

impl Thresholds {
    /// The severity of a score, or `None` when it is not anomalous (>= 0).
    pub fn classify(&self, score: f64) -> Option<Severity> {
        if score < self.critical {
            Some(Severity::Critical)
        } else if score < self.high {
            Some(Severity::High)
        } else if score < 0.0 {
            Some(Severity::Medium)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random series (xorshift), no extra crates.
    fn normal_rows(n: usize, seed: u64) -> Vec<[f64; N_FEATURES]> {
        let mut state = seed.max(1);
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 10_000) as f64 / 10_000.0
        };
        (0..n)
            .map(|i| {
                let rt = 100.0 + 20.0 * (next() - 0.5);
                [
                    rt,
                    100.0,
                    5.0,
                    (rt - 100.0) / 5.0,
                    rt - 100.0,
                    0.01 * (next() - 0.5),
                    (i % 24) as f64,
                    (i % 7) as f64,
                ]
            })
            .collect()
    }

    #[test]
    fn quantile_interpolates_like_numpy() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&mut v, 0.0), 1.0);
        assert_eq!(quantile(&mut v, 1.0), 4.0);
        assert!((quantile(&mut v, 0.5) - 2.5).abs() < 1e-12);
        assert!((quantile(&mut v, 0.9) - 3.7).abs() < 1e-12);
    }

    #[test]
    fn thresholds_order_critical_below_high_below_medium() {
        let t = Thresholds::default();
        assert_eq!(t.classify(-0.25), Some(Severity::Critical));
        assert_eq!(t.classify(-0.2), Some(Severity::High));
        assert_eq!(t.classify(-0.15), Some(Severity::High));
        assert_eq!(t.classify(-0.1), Some(Severity::Medium));
        assert_eq!(t.classify(-0.01), Some(Severity::Medium));
        assert_eq!(t.classify(0.0), None);
        assert!(Severity::Critical > Severity::High && Severity::High > Severity::Medium);
    }

    #[test]
    fn the_contamination_share_of_training_rows_scores_below_zero() {
        let rows = normal_rows(1000, 7);
        let m = Model::train(&rows, &ModelParams::default()).unwrap();
        let below = rows.iter().filter(|r| m.score(r) < 0.0).count();
        // By construction of the offset: 10% of 1000, give or take ties.
        assert!((95..=105).contains(&below), "{below} rows below 0");
    }

    #[test]
    fn ten_times_slower_is_critical_and_ordinary_is_not_anomalous() {
        use crate::features::{FeatureState, Observed};
        use chrono::{Duration, TimeZone, Utc};
        // A realistic API: 100 ms plus an exponential tail (mean 20 ms),
        // checked every 15 s.
        let mut noise: u64 = 88172645463325252;
        let t0 = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
        let mut state = FeatureState::new();
        let mut rows = Vec::new();
        let mut next_rt = || {
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            let u = (noise % 100_000) as f64 / 100_000.0;
            100.0 + 20.0 * -(1.0 - u).ln()
        };
        for i in 0..1000 {
            if let Observed::Scored(f) =
                state.push(t0 + Duration::seconds(15 * i), Some(next_rt()), true)
            {
                rows.push(f.to_array());
            }
        }
        let m = Model::train(&rows, &ModelParams::default()).unwrap();
        let t = Thresholds::default();
        let mut probe = state.clone();
        let at = t0 + Duration::seconds(15 * 1000);
        let Observed::Scored(slow) = probe.push(at, Some(1000.0), true) else {
            panic!("scored")
        };
        let score = m.score(&slow.to_array());
        assert_eq!(t.classify(score), Some(Severity::Critical), "score {score}");
        let mut probe = state.clone();
        let Observed::Scored(ordinary) = probe.push(at, Some(100.0), true) else {
            panic!("scored")
        };
        let score = m.score(&ordinary.to_array());
        assert!(score > 0.0, "ordinary score {score}");
    }

    #[test]
    fn a_stored_model_scores_exactly_as_before() {
        let rows = normal_rows(300, 3);
        let m = Model::train(&rows, &ModelParams::default()).unwrap();
        let bytes = m.forest_bytes().unwrap();
        let back = Model::from_parts(
            m.params.clone(),
            m.scaler.clone(),
            m.offset,
            m.sample_count,
            &bytes,
        )
        .unwrap();
        for r in rows.iter().take(50) {
            assert_eq!(m.score(r), back.score(r));
        }
        assert!(
            Model::from_parts(m.params.clone(), m.scaler.clone(), 0.0, 1, &bytes[..10]).is_err()
        );
    }

    #[test]
    fn bad_parameters_and_data_are_refused() {
        let rows = normal_rows(10, 1);
        let p = ModelParams {
            contamination: 0.7,
            ..ModelParams::default()
        };
        assert!(matches!(
            Model::train(&rows, &p),
            Err(ModelError::Params(_))
        ));
        assert!(matches!(
            Model::train(&rows[..1], &ModelParams::default()),
            Err(ModelError::TooFewRows { .. })
        ));
        let mut bad = rows.clone();
        bad[3][0] = f64::NAN;
        assert!(matches!(
            Model::train(&bad, &ModelParams::default()),
            Err(ModelError::NonFinite)
        ));
    }

    #[test]
    fn values_a_few_ulps_apart_do_not_hang_training() {
        // Half the rows at 0, half at 100 or one ulp above: a node holding
        // only the latter would make the crate's sampler loop ~1e15 times.
        let rows: Vec<[f64; N_FEATURES]> = (0..400)
            .map(|i| {
                let v = match i % 4 {
                    0 | 1 => 0.0,
                    2 => 100.0,
                    _ => f64::from_bits(100.0f64.to_bits() + 1),
                };
                [v, v, v, v, v, v, (i % 24) as f64, (i % 7) as f64]
            })
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let m = Model::train(&rows, &ModelParams::default()).map(|m| m.score(&rows[2]));
            let _ = tx.send(m.is_ok());
        });
        let done = rx.recv_timeout(std::time::Duration::from_secs(60));
        assert_eq!(done, Ok(true), "training finished within 60 s");
    }

    #[test]
    fn small_sets_train_with_samples_capped_at_their_size() {
        let rows = normal_rows(120, 5);
        let m = Model::train(&rows, &ModelParams::default()).unwrap();
        assert_eq!(m.sample_count, 120);
        assert!(m.score(&rows[0]).is_finite());
    }
}
