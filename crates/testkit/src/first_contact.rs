//! What a newcomer meets first, checked the same way on each service
//! binary (`pinger`, `detector`, `alerter`; each crate's
//! `tests/first_contact.rs` calls these): a database that refuses our
//! settings, one that cannot be reached, `/metrics` right after start, and
//! SIGTERM.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::procs::{eventually, free_port, run_to_exit, tail, Service};
use crate::PasswordCluster;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A wrong password and a missing database: exit 2 within seconds, one
/// line naming `DATABASE_URL`, no password anywhere in the output.
pub async fn refused_settings_exit_2(bin: &str, port_var: &str) {
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
        let vars = env(&[("DATABASE_URL", url.as_str()), (port_var, "0")]);
        let exit = tokio::task::block_in_place(|| {
            run_to_exit(bin, &[], &vars, dir.path(), Duration::from_secs(20))
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
            naming[0].starts_with(&format!("{bin}: configuration error: DATABASE_URL: ")),
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

/// `/healthz` answers 503 with the reason while the database cannot be
/// reached, and the service keeps retrying.
pub async fn healthz_503_while_connecting(bin: &str) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://apimon:s3cret@127.0.0.1:{}/apimon", free_port());
    let mut service = Service::start(bin, bin, &env(&[("DATABASE_URL", &url)]), dir.path());
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

/// `/metrics` right after start: every family has its HELP and each of
/// `counters` is there at 0; SIGTERM then ends it cleanly, logged once.
pub async fn sigterm_once_and_metrics_from_start(bin: &str, counters: &[&str]) {
    let db = crate::fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let mut service = Service::start(bin, bin, &env(&[("DATABASE_URL", &db.url)]), dir.path());
    service.wait_health(200, Duration::from_secs(30)).await;

    let text = service.metrics().await;
    assert_every_family_has_help(&text);
    for sample in counters {
        assert_eq!(service.metric(sample).await, Some(0.0), "{sample}:\n{text}");
    }

    let status = tokio::task::block_in_place(|| service.terminate(Duration::from_secs(15)));
    assert!(status.is_some_and(|s| s.success()), "{}", service.log());
    let log = service.log();
    assert_eq!(log.matches("received SIGTERM").count(), 1, "{log}");
}

/// Every `# TYPE` of a Prometheus text has its `# HELP`.
pub fn assert_every_family_has_help(text: &str) {
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
