//! The services on each kind of server: plain PostgreSQL, and a PostgreSQL
//! where TimescaleDB is installed but not in `shared_preload_libraries`
//! (where `CREATE EXTENSION` used to end every service's first session).

#![allow(clippy::unwrap_used)]

mod helpers;

use std::io::Write;
use std::time::Duration;

use apimon_testkit::http::Reply;
use apimon_testkit::procs::{eventually, tail};
use apimon_testkit::PgCluster;
use helpers::Stack;

/// Every service starts, migrates and works on a server that has the
/// TimescaleDB library but does not preload it; each warns with the fix and
/// runs on plain tables. Where the library is not installed, the same
/// services run on plain PostgreSQL without the warning, and the test says
/// that it did not see the installed-but-not-preloaded path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_runs_on_plain_tables_where_timescaledb_is_installed_but_not_preloaded() {
    let installed = apimon_testkit::timescaledb_installed();
    let cluster = tokio::task::spawn_blocking(PgCluster::start_without_timescaledb)
        .await
        .unwrap();
    let stack = Stack::unmigrated(
        &cluster.url("postgres"),
        &[("alpha", Reply::ok())],
        &[("GRAFANA_DB_PASSWORD", "gr4fana-pw")],
    )
    .await;
    let (pinger, detector, alerter) = stack.start_all().await;
    let flowing = eventually(Duration::from_secs(30), || async {
        stack.scalar("SELECT count(*) FROM api_metrics").await >= 3
    })
    .await;
    assert!(flowing, "no rows; pinger log:\n{}", tail(&pinger.log(), 30));
    assert_eq!(
        stack
            .scalar("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
            .await,
        0
    );
    assert_eq!(
        stack
            .scalar("SELECT count(*) FROM pg_class WHERE relname = 'api_metrics' AND relkind = 'r'")
            .await,
        1,
        "api_metrics is a plain table"
    );
    for s in [&pinger, &detector, &alerter] {
        let log = s.log();
        let warned = log
            .lines()
            .any(|l| l.contains("WARN") && l.contains("shared_preload_libraries = 'timescaledb'"));
        assert_eq!(
            warned,
            installed,
            "{}: the fix is named exactly when TimescaleDB is installed ({installed}); log:\n{}",
            s.label(),
            tail(&log, 30)
        );
        assert!(
            !log.contains("must be preloaded"),
            "{}:\n{}",
            s.label(),
            tail(&log, 30)
        );
    }
    // The Grafana role's password is set once, by the detector alone (the
    // detector and the alerter used to race, and one logged "tuple
    // concurrently updated").
    for (s, sets) in [(&pinger, false), (&detector, true), (&alerter, false)] {
        let log = s.log();
        assert_eq!(
            log.matches("password of role apimon_grafana").count(),
            usize::from(sets),
            "{}:\n{}",
            s.label(),
            tail(&log, 30)
        );
    }
    let mut grafana = url::Url::parse(&cluster.url("postgres")).unwrap();
    grafana.set_username("apimon_grafana").unwrap();
    grafana.set_password(Some("gr4fana-pw")).unwrap();
    let ro = apimon_core::db::connect(&apimon_core::DbConfig::from_url(grafana.as_str()).unwrap())
        .await
        .expect("Grafana logs in with GRAFANA_DB_PASSWORD");
    ro.close().await;
    if !installed {
        let _ = writeln!(
            std::io::stderr(),
            "every_service_runs_on_plain_tables_where_timescaledb_is_installed_but_not_preloaded: \
             TimescaleDB is not installed here, so only plain PostgreSQL was seen"
        );
    }
}
