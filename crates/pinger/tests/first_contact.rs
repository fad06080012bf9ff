//! What a newcomer meets first, with the real `pinger` binary: a database
//! that refuses our settings, a bad `.env` line, bad logging settings, a
//! failed migration, SIGTERM, and `/metrics` right after start.

#![allow(clippy::unwrap_used)]

mod helpers;

use std::path::Path;
use std::time::Duration;

use apimon_testkit::first_contact::assert_every_family_has_help;
use apimon_testkit::http::Reply;
use apimon_testkit::procs::{run_to_exit, tail, Exit, Service};
use apimon_testkit::PasswordCluster;
use helpers::Harness;

const APIS: &str = "[[api]]\nname = \"A\"\nurl = \"http://127.0.0.1:9/\"\ninterval = \"1h\"\n";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run_pinger(dir: &Path, args: &[&str], pairs: &[(&str, &str)]) -> Exit {
    std::fs::write(dir.join("apis.toml"), APIS).unwrap();
    let mut vars = env(pairs);
    vars.push(("PINGER_HTTP_PORT".into(), "0".into()));
    run_to_exit("pinger", args, &vars, dir, Duration::from_secs(20))
}

/// Exit 2 with one line naming `key`, last in the output.
fn assert_config_error(exit: &Exit, key: &str) {
    assert_eq!(exit.code(), Some(2), "{exit:?}");
    let naming: Vec<&str> = exit
        .output
        .lines()
        .filter(|l| l.contains("configuration error"))
        .collect();
    assert_eq!(naming.len(), 1, "{}", exit.output);
    assert!(
        naming[0].starts_with(&format!("pinger: configuration error: {key}")),
        "{}",
        exit.output
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_or_a_missing_database_exits_2_naming_database_url_without_the_password() {
    let pg = PasswordCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    for (what, url) in [
        (
            "wrong password",
            pg.url("wr0ng-s3cret", PasswordCluster::ROLE),
        ),
        (
            "missing database",
            pg.url(PasswordCluster::PASSWORD, "no_such_database"),
        ),
    ] {
        let exit = tokio::task::block_in_place(|| {
            run_pinger(dir.path(), &[], &[("DATABASE_URL", url.as_str())])
        });
        assert_config_error(&exit, "DATABASE_URL");
        assert!(exit.elapsed < Duration::from_secs(10), "{what}: {exit:?}");
        assert!(
            !exit.output.contains("wr0ng-s3cret"),
            "{what}: {}",
            exit.output
        );
        assert!(
            !exit.output.contains(PasswordCluster::PASSWORD),
            "{what}: {}",
            exit.output
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_is_retried_with_the_reason_on_healthz() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("apis.toml"), APIS).unwrap();
    let port = apimon_testkit::procs::free_port();
    let url = format!("postgres://apimon:s3cret@127.0.0.1:{port}/apimon");
    let mut pinger = Service::start(
        "pinger",
        "pinger",
        &env(&[("DATABASE_URL", &url), ("APIS_FILE", "apis.toml")]),
        dir.path(),
    );
    pinger.wait_health(503, Duration::from_secs(15)).await;
    // The pool gives up on a refused connection after DB_TIMEOUT (5 s).
    let said = apimon_testkit::procs::eventually(Duration::from_secs(15), || async {
        pinger
            .health()
            .await
            .is_some_and(|(code, body)| code == 503 && body.contains("database unreachable"))
    })
    .await;
    assert!(
        said,
        "{:?}\n{}",
        pinger.health().await,
        tail(&pinger.log(), 20)
    );
    assert!(pinger.is_running(), "{}", pinger.log());
}

#[tokio::test]
async fn an_unquoted_list_in_env_exits_2_saying_how_to_quote_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "DB_PASS=s3cret\nALERT_EMAIL_TO=ops@example.com, oncall@example.com\n",
    )
    .unwrap();
    let exit = run_pinger(dir.path(), &["--check-config"], &[]);
    assert_config_error(&exit, ".env");
    assert!(
        exit.output
            .contains("ALERT_EMAIL_TO=\"ops@example.com, oncall@example.com\""),
        "{}",
        exit.output
    );
    // The quoted form is accepted.
    std::fs::write(
        dir.path().join(".env"),
        "ALERT_EMAIL_TO=\"ops@example.com, oncall@example.com\"\n",
    )
    .unwrap();
    let exit = run_pinger(dir.path(), &["--check-config"], &[]);
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}

#[test]
fn a_bad_log_format_or_filter_exits_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let exit = run_pinger(dir.path(), &["--check-config"], &[("LOG_FORMAT", "xml")]);
    assert_config_error(&exit, "LOG_FORMAT");
    let exit = run_pinger(
        dir.path(),
        &["--check-config"],
        &[("RUST_LOG", "info,pinger=loud")],
    );
    assert_config_error(&exit, "RUST_LOG");
    // And from `.env` as well.
    std::fs::write(dir.path().join(".env"), "LOG_FORMAT=xml\n").unwrap();
    let exit = run_pinger(dir.path(), &["--check-config"], &[]);
    assert_config_error(&exit, "LOG_FORMAT");
    std::fs::remove_file(dir.path().join(".env")).unwrap();
    let exit = run_pinger(dir.path(), &["--check-config"], &[("LOG_FORMAT", "json")]);
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}

