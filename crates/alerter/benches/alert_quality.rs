//! Alert-quality evaluation: how often apimon pages on healthy APIs, how
//! fast it pages on injected incidents, whether each incident is one
//! opening and one resolution, and whether a burst of failures across many
//! APIs is one notification. It prints figures; it asserts nothing.
//!
//! Everything goes through `alerter::replay::replay`: the detector's replay
//! (models trained hourly, as the service does), the incident rules and the
//! notification policy (grouping, reminders), in data time. The data is
//! generated here with a seeded xorshift, one check every 15 s per API:
//!
//! 1. **Healthy data**: `--apis` APIs × `--days` days. Each API has its own
//!    typical time (log-uniform, 20 ms to 2 s), log-normal noise (sigma
//!    0.1–0.35), a daily cycle (amplitude 10–30%, random phase), one check
//!    in 400 2–4× slower and one in 5,000 failed. Every page there (`open`
//!    or `reminder`) is a false page.
//! 2. **Injected incidents**, `--per-type` of each type, each on its own API
//!    with the same kind of healthy background, at a random time of day
//!    after at least 2 days of history; the data goes on 24 h after the
//!    incident's start: outages of 1, 2, 5 and 20 minutes; a 3× slowdown for
//!    20 minutes; a permanent +60% level shift; a 3× slowdown 5 minutes
//!    after a single 10× check; a 3× slowdown 10 minutes after a 5-minute
//!    outage ended; 30 minutes alternating 200 / 503.
//! 3. **Grouping**: 50 APIs (one day of history, check phases spread over
//!    the 15 s interval) all failing for 3 minutes from the same instant.
//!
//! An incident is identified by its API, kind and `started_at` (every page
//! of one incident carries them). It belongs to an injected window when it
//! is of the window's kind, started before the window ended and was paged
//! after it began; every other incident's `open` and `reminder` rows are
//! false pages. Time to page: the first such `open` minus the injection's
//! start.
//!
//! ```text
//! cargo bench -p alerter --bench alert_quality -- [--apis N] [--days D]
//!     [--per-type N] [--seed S] [--threads N] [--policy KEY=VALUE]... [--quick]
//! ```
//!
//! `--policy` (repeatable) sets an `ALERT_*` incident variable,
//! `ALERT_GROUP_WAIT` or `ALERT_REPEAT_INTERVAL` for this run, to try other
//! settings against the same data. `--quick`: 4 APIs × 2 days, 2 of each
//! type, 10 APIs in the grouping burst (a smoke run). `--trace API` (a
//! name the output shows, with the same other options) prints that API's
//! incident rules at work around its incidents: every transition, and
//! every 5 minutes the median of the last 16 checks against the baseline.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::f64::consts::TAU;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use alerter::dispatch::Event;
use alerter::replay::{replay, Page, Policy};
use apimon_core::incidents::{Check, IncidentPolicy, Kind, Tracker};
use apimon_core::Env;
use apimon_testkit::procfs;
use chrono::{DateTime, TimeZone, Utc};
use detector::replay::{Point, ReplayOptions};

const STEP_MS: i64 = 15_000;
const MIN_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// Healthy history before the first injected effect.
const WARM_DAYS: i64 = 2;
/// Data kept after an injected incident's start.
const AFTER_MS: i64 = DAY_MS;
/// One check in this many is 2–4× slower.
const SLOW_CHECK_ONE_IN: f64 = 400.0;
/// One check in this many fails on its own.
const FAILED_CHECK_ONE_IN: f64 = 5_000.0;
/// Most pages per API-day on healthy data.
const TARGET_PAGES_PER_API_DAY: f64 = 0.05;

/// The variables `--policy` accepts.
const POLICY_KEYS: [&str; 15] = [
    "ALERT_DOWN_AFTER",
    "ALERT_DOWN_WINDOW",
    "ALERT_DOWN_RATIO",
    "ALERT_RECOVER_AFTER",
    "ALERT_SLOW_FAST_WINDOW",
    "ALERT_SLOW_FAST_RATIO",
    "ALERT_SLOW_WINDOW",
    "ALERT_SLOW_RATIO",
    "ALERT_SLOW_MIN_MS",
    "ALERT_SLOW_RESOLVE_WINDOW",
    "ALERT_BASELINE_CHECKS",
    "ALERT_BASELINE_MIN_CHECKS",
    "ALERT_FLAP_WINDOW",
    "ALERT_GROUP_WAIT",
    "ALERT_REPEAT_INTERVAL",
];

// ------------------------------------------------------------- arguments

