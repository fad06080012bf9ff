//! Scale benchmark of issue 6: the `pinger`, `detector` and `alerter`
//! binaries (release builds, as separate processes) against N local
//! endpoints at one interval, on one PostgreSQL.
//!
//! 1. **Seed.** Every API gets `--history` of successful checks (2 h at
//!    15 s: 480 rows) in `api_metrics`, with the response-time distribution
//!    the endpoint server answers with, and a detector watermark at its last
//!    row (as if a detector had scored them).
//! 2. **Training.** The pinger starts and registers the endpoints, then the
//!    detector (no stored model) and the alerter. The bench times how long
//!    the detector takes until every API has a model in `models`, and what
//!    that costs (CPU, memory, table size).
//! 3. **Window.** After one interval of warm-up, `--duration` is measured:
//!    checks per second, CPU of each service and of PostgreSQL, late check
//!    starts, metric-to-anomaly latency, database size per million checks.
//!    A quarter into the window, one endpoint in `--slow-every` (1%) starts
//!    answering ten times slower, so that critical anomalies and alerts
//!    happen in the window.
//!
//! ```text
//! cargo bench -p apimon-testkit --bench scale                 # 10,000 endpoints, 15 s, 5 min
//! cargo bench -p apimon-testkit --bench scale -- --quick      # 1,000 endpoints, 60 s
//! ```
//!
//! Options: `--endpoints N` (10000), `--interval D` (15s), `--duration D`
//! (300s), `--history D` (2h), `--delay-ms N` (20: each answer takes N ms
//! plus up to `--jitter-ms` 10 more), `--slow-every K` (100), `--train-timeout
//! D` (30m), `--quick`. Set `DATABASE_URL` to use an existing server;
//! otherwise a throwaway PostgreSQL cluster is started. It prints figures and
//! asserts nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apimon_core::db;
use apimon_core::shard::stable_hash;
use apimon_core::DbConfig;
use apimon_testkit::procfs::{self, clock_ticks, cpu_model, parse_duration, stat_fields};
use apimon_testkit::procs::{tail, Service};
use apimon_testkit::smtp::SmtpServer;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------- arguments

#[derive(Debug, Clone)]
struct Args {
    endpoints: usize,
    interval: Duration,
    duration: Duration,
    history: Duration,
    delay_ms: u64,
    jitter_ms: u64,
    slow_every: usize,
    train_timeout: Duration,
    quick: bool,
}

/// utime + stime of `pid`, in clock ticks (0 when gone).
fn cpu_ticks(pid: u32) -> u64 {
    procfs::cpu_ticks(pid).unwrap_or(0)
}

/// CPU of a PostgreSQL server and its backends, in clock ticks.
fn tree_ticks(postmaster: u32) -> u64 {
    procfs::tree_ticks(postmaster).unwrap_or(0)
}

/// (busy, total) jiffies of the whole machine.
fn machine_ticks() -> (u64, u64) {
    procfs::machine_ticks().unwrap_or((0, 0))
}

