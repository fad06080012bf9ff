//! A throwaway PostgreSQL cluster for tests and benchmarks.
//!
//! `initdb` refuses to run as root, so when the test runs as root the server
//! binaries run as the unprivileged `postgres` user (`runuser -u postgres`),
//! and the cluster's files live in a temporary directory owned by that user.
//! The binaries are found through `PG_BIN`, then `PATH`, then the Debian and
//! Ubuntu layout `/usr/lib/postgresql/<version>/bin` (newest first).
//!
//! With `APIMON_TEST_TIMESCALEDB=1` every cluster preloads TimescaleDB (the
//! library must be installed into that PostgreSQL); otherwise clusters do
//! not preload it, and a server where it is installed takes the
//! installed-but-not-preloaded path (plain tables, a warning).

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A PostgreSQL server started by the test, on a free loopback port, with
/// `trust` authentication for the superuser `postgres`.
pub struct PgCluster {
    bin: PathBuf,
    /// Directory holding `data/` and `server.log`; removed on drop.
    root: PathBuf,
    /// Set once a watchdog process owns the server and its files.
    handed_over: bool,
    port: u16,
    /// `Some("postgres")` when we run as root and must switch user.
    run_as: Option<String>,
}

impl PgCluster {
    /// Creates and starts a new cluster. Panics with a message naming what is
    /// missing when PostgreSQL's server binaries cannot be found or started:
    /// this is a test helper.
    pub fn start() -> PgCluster {
        Self::start_with(timescaledb_requested())
    }

    /// Like [`PgCluster::start`], but never preloads TimescaleDB: for tests
    /// of the installed-but-not-preloaded path on either tier.
    pub fn start_without_timescaledb() -> PgCluster {
        Self::start_with(false)
    }

