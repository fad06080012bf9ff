//! What a check and an anomaly cost on disk. It prints figures; it is not a
//! timed test.
//!
//! 1. **Checks**: synthetic APIs at 15 s (log-normal response times around
//!    a per-API level with a daily cycle, rare spikes, 0.3% timeouts and
//!    0.1% HTTP 503), with the pinger's URLs and error texts.
//! 2. **Anomalies**: each API's detector (`ApiDetector`) is warmed on one
//!    day of history and given a model trained on it as the trainer does
//!    (default parameters, `CONTAMINATION=0.1`); the next checks are scored and every anomalous
//!    verdict becomes a row through `Verdict::anomaly`, as the service
//!    writes it.
//! 3. `--checks` rows go to `api_metrics` through `db::metrics::insert_batch`
//!    and `--anomalies` rows to `anomalies` through `db::anomalies::insert`,
//!    into a freshly migrated database on plain PostgreSQL.
//! 4. After `VACUUM (ANALYZE)` (autovacuum's steady state), the sizes:
//!    `pg_total_relation_size` (heap, TOAST, indexes, free-space and
//!    visibility maps) divided by the rows, with the heap, each index and
//!    the average size of each column; then what that makes a day at
//!    10,000 APIs every 15 s.
//!
//! ```text
//! cargo bench -p detector --bench storage -- [--checks N] [--anomalies N] [--apis N]
//! ```
//!
//! Defaults: 100,000 checks, 100,000 anomalies, 100 APIs. Set
//! `DATABASE_URL` to use an existing server (plain PostgreSQL); otherwise a
//! throwaway PostgreSQL cluster is started.

use std::sync::Arc;

use apimon_core::db::{self, anomalies::AnomalyRow, metrics::MetricRow};
use apimon_core::features::{compute_series, ValueDomain};
use apimon_core::model::{ignored_features, Model, ModelParams, Thresholds, TrainingSpec};
use apimon_core::DbConfig;
use chrono::{DateTime, Duration, SubsecRound, TimeZone, Timelike, Utc};
use detector::engine::{ActiveModel, ApiDetector};
use sqlx::PgPool;

const STEP_S: i64 = 15;
const DAY_CHECKS: i64 = 86_400 / STEP_S;
/// The projection: 10,000 APIs checked every 15 s.
const FLEET_APIS: f64 = 10_000.0;