struct Args {
    apis: usize,
    days: f64,
    per_type: usize,
    group_apis: usize,
    seed: u64,
    threads: usize,
    policy: Vec<(String, String)>,
    /// An API whose incident rules are traced (`--trace NAME`).
    trace: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        apis: 20,
        days: 7.0,
        per_type: 10,
        group_apis: 50,
        seed: 1,
        threads: 2,
        policy: Vec::new(),
        trace: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{key} needs a value"))
        };
        match key.as_str() {
            // `cargo bench` appends `--bench` to the arguments of every bench.
            "--bench" => {}
            "--help" | "-h" => {
                println!(
                    "usage: cargo bench -p alerter --bench alert_quality -- [--apis N] [--days D] \
                     [--per-type N] [--seed S] [--threads N] [--policy KEY=VALUE]... [--quick] \
                     [--trace API]"
                );
                std::process::exit(0);
            }
            "--quick" => {
                args.apis = 4;
                args.days = 2.0;
                args.per_type = 2;
                args.group_apis = 10;
            }
            "--apis" => args.apis = positive(&key, &value()?)?,
            "--per-type" => args.per_type = positive(&key, &value()?)?,
            "--threads" => args.threads = positive(&key, &value()?)?,
            "--days" => {
                let d: f64 = value()?.parse().map_err(|e| format!("--days: {e}"))?;
                if !(d.is_finite() && d > 0.0 && d <= 366.0) {
                    return Err(format!("--days: expected 0 to 366, got {d}"));
                }
                args.days = d;
            }
            "--trace" => args.trace = Some(value()?),
            "--seed" => args.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--policy" => {
                let kv = value()?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("--policy: expected KEY=VALUE, got `{kv}`"))?;
                if !POLICY_KEYS.contains(&k) {
                    return Err(format!(
                        "--policy: unknown variable `{k}` (one of {})",
                        POLICY_KEYS.join(", ")
                    ));
                }
                args.policy.push((k.to_string(), v.to_string()));
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

fn positive(key: &str, v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        Ok(_) => Err(format!("{key} must be above zero")),
        Err(e) => Err(format!("{key}: {e}")),
    }
}

/// The policy of this run: the defaults with `--policy` applied.
fn policy(pairs: &[(String, String)]) -> Result<Policy, apimon_core::ConfigError> {
    let env = Env::from_pairs(pairs.iter().cloned());
    Ok(Policy {
        incidents: IncidentPolicy::from_env(&env)?,
        group_wait: env.duration_or("ALERT_GROUP_WAIT", Duration::from_secs(30))?,
        repeat_interval: env.duration_or("ALERT_REPEAT_INTERVAL", Duration::from_secs(4 * 3600))?,
    })
}

// ------------------------------------------------------------- generator

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    /// A generator for one stream of one seed (splitmix64 of both).
    fn new(seed: u64, stream: u64) -> Rng {
        let mut z = seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
    /// Uniform in [0, n).
    fn below(&mut self, n: i64) -> i64 {
        (self.uniform() * n as f64) as i64
    }
    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }
    fn one_in(&mut self, n: f64) -> bool {
        self.uniform() < 1.0 / n
    }
}

/// An API's healthy behaviour.
#[derive(Debug, Clone, Copy)]
struct Profile {
    /// Typical response time (ms) around which the day cycles.
    mean_ms: f64,
    /// Log-normal noise: standard deviation of ln(ms).
    sigma: f64,
    /// Daily cycle: relative amplitude.
    amplitude: f64,
    /// Daily cycle: phase (radians).
    phase: f64,
    /// When in the 15 s interval the API is checked (ms).
    offset_ms: i64,
}

impl Profile {
    fn draw(rng: &mut Rng) -> Profile {
        Profile {
            mean_ms: (rng.range(20f64.ln(), 2000f64.ln())).exp(),
            sigma: rng.range(0.1, 0.35),
            amplitude: rng.range(0.1, 0.3),
            phase: rng.range(0.0, TAU),
            offset_ms: rng.below(STEP_MS),
        }
    }

    /// The typical response time at `ms` (epoch ms): the daily cycle.
    fn typical(&self, ms: i64) -> f64 {
        let day = ms.rem_euclid(DAY_MS) as f64 / DAY_MS as f64;
        self.mean_ms * (1.0 + self.amplitude * (TAU * day + self.phase).sin())
    }

    /// Where the daily cycle stands at `ms`: its level against the mean
    /// and how fast it changes, per hour.
    fn cycle_note(&self, ms: i64) -> String {
        let level = self.typical(ms) / self.mean_ms;
        let rise = self.typical(ms + HOUR_MS / 2) / self.typical(ms - HOUR_MS / 2) - 1.0;
        format!(
            "daily cycle at {:.0}% of the mean, {:+.1}% an hour",
            level * 100.0,
            rise * 100.0
        )
    }

    /// One healthy check: a response time, or `None` when it failed.
    fn check(&self, ms: i64, rng: &mut Rng) -> Option<f64> {
        // Always draw the same numbers, so that an effect on one check does
        // not shift the noise of the next ones.
        let z = rng.normal();
        let slow = rng.one_in(SLOW_CHECK_ONE_IN);
        let factor = rng.range(2.0, 4.0);
        let failed = rng.one_in(FAILED_CHECK_ONE_IN);
        if failed {
            return None;
        }
        let v = self.typical(ms) * (self.sigma * z).exp();
        Some(if slow { v * factor } else { v })
    }
}

/// A change injected into an API's checks, over `[from, to)` (epoch ms).
#[derive(Debug, Clone, Copy)]
enum Effect {
    /// Every check fails.
    Outage { from: i64, to: i64 },
    /// Checks alternate 503 / 200, starting with a 503.
    Flap { from: i64, to: i64 },
    /// Response times × `factor`.
    Slow { from: i64, to: i64, factor: f64 },
    /// The first check at or after `at` takes `factor` × the typical time.
    Spike { at: i64, factor: f64 },
}

