//! `nab-eval`: the detector's accuracy on the labelled NAB corpus. A
//! research tool beside the product: it is not part of the `detector`
//! binary, and it reaches the detector only through its library.
//!
//! Every CSV under `DIR/data/<category>/` is replayed causally through three
//! detectors, compared in the same run:
//!
//! - **apimon**: this detector, with the options from the environment (one
//!   forest per series, retrained in data time), through
//!   [`detector::replay::replay`] itself.
//! - **zscore**: a rolling z-score over the previous [`ZSCORE_WINDOW`] values
//!   (the current one excluded). An alert is `|z| > 3`.
//! - **original**: the original Python system's method: ONE forest for all
//!   series together, retrained from scratch every hour on all the history
//!   seen so far, the series played in lockstep (see [`original_scores`]).
//!
//! Every detector yields one score per row in the `decision_function`
//! convention (below 0 is an alert, lower is worse; `None` when unscored).
//! From the alerts come the event metrics (windows caught, false positives
//! per 1,000 rows, median delay), and from the scores the NAB score of the
//! standard profile, with the threshold swept as the benchmark does (see
//! [`sweep_points`] and [`scores_by_threshold`]).
//!
//! Everything but [`load_corpus`], [`run`] and the CSV writer is a pure
//! function of its arguments.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use apimon_core::features::{FeatureState, ValueDomain, N_FEATURES};
use apimon_core::model::{Model, ModelParams, Thresholds};
use chrono::{DateTime, Utc};
use detector::config::TrainingPolicy;
use detector::engine::ApiDetector;
use detector::replay::{self, CsvError, Point, ReplayOptions, TimeFeatures};
use rayon::prelude::*;

/// Threads the per-file and per-retrain work is spread over by default
/// (`--threads`).
pub const THREADS: usize = 2;

/// NAB: the first 15% of each file is probationary ...
pub const PROBATION_SHARE: f64 = 0.15;

/// ... but at most 750 rows (15% of 5,000).
pub const PROBATION_MAX_ROWS: usize = 750;

/// Values in the rolling z-score baseline, the current one excluded: the
/// same length as the forest's `z_score` feature, five hours at 5 minutes.
pub const ZSCORE_WINDOW: usize = 60;

/// `|z|` above which the z-score baseline alerts.
pub const ZSCORE_LIMIT: f64 = 3.0;

/// One labelled anomaly window, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// One file of the corpus.
#[derive(Debug, Clone)]
pub struct Series {
    /// `category/file.csv`: its key in the windows file.
    pub key: String,
    /// The data subfolder, by which results are grouped.
    pub category: String,
    pub points: Vec<Point>,
    pub windows: Vec<Window>,
}

/// Why the corpus could not be loaded (the cause, if any, is the error's
/// `source`: print with `{:#}` through anyhow to see it).
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("NAB directory {0} not found (give --nab DIR)")]
    MissingDir(PathBuf),
    #[error("no CSV files under {0}/data/<category>/")]
    NoData(PathBuf),
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading {path}")]
    Csv { path: PathBuf, source: CsvError },
    #[error("windows file {path} is not valid JSON of the form {{\"category/file.csv\": [[start, end], ...]}}")]
    WindowsJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("windows file {path}, entry `{key}`: {message}")]
    WindowsEntry {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{file} has no entry `{key}` in the windows file {windows}")]
    Unlabelled {
        file: PathBuf,
        key: String,
        windows: PathBuf,
    },
}

