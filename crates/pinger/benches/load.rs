//! Load benchmark of the `pinger` binary: K endpoints on a local HTTP server
//! that answers every path with 200 after a fixed delay (50 ms), a fresh
//! PostgreSQL database, and the real binary run as a child process.
//!
//! It prints what the pinger sustains (checks/s, rows written/s), what it
//! costs (CPU seconds per 1,000 checks, from `/proc/<pid>/stat`), and how
//! accurate its timings are (response_time_ms minus the injected delay, and
//! how late checks start against their schedule), measured after a warm-up
//! of one full interval.
//!
//! ```text
//! cargo bench -p pinger --bench load -- --endpoints 10000 --interval 15s --duration 120s
//! ```
//!
//! Options: `--endpoints N` (10000), `--interval D` (15s), `--duration D`
//! (120s, the measured window, after the warm-up), `--warmup D` (one
//! interval), `--delay-ms N` (50), `--body-bytes N` (the JSON body's size,
//! 11 by default: `{"ok":true}`), `--json-assertions` (every endpoint
//! asserts two JSONPath values, one through a filter, and a header),
//! `--rust-log FILTER` (`warn`; the pinger's last log lines are printed at
//! the end). Set `DATABASE_URL` to use an existing
//! server; otherwise a throwaway PostgreSQL cluster is started.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apimon_core::db;
use apimon_core::DbConfig;
use apimon_testkit::procfs::{
    clock_ticks, cpu_model, cpu_ticks, machine_ticks, parse_duration, stat_fields, status_field,
    tree_ticks,
};
use chrono::{DateTime, Utc};
use pinger::first_check_offset;
use pinger::stats::percentile;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------- arguments