/// Checks of one API from `start` to `end` (epoch ms), at its offset.
fn series(p: &Profile, rng: &mut Rng, start: i64, end: i64, effects: &[Effect]) -> Vec<Point> {
    let first = start - start.rem_euclid(STEP_MS) + p.offset_ms;
    let mut out = Vec::with_capacity(((end - first) / STEP_MS).max(0) as usize + 1);
    let mut t = first;
    while t < end {
        let mut value = p.check(t, rng);
        for e in effects {
            match *e {
                Effect::Outage { from, to } if (from..to).contains(&t) => value = None,
                Effect::Flap { from, to } if (from..to).contains(&t) => {
                    let k = (t - from) / STEP_MS;
                    if k % 2 == 0 {
                        value = None;
                    }
                }
                Effect::Slow { from, to, factor } if (from..to).contains(&t) => {
                    value = value.map(|v| v * factor);
                }
                Effect::Spike { at, factor } if (at..at + STEP_MS).contains(&t) => {
                    value = Some(p.typical(t) * factor);
                }
                _ => {}
            }
        }
        out.push(Point {
            timestamp: time(t),
            value,
            success: value.is_some(),
        });
        t += STEP_MS;
    }
    out
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Data starts on a Monday at midnight.
fn epoch_ms() -> i64 {
    Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0)
        .single()
        .map_or(0, |t| t.timestamp_millis())
}

// -------------------------------------------------------------- scenarios

/// The injected incident types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
    Outage(i64),
    Slowdown,
    Shift,
    AfterSpike,
    AfterOutage,
    Flap,
}

impl Case {
    fn all() -> [Case; 9] {
        [
            Case::Outage(1),
            Case::Outage(2),
            Case::Outage(5),
            Case::Outage(20),
            Case::Slowdown,
            Case::Shift,
            Case::AfterSpike,
            Case::AfterOutage,
            Case::Flap,
        ]
    }

    fn label(self) -> String {
        match self {
            Case::Outage(m) => format!("outage {m} min"),
            Case::Slowdown => "3x slowdown 20 min".into(),
            Case::Shift => "+60% level shift (permanent)".into(),
            Case::AfterSpike => "3x slowdown 5 min after one 10x check".into(),
            Case::AfterOutage => "3x slowdown 10 min after a 5 min outage".into(),
            Case::Flap => "flapping 200/503 30 min".into(),
        }
    }

    fn kind(self) -> Kind {
        match self {
            Case::Outage(_) | Case::Flap => Kind::Down,
            _ => Kind::Slow,
        }
    }

    /// Longest acceptable time to page.
    fn target(self) -> Option<Duration> {
        match self {
            Case::Outage(_) => Some(Duration::from_secs(45)),
            Case::Slowdown | Case::AfterSpike | Case::AfterOutage => Some(Duration::from_secs(120)),
            Case::Shift => Some(Duration::from_secs(1800)),
            Case::Flap => None,
        }
    }

    /// Whether the incident ends (and so should be resolved).
    fn finite(self) -> bool {
        self != Case::Shift
    }
}

/// An injected incident on its own API.
struct Injection {
    api: String,
    case: Case,
    profile: Profile,
    /// Seed stream of the API's noise.
    stream: u64,
    /// The measured incident (epoch ms); `end` is the data's end for the
    /// permanent shift.
    start: i64,
    end: i64,
    /// Other injected windows on the same API: (kind, from, to). Their
    /// pages are expected, not false.
    others: Vec<(Kind, i64, i64)>,
    effects: Vec<Effect>,
    data_end: i64,
}

fn injections(args: &Args) -> Vec<Injection> {
    let t0 = epoch_ms();
    let mut rng = Rng::new(args.seed, 2);
    let mut out = Vec::new();
    for case in Case::all() {
        for i in 0..args.per_type {
            let profile = Profile::draw(&mut rng);
            // The first injected effect: after WARM_DAYS, any time of day.
            let first = t0 + WARM_DAYS * DAY_MS + rng.below(DAY_MS);
            let (start, mut others, mut effects) = match case {
                Case::AfterSpike => {
                    let s = first + 5 * MIN_MS;
                    (
                        s,
                        vec![],
                        vec![Effect::Spike {
                            at: first,
                            factor: 10.0,
                        }],
                    )
                }
                Case::AfterOutage => {
                    let s = first + 15 * MIN_MS;
                    (
                        s,
                        vec![(Kind::Down, first, first + 5 * MIN_MS)],
                        vec![Effect::Outage {
                            from: first,
                            to: first + 5 * MIN_MS,
                        }],
                    )
                }
                _ => (first, vec![], vec![]),
            };
            let data_end = start + AFTER_MS;
            let end = match case {
                Case::Outage(m) => start + m * MIN_MS,
                Case::Flap => start + 30 * MIN_MS,
                Case::Shift => data_end,
                _ => start + 20 * MIN_MS,
            };
            effects.push(match case {
                Case::Outage(_) => Effect::Outage {
                    from: start,
                    to: end,
                },
                Case::Flap => Effect::Flap {
                    from: start,
                    to: end,
                },
                Case::Shift => Effect::Slow {
                    from: start,
                    to: end,
                    factor: 1.6,
                },
                _ => Effect::Slow {
                    from: start,
                    to: end,
                    factor: 3.0,
                },
            });
            others.sort_by_key(|o| o.1);
            let n = out.len() as u64;
            out.push(Injection {
                api: format!("{}-{}", slug(case), i + 1),
                case,
                profile,
                stream: 1_000_000 + n,
                start,
                end,
                others,
                effects,
                data_end,
            });
        }
    }
    out
}