/// Parses the windows file: `{"category/file.csv": [[start, end], ...]}`.
/// `path` only names the file in errors.
pub fn parse_windows(json: &str, path: &Path) -> Result<BTreeMap<String, Vec<Window>>, EvalError> {
    let raw: BTreeMap<String, Vec<(String, String)>> =
        serde_json::from_str(json).map_err(|source| EvalError::WindowsJson {
            path: path.to_path_buf(),
            source,
        })?;
    let entry_error = |key: &str, message: String| EvalError::WindowsEntry {
        path: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    let mut out = BTreeMap::new();
    for (key, limits) in raw {
        let mut windows = Vec::with_capacity(limits.len());
        for (start, end) in limits {
            let parse = |s: &str| {
                replay::parse_timestamp(s).ok_or_else(|| {
                    entry_error(
                        &key,
                        format!("cannot parse timestamp `{s}` (expected YYYY-MM-DD HH:MM:SS[.f])"),
                    )
                })
            };
            let (start_t, end_t) = (parse(&start)?, parse(&end)?);
            if start_t > end_t {
                return Err(entry_error(
                    &key,
                    format!("window [{start}, {end}] ends before it starts"),
                ));
            }
            windows.push(Window {
                start: start_t,
                end: end_t,
            });
        }
        windows.sort_by_key(|w| w.start);
        out.insert(key, windows);
    }
    Ok(out)
}

/// Reads every `DIR/data/<category>/*.csv` (sorted by path) and its windows.
pub fn load_corpus(dir: &Path, windows_path: &Path) -> Result<Vec<Series>, EvalError> {
    if !dir.is_dir() {
        return Err(EvalError::MissingDir(dir.to_path_buf()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EvalError::Io { path, source }
    };
    let json = std::fs::read_to_string(windows_path).map_err(io(windows_path))?;
    let mut labels = parse_windows(&json, windows_path)?;

    let data = dir.join("data");
    let mut files = Vec::new();
    for category in sorted_entries(&data).map_err(io(&data))? {
        if !category.is_dir() {
            continue;
        }
        for file in sorted_entries(&category).map_err(io(&category))? {
            if file.extension().is_some_and(|e| e == "csv") && file.is_file() {
                files.push(file);
            }
        }
    }
    if files.is_empty() {
        return Err(EvalError::NoData(dir.to_path_buf()));
    }

    let mut corpus = Vec::with_capacity(files.len());
    for file in files {
        let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
        let category = file.parent().and_then(name).unwrap_or_default();
        let key = format!("{category}/{}", name(&file).unwrap_or_default());
        let windows = labels.remove(&key).ok_or_else(|| EvalError::Unlabelled {
            file: file.clone(),
            key: key.clone(),
            windows: windows_path.to_path_buf(),
        })?;
        let reader = std::fs::File::open(&file).map_err(io(&file))?;
        let points = replay::read_csv(std::io::BufReader::new(reader), "timestamp", "value")
            .map_err(|source| EvalError::Csv {
                path: file.clone(),
                source,
            })?;
        corpus.push(Series {
            key,
            category,
            points,
            windows,
        });
    }
    for key in labels.keys() {
        tracing::warn!(
            key,
            "the windows file names a file that is not in the corpus"
        );
    }
    Ok(corpus)
}

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    out.sort();
    Ok(out)
}

// ---------------------------------------------------------------------------
// Detectors. Each returns one score per row: below 0 is an alert, lower is
// worse, `None` when the row is not scored.

/// How a run departs from the plain evaluation: switches for measuring
/// suggested changes, all off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variant {
    /// `shift-nonnegative`: every series holding negative values is
    /// shifted up so that its minimum is 0, for all detectors.
    pub shift_nonnegative: bool,
    /// `no-time-features` / `always-time-features`: apimon with `hour` and
    /// `weekday` never / always in the model (default: once the training
    /// rows span [`apimon_core::model::SEASONAL_SPAN`]).
    pub time_features: TimeFeatures,
    /// `skip-original`: leave the original detector out (most of the time).
    pub skip_original: bool,
}

impl Variant {
    /// Reads `--experiment` names.
    pub fn with_experiments(mut self, names: &[String]) -> Result<Variant, String> {
        for name in names {
            match name.as_str() {
                "shift-nonnegative" => self.shift_nonnegative = true,
                "no-time-features" => self.time_features = TimeFeatures::Never,
                "always-time-features" => self.time_features = TimeFeatures::Always,
                "skip-original" => self.skip_original = true,
                other => {
                    return Err(format!(
                        "unknown experiment `{other}` (known: shift-nonnegative, no-time-features, always-time-features, skip-original)"
                    ))
                }
            }
        }
        Ok(self)
    }
}

/// apimon's own detector: [`replay::replay`] itself.
pub fn apimon_scores(
    points: &[Point],
    opts: &ReplayOptions,
    variant: &Variant,
) -> Vec<Option<f64>> {
    // NAB series are metrics of all kinds, some negative.
    let opts = ReplayOptions {
        time_features: variant.time_features,
        domain: ValueDomain::AnyValue,
        ..opts.clone()
    };
    replay::replay(points, &opts)
        .into_iter()
        .map(|r| r.score)
        .collect()
}

/// The series moved up so that its smallest value is 0, if it has a
/// negative one.
pub fn shift_nonnegative(points: &[Point]) -> Vec<Point> {
    let min = points
        .iter()
        .filter_map(|p| p.value)
        .fold(f64::INFINITY, f64::min);
    let by = if min < 0.0 { -min } else { 0.0 };
    points
        .iter()
        .map(|p| Point {
            value: p.value.map(|v| v + by),
            ..p.clone()
        })
        .collect()
}

/// A causal rolling z-score: `z` of each value against the mean and sample
/// standard deviation (ddof = 1) of the previous `window` values, scored
/// `limit - |z|` (below 0 when `|z| > limit`). A value that differs from a
/// constant history has an infinite `|z|`; the first two values, and rows
/// without a value, are unscored.
pub fn zscore_scores(points: &[Point], window: usize, limit: f64) -> Vec<Option<f64>> {
    let mut history: std::collections::VecDeque<f64> = std::collections::VecDeque::new();
    points
        .iter()
        .map(|p| {
            let x = p.value.filter(|_| p.success)?;
            let score = (history.len() >= 2).then(|| {
                let n = history.len() as f64;
                let mean = history.iter().sum::<f64>() / n;
                let var = history.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
                let std = var.sqrt();
                let z = if std > 0.0 {
                    (x - mean) / std
                } else if x == mean {
                    0.0
                } else {
                    f64::INFINITY
                };
                limit - z.abs()
            });
            if history.len() == window {
                history.pop_front();
            }
            history.push_back(x);
            score
        })
        .collect()
}

/// Settings of the original system's pooled forest.
#[derive(Debug, Clone)]
pub struct OriginalOptions {
    /// n_trees 100, max_samples 256, contamination 0.05, axis-parallel.
    pub params: ModelParams,
    /// Retrained every hour of data time ...
    pub retrain_interval: Duration,
    /// ... once this many successes are pooled.
    pub min_samples: usize,
}

impl Default for OriginalOptions {
    fn default() -> Self {
        OriginalOptions {
            params: ModelParams {
                n_trees: 100,
                max_samples: 256,
                contamination: 0.05,
                extension_level: 0,
            },
            retrain_interval: Duration::from_secs(3600),
            min_samples: 120,
        }
    }
}

/// The original system: one forest for all series. Features are computed
/// per series as apimon does ([`ApiDetector`] without a model: the same
/// features, and failures scored by rule). The series are played in
/// lockstep, each on its own clock from its first row (as if all of them
/// were monitored from the same moment, as the original's APIs were): rows
/// are merged in order of time since their series' start, each success is
/// scored with the current model and then joins the pooled history, and
/// the model is retrained from scratch on ALL the pooled history whenever
/// it is [`TrainingPolicy::due`] (first at `min_samples` rows, then every
/// `retrain_interval` of that lockstep clock). The fits are independent
/// once the schedule is known, so they run in parallel (rayon).
pub fn original_scores(series: &[&[Point]], opts: &OriginalOptions) -> Vec<Vec<Option<f64>>> {
    let thresholds = Thresholds::default();
    let mut out: Vec<Vec<Option<f64>>> = Vec::with_capacity(series.len());
    // (time since the series' start, series, row, features if a success)
    let mut merged = Vec::new();
    for (j, points) in series.iter().enumerate() {
        let mut det = ApiDetector {
            state: FeatureState::with_domain(ValueDomain::AnyValue),
            ..ApiDetector::default()
        };
        let t0 = points.first().map(|p| p.timestamp);
        let mut scores = vec![None; points.len()];
        for (i, p) in points.iter().enumerate() {
            let Some(v) = det.observe(p.timestamp, p.value, p.success, &thresholds) else {
                continue;
            };
            let since = p.timestamp - t0.unwrap_or(p.timestamp);
            match v.features {
                Some(f) => merged.push((since, j, i, Some(f.to_array()))),
                None => {
                    scores[i] = v.score;
                    merged.push((since, j, i, None));
                }
            }
        }
        out.push(scores);
    }
    merged.sort_by_key(|&(since, j, i, _)| (since, j, i));

    // The schedule: which rows each fit scores, and on how long a prefix of
    // the pooled history it is trained.
    struct Fit {
        prefix: usize,
        rows: Vec<(usize, usize, [f64; N_FEATURES])>,
    }
    let policy = TrainingPolicy {
        window: Duration::MAX,
        min_samples: opts.min_samples,
        retrain_interval: opts.retrain_interval,
    };
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let mut pooled: Vec<[f64; N_FEATURES]> = Vec::new();
    let mut fits: Vec<Fit> = Vec::new();
    let mut trained_at = None;
    for &(since, j, i, features) in &merged {
        let Some(f) = features else { continue };
        if let Some(fit) = fits.last_mut() {
            fit.rows.push((j, i, f));
        }
        pooled.push(f);
        let now = epoch + since;
        if policy.due(trained_at, now, pooled.len()) {
            trained_at = Some(now);
            fits.push(Fit {
                prefix: pooled.len(),
                rows: Vec::new(),
            });
        }
    }

    let scored: Vec<Vec<(usize, usize, Option<f64>)>> = fits
        .par_iter()
        .map(|fit| {
            // The original's plain forest: every feature, and no extrapolation
            // term (`offset - forest_score`, as scikit-learn).
            match Model::train(&pooled[..fit.prefix], &opts.params) {
                Ok(model) => fit
                    .rows
                    .iter()
                    .map(|&(j, i, f)| (j, i, Some(model.offset - model.forest_score(&f))))
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "original: training failed; rows left unscored");
                    fit.rows.iter().map(|&(j, i, _)| (j, i, None)).collect()
                }
            }
        })
        .collect();
    for (j, i, s) in scored.into_iter().flatten() {
        out[j][i] = s;
    }
    out
}

