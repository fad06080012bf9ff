//! Database outages, sharding, shutdown and bad configuration.

#![allow(clippy::unwrap_used)]

mod helpers;

use std::process::{Command, Stdio};
use std::time::Duration;

use apimon_testkit::http::Reply;
use apimon_testkit::PgCluster;
use helpers::{endpoints, spacing_ms, wait_until, Harness};

#[tokio::test]
async fn the_outage_buffer_loses_nothing_across_a_database_restart() {
    let cluster = std::sync::Arc::new(PgCluster::start());
    let h = Harness::with_database_url(cluster.url("postgres")).await;
    h.server.set("/ok", Reply::ok());
    let entries = [("a", "/ok"), ("b", "/ok"), ("c", "/ok")];
    let cfg = h.config(&endpoints(&h.server, &entries, "200ms"), &[]);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(pinger::run(cfg, h.pinger_pool(), None, async {
        let _ = stop_rx.await;
    }));

    assert!(wait_until(Duration::from_secs(10), || async { h.count().await >= 6 }).await);
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop()).await.unwrap();
    // Checks go on while the database is down.
    let hits_before = h.server.hits("/ok");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        h.server.hits("/ok") >= hits_before + 30,
        "checks continued during the outage"
    );
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.restart())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_tx.send(()).unwrap();
    let outcome = run.await.unwrap().unwrap();

    assert_eq!(outcome.lost, 0);
    assert_eq!(outcome.dropped, 0);
    assert_eq!(
        h.count().await as u64,
        outcome.checks,
        "every check is in the table"
    );
    assert_eq!(outcome.checks as usize, h.server.hits("/ok"));
    for (name, _) in entries {
        let rows = h.rows(name).await;
        let gaps = spacing_ms(&rows);
        assert!(
            gaps.iter().all(|g| *g < 300.0),
            "{name}: no hole in the series: {gaps:?}"
        );
    }
}

#[tokio::test]
async fn a_full_buffer_drops_the_oldest_rows_and_counts_them() {
    let h = Harness::new().await;
    h.server.set("/ok", Reply::ok());
    // A database that is never there.
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead_url = format!("postgres://postgres@127.0.0.1:{dead_port}/nowhere");
    let toml = endpoints(&h.server, &[("a", "/ok"), ("b", "/ok")], "100ms");
    let mut env = h.env(
        &toml,
        &[("PINGER_BUFFER_SIZE", "5"), ("SHUTDOWN_GRACE", "500ms")],
    );
    env[0].1 = dead_url;
    let cfg = pinger::config::PingerConfig::from_env(&apimon_core::Env::from_pairs(env)).unwrap();
    let pool = apimon_core::db::lazy_pool(&cfg.db);
    let outcome = pinger::run(cfg, pool, None, tokio::time::sleep(Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(outcome.checks >= 20, "{outcome:?}");
    assert_eq!(outcome.written, 0);
    assert_eq!(outcome.lost, 5, "the buffer keeps its capacity");
    assert_eq!(outcome.dropped + 5, outcome.checks, "{outcome:?}");
}

#[tokio::test]
async fn shards_split_the_endpoints_without_overlap_or_gap() {
    let h = Harness::new().await;
    h.server.set("/ok", Reply::ok());
    let names: Vec<String> = (0..30).map(|i| format!("svc-{i}")).collect();
    let entries: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "/ok")).collect();
    let toml = endpoints(&h.server, &entries, "300ms");
    let runs = (0..3).map(|i| {
        let shard = format!("{i}/3");
        let cfg = h.config(&toml, &[("PINGER_SHARD", shard.as_str())]);
        pinger::run(cfg, h.pinger_pool(), Some(2), std::future::pending())
    });
    let outcomes = futures_util::future::join_all(runs).await;
    let mut total = 0;
    for o in outcomes {
        let o = o.unwrap();
        assert!(o.checks > 0, "every replica has a share");
        total += o.checks;
    }
    assert_eq!(total, 60);
    for name in &names {
        assert_eq!(
            h.rows(name).await.len(),
            2,
            "{name} checked by exactly one replica"
        );
    }
}

fn pinger_binary() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pinger"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        // No fixed port: tests run side by side.
        .env("PINGER_HTTP_PORT", "0")
        .stdin(Stdio::null());
    c
}