fn slug(case: Case) -> String {
    match case {
        Case::Outage(m) => format!("outage{m}m"),
        Case::Slowdown => "slow3x".into(),
        Case::Shift => "shift60".into(),
        Case::AfterSpike => "spike-slow".into(),
        Case::AfterOutage => "outage-slow".into(),
        Case::Flap => "flap".into(),
    }
}

/// The grouping burst: APIs failing together from `at` for `len`.
struct Burst {
    apis: usize,
    start: i64,
    at: i64,
    len: i64,
    end: i64,
}

fn burst(args: &Args) -> Burst {
    let mut rng = Rng::new(args.seed, 3);
    let start = epoch_ms();
    let at = start + DAY_MS + rng.below(DAY_MS);
    Burst {
        apis: args.group_apis,
        start,
        at,
        len: 3 * MIN_MS,
        end: at + 2 * HOUR_MS,
    }
}

fn burst_series(args: &Args, b: &Burst) -> Vec<(String, Vec<Point>)> {
    (0..b.apis)
        .map(|i| {
            let mut rng = Rng::new(args.seed, 2_000_000 + i as u64);
            let mut p = Profile::draw(&mut rng);
            // Spread evenly over the interval, as the pinger's offsets are.
            p.offset_ms = i as i64 * STEP_MS / b.apis as i64;
            let effects = [Effect::Outage {
                from: b.at,
                to: b.at + b.len,
            }];
            let name = format!("burst-{:02}", i + 1);
            (name, series(&p, &mut rng, b.start, b.end, &effects))
        })
        .collect()
}

// ---------------------------------------------------------------- running

/// One replay call.
#[derive(Debug, Clone, Copy)]
enum Job {
    Healthy(usize),
    Injected(usize),
    Burst,
}

struct Done {
    pages: Vec<Page>,
    rows: usize,
}

fn run_jobs(
    jobs: &[Job],
    threads: usize,
    make: &(dyn Fn(Job) -> Vec<(String, Vec<Point>)> + Sync),
    policy: &Policy,
) -> Vec<Done> {
    let opts = ReplayOptions::default();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Done>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    let finished = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.min(jobs.len()).max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let series = make(*job);
                let rows = series.iter().map(|(_, p)| p.len()).sum();
                let pages = replay(&series, &opts, policy);
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(Done { pages, rows });
                }
                let n = finished.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 10 == 0 || n == jobs.len() {
                    eprintln!("  {n}/{} replays done", jobs.len());
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|d| {
            d.unwrap_or(Done {
                pages: Vec::new(),
                rows: 0,
            })
        })
        .collect()
}

// ---------------------------------------------------------------- tracing

/// Feeds one API's checks to the incident rules alone (as the replay does,
/// without the detector's severities, which only enter the evidence) and
/// prints what they see around each incident.
fn trace(name: &str, points: &[Point], p: &IncidentPolicy) {
    const AROUND: usize = 240;
    const EVERY: usize = 20;
    let feed = |tr: &mut Tracker, x: &Point| tr.observe(p, &check_of(x));
    let mut near = vec![false; points.len()];
    let mut tr = Tracker::default();
    for (i, x) in points.iter().enumerate() {
        let changed = !feed(&mut tr, x).is_empty();
        if changed || tr.current().next().is_some() {
            let hi = (i + AROUND).min(points.len());
            near[i.saturating_sub(AROUND)..hi].fill(true);
        }
    }
    println!("## Trace of {name}\n");
    println!(
        "time | last check ms | median of 16 | baseline median | ratio | slow shift | incidents"
    );
    let mut tr = Tracker::default();
    let mut last: VecDeque<Option<f64>> = VecDeque::new();
    for (i, x) in points.iter().enumerate() {
        let out = feed(&mut tr, x);
        last.push_back(x.value);
        if last.len() > 16 {
            last.pop_front();
        }
        for t in &out {
            println!(
                "{} | {:?} {} (started {}): {}",
                fmt_time(x.timestamp),
                t.change,
                t.incident.kind,
                fmt_time(t.incident.started_at),
                t.incident.reason
            );
        }
        if near[i] && i % EVERY == 0 {
            let mut v: Vec<f64> = last.iter().flatten().copied().collect();
            v.sort_by(f64::total_cmp);
            let median = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
            let base = tr.baseline.median_ms();
            let current: Vec<String> = tr
                .current()
                .map(|c| format!("{} {}", c.kind, c.state.as_str()))
                .collect();
            println!(
                "{} | {} | {median:.0} | {base:.0} | {:.2} | {} | {}",
                fmt_time(x.timestamp),
                x.value.map_or("failed".into(), |v| format!("{v:.0}")),
                median / base,
                tr.slow_shift.map_or("-".into(), |s| format!("{s:.2}")),
                current.join(", ")
            );
        }
    }
    println!();
}

// ---------------------------------------------------------------- scoring

