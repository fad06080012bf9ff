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
//!
//! Training is deterministic: the forest draws its random numbers from a
//! generator seeded with [`TrainingSpec::seed`] ([`model_seed`] of the API
//! name and model version), so the same rows give the same scores in the
//! service, in replay and in tests.

use extended_isolation_forest::{Forest, ForestOptions};
use serde::{Deserialize, Serialize};

use crate::features::{ValueDomain, N_FEATURES};
use crate::forest::{CompactError, CompactForest};

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

/// The median of each column of `rows` (the upper median for an even
/// count; `rows` is not empty). Linear time per column.
fn medians(rows: &[[f64; N_FEATURES]]) -> [f64; N_FEATURES] {
    let mut column = Vec::with_capacity(rows.len());
    std::array::from_fn(|i| {
        column.clear();
        column.extend(rows.iter().map(|r| r[i]));
        let mid = column.len() / 2;
        *column.select_nth_unstable_by(mid, f64::total_cmp).1
    })
}

/// Resolution of standardised features, in standard deviations.
pub const GRID: f64 = 1e-4;

/// Per-feature standardisation fitted on the training set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaler {
    pub mean: [f64; N_FEATURES],
    /// Standard deviation (population); a constant feature gets 1.
    pub std: [f64; N_FEATURES],
    /// Features left out of the model: standardised to 0 in training and
    /// scoring, so no cut ever uses them (`hour` and `weekday` until the
    /// training rows span a week, see [`SEASONAL_SPAN`]).
    #[serde(default)]
    pub ignored: [bool; N_FEATURES],
    /// Smallest and largest standardised training value of each feature,
    /// for [`Model::extrapolation`]. `None` in models stored before it.
    #[serde(default)]
    pub range: Option<([f64; N_FEATURES], [f64; N_FEATURES])>,
    /// For response times, the practical unit of each feature, in standard
    /// deviations (see [`practical_units`]); `None` for other metrics and
    /// for models stored before it.
    #[serde(default)]
    pub margin: Option<[f64; N_FEATURES]>,
    /// Median of each feature over the training rows, in the feature's own
    /// unit: the healthy baseline that details and severities compare
    /// with (see [`Model::usual`]). `None` in models stored before it.
    #[serde(default)]
    pub median: Option<[f64; N_FEATURES]>,
}

impl Scaler {
    /// Fits on `rows`, leaving out the features where `ignored` is true.
    pub fn fit(rows: &[[f64; N_FEATURES]], ignored: [bool; N_FEATURES]) -> Scaler {
        Scaler::fit_apply(rows, ignored).0
    }

    /// [`Scaler::fit`], and the rows standardised with it.
    pub fn fit_apply(
        rows: &[[f64; N_FEATURES]],
        ignored: [bool; N_FEATURES],
    ) -> (Scaler, Vec<[f64; N_FEATURES]>) {
        let n = rows.len().max(1) as f64;
        let mut mean = [0.0; N_FEATURES];
        let mut std = [0.0; N_FEATURES];
        for r in rows {
            for i in 0..N_FEATURES {
                mean[i] += r[i];
            }
        }
        for m in &mut mean {
            *m /= n;
        }
        for r in rows {
            for i in 0..N_FEATURES {
                std[i] += (r[i] - mean[i]).powi(2);
            }
        }
        for s in &mut std {
            *s = (*s / n).sqrt();
            if !s.is_finite() || *s < 1e-12 {
                *s = 1.0;
            }
        }
        let mut scaler = Scaler {
            mean,
            std,
            ignored,
            range: None,
            margin: None,
            median: None,
        };
        let scaled: Vec<[f64; N_FEATURES]> = rows.iter().map(|r| scaler.apply(r)).collect();
        let mut lo = [f64::INFINITY; N_FEATURES];
        let mut hi = [f64::NEG_INFINITY; N_FEATURES];
        for x in &scaled {
            for i in 0..N_FEATURES {
                lo[i] = lo[i].min(x[i]);
                hi[i] = hi[i].max(x[i]);
            }
        }
        if !rows.is_empty() {
            scaler.range = Some((lo, hi));
            scaler.median = Some(medians(rows));
        }
        (scaler, scaled)
    }

    /// Standardises `x` in grid steps: `round(z / GRID)`, saturated to
    /// `i32` (0 for an ignored feature).
    ///
    /// The grid is not cosmetic. Values a few ulps apart (rolling means of
    /// equal values summed in another order) become equal, so a cut never
    /// separates rounding noise, and scoring sees exactly the values
    /// training saw; and an integer grid lets [`CompactForest`] store each
    /// threshold in 4 bytes.
    pub fn steps(&self, x: &[f64; N_FEATURES]) -> [i32; N_FEATURES] {
        let mut out = [0; N_FEATURES];
        for i in 0..N_FEATURES {
            if !self.ignored[i] {
                let v = (x[i] - self.mean[i]) / self.std[i] / GRID;
                // Rounded half away from zero by truncation (a single
                // instruction, where `f64::round` is a libm call); `as`
                // saturates and maps NaN to 0.
                out[i] = if v >= 0.0 { v + 0.5 } else { v - 0.5 } as i32;
            }
        }
        out
    }

    /// Standardises `x` on the grid, as `f64` (`steps * GRID`).
    pub fn apply(&self, x: &[f64; N_FEATURES]) -> [f64; N_FEATURES] {
        self.steps(x).map(|k| f64::from(k) * GRID)
    }
}

/// How long the training rows must span before `hour` and `weekday` enter
/// the model: 13 days, the shortest span that always holds every weekday
/// at least twice (so a weekly pattern is a pattern, not one unusual
/// Monday). With the default 7-day `TRAINING_WINDOW` the forest therefore
/// cuts on the six response-time features only; a 14-day or longer window
/// brings the calendar in. Measured on NAB (docs/nab-evaluation.md): with
/// the time features always in, each new weekday is a value the model has
/// never seen and is isolated for that alone (a new API flagged 18-33% of
/// its rows per day in its first week; 143 false positives per 1,000 rows
/// against 98 without them); entering after 6 days still cost 110.
pub const SEASONAL_SPAN: chrono::Duration = chrono::Duration::days(13);