#[tokio::test]
async fn sigterm_stops_scheduling_flushes_and_exits_zero() {
    let h = Harness::new().await;
    h.server.set("/ok", Reply::delayed(50));
    let toml = endpoints(
        &h.server,
        &[("a", "/ok"), ("b", "/ok"), ("c", "/ok")],
        "200ms",
    );
    let mut cmd = pinger_binary();
    cmd.envs(h.env(&toml, &[]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    assert!(wait_until(Duration::from_secs(15), || async { h.count().await >= 6 }).await);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit status {:?}: {stderr}",
        out.status
    );
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    // Every request the server answered is in the table: nothing left behind.
    assert_eq!(h.count().await as usize, h.server.hits("/ok"));
}

/// `--rounds N` with a database that never answers: every row is lost,
/// and the exit status and last line say so.
#[tokio::test]
async fn rounds_that_lose_rows_exit_3_saying_how_many() {
    let h = Harness::new().await;
    h.server.set("/ok", Reply::ok());
    let toml = endpoints(&h.server, &[("a", "/ok"), ("b", "/ok")], "100ms");
    let mut env = h.env(&toml, &[("SHUTDOWN_GRACE", "500ms")]);
    env[0].1 = format!(
        "postgres://postgres@127.0.0.1:{}/nowhere",
        apimon_testkit::procs::free_port()
    );
    let out = pinger_binary()
        .envs(env)
        .args(["--rounds", "3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(
        stderr.trim_end().lines().last(),
        Some("pinger: 6 rows lost (0 dropped from a full buffer, 6 not written at exit)"),
        "{stderr}"
    );
    // And with the database there, the same run exits 0.
    let out = pinger_binary()
        .envs(h.env(&toml, &[]))
        .args(["--rounds", "3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(h.count().await, 6);
}

/// One `SHUTDOWN_GRACE` from SIGTERM to exit, as `docker stop` allows: a
/// hanging endpoint and a flush that cannot finish (the table is locked)
/// share it, instead of each getting a whole grace period (or, for the
/// flush, forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_check_and_a_stuck_flush_share_one_grace_period() {
    let h = Harness::new().await;
    h.server.set("/ok", Reply::ok());
    h.server.set("/hang", Reply::Hang);
    let toml = endpoints(&h.server, &[("fast", "/ok"), ("stuck", "/hang")], "200ms");
    let mut child = pinger_binary()
        .envs(h.env(&toml, &[("SHUTDOWN_GRACE", "2s")]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(15), || async { h.count().await >= 3 }).await);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            h.server.hits("/hang") >= 1
        })
        .await
    );
    let mut lock = h.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE api_metrics IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    // Rows wait in the buffer behind the lock.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let sent = std::time::Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // docker stop: SIGKILL once the stop timeout (here 2 s + 1.5 s of
    // slack for a busy machine) has passed.
    let exited = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if sent.elapsed() > Duration::from_millis(3500) {
            child.kill().unwrap();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = sent.elapsed();
    lock.rollback().await.unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = exited.unwrap_or_else(|| panic!("killed after {took:?}:\n{stderr}"));
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("rows lost"), "{stderr}");
    assert!(stderr.contains("abandoning them"), "{stderr}");
}