/// The pages of one incident (same API, kind and start).
#[derive(Debug, Default)]
struct IncidentPages<'a> {
    open: Option<&'a Page>,
    reminders: usize,
    resolve: Option<&'a Page>,
    all: Vec<&'a Page>,
}

fn incidents(pages: &[Page]) -> BTreeMap<(String, Kind, DateTime<Utc>), IncidentPages<'_>> {
    let mut by: BTreeMap<(String, Kind, DateTime<Utc>), IncidentPages<'_>> = BTreeMap::new();
    for p in pages {
        let e = by
            .entry((p.api_name.clone(), p.kind, p.started_at))
            .or_default();
        match p.event {
            Event::Open => e.open = e.open.or(Some(p)),
            Event::Reminder => e.reminders += 1,
            Event::Resolve => e.resolve = e.resolve.or(Some(p)),
        }
        e.all.push(p);
    }
    by
}

/// Whether an incident belongs to the window `[from, to)` of `kind`.
fn matches(kind: Kind, from: i64, to: i64, k: Kind, inc: &IncidentPages<'_>, started: i64) -> bool {
    let paged = inc
        .open
        .or(inc.all.first().copied())
        .map_or(i64::MIN, |p| p.timestamp.timestamp_millis());
    k == kind && started < to && paged >= from
}

fn is_page(p: &Page) -> bool {
    matches!(p.event, Event::Open | Event::Reminder)
}

/// What happened to one injected incident.
struct Outcome {
    ttp: Option<f64>,
    /// Seconds from the incident's end to its last resolve page.
    resolved_after: Option<f64>,
    opens: usize,
    resolves: usize,
    reminders: usize,
    /// Opens and resolves of the other injected windows.
    others: (usize, usize),
    false_pages: Vec<Page>,
}

fn score(inj: &Injection, pages: &[Page]) -> Outcome {
    let mut o = Outcome {
        ttp: None,
        resolved_after: None,
        opens: 0,
        resolves: 0,
        reminders: 0,
        others: (0, 0),
        false_pages: Vec::new(),
    };
    for ((_, k, started), inc) in incidents(pages) {
        let started = started.timestamp_millis();
        if matches(inj.case.kind(), inj.start, inj.end, k, &inc, started) {
            if let Some(open) = inc.open {
                o.opens += 1;
                let t = (open.timestamp.timestamp_millis() - inj.start) as f64 / 1000.0;
                o.ttp = Some(o.ttp.map_or(t, |x: f64| x.min(t)));
            }
            o.resolves += usize::from(inc.resolve.is_some());
            if let Some(r) = inc.resolve.filter(|_| inj.case.finite()) {
                let t = (r.timestamp.timestamp_millis() - inj.end) as f64 / 1000.0;
                o.resolved_after = Some(o.resolved_after.map_or(t, |x: f64| x.max(t)));
            }
            o.reminders += inc.reminders;
        } else if inj
            .others
            .iter()
            .any(|&(kind, from, to)| matches(kind, from, to, k, &inc, started))
        {
            o.others.0 += usize::from(inc.open.is_some());
            o.others.1 += usize::from(inc.resolve.is_some());
        } else {
            o.false_pages
                .extend(inc.all.iter().filter(|p| is_page(p)).map(|p| (*p).clone()));
        }
    }
    o.false_pages.sort_by_key(|p| p.timestamp);
    o
}

// --------------------------------------------------------------- printing

fn fmt_secs(s: f64) -> String {
    if s < 600.0 {
        format!("{s:.0} s")
    } else {
        format!("{:.1} min", s / 60.0)
    }
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%a %H:%M:%S").to_string()
}

/// Index of a healthy API from its name (`healthy-07` is 6).
fn profiles_by_name(name: &str) -> Option<usize> {
    name.strip_prefix("healthy-")?
        .parse::<usize>()
        .ok()?
        .checked_sub(1)
}