    fn start_with(preload_timescaledb: bool) -> PgCluster {
        let bin = find_pg_bin().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL \
                 (Debian: apt-get install postgresql), set PG_BIN to their directory, \
                 or set DATABASE_URL to an existing server"
            )
        });
        let run_as = if running_as_root() {
            Some("postgres".to_string())
        } else {
            None
        };
        let root = tempfile::Builder::new()
            .prefix("apimon-pg-")
            .tempdir()
            .expect("create a temporary directory for PostgreSQL")
            .keep();
        if let Some(user) = &run_as {
            let status = Command::new("chown")
                .arg(user)
                .arg(&root)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown {user} {root:?} failed");
        }
        let data = root.join("data");
        let preload = if preload_timescaledb {
            Some(timescaledb_settings(&bin))
        } else {
            None
        };
        let mut cluster = PgCluster {
            bin,
            root,
            handed_over: false,
            port: 0,
            run_as,
        };
        cluster.run_checked(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        // Settings for a disposable test server: fast, loopback only, no
        // Unix socket (its default directory may not be writable).
        let mut last_err = String::new();
        for _ in 0..5 {
            cluster.port = free_port();
            let conf = format!(
                "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n\
                 fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
                 max_connections = 300\nshared_buffers = 128MB\n{}",
                cluster.port,
                preload.as_deref().unwrap_or("")
            );
            cluster.append_conf(&conf);
            match cluster.pg_ctl_start() {
                Ok(()) => return cluster,
                Err(e) => last_err = e,
            }
        }
        panic!("could not start PostgreSQL: {last_err}");
    }

    /// Port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server (fast shutdown: connections are cut), keeping its data.
    pub fn stop(&self) {
        self.run_checked(
            "pg_ctl",
            &["-D", path_str(&self.data_dir()), "-m", "fast", "-w", "stop"],
        );
    }

    /// Starts the server again after [`PgCluster::stop`], on the same port.
    pub fn restart(&self) {
        if let Err(e) = self.pg_ctl_start() {
            panic!("could not restart PostgreSQL: {e}");
        }
    }

    /// Makes the server's files outlive this process: a detached watchdog
    /// stops the server and removes its files once `pid` has exited. Used
    /// for a cluster held in a `static`, which is never dropped.
    pub fn stop_when_process_exits(mut self, pid: u32) -> LeakedCluster {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.data_dir();
        let stop = match &self.run_as {
            Some(user) => format!(
                "runuser -u {user} -- '{}' -D '{}' -m immediate stop",
                pg_ctl.display(),
                data.display()
            ),
            None => format!(
                "'{}' -D '{}' -m immediate stop",
                pg_ctl.display(),
                data.display()
            ),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{}'",
            self.root.display()
        );
        let _ = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        // The watchdog owns the server and its files now.
        self.handed_over = true;
        LeakedCluster { port: self.port }
    }

    /// Makes `role` log in with its password (SCRAM) over TCP, while every
    /// other role keeps `trust`: for tests of a wrong password.
    pub fn require_password(&self, role: &str) {
        let path = self.data_dir().join("pg_hba.conf");
        let old = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
        let line = format!("host all \"{role}\" 127.0.0.1/32 scram-sha-256\n");
        std::fs::write(&path, format!("{line}{old}"))
            .unwrap_or_else(|e| panic!("write {path:?}: {e}"));
        self.run_checked("pg_ctl", &["-D", path_str(&self.data_dir()), "reload"]);
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn append_conf(&self, text: &str) {
        use std::io::Write;
        let path = self.data_dir().join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {path:?}: {e}"));
        f.write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("write {path:?}: {e}"));
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let log = self.root.join("server.log");
        let out = self
            .command("pg_ctl")
            .args([
                "-D",
                path_str(&self.data_dir()),
                "-l",
                path_str(&log),
                "-w",
                "-t",
                "60",
                "start",
            ])
            .output()
            .map_err(|e| format!("run pg_ctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let server_log = std::fs::read_to_string(&log).unwrap_or_default();
            Err(format!(
                "pg_ctl start failed: {}{}\n{server_log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn run_checked(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.handed_over {
            return;
        }
        if self.port != 0 {
            let _ = self
                .command("pg_ctl")
                .args(["-D", path_str(&self.data_dir()), "-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A cluster handed to a watchdog process; only its port remains known.
pub struct LeakedCluster {
    port: u16,
}

impl LeakedCluster {
    /// Connection URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

/// Whether the tests were asked to run on TimescaleDB
/// (`APIMON_TEST_TIMESCALEDB=1`): every throwaway cluster then preloads it.
pub fn timescaledb_requested() -> bool {
    matches!(
        std::env::var("APIMON_TEST_TIMESCALEDB").as_deref(),
        Ok("1" | "true" | "yes")
    )
}

/// The `postgresql.conf` lines that preload TimescaleDB, after checking that
/// its library is installed for the server in `bin`.
fn timescaledb_settings(bin: &Path) -> String {
    let libdir = pkglibdir(bin);
    assert!(
        libdir.join("timescaledb.so").exists(),
        "APIMON_TEST_TIMESCALEDB=1, but TimescaleDB is not installed for the PostgreSQL in \
         {bin:?} (no timescaledb.so in {libdir:?}): build and install it (README, \
         \"Testing on TimescaleDB\"), or unset APIMON_TEST_TIMESCALEDB"
    );
    // Background jobs (compression, retention) run only when a test calls
    // them: a policy firing on its own would delete a test's old rows under
    // it. Hundreds of test databases would also each want a scheduler.
    "shared_preload_libraries = 'timescaledb'\ntimescaledb.telemetry_level = off\n\
     timescaledb.max_background_workers = 0\n"
        .to_string()
}

/// Where the PostgreSQL server in `bin` loads its extensions' libraries.
fn pkglibdir(bin: &Path) -> PathBuf {
    // `bin` may hold symbolic links (/usr/local/bin/initdb ->
    // /usr/lib/postgresql/15/bin/initdb): look beside the real binaries.
    let bin = std::fs::canonicalize(bin.join("pg_ctl"))
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| bin.to_path_buf());
    Command::new(bin.join("pg_config"))
        .arg("--pkglibdir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_else(|| bin.join("../lib"))
}

/// Whether TimescaleDB's library is installed for the PostgreSQL the tests
/// start.
pub fn timescaledb_installed() -> bool {
    find_pg_bin().is_some_and(|bin| pkglibdir(&bin).join("timescaledb.so").exists())
}

/// Directory holding `initdb` and `pg_ctl`.
pub fn find_pg_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}