#[test]
fn configuration_errors_exit_2_with_one_line_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = "[[api]]\nname = \"A\"\nurl = \"http://127.0.0.1:9/\"\n";
    // (what, environment, apis.toml, expected in the message)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        ("bad port", vec![("DB_PORT", "abc")], good, "DB_PORT"),
        ("bad url", vec![("DATABASE_URL", "mysql://x")], good, "DATABASE_URL"),
        ("bad shard", vec![("PINGER_SHARD", "3/3")], good, "PINGER_SHARD"),
        ("bad buffer", vec![("PINGER_BUFFER_SIZE", "-1")], good, "PINGER_BUFFER_SIZE"),
        ("missing file", vec![("APIS_FILE", "/nonexistent/apis.toml")], good, "APIS_FILE"),
        ("unknown key", vec![], "[[api]]\nname = \"A\"\nurl = \"http://a.test/\"\nretries = 3\n", "retries"),
        (
            "duplicate",
            vec![],
            "[[api]]\nname = \"A\"\nurl = \"http://a.test/\"\n[[api]]\nname = \"A\"\nurl = \"http://b.test/\"\n",
            "duplicate endpoint name `A`",
        ),
        ("bad endpoint url", vec![], "[[api]]\nname = \"A\"\nurl = \"ftp://a.test/\"\n", "api[0] \"A\": url"),
        ("bad timeout", vec![], "[[api]]\nname = \"A\"\nurl = \"http://a.test/\"\ntimeout = \"soon\"\n", "timeout"),
        (
            "invalid JSONPath",
            vec![],
            "[[api]]\nname = \"A\"\nurl = \"http://a.test/\"\nexpect_json = { \"$.status[\" = \"ok\" }\n",
            "api[0] \"A\": expect_json: `$.status[` is not a valid JSONPath",
        ),
        (
            "invalid regex",
            vec![],
            "[[api]]\nname = \"A\"\nurl = \"http://a.test/\"\nexpect_body_regex = \"(ok\"\n",
            "api[0] \"A\": expect_body_regex: invalid regular expression",
        ),
        (
            "unknown kind",
            vec![],
            "[[api]]\nname = \"A\"\nkind = \"smtp\"\naddress = \"a.test:25\"\n",
            "api[0] \"A\": kind: expected",
        ),
        (
            "tcp without address",
            vec![],
            "[[api]]\nname = \"A\"\nkind = \"tcp\"\n",
            "api[0] \"A\": address: missing",
        ),
        (
            "tcp with a url",
            vec![],
            "[[api]]\nname = \"A\"\nkind = \"tcp\"\naddress = \"a.test:5432\"\nurl = \"http://a.test/\"\n",
            "api[0] \"A\": url: only for kind = \"http\"",
        ),
        (
            "heartbeat without a token",
            vec![],
            "[[api]]\nname = \"A\"\nkind = \"heartbeat\"\n",
            "api[0] \"A\": token: missing",
        ),
        (
            "heartbeat with a short token",
            vec![("JOB_TOKEN", "short")],
            "[[api]]\nname = \"A\"\nkind = \"heartbeat\"\ntoken = \"${JOB_TOKEN}\"\n",
            "api[0] \"A\": token: expected at least 16 characters",
        ),
        (
            "two heartbeats with one token",
            vec![],
            "[[api]]\nname = \"A\"\nkind = \"heartbeat\"\ntoken = \"0123456789abcdef\"\n\
             [[api]]\nname = \"B\"\nkind = \"heartbeat\"\ntoken = \"0123456789abcdef\"\n",
            "api[1] \"B\": token: the same as another heartbeat's",
        ),
        (
            "heartbeat with the HTTP port off",
            vec![("PINGER_HTTP_PORT", "0")],
            "[[api]]\nname = \"A\"\nkind = \"heartbeat\"\ntoken = \"0123456789abcdef\"\n",
            "PINGER_HTTP_PORT: 0 turns off the HTTP port, where heartbeat endpoints such as `A`",
        ),
        (
            "dns without dns_name",
            vec![],
            "[[api]]\nname = \"A\"\nkind = \"dns\"\n",
            "api[0] \"A\": dns_name: missing",
        ),
        (
            "dns with a bad record_type",
            vec![],
            "[[api]]\nname = \"A\"\nkind = \"dns\"\ndns_name = \"a.test\"\nrecord_type = \"AXFR\"\n",
            "api[0] \"A\": record_type: expected one of A, AAAA",
        ),
        (
            "dns with a bad resolver",
            vec![],
            "[[api]]\nname = \"A\"\nkind = \"dns\"\ndns_name = \"a.test\"\nresolver = \"ns.a.test\"\n",
            "api[0] \"A\": resolver: expected \"ip:port\"",
        ),
        (
            "dns with a bad expect",
            vec![],
            "[[api]]\nname = \"A\"\nkind = \"dns\"\ndns_name = \"a.test\"\nrecord_type = \"MX\"\nexpect = \"mail.a.test\"\n",
            "api[0] \"A\": expect: expected \"preference exchange\"",
        ),
        (
            "dns keys on an http entry",
            vec![],
            "[[api]]\nname = \"A\"\nurl = \"http://a.test/\"\ndns_name = \"a.test\"\n",
            "api[0] \"A\": dns_name: only for kind = \"dns\"",
        ),
        (
            "http keys on a dns entry",
            vec![],
            "[[api]]\nname = \"A\"\nkind = \"dns\"\ndns_name = \"a.test\"\nexpect_body = \"ok\"\n",
            "api[0] \"A\": expect_body: only for kind = \"http\"",
        ),
        (
            "bad max_response_time",
            vec![],
            "[[api]]\nname = \"A\"\nurl = \"http://a.test/\"\nmax_response_time = \"fast\"\n",
            "api[0] \"A\": max_response_time",
        ),
        (
            "unreadable ca_file",
            vec![],
            "[[api]]\nname = \"A\"\nurl = \"https://a.test/\"\nca_file = \"certs/missing-ca.pem\"\n",
            "api[0] \"A\": ca_file: cannot read `",
        ),
        (
            "ca_file without a certificate",
            vec![],
            "[[api]]\nname = \"A\"\nurl = \"https://a.test/\"\nca_file = \"apis.toml\"\n",
            "api[0] \"A\": ca_file: `",
        ),
        (
            "bad maintenance window",
            vec![],
            "[[api]]\nname = \"A\"\nurl = \"http://a.test/\"\n[[maintenance]]\ncron = \"0 2 * * SUN\"\nduration = \"2h\"\ntimezone = \"Mars/Base\"\n",
            "apis.toml: maintenance[0]: timezone: unknown time zone `Mars/Base`",
        ),
    ];
    for (label, env, toml, needle) in cases {
        let path = dir.path().join("apis.toml");
        std::fs::write(&path, toml).unwrap();
        let mut cmd = pinger_binary();
        cmd.current_dir(dir.path())
            .env("APIS_FILE", &path)
            .env("DB_PASS", "hunter2-secret")
            .envs(env);
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{label}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{label}: one line: {stderr}"
        );
        assert!(stderr.contains(needle), "{label}: `{needle}` in {stderr}");
        assert!(
            !stderr.contains("hunter2-secret"),
            "{label}: password leaked"
        );
    }
}

