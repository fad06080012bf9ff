//! The three services as processes under faults (issue 6): each one killed
//! with SIGKILL and restarted, PostgreSQL stopped for 30 s, the SMTP server
//! down for a while, and two replicas of each service at once. Real
//! processes, a real PostgreSQL and a real SMTP server; every endpoint is
//! checked every second.

#![allow(clippy::unwrap_used)]

mod helpers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use apimon_core::shard::Shard;
use apimon_testkit::http::Reply;
use apimon_testkit::procs::{eventually, Service};
use apimon_testkit::PgCluster;
use chrono::Utc;
use helpers::{assert_failures_scored_by_the_rule, count, gaps, logs, Stack, INTERVAL};

const WAIT: Duration = Duration::from_secs(30);
const STOP: Duration = Duration::from_secs(15);

fn ok() -> Reply {
    Reply::delayed(10)
}

fn down() -> Reply {
    Reply::status(503)
}

/// Waits until the SMTP server has at least `n` emails with subject `s`.
async fn wait_mails(stack: &Stack, s: &str, n: usize, services: &[&Service]) {
    let mails = stack.smtp.wait_for(WAIT, |m| count(m, s) >= n).await;
    assert!(
        count(&mails, s) >= n,
        "want {n} emails `{s}` within {WAIT:?}, got {}; logs:\n{}",
        count(&mails, s),
        logs(services)
    );
}