/// `RUST_LOG` and `LOG_FORMAT` from `.env` shape the logs from the first
/// line: logging starts only after `.env` is read.
#[tokio::test(flavor = "multi_thread")]
async fn log_settings_in_dot_env_take_effect() {
    let h = Harness::new().await;
    h.server.set("/boom", Reply::status(500));
    let toml = helpers::endpoints(&h.server, &[("failing", "/boom")], "100ms");
    std::fs::write(
        h.dir.path().join(".env"),
        "LOG_FORMAT=json\nRUST_LOG=warn\n",
    )
    .unwrap();
    let exit = run_to_exit(
        "pinger",
        &["--rounds", "2"],
        &h.env(&toml, &[("PINGER_HTTP_PORT", "0")]),
        h.dir.path(),
        Duration::from_secs(30),
    );
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    let lines: Vec<&str> = exit
        .output
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("check failed")),
        "{}",
        exit.output
    );
    for line in &lines {
        assert!(
            line.starts_with('{') && line.ends_with('}') && line.contains("\"level\":\"WARN\""),
            "JSON at warn and above only: {line}"
        );
    }
}

/// The pinger readies the schema in its writer, which retries: a failed
/// migration is not fatal, and `/healthz` says it is the migrations.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_migration_is_what_healthz_says_not_an_unreachable_database() {
    let h = Harness::new().await;
    sqlx::query(
        "UPDATE _sqlx_migrations SET checksum = '\\x00'::bytea \
         WHERE version = (SELECT min(version) FROM _sqlx_migrations)",
    )
    .execute(&h.pool)
    .await
    .unwrap();
    let pinger = Service::start("pinger", "pinger", &h.env(APIS, &[]), h.dir.path());
    let ok = apimon_testkit::procs::eventually(Duration::from_secs(15), || async {
        pinger
            .health()
            .await
            .is_some_and(|(code, body)| code == 503 && body.contains("migrations"))
    })
    .await;
    assert!(
        ok,
        "{:?}\n{}",
        pinger.health().await,
        tail(&pinger.log(), 20)
    );
    let (_, body) = pinger.health().await.unwrap();
    assert!(!body.contains("unreachable"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_is_logged_once_and_metrics_have_help_and_zero_counters_from_start() {
    let h = Harness::new().await;
    let mut pinger = Service::start("pinger", "pinger", &h.env(APIS, &[]), h.dir.path());
    pinger.wait_health(200, Duration::from_secs(20)).await;

    let text = pinger.metrics().await;
    assert_every_family_has_help(&text);
    for sample in [
        "apimon_rows_dropped_total",
        "apimon_rows_written_total",
        "apimon_checks_total{api=\"A\",outcome=\"ok\"}",
    ] {
        assert!(pinger.metric(sample).await.is_some(), "{sample}:\n{text}");
    }
    assert_eq!(pinger.metric("apimon_rows_dropped_total").await, Some(0.0));

    let status = tokio::task::block_in_place(|| pinger.terminate(Duration::from_secs(15)));
    assert!(status.is_some_and(|s| s.success()), "{}", pinger.log());
    let log = pinger.log();
    assert_eq!(log.matches("received SIGTERM").count(), 1, "{log}");
}