/// The features a model trained on rows spanning `span` leaves out.
pub fn ignored_features(span: chrono::Duration) -> [bool; N_FEATURES] {
    let mut ignored = [false; N_FEATURES];
    if span < SEASONAL_SPAN {
        for i in SEASONAL_FEATURES {
            ignored[i] = true;
        }
    }
    ignored
}

/// What a training knows beyond its rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrainingSpec {
    /// Features left out (see [`ignored_features`]).
    pub ignored: [bool; N_FEATURES],
    /// What the values are: response times get a practical margin before a
    /// value counts as beyond the range (see [`practical_units`]).
    pub domain: ValueDomain,
    /// Seeds the forest's random draws (see [`model_seed`]): the same rows
    /// and seed give the same trees, hence bit-identical scores.
    pub seed: u64,
}

/// The seed of the forest of `api_name`'s model `version`: FNV-1a (64 bit)
/// of the name, a 0 byte, and the version's little-endian bytes. A stable
/// hash by definition (std's `DefaultHasher` may change between Rust
/// releases), so a model trained by the service, by `detector replay` or
/// by a test from the same rows is the same forest.
pub fn model_seed(api_name: &str, version: i64) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    api_name
        .as_bytes()
        .iter()
        .chain(&[0u8])
        .chain(&version.to_le_bytes())
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// The practical unit of each feature for response times, in the
/// feature's standard deviations: the larger of the standard deviation and
/// what "one more mean response time" means for the feature: the mean
/// response time for `rt`, `rolling_mean` and `rolling_std` (at least
/// 1 ms), 100 for `pct_deviation`, 1 for `rate_of_change`. A value counts
/// as beyond the range only past the range widened by
/// [`PRACTICAL_MARGIN_UNITS`] units on each side, and the distance is
/// counted in units. `z_score` does not count (unit 0): it is
/// bounded (`|z| <= 59 / sqrt(60)`, about 7.6), so a 3 ms hiccup on a quiet
/// API and a ten times slower check both reach the bound; how unusual it
/// is, the forest already says.
///
/// Why: an API that answers in 41 ms +- 0.3 ms and once takes 44 ms is ten
/// standard deviations off, and its forest rightly finds that unusual
/// (medium or high: the forest's score saturates there); but a person
/// should be paged when it is several times slower, not 3 ms slower. With
/// the margin a check is pushed past the forest's score from about 3x the
/// usual response time, and is critical by it from about 3.5-4x (a 10x
/// slower check is 8 units out). Any metric replayed from a CSV
/// ([`ValueDomain::AnyValue`]) has no margin: past the range counts in
/// standard deviations, which is what ranks best on NAB.
pub fn practical_units(scaler: &Scaler) -> [f64; N_FEATURES] {
    let level = scaler.mean[0].abs().max(1.0);
    // 0 marks a feature that does not count: `z_score`, and the cyclic
    // `hour` and `weekday` (which never count anyway). JSON has no infinity.
    let floors = [level, level, level, 0.0, 100.0, 1.0, 0.0, 0.0];
    std::array::from_fn(|i| {
        if floors[i] > 0.0 {
            (floors[i] / scaler.std[i]).max(1.0)
        } else {
            0.0
        }
    })
}

/// How many practical units a response time's range is widened by on each
/// side (see [`practical_units`]).
pub const PRACTICAL_MARGIN_UNITS: f64 = 2.0;

/// Training rows used to set the offset: at most this many, evenly spaced.
/// The share of training rows below 0 then has a binomial standard error
/// of about 0.9 percentage points at the default contamination of 0.1
/// (0.3 at 0.01), and the offset pass costs about 1.5 ms instead of 60 ms
/// for 40,320 rows: it was 96% of a training and of a replay.
pub const OFFSET_ROWS: usize = 1024;

/// How fast a point beyond the training range moves towards "isolated at
/// once" (s = 1): `s' = 1 - (1 - s) * exp(-d / EXTRAPOLATION_SCALE)`, `d`
/// the distance beyond the range in training standard deviations. 0.5
/// measured best on NAB among 0.3, 0.5, 1, 2 and 3 (within about 1 point
/// from 0.3 to 1; 3 lost 4).
pub const EXTRAPOLATION_SCALE: f64 = 0.5;

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
    #[error("unusable forest: {0}")]
    Forest(String),
}

/// The trees of a model: compact (axis-parallel, the default) or, for
/// oblique cuts, the crate's own forest.
enum Trees {
    Compact(CompactForest<N_FEATURES>),
    Crate(Box<Forest<f64, N_FEATURES>>),
}

/// A trained model for one API.
pub struct Model {
    pub params: ModelParams,
    pub scaler: Scaler,
    /// `anomaly_score = offset - s(x)`.
    pub offset: f64,
    /// Rows it was trained on.
    pub sample_count: usize,
    trees: Trees,
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

/// How the trees are stored in [`Model::forest_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForestFormat {
    /// The crate's own serde form (postcard): oblique forests, and every
    /// model stored before the compact form existed.
    Crate,
    /// [`CompactForest`] (postcard).
    Compact,
}

impl Model {
    /// Trains on `rows` (feature vectors of response times, unscaled) with
    /// every feature.
    pub fn train(rows: &[[f64; N_FEATURES]], params: &ModelParams) -> Result<Model, ModelError> {
        Model::train_for(rows, params, &TrainingSpec::default())
    }