#[derive(Debug, Clone)]
struct Args {
    checks: usize,
    anomalies: usize,
    apis: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        checks: 100_000,
        anomalies: 100_000,
        apis: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut count = || -> Result<usize, String> {
            let v = inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{key} needs a value"))?;
            match v.replace('_', "").parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{key}: `{v}` is not a positive whole number")),
            }
        };
        match key.as_str() {
            // `cargo bench` appends `--bench` to the arguments of every bench.
            "--bench" => {}
            "--help" | "-h" => {
                println!(
                    "usage: cargo bench -p detector --bench storage -- \
                     [--checks N] [--anomalies N] [--apis N]"
                );
                std::process::exit(0);
            }
            "--checks" => args.checks = count()?,
            "--anomalies" => args.anomalies = count()?,
            "--apis" => args.apis = count()?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

// ------------------------------------------------------------ the checks

/// xorshift64*, so that every run writes the same rows.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// One synthetic API: its name, URL and typical response time.
struct Api {
    name: String,
    url: String,
    level_ms: f64,
    size: i64,
}

fn apis(n: usize) -> Vec<Api> {
    (0..n)
        .map(|k| Api {
            name: format!("api-{k:05}"),
            url: format!("https://api-{k:05}.example.com/v1/health"),
            level_ms: 30.0 + (k * 37 % 400) as f64,
            size: 200 + (k * 113 % 4000) as i64,
        })
        .collect()
}

/// The check of `api` at `ts`, as the pinger writes it.
fn check(api: &Api, ts: DateTime<Utc>, rng: &mut Rng) -> MetricRow {
    let u = rng.unit();
    let mut row = MetricRow::empty(ts, &api.name, &api.url);
    if u < 0.003 {
        row.error_kind = Some("timeout".into());
        row.error_message = Some("operation timed out".into());
        return row;
    }
    let hour = f64::from(ts.hour()) + f64::from(ts.minute()) / 60.0;
    let daily = 1.0 + 0.3 * (2.0 * std::f64::consts::PI * hour / 24.0).sin();
    let spike = if rng.unit() < 0.002 { 5.0 } else { 1.0 };
    let rt = api.level_ms * daily * spike * (0.25 * rng.normal()).exp();
    row.response_time_ms = Some(rt);
    row.response_size_bytes = Some(api.size);
    if u < 0.004 {
        row.status_code = Some(503);
        row.error_kind = Some("http_status".into());
        row.error_message = Some("status 503, expected 2xx".into());
    } else {
        row.status_code = Some(200);
        row.success = true;
    }
    row
}

fn error_text(row: &MetricRow) -> Option<String> {
    match (&row.error_kind, &row.error_message) {
        (Some(k), Some(m)) => Some(format!("{k}: {m}")),
        (Some(k), None) => Some(k.clone()),
        (None, Some(m)) => Some(m.clone()),
        (None, None) => None,
    }
}

/// The checks to store and the anomalies the detector makes of the checks
/// that follow one day of history, with how many checks were scored.
fn generate(args: &Args) -> (Vec<MetricRow>, Vec<AnomalyRow>, usize) {
    let apis = apis(args.apis);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // Whole seconds, as Monday 00:00 UTC: the history's day starts there.
    let start = Utc
        .with_ymd_and_hms(2026, 11, 2, 0, 0, 0)
        .single()
        .expect("a valid date");
    let th = Thresholds::default();
    let mut detectors: Vec<ApiDetector> = Vec::with_capacity(apis.len());
    for api in &apis {
        let history: Vec<MetricRow> = (0..DAY_CHECKS)
            .map(|i| check(api, start + Duration::seconds(i * STEP_S), &mut rng))
            .collect();
        let rows: Vec<_> = compute_series(
            history
                .iter()
                .map(|r| (r.timestamp, r.response_time_ms, r.success)),
        )
        .iter()
        .filter_map(|o| o.features().map(|f| f.to_array()))
        .collect();
        // As the trainer does: one day of history leaves out hour and weekday.
        let spec = TrainingSpec {
            ignored: ignored_features(Duration::days(1)),
            domain: ValueDomain::ResponseTime,
            ..TrainingSpec::default()
        };
        let model =
            Model::train_for(&rows, &ModelParams::default(), &spec).expect("a model trains");
        let mut d = ApiDetector::default();
        for r in &history {
            d.warm(
                &Default::default(),
                r.timestamp,
                r.response_time_ms,
                r.success,
            );
        }
        d.model = Some(ActiveModel {
            model: Arc::new(model),
            version: 1,
            trained_at: start + Duration::days(1),
        });
        detectors.push(d);
    }
    let mut metrics = Vec::with_capacity(args.checks);
    let mut anomalies = Vec::with_capacity(args.anomalies);
    let mut scored = 0;
    let mut i = DAY_CHECKS;
    // Round after round of every API, until both tables have their rows.
    while metrics.len() < args.checks || anomalies.len() < args.anomalies {
        // Microseconds, as the pinger's wall clock.
        let ts = (start + Duration::seconds(i * STEP_S)).trunc_subsecs(6);
        for (k, (api, d)) in apis.iter().zip(detectors.iter_mut()).enumerate() {
            let ts = ts + Duration::microseconds(k as i64 * 997);
            let row = check(api, ts, &mut rng);
            if let Some(v) = d.observe(ts, row.response_time_ms, row.success, &th) {
                scored += 1;
                if anomalies.len() < args.anomalies {
                    if let Some(a) = v.anomaly(&api.name, error_text(&row).as_deref()) {
                        anomalies.push(a);
                    }
                }
            }
            if metrics.len() < args.checks {
                metrics.push(row);
            }
        }
        i += 1;
    }
    (metrics, anomalies, scored)
}

// ------------------------------------------------------------ the sizes

/// On-disk size of one table, after VACUUM.
struct TableSize {
    rows: i64,
    total: i64,
    heap: i64,
    toast: i64,
    /// (index, bytes)
    indexes: Vec<(String, i64)>,
    /// (column, average bytes as stored, share of rows where NULL)
    columns: Vec<(String, f64, f64)>,
}

async fn measure(pool: &PgPool, table: &str) -> Result<TableSize, sqlx::Error> {
    sqlx::query(&format!("VACUUM (ANALYZE) {table}"))
        .execute(pool)
        .await?;
    let (rows, total, heap, toast): (i64, i64, i64, i64) = sqlx::query_as(&format!(
        "SELECT (SELECT count(*) FROM {table}), pg_total_relation_size('{table}'),
                pg_relation_size('{table}'),
                coalesce((SELECT pg_total_relation_size(reltoastrelid) FROM pg_class
                          WHERE oid = '{table}'::regclass AND reltoastrelid <> 0), 0)"
    ))
    .fetch_one(pool)
    .await?;
    let indexes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid)
         FROM pg_index WHERE indrelid = $1::regclass ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT attname::text FROM pg_attribute
         WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    let mut columns = Vec::with_capacity(names.len());
    for c in names {
        let (avg, nulls): (f64, f64) = sqlx::query_as(&format!(
            "SELECT coalesce(avg(pg_column_size(\"{c}\")), 0)::float8,
                    coalesce(avg((\"{c}\" IS NULL)::int), 0)::float8 FROM {table}"
        ))
        .fetch_one(pool)
        .await?;
        columns.push((c, avg, nulls));
    }
    Ok(TableSize {
        rows,
        total,
        heap,
        toast,
        indexes,
        columns,
    })
}

fn per_row(bytes: i64, rows: i64) -> f64 {
    bytes as f64 / rows.max(1) as f64
}

fn print_table(name: &str, s: &TableSize) {
    println!(
        "\n-- {name}: {} rows, {:.1} MiB in all --",
        s.rows,
        s.total as f64 / (1024.0 * 1024.0)
    );
    println!("{:<44} {:>12}", "part", "bytes/row");
    println!(
        "{:<44} {:>12.1}",
        "total (pg_total_relation_size)",
        per_row(s.total, s.rows)
    );
    println!("{:<44} {:>12.1}", "  heap", per_row(s.heap, s.rows));
    println!("{:<44} {:>12.1}", "  TOAST", per_row(s.toast, s.rows));
    for (ix, b) in &s.indexes {
        println!(
            "{:<44} {:>12.1}",
            format!("  index {ix}"),
            per_row(*b, s.rows)
        );
    }
    let rest = s.total - s.heap - s.toast - s.indexes.iter().map(|(_, b)| b).sum::<i64>();
    println!(
        "{:<44} {:>12.1}",
        "  free-space and visibility maps",
        per_row(rest, s.rows)
    );
    println!(
        "{:<44} {:>12}",
        "column (average when not NULL; NULL share)", "bytes"
    );
    for (c, avg, nulls) in &s.columns {
        println!(
            "{:<44} {:>12.1}",
            format!("  {c} ({:.1}% NULL)", nulls * 100.0),
            avg
        );
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("storage bench: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    rt.block_on(run(&args));
}

async fn run(args: &Args) {
    eprintln!(
        "storage bench: {} checks and {} anomalies of {} APIs",
        args.checks, args.anomalies, args.apis
    );
    let (metrics, anomalies, scored) = generate(args);
    let t = apimon_testkit::fresh_database().await;
    let cfg = DbConfig::from_url(&t.url).expect("the test database's URL");
    let pool = db::connect(&cfg)
        .await
        .expect("connect to the test database");
    let backend = db::migrate(&pool).await.expect("migrate");
    if backend.is_timescale() {
        eprintln!(
            "storage bench: {backend}: this bench measures plain PostgreSQL tables \
             (a hypertable's size is in its chunks: use hypertable_detailed_size)"
        );
        std::process::exit(2);
    }
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&pool)
        .await
        .expect("server version");
    for batch in metrics.chunks(1000) {
        db::metrics::insert_batch(&pool, batch)
            .await
            .expect("insert checks");
    }
    for batch in anomalies.chunks(500) {
        let mut tx = pool.begin().await.expect("begin");
        db::anomalies::insert(&mut tx, batch)
            .await
            .expect("insert anomalies");
        tx.commit().await.expect("commit");
    }
    let m = measure(&pool, "api_metrics")
        .await
        .expect("measure api_metrics");
    let a = measure(&pool, "anomalies")
        .await
        .expect("measure anomalies");
    let severities: Vec<(String, i64)> =
        sqlx::query_as("SELECT severity, count(*) FROM anomalies GROUP BY 1 ORDER BY 2 DESC")
            .fetch_all(&pool)
            .await
            .expect("severities");

    println!("== storage per check and per anomaly ==");
    println!("server         {version}");
    println!(
        "data           {} APIs at {STEP_S} s; anomalies from {scored} scored checks ({:.2}%): {}",
        args.apis,
        100.0 * a.rows as f64 / scored.max(1) as f64,
        severities
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    print_table("api_metrics", &m);
    print_table("anomalies", &a);

    let checks_day = FLEET_APIS * 86_400.0 / STEP_S as f64;
    let b_check = per_row(m.total, m.rows);
    let b_anomaly = per_row(a.total, a.rows);
    let measured_rate = a.rows as f64 / scored.max(1) as f64;
    let gib = |b: f64| b / (1024.0 * 1024.0 * 1024.0);
    println!(
        "\n-- a day at {FLEET_APIS} APIs every {STEP_S} s ({:.1} million checks) --",
        checks_day / 1e6
    );
    for (label, rate) in [("measured", measured_rate), ("10% (CONTAMINATION)", 0.1)] {
        let per_check = b_check + rate * b_anomaly;
        println!(
            "anomaly rate {label:<20} {:>6.2}%: {:>6.1} bytes a check \
             ({b_check:.1} + {:.1} of anomalies); api_metrics {:.2} GiB, anomalies {:.2} GiB, \
             together {:.2} GiB a day",
            rate * 100.0,
            per_check,
            rate * b_anomaly,
            gib(checks_day * b_check),
            gib(checks_day * rate * b_anomaly),
            gib(checks_day * per_check),
        );
    }
    println!(
        "RESULT bytes_per_check={b_check:.1} bytes_per_anomaly={b_anomaly:.1} \
         anomaly_rate={measured_rate:.4}"
    );
}