#[test]
fn check_config_lists_the_endpoints_of_this_shard() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apis.toml");
    // Maintenance windows are the alerter's business: the pinger reads
    // past them.
    std::fs::write(
        &path,
        "[[api]]\nname = \"A\"\nurl = \"http://a.test/\"\ninterval = 5\n\
         [[maintenance]]\nweekdays = [\"sat\"]\nstart = \"22:00\"\nduration = \"2h\"\n",
    )
    .unwrap();
    let out = pinger_binary()
        .env("APIS_FILE", &path)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("A\tGET http://a.test/\tevery 5s"),
        "{stdout}"
    );
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_reports_a_database_outage_and_metrics_count_checks() {
    let cluster = std::sync::Arc::new(PgCluster::start());
    let h = Harness::with_database_url(cluster.url("postgres")).await;
    h.server.set("/ok", Reply::ok());
    h.server.set("/boom", Reply::status(500));
    let toml = endpoints(&h.server, &[("good", "/ok"), ("bad", "/boom")], "200ms");
    let port = apimon_testkit::procs::free_port();
    let mut cmd = pinger_binary();
    cmd.envs(h.env(
        &toml,
        &[
            ("PINGER_HTTP_PORT", &port.to_string()),
            ("HTTP_BIND", "127.0.0.1"),
        ],
    ))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let health = format!("http://127.0.0.1:{port}/healthz");
    let status = |want: u16| {
        let health = health.clone();
        move || {
            let health = health.clone();
            async move { get(&health).await.map(|(s, _)| s) == Some(want) }
        }
    };
    assert!(
        wait_until(Duration::from_secs(15), status(200)).await,
        "healthy while the database answers"
    );
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop()).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(15), status(503)).await,
        "503 during the outage"
    );
    let (_, why) = get(&health).await.unwrap();
    assert!(why.contains("database"), "{why}");
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.restart())
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(40), status(200)).await,
        "healthy again after the outage"
    );
    let (code, text) = get(&format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert!(
        text.contains("apimon_checks_total{api=\"good\",outcome=\"ok\"}"),
        "{text}"
    );
    assert!(
        text.contains("apimon_checks_total{api=\"bad\",outcome=\"http_status\"}"),
        "{text}"
    );
    assert!(
        text.contains("apimon_response_time_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("apimon_buffered_rows"), "{text}");
    assert!(text.contains("apimon_rows_written_total"), "{text}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}