    /// Trains on `rows` as `spec` says.
    pub fn train_for(
        rows: &[[f64; N_FEATURES]],
        params: &ModelParams,
        spec: &TrainingSpec,
    ) -> Result<Model, ModelError> {
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
        let (mut scaler, scaled) = Scaler::fit_apply(rows, spec.ignored);
        if spec.domain == ValueDomain::ResponseTime {
            scaler.margin = Some(practical_units(&scaler));
        }
        let options = ForestOptions {
            n_trees: params.n_trees,
            sample_size: params.max_samples.min(rows.len()),
            max_tree_depth: None,
            extension_level: params.extension_level,
        };
        let forest = Forest::from_slice_seeded(&scaled, &options, spec.seed)
            .map_err(|e| ModelError::Params(e.to_string()))?;
        let trees = Trees::from_crate(forest, &scaler.ignored)?;
        let mut model = Model {
            params: params.clone(),
            scaler,
            offset: 0.0,
            sample_count: rows.len(),
            trees,
        };
        // The offset from at most OFFSET_ROWS evenly spaced training rows.
        // Training rows lie inside the training range: their score is the
        // forest's own.
        let step = rows.len().div_ceil(OFFSET_ROWS).max(1);
        let mut s: Vec<f64> = match &model.trees {
            Trees::Compact(c) => {
                let steps: Vec<_> = rows
                    .iter()
                    .step_by(step)
                    .map(|r| model.scaler.steps(r))
                    .collect();
                c.score_many(&steps)
            }
            Trees::Crate(_) => rows
                .iter()
                .step_by(step)
                .map(|r| model.forest_score(r))
                .collect(),
        };
        model.offset = quantile(&mut s, 1.0 - params.contamination);
        Ok(model)
    }

    /// The crate's score `s(x)` (near 1 isolated, about 0.5 and below
    /// ordinary), extended beyond the training range: see
    /// [`Model::extrapolation`].
    pub fn raw_score(&self, x: &[f64; N_FEATURES]) -> f64 {
        extend(self.forest_score(x), self.extrapolation(x))
    }

    /// The forest's own score `2^(-E(h)/c)`.
    pub fn forest_score(&self, x: &[f64; N_FEATURES]) -> f64 {
        match &self.trees {
            Trees::Compact(c) => c.score(&self.scaler.steps(x)),
            Trees::Crate(f) => f.score(&self.scaler.apply(x)),
        }
    }

    /// How far `x` lies beyond the training range, in training standard
    /// deviations (for response times: beyond the range widened by the
    /// practical margin, in practical units, see [`practical_units`]): the
    /// largest distance over the features other than `hour` and `weekday`
    /// (cyclic: a new hour is not "further").
    ///
    /// An Isolation Forest cannot tell a point just past the largest
    /// training value from one a hundred times past it: cuts are drawn
    /// inside the training range, so both follow the extreme training
    /// point's path and get its score. A ten times slower API would score
    /// like the slowest check of the training week. [`Model::raw_score`]
    /// therefore moves `s` towards 1 (isolated at once) as
    /// `1 - (1 - s) * exp(-d / EXTRAPOLATION_SCALE)`: unchanged inside the
    /// range (so the offset and the contamination share are the forest's),
    /// half way to 1 at 0.35 standard deviations beyond, 95% at 1.5.
    pub fn extrapolation(&self, x: &[f64; N_FEATURES]) -> f64 {
        match &self.scaler.range {
            Some((lo, hi)) => self.beyond(&self.scaler.apply(x), lo, hi),
            None => 0.0,
        }
    }

    /// The largest distance of standardised `z` beyond `[lo, hi]` over the
    /// features that count (see [`Model::extrapolation`]).
    fn beyond(&self, z: &[f64; N_FEATURES], lo: &[f64; N_FEATURES], hi: &[f64; N_FEATURES]) -> f64 {
        (0..N_FEATURES)
            .filter_map(|i| self.excess(i, z, lo, hi))
            .fold(0.0, f64::max)
    }

    /// How far feature `i` of standardised `z` lies beyond `[lo, hi]`, as
    /// [`Model::extrapolation`] counts it; `None` for a feature that does
    /// not count.
    fn excess(
        &self,
        i: usize,
        z: &[f64; N_FEATURES],
        lo: &[f64; N_FEATURES],
        hi: &[f64; N_FEATURES],
    ) -> Option<f64> {
        if SEASONAL_FEATURES.contains(&i) || self.scaler.ignored[i] {
            return None;
        }
        let e = (z[i] - hi[i]).max(lo[i] - z[i]);
        match &self.scaler.margin {
            Some(m) if m[i] <= 0.0 || m[i].is_nan() => None,
            Some(m) => Some((e - PRACTICAL_MARGIN_UNITS * m[i]) / m[i]),
            None => Some(e),
        }
    }

