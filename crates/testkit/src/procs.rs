//! The workspace's binaries as separate processes, for black-box tests:
//! build them once per test process, start them with an environment of the
//! test's own, stop them with SIGKILL or SIGTERM, start them again, and ask
//! their `/healthz` and `/metrics`.
//!
//! Signals go through the `kill` command, so no unsafe code and no extra
//! dependency is needed.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Directory holding the `pinger`, `detector` and `alerter` binaries,
/// built (once per process) by `cargo build` with the profile of the
/// running test, so that a partial `cargo test -p …` never runs stale
/// binaries against a newer schema.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build_binaries)
}

fn build_binaries() -> PathBuf {
    // target/<profile>/deps/<test executable>
    let exe = std::env::current_exe().expect("path of the test executable");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps")
        .to_path_buf();
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "pinger", "-p", "detector", "-p", "alerter"]);
    // Cargo gives the test these variables of the package under test; some
    // build scripts (ring's) rerun when they change, so passing them on
    // would make this build and the outer `cargo test` rebuild each other's
    // dependencies every time.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let from_cargo_for_tests = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_"]
            .iter()
            .any(|p| key.starts_with(p))
            || matches!(
                key,
                "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if from_cargo_for_tests {
            cmd.env_remove(key);
        }
    }
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run cargo build for the service binaries");
    assert!(
        out.status.success(),
        "cargo build -p pinger -p detector -p alerter failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// A free TCP port on 127.0.0.1 (free when asked: bind it soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

/// One service process: a binary of the workspace with its environment,
/// its log file and its `/healthz` port. It can be killed and started
/// again with the same settings; dropping it kills it.
pub struct Service {
    /// Name in messages, e.g. `pinger-1`.
    label: String,
    program: PathBuf,
    env: Vec<(String, String)>,
    dir: PathBuf,
    log: PathBuf,
    http_port: u16,
    child: Option<Child>,
}

impl Service {
    /// Starts `program` (`pinger`, `detector` or `alerter`) from
    /// [`bin_dir`] with exactly `env` (plus `PATH`), in `dir` (its working
    /// directory, so no stray `.env` is read), logging to
    /// `dir/<label>.log`. Its `/healthz` listens on a free loopback port
    /// unless `env` sets `<PROGRAM>_HTTP_PORT`.
    pub fn start(program: &str, label: &str, env: &[(String, String)], dir: &Path) -> Service {
        let port_key = format!("{}_HTTP_PORT", program.to_ascii_uppercase());
        let mut env: Vec<(String, String)> = env.to_vec();
        let http_port = match env.iter().find(|(k, _)| *k == port_key) {
            Some((_, v)) => v.parse().expect("a numeric HTTP port"),
            None => {
                let p = free_port();
                env.push((port_key, p.to_string()));
                p
            }
        };
        if !env.iter().any(|(k, _)| k == "HTTP_BIND") {
            env.push(("HTTP_BIND".into(), "127.0.0.1".into()));
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), std::env::var("PATH").unwrap_or_default()));
        }
        let mut s = Service {
            label: label.to_string(),
            program: bin_dir().join(program),
            env,
            dir: dir.to_path_buf(),
            log: dir.join(format!("{label}.log")),
            http_port,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("open {:?}: {e}", self.log));
        let err = log.try_clone().expect("clone the log file handle");
        let child = Command::new(&self.program)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.program.display()));
        self.child = Some(child);
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Port of its `/healthz` and `/metrics`.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// Process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, then reaps it. Nothing of its shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `limit` for it to exit (SIGKILL after
    /// that). Returns its exit status, `None` when it had to be killed or
    /// was not running.
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Starts it again with the same environment and port, appending to
    /// the same log (after a kill or terminate).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Path of its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `GET /healthz`: status code and body, `None` when nothing answers.
    pub async fn health(&self) -> Option<(u16, String)> {
        http_get(self.http_port, "/healthz").await
    }

    /// `GET /metrics` as text (empty when nothing answers).
    pub async fn metrics(&self) -> String {
        http_get(self.http_port, "/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The value of a Prometheus sample of `/metrics`, e.g.
    /// `apimon_rows_scored_total` (its exact name with labels, if any).
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok())?
        })
    }

    /// Waits until `/healthz` answers `code`; panics with the log after
    /// `limit`.
    pub async fn wait_health(&self, code: u16, limit: Duration) {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < limit {
            last = self.health().await;
            if last.as_ref().is_some_and(|(c, _)| *c == code) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "{}: /healthz did not answer {code} within {limit:?} (last: {last:?}); log:\n{}",
            self.label,
            tail(&self.log(), 40)
        );
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How a program run by [`run_to_exit`] ended.
#[derive(Debug)]
pub struct Exit {
    /// Its exit status; `None` when it was still running at the limit (then
    /// it was killed).
    pub status: Option<ExitStatus>,
    /// Its stdout and stderr, interleaved as written.
    pub output: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Exit {
    /// The exit code, `None` when killed or still running at the limit.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

/// Runs `program` (`pinger`, `detector` or `alerter`) from [`bin_dir`]
/// with exactly `env` (plus `PATH`) and `args`, in `dir`, until it exits or
/// `limit` passes (then SIGKILL).
pub fn run_to_exit(
    program: &str,
    args: &[&str],
    env: &[(String, String)],
    dir: &Path,
    limit: Duration,
) -> Exit {
    let log_path = dir.join(format!("{program}-run.log"));
    let log = File::create(&log_path).unwrap_or_else(|e| panic!("create {log_path:?}: {e}"));
    let err = log.try_clone().expect("clone the log file handle");
    let mut cmd = Command::new(bin_dir().join(program));
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    if !env.iter().any(|(k, _)| k == "PATH") {
        cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
    }
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if start.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Exit {
        status,
        output: std::fs::read_to_string(&log_path).unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A plain HTTP/1.1 GET on loopback: status code and body, `None` when the
/// connection fails or no answer comes within 5 s.
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_request(port, "GET", path).await
}

/// A bodiless HTTP/1.1 request with `method` on loopback, as
/// [`http_get`].
pub async fn http_request(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// Polls `cond` every 200 ms until it holds (`true`) or `limit` passes
/// (`false`).
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
