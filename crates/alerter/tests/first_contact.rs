//! What a newcomer meets first, with the real `alerter` binary: a database
//! that refuses our settings, one that cannot be reached, SIGTERM, and
//! `/metrics` right after start.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use apimon_testkit::procs::{eventually, free_port, run_to_exit, tail, Service};
use apimon_testkit::PasswordCluster;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
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
        let vars = env(&[("DATABASE_URL", url.as_str()), ("ALERTER_HTTP_PORT", "0")]);
        let exit = tokio::task::block_in_place(|| {
            run_to_exit("alerter", &[], &vars, dir.path(), Duration::from_secs(20))
        });
        assert_eq!(exit.code(), Some(2), "{what}: {exit:?}");
        assert!(exit.elapsed < Duration::from_secs(10), "{what}: {exit:?}");
        let naming: Vec<&str> = exit
            .output
            .lines()
            .filter(|l| l.contains("DATABASE_URL"))
            .collect();
        assert_eq!(naming.len(), 1, "{what}: {}", exit.output);
        assert!(
            naming[0].starts_with("alerter: configuration error: DATABASE_URL: "),
            "{what}: {}",
            exit.output
        );
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
async fn healthz_answers_503_with_the_reason_while_the_database_cannot_be_reached() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://apimon:s3cret@127.0.0.1:{}/apimon", free_port());
    let mut service = Service::start(
        "alerter",
        "alerter",
        &env(&[("DATABASE_URL", &url)]),
        dir.path(),
    );
    let answered = eventually(Duration::from_secs(15), || async {
        service
            .health()
            .await
            .is_some_and(|(code, body)| code == 503 && body.contains("connecting to the database"))
    })
    .await;
    assert!(
        answered,
        "{:?}\n{}",
        service.health().await,
        tail(&service.log(), 20)
    );
    let (_, body) = service.health().await.unwrap();
    assert!(!body.contains("s3cret"), "{body}");
    // Still retrying, not exited.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(service.is_running(), "{}", service.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_is_logged_once_and_metrics_have_help_and_zero_counters_from_start() {
    let db = apimon_testkit::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let mut service = Service::start(
        "alerter",
        "alerter",
        &env(&[("DATABASE_URL", &db.url)]),
        dir.path(),
    );
    service.wait_health(200, Duration::from_secs(30)).await;

    let text = service.metrics().await;
    assert_every_family_has_help(&text);
    for sample in COUNTERS_AT_ZERO {
        assert_eq!(service.metric(sample).await, Some(0.0), "{sample}:\n{text}");
    }

    let status = tokio::task::block_in_place(|| service.terminate(Duration::from_secs(15)));
    assert!(status.is_some_and(|s| s.success()), "{}", service.log());
    let log = service.log();
    assert_eq!(log.matches("received SIGTERM").count(), 1, "{log}");
}

/// Every `# TYPE` of a Prometheus text has its `# HELP`.
fn assert_every_family_has_help(text: &str) {
    let types: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(!types.is_empty(), "{text}");
    for name in types {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{text}"
        );
    }
}

/// Samples of an alerter with nothing to send yet.
const COUNTERS_AT_ZERO: [&str; 3] = [
    "apimon_incident_notifications_total{event=\"open\"}",
    "apimon_incident_notifications_total{event=\"reminder\"}",
    "apimon_incident_notifications_total{event=\"resolve\"}",
];