/// SIGTERM, and a clean exit.
fn stop(s: &mut Service) {
    let status = s.terminate(STOP);
    assert!(
        status.is_some_and(|st| st.success()),
        "{} did not exit cleanly on SIGTERM: {status:?}; log:\n{}",
        s.label(),
        logs(&[&*s])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_each_service_in_turn_loses_and_duplicates_nothing() {
    let t = apimon_testkit::fresh_database().await;
    let names = ["alpha", "beta", "gamma", "flappy"];
    let endpoints: Vec<(&str, Reply)> = names.iter().map(|n| (*n, ok())).collect();
    let stack = Stack::new(
        &t.url,
        &endpoints,
        // Models early (the restarted detector loads them).
        &[("MIN_TRAINING_SAMPLES", "10")],
    )
    .await;
    let (mut pinger, mut detector, mut alerter) = stack.start_all().await;

    // An outage in progress.
    stack.web.set("/flappy", down());
    wait_mails(
        &stack,
        "[apimon] DOWN: flappy",
        1,
        &[&pinger, &detector, &alerter],
    )
    .await;

    // The pinger dies: the checks due meanwhile are lost, nothing else.
    pinger.kill();
    let killed_at = Utc::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    pinger.restart();
    let restarted_at = Utc::now();
    pinger.wait_health(200, WAIT).await;

    // The detector dies while failures stream in.
    let resumed = eventually(WAIT, || async {
        stack
            .rows("flappy")
            .await
            .iter()
            .filter(|(ts, _)| *ts > restarted_at)
            .count()
            >= 2
    })
    .await;
    assert!(resumed, "no checks after the pinger's restart");
    detector.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    detector.restart();
    detector.wait_health(200, WAIT).await;

    // The alerter dies, and the API recovers while it is dead.
    alerter.kill();
    stack.web.set("/flappy", ok());
    tokio::time::sleep(Duration::from_secs(3)).await;
    alerter.restart();
    alerter.wait_health(200, WAIT).await;
    let all = [&pinger, &detector, &alerter];
    wait_mails(&stack, "[apimon] RESOLVED: flappy down", 1, &all).await;

    // A second outage, handled by the restarted processes.
    stack.web.set("/flappy", down());
    wait_mails(&stack, "[apimon] DOWN: flappy", 2, &all).await;
    stack.web.set("/flappy", ok());
    wait_mails(&stack, "[apimon] RESOLVED: flappy down", 2, &all).await;

    stop(&mut pinger);
    let all = [&pinger, &detector, &alerter];
    stack.wait_settled(&all, Duration::from_secs(60)).await;
    stop(&mut detector);
    stop(&mut alerter);

    // Metrics: every request an endpoint answered is a row, except the
    // checks of the pinger's last flush interval before SIGKILL (at most
    // one per endpoint at a 1 s interval, and one in flight).
    let dead = (restarted_at - killed_at).num_milliseconds() as f64 / 1000.0;
    for name in names {
        let rows = stack.rows(name).await;
        let hits = stack.hits(name);
        assert!(
            rows.len() <= hits,
            "{name}: {} rows for {hits} checks",
            rows.len()
        );
        assert!(
            hits - rows.len() <= 2,
            "{name}: {} checks lost ({hits} made, {} rows)",
            hits - rows.len(),
            rows.len()
        );
        let widest = gaps(&rows).into_iter().fold(0.0, f64::max);
        assert!(
            widest <= dead + 2.0 * INTERVAL.as_secs_f64() + 1.0,
            "{name}: a {widest} s hole in the series, the pinger was dead for {dead} s"
        );
        let first_after = rows.iter().find(|(ts, _)| *ts > restarted_at).unwrap().0;
        assert!(
            (first_after - restarted_at).num_milliseconds() < 3000,
            "{name}: checks resumed only at {first_after} after a restart at {restarted_at}"
        );
    }

    // Detection: every row scored (watermarks at the end, checked when
    // settling), each failure with the score of its place in its run of
    // failures across the detector's restart, no anomaly without its row
    // and none twice.
    assert_failures_scored_by_the_rule(&stack, "flappy").await;
    assert_eq!(
        stack
            .scalar(
                r#"SELECT count(*) FROM anomalies a WHERE NOT EXISTS (SELECT 1 FROM api_metrics m
                   WHERE m.api_name = a.api_name AND m."timestamp" = a."timestamp")"#
            )
            .await,
        0,
        "anomalies without their observation"
    );
    assert_eq!(
        stack
            .scalar(r#"SELECT count(*) - count(DISTINCT (api_name, "timestamp")) FROM anomalies"#)
            .await,
        0,
        "duplicate anomalies"
    );

    // Notifications: one email per event, none lost.
    stack.assert_each_email_sent_once().await;
    let mails = stack.smtp.mails();
    assert_eq!(count(&mails, "[apimon] DOWN: flappy"), 2);
    assert_eq!(count(&mails, "[apimon] RESOLVED: flappy down"), 2);
    // Incidents, not anomalies, page: no anomaly alert at all.
    assert_eq!(
        mails
            .iter()
            .filter(|m| helpers::subject(m).contains("anomaly"))
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_s_database_outage_is_buffered_reported_on_healthz_and_survived() {
    const OUTAGE: Duration = Duration::from_secs(30);
    let cluster = Arc::new(tokio::task::spawn_blocking(PgCluster::start).await.unwrap());
    let names = ["alpha", "beta", "doomed"];
    let endpoints: Vec<(&str, Reply)> = names.iter().map(|n| (*n, ok())).collect();
    let stack = Stack::new(
        &cluster.url("postgres"),
        &endpoints,
        &[("MIN_TRAINING_SAMPLES", "100000")],
    )
    .await;
    let (mut pinger, mut detector, mut alerter) = stack.start_all().await;
    let all = [&pinger, &detector, &alerter];

    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop()).await.unwrap();
    let stopped_at = Utc::now();
    let outage_end = Instant::now() + OUTAGE;
    // An API goes down while the database is down.
    stack.web.set("/doomed", down());

    // Every service says so on /healthz, and keeps saying so while the
    // outage lasts.
    for s in all {
        s.wait_health(503, Duration::from_secs(20)).await;
    }
    let mut seen_healthy = Vec::new();
    while Instant::now() < outage_end {
        for s in all {
            match s.health().await {
                Some((503, body)) => assert!(body.contains("database"), "{}: {body}", s.label()),
                other => seen_healthy.push(format!("{}: {other:?}", s.label())),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        seen_healthy.is_empty(),
        "/healthz during the outage: {seen_healthy:?}"
    );
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.restart())
        .await
        .unwrap();
    let restarted_at = Utc::now();

    // Each reconnects by itself.
    for s in all {
        s.wait_health(200, Duration::from_secs(60)).await;
    }
    // The outage's alerts go out once the database is back.
    wait_mails(&stack, "[apimon] DOWN: doomed", 1, &all).await;

    stop(&mut pinger);
    let all = [&pinger, &detector, &alerter];
    stack.wait_settled(&all, Duration::from_secs(60)).await;
    stop(&mut detector);
    stop(&mut alerter);

    // The pinger's buffer was written: every check is a row, the checks
    // went on during the outage.
    for name in names {
        let rows = stack.rows(name).await;
        assert_eq!(rows.len(), stack.hits(name), "{name}: every check is a row");
        let during = rows
            .iter()
            .filter(|(ts, _)| *ts > stopped_at && *ts < restarted_at)
            .count();
        assert!(
            during as f64 >= OUTAGE.as_secs_f64() * 0.8,
            "{name}: only {during} checks written from the outage"
        );
        let widest = gaps(&rows).into_iter().fold(0.0, f64::max);
        assert!(widest < 2.5, "{name}: a {widest} s hole in the series");
    }
    // The detector scored all of it.
    assert_failures_scored_by_the_rule(&stack, "doomed").await;
    // The alerter sent each message once.
    stack.assert_each_email_sent_once().await;
    let mails = stack.smtp.mails();
    assert_eq!(count(&mails, "[apimon] DOWN: doomed"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_outage_keeps_notifications_in_the_outbox_until_they_go_out_once() {
    let t = apimon_testkit::fresh_database().await;
    let mut stack = Stack::new(
        &t.url,
        &[("alpha", ok()), ("doomed", ok())],
        &[("MIN_TRAINING_SAMPLES", "100000")],
    )
    .await;
    let (mut pinger, mut detector, mut alerter) = stack.start_all().await;
    let all = [&pinger, &detector, &alerter];

    // (A first status report, of the day before, may be out already.)
    let sent_before = stack.smtp.mails().len();
    stack.smtp.stop();
    stack.web.set("/doomed", down());
    // The down incident's notification waits in the outbox, tried and
    // failed at least twice.
    let waiting = eventually(WAIT, || async {
        stack
            .scalar(
                "SELECT count(*) FROM notifications WHERE api_name = 'doomed'
                 AND kind = 'incident_open' AND state = 'pending'
                 AND attempts >= 2 AND last_error IS NOT NULL",
            )
            .await
            == 1
    })
    .await;
    assert!(
        waiting,
        "notifications waiting in the outbox: {:?}; logs:\n{}",
        stack.emails_queued().await,
        logs(&all)
    );
    assert_eq!(
        stack.smtp.mails().len(),
        sent_before,
        "nothing sent during the outage"
    );

    stack.smtp.restart().await;
    wait_mails(&stack, "[apimon] DOWN: doomed", 1, &all).await;
    stack.web.set("/doomed", ok());
    wait_mails(&stack, "[apimon] RESOLVED: doomed down", 1, &all).await;

    stop(&mut pinger);
    let all = [&pinger, &detector, &alerter];
    stack.wait_settled(&all, Duration::from_secs(60)).await;
    stop(&mut alerter);
    stop(&mut detector);

    stack.assert_each_email_sent_once().await;
    let mails = stack.smtp.mails();
    for s in ["[apimon] DOWN: doomed", "[apimon] RESOLVED: doomed down"] {
        assert_eq!(count(&mails, s), 1, "{s}");
    }
    let retried = stack
        .scalar(
            "SELECT count(*) FROM notifications WHERE api_name = 'doomed'
             AND kind = 'incident_open' AND state = 'sent' AND attempts >= 3",
        )
        .await;
    assert_eq!(retried, 1, "sent after its failed attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_each_service_check_score_and_send_everything_exactly_once() {
    let names = [
        "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "doomed",
    ];
    for i in 0..2 {
        let shard = Shard { index: i, count: 2 };
        assert!(
            names.iter().any(|n| shard.owns(n)),
            "shard {shard} owns none of the endpoints: pick other names"
        );
    }
    let t = apimon_testkit::fresh_database().await;
    let endpoints: Vec<(&str, Reply)> = names.iter().map(|n| (*n, ok())).collect();
    let stack = Stack::new(
        &t.url,
        &endpoints,
        &[
            ("MIN_TRAINING_SAMPLES", "100000"),
            ("ALERT_CHECK_INTERVAL", "5"),
            ("STATUS_REPORT_WHEN_HEALTHY", "true"),
        ],
    )
    .await;
    let mut pingers: Vec<Service> = (0..2)
        .map(|i| {
            let shard = format!("{i}/2");
            stack.start(
                "pinger",
                &format!("pinger-{i}"),
                &[("PINGER_SHARD", &shard)],
            )
        })
        .collect();
    stack.wait_registered(&pingers[0]).await;
    let mut detectors: Vec<Service> = (0..2)
        .map(|i| {
            let shard = format!("{i}/2");
            stack.start(
                "detector",
                &format!("detector-{i}"),
                &[("DETECTOR_SHARD", &shard)],
            )
        })
        .collect();
    let mut alerters: Vec<Service> = (0..2)
        .map(|i| stack.start("alerter", &format!("alerter-{i}"), &[]))
        .collect();
    let all: Vec<&Service> = pingers.iter().chain(&detectors).chain(&alerters).collect();
    for s in &all {
        s.wait_health(200, Duration::from_secs(60)).await;
    }

    stack.web.set("/doomed", down());
    wait_mails(&stack, "[apimon] DOWN: doomed", 1, &all).await;
    stack.web.set("/doomed", ok());
    wait_mails(&stack, "[apimon] RESOLVED: doomed down", 1, &all).await;
    // Status reports from both alerters' loops: at least two periods.
    let reports = eventually(WAIT, || async {
        stack
            .smtp
            .mails()
            .iter()
            .filter(|m| helpers::subject(m).starts_with("[apimon] Status:"))
            .count()
            >= 2
    })
    .await;
    assert!(reports, "two status reports within {WAIT:?}");

    for p in &mut pingers {
        stop(p);
    }
    let all: Vec<&Service> = pingers.iter().chain(&detectors).chain(&alerters).collect();
    stack.wait_settled(&all, Duration::from_secs(60)).await;
    let mut scored = Vec::new();
    for d in &detectors {
        scored.push(d.metric("apimon_rows_scored_total").await.unwrap_or(0.0) as i64);
    }
    for s in detectors.iter_mut().chain(alerters.iter_mut()) {
        stop(s);
    }

    // Every endpoint checked once per interval.
    for name in names {
        let rows = stack.rows(name).await;
        assert_eq!(rows.len(), stack.hits(name), "{name}: every check is a row");
        // Two replicas checking it would make about twice as many.
        let span = (rows.last().unwrap().0 - rows[0].0).num_milliseconds() as f64 / 1000.0;
        let expected = (span / INTERVAL.as_secs_f64()).round() as i64 + 1;
        assert!(
            (rows.len() as i64 - expected).abs() <= 1,
            "{name}: {} checks in {span} s",
            rows.len()
        );
    }
    // Every observation scored once, by one replica or the other.
    let total = stack.scalar("SELECT count(*) FROM api_metrics").await;
    assert!(
        scored.iter().all(|n| *n > 0),
        "both detectors scored: {scored:?}"
    );
    assert_eq!(scored.iter().sum::<i64>(), total, "rows scored {scored:?}");
    assert_failures_scored_by_the_rule(&stack, "doomed").await;
    // Every alert and report sent once.
    stack.assert_each_email_sent_once().await;
    let mails = stack.smtp.mails();
    for s in ["[apimon] DOWN: doomed", "[apimon] RESOLVED: doomed down"] {
        assert_eq!(count(&mails, s), 1, "{s}");
    }
    assert_eq!(
        stack
            .scalar("SELECT count(*) FROM notifications WHERE kind = 'report'")
            .await,
        stack.scalar("SELECT count(*) FROM status_reports").await,
        "one report per period"
    );
}