/// A `kB` field of `/proc/<pid>/status` in MiB (`VmRSS`, `VmHWM`).
fn status_mib(pid: u32, key: &str) -> f64 {
    procfs::status_kib(pid, key).map_or(f64::NAN, |kib| kib as f64 / 1024.0)
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        endpoints: 10_000,
        interval: Duration::from_secs(15),
        duration: Duration::from_secs(300),
        history: Duration::from_secs(2 * 3600),
        delay_ms: 20,
        jitter_ms: 10,
        slow_every: 100,
        train_timeout: Duration::from_secs(30 * 60),
        quick: false,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.iter().any(|a| a == "--quick") {
        args.endpoints = 1_000;
        args.duration = Duration::from_secs(60);
        args.quick = true;
    }
    let mut it = raw.into_iter();
    while let Some(arg) = it.next() {
        // `cargo bench` appends `--bench` to the arguments of every bench.
        if arg == "--bench" || arg == "--quick" {
            continue;
        }
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        if key == "--help" || key == "-h" {
            println!(
                "usage: cargo bench -p apimon-testkit --bench scale -- [--quick] [--endpoints N] \
                 [--interval D] [--duration D] [--history D] [--delay-ms N] [--jitter-ms N] \
                 [--slow-every K] [--train-timeout D]"
            );
            std::process::exit(0);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{key} needs a value"))
        };
        let number = |v: String, what: &str| -> Result<u64, String> {
            v.parse().map_err(|e| format!("{what}: {e}"))
        };
        match key.as_str() {
            "--endpoints" => args.endpoints = number(value()?, "--endpoints")? as usize,
            "--interval" => args.interval = parse_duration(&value()?)?,
            "--duration" => args.duration = parse_duration(&value()?)?,
            "--history" => args.history = parse_duration(&value()?)?,
            "--delay-ms" => args.delay_ms = number(value()?, "--delay-ms")?,
            "--jitter-ms" => args.jitter_ms = number(value()?, "--jitter-ms")?,
            "--slow-every" => args.slow_every = number(value()?, "--slow-every")? as usize,
            "--train-timeout" => args.train_timeout = parse_duration(&value()?)?,
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if args.endpoints == 0 || args.slow_every == 0 {
        return Err("--endpoints and --slow-every must be above zero".into());
    }
    Ok(args)
}

// --------------------------------------------------------------- the server

/// The endpoints: `/e/{i}` answers 200 after `delay + U(0, jitter)`, ten
/// times that for every `slow_every`-th endpoint once `slow` is set.
struct Endpoints {
    delay_us: u64,
    jitter_us: u64,
    slow_every: usize,
    slow: AtomicBool,
    requests: AtomicU64,
}

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
content-length: 11\r\n\r\n{\"ok\":true}";

async fn serve(listener: TcpListener, ep: Arc<Endpoints>) {
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                let _ = sock.set_nodelay(true);
                tokio::spawn(connection(sock, ep.clone()));
            }
            Err(e) => {
                eprintln!("scale bench server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn connection(mut sock: TcpStream, ep: Arc<Endpoints>) {
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    // xorshift64 for the jitter, seeded per connection.
    static CONNECTIONS: AtomicU64 = AtomicU64::new(1);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    loop {
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let arrived = Instant::now();
        // GET requests only: no body to skip.
        let index = endpoint_index(&buf[..head_end]);
        buf.drain(..head_end);
        ep.requests.fetch_add(1, Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut us = ep.delay_us + x % (ep.jitter_us + 1);
        if ep.slow.load(Ordering::Relaxed) && index.is_some_and(|i| i % ep.slow_every == 0) {
            us *= 10;
        }
        tokio::time::sleep_until((arrived + Duration::from_micros(us)).into()).await;
        if sock.write_all(RESPONSE).await.is_err() {
            return;
        }
    }
}

/// `i` of a request line `GET /e/{i} HTTP/1.1`.
fn endpoint_index(head: &[u8]) -> Option<usize> {
    let line = head.split(|b| *b == b'\r').next()?;
    let path = line.split(|b| *b == b' ').nth(1)?;
    std::str::from_utf8(path.strip_prefix(b"/e/")?)
        .ok()?
        .parse()
        .ok()
}

// ------------------------------------------------------------------- /proc

// ----------------------------------------------------------------- sampling

/// CPU ticks of everything the bench watches, at one instant.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    wall: DateTime<Utc>,
    pinger: u64,
    detector: u64,
    alerter: u64,
    postgres: u64,
    bench: u64,
    machine: (u64, u64),
    requests: u64,
}

struct Probe {
    pids: [u32; 3],
    postmaster: u32,
    endpoints: Arc<Endpoints>,
}

impl Probe {
    fn sample(&self) -> Sample {
        Sample {
            at: Instant::now(),
            wall: Utc::now(),
            pinger: cpu_ticks(self.pids[0]),
            detector: cpu_ticks(self.pids[1]),
            alerter: cpu_ticks(self.pids[2]),
            postgres: tree_ticks(self.postmaster),
            bench: cpu_ticks(std::process::id()),
            machine: machine_ticks(),
            requests: self.endpoints.requests.load(Ordering::Relaxed),
        }
    }
}

/// CPU-seconds per second (cores) of each part between two samples.
struct Cores {
    pinger: f64,
    detector: f64,
    alerter: f64,
    postgres: f64,
    bench: f64,
    /// Everything else on the machine.
    others: f64,
    machine_pct: f64,
}

fn cores(a: &Sample, b: &Sample, tck: f64) -> Cores {
    let dt = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let c = |x: u64, y: u64| y.saturating_sub(x) as f64 / tck / dt;
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy = b.machine.0.saturating_sub(a.machine.0) as f64;
    let total = b.machine.1.saturating_sub(a.machine.1).max(1) as f64;
    let machine_cores = busy / total * ncpu;
    let pinger = c(a.pinger, b.pinger);
    let detector = c(a.detector, b.detector);
    let alerter = c(a.alerter, b.alerter);
    let postgres = c(a.postgres, b.postgres);
    let bench = c(a.bench, b.bench);
    Cores {
        pinger,
        detector,
        alerter,
        postgres,
        bench,
        others: (machine_cores - pinger - detector - alerter - postgres - bench).max(0.0),
        machine_pct: busy / total * 100.0,
    }
}

/// Nearest-rank quantile of `v` (sorted in place); NaN when empty.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn mib(bytes: i64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

// --------------------------------------------------------------------- main

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("scale bench: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    rt.block_on(bench(args));
}

async fn bench(args: Args) {
    let tck = clock_ticks();
    let n = args.endpoints;
    let iv = args.interval;
    let iv_ms = iv.as_millis() as u64;
    let expected_rate = n as f64 / iv.as_secs_f64();
    let history_rows = (args.history.as_secs_f64() / iv.as_secs_f64()).floor() as i64;
    eprintln!(
        "scale bench: {n} endpoints every {:?}, {history_rows} rows of history each, window {:?}",
        iv, args.duration
    );
    eprintln!(
        "building the service binaries (cargo build --release -p pinger -p detector -p alerter)..."
    );
    let built = Instant::now();
    let _ = apimon_testkit::procs::bin_dir();
    eprintln!("  built in {:.0} s", built.elapsed().as_secs_f64());

    // Database.
    let test_db = apimon_testkit::fresh_database().await;
    let pool = db::connect(&DbConfig::from_url(&test_db.url).expect("valid database URL"))
        .await
        .expect("connect to the database");
    db::migrate(&pool).await.expect("migrate the database");
    let backend_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .expect("backend pid");
    let postmaster = u32::try_from(backend_pid)
        .ok()
        .and_then(stat_fields)
        .and_then(|f| f.get(1).copied())
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(0);
    let pg_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&pool)
        .await
        .expect("server version");

    // Endpoint server.
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let endpoints = Arc::new(Endpoints {
        delay_us: args.delay_ms * 1000,
        jitter_us: args.jitter_ms * 1000,
        slow_every: args.slow_every,
        slow: AtomicBool::new(false),
        requests: AtomicU64::new(0),
    });
    let server_task = tokio::spawn(serve(listener, endpoints.clone()));
    let smtp = SmtpServer::start().await;

    // Endpoints file.
    let dir = tempfile::Builder::new()
        .prefix("apimon-scale-")
        .tempdir()
        .expect("temporary directory");
    let apis = dir.path().join("apis.toml");
    let mut toml = format!("[defaults]\ninterval = \"{iv_ms}ms\"\ntimeout = \"5s\"\n\n");
    for i in 0..n {
        toml.push_str(&format!(
            "[[api]]\nname = \"e{i}\"\nurl = \"http://{addr}/e/{i}\"\n\n"
        ));
    }
    std::fs::write(&apis, toml).expect("write apis.toml");

    // History: successful checks every interval, on each API's own phase,
    // with the server's distribution plus 1 ms of client overhead.
    let seeded = Instant::now();
    let seed_end = Utc::now();
    let chunk = 500usize;
    let mut from = 0usize;
    while from < n {
        let to = (from + chunk).min(n);
        sqlx::query(
            r#"INSERT INTO api_metrics ("timestamp", api_name, url, response_time_ms, status_code,
                                       success, response_size_bytes, ingested_at)
               SELECT $1::timestamptz - make_interval(secs => (k * $5 + (i * 7919) % $5)::float8 / 1000.0),
                      'e' || i, $4 || '/e/' || i,
                      $6::float8 + 1.0 + random() * $7::float8, 200, true, 11,
                      $1::timestamptz - make_interval(secs => (k * $5 + (i * 7919) % $5)::float8 / 1000.0)
               FROM generate_series($2::int, $3::int - 1) AS i, generate_series(1, $8::int) AS k"#,
        )
        .bind(seed_end)
        .bind(from as i32)
        .bind(to as i32)
        .bind(format!("http://{addr}"))
        .bind(iv_ms as i64)
        .bind(args.delay_ms as f64)
        .bind(args.jitter_ms as f64)
        .bind(history_rows as i32)
        .execute(&pool)
        .await
        .expect("seed api_metrics");
        from = to;
        if from % 2000 == 0 || from == n {
            eprintln!(
                "  seeded {from}/{n} APIs ({:.0} s)",
                seeded.elapsed().as_secs_f64()
            );
        }
    }
    sqlx::query(
        r#"INSERT INTO detector_watermarks (api_name, last_timestamp)
           SELECT api_name, max("timestamp") FROM api_metrics GROUP BY api_name"#,
    )
    .execute(&pool)
    .await
    .expect("seed the watermarks");
    sqlx::query("ANALYZE")
        .execute(&pool)
        .await
        .expect("analyze");
    let seed_secs = seeded.elapsed().as_secs_f64();
    let seeded_rows = scalar(&pool, "SELECT count(*) FROM api_metrics").await;
    eprintln!("  {seeded_rows} rows seeded in {seed_secs:.0} s");

    // The services.
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", test_db.url.clone()),
        ("APIS_FILE", apis.display().to_string()),
        ("RUST_LOG", "info,sqlx=warn".into()),
        ("NO_COLOR", "1".into()),
        ("ALERT_EMAIL_FROM", "apimon@example.test".into()),
        ("ALERT_EMAIL_TO", "ops@example.test".into()),
        ("SMTP_HOST", "127.0.0.1".into()),
        ("SMTP_PORT", smtp.port().to_string()),
        ("SMTP_TLS", "none".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let pinger_started = Utc::now();
    let pinger = Service::start("pinger", "pinger", &env, dir.path());
    let registered = Instant::now();
    loop {
        if scalar(&pool, "SELECT count(*) FROM api_endpoints").await == n as i64 {
            break;
        }
        assert!(
            registered.elapsed() < Duration::from_secs(120),
            "the pinger did not register the endpoints; log:\n{}",
            tail(&pinger.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let detector_spawned = Instant::now();
    let detector = Service::start("detector", "detector", &env, dir.path());
    let alerter = Service::start("alerter", "alerter", &env, dir.path());
    let services = [&pinger, &detector, &alerter];
    let pid = |s: &Service| s.pid().expect("service running");
    let probe = Probe {
        pids: [pid(&pinger), pid(&detector), pid(&alerter)],
        postmaster,
        endpoints: endpoints.clone(),
    };

    // Training: until every API has a model.
    eprintln!("training: waiting for {n} models");
    let train_start = probe.sample();
    let mut prev = train_start.clone();
    let mut models = 0i64;
    let mut last_print = Instant::now();
    while models < n as i64 && detector_spawned.elapsed() < args.train_timeout {
        tokio::time::sleep(Duration::from_secs(1)).await;
        models = scalar(&pool, "SELECT count(*) FROM models").await;
        if last_print.elapsed() >= Duration::from_secs(15) || models >= n as i64 {
            let s = probe.sample();
            let c = cores(&prev, &s, tck);
            eprintln!(
                "  t={:>5.0}s  models {models:>6}  detector {:>4.0}% CPU, RSS {:>6.0} MiB  pinger {:>3.0}%  postgres {:>3.0}%  machine {:>3.0}% busy (others {:.2} cores)",
                detector_spawned.elapsed().as_secs_f64(),
                c.detector * 100.0,
                status_mib(probe.pids[1], "VmRSS"),
                c.pinger * 100.0,
                c.postgres * 100.0,
                c.machine_pct,
                c.others,
            );
            prev = s;
            last_print = Instant::now();
        }
    }
    let train_end = probe.sample();
    let train_secs = detector_spawned.elapsed().as_secs_f64();
    let trained_all = models >= n as i64;
    let train_cores = cores(&train_start, &train_end, tck);
    let train_wall = train_end.at.duration_since(train_start.at).as_secs_f64();
    let detector_train_cpu = train_cores.detector * train_wall;
    let postgres_train_cpu = train_cores.postgres * train_wall;
    let detector_rss_trained = status_mib(probe.pids[1], "VmRSS");
    let training_sum = detector.metric("apimon_training_seconds_sum").await;
    let training_count = detector.metric("apimon_training_seconds_count").await;
    let models_bytes = scalar(&pool, "SELECT pg_total_relation_size('models')").await;
    let forest_bytes = scalar(
        &pool,
        "SELECT coalesce(sum(octet_length(forest)), 0)::bigint FROM models",
    )
    .await;
    let forest_stored = scalar(
        &pool,
        "SELECT coalesce(sum(pg_column_size(forest)), 0)::bigint FROM models",
    )
    .await;

    // Warm-up, then the window.
    eprintln!("warm-up: {:?}", iv);
    tokio::time::sleep(iv).await;
    for s in services {
        if let Some((code, body)) = s.health().await {
            if code != 200 {
                eprintln!("  {}: /healthz {code} {}", s.label(), body.trim());
            }
        }
    }
    let start = probe.sample();
    let slow_at = start.at + args.duration / 4;
    let end_at = start.at + args.duration;
    let mut slow_wall = None;
    let mut prev = start.clone();
    eprintln!(
        "window: {:?}; every {}th endpoint 10x slower from t={:.0}s",
        args.duration,
        args.slow_every,
        (args.duration / 4).as_secs_f64()
    );
    while Instant::now() < end_at {
        let step = Duration::from_secs(10);
        let next = (Instant::now() + step).min(end_at);
        if slow_wall.is_none() && next >= slow_at {
            tokio::time::sleep_until(slow_at.into()).await;
            endpoints.slow.store(true, Ordering::Relaxed);
            slow_wall = Some(Utc::now());
        }
        tokio::time::sleep_until(next.into()).await;
        let s = probe.sample();
        let c = cores(&prev, &s, tck);
        let dt = s.at.duration_since(prev.at).as_secs_f64();
        eprintln!(
            "  t={:>5.0}s  requests/s {:>6.1}  CPU: pinger {:>3.0}%  detector {:>3.0}%  alerter {:>3.0}%  postgres {:>3.0}%  bench {:>3.0}%  others {:>3.0}%",
            s.at.duration_since(start.at).as_secs_f64(),
            (s.requests - prev.requests) as f64 / dt,
            c.pinger * 100.0,
            c.detector * 100.0,
            c.alerter * 100.0,
            c.postgres * 100.0,
            c.bench * 100.0,
            c.others * 100.0,
        );
        prev = s;
    }
    let end = prev;
    let window = end.at.duration_since(start.at).as_secs_f64();
    let wc = cores(&start, &end, tck);
    let rss: Vec<(f64, f64)> = probe
        .pids
        .iter()
        .map(|p| (status_mib(*p, "VmRSS"), status_mib(*p, "VmHWM")))
        .collect();
    let detector_summaries: Vec<String> = detector
        .log()
        .lines()
        .filter(|l| l.contains("detector summary"))
        .map(str::to_string)
        .collect();
    let pinger_rounds: Vec<String> = pinger
        .log()
        .lines()
        .filter(|l| l.contains(" round"))
        .map(str::to_string)
        .collect();

    // Let the last rows be scored, then stop everything.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut stopped = Vec::new();
    for mut s in [pinger, detector, alerter] {
        let st = s.terminate(Duration::from_secs(30));
        stopped.push((s.label().to_string(), st, s.log()));
    }
    server_task.abort();

    // ------------------------------------------------------------ figures
    let checks: Vec<(String, DateTime<Utc>, bool)> = sqlx::query_as(
        r#"SELECT api_name, "timestamp", success FROM api_metrics
           WHERE "timestamp" >= $1 AND "timestamp" < $2"#,
    )
    .bind(start.wall)
    .bind(end.wall)
    .fetch_all(&pool)
    .await
    .expect("read the window's checks");
    let in_window = checks.len();
    let failed = checks.iter().filter(|c| !c.2).count();
    // Late starts: the phase of each check against its schedule
    // (`pinger::first_check_offset`: FNV-1a of the name modulo the
    // interval, from the pinger's start); the least-late check of the whole
    // run stands for the pinger's start (unknown to the bench) and counts
    // as on time.
    let anchor_us = pinger_started.timestamp_micros();
    let iv_us = iv.as_micros() as i64;
    let phase = |name: &str, ts: &DateTime<Utc>| -> i64 {
        let off = (stable_hash(name) % iv_ms.max(1)) as i64 * 1000;
        (ts.timestamp_micros() - anchor_us - off).rem_euclid(iv_us)
    };
    let all_live: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as(r#"SELECT api_name, "timestamp" FROM api_metrics WHERE "timestamp" > $1"#)
            .bind(seed_end)
            .fetch_all(&pool)
            .await
            .expect("read the live checks");
    let base = all_live.iter().map(|(a, t)| phase(a, t)).min().unwrap_or(0);
    let mut late_ms: Vec<f64> = checks
        .iter()
        .map(|(a, t, _)| (phase(a, t) - base) as f64 / 1000.0)
        .collect();
    let late_over_100 = late_ms.iter().filter(|l| **l > 100.0).count();
    // The same while the detector trained every model (machine busiest).
    let mut late_training: Vec<f64> = all_live
        .iter()
        .filter(|(_, t)| *t >= train_start.wall && *t < train_end.wall)
        .map(|(a, t)| (phase(a, t) - base) as f64 / 1000.0)
        .collect();
    let lt_n = late_training.len();
    let lt99 = quantile(&mut late_training, 0.99);
    let ltmax = quantile(&mut late_training, 1.0);
    let l50 = quantile(&mut late_ms, 0.5);
    let l99 = quantile(&mut late_ms, 0.99);
    let l999 = quantile(&mut late_ms, 0.999);
    let lmax = quantile(&mut late_ms, 1.0);
    let mut round_p99: Vec<f64> = pinger_rounds
        .iter()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("late_p99_ms="))
                .and_then(|v| v.parse().ok())
        })
        .collect();
    let rounds_n = round_p99.len();
    let round_p99_med = quantile(&mut round_p99, 0.5);
    let round_p99_max = quantile(&mut round_p99, 1.0);

    // Metric-to-anomaly latency: from the check's row being written
    // (ingested_at) to its anomaly's row (detected_at).
    let lat: Vec<(String, f64, bool)> = sqlx::query_as(
        r#"SELECT a.severity,
                  extract(epoch FROM a.detected_at - m.ingested_at)::float8 * 1000.0,
                  (substring(a.api_name from 2)::int % $3 = 0)
           FROM anomalies a JOIN api_metrics m USING (api_name, "timestamp")
           WHERE a."timestamp" >= $1 AND a."timestamp" < $2"#,
    )
    .bind(start.wall)
    .bind(end.wall)
    .bind(args.slow_every as i32)
    .fetch_all(&pool)
    .await
    .expect("read the anomalies' latency");
    let mut lat_all: Vec<f64> = lat.iter().map(|l| l.1).collect();
    let mut lat_crit_slow: Vec<f64> = lat
        .iter()
        .filter(|l| l.0 == "critical" && l.2)
        .map(|l| l.1)
        .collect();
    let by_sev = |s: &str| lat.iter().filter(|l| l.0 == s).count();
    let slow_apis = n.div_ceil(args.slow_every);
    let slow_apis_critical: i64 = sqlx::query_scalar(
        r#"SELECT count(DISTINCT api_name) FROM anomalies
           WHERE severity = 'critical' AND "timestamp" >= $1
             AND substring(api_name from 2)::int % $2 = 0"#,
    )
    .bind(slow_wall.unwrap_or(end.wall))
    .bind(args.slow_every as i32)
    .fetch_one(&pool)
    .await
    .expect("count the slow APIs found");
    let notifications: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT kind, state, count(*) FROM notifications GROUP BY kind, state ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap_or_default();
    let mails = smtp.mails().len();

    // Database size.
    let total_rows = scalar(&pool, "SELECT count(*) FROM api_metrics").await;
    let metrics_bytes = scalar(&pool, "SELECT pg_total_relation_size('api_metrics')").await;
    let metrics_heap = scalar(&pool, "SELECT pg_relation_size('api_metrics')").await;
    let anomalies_rows = scalar(&pool, "SELECT count(*) FROM anomalies").await;
    let anomalies_bytes = scalar(&pool, "SELECT pg_total_relation_size('anomalies')").await;
    let db_bytes = scalar(&pool, "SELECT pg_database_size(current_database())").await;
    let per_million = |bytes: i64, rows: i64| {
        if rows > 0 {
            mib(bytes) / rows as f64 * 1e6
        } else {
            f64::NAN
        }
    };

    // ------------------------------------------------------------ print
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let ok = |b: bool| if b { "MET" } else { "MISSED" };
    let services_cores = wc.pinger + wc.detector + wc.alerter;
    println!();
    println!("== scale benchmark: pinger + detector + alerter ==");
    println!(
        "machine        {nproc} CPUs, {}; CLK_TCK {tck}; PostgreSQL {pg_version}",
        cpu_model()
    );
    println!(
        "setup          {n} endpoints every {:?} (expected {expected_rate:.1} checks/s), answers in {}-{} ms,",
        iv,
        args.delay_ms,
        args.delay_ms + args.jitter_ms
    );
    println!(
        "               {history_rows} rows of history each ({seeded_rows} rows seeded in {seed_secs:.0} s); \
         1 in {} endpoints 10x slower from t={:.0}s",
        args.slow_every,
        (args.duration / 4).as_secs_f64()
    );
    println!();
    println!("-- training (detector started with no stored model, pinger running) --");
    println!(
        "models trained     {models}/{n} in {train_secs:.1} s{}",
        if trained_all { "" } else { " (timed out)" }
    );
    if let (Some(sum), Some(count)) = (training_sum, training_count) {
        println!(
            "per model          {:.2} ms training ({count} trainings, apimon_training_seconds), {:.2} ms wall each overall",
            sum / count.max(1.0) * 1000.0,
            train_secs / (models.max(1) as f64) * 1000.0
        );
    }
    println!(
        "CPU while training detector {detector_train_cpu:.1} CPU-s ({:.2} cores), postgres {postgres_train_cpu:.1} CPU-s ({:.2} cores), pinger {:.2} cores, others {:.2} cores",
        train_cores.detector, train_cores.postgres, train_cores.pinger, train_cores.others
    );
    println!(
        "detector RSS       {detector_rss_trained:.0} MiB with {models} models ({:.1} KiB a model)",
        detector_rss_trained * 1024.0 / models.max(1) as f64
    );
    println!(
        "models table       {:.1} MiB ({:.1} KiB a model; forests {:.1} MiB raw, {:.1} MiB stored)",
        mib(models_bytes),
        models_bytes as f64 / 1024.0 / models.max(1) as f64,
        mib(forest_bytes),
        mib(forest_stored)
    );
    println!(
        "late starts        p99 {lt99:.1} ms, max {ltmax:.0} ms over the {lt_n} checks made while training"
    );
    println!(
        "hourly retraining  {:.3} cores on average (detector + PostgreSQL CPU of one full training, per hour)",
        (detector_train_cpu + postgres_train_cpu) / 3600.0
    );
    println!();
    println!(
        "-- measured window: {window:.1} s (machine {:.0}% busy, others {:.2} cores) --",
        wc.machine_pct, wc.others
    );
    println!("{:<46} {:>22}  target", "figure", "value");
    println!("{}", "-".repeat(100));
    let row = |name: &str, value: String, target: String| {
        println!("{name:<46} {value:>22}  {target}");
    };
    let checks_per_s = in_window as f64 / window;
    row(
        "checks/s sustained (rows timestamped in window)",
        format!("{checks_per_s:.1}"),
        format!(
            ">= {:.1}: {}",
            expected_rate * 0.99,
            ok(checks_per_s >= expected_rate * 0.99)
        ),
    );
    row(
        "requests/s at the endpoints",
        format!("{:.1}", (end.requests - start.requests) as f64 / window),
        String::new(),
    );
    row(
        "failed checks",
        format!("{failed}"),
        format!("of {in_window}"),
    );
    row(
        "late start p50 / p99, ms",
        format!("{l50:.1} / {l99:.1}"),
        format!("p99 < 100: {}", ok(l99 < 100.0)),
    );
    row(
        "late start p99.9 / max, ms; checks > 100 ms",
        format!("{l999:.1} / {lmax:.0}; {late_over_100}"),
        String::new(),
    );
    row(
        "pinger's own late p99 per round, median / max",
        format!("{round_p99_med:.1} / {round_p99_max:.1}"),
        format!("({rounds_n} round lines)"),
    );
    row(
        "CPU pinger, cores",
        format!("{:.3}", wc.pinger),
        String::new(),
    );
    row(
        "CPU detector, cores",
        format!("{:.3}", wc.detector),
        String::new(),
    );
    row(
        "CPU alerter, cores",
        format!("{:.3}", wc.alerter),
        String::new(),
    );
    row(
        "CPU pinger + detector + alerter, cores",
        format!("{services_cores:.3}"),
        format!("< 1: {}", ok(services_cores < 1.0)),
    );
    row(
        "CPU PostgreSQL (all backends), cores",
        format!("{:.3}", wc.postgres),
        String::new(),
    );
    row(
        "CPU bench (endpoint + SMTP servers), cores",
        format!("{:.3}", wc.bench),
        String::new(),
    );
    row(
        "anomalies in window: critical/high/medium",
        format!(
            "{}/{}/{}",
            by_sev("critical"),
            by_sev("high"),
            by_sev("medium")
        ),
        format!("slow APIs with a critical: {slow_apis_critical}/{slow_apis}"),
    );
    let l_a50 = quantile(&mut lat_all, 0.5);
    let l_a99 = quantile(&mut lat_all, 0.99);
    let l_amax = quantile(&mut lat_all, 1.0);
    row(
        "metric-to-anomaly p50 / p99 / max, ms",
        format!("{l_a50:.0} / {l_a99:.0} / {l_amax:.0}"),
        format!("p99 < 1000: {}", ok(l_a99 < 1000.0)),
    );
    row(
        "  critical on the slowed APIs, p50 / p99 / max",
        format!(
            "{:.0} / {:.0} / {:.0}",
            quantile(&mut lat_crit_slow, 0.5),
            quantile(&mut lat_crit_slow, 0.99),
            quantile(&mut lat_crit_slow, 1.0)
        ),
        format!("({} anomalies)", lat_crit_slow.len()),
    );
    row(
        "RSS pinger / detector / alerter, MiB",
        format!("{:.0} / {:.0} / {:.0}", rss[0].0, rss[1].0, rss[2].0),
        format!("peak {:.0} / {:.0} / {:.0}", rss[0].1, rss[1].1, rss[2].1),
    );
    row(
        "api_metrics MiB per million checks",
        format!("{:.1}", per_million(metrics_bytes, total_rows)),
        format!(
            "({total_rows} rows, {:.0} MiB, heap {:.0} MiB)",
            mib(metrics_bytes),
            mib(metrics_heap)
        ),
    );
    row(
        "anomalies MiB per million anomalies",
        format!("{:.1}", per_million(anomalies_bytes, anomalies_rows)),
        format!("({anomalies_rows} rows, {:.1} MiB)", mib(anomalies_bytes)),
    );
    row(
        "database MiB per million checks (all tables)",
        format!("{:.1}", per_million(db_bytes, total_rows)),
        format!("({:.0} MiB, models included)", mib(db_bytes)),
    );
    println!(
        "notifications  {}; {mails} mails received",
        notifications
            .iter()
            .map(|(k, s, c)| format!("{k}/{s} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("detector summary lines (lag over every row scored):");
    for l in detector_summaries.iter().rev().take(6).rev() {
        println!("  {}", l.trim());
    }
    for (label, status, log) in &stopped {
        let warns = log.lines().filter(|l| l.contains(" WARN ")).count();
        let errors = log.lines().filter(|l| l.contains(" ERROR ")).count();
        println!(
            "{label:<9} exit {}; log {} lines, {warns} WARN, {errors} ERROR",
            status.map_or("killed after 30 s".to_string(), |s| s.to_string()),
            log.lines().count()
        );
        for l in log
            .lines()
            .filter(|l| {
                l.contains(" ERROR ") || (l.contains(" WARN ") && !l.contains("critical anomaly"))
            })
            .take(3)
        {
            println!("    {}", l.chars().take(300).collect::<String>());
        }
    }
    println!("logs in {} (kept)", dir.path().display());
    let _ = dir.keep();
}