fn print_page(p: &Page) {
    println!(
        "- {} {} {} {} (started {}): {}",
        p.api_name,
        fmt_time(p.timestamp),
        p.event.as_str(),
        p.kind,
        fmt_time(p.started_at),
        p.detail
    );
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

fn print_policy(p: &Policy, overrides: &[(String, String)]) {
    let i = &p.incidents;
    println!("## Policy\n");
    if overrides.is_empty() {
        println!("Defaults (no --policy).\n");
    } else {
        let o: Vec<String> = overrides.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("Defaults with {}.\n", o.join(" "));
    }
    println!("| variable | value |\n| --- | --- |");
    let rows: [(&str, String); 15] = [
        ("ALERT_DOWN_AFTER", i.down_after.to_string()),
        ("ALERT_DOWN_WINDOW", i.down_window.to_string()),
        ("ALERT_DOWN_RATIO", i.down_ratio.to_string()),
        ("ALERT_RECOVER_AFTER", i.recover_after.to_string()),
        ("ALERT_SLOW_FAST_WINDOW", i.slow_fast_window.to_string()),
        ("ALERT_SLOW_FAST_RATIO", i.slow_fast_ratio.to_string()),
        ("ALERT_SLOW_WINDOW", i.slow_window.to_string()),
        ("ALERT_SLOW_RATIO", i.slow_ratio.to_string()),
        ("ALERT_SLOW_MIN_MS", i.slow_min_ms.to_string()),
        (
            "ALERT_SLOW_RESOLVE_WINDOW",
            i.slow_resolve_window.to_string(),
        ),
        ("ALERT_BASELINE_CHECKS", i.baseline_checks.to_string()),
        (
            "ALERT_BASELINE_MIN_CHECKS",
            i.baseline_min_checks.to_string(),
        ),
        (
            "ALERT_FLAP_WINDOW",
            format!("{} s", i.flap_window.as_secs()),
        ),
        ("ALERT_GROUP_WAIT", format!("{} s", p.group_wait.as_secs())),
        (
            "ALERT_REPEAT_INTERVAL",
            format!("{} s", p.repeat_interval.as_secs()),
        ),
    ];
    for (k, v) in rows {
        println!("| `{k}` | {v} |");
    }
    println!();
}

// ------------------------------------------------------------------- main

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("alert_quality: {e}");
            std::process::exit(2);
        }
    };
    let policy = match policy(&args.policy) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("alert_quality: {e}");
            std::process::exit(2);
        }
    };
    let wall = Instant::now();
    let pid = std::process::id();
    let cpu0 = procfs::cpu_ticks(pid);
    let machine0 = procfs::machine_ticks();

    let t0 = epoch_ms();
    let healthy_end = t0 + (args.days * DAY_MS as f64) as i64;
    let profiles: Vec<Profile> = (0..args.apis)
        .map(|i| Profile::draw(&mut Rng::new(args.seed, 10_000 + i as u64)))
        .collect();
    let injected = injections(&args);
    let b = burst(&args);

    let mut jobs = vec![Job::Burst];
    jobs.extend((0..args.apis).map(Job::Healthy));
    jobs.extend((0..injected.len()).map(Job::Injected));
    let make = |job: Job| -> Vec<(String, Vec<Point>)> {
        match job {
            Job::Healthy(i) => {
                let mut rng = Rng::new(args.seed, 20_000 + i as u64);
                let pts = series(&profiles[i], &mut rng, t0, healthy_end, &[]);
                vec![(format!("healthy-{:02}", i + 1), pts)]
            }
            Job::Injected(i) => {
                let inj = &injected[i];
                let mut rng = Rng::new(args.seed, inj.stream);
                let pts = series(&inj.profile, &mut rng, t0, inj.data_end, &inj.effects);
                vec![(inj.api.clone(), pts)]
            }
            Job::Burst => burst_series(&args, &b),
        }
    };
    if let Some(name) = &args.trace {
        let found = jobs
            .iter()
            .flat_map(|j| make(*j))
            .find(|(api, _)| api == name);
        match found {
            Some((api, points)) => trace(&api, &points, &policy.incidents),
            None => {
                eprintln!("alert_quality: --trace: no API named `{name}` with these options");
                std::process::exit(2);
            }
        }
        return;
    }
    eprintln!(
        "alert_quality: {} replays ({} healthy APIs x {} days, {} injected, {} burst APIs) on {} threads",
        jobs.len(),
        args.apis,
        args.days,
        injected.len(),
        b.apis,
        args.threads
    );
    let done = run_jobs(&jobs, args.threads, &make, &policy);
    let secs = wall.elapsed().as_secs_f64();
    let cpu = cpu0
        .zip(procfs::cpu_ticks(pid))
        .map(|(a, z)| (z - a) as f64 / procfs::clock_ticks());
    let others_busy = machine0
        .zip(procfs::machine_ticks())
        .map(|((b0, t0), (b1, t1))| {
            let total = (t1 - t0).max(1) as f64;
            let mine = cpu.unwrap_or(0.0) * procfs::clock_ticks();
            (((b1 - b0) as f64 - mine).max(0.0) / total * 100.0).min(100.0)
        });
    let rows: usize = done.iter().map(|d| d.rows).sum();

    println!("# Alert-quality evaluation\n");
    println!(
        "seed {}, {} healthy APIs x {} days, {} injections of each of {} types, {} APIs in the burst; one check every 15 s\n",
        args.seed,
        args.apis,
        args.days,
        args.per_type,
        Case::all().len(),
        b.apis
    );
    print_policy(&policy, &args.policy);

    // 1. Healthy data.
    let mut healthy_pages: Vec<&Page> = Vec::new();
    let mut healthy_rows = 0usize;
    for (job, d) in jobs.iter().zip(&done) {
        if let Job::Healthy(_) = job {
            healthy_rows += d.rows;
            healthy_pages.extend(d.pages.iter().filter(|p| is_page(p)));
        }
    }
    healthy_pages.sort_by_key(|p| (p.api_name.clone(), p.timestamp));
    let api_days = args.apis as f64 * args.days;
    let per_day = healthy_pages.len() as f64 / api_days;
    println!("## 1. Healthy data\n");
    println!(
        "{} API-days ({healthy_rows} checks): {} pages ({} open, {} reminder) = {per_day:.3} pages per API-day (target <= {TARGET_PAGES_PER_API_DAY}: {})\n",
        api_days,
        healthy_pages.len(),
        healthy_pages.iter().filter(|p| p.event == Event::Open).count(),
        healthy_pages.iter().filter(|p| p.event == Event::Reminder).count(),
        if per_day <= TARGET_PAGES_PER_API_DAY { "met" } else { "NOT met" }
    );
    for (i, p) in profiles.iter().enumerate() {
        let name = format!("healthy-{:02}", i + 1);
        let n = healthy_pages.iter().filter(|x| x.api_name == name).count();
        if n > 0 {
            println!(
                "{name}: mean {:.0} ms, sigma {:.2}, daily amplitude {:.0}%: {n} pages",
                p.mean_ms,
                p.sigma,
                p.amplitude * 100.0
            );
        }
    }
    if !healthy_pages.is_empty() {
        println!("\nFalse pages on healthy data:\n");
        for p in &healthy_pages {
            print_page(p);
            let i = profiles_by_name(&p.api_name);
            if let Some(prof) = i.and_then(|i| profiles.get(i)) {
                println!("  ({})", prof.cycle_note(p.started_at.timestamp_millis()));
            }
        }
    }
    println!();

    // 2. Injected incidents.
    println!("## 2. Injected incidents\n");
    println!("| api | type | start | mean ms | sigma | paged | time to page | opens | resolves | resolve page after the end | reminders | other windows (open/resolve) | false pages |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut by_case: BTreeMap<Case, Vec<Outcome>> = BTreeMap::new();
    let mut injected_false: Vec<(Page, Profile)> = Vec::new();
    let mut injected_days = 0.0;
    let mut unusual: Vec<(String, Vec<Page>)> = Vec::new();
    for (job, d) in jobs.iter().zip(&done) {
        let Job::Injected(i) = job else { continue };
        let inj = &injected[*i];
        injected_days += (inj.data_end - t0) as f64 / DAY_MS as f64;
        let o = score(inj, &d.pages);
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} |",
            inj.api,
            inj.case.label(),
            fmt_time(time(inj.start)),
            inj.profile.mean_ms,
            inj.profile.sigma,
            if o.ttp.is_some() { "yes" } else { "**missed**" },
            o.ttp.map_or("-".into(), fmt_secs),
            o.opens,
            o.resolves,
            o.resolved_after.map_or("-".into(), fmt_secs),
            o.reminders,
            if inj.others.is_empty() {
                "-".to_string()
            } else {
                format!("{}/{}", o.others.0, o.others.1)
            },
            o.false_pages.len()
        );
        injected_false.extend(o.false_pages.iter().map(|p| (p.clone(), inj.profile)));
        if o.opens != 1 || o.resolves != usize::from(inj.case.finite()) {
            unusual.push((inj.api.clone(), d.pages.clone()));
        }
        by_case.entry(inj.case).or_default().push(o);
    }
    if !unusual.is_empty() {
        println!(
            "\nAll pages of the injections without exactly one open (and one resolve when finite):"
        );
        for (api, pages) in &unusual {
            println!("\n{api}:\n");
            for p in pages {
                print_page(p);
            }
        }
    }
    if !injected_false.is_empty() {
        println!("\nFalse pages on the APIs with injected incidents (outside their windows):\n");
        for (p, prof) in &injected_false {
            print_page(p);
            println!(
                "  (mean {:.0} ms, sigma {:.2}, {})",
                prof.mean_ms,
                prof.sigma,
                prof.cycle_note(p.started_at.timestamp_millis())
            );
        }
    }
    println!();

    // 3. Grouping.
    let burst_pages = jobs
        .iter()
        .zip(&done)
        .find(|(j, _)| matches!(j, Job::Burst))
        .map(|(_, d)| d.pages.as_slice())
        .unwrap_or(&[]);
    let mut open_n = BTreeSet::new();
    let mut resolve_n = BTreeSet::new();
    let mut open_sizes = BTreeSet::new();
    let mut resolve_sizes = BTreeSet::new();
    let mut paged_apis = BTreeSet::new();
    let mut burst_false: Vec<&Page> = Vec::new();
    for ((api, k, started), inc) in incidents(burst_pages) {
        if matches(
            Kind::Down,
            b.at,
            b.at + b.len,
            k,
            &inc,
            started.timestamp_millis(),
        ) {
            if let Some(o) = inc.open {
                open_n.insert(o.notification);
                open_sizes.insert(o.group_size);
                paged_apis.insert(api);
            }
            if let Some(r) = inc.resolve {
                resolve_n.insert(r.notification);
                resolve_sizes.insert(r.group_size);
            }
        } else {
            burst_false.extend(inc.all.iter().filter(|p| is_page(p)));
        }
    }
    let first_open = burst_pages
        .iter()
        .filter(|p| p.event == Event::Open && p.started_at.timestamp_millis() >= b.at)
        .map(|p| (p.timestamp.timestamp_millis() - b.at) as f64 / 1000.0)
        .fold(f64::INFINITY, f64::min);
    println!("## 3. Grouping\n");
    println!(
        "{} APIs failing for 3 min from {} (check offsets spread over 15 s): {} paged; opens in {} notification(s) {:?} (group sizes {:?}), {} after the start; resolves in {} notification(s) {:?} (group sizes {:?}); {} false pages\n",
        b.apis,
        fmt_time(time(b.at)),
        paged_apis.len(),
        open_n.len(),
        open_n,
        open_sizes,
        fmt_secs(first_open),
        resolve_n.len(),
        resolve_n,
        resolve_sizes,
        burst_false.len()
    );
    for p in &burst_false {
        print_page(p);
    }

    // 4. Summary.
    println!("## Summary\n");
    println!("| measure | count | paged | missed | time to page p50 | max | target | met | opens per incident | resolves per incident | resolve page after the end p50 / max | false pages |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| healthy data: pages per API-day | {api_days} API-days | | | | | <= {TARGET_PAGES_PER_API_DAY} | {} | | | | {} ({per_day:.3}/API-day) |",
        if per_day <= TARGET_PAGES_PER_API_DAY { "yes" } else { "**no**" },
        healthy_pages.len()
    );
    for (case, outs) in &by_case {
        let mut ttp: Vec<f64> = outs.iter().filter_map(|o| o.ttp).collect();
        ttp.sort_by(f64::total_cmp);
        let n = outs.len();
        let paged = ttp.len();
        let met = match case.target() {
            Some(t) => {
                let ok = ttp.iter().filter(|&&s| s <= t.as_secs_f64()).count();
                if ok == n {
                    format!("yes ({ok}/{n})")
                } else {
                    format!("**no** ({ok}/{n})")
                }
            }
            None => "-".into(),
        };
        let want_resolves = usize::from(case.finite());
        let opens_ok = outs.iter().filter(|o| o.opens == 1).count();
        let resolves_ok = outs.iter().filter(|o| o.resolves == want_resolves).count();
        let mean = |f: &dyn Fn(&Outcome) -> usize| {
            outs.iter().map(f).sum::<usize>() as f64 / n.max(1) as f64
        };
        let false_pages: usize = outs.iter().map(|o| o.false_pages.len()).sum();
        let mut after: Vec<f64> = outs.iter().filter_map(|o| o.resolved_after).collect();
        after.sort_by(f64::total_cmp);
        let after = match (percentile(&after, 0.5), after.last()) {
            (Some(m), Some(x)) if case.finite() => format!("{} / {}", fmt_secs(m), fmt_secs(*x)),
            _ => "-".into(),
        };
        println!(
            "| {} | {n} | {paged} | {} | {} | {} | {} | {met} | {:.1} ({opens_ok}/{n} exactly 1) | {:.1} ({resolves_ok}/{n} exactly {want_resolves}) | {after} | {false_pages} |",
            case.label(),
            n - paged,
            percentile(&ttp, 0.5).map_or("-".into(), fmt_secs),
            ttp.last().map_or("-".into(), |s| fmt_secs(*s)),
            case.target().map_or("(paged once)".into(), |t| format!("<= {}", fmt_secs(t.as_secs_f64()))),
            mean(&|o| o.opens),
            mean(&|o| o.resolves),
        );
    }
    println!(
        "| grouping: {} APIs down 3 min together | {} | {} | {} | {} | | 1 open + 1 resolve notification | {} | {} notification(s) | {} notification(s) | | {} |",
        b.apis,
        b.apis,
        paged_apis.len(),
        b.apis - paged_apis.len(),
        if first_open.is_finite() { fmt_secs(first_open) } else { "-".into() },
        if open_n.len() == 1 && resolve_n.len() == 1 { "yes" } else { "**no**" },
        open_n.len(),
        resolve_n.len(),
        burst_false.len()
    );
    println!();
    println!(
        "Injected APIs' background: {:.1} API-days, {} false pages ({:.3} per API-day).\n",
        injected_days,
        injected_false.len(),
        injected_false.len() as f64 / injected_days.max(1e-9)
    );
    println!(
        "Runtime: {:.1} s wall for {rows} checks ({:.0} checks/s) on {} threads; CPU {}; other processes kept the machine {} busy.",
        secs,
        rows as f64 / secs.max(1e-9),
        args.threads,
        cpu.map_or("?".into(), |c| format!("{c:.1} s")),
        others_busy.map_or("?".into(), |b| format!("{b:.0}%"))
    );
    // The incident rules alone, as the detector runs them on each check.
    if let Some(first) = injected.iter().find(|i| i.case == Case::Shift) {
        let mut rng = Rng::new(args.seed, first.stream);
        let pts = series(&first.profile, &mut rng, t0, first.data_end, &first.effects);
        let (per_check, state) = rules_cost(&pts, &policy.incidents);
        println!(
            "Incident rules alone, one thread, {} ({} checks, with a 24-h shift): {per_check:.0} ns a check; the state the detector saves per API is {state} bytes of JSON.",
            first.api,
            pts.len()
        );
    }
}

/// A generated check as the incident rules see it.
fn check_of(x: &Point) -> Check<'static> {
    Check {
        timestamp: x.timestamp,
        response_time_ms: x.value,
        success: x.success,
        severity: None,
        error: (!x.success).then_some("http: 503"),
        tls_expires_at: None,
    }
}

/// Nanoseconds per check of `Tracker::observe` over `points` (best of
/// three passes), and the size of the saved state at the end.
fn rules_cost(points: &[Point], p: &IncidentPolicy) -> (f64, usize) {
    let mut best = f64::INFINITY;
    let mut state = 0;
    for _ in 0..3 {
        let mut tr = Tracker::default();
        let started = Instant::now();
        for x in points {
            std::hint::black_box(tr.observe(p, &check_of(x)));
        }
        let ns = started.elapsed().as_nanos() as f64 / points.len().max(1) as f64;
        best = best.min(ns);
        state = serde_json::to_string(&tr).map_or(0, |j| j.len());
    }
    (best, state)
}