// ---------------------------------------------------------------------------
// Event metrics at the operating point.

/// NAB's probationary period: the first 15% of the rows, at most 750.
pub fn probation_len(rows: usize) -> usize {
    ((PROBATION_SHARE * rows as f64).floor() as usize).min(PROBATION_MAX_ROWS)
}

/// Each window as an inclusive range of row indices (rows in time order);
/// a window holding no row is dropped.
pub fn window_spans(timestamps: &[DateTime<Utc>], windows: &[Window]) -> Vec<(usize, usize)> {
    windows
        .iter()
        .filter_map(|w| {
            let first = timestamps.partition_point(|t| *t < w.start);
            let after = timestamps.partition_point(|t| *t <= w.end);
            (first < after).then(|| (first, after - 1))
        })
        .collect()
}

/// What one detector did on one file, alerts in probation left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileOutcome {
    pub rows: usize,
    pub probation: usize,
    /// Windows that reach past the probation (the others cannot be caught
    /// and are not counted, as in NAB).
    pub windows: usize,
    pub caught: usize,
    /// Alerts after the probation.
    pub alerts: usize,
    /// Alerts after the probation outside every window.
    pub false_positives: usize,
    /// For each caught window: rows from its start to the first alert in it.
    pub delays: Vec<usize>,
}

impl FileOutcome {
    /// Rows after the probation: the denominator of the false positive rate.
    pub fn scored_rows(&self) -> usize {
        self.rows - self.probation
    }
}

/// Windows caught, false positives and delays of `alerts` (one per row).
pub fn file_outcome(alerts: &[bool], spans: &[(usize, usize)], probation: usize) -> FileOutcome {
    let probation = probation.min(alerts.len());
    let mut out = FileOutcome {
        rows: alerts.len(),
        probation,
        ..FileOutcome::default()
    };
    for &(start, end) in spans {
        if end < probation || start >= alerts.len() {
            continue;
        }
        out.windows += 1;
        let from = start.max(probation);
        if let Some(first) = (from..=end.min(alerts.len() - 1)).find(|&i| alerts[i]) {
            out.caught += 1;
            out.delays.push(first - start);
        }
    }
    for (i, _) in alerts
        .iter()
        .enumerate()
        .skip(probation)
        .filter(|(_, a)| **a)
    {
        out.alerts += 1;
        if !spans.iter().any(|&(s, e)| (s..=e).contains(&i)) {
            out.false_positives += 1;
        }
    }
    out
}

/// The median, halfway between the two middle values for an even count.
pub fn median(values: &[usize]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_unstable();
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2] as f64),
        _ => Some((v[n / 2 - 1] + v[n / 2]) as f64 / 2.0),
    }
}

// ---------------------------------------------------------------------------
// NAB scoring (numenta/NAB `nab/sweeper.py`, re-implemented).

/// A NAB profile's weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostMatrix {
    pub tp: f64,
    pub fp: f64,
    pub fn_: f64,
}

/// NAB's standard profile (`config/profiles.json`): A_TP = 1, A_FP = -0.11,
/// A_FN = -1 (A_TN plays no part in the score).
pub const STANDARD_PROFILE: CostMatrix = CostMatrix {
    tp: 1.0,
    fp: 0.11,
    fn_: 1.0,
};

/// NAB's scaled sigmoid of a relative position: -1 (a window's first row)
/// gives 0.9866, 0 its right edge 0; positive positions are past a window,
/// down to -1 beyond 3.
pub fn scaled_sigmoid(position: f64) -> f64 {
    if position > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * position).exp()) - 1.0
    }
}

/// NAB's likelihood in [0, 1] (higher is more anomalous) of one of our
/// scores (lower is more anomalous): `0.5 - atan(s) / pi`, strictly
/// decreasing, 0.5 at `s = 0`; an unscored row is 0. Only for reporting:
/// the sweep ranks rows by `-s` itself, which orders them identically
/// without the rounding of `l` to 1.0 for very low scores.
pub fn likelihood(score: Option<f64>) -> f64 {
    score.map_or(0.0, |s| 0.5 - s.atan() / std::f64::consts::PI)
}

/// One scorable row (after the probation) as the sweep sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepPoint {
    /// Higher is more anomalous: `-score`, or -inf when unscored.
    pub key: f64,
    /// NAB's weighted score of this row if it alerts.
    pub weight: f64,
    /// Global id of the window holding the row, if any.
    pub window: Option<usize>,
}

