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
use chrono::{DateTime, Utc};
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

    unmet.extend(facts_against_the_database(&stack, fault_at).await);

    let subjects: Vec<String> = mails.iter().map(subject).collect();
    assert!(
        unmet.is_empty(),
        "unmet:\n- {}\nemails received: {subjects:#?}\nlogs:\n{}",
        unmet.join("\n- "),
        logs(&services)
    );
}

/// Checks each fact of the first DOWN, SLOW and RESOLVED notifications and
/// of a status report against the rows in the database, and prints the
/// mails (`-- --nocapture`) for the record. Returns what did not match.
async fn facts_against_the_database(stack: &Stack, fault_at: DateTime<Utc>) -> Vec<String> {
    let mut unmet = Vec::new();
    let mails = stack.smtp.mails();
    let find = |prefix: &str| {
        mails
            .iter()
            .find(|m| subject(m).starts_with(prefix))
            .map(|m| (subject(m), text(m)))
    };
    let field = |t: &str, key: &str| {
        t.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_string)
    };
    let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let pool = &stack.pool;

    // DOWN: "Since" is the dead endpoint's first failed check.
    if let Some((subj, t)) = find("[apimon] DOWN: dead") {
        println!("--- {subj}\n{t}");
        let first: Option<DateTime<Utc>> = sqlx::query_scalar(
            r#"SELECT min("timestamp") FROM api_metrics
               WHERE api_name = 'dead' AND NOT success AND "timestamp" > $1"#,
        )
        .bind(fault_at)
        .fetch_one(pool)
        .await
        .unwrap();
        let want = first.map(|f| format!("{} (first failed check)", fmt(f)));
        if field(&t, "Since: ") != want {
            unmet.push(format!(
                "DOWN says Since: {:?}; the first failed check is {want:?}",
                field(&t, "Since: ")
            ));
        }
    }

    // SLOW: "Since" is a check of the slowdown, and the median it gives is
    // the median of the checks from then to the opening.
    if let Some((subj, t)) = find("[apimon] SLOW: slow") {
        println!("--- {subj}\n{t}");
        let (started, opened): (DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
            "SELECT started_at, opened_at FROM incidents WHERE api_name = 'slow' AND kind = 'slow'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if field(&t, "Since: ") != Some(format!("{} (first slow check)", fmt(started))) {
            unmet.push(format!(
                "SLOW says Since: {:?}; the incident started at {started}",
                field(&t, "Since: ")
            ));
        }
        let first_rt: Option<f64> = sqlx::query_scalar(
            r#"SELECT response_time_ms FROM api_metrics WHERE api_name = 'slow' AND "timestamp" = $1"#,
        )
        .bind(started)
        .fetch_optional(pool)
        .await
        .unwrap()
        .flatten();
        if started < fault_at - chrono::Duration::seconds(1) || first_rt.is_none_or(|v| v < 200.0) {
            unmet.push(format!(
                "the slow incident started at {started} ({first_rt:?} ms), not at a check of the slowdown (from {fault_at})"
            ));
        }
        let (median, before): (Option<f64>, Option<f64>) = sqlx::query_as(
            r#"SELECT
                 (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY response_time_ms)
                  FROM api_metrics WHERE api_name = 'slow' AND success
                    AND "timestamp" >= $1 AND "timestamp" <= $2),
                 (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY response_time_ms)
                  FROM api_metrics WHERE api_name = 'slow' AND success AND "timestamp" < $3)"#,
        )
        .bind(started)
        .bind(opened)
        .bind(fault_at)
        .fetch_one(pool)
        .await
        .unwrap();
        let latency = field(&t, "Latency: ").unwrap_or_default();
        let said = |prefix: &str| -> Option<f64> {
            let rest = latency.split(prefix).nth(1)?;
            rest.split(" ms").next()?.trim().parse().ok()
        };
        let (said_median, said_base) = (said("median "), said("healthy baseline of "));
        let near = |a: Option<f64>, b: Option<f64>, tol: f64| matches!((a, b), (Some(a), Some(b)) if (a - b).abs() <= tol * b.max(1.0));
        if !near(said_median, median, 0.01) {
            unmet.push(format!(
                "SLOW says median {said_median:?} ms; the checks from its start to its opening have a median of {median:?} ms"
            ));
        }
        if !near(said_base, before, 0.3) {
            unmet.push(format!(
                "SLOW says a baseline of {said_base:?} ms; the checks before the fault have a median of {before:?} ms"
            ));
        }
    }

    // RESOLVED: how long it lasted and when it recovered, as recorded.
    if let Some((subj, t)) = find("[apimon] RESOLVED: dead down") {
        println!("--- {subj}\n{t}");
        let (started, recovered): (DateTime<Utc>, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT started_at, recovered_at FROM incidents WHERE api_name = 'dead' AND kind = 'down'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        let first_ok: Option<DateTime<Utc>> = sqlx::query_scalar(
            r#"SELECT min("timestamp") FROM api_metrics
               WHERE api_name = 'dead' AND success AND "timestamp" > $1"#,
        )
        .bind(started)
        .fetch_one(pool)
        .await
        .unwrap();
        if recovered.is_none() || recovered != first_ok {
            unmet.push(format!(
                "dead recovered_at {recovered:?}, but its first successful check after the outage is {first_ok:?}"
            ));
        }
        if let Some(r) = recovered {
            // The alerter's format for durations under an hour.
            let secs = r.signed_duration_since(started).num_seconds().max(0);
            let lasted = if secs >= 60 {
                format!("{}m {}s", secs / 60, secs % 60)
            } else {
                format!("{secs}s")
            };
            let want = format!("{lasted} (recovered at {})", fmt(r));
            if field(&t, "Lasted: ").as_deref() != Some(want.as_str()) {
                unmet.push(format!(
                    "RESOLVED says Lasted: {:?}; the database gives {want:?}",
                    field(&t, "Lasted: ")
                ));
            }
        }
    }

    // A status report: each API's check count is the database's.
    if let Some(m) = mails.iter().find(|m| report_lists_slow_and_down(m)) {
        let t = text(m);
        println!("--- {}\n{t}", subject(m));
        let period = field(&t, "Period: ").unwrap_or_default();
        let bounds: Vec<DateTime<Utc>> = period
            .split(" to ")
            .filter_map(|p| {
                chrono::NaiveDateTime::parse_from_str(
                    p.trim_end_matches(" UTC"),
                    "%Y-%m-%d %H:%M:%S",
                )
                .ok()
                .map(|n| n.and_utc())
            })
            .collect();
        if let [start, end] = bounds[..] {
            for api in ["slow", "dead", "ok1"] {
                let n: i64 = sqlx::query_scalar(
                    r#"SELECT count(*) FROM api_metrics
                       WHERE api_name = $1 AND "timestamp" >= $2 AND "timestamp" < $3"#,
                )
                .bind(api)
                .bind(start)
                .bind(end)
                .fetch_one(pool)
                .await
                .unwrap();
                let row = t.lines().find(|l| l.starts_with(&format!("{api} | ")));
                let said = row
                    .and_then(|r| r.split(" | ").nth(2))
                    .and_then(|c| c.parse::<i64>().ok());
                if said != Some(n) {
                    unmet.push(format!(
                        "the report gives {api} {said:?} checks for {period}; the database has {n}"
                    ));
                }
            }
        } else {
            unmet.push(format!("the report's period `{period}` does not parse"));
        }
    }
    unmet
}