    /// Scores `x` as the streaming detector does, then remembers it: the
    /// range that counts for [`Model::extrapolation`] is that of everything
    /// the model has seen, its training rows and then every row scored with
    /// it (`seen`, `None` at first). The first check beyond all of it is
    /// new and scores low; the next one at the same level is no longer new
    /// and gets the forest's own score (the extreme training point's),
    /// until a retraining takes the level in. A spike is one anomaly, not
    /// one per check until the next training, and a lasting shift is
    /// flagged where it starts. Measured on NAB: swept score 49.5 -> 53.7
    /// (docs/nab-evaluation.md).
    ///
    /// For response times (models with a practical margin) what the model
    /// has seen is its training rows and the last [`SEEN_MEMORY`] rows
    /// scored, and a feature beyond all of that counts by its distance
    /// from the *training* range, not from what was seen: one earlier
    /// spike must not blunt a later slowdown. Otherwise a spike to 10x
    /// made every later level below it "seen", and a sustained 5x slowdown
    /// only ever moved the rolling features a fraction of a practical unit
    /// past the last high, never past the margin: it stayed `high`
    /// (issue 11). Now its first check is critical when the spike is more
    /// than [`SEEN_MEMORY`] checks old, and the rolling mean's new highs
    /// make it critical within a few checks when it is not.
    pub fn score_seen(&self, x: &[f64; N_FEATURES], seen: &mut Option<SeenRange>) -> f64 {
        let Some((lo, hi)) = &self.scaler.range else {
            return self.score(x);
        };
        let range = seen.get_or_insert_with(|| SeenRange {
            lo: *lo,
            hi: *hi,
            recent: std::collections::VecDeque::new(),
        });
        let z = self.scaler.apply(x);
        if self.scaler.margin.is_some() {
            let (mut rlo, mut rhi) = (*lo, *hi);
            for r in &range.recent {
                for i in 0..N_FEATURES {
                    rlo[i] = rlo[i].min(r[i]);
                    rhi[i] = rhi[i].max(r[i]);
                }
            }
            let d = (0..N_FEATURES)
                .filter(|&i| z[i] > rhi[i] || z[i] < rlo[i])
                .filter_map(|i| self.excess(i, &z, lo, hi))
                .fold(0.0, f64::max);
            if range.recent.len() >= SEEN_MEMORY {
                range.recent.pop_front();
            }
            range.recent.push_back(z);
            return self.offset - extend(self.forest_score(x), d);
        }
        let d = self.beyond(&z, &range.lo, &range.hi);
        for ((lo, hi), z) in range.lo.iter_mut().zip(&mut range.hi).zip(z) {
            *lo = lo.min(z);
            *hi = hi.max(z);
        }
        self.offset - extend(self.forest_score(x), d)
    }

    /// The healthy baseline of feature `i`: its training median (the
    /// training mean for models stored before medians were kept).
    pub fn usual(&self, i: usize) -> f64 {
        match &self.scaler.median {
            Some(m) => m[i],
            None => self.scaler.mean[i],
        }
    }

    /// How far response time `rt` is from the training median, for a
    /// model of response times (`None` for any other metric: the practical
    /// floors of [`Thresholds::ceiling`] are in ms).
    pub fn change(&self, rt: f64) -> Option<Change> {
        self.scaler.margin.as_ref()?;
        Some(Change {
            rt,
            usual: self.usual(0),
        })
    }

    /// The features that make `x` unusual for this model, most unusual
    /// first (at most `max`): those beyond the training range, by their
    /// distance past it in training standard deviations; when none is,
    /// the features furthest from their training median, in the same
    /// measure. `hour` and `weekday` (cyclic) and ignored features are
    /// left out.
    pub fn drivers(&self, x: &[f64; N_FEATURES], max: usize) -> Vec<Driver> {
        let z = self.scaler.apply(x);
        let counted = |i: &usize| !SEASONAL_FEATURES.contains(i) && !self.scaler.ignored[*i];
        let mut out: Vec<Driver> = Vec::new();
        if let Some((lo, hi)) = &self.scaler.range {
            for i in (0..N_FEATURES).filter(counted) {
                let unscale = |v: f64| v * self.scaler.std[i] + self.scaler.mean[i];
                let place = if z[i] > hi[i] {
                    Some((Place::Above(unscale(hi[i])), z[i] - hi[i]))
                } else if z[i] < lo[i] {
                    Some((Place::Below(unscale(lo[i])), lo[i] - z[i]))
                } else {
                    None
                };
                if let Some((place, sds)) = place {
                    out.push(Driver {
                        feature: i,
                        value: x[i],
                        place,
                        sds,
                    });
                }
            }
        }
        if out.is_empty() {
            for i in (0..N_FEATURES).filter(counted) {
                let usual = self.usual(i);
                let sds = (x[i] - usual).abs() / self.scaler.std[i];
                if sds.is_finite() && sds > 0.0 {
                    out.push(Driver {
                        feature: i,
                        value: x[i],
                        place: Place::Inside(usual),
                        sds,
                    });
                }
            }
        }
        out.sort_by(|a, b| b.sds.total_cmp(&a.sds));
        out.truncate(max);
        out
    }

    /// `offset - s(x)`: below 0 is anomalous, lower is worse.
    pub fn score(&self, x: &[f64; N_FEATURES]) -> f64 {
        self.offset - self.raw_score(x)
    }

    /// The trees, serialised (postcard), and their format.
    pub fn forest_bytes(&self) -> Result<(ForestFormat, Vec<u8>), ModelError> {
        Ok(match &self.trees {
            Trees::Compact(c) => (ForestFormat::Compact, postcard::to_stdvec(c)?),
            Trees::Crate(f) => (ForestFormat::Crate, postcard::to_stdvec(f)?),
        })
    }

    /// Rebuilds a stored model.
    pub fn from_parts(
        params: ModelParams,
        scaler: Scaler,
        offset: f64,
        sample_count: usize,
        format: ForestFormat,
        forest: &[u8],
    ) -> Result<Model, ModelError> {
        let trees = match format {
            ForestFormat::Crate => {
                Trees::from_crate(postcard::from_bytes(forest)?, &scaler.ignored)?
            }
            ForestFormat::Compact => {
                let c: CompactForest<N_FEATURES> = postcard::from_bytes(forest)?;
                c.validate()
                    .map_err(|e| ModelError::Forest(e.to_string()))?;
                Trees::Compact(c)
            }
        };
        Ok(Model {
            params,
            scaler,
            offset,
            sample_count,
            trees,
        })
    }
}

/// One feature that makes a check unusual (see [`Model::drivers`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Driver {
    /// Index in [`crate::features::FEATURE_NAMES`].
    pub feature: usize,
    /// Its value, in its own unit.
    pub value: f64,
    /// Where it lies against the training data.
    pub place: Place,
    /// How far: past the training range (`Above`, `Below`) or from the
    /// training median (`Inside`), in training standard deviations.
    pub sds: f64,
}

/// Where a feature lies against the training data, with the training value
/// it is compared with (in the feature's own unit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Place {
    /// Above the largest training value.
    Above(f64),
    /// Below the smallest training value.
    Below(f64),
    /// Inside the training range; the training median.
    Inside(f64),
}

