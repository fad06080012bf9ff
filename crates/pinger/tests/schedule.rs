//! The pinger's schedule and batching, against a real PostgreSQL and real
//! HTTP servers on loopback.

#![allow(clippy::unwrap_used)]

mod helpers;

use std::time::Duration;

use apimon_core::db::METRICS_CHANNEL;
use apimon_testkit::http::Reply;
use helpers::{endpoints, spacing_ms, wait_until, Harness};
use sqlx::postgres::PgListener;

#[tokio::test]
async fn n_endpoints_for_m_rounds_give_exactly_n_times_m_rows_on_a_fixed_grid() {
    let h = Harness::new().await;
    let names: Vec<String> = (0..5).map(|i| format!("api{i}")).collect();
    let entries: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "/ok")).collect();
    h.server.set("/ok", Reply::delayed(20));
    let cfg = h.config(&endpoints(&h.server, &entries, "300ms"), &[]);
    let mut listener = PgListener::connect_with(&h.pool).await.unwrap();
    listener.listen(METRICS_CHANNEL).await.unwrap();

    let outcome = pinger::run(cfg, h.pinger_pool(), Some(4), std::future::pending())
        .await
        .expect("run completes");

    assert_eq!(outcome.checks, 20);
    assert_eq!(outcome.written, 20);
    assert_eq!(outcome.lost, 0);
    assert_eq!(h.count().await, 20);
    for name in &names {
        let rows = h.rows(name).await;
        assert_eq!(rows.len(), 4, "{name}");
        assert!(rows.iter().all(|r| r.success && r.status_code == Some(200)));
        assert!(rows.iter().all(|r| r.response_time_ms.unwrap() >= 20.0));
        for gap in spacing_ms(&rows) {
            assert!((250.0..=350.0).contains(&gap), "{name}: gap {gap} ms");
        }
    }
    // Each batch notified the detector's channel with its row count.
    let mut notified = 0;
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await {
        notified += n.payload().parse::<u64>().unwrap();
    }
    assert_eq!(notified, 20);
    // Every configured endpoint is registered for the detector and dashboards.
    let registered = apimon_core::db::endpoints::names(&h.pool).await.unwrap();
    assert_eq!(registered, names);
}

#[tokio::test]
async fn rows_are_written_in_batches_not_one_statement_each() {
    let h = Harness::new().await;
    h.server.set("/ok", Reply::ok());
    let names: Vec<String> = (0..300).map(|i| format!("e{i}")).collect();
    let entries: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "/ok")).collect();
    let cfg = h.config(&endpoints(&h.server, &entries, "1s"), &[]);
    let outcome = pinger::run(cfg, h.pinger_pool(), Some(2), std::future::pending())
        .await
        .unwrap();
    assert_eq!(outcome.written, 600);
    assert_eq!(h.count().await, 600);
    // 600 checks spread over ~2 s with 250 ms flushes: at most a dozen
    // statements, never one per row.
    assert!(
        outcome.batches <= 20,
        "{} batches for 600 rows",
        outcome.batches
    );
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_delay_the_others() {
    let h = Harness::new().await;
    h.server.set("/fast", Reply::ok());
    h.server.set("/hang", Reply::Hang);
    let toml = format!(
        "[[api]]\nname = \"fast\"\nurl = \"{}\"\ninterval = \"200ms\"\n\n\
         [[api]]\nname = \"stuck\"\nurl = \"{}\"\ninterval = \"200ms\"\ntimeout = \"1500ms\"\n",
        h.server.url("/fast"),
        h.server.url("/hang")
    );
    let cfg = h.config(&toml, &[("SHUTDOWN_GRACE", "3s")]);
    let outcome = pinger::run(
        cfg,
        h.pinger_pool(),
        None,
        tokio::time::sleep(Duration::from_millis(2500)),
    )
    .await
    .unwrap();
    let fast = h.rows("fast").await;
    let stuck = h.rows("stuck").await;
    // 2.5 s at 200 ms: about 12 checks of the fast one, on time.
    assert!(fast.len() >= 10, "fast had {} checks", fast.len());
    assert!(
        spacing_ms(&fast).iter().all(|g| *g < 300.0),
        "{:?}",
        spacing_ms(&fast)
    );
    // The stuck one: one request in flight at a time, each timing out.
    assert!(
        (1..=2).contains(&stuck.len()),
        "stuck had {} checks",
        stuck.len()
    );
    assert!(stuck
        .iter()
        .all(|r| r.error_kind.as_deref() == Some("timeout")));
    assert!(h.server.hits("/hang") <= 2, "at most one request in flight");
    assert_eq!(outcome.lost, 0);
}

#[tokio::test]
async fn rows_reach_the_database_within_a_second_of_the_check() {
    let h = Harness::new().await;
    h.server.set("/ok", Reply::ok());
    let cfg = h.config(&endpoints(&h.server, &[("one", "/ok")], "3s"), &[]);
    let pool = h.pinger_pool();
    let run = tokio::spawn(async move {
        pinger::run(cfg, pool, None, tokio::time::sleep(Duration::from_secs(10))).await
    });
    assert!(
        wait_until(Duration::from_secs(8), || async {
            h.server.hits("/ok") > 0
        })
        .await
    );
    let asked = h.server.requests()[0].at;
    assert!(wait_until(Duration::from_secs(5), || async { h.count().await > 0 }).await);
    let delay = asked.elapsed();
    assert!(
        delay < Duration::from_millis(1500),
        "row visible after {delay:?}"
    );
    run.abort();
}