/// NAB's per-row scores of one file (`calcSweepScore`): an alert inside a
/// window is worth `scaled_sigmoid(-(end - i + 1) / width) * tp / max_tp`
/// (1 at the first row); outside, `fp * scaled_sigmoid(distance past the
/// previous window's end / (its width - 1))`, or `-fp` with no window
/// before. Probationary rows are dropped. Windows get ids from `first_id`.
pub fn sweep_points(
    scores: &[Option<f64>],
    spans: &[(usize, usize)],
    probation: usize,
    cost: &CostMatrix,
    first_id: usize,
) -> Vec<SweepPoint> {
    let max_tp = scaled_sigmoid(-1.0);
    let mut out = Vec::with_capacity(scores.len().saturating_sub(probation));
    let mut previous: Option<(usize, usize)> = None;
    let mut k = 0;
    for (i, score) in scores.iter().enumerate() {
        while k < spans.len() && spans[k].1 < i {
            previous = Some(spans[k]);
            k += 1;
        }
        let current = spans.get(k).filter(|&&(s, _)| s <= i);
        let (weight, window) = match current {
            Some(&(start, end)) => {
                let width = (end - start + 1) as f64;
                let position = -((end - i + 1) as f64) / width;
                (
                    scaled_sigmoid(position) * cost.tp / max_tp,
                    Some(first_id + k),
                )
            }
            None => {
                let unweighted = match previous {
                    Some((start, end)) if end > start => {
                        scaled_sigmoid((i - end) as f64 / (end - start) as f64)
                    }
                    _ => -1.0,
                };
                (unweighted * cost.fp, None)
            }
        };
        if i >= probation {
            out.push(SweepPoint {
                key: score.map_or(f64::NEG_INFINITY, |s| -s),
                weight,
                window,
            });
        }
    }
    out
}

/// The NAB score at one threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdScore {
    /// Rows whose key is at least this alert (+inf: none).
    pub threshold: f64,
    pub score: f64,
    /// Alerting rows inside windows, and outside.
    pub tp: usize,
    pub fp: usize,
}

/// NAB's `calcScoreByThreshold`: the score for every distinct threshold,
/// from none alerting (each window scorable counts -fn) down to all
/// alerting. Within a window only its best (first) alert counts; every
/// alert outside one adds its (negative) weight.
pub fn scores_by_threshold(points: &[SweepPoint], cost: &CostMatrix) -> Vec<ThresholdScore> {
    let mut sorted: Vec<&SweepPoint> = points.iter().collect();
    sorted.sort_by(|a, b| b.key.total_cmp(&a.key));
    let mut best: BTreeMap<usize, f64> = BTreeMap::new();
    for p in &sorted {
        if let Some(w) = p.window {
            best.insert(w, -cost.fn_);
        }
    }
    let mut total: f64 = best.values().sum();
    let mut out = vec![ThresholdScore {
        threshold: f64::INFINITY,
        score: total,
        tp: 0,
        fp: 0,
    }];
    let (mut tp, mut fp) = (0, 0);
    let mut i = 0;
    while i < sorted.len() {
        let key = sorted[i].key;
        while i < sorted.len() && sorted[i].key.total_cmp(&key).is_eq() {
            let p = sorted[i];
            match p.window.and_then(|w| best.get_mut(&w)) {
                Some(b) => {
                    tp += 1;
                    if p.weight > *b {
                        total += p.weight - *b;
                        *b = p.weight;
                    }
                }
                None => {
                    fp += 1;
                    total += p.weight;
                }
            }
            i += 1;
        }
        out.push(ThresholdScore {
            threshold: key,
            score: total,
            tp,
            fp,
        });
    }
    out
}

/// The best of [`scores_by_threshold`] (the first of equals: the highest
/// threshold).
pub fn best_threshold(points: &[SweepPoint], cost: &CostMatrix) -> ThresholdScore {
    scores_by_threshold(points, cost)
        .into_iter()
        .fold(None, |best: Option<ThresholdScore>, t| match best {
            Some(b) if b.score >= t.score => Some(b),
            _ => Some(t),
        })
        .unwrap_or(ThresholdScore {
            threshold: f64::INFINITY,
            score: 0.0,
            tp: 0,
            fp: 0,
        })
}

/// The NAB score when the rows whose key is at least `threshold` alert.
pub fn score_at(points: &[SweepPoint], cost: &CostMatrix, threshold: f64) -> f64 {
    let mut best: BTreeMap<usize, f64> = BTreeMap::new();
    let mut fp = 0.0;
    for p in points {
        let alert = p.key >= threshold;
        match p.window {
            Some(w) => {
                let b = best.entry(w).or_insert(-cost.fn_);
                if alert && p.weight > *b {
                    *b = p.weight;
                }
            }
            None if alert => fp += p.weight,
            None => {}
        }
    }
    fp + best.values().sum::<f64>()
}

/// NAB's null detector (a constant score): the better of never and always
/// alerting, as its own sweep would find.
pub fn null_score(points: &[SweepPoint], cost: &CostMatrix) -> f64 {
    let constant: Vec<SweepPoint> = points
        .iter()
        .map(|p| SweepPoint { key: 0.0, ..*p })
        .collect();
    best_threshold(&constant, cost).score
}

/// `100 * (raw - null) / (perfect - null)`; `None` when perfect = null
/// (no window to find).
pub fn normalise(raw: f64, null: f64, perfect: f64) -> Option<f64> {
    (perfect - null > 1e-12).then(|| 100.0 * (raw - null) / (perfect - null))
}

// ---------------------------------------------------------------------------
// The run.

/// The detectors, in the order they are reported. `apimon-high` and
/// `apimon-critical` are apimon's scores with the operating point at the
/// `high` and `critical` thresholds (`ALERT_MIN_SEVERITY`: what would
/// email someone): the scores moved up by `-SEVERITY_HIGH` and
/// `-SEVERITY_CRITICAL`, so that "below 0" is "at least that severe". Their
/// swept NAB score is apimon's.
pub const DETECTORS: [&str; 5] = [
    "apimon",
    "apimon-high",
    "apimon-critical",
    "zscore",
    "original",
];

/// One detector on one file.
#[derive(Debug, Clone)]
pub struct FileResult {
    pub detector: &'static str,
    pub key: String,
    pub category: String,
    pub outcome: FileOutcome,
    /// All windows of the file (NAB's "perfect" counts them all).
    pub labelled_windows: usize,
    pub points: Vec<SweepPoint>,
}