/// The standardised range of everything a model has seen (see
/// [`Model::score_seen`]). Serialisable: the detector saves it with its
/// watermark, so that a restart does not flag a level already flagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeenRange {
    /// Everything seen (metrics other than response times).
    lo: [f64; N_FEATURES],
    hi: [f64; N_FEATURES],
    /// The last [`SEEN_MEMORY`] rows scored, standardised (response times).
    recent: std::collections::VecDeque<[f64; N_FEATURES]>,
}

/// How many of the last scored rows a response-time model remembers as
/// seen (see [`Model::score_seen`]): 40 checks, 10 minutes at the usual
/// 15 s interval. A level that lasts stays seen while it lasts; a spike is
/// forgotten 40 checks later.
pub const SEEN_MEMORY: usize = 40;

/// `s` moved towards 1 for a point `d` standard deviations beyond the range.
fn extend(s: f64, d: f64) -> f64 {
    if d > 0.0 {
        1.0 - (1.0 - s) * (-d / EXTRAPOLATION_SCALE).exp()
    } else {
        s
    }
}

/// Indices of `hour` and `weekday` in the feature vector.
const SEASONAL_FEATURES: [usize; 2] = [6, 7];

impl Trees {
    /// The compact form when the forest has one (axis-parallel cuts).
    fn from_crate(
        forest: Forest<f64, N_FEATURES>,
        ignored: &[bool; N_FEATURES],
    ) -> Result<Trees, ModelError> {
        match CompactForest::from_forest_without(&forest, ignored) {
            Ok(c) => Ok(Trees::Compact(c)),
            Err(CompactError::Oblique) => Ok(Trees::Crate(Box::new(forest))),
            Err(e) => Err(ModelError::Forest(e.to_string())),
        }
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
/// `critical`, high below `high`, medium below 0; and for response times
/// the practical floors of a severity (`SEVERITY_CRITICAL_MIN_MS`,
/// `SEVERITY_CRITICAL_MIN_PCT`, see [`Thresholds::ceiling`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub critical: f64,
    pub high: f64,
    /// A response time is critical only this many ms or more away from
    /// its model's training median...
    pub critical_min_ms: f64,
    /// ...and this many percent of the median or more.
    pub critical_min_pct: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            critical: -0.2,
            high: -0.1,
            critical_min_ms: 50.0,
            critical_min_pct: 50.0,
        }
    }
}

/// Below this share of the critical floors (both in ms and in percent), a
/// change is tiny: at most `medium` (with the defaults: under 10 ms or
/// under 10%).
pub const TINY_SHARE: f64 = 0.2;

/// How far a response time is from its model's healthy baseline (see
/// [`Model::change`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    /// The response time (ms).
    pub rt: f64,
    /// The training median (ms).
    pub usual: f64,
}

impl Change {
    /// `|rt - usual|` in ms.
    pub fn abs_ms(&self) -> f64 {
        (self.rt - self.usual).abs()
    }

    /// `|rt - usual|` in percent of `usual` (infinite when `usual` is 0
    /// and `rt` is not).
    pub fn abs_pct(&self) -> f64 {
        if self.usual.abs() > f64::EPSILON {
            self.abs_ms() / self.usual.abs() * 100.0
        } else if self.abs_ms() > 0.0 {
            f64::INFINITY
        } else {
            0.0
        }
    }
}

impl Thresholds {
    /// The highest severity a change of response time may have: practical
    /// significance, not statistical. `critical` needs both
    /// [`Thresholds::critical_min_ms`] and [`Thresholds::critical_min_pct`]
    /// away from the training median (defaults: 50 ms and 50%); `high`
    /// needs [`TINY_SHARE`] of both (10 ms and 10%); anything smaller is
    /// tiny: `medium` at most. This holds inside the training range too:
    /// an 813 ms check on an API usually at 804 ms (+9 ms, +1%) may be
    /// statistically extreme on a very steady API, but it is medium; a
    /// 22 ms API at 33 ms (+11 ms, +50%) is high at most; at 220 ms it can
    /// be critical.
    pub fn ceiling(&self, change: &Change) -> Severity {
        let (ms, pct) = (change.abs_ms(), change.abs_pct());
        if ms >= self.critical_min_ms && pct >= self.critical_min_pct {
            Severity::Critical
        } else if ms >= TINY_SHARE * self.critical_min_ms
            && pct >= TINY_SHARE * self.critical_min_pct
        {
            Severity::High
        } else {
            Severity::Medium
        }
    }

    /// The severity of a check: that of its score ([`Thresholds::classify`]),
    /// capped for a response time by its [`Thresholds::ceiling`] (`change`
    /// is `None` for failures and for metrics that are not response
    /// times). An anomalous score stays an anomaly, at least `medium`.
    pub fn severity(&self, score: f64, change: Option<&Change>) -> Option<Severity> {
        let s = self.classify(score)?;
        Some(match change {
            Some(c) => s.min(self.ceiling(c)),
            None => s,
        })
    }

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
    use crate::features::FeatureState;

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
    fn the_same_rows_api_and_version_train_a_bit_identical_model() {
        let rows = normal_rows(800, 21);
        let spec = |api: &str, version| TrainingSpec {
            seed: model_seed(api, version),
            ..TrainingSpec::default()
        };
        let p = ModelParams::default();
        let a = Model::train_for(&rows, &p, &spec("checkout", 3)).unwrap();
        let b = Model::train_for(&rows, &p, &spec("checkout", 3)).unwrap();
        let mut probes = rows.clone();
        probes.push([130.0, 104.0, 9.0, 4.0, 25.0, 0.3, 1.0, 1.0]);
        probes.push([1e4; N_FEATURES]);
        for x in &probes {
            assert_eq!(a.score(x).to_bits(), b.score(x).to_bits(), "{x:?}");
        }
        assert_eq!(a.offset.to_bits(), b.offset.to_bits());
        assert_eq!(a.forest_bytes().unwrap(), b.forest_bytes().unwrap());
        // Another API, or the next version, draws other trees.
        let other = Model::train_for(&rows, &p, &spec("payments", 3)).unwrap();
        let next = Model::train_for(&rows, &p, &spec("checkout", 4)).unwrap();
        assert_ne!(a.forest_bytes().unwrap(), other.forest_bytes().unwrap());
        assert_ne!(a.forest_bytes().unwrap(), next.forest_bytes().unwrap());
        assert!(probes.iter().any(|x| a.score(x) != other.score(x)));
        // An oblique forest (the crate's own form) is seeded alike.
        let oblique = ModelParams {
            extension_level: 2,
            ..ModelParams::default()
        };
        let c = Model::train_for(&rows, &oblique, &spec("checkout", 3)).unwrap();
        let d = Model::train_for(&rows, &oblique, &spec("checkout", 3)).unwrap();
        assert_eq!(c.forest_bytes().unwrap(), d.forest_bytes().unwrap());
    }

