//! Test helpers shared by every crate of the workspace.
//!
//! [`fresh_database`] gives each test its own empty database: on the server
//! named by `DATABASE_URL` when it is set, otherwise on a throwaway
//! PostgreSQL cluster that this process starts once (and that a watchdog
//! stops and deletes when the process exits). [`PgCluster`] starts a
//! dedicated cluster, for tests that stop and restart the database.
//! [`procs`] runs the workspace's binaries as separate processes;
//! [`scan::columns_holding`] finds where a text is stored;
//! [`dns::DnsServer`] answers DNS queries on loopback.

pub mod dns;
pub mod first_contact;
pub mod http;
pub mod migrations;
mod pg;
pub mod procfs;
pub mod procs;
pub mod scan;
pub mod smtp;
pub mod tls;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

pub use pg::{find_pg_bin, timescaledb_installed, timescaledb_requested, LeakedCluster, PgCluster};
use sqlx::Connection;

/// An empty database created for one test.
#[derive(Clone, Debug)]
pub struct TestDb {
    /// Connection URL of the database.
    pub url: String,
    /// Its name.
    pub name: String,
}

enum Server {
    External(url::Url),
    Local(LeakedCluster),
}

impl Server {
    fn url(&self, database: &str) -> String {
        match self {
            Server::External(base) => {
                let mut u = base.clone();
                u.set_path(&format!("/{database}"));
                u.to_string()
            }
            Server::Local(c) => c.url(database),
        }
    }
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            Server::External(url::Url::parse(&url).expect("DATABASE_URL is not a valid URL"))
        }
        _ => Server::Local(PgCluster::start().stop_when_process_exits(std::process::id())),
    })
}

/// URL of the maintenance database of the server tests use.
pub fn admin_url() -> String {
    match server() {
        Server::External(u) => u.to_string(),
        Server::Local(c) => c.url("postgres"),
    }
}

/// Creates a new, empty database for one test and returns its URL.
pub async fn fresh_database() -> TestDb {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let server = server();
    let name = format!(
        "apimon_test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = sqlx::PgConnection::connect(&admin_url())
        .await
        .expect("connect to the test PostgreSQL server");
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        say_backend(&mut conn).await;
    }
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    let _ = conn.close().await;
    TestDb {
        url: server.url(&name),
        name,
    }
}

/// What the tests' databases run on, in words: TimescaleDB when the server
/// preloads it, else plain PostgreSQL and why.
pub async fn backend_in_words(conn: &mut sqlx::PgConnection) -> String {
    let (version, preload, available): (String, String, Option<String>) = sqlx::query_as(
        "SELECT current_setting('server_version'), current_setting('shared_preload_libraries'), \
         (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb')",
    )
    .fetch_one(conn)
    .await
    .expect("ask the test server what it runs");
    match available {
        Some(ts) if preload.contains("timescaledb") => {
            format!("TimescaleDB {ts} (preloaded) on PostgreSQL {version}")
        }
        Some(ts) => format!(
            "plain PostgreSQL {version}: TimescaleDB {ts} is installed but not preloaded \
             (the fallback path; APIMON_TEST_TIMESCALEDB=1 runs the tests on TimescaleDB)"
        ),
        None => format!("plain PostgreSQL {version}: TimescaleDB is not installed"),
    }
}

/// Says once per test process which backend its tests run on, on the real
/// standard error (the test harness does not capture it), so that a run on
/// plain PostgreSQL cannot pass for a run on TimescaleDB.
async fn say_backend(conn: &mut sqlx::PgConnection) {
    use std::io::Write;
    let words = backend_in_words(conn).await;
    let exe = std::env::current_exe().ok();
    let binary = exe
        .as_deref()
        .and_then(|p| p.file_stem())
        .and_then(|s| s.to_str())
        .unwrap_or("tests");
    let _ = writeln!(std::io::stderr(), "apimon tests ({binary}): on {words}");
    if timescaledb_requested() {
        assert!(
            words.starts_with("TimescaleDB"),
            "APIMON_TEST_TIMESCALEDB=1, but the test server runs {words}"
        );
    }
}

/// Whether the database behind `pool` runs TimescaleDB.
pub async fn on_timescaledb(pool: &sqlx::PgPool) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')")
        .fetch_one(pool)
        .await
        .expect("ask which backend the test database runs")
}

/// On TimescaleDB, runs the retention policy of hypertable `table` now, as
/// its scheduler would (the tests' clusters run no background jobs), and
/// returns true; on plain PostgreSQL, returns false. The policy must exist
/// (`db::apply_retention`).
pub async fn run_retention_policy(pool: &sqlx::PgPool, table: &str) -> bool {
    if !on_timescaledb(pool).await {
        return false;
    }
    let job: i32 = sqlx::query_scalar(
        "SELECT job_id FROM timescaledb_information.jobs \
         WHERE proc_name = 'policy_retention' AND hypertable_name = $1",
    )
    .bind(table)
    .fetch_optional(pool)
    .await
    .expect("look up the retention job")
    .unwrap_or_else(|| panic!("{table} has no retention policy: call db::apply_retention first"));
    sqlx::query("CALL run_job($1)")
        .bind(job)
        .execute(pool)
        .await
        .expect("run the retention job");
    true
}

/// A dedicated PostgreSQL cluster where the role `apimon_pw` must log in
/// with its password, as on a real server (the shared test server trusts
/// everyone): for tests of a wrong password or a missing database.
pub struct PasswordCluster {
    /// Kept alive for the test; stopped when dropped.
    pub cluster: PgCluster,
}

impl PasswordCluster {
    /// The role that needs its password.
    pub const ROLE: &'static str = "apimon_pw";
    /// Its password.
    pub const PASSWORD: &'static str = "right-password";

    /// Starts the cluster, creates the role and a database `apimon_pw` it
    /// owns, and requires the password.
    pub async fn start() -> PasswordCluster {
        let cluster = tokio::task::spawn_blocking(PgCluster::start)
            .await
            .expect("start a PostgreSQL cluster");
        let mut conn = sqlx::PgConnection::connect(&cluster.url("postgres"))
            .await
            .expect("connect to the new cluster");
        for sql in [
            format!(
                "CREATE ROLE {} LOGIN PASSWORD '{}'",
                Self::ROLE,
                Self::PASSWORD
            ),
            format!("CREATE DATABASE {0} OWNER {0}", Self::ROLE),
        ] {
            sqlx::query(&sql)
                .execute(&mut conn)
                .await
                .expect("create the role and its database");
        }
        let _ = conn.close().await;
        cluster.require_password(Self::ROLE);
        PasswordCluster { cluster }
    }

    /// `postgres://apimon_pw:<password>@127.0.0.1:<port>/<database>`.
    pub fn url(&self, password: &str, database: &str) -> String {
        format!(
            "postgres://{}:{password}@127.0.0.1:{}/{database}",
            Self::ROLE,
            self.cluster.port()
        )
    }
}
