//! End to end (issue 6): local HTTP endpoints, PostgreSQL, an SMTP server,
//! and the pinger, detector and alerter binaries as separate processes with
//! a 1 s interval. After a warm-up one endpoint becomes ten times slower and
//! another stops answering.
//!
//! Every requirement is checked and the unmet ones are reported together,
//! so that one failure does not hide the state of the others.

#![allow(clippy::unwrap_used)]

mod helpers;

use std::time::Duration;

use apimon_testkit::http::Reply;
use apimon_testkit::procs::eventually;
use apimon_testkit::smtp::Mail;
use chrono::Utc;
use helpers::{count, logs, subject, text, Stack};

const HEALTHY: [&str; 6] = ["ok1", "ok2", "ok3", "ok4", "ok5", "ok6"];

/// Whether some status report lists `slow` as slow and `dead` as down.
fn report_lists_slow_and_down(m: &Mail) -> bool {
    if !subject(m).starts_with("[apimon] Status:") {
        return false;
    }
    let t = text(m);
    let listed = |label: &str, api: &str| {
        t.lines()
            .find_map(|l| l.strip_prefix(label))
            .is_some_and(|names| names.split(", ").any(|n| n.trim() == api))
    };
    listed("Slow: ", "slow") && listed("Down: ", "dead")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_and_a_dead_endpoint_are_detected_alerted_and_reported() {
    let t = apimon_testkit::fresh_database().await;
    let endpoints: Vec<(&str, Reply)> = HEALTHY
        .iter()
        .chain(["slow", "dead"].iter())
        .map(|n| (*n, Reply::delayed(40)))
        .collect();
    let stack = Stack::new(
        &t.url,
        &endpoints,
        &[
            ("MIN_TRAINING_SAMPLES", "40"),
            ("ALERT_CHECK_INTERVAL", "20"),
            ("STATUS_REPORT_WHEN_HEALTHY", "false"),
        ],
    )
    .await;
    let (pinger, detector, alerter) = stack.start_all().await;
    let services = [&pinger, &detector, &alerter];

    // Warm-up: a model for every API.
    let trained = eventually(Duration::from_secs(120), || async {
        stack.scalar("SELECT count(*) FROM models").await == endpoints.len() as i64
    })
    .await;
    assert!(
        trained,
        "no model for every API after 120 s; logs:\n{}",
        logs(&services)
    );

    let fault_at = Utc::now();
    stack.web.set("/slow", Reply::delayed(400));
    stack.web.set("/dead", Reply::Close);
    let mut unmet: Vec<String> = Vec::new();

    // Critical anomaly rows for both, within a bounded time.
    let critical = |api: &'static str| {
        let pool = stack.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                r#"SELECT count(*) FROM anomalies
                   WHERE api_name = $1 AND severity = 'critical' AND "timestamp" > $2"#,
            )
            .bind(api)
            .bind(fault_at)
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
                > 0
        }
    };
    eventually(Duration::from_secs(30), || async {
        critical("slow").await && critical("dead").await
    })
    .await;
    for api in ["slow", "dead"] {
        if !critical(api).await {
            let worst: Option<(f64, String)> = sqlx::query_as(
                r#"SELECT anomaly_score, severity FROM anomalies
                   WHERE api_name = $1 AND "timestamp" > $2 ORDER BY anomaly_score LIMIT 1"#,
            )
            .bind(api)
            .bind(fault_at)
            .fetch_optional(&stack.pool)
            .await
            .unwrap();
            unmet.push(format!(
                "no critical anomaly for `{api}` within 30 s of the fault \
                 (lowest score since: {worst:?})"
            ));
        }
    }

    // The notifications: one incident each, not one per anomaly.
    let expected = ["[apimon] DOWN: dead", "[apimon] SLOW: slow"];
    let mails = stack
        .smtp
        .wait_for(Duration::from_secs(30), |m| {
            expected.iter().all(|s| count(m, s) > 0)
        })
        .await;
    for s in expected {
        if count(&mails, s) == 0 {
            unmet.push(format!("no email `{s}` within 30 s"));
        }
    }
    let incidents: Vec<(String, String)> =
        sqlx::query_as("SELECT api_name, kind FROM incidents ORDER BY id")
            .fetch_all(&stack.pool)
            .await
            .unwrap();
    if incidents
        != [
            ("dead".to_string(), "down".to_string()),
            ("slow".to_string(), "slow".to_string()),
        ]
        && incidents
            != [
                ("slow".to_string(), "slow".to_string()),
                ("dead".to_string(), "down".to_string()),
            ]
    {
        unmet.push(format!(
            "incidents: {incidents:?}, want one down for `dead` and one slow for `slow`"
        ));
    }

    // A status report that lists the slow and the down API.
    let mails = stack
        .smtp
        .wait_for(Duration::from_secs(60), |m| {
            m.iter().any(report_lists_slow_and_down)
        })
        .await;
    if !mails.iter().any(report_lists_slow_and_down) {
        let reports: Vec<String> = mails
            .iter()
            .filter(|m| subject(m).starts_with("[apimon] Status:"))
            .map(|m| format!("{}\n{}", subject(m), text(m)))
            .collect();
        unmet.push(format!(
            "no status report listing `slow` as slow and `dead` as down within 60 s; reports: {reports:#?}"
        ));
    }

    // The endpoint comes back: a recovery message.
    stack.web.set("/dead", Reply::delayed(40));
    let mails = stack
        .smtp
        .wait_for(Duration::from_secs(30), |m| {
            count(m, "[apimon] RESOLVED: dead down") > 0
        })
        .await;
    if count(&mails, "[apimon] RESOLVED: dead down") == 0 {
        unmet.push("no recovery message for `dead` within 30 s of its return".into());
    }

    // Exactly one opening and one recovery; nothing for the healthy ones.
    let mails = stack.smtp.mails();
    for s in expected
        .iter()
        .copied()
        .chain(["[apimon] RESOLVED: dead down"])
    {
        let n = count(&mails, s);
        if n > 1 {
            unmet.push(format!("{n} emails `{s}`, want one"));
        }
    }
    for h in HEALTHY {
        let n = mails
            .iter()
            .filter(|m| {
                !subject(m).starts_with("[apimon] Status:")
                    && text(m).contains(&format!("API: {h}\n"))
            })
            .count();
        if n > 0 {
            unmet.push(format!("{n} notifications about the healthy `{h}`"));
        }
    }

    let subjects: Vec<String> = mails.iter().map(subject).collect();
    assert!(
        unmet.is_empty(),
        "unmet:\n- {}\nemails received: {subjects:#?}\nlogs:\n{}",
        unmet.join("\n- "),
        logs(&services)
    );
}