/// Scores every series with every detector and measures them.
/// The per-file work runs in parallel on rayon's pool.
pub fn evaluate(corpus: &[Series], opts: &ReplayOptions, variant: &Variant) -> Evaluation {
    let shifted: Vec<Series>;
    let corpus = if variant.shift_nonnegative {
        shifted = corpus
            .iter()
            .map(|s| Series {
                points: shift_nonnegative(&s.points),
                ..s.clone()
            })
            .collect();
        &shifted
    } else {
        corpus
    };
    let mut timings = Vec::new();
    let started = Instant::now();
    let apimon: Vec<_> = corpus
        .par_iter()
        .map(|s| apimon_scores(&s.points, opts, variant))
        .collect();
    timings.push(("apimon", started.elapsed()));
    let at = |threshold: f64| -> Vec<Vec<Option<f64>>> {
        apimon
            .iter()
            .map(|scores| scores.iter().map(|s| s.map(|s| s - threshold)).collect())
            .collect()
    };
    let (high, critical) = (at(opts.thresholds.high), at(opts.thresholds.critical));
    let apimon_by_threshold = by_threshold(corpus, &apimon, &THRESHOLD_GRID);
    let started = Instant::now();
    let zscore: Vec<_> = corpus
        .par_iter()
        .map(|s| zscore_scores(&s.points, ZSCORE_WINDOW, ZSCORE_LIMIT))
        .collect();
    timings.push(("zscore", started.elapsed()));
    let mut runs = vec![apimon, high, critical, zscore];
    if !variant.skip_original {
        let started = Instant::now();
        let all: Vec<&[Point]> = corpus.iter().map(|s| s.points.as_slice()).collect();
        runs.push(original_scores(&all, &OriginalOptions::default()));
        timings.push(("original", started.elapsed()));
    }

    let mut results = Vec::new();
    for (detector, scores) in DETECTORS.into_iter().zip(runs) {
        let mut next_id = 0;
        for (series, scores) in corpus.iter().zip(scores) {
            results.push(measure(detector, series, &scores, next_id));
            next_id += series.windows.len();
        }
    }
    Evaluation {
        results,
        timings,
        apimon_by_threshold,
    }
}

/// What [`evaluate`] measured.
pub struct Evaluation {
    pub results: Vec<FileResult>,
    pub timings: Vec<(&'static str, Duration)>,
    /// apimon's event metrics at each threshold of [`THRESHOLD_GRID`].
    pub apimon_by_threshold: Vec<ThresholdOutcome>,
}

/// Thresholds at which apimon's event metrics are also reported: where to
/// put `SEVERITY_HIGH`, `SEVERITY_CRITICAL` or `ALERT_MIN_SEVERITY`.
pub const THRESHOLD_GRID: [f64; 9] = [0.0, -0.05, -0.1, -0.125, -0.15, -0.175, -0.2, -0.3, -0.4];

/// Event metrics of one detector over the corpus at one threshold (alert:
/// score below it).
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdOutcome {
    pub threshold: f64,
    pub windows: usize,
    pub caught: usize,
    pub false_positives: usize,
    pub scored_rows: usize,
}

/// Event metrics over the corpus of one detector's `scores` (one list per
/// series) at each of `thresholds`.
pub fn by_threshold(
    corpus: &[Series],
    scores: &[Vec<Option<f64>>],
    thresholds: &[f64],
) -> Vec<ThresholdOutcome> {
    thresholds
        .iter()
        .map(|&threshold| {
            let mut total = ThresholdOutcome {
                threshold,
                windows: 0,
                caught: 0,
                false_positives: 0,
                scored_rows: 0,
            };
            for (series, scores) in corpus.iter().zip(scores) {
                let timestamps: Vec<DateTime<Utc>> =
                    series.points.iter().map(|p| p.timestamp).collect();
                let spans = window_spans(&timestamps, &series.windows);
                let alerts: Vec<bool> = scores
                    .iter()
                    .map(|s| s.is_some_and(|s| s < threshold))
                    .collect();
                let o = file_outcome(&alerts, &spans, probation_len(scores.len()));
                total.windows += o.windows;
                total.caught += o.caught;
                total.false_positives += o.false_positives;
                total.scored_rows += o.scored_rows();
            }
            total
        })
        .collect()
}

/// The printed table of [`by_threshold`].
pub fn threshold_table(rows: &[ThresholdOutcome], zscore_fp_per_1000: Option<f64>) -> String {
    let mut s = String::from(
        "apimon by threshold (alert: score below it), overall; where to put SEVERITY_HIGH,\n\
         SEVERITY_CRITICAL and ALERT_MIN_SEVERITY:\n\n",
    );
    let _ = writeln!(
        s,
        "{:>10} {:>9} {:>7} {:>10}",
        "threshold", "caught", "FP", "FP/1k rows"
    );
    for r in rows {
        let fp = 1000.0 * r.false_positives as f64 / r.scored_rows.max(1) as f64;
        let mark = match zscore_fp_per_1000 {
            Some(z) if fp < z && r.caught * 10 >= r.windows * 9 => {
                "  >= 90% caught, fewer FP than zscore"
            }
            _ => "",
        };
        let _ = writeln!(
            s,
            "{:>10} {:>9} {:>7} {:>10.1}{mark}",
            format!("{:.3}", r.threshold),
            format!("{}/{}", r.caught, r.windows),
            r.false_positives,
            fp
        );
    }
    s
}

fn measure(
    detector: &'static str,
    series: &Series,
    scores: &[Option<f64>],
    first_id: usize,
) -> FileResult {
    let timestamps: Vec<DateTime<Utc>> = series.points.iter().map(|p| p.timestamp).collect();
    let spans = window_spans(&timestamps, &series.windows);
    let probation = probation_len(scores.len());
    let alerts: Vec<bool> = scores.iter().map(|s| s.is_some_and(|s| s < 0.0)).collect();
    FileResult {
        detector,
        key: series.key.clone(),
        category: series.category.clone(),
        outcome: file_outcome(&alerts, &spans, probation),
        labelled_windows: series.windows.len(),
        points: sweep_points(scores, &spans, probation, &STANDARD_PROFILE, first_id),
    }
}

/// Sums of [`FileOutcome`]s and NAB parts over a group of files.
#[derive(Debug, Clone, Default)]
struct Group {
    files: usize,
    scored_rows: usize,
    windows: usize,
    labelled_windows: usize,
    caught: usize,
    false_positives: usize,
    delays: Vec<usize>,
    points: Vec<SweepPoint>,
}

impl Group {
    fn add(&mut self, r: &FileResult) {
        self.files += 1;
        self.scored_rows += r.outcome.scored_rows();
        self.windows += r.outcome.windows;
        self.labelled_windows += r.labelled_windows;
        self.caught += r.outcome.caught;
        self.false_positives += r.outcome.false_positives;
        self.delays.extend(&r.outcome.delays);
        self.points.extend(&r.points);
    }

    fn fp_per_1000(&self) -> f64 {
        1000.0 * self.false_positives as f64 / self.scored_rows.max(1) as f64
    }

