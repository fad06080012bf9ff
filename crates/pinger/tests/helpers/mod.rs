//! What the pinger's integration tests share: a migrated database, a local
//! HTTP server, an endpoints file, and ways to read back what was written.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use apimon_core::db::{self, metrics::MetricRow};
use apimon_core::{DbConfig, Env};
use apimon_testkit::http::HttpServer;
use pinger::config::PingerConfig;
use sqlx::PgPool;

pub struct Harness {
    pub db_url: String,
    pub pool: PgPool,
    pub server: HttpServer,
    pub dir: tempfile::TempDir,
}

impl Harness {
    /// A fresh migrated database and a local HTTP server.
    pub async fn new() -> Harness {
        let test_db = apimon_testkit::fresh_database().await;
        Harness::with_database_url(test_db.url).await
    }

    pub async fn with_database_url(db_url: String) -> Harness {
        let cfg = DbConfig::from_url(&db_url).expect("valid test URL");
        let pool = db::connect(&cfg)
            .await
            .expect("connect to the test database");
        db::migrate(&pool).await.expect("migrate");
        Harness {
            db_url,
            pool,
            server: HttpServer::start().await,
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// Writes an endpoints file and returns its path.
    pub fn apis_file(&self, toml: &str) -> PathBuf {
        let path = self.dir.path().join("apis.toml");
        std::fs::write(&path, toml).expect("write apis.toml");
        path
    }

    /// The environment a pinger of this harness runs with.
    pub fn env(&self, toml: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let path = self.apis_file(toml);
        let mut env = vec![
            ("DATABASE_URL".to_string(), self.db_url.clone()),
            ("APIS_FILE".to_string(), path.display().to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }

    pub fn config(&self, toml: &str, extra: &[(&str, &str)]) -> PingerConfig {
        PingerConfig::from_env(&Env::from_pairs(self.env(toml, extra))).expect("valid config")
    }

    /// The rows of `api`, oldest first.
    pub async fn rows(&self, api: &str) -> Vec<MetricRow> {
        db::metrics::for_api(&self.pool, api)
            .await
            .expect("read rows")
    }

    pub async fn count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM api_metrics")
            .fetch_one(&self.pool)
            .await
            .expect("count rows")
    }

    /// A pool for running the pinger in-process.
    pub fn pinger_pool(&self) -> PgPool {
        db::lazy_pool(&DbConfig::from_url(&self.db_url).expect("valid test URL"))
    }
}

/// `[[api]]` entries named `{prefix}{i}` for each path, all with `interval`.
pub fn endpoints(server: &HttpServer, entries: &[(&str, &str)], interval: &str) -> String {
    let mut s = String::new();
    for (name, path) in entries {
        s.push_str(&format!(
            "[[api]]\nname = \"{name}\"\nurl = \"{}\"\ninterval = \"{interval}\"\ntimeout = \"5s\"\n\n",
            server.url(path)
        ));
    }
    s
}

/// Polls `f` every 50 ms until it is true or `limit` passes.
pub async fn wait_until<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Gaps between consecutive rows, in milliseconds.
pub fn spacing_ms(rows: &[MetricRow]) -> Vec<f64> {
    rows.windows(2)
        .map(|w| {
            (w[1].timestamp - w[0].timestamp)
                .num_microseconds()
                .unwrap_or(0) as f64
                / 1000.0
        })
        .collect()
}

/// Runs `pinger --check-config` with a clean environment on `toml`,
/// written as `apis.toml` into a fresh directory (the working directory)
/// with `files` beside it.
pub fn check_config(toml: &str, files: &[(&str, &[u8])]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("apis.toml");
    std::fs::write(&path, toml).expect("write apis.toml");
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).expect("write a file beside apis.toml");
    }
    std::process::Command::new(env!("CARGO_BIN_EXE_pinger"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APIS_FILE", &path)
        .current_dir(dir.path())
        .arg("--check-config")
        .output()
        .expect("run pinger --check-config")
}

/// The lines `pinger --check-config` prints for `toml`; it must succeed.
pub fn check_config_lines(toml: &str, files: &[(&str, &[u8])]) -> Vec<String> {
    let out = check_config(toml, files);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_string).collect()
}