#[derive(Debug, Clone)]
struct Args {
    endpoints: usize,
    interval: Duration,
    duration: Duration,
    warmup: Option<Duration>,
    delay: Duration,
    /// Size of the JSON body of every answer.
    body_bytes: usize,
    /// Every endpoint asserts on the JSON body and a header.
    json_assertions: bool,
    /// `RUST_LOG` of the pinger.
    rust_log: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        endpoints: 10_000,
        interval: Duration::from_secs(15),
        duration: Duration::from_secs(120),
        warmup: None,
        delay: Duration::from_millis(50),
        body_bytes: SMALL_BODY.len(),
        json_assertions: false,
        rust_log: "warn".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        // `cargo bench` appends `--bench` to the arguments of every bench.
        if arg == "--bench" {
            continue;
        }
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        if key == "--help" || key == "-h" {
            println!(
                "usage: cargo bench -p pinger --bench load -- [--endpoints N] [--interval D] \
                 [--duration D] [--warmup D] [--delay-ms N] [--body-bytes N] [--json-assertions] \
                 [--rust-log FILTER]"
            );
            std::process::exit(0);
        }
        if key == "--json-assertions" {
            args.json_assertions = true;
            continue;
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{key} needs a value"))
        };
        match key.as_str() {
            "--endpoints" => {
                args.endpoints = value()?.parse().map_err(|e| format!("--endpoints: {e}"))?;
                if args.endpoints == 0 {
                    return Err("--endpoints must be above zero".into());
                }
            }
            "--interval" => args.interval = parse_duration(&value()?)?,
            "--duration" => args.duration = parse_duration(&value()?)?,
            "--warmup" => args.warmup = Some(parse_duration(&value()?)?),
            "--delay-ms" => {
                let ms: u64 = value()?.parse().map_err(|e| format!("--delay-ms: {e}"))?;
                args.delay = Duration::from_millis(ms);
            }
            "--body-bytes" => {
                args.body_bytes = value()?.parse().map_err(|e| format!("--body-bytes: {e}"))?;
                if args.body_bytes < SMALL_BODY.len() {
                    return Err(format!("--body-bytes: at least {}", SMALL_BODY.len()));
                }
            }
            "--rust-log" => args.rust_log = value()?,
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

// --------------------------------------------------------------- the server

/// What the endpoint server saw.
#[derive(Default)]
struct ServerStats {
    requests: AtomicU64,
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    connections_peak: AtomicU64,
    /// Collect hold times only while this is set (the measured window).
    measuring: AtomicBool,
    /// Time from a request's arrival to its answer being written, in µs.
    hold_us: Mutex<Vec<f64>>,
}

/// The body of every answer at the default size.
const SMALL_BODY: &str = r#"{"ok":true}"#;

/// The answer to every request: 200 with a JSON body of `bytes` bytes. A
/// larger body is a health document that `--json-assertions` reads:
/// `$.status`, a list of checks, padded to the size.
fn response(bytes: usize) -> Vec<u8> {
    let body = if bytes <= SMALL_BODY.len() {
        SMALL_BODY.to_string()
    } else {
        let head = r#"{"status":"ok","version":"2.7.1","checks":[{"name":"db","up":true},{"name":"cache","up":true}],"pad":""#;
        let tail = r#""}"#;
        let pad = bytes.saturating_sub(head.len() + tail.len());
        format!("{head}{}{tail}", "x".repeat(pad))
    };
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What `--json-assertions` adds to every endpoint.
const ASSERTIONS: &str = r#"expect_json = { "$.status" = "ok", "$.checks[?@.name == 'db'].up" = true }
expect_headers = { Content-Type = "application/json" }
"#;

/// Accepts connections on `listener`; every request to any path gets 200
/// with a small JSON body after `delay`. HTTP/1.1 keep-alive, no pipelining
/// needed (reqwest does not pipeline).
async fn serve(
    listener: TcpListener,
    stats: Arc<ServerStats>,
    delay: Duration,
    answer: Arc<Vec<u8>>,
) {
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                let _ = sock.set_nodelay(true);
                let open = stats.connections_open.fetch_add(1, Ordering::Relaxed) + 1;
                stats.connections_total.fetch_add(1, Ordering::Relaxed);
                stats.connections_peak.fetch_max(open, Ordering::Relaxed);
                tokio::spawn(connection(sock, stats.clone(), delay, answer.clone()));
            }
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                eprintln!("bench server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn connection(
    mut sock: TcpStream,
    stats: Arc<ServerStats>,
    delay: Duration,
    answer: Arc<Vec<u8>>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    'requests: loop {
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => break 'requests,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let arrived = Instant::now();
        let body_len = content_length(&buf[..head_end]);
        while buf.len() < head_end + body_len {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => break 'requests,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + body_len);
        stats.requests.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep_until((arrived + delay).into()).await;
        if sock.write_all(&answer).await.is_err() {
            break;
        }
        if stats.measuring.load(Ordering::Relaxed) {
            let us = arrived.elapsed().as_secs_f64() * 1e6;
            stats
                .hold_us
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(us);
        }
    }
    stats.connections_open.fetch_sub(1, Ordering::Relaxed);
}

fn content_length(head: &[u8]) -> usize {
    let text = String::from_utf8_lossy(head);
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

// ------------------------------------------------------------------- /proc

fn open_files_limit(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .map(|l| {
                    let v: Vec<&str> = l.split_whitespace().collect();
                    format!("soft {} / hard {}", v[3], v[4])
                })
        })
        .unwrap_or_else(|| "?".into())
}

// ----------------------------------------------------------------- sampling

#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    wall: DateTime<Utc>,
    pinger: u64,
    bench: u64,
    postgres: Option<u64>,
    machine: (u64, u64),
    db_rows: i64,
    requests: u64,
}

struct Probe {
    pinger_pid: u32,
    postmaster: Option<u32>,
    pool: PgPool,
    server: Arc<ServerStats>,
}

impl Probe {
    async fn sample(&self) -> Sample {
        let db_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM api_metrics")
            .fetch_one(&self.pool)
            .await
            .expect("count api_metrics rows");
        Sample {
            at: Instant::now(),
            wall: Utc::now(),
            pinger: cpu_ticks(self.pinger_pid).unwrap_or(0),
            bench: cpu_ticks(std::process::id()).unwrap_or(0),
            postgres: self.postmaster.and_then(tree_ticks),
            machine: machine_ticks().unwrap_or((0, 0)),
            db_rows,
            requests: self.server.requests.load(Ordering::Relaxed),
        }
    }
}

// --------------------------------------------------------------------- main

/// Kills the pinger if the bench panics before stopping it.
struct ChildGuard(Option<tokio::process::Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.start_kill();
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("load bench: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    rt.block_on(bench(args));
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

async fn bench(args: Args) {
    let pinger_bin = env!("CARGO_BIN_EXE_pinger");
    let tck = clock_ticks();
    let k = args.endpoints;
    let warmup = args.warmup.unwrap_or(args.interval);
    let delay_ms = args.delay.as_secs_f64() * 1000.0;
    let expected_rate = k as f64 / args.interval.as_secs_f64();
    eprintln!(
        "load bench: {k} endpoints every {}, {} ms server delay, {} B bodies{}, warm-up {}, measured {}",
        secs(args.interval),
        delay_ms,
        args.body_bytes,
        if args.json_assertions {
            " with JSON assertions"
        } else {
            ""
        },
        secs(warmup),
        secs(args.duration)
    );

    // Database.
    let test_db = apimon_testkit::fresh_database().await;
    let db_cfg = DbConfig::from_url(&test_db.url).expect("valid database URL");
    let pool = db::connect(&db_cfg).await.expect("connect to the database");
    db::migrate(&pool).await.expect("migrate the database");
    let backend_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .expect("backend pid");
    let postmaster = u32::try_from(backend_pid)
        .ok()
        .and_then(stat_fields)
        .and_then(|f| f.get(1).copied())
        .and_then(|p| u32::try_from(p).ok());

    // Endpoint server.
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let server = Arc::new(ServerStats::default());
    let answer = Arc::new(response(args.body_bytes));
    let server_task = tokio::spawn(serve(listener, server.clone(), args.delay, answer));

    // Endpoints file.
    let dir = tempfile::tempdir().expect("temporary directory");
    let apis = dir.path().join("apis.toml");
    let interval_ms = args.interval.as_millis();
    let mut toml = String::with_capacity(k * 100);
    for i in 0..k {
        toml.push_str(&format!(
            "[[api]]\nname = \"e{i}\"\nurl = \"http://{addr}/e/{i}\"\ninterval = \"{interval_ms}ms\"\ntimeout = \"5s\"\n"
        ));
        if args.json_assertions {
            toml.push_str(ASSERTIONS);
        }
        toml.push('\n');
    }
    std::fs::write(&apis, toml).expect("write apis.toml");

    // The pinger, with as many file descriptors as it may have.
    let stderr_path = dir.path().join("pinger.stderr");
    let stderr_file = std::fs::File::create(&stderr_path).expect("create pinger.stderr");
    let spawned_wall = Utc::now();
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 65536 2>/dev/null || ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; exec \"$0\"")
        .arg(pinger_bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &test_db.url)
        .env("APIS_FILE", &apis)
        .env("RUST_LOG", &args.rust_log)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr_file)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the pinger");
    let mut child = ChildGuard(Some(child));
    let pid = child.0.as_ref().and_then(|c| c.id()).expect("pinger pid");
    let probe = Probe {
        pinger_pid: pid,
        postmaster,
        pool: pool.clone(),
        server: server.clone(),
    };
    let at_spawn = probe.sample().await;

    // Warm-up: from the first request, one full interval (every endpoint
    // checked at least once, connections opened).
    let first_wait = Instant::now();
    while server.requests.load(Ordering::Relaxed) == 0 {
        if first_wait.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("no request reached the server within 60 s; pinger stderr:\n{log}");
        }
        if let Some(Ok(Some(st))) = child.0.as_mut().map(|c| c.try_wait()) {
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("the pinger exited early ({st}); stderr:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first_request_after = first_wait.elapsed();
    eprintln!(
        "first request {:.0} ms after spawn; warming up for {}",
        first_request_after.as_secs_f64() * 1000.0,
        secs(warmup)
    );
    tokio::time::sleep(warmup).await;

    // Measured window.
    server.measuring.store(true, Ordering::Relaxed);
    let start = probe.sample().await;
    let end_at = start.at + args.duration;
    let step = args.interval.min(Duration::from_secs(10));
    let mut prev = start.clone();
    while Instant::now() < end_at {
        let next = (Instant::now() + step).min(end_at);
        tokio::time::sleep_until(next.into()).await;
        let s = probe.sample().await;
        let dt = s.at.duration_since(prev.at).as_secs_f64();
        eprintln!(
            "  t={:>6.1}s  requests/s {:>7.1}  rows/s {:>7.1}  pinger CPU {:>5.1}%  bench(server) CPU {:>5.1}%  machine busy {:>5.1}%",
            s.at.duration_since(start.at).as_secs_f64(),
            (s.requests - prev.requests) as f64 / dt,
            (s.db_rows - prev.db_rows) as f64 / dt,
            (s.pinger - prev.pinger) as f64 / tck / dt * 100.0,
            (s.bench - prev.bench) as f64 / tck / dt * 100.0,
            pct(s.machine.0 - prev.machine.0, s.machine.1 - prev.machine.1),
        );
        prev = s;
    }
    let end = prev;
    server.measuring.store(false, Ordering::Relaxed);
    let rss_peak = status_field(pid, "VmHWM").unwrap_or_else(|| "?".into());
    let threads = status_field(pid, "Threads").unwrap_or_else(|| "?".into());
    let pinger_fd_limit = open_files_limit(pid);
    let pinger_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);

    // Stop the pinger as an orchestrator would, and wait for its last flush.
    let stop_sent = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let mut c = child.0.take().expect("pinger child");
    let exit = match tokio::time::timeout(Duration::from_secs(30), c.wait()).await {
        Ok(Ok(st)) => st.to_string(),
        Ok(Err(e)) => format!("wait failed: {e}"),
        Err(_) => {
            let _ = c.kill().await;
            "did not stop within 30 s after SIGTERM; killed".into()
        }
    };
    let stop_secs = stop_sent.elapsed().as_secs_f64();
    server_task.abort();

    // Rows.
    let rows: Vec<(String, DateTime<Utc>, Option<f64>, bool)> = sqlx::query_as(
        r#"SELECT api_name, "timestamp", response_time_ms, success FROM api_metrics"#,
    )
    .fetch_all(&pool)
    .await
    .expect("read api_metrics");
    let interval_us = i64::try_from(args.interval.as_micros()).expect("interval fits in i64");
    let anchor_us = spawned_wall.timestamp_micros();
    let offsets: HashMap<String, i64> = (0..k)
        .map(|i| {
            let name = format!("e{i}");
            let off = i64::try_from(first_check_offset(&name, args.interval).as_micros())
                .expect("offset fits in i64");
            (name, off)
        })
        .collect();
    let phase = |name: &str, ts: &DateTime<Utc>| -> i64 {
        let off = offsets.get(name).copied().unwrap_or(0);
        (ts.timestamp_micros() - anchor_us - off).rem_euclid(interval_us)
    };
    // The pinger's start instant is unknown: the earliest phase over all
    // rows estimates it (the least-late check counts as on time).
    let mut base = i64::MAX;
    let mut window_phases = Vec::new();
    let mut errors_ms = Vec::new();
    let mut in_window = 0u64;
    let mut failures = 0u64;
    for (name, ts, rt, ok) in &rows {
        let p = phase(name, ts);
        base = base.min(p);
        if *ts >= start.wall && *ts < end.wall {
            in_window += 1;
            window_phases.push(p);
            match (ok, rt) {
                (true, Some(ms)) => errors_ms.push(ms - delay_ms),
                _ => failures += 1,
            }
        }
    }
    let mut late_ms: Vec<f64> = window_phases
        .iter()
        .map(|p| (p - base) as f64 / 1000.0)
        .collect();

    // Figures.
    let window = end.at.duration_since(start.at).as_secs_f64();
    let checks_per_s = in_window as f64 / window;
    let rows_per_s = (end.db_rows - start.db_rows) as f64 / window;
    let requests_per_s = (end.requests - start.requests) as f64 / window;
    let pinger_cpu = (end.pinger - start.pinger) as f64 / tck;
    let bench_cpu = (end.bench - start.bench) as f64 / tck;
    let pg_cpu = match (start.postgres, end.postgres) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / tck),
        _ => None,
    };
    let machine_busy = pct(
        end.machine.0 - start.machine.0,
        end.machine.1 - start.machine.1,
    );
    let cpu_per_1000 = if in_window > 0 {
        pinger_cpu / in_window as f64 * 1000.0
    } else {
        f64::NAN
    };
    let pinger_cores = pinger_cpu / window;
    let startup_cpu = (start.pinger - at_spawn.pinger) as f64 / tck;
    let mut hold_over_ms: Vec<f64> = server
        .hold_us
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|us| us / 1000.0 - delay_ms)
        .collect();
    let (sched_max, sched_mean) = schedule_burstiness(k, args.interval);
    let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let log_lines = log.lines().count();
    let failed_lines = log.lines().filter(|l| l.contains("check failed")).count();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);

    let e50 = percentile(&mut errors_ms, 0.50);
    let e99 = percentile(&mut errors_ms, 0.99);
    let e999 = percentile(&mut errors_ms, 0.999);
    let emax = percentile(&mut errors_ms, 1.0);
    let l50 = percentile(&mut late_ms, 0.50);
    let l99 = percentile(&mut late_ms, 0.99);
    let lmax = percentile(&mut late_ms, 1.0);
    let h50 = percentile(&mut hold_over_ms, 0.50);
    let h99 = percentile(&mut hold_over_ms, 0.99);

    println!();
    println!("== pinger load benchmark ==");
    println!(
        "machine        {nproc} CPUs, {}; CLK_TCK {tck}",
        cpu_model()
    );
    println!(
        "setup          {k} endpoints every {} (expected {expected_rate:.1} checks/s), server delay {delay_ms} ms,",
        secs(args.interval)
    );
    println!(
        "               {} B JSON bodies, {}",
        args.body_bytes,
        if args.json_assertions {
            "each endpoint asserting $.status, a filtered $.checks[...] value and Content-Type"
        } else {
            "no assertions"
        }
    );
    println!(
        "               warm-up {} after the first request ({:.0} ms after spawn), measured window {window:.1} s",
        secs(warmup),
        first_request_after.as_secs_f64() * 1000.0
    );
    println!(
        "pinger         pid {pid}, {threads} threads, peak RSS {rss_peak}, {pinger_fds} fds open, limit {pinger_fd_limit}"
    );
    println!(
        "               exit: {exit} ({stop_secs:.2} s after SIGTERM); stderr: {log_lines} lines, {failed_lines} 'check failed'"
    );
    println!("               CPU before the window (start-up + warm-up): {startup_cpu:.2} s");
    println!(
        "server         {} connections accepted, peak {} open",
        server.connections_total.load(Ordering::Relaxed),
        server.connections_peak.load(Ordering::Relaxed)
    );
    println!(
        "schedule       first-check offsets: busiest 100 ms slot has {sched_max} checks due (mean {sched_mean:.1})"
    );
    println!();
    println!("{:<44} {:>12}  target", "figure", "value");
    println!("{}", "-".repeat(80));
    let row = |name: &str, value: String, target: &str| {
        println!("{name:<44} {value:>12}  {target}");
    };
    let ok = |b: bool| if b { "MET" } else { "MISSED" };
    row(
        "checks/s (rows timestamped in window)",
        format!("{checks_per_s:.1}"),
        &format!(
            ">= {:.1} (99% of K/interval): {}",
            expected_rate * 0.99,
            ok(checks_per_s >= expected_rate * 0.99)
        ),
    );
    row(
        "requests/s seen by the server",
        format!("{requests_per_s:.1}"),
        "",
    );
    row(
        "database rows/s (count(*) delta)",
        format!("{rows_per_s:.1}"),
        "",
    );
    row(
        "failed checks in window",
        format!("{failures}"),
        &format!("of {in_window}"),
    );
    row(
        "pinger CPU-s per 1,000 checks",
        format!("{cpu_per_1000:.3}"),
        &format!("< 1.5: {}", ok(cpu_per_1000 < 1.5)),
    );
    row(
        "pinger CPU (cores busy, CPU-s per s)",
        format!("{pinger_cores:.3}"),
        &format!("< 1.0: {}", ok(pinger_cores < 1.0)),
    );
    row(
        "bench process CPU (HTTP server), cores",
        format!("{:.3}", bench_cpu / window),
        "",
    );
    row(
        "PostgreSQL CPU, cores",
        pg_cpu
            .map(|c| format!("{:.3}", c / window))
            .unwrap_or_else(|| "n/a".into()),
        "",
    );
    row(
        "machine busy (all processes), % of all CPUs",
        format!("{machine_busy:.1}"),
        "",
    );
    row(
        "timing error p50 (response_time - delay), ms",
        format!("{e50:.2}"),
        "",
    );
    row(
        "timing error p99, ms",
        format!("{e99:.2}"),
        &format!("<= 5: {}", ok(e99 <= 5.0)),
    );
    row(
        "timing error p99.9 / max, ms",
        format!("{e999:.2} / {emax:.1}"),
        "",
    );
    row(
        "server hold beyond delay p50 / p99, ms",
        format!("{h50:.2} / {h99:.2}"),
        "(part of the error that is the server's)",
    );
    row(
        "late start p50 / p99 / max, ms",
        format!("{l50:.1} / {l99:.1} / {lmax:.0}"),
        "(vs. schedule; least-late check = 0)",
    );
    if log_lines > 0 {
        println!("last lines of the pinger's stderr:");
        for line in log.lines().skip(log_lines.saturating_sub(6)) {
            println!("  {line}");
        }
    }
    println!();
}

fn pct(busy: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        busy as f64 / total as f64 * 100.0
    }
}

/// The busiest 100 ms slot of the first-check schedule, and the mean.
fn schedule_burstiness(k: usize, interval: Duration) -> (usize, f64) {
    let slots = (interval.as_millis() / 100).max(1) as usize;
    let mut count = vec![0usize; slots];
    for i in 0..k {
        let off = first_check_offset(&format!("e{i}"), interval).as_millis() as usize;
        count[(off / 100).min(slots - 1)] += 1;
    }
    (
        count.iter().copied().max().unwrap_or(0),
        k as f64 / slots as f64,
    )
}