    /// (raw, normalised) NAB score at a threshold.
    fn nab_at(&self, threshold: f64) -> (f64, Option<f64>) {
        let raw = score_at(&self.points, &STANDARD_PROFILE, threshold);
        let null = null_score(&self.points, &STANDARD_PROFILE);
        let perfect = self.labelled_windows as f64 * STANDARD_PROFILE.tp;
        (raw, normalise(raw, null, perfect))
    }
}

/// The printed report: event metrics at the operating point, then the NAB
/// scores, per category and overall.
pub fn report(results: &[FileResult]) -> String {
    let mut groups: BTreeMap<(&str, String), Group> = BTreeMap::new();
    for r in results {
        for category in [r.category.clone(), "overall".to_string()] {
            groups.entry((r.detector, category)).or_default().add(r);
        }
    }
    let mut categories: Vec<String> = results.iter().map(|r| r.category.clone()).collect();
    categories.sort();
    categories.dedup();
    categories.push("overall".to_string());

    let mut s = String::new();
    let _ = writeln!(
        s,
        "Operating point: an alert is a row scored below 0 (apimon, original), below SEVERITY_HIGH (apimon-high)\n\
         or SEVERITY_CRITICAL (apimon-critical), or with |z| > {ZSCORE_LIMIT} (zscore).\n\
         Alerts in the probationary period (first 15% of each file, at most {PROBATION_MAX_ROWS} rows) are not counted.\n"
    );
    let _ = writeln!(
        s,
        "{:<22} {:<15} {:>5} {:>7} {:>9} {:>6} {:>10} {:>13}",
        "category", "detector", "files", "rows", "caught", "FP", "FP/1k rows", "median delay"
    );
    for category in &categories {
        for detector in DETECTORS {
            let Some(g) = groups.get(&(detector, category.clone())) else {
                continue;
            };
            let _ = writeln!(
                s,
                "{:<22} {:<15} {:>5} {:>7} {:>9} {:>6} {:>10.1} {:>13}",
                category,
                detector,
                g.files,
                g.scored_rows,
                format!("{}/{}", g.caught, g.windows),
                g.false_positives,
                g.fp_per_1000(),
                median(&g.delays).map_or("-".to_string(), |d| format!("{d:.1}")),
            );
        }
    }

    let _ = writeln!(
        s,
        "\nNAB score, standard profile (A_TP = 1, A_FP = -0.11, A_FN = -1; 0 = null detector, 100 = perfect).\n\
         \"swept\": at the threshold that maximises the corpus score (one threshold per detector, as NAB);\n\
         \"at 0\": at the operating point. Threshold s* in our score (alert when score <= s*) and as NAB\n\
         likelihood l* = 0.5 - atan(s*)/pi. A category without windows has no normalised score: its raw\n\
         score (the false positives' cost) is shown.\n"
    );
    let _ = writeln!(
        s,
        "{:<15} {:>10} {:>7} {:>7} {:>7} {:>7}  {:<22} {:>9} {:>9}",
        "detector", "s*", "l*", "TP rows", "FP rows", "raw", "category", "swept", "at 0"
    );
    for detector in DETECTORS {
        let Some(overall) = groups.get(&(detector, "overall".to_string())) else {
            continue;
        };
        let best = best_threshold(&overall.points, &STANDARD_PROFILE);
        let s_star = -best.threshold;
        let head = format!(
            "{:<15} {:>10} {:>7.4} {:>7} {:>7} {:>7.2}",
            detector,
            format!("{s_star:.4}"),
            likelihood(Some(s_star)),
            best.tp,
            best.fp,
            best.score
        );
        for (n, category) in categories.iter().enumerate() {
            let Some(g) = groups.get(&(detector, category.clone())) else {
                continue;
            };
            let show = |(raw, norm): (f64, Option<f64>)| match norm {
                Some(v) => format!("{v:.1}"),
                None => format!("raw {raw:.2}"),
            };
            // "At 0": alerts are scores below 0, i.e. keys above 0.
            let at_zero = g.nab_at(f64::MIN_POSITIVE);
            let _ = writeln!(
                s,
                "{:<56}  {:<22} {:>9} {:>9}",
                if n == 0 { head.as_str() } else { "" },
                category,
                show(g.nab_at(best.threshold)),
                show(at_zero),
            );
        }
    }
    s
}

/// Writes one row per detector and file.
pub fn write_csv(out: impl std::io::Write, results: &[FileResult]) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "detector",
        "category",
        "file",
        "rows",
        "probation",
        "windows",
        "caught",
        "alerts",
        "false_positives",
        "fp_per_1000_rows",
        "delays_rows",
        "median_delay_rows",
        "nab_raw_at_0",
    ])?;
    for r in results {
        let o = &r.outcome;
        let file = r.key.rsplit('/').next().unwrap_or(&r.key);
        w.write_record([
            r.detector.to_string(),
            r.category.clone(),
            file.to_string(),
            o.rows.to_string(),
            o.probation.to_string(),
            o.windows.to_string(),
            o.caught.to_string(),
            o.alerts.to_string(),
            o.false_positives.to_string(),
            format!(
                "{:.2}",
                1000.0 * o.false_positives as f64 / o.scored_rows().max(1) as f64
            ),
            o.delays
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            median(&o.delays).map_or(String::new(), |d| format!("{d:.1}")),
            format!(
                "{:.4}",
                score_at(&r.points, &STANDARD_PROFILE, f64::MIN_POSITIVE)
            ),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// `nab-eval`: loads the corpus, runs the three detectors (on rayon's
/// pool, whose size the report states), prints the report and optionally
/// writes the per-file CSV.
pub fn run(
    dir: &Path,
    windows: Option<&Path>,
    out_csv: Option<&Path>,
    variant: &Variant,
    opts: &ReplayOptions,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let started = Instant::now();
    let windows = windows.map_or_else(|| dir.join("combined_windows.json"), Path::to_path_buf);
    let corpus = load_corpus(dir, &windows)?;
    let rows: usize = corpus.iter().map(|s| s.points.len()).sum();
    let labelled: usize = corpus.iter().map(|s| s.windows.len()).sum();
    let Evaluation {
        results,
        timings,
        apimon_by_threshold,
    } = evaluate(&corpus, opts, variant);
    let mut text = format!(
        "NAB evaluation of {}: {} files, {rows} rows, {labelled} windows; {} threads.\n\
         apimon: {:?}, {:?}, training window {:?}, {} samples to start, retrain every {:?} (data time).\n\n",
        dir.display(),
        corpus.len(),
        rayon::current_num_threads(),
        opts.params,
        opts.thresholds,
        opts.policy.window,
        opts.policy.min_samples,
        opts.policy.retrain_interval,
    );
    if *variant != Variant::default() {
        let _ = writeln!(text, "Variant: {variant:?}\n");
    }
    text.push_str(&report(&results));
    let zscore_fp = {
        let (fp, rows) = results
            .iter()
            .filter(|r| r.detector == "zscore")
            .fold((0, 0), |(f, n), r| {
                (f + r.outcome.false_positives, n + r.outcome.scored_rows())
            });
        (rows > 0).then(|| 1000.0 * fp as f64 / rows as f64)
    };
    text.push('\n');
    text.push_str(&threshold_table(&apimon_by_threshold, zscore_fp));
    let _ = writeln!(
        text,
        "\nElapsed: {:.1} s ({}).",
        started.elapsed().as_secs_f64(),
        timings
            .iter()
            .map(|(d, t)| format!("{d} {:.1} s", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    print!("{text}");
    if let Some(path) = out_csv {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        write_csv(std::io::BufWriter::new(file), &results)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(i: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2014, 4, 1, 0, 0, 0).unwrap() + chrono::Duration::minutes(5 * i)
    }

    fn alerts_at(n: usize, at: &[usize]) -> Vec<bool> {
        (0..n).map(|i| at.contains(&i)).collect()
    }

    #[test]
    fn probation_is_15_percent_capped_at_750_rows() {
        assert_eq!(probation_len(4032), 604);
        assert_eq!(probation_len(1243), 186);
        assert_eq!(probation_len(10_000), 750);
        assert_eq!(probation_len(0), 0);
    }

    #[test]
    fn windows_become_inclusive_row_ranges() {
        let ts: Vec<_> = (0..10).map(t).collect();
        let w = |a, b| Window {
            start: t(a),
            end: t(b),
        };
        let spans = window_spans(&ts, &[w(2, 4), w(7, 20), w(30, 40)]);
        // Both ends included; a window past the data is cut; an empty one dropped.
        assert_eq!(spans, vec![(2, 4), (7, 9)]);
    }

    #[test]
    fn a_window_is_caught_by_an_alert_inside_it_with_its_delay() {
        let o = file_outcome(&alerts_at(20, &[12]), &[(10, 14)], 5);
        assert_eq!((o.windows, o.caught, o.false_positives), (1, 1, 0));
        assert_eq!(o.delays, vec![2]);
        // Only the first alert in a window counts for the delay.
        let o = file_outcome(&alerts_at(20, &[11, 13]), &[(10, 14)], 5);
        assert_eq!((o.caught, o.alerts, o.delays.clone()), (1, 2, vec![1]));
        // Just outside both ends: missed, and two false positives.
        let o = file_outcome(&alerts_at(20, &[9, 15]), &[(10, 14)], 5);
        assert_eq!((o.windows, o.caught, o.false_positives), (1, 0, 2));
        assert!(o.delays.is_empty());
    }

    #[test]
    fn alerts_in_probation_are_neither_catches_nor_false_positives() {
        // Window 0 lies inside the probation: not counted at all; window 1
        // starts in it, so only the alert after the probation catches it
        // (the delay still runs from the window's start).
        let spans = [(1, 3), (8, 14)];
        let o = file_outcome(&alerts_at(30, &[0, 2, 4, 9, 11, 20]), &spans, 10);
        assert_eq!(o.scored_rows(), 20);
        assert_eq!(o.windows, 1);
        assert_eq!(o.caught, 1);
        assert_eq!(o.delays, vec![3]);
        assert_eq!(o.alerts, 2);
        assert_eq!(o.false_positives, 1);
    }

    #[test]
    fn false_positives_count_every_alert_outside_every_window() {
        let o = file_outcome(
            &alerts_at(1000, &[100, 101, 102, 500, 999]),
            &[(500, 600)],
            0,
        );
        assert_eq!(o.false_positives, 4);
        assert_eq!(o.caught, 1);
        assert_eq!(o.delays, vec![0]);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[7, 1, 3]), Some(3.0));
        assert_eq!(median(&[8, 1, 3, 4]), Some(3.5));
    }

    #[test]
    fn scaled_sigmoid_matches_nab_reference_points() {
        assert!((scaled_sigmoid(-1.0) - 0.986_614_3).abs() < 1e-6);
        assert!((scaled_sigmoid(-0.5) - 0.848_283_6).abs() < 1e-6);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert!((scaled_sigmoid(1.0) + 0.986_614_3).abs() < 1e-6);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
    }

    /// 40 rows, probation 2, one window over rows 4..=6 (width 3).
    /// Alerts (score < 0) at row 1 (probation), 3 (before the window),
    /// 5 (inside) and 8 (after).
    ///
    /// By hand (standard profile):
    /// - row 5: position -(6 - 5 + 1)/3 = -2/3; 2/(1 + e^(-10/3)) - 1 =
    ///   0.931109, divided by max_tp 0.986614: +0.943742;
    /// - row 3: no window before: -1 * 0.11 = -0.11;
    /// - row 8: (8 - 6)/(3 - 1) = 1 past the window: -0.986614 * 0.11 =
    ///   -0.108528;
    ///
    /// raw = 0.725214; null (never alerting) = -1; perfect = 1; normalised
    /// 100 * 1.725214 / 2 = 86.2607.
    fn tiny_example() -> Vec<Option<f64>> {
        let mut scores = vec![Some(0.3); 40];
        scores[0] = None;
        scores[1] = Some(-0.9);
        scores[3] = Some(-0.2);
        scores[5] = Some(-0.5);
        scores[8] = Some(-0.1);
        scores
    }

    #[test]
    fn nab_score_of_a_hand_computed_example() {
        let cost = STANDARD_PROFILE;
        let points = sweep_points(&tiny_example(), &[(4, 6)], 2, &cost, 0);
        assert_eq!(points.len(), 38, "probationary rows are dropped");
        let raw = score_at(&points, &cost, f64::MIN_POSITIVE);
        assert!((raw - 0.725_214).abs() < 1e-5, "{raw}");
        let null = null_score(&points, &cost);
        assert_eq!(null, -1.0, "always alerting costs more than the window");
        let norm = normalise(raw, null, 1.0).unwrap();
        assert!((norm - 86.2607).abs() < 1e-3, "{norm}");
        // A perfect detector: the window's first row only.
        let mut perfect = vec![Some(1.0); 40];
        perfect[4] = Some(-1.0);
        let p = sweep_points(&perfect, &[(4, 6)], 2, &cost, 0);
        assert!((score_at(&p, &cost, f64::MIN_POSITIVE) - 1.0).abs() < 1e-12);
        assert_eq!(
            normalise(0.0, 0.0, 0.0),
            None,
            "no window: nothing to normalise"
        );
    }

    #[test]
    fn the_sweep_finds_the_best_threshold_and_agrees_with_score_at() {
        let cost = STANDARD_PROFILE;
        let points = sweep_points(&tiny_example(), &[(4, 6)], 2, &cost, 0);
        let all = scores_by_threshold(&points, &cost);
        assert_eq!(all[0].threshold, f64::INFINITY);
        assert_eq!(all[0].score, -1.0);
        for ts in &all {
            assert!((score_at(&points, &cost, ts.threshold) - ts.score).abs() < 1e-9);
        }
        // Best: alert only at row 5 (score -0.5, key 0.5).
        let best = best_threshold(&points, &cost);
        assert_eq!(best.threshold, 0.5);
        assert!((best.score - 0.943_742).abs() < 1e-5, "{}", best.score);
        assert_eq!((best.tp, best.fp), (1, 0));
    }

    #[test]
    fn the_likelihood_is_decreasing_in_our_score() {
        assert_eq!(likelihood(None), 0.0);
        assert_eq!(likelihood(Some(0.0)), 0.5);
        assert!(likelihood(Some(-0.3)) > likelihood(Some(-0.1)));
        assert!(likelihood(Some(0.1)) < 0.5);
        assert!((0.0..=1.0).contains(&likelihood(Some(-1e300))));
    }

    #[test]
    fn event_metrics_by_threshold_count_catches_and_false_positives() {
        // 100 rows (probation 15), one window over rows 50..=60.
        let series = Series {
            key: "c/f.csv".into(),
            category: "c".into(),
            points: (0..100).map(|i| point(i, 1.0)).collect(),
            windows: vec![Window {
                start: t(50),
                end: t(60),
            }],
        };
        let mut scores: Vec<Option<f64>> = vec![Some(0.2); 100];
        scores[10] = Some(-0.9); // in the probation: not counted
        scores[20] = Some(-0.12);
        scores[55] = Some(-0.3);
        scores[80] = Some(-0.05);
        let rows = by_threshold(&[series], &[scores], &[0.0, -0.1, -0.2, -0.5]);
        let got: Vec<(usize, usize)> = rows.iter().map(|r| (r.caught, r.false_positives)).collect();
        assert_eq!(got, vec![(1, 2), (1, 1), (1, 0), (0, 0)]);
        assert!(rows.iter().all(|r| r.windows == 1 && r.scored_rows == 85));
        let table = threshold_table(&rows, Some(15.0));
        // 0 FP and 1/1 caught at -0.2: the goal's mark; 2 FP (23.5/1k) at 0: none.
        assert!(
            table
                .lines()
                .any(|l| l.contains("-0.200") && l.contains(">= 90%")),
            "{table}"
        );
        assert!(
            table
                .lines()
                .any(|l| l.contains("0.000") && !l.contains(">= 90%")),
            "{table}"
        );
    }

    fn point(i: i64, v: f64) -> Point {
        Point {
            timestamp: t(i),
            value: Some(v),
            success: true,
        }
    }

    #[test]
    fn the_zscore_baseline_is_causal_and_alerts_above_three() {
        let mut pts: Vec<Point> = (0..100)
            .map(|i| point(i, if i % 2 == 0 { 10.0 } else { 12.0 }))
            .collect();
        pts[80].value = Some(30.0);
        let s = zscore_scores(&pts, ZSCORE_WINDOW, ZSCORE_LIMIT);
        assert_eq!((s[0], s[1]), (None, None));
        assert!(s[79].is_some_and(|v| v > 0.0));
        assert!(s[80].is_some_and(|v| v < 0.0));
        // The future does not change the past.
        let head = zscore_scores(&pts[..81], ZSCORE_WINDOW, ZSCORE_LIMIT);
        assert_eq!(head[..], s[..81]);
        // A change from a constant history is infinitely unusual.
        let flat: Vec<Point> = (0..10)
            .map(|i| point(i, if i == 9 { 1.0 } else { 0.0 }))
            .collect();
        assert_eq!(
            zscore_scores(&flat, ZSCORE_WINDOW, ZSCORE_LIMIT)[9],
            Some(f64::NEG_INFINITY)
        );
    }

    #[test]
    fn shifting_moves_only_series_with_negative_values() {
        let pts = vec![point(0, -2.0), point(1, 3.0)];
        let up = shift_nonnegative(&pts);
        assert_eq!((up[0].value, up[1].value), (Some(0.0), Some(5.0)));
        let pos = vec![point(0, 2.0)];
        assert_eq!(shift_nonnegative(&pos), pos);
    }

    #[test]
    fn a_malformed_windows_file_names_the_file_and_entry() {
        let path = Path::new("w.json");
        let err = parse_windows("[1, 2]", path).unwrap_err();
        assert!(err.to_string().contains("w.json"), "{err}");
        let err =
            parse_windows(r#"{"a/b.csv": [["2014-01-01 00:00:00", "soon"]]}"#, path).unwrap_err();
        assert!(
            err.to_string().contains("`a/b.csv`") && err.to_string().contains("soon"),
            "{err}"
        );
        let err = parse_windows(
            r#"{"a/b.csv": [["2014-01-02 00:00:00", "2014-01-01 00:00:00"]]}"#,
            path,
        )
        .unwrap_err();
        assert!(err.to_string().contains("ends before it starts"), "{err}");
        let ok = parse_windows(
            r#"{"a/b.csv": [["2014-01-01 00:00:00.000000", "2014-01-01 01:00:00.000000"]], "c/d.csv": []}"#,
            path,
        )
        .unwrap();
        assert_eq!(ok["a/b.csv"].len(), 1);
        assert!(ok["c/d.csv"].is_empty());
    }

    #[test]
    fn a_missing_directory_is_named() {
        let err = load_corpus(Path::new("/no/such/nab"), Path::new("/no/such/w.json")).unwrap_err();
        assert!(err.to_string().contains("/no/such/nab"), "{err}");
    }

    #[test]
    fn the_pooled_forest_scores_every_series_once_it_has_a_model() {
        let series: Vec<Vec<Point>> = (0..2)
            .map(|k| {
                (0..300)
                    .map(|i| point(i, 100.0 + f64::from((i * 7 + k) as i32 % 13)))
                    .collect()
            })
            .collect();
        let refs: Vec<&[Point]> = series.iter().map(|s| s.as_slice()).collect();
        let opts = OriginalOptions {
            params: ModelParams {
                n_trees: 10,
                ..OriginalOptions::default().params
            },
            ..OriginalOptions::default()
        };
        let out = original_scores(&refs, &opts);
        // 120 pooled rows: 60 of each series, played in lockstep.
        for s in &out {
            assert!(s[..60].iter().all(Option::is_none));
            assert!(s[60..].iter().all(Option::is_some));
        }
    }
}