    #[test]
    fn model_seeds_are_stable_and_tell_apis_and_versions_apart() {
        // Fixed values: a change of the hash would silently change every
        // replay's scores.
        assert_eq!(model_seed("checkout", 3), 0x7ca3_aa61_5fea_5a38);
        assert_ne!(model_seed("a", 1), model_seed("b", 1));
        assert_ne!(model_seed("a", 1), model_seed("a", 2));
        // The 0 byte keeps "ab" + version apart from "a" + another layout.
        assert_ne!(model_seed("ab", 0), model_seed("a", i64::from(b'b')));
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
        // The median check (100 + 20 ln 2 ms), not the fastest ever.
        let mut probe = state.clone();
        let Observed::Scored(ordinary) = probe.push(at, Some(114.0), true) else {
            panic!("scored")
        };
        let score = m.score(&ordinary.to_array());
        assert!(score > 0.0, "ordinary score {score}");
    }

    #[test]
    fn a_stored_model_scores_exactly_as_before() {
        let rows = normal_rows(300, 3);
        let m = Model::train(&rows, &ModelParams::default()).unwrap();
        let (format, bytes) = m.forest_bytes().unwrap();
        assert_eq!(format, ForestFormat::Compact);
        // The scaler goes through JSON in the models table: no infinity, no
        // NaN, nothing lost.
        let json = serde_json::to_string(&m.scaler).unwrap();
        let scaler: Scaler = serde_json::from_str(&json).unwrap();
        assert_eq!(scaler, m.scaler, "{json}");
        let back = Model::from_parts(
            m.params.clone(),
            scaler,
            m.offset,
            m.sample_count,
            format,
            &bytes,
        )
        .unwrap();
        for r in rows.iter().take(50) {
            assert_eq!(m.score(r), back.score(r));
        }
        let far = [1e6; N_FEATURES];
        assert_eq!(m.score(&far), back.score(&far));
        assert!(m.score(&far) < -0.2);
        assert!(Model::from_parts(
            m.params.clone(),
            m.scaler.clone(),
            0.0,
            1,
            format,
            &bytes[..10]
        )
        .is_err());
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

    /// Features of `n` successes of a smooth API: `base` ms with a jitter
    /// of +-`jitter` ms, every 15 s.
    fn smooth_api(n: usize, base: f64, jitter: f64) -> (Vec<[f64; N_FEATURES]>, FeatureState) {
        use crate::features::Observed;
        use chrono::{Duration, TimeZone, Utc};
        let t0 = Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap();
        let mut state = FeatureState::new();
        let mut rows = Vec::new();
        let mut x: u64 = 0x2545F4914F6CDD1D;
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x % 10_000) as f64 / 10_000.0;
            let rt = base + jitter * (2.0 * u - 1.0);
            if let Observed::Scored(f) =
                state.push(t0 + Duration::seconds(15 * i as i64), Some(rt), true)
            {
                rows.push(f.to_array());
            }
        }
        (rows, state)
    }

    fn probe(state: &FeatureState, rt: f64) -> [f64; N_FEATURES] {
        use crate::features::Observed;
        use chrono::{TimeZone, Utc};
        let at = Utc.with_ymd_and_hms(2026, 11, 3, 0, 0, 0).unwrap();
        match state.clone().push(at, Some(rt), true) {
            Observed::Scored(f) => f.to_array(),
            Observed::Failed { .. } => panic!("a success"),
        }
    }

    #[test]
    fn a_small_smooth_model_still_finds_ten_times_slower_critical() {
        // The end-to-end case: 40 checks at 40 ms +- 0.5 ms. The forest
        // alone saturates at the extreme training point's score ("high"
        // at best); the extrapolation term makes 400 ms critical.
        let (rows, state) = smooth_api(40, 40.0, 0.5);
        let m = Model::train(&rows, &ModelParams::default()).unwrap();
        let t = Thresholds::default();
        let slow = probe(&state, 400.0);
        // 400 ms is (400 - 40.5 - 2 x 40) / 40 = 7 practical units past
        // the range widened by the margin.
        assert!(m.extrapolation(&slow) > 6.0, "{}", m.extrapolation(&slow));
        let score = m.score(&slow);
        assert_eq!(t.classify(score), Some(Severity::Critical), "score {score}");
        let ordinary = m.score(&probe(&state, 40.1));
        assert!(ordinary > t.high, "ordinary score {ordinary}");
    }

    #[test]
    fn extrapolation_is_zero_inside_the_training_range_and_grows_outside() {
        let (rows, state) = smooth_api(500, 100.0, 10.0);
        let m = Model::train(&rows, &ModelParams::default()).unwrap();
        for r in &rows {
            assert_eq!(m.extrapolation(r), 0.0);
            assert_eq!(m.raw_score(r), m.forest_score(r));
        }
        // Further out is never less anomalous, and far out is near offset - 1.
        let scores: Vec<f64> = [111.0, 115.0, 130.0, 200.0, 1000.0]
            .iter()
            .map(|&rt| m.score(&probe(&state, rt)))
            .collect();
        for w in scores.windows(2) {
            assert!(w[1] <= w[0], "{scores:?}");
        }
        assert!(scores[4] < m.offset - 0.99, "{scores:?}");
    }

    #[test]
    fn the_offset_from_a_subset_keeps_the_contamination_share() {
        let rows = normal_rows(10_000, 11);
        let m = Model::train(&rows, &ModelParams::default()).unwrap();
        let below = rows.iter().filter(|r| m.score(r) < 0.0).count();
        // 10% of 10,000 from 1,024 rows: binomial s.e. about 0.9 points.
        assert!((750..=1250).contains(&below), "{below} rows below 0");
    }

    #[test]
    fn ignored_features_do_not_change_the_score() {
        assert_eq!(crate::features::FEATURE_NAMES[SEASONAL_FEATURES[0]], "hour");
        assert_eq!(
            crate::features::FEATURE_NAMES[SEASONAL_FEATURES[1]],
            "weekday"
        );
        let young = ignored_features(chrono::Duration::days(3));
        assert!(young[6] && young[7] && !young[..6].iter().any(|b| *b));
        assert_eq!(
            ignored_features(chrono::Duration::days(13)),
            [false; N_FEATURES]
        );
        let rows = normal_rows(600, 9);
        let spec = TrainingSpec {
            ignored: young,
            ..TrainingSpec::default()
        };
        let m = Model::train_for(&rows, &ModelParams::default(), &spec).unwrap();
        let mut other = rows[5];
        other[6] = 23.0;
        other[7] = 6.0;
        assert_eq!(m.score(&rows[5]), m.score(&other));
        let all = Model::train(&rows, &ModelParams::default()).unwrap();
        assert_eq!(all.scaler.ignored, [false; N_FEATURES]);
    }

    #[test]
    fn models_stored_in_the_crate_format_load_and_score_alike() {
        let rows = normal_rows(400, 13);
        let m = Model::train(&rows, &ModelParams::default()).unwrap();
        // A forest in the crate's own form, as stored before the compact one.
        let scaled: Vec<[f64; N_FEATURES]> = rows.iter().map(|r| m.scaler.apply(r)).collect();
        let forest = Forest::<f64, N_FEATURES>::from_slice(
            &scaled,
            &ForestOptions {
                n_trees: 50,
                sample_size: 256,
                max_tree_depth: None,
                extension_level: 0,
            },
        )
        .unwrap();
        let bytes = postcard::to_stdvec(&forest).unwrap();
        let old = Model::from_parts(
            m.params.clone(),
            m.scaler.clone(),
            m.offset,
            m.sample_count,
            ForestFormat::Crate,
            &bytes,
        )
        .unwrap();
        assert_eq!(old.forest_bytes().unwrap().0, ForestFormat::Compact);
        for (r, x) in rows.iter().zip(&scaled).take(100) {
            assert_eq!(old.forest_score(r), forest.score(x));
        }
        // A stored scaler without the newer fields still reads.
        let (mean, std) = (vec![0.0; N_FEATURES], vec![1.0; N_FEATURES]);
        let json = serde_json::json!({ "mean": mean, "std": std });
        let s: Scaler = serde_json::from_value(json).unwrap();
        assert_eq!((s.ignored, s.range), ([false; N_FEATURES], None));
    }

    #[test]
    fn oblique_forests_are_kept_in_the_crate_form() {
        let rows = normal_rows(500, 17);
        let p = ModelParams {
            extension_level: 3,
            ..ModelParams::default()
        };
        let m = Model::train(&rows, &p).unwrap();
        let (format, bytes) = m.forest_bytes().unwrap();
        assert_eq!(format, ForestFormat::Crate);
        let back = Model::from_parts(
            p,
            m.scaler.clone(),
            m.offset,
            m.sample_count,
            format,
            &bytes,
        )
        .unwrap();
        for r in rows.iter().take(50) {
            assert_eq!(m.score(r), back.score(r));
        }
        let below = rows.iter().filter(|r| m.score(r) < 0.0).count();
        assert!((35..=65).contains(&below), "{below}");
    }

    #[test]
    fn a_level_is_new_once_then_seen() {
        let (rows, state) = smooth_api(500, 100.0, 10.0);
        let m = Model::train(&rows, &ModelParams::default()).unwrap();
        let t = Thresholds::default();
        let mut seen = None;
        let slow = probe(&state, 1000.0);
        let first = m.score_seen(&slow, &mut seen);
        assert_eq!(first, m.score(&slow), "the first time, as score()");
        assert_eq!(t.classify(first), Some(Severity::Critical), "{first}");
        // The same point again is no longer beyond what the model has seen:
        // it gets the forest's own score, the extreme training point's.
        let again = m.score_seen(&slow, &mut seen);
        assert_eq!(again, m.offset - m.forest_score(&slow));
        assert!(again > first + 0.1, "{first} then {again}");
        // Further still is new again.
        let worse = m.score_seen(&probe(&state, 5000.0), &mut seen);
        assert!(worse < again, "{again} then {worse}");
        // Ordinary checks are unaffected.
        let ordinary = probe(&state, 100.0);
        assert_eq!(m.score_seen(&ordinary, &mut seen), m.score(&ordinary));
    }

    /// The severity `t` gives response time `rt` after the checks of `state`.
    fn severity_of(m: &Model, t: &Thresholds, state: &FeatureState, rt: f64) -> Option<Severity> {
        let x = probe(state, rt);
        t.severity(m.score(&x), m.change(rt).as_ref())
    }

    #[test]
    fn the_severity_ceiling_needs_both_floors_for_critical_and_a_fifth_for_high() {
        let t = Thresholds::default();
        let c = |rt, usual| t.ceiling(&Change { rt, usual });
        assert_eq!(c(813.0, 804.0), Severity::Medium, "+9 ms, +1%");
        assert_eq!(c(1000.0, 804.0), Severity::High, "+196 ms, +24%");
        assert_eq!(c(1300.0, 804.0), Severity::Critical, "+496 ms, +62%");
        assert_eq!(c(31.0, 22.0), Severity::Medium, "+9 ms");
        assert_eq!(c(33.0, 22.0), Severity::High, "+11 ms, +50%");
        assert_eq!(c(71.0, 22.0), Severity::High, "+49 ms");
        assert_eq!(c(72.0, 22.0), Severity::Critical, "+50 ms, +227%");
        assert_eq!(c(5.0, 804.0), Severity::Critical, "much faster counts too");
        // A capped score stays an anomaly; a normal one stays normal.
        let tiny = Change {
            rt: 813.0,
            usual: 804.0,
        };
        assert_eq!(t.severity(-0.4, Some(&tiny)), Some(Severity::Medium));
        assert_eq!(t.severity(0.1, Some(&tiny)), None);
        assert_eq!(t.severity(-0.4, None), Some(Severity::Critical));
    }

    #[test]
    fn a_one_percent_change_on_a_very_steady_api_is_an_anomaly_but_only_medium() {
        // 804 ms +- 0.5 ms: 813 ms is 30 standard deviations off, inside
        // the practical margin, and the forest alone scored it critical.
        let (rows, state) = smooth_api(400, 804.0, 0.5);
        let m = Model::train(&rows, &ModelParams::default()).unwrap();
        let t = Thresholds::default();
        assert!((m.usual(0) - 804.0).abs() < 0.5, "{}", m.usual(0));
        let x = probe(&state, 813.0);
        assert!(
            t.classify(m.score(&x)) >= Some(Severity::High),
            "statistically unusual: {}",
            m.score(&x)
        );
        assert_eq!(severity_of(&m, &t, &state, 813.0), Some(Severity::Medium));
        // A real deviation is still critical.
        assert_eq!(
            severity_of(&m, &t, &state, 4000.0),
            Some(Severity::Critical)
        );
    }

    #[test]
    fn a_tiny_api_half_again_slower_is_at_most_high_and_ten_times_is_critical() {
        let (rows, state) = smooth_api(400, 22.0, 1.0);
        let m = Model::train(&rows, &ModelParams::default()).unwrap();
        let t = Thresholds::default();
        for rt in [31.0, 33.0, 35.0] {
            let s = severity_of(&m, &t, &state, rt);
            assert!(s <= Some(Severity::High), "{rt} ms: {s:?}");
        }
        let s = severity_of(&m, &t, &state, 31.0);
        assert!(s <= Some(Severity::Medium), "+9 ms is tiny: {s:?}");
        assert_eq!(severity_of(&m, &t, &state, 220.0), Some(Severity::Critical));
        // Other metrics have no practical floor in ms.
        let spec = TrainingSpec {
            domain: ValueDomain::AnyValue,
            ..TrainingSpec::default()
        };
        let any = Model::train_for(&rows, &ModelParams::default(), &spec).unwrap();
        assert_eq!(any.change(33.0), None);
    }

    #[test]
    fn drivers_name_the_features_outside_the_training_range_in_their_unit() {
        let (rows, state) = smooth_api(400, 100.0, 10.0);
        let m = Model::train(&rows, &ModelParams::default()).unwrap();
        let slow = probe(&state, 1000.0);
        let d = m.drivers(&slow, 3);
        assert_eq!(d.len(), 3);
        assert!(d.windows(2).all(|w| w[0].sds >= w[1].sds), "{d:?}");
        let rt = d.iter().find(|d| d.feature == 0).expect("rt is a driver");
        assert_eq!(rt.value, 1000.0);
        let Place::Above(max) = rt.place else {
            panic!("{rt:?}")
        };
        assert!((109.0..=110.0).contains(&max), "training max {max}");
        // An ordinary check: the features furthest from the median.
        let ordinary = m.drivers(&probe(&state, 100.0), 3);
        assert!(ordinary.iter().all(|d| matches!(d.place, Place::Inside(_))));
    }

    #[test]
    fn response_times_need_a_practical_margin_other_metrics_do_not() {
        // 41 ms +- 0.3 ms. A 3 ms hiccup is ten standard deviations off but
        // not a reason to page anyone; 2x is past the margin; 10x is critical.
        let (rows, state) = smooth_api(200, 41.0, 0.3);
        let t = Thresholds::default();
        // 50 minutes of checks: hour and weekday are left out, as the
        // detector does for a young API.
        let young = ignored_features(chrono::Duration::minutes(50));
        let spec = TrainingSpec {
            ignored: young,
            ..TrainingSpec::default()
        };
        let latency = Model::train_for(&rows, &ModelParams::default(), &spec).unwrap();
        assert!(latency.scaler.margin.is_some());
        for rt in [44.0, 60.0, 90.0, 120.0] {
            let x = probe(&state, rt);
            assert_eq!(latency.extrapolation(&x), 0.0, "{rt} ms");
            assert_ne!(
                t.classify(latency.score(&x)),
                Some(Severity::Critical),
                "{rt} ms"
            );
        }
        assert!(latency.extrapolation(&probe(&state, 170.0)) > 0.0);
        let slow = latency.score(&probe(&state, 410.0));
        assert_eq!(t.classify(slow), Some(Severity::Critical), "{slow}");
        // The same rows as any metric: counted in standard deviations.
        let spec = TrainingSpec {
            ignored: young,
            domain: ValueDomain::AnyValue,
            ..TrainingSpec::default()
        };
        let metric = Model::train_for(&rows, &ModelParams::default(), &spec).unwrap();
        assert!(metric.scaler.margin.is_none());
        assert!(metric.extrapolation(&probe(&state, 44.0)) > 5.0);
    }
}
