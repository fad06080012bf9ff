//! The alerter against a real PostgreSQL, a real SMTP server on loopback
//! and local webhook receivers.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use alerter::config::AlerterConfig;
use apimon_core::db::{self, anomalies::AnomalyRow, metrics::MetricRow, notifications};
use apimon_core::{DbConfig, Env};
use apimon_testkit::http::{HttpServer, Reply};
use apimon_testkit::smtp::{Mail, SmtpServer};
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::PgPool;
use tokio::sync::oneshot;

struct Db {
    url: String,
    pool: PgPool,
}

async fn database(apis: &[&str]) -> Db {
    let t = apimon_testkit::fresh_database().await;
    let pool = db::connect(&DbConfig::from_url(&t.url).unwrap())
        .await
        .unwrap();
    db::migrate(&pool).await.unwrap();
    let toml: String = apis
        .iter()
        .map(|n| format!("[[api]]\nname = \"{n}\"\nurl = \"http://{n}.test/\"\n"))
        .collect();
    let eps = apimon_core::apis::parse(&toml, "test", &Env::default()).unwrap();
    db::endpoints::upsert(&pool, &eps).await.unwrap();
    Db { url: t.url, pool }
}

fn env(db: &Db, smtp: Option<&SmtpServer>, extra: &[(&str, String)]) -> AlerterConfig {
    let mut pairs: Vec<(&str, String)> = vec![
        ("DATABASE_URL", db.url.clone()),
        ("ALERT_POLL_INTERVAL", "200ms".into()),
        ("ALERT_RETRY_BASE", "200ms".into()),
        ("ALERT_RETRY_MAX_DELAY", "500ms".into()),
        ("ALERT_CHECK_INTERVAL", "1d".into()),
        ("DASHBOARD_URL", "http://grafana.test:3000".into()),
    ];
    if let Some(s) = smtp {
        pairs.extend([
            ("ALERT_EMAIL_FROM", "apimon@example.test".to_string()),
            (
                "ALERT_EMAIL_TO",
                "ops@example.test, oncall@example.test".into(),
            ),
            ("ALERT_EMAIL_PASSWORD", "app-password".into()),
            ("SMTP_HOST", "127.0.0.1".into()),
            ("SMTP_PORT", s.port().to_string()),
            ("SMTP_TLS", "none".into()),
        ]);
    }
    pairs.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    AlerterConfig::from_env(&Env::from_pairs(pairs)).unwrap()
}

struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn start(cfg: AlerterConfig) -> Running {
    let pool = db::lazy_pool(&cfg.db);
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(alerter::service::run(cfg, pool, async {
        let _ = rx.await;
    }));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

fn anomaly(api: &str, ts: DateTime<Utc>, severity: &str, details: &str) -> AnomalyRow {
    AnomalyRow {
        timestamp: ts.trunc_subsecs(6),
        api_name: api.into(),
        response_time_ms: Some(1000.0),
        anomaly_score: match severity {
            "critical" => -0.3,
            "high" => -0.15,
            _ => -0.05,
        },
        severity: severity.into(),
        details: details.into(),
        features: Some(apimon_core::features::Features::from_array([
            1000.0, 100.0, 5.0, 7.0, 900.0, 9.0, 12.0, 2.0,
        ])),
        model_version: Some(1),
    }
}

async fn insert_anomalies(pool: &PgPool, rows: &[AnomalyRow]) {
    let mut tx = pool.begin().await.unwrap();
    db::anomalies::insert(&mut tx, rows).await.unwrap();
    tx.commit().await.unwrap();
}

fn metric(api: &str, ts: DateTime<Utc>, rt: Option<f64>) -> MetricRow {
    MetricRow {
        timestamp: ts.trunc_subsecs(6),
        api_name: api.into(),
        url: format!("http://{api}.test/"),
        response_time_ms: rt,
        status_code: rt.map(|_| 200),
        success: rt.is_some(),
        response_size_bytes: rt.map(|_| 1),
        error_kind: rt.is_none().then(|| "connect".into()),
        error_message: rt.is_none().then(|| "connection refused <script>".into()),
    }
}

fn with_subject<'a>(mails: &'a [Mail], needle: &str) -> Vec<&'a Mail> {
    mails
        .iter()
        .filter(|m| subject(m).contains(needle))
        .collect()
}

fn subject(m: &Mail) -> String {
    let parsed = mailparse::parse_mail(m.data.as_bytes()).unwrap();
    parsed
        .headers
        .iter()
        .find(|h| h.get_key() == "Subject")
        .map(|h| h.get_value())
        .unwrap_or_default()
}

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_critical_anomaly_sends_one_multipart_email_with_escaped_values() {
    let db = database(&["api-a"]).await;
    let smtp = SmtpServer::start().await;
    let run = start(env(&db, Some(&smtp), &[]));
    let t0 = Utc::now();
    insert_anomalies(
        &db.pool,
        &[
            anomaly("api-a", t0 - chrono::Duration::seconds(30), "medium", "meh"),
            anomaly(
                "api-a",
                t0,
                "critical",
                "<script>alert('pwned')</script> & more",
            ),
        ],
    )
    .await;
    let mails = smtp
        .wait_for(WAIT, |m| !with_subject(m, "CRITICAL").is_empty())
        .await;
    let alerts = with_subject(&mails, "CRITICAL anomaly: api-a");
    assert_eq!(alerts.len(), 1, "one alert, none for the medium anomaly");
    let m = alerts[0];
    assert_eq!(m.from, "apimon@example.test");
    assert_eq!(m.to, ["ops@example.test", "oncall@example.test"]);
    assert_eq!(
        m.user.as_deref(),
        Some("apimon@example.test"),
        "logged in as ALERT_EMAIL_FROM"
    );
    let parsed = mailparse::parse_mail(m.data.as_bytes()).unwrap();
    assert_eq!(parsed.ctype.mimetype, "multipart/alternative");
    let text = parsed
        .subparts
        .iter()
        .find(|p| p.ctype.mimetype == "text/plain")
        .unwrap()
        .get_body()
        .unwrap();
    let html = parsed
        .subparts
        .iter()
        .find(|p| p.ctype.mimetype == "text/html")
        .unwrap()
        .get_body()
        .unwrap();
    assert!(
        text.contains("<script>alert('pwned')</script>"),
        "plain text keeps the text: {text}"
    );
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");
    assert!(
        text.contains("Observed: 1000 ms") && text.contains("100 ms mean of the last 10"),
        "{text}"
    );
    assert!(
        text.contains("http://grafana.test:3000/d/apimon/api-monitoring?var-api=api-a"),
        "{text}"
    );
    let rows = notifications::all(&db.pool).await.unwrap();
    let alert = rows.iter().find(|n| n.kind == "alert").unwrap();
    assert_eq!((alert.state.as_str(), alert.attempts), ("sent", 1));
    run.stop().await;
}

#[tokio::test]
async fn the_cooldown_holds_back_and_counts_then_the_next_alert_lists_them() {
    let db = database(&["api-a"]).await;
    let smtp = SmtpServer::start().await;
    let run = start(env(&db, Some(&smtp), &[]));
    let t0 = Utc::now() - chrono::Duration::minutes(5);
    insert_anomalies(&db.pool, &[anomaly("api-a", t0, "critical", "first")]).await;
    smtp.wait_for(WAIT, |m| with_subject(m, "CRITICAL").len() == 1)
        .await;
    // Two more within the 600 s cooldown: held back, counted.
    insert_anomalies(
        &db.pool,
        &[
            anomaly(
                "api-a",
                t0 + chrono::Duration::seconds(60),
                "critical",
                "second",
            ),
            anomaly(
                "api-a",
                t0 + chrono::Duration::seconds(120),
                "critical",
                "third",
            ),
        ],
    )
    .await;
    let held = || async {
        sqlx::query_scalar::<_, i32>("SELECT suppressed FROM alert_state WHERE api_name = 'api-a'")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    let start = std::time::Instant::now();
    while held().await < 2 && start.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held().await, 2);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        with_subject(&smtp.mails(), "CRITICAL").len(),
        1,
        "no alert during the cooldown"
    );
    // After the cooldown: a new alert that lists the two held back.
    insert_anomalies(
        &db.pool,
        &[anomaly(
            "api-a",
            t0 + chrono::Duration::seconds(700),
            "critical",
            "fourth",
        )],
    )
    .await;
    let mails = smtp
        .wait_for(WAIT, |m| with_subject(m, "CRITICAL").len() == 2)
        .await;
    let second = with_subject(&mails, "CRITICAL")[1];
    let parsed = mailparse::parse_mail(second.data.as_bytes()).unwrap();
    let text = parsed.subparts[0].get_body().unwrap();
    assert!(
        text.contains("2 more anomalies during the cooldown"),
        "{text}"
    );
    assert!(text.contains("Details: fourth"), "{text}");
    run.stop().await;
}

#[tokio::test]
async fn an_smtp_outage_loses_nothing_and_delivers_each_message_once() {
    let db = database(&["api-a"]).await;
    let mut smtp = SmtpServer::start().await;
    smtp.stop();
    let run = start(env(&db, Some(&smtp), &[]));
    insert_anomalies(
        &db.pool,
        &[anomaly("api-a", Utc::now(), "critical", "while down")],
    )
    .await;
    // Failed attempts are visible in the outbox.
    let start = std::time::Instant::now();
    let failing = loop {
        let rows = notifications::all(&db.pool).await.unwrap();
        if let Some(n) = rows.iter().find(|n| n.kind == "alert" && n.attempts >= 2) {
            break n.clone();
        }
        assert!(
            start.elapsed() < WAIT,
            "no failed attempts recorded: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failing.state, "pending");
    assert!(
        failing.last_error.as_deref().unwrap_or("").contains("SMTP"),
        "{:?}",
        failing.last_error
    );
    assert!(smtp.mails().is_empty());
    smtp.restart().await;
    let mails = smtp
        .wait_for(WAIT, |m| !with_subject(m, "CRITICAL").is_empty())
        .await;
    assert_eq!(with_subject(&mails, "CRITICAL").len(), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        with_subject(&smtp.mails(), "CRITICAL").len(),
        1,
        "delivered exactly once"
    );
    let rows = notifications::all(&db.pool).await.unwrap();
    let sent = rows.iter().find(|n| n.kind == "alert").unwrap();
    assert_eq!(sent.state, "sent");
    run.stop().await;
}

#[tokio::test]
async fn two_alerters_at_once_send_one_email_per_alert() {
    let db = database(&["api-a", "api-b", "api-c"]).await;
    let smtp = SmtpServer::start().await;
    let a = start(env(&db, Some(&smtp), &[]));
    let b = start(env(&db, Some(&smtp), &[]));
    let now = Utc::now();
    for api in ["api-a", "api-b", "api-c"] {
        insert_anomalies(&db.pool, &[anomaly(api, now, "critical", "x")]).await;
    }
    smtp.wait_for(WAIT, |m| with_subject(m, "CRITICAL").len() >= 3)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails = smtp.mails();
    for api in ["api-a", "api-b", "api-c"] {
        assert_eq!(
            with_subject(&mails, &format!("CRITICAL anomaly: {api}")).len(),
            1,
            "{api}"
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_down_api_gets_a_down_alert_and_then_a_recovery_message() {
    let db = database(&["flaky"]).await;
    let smtp = SmtpServer::start().await;
    let run = start(env(&db, Some(&smtp), &[]));
    let t0 = Utc::now() - chrono::Duration::minutes(2);
    let mut rows: Vec<MetricRow> = (0..5)
        .map(|i| metric("flaky", t0 + chrono::Duration::seconds(i), Some(100.0)))
        .collect();
    rows.extend((5..8).map(|i| metric("flaky", t0 + chrono::Duration::seconds(i), None)));
    db::metrics::insert_batch(&db.pool, &rows).await.unwrap();
    let mails = smtp
        .wait_for(WAIT, |m| !with_subject(m, "DOWN: flaky").is_empty())
        .await;
    let down = with_subject(&mails, "DOWN: flaky");
    assert_eq!(down.len(), 1);
    let parsed = mailparse::parse_mail(down[0].data.as_bytes()).unwrap();
    let text = parsed.subparts[0].get_body().unwrap();
    assert!(text.contains("Failed checks in a row: 3"), "{text}");
    assert!(
        text.contains(&format!(
            "Down since: {}",
            (t0 + chrono::Duration::seconds(5)).format("%Y-%m-%d %H:%M:%S")
        )),
        "{text}"
    );
    let html = parsed.subparts[1].get_body().unwrap();
    assert!(
        !html.contains("<script>"),
        "the remote error is escaped: {html}"
    );
    // It answers again.
    db::metrics::insert_batch(
        &db.pool,
        &[metric(
            "flaky",
            t0 + chrono::Duration::seconds(9),
            Some(90.0),
        )],
    )
    .await
    .unwrap();
    let mails = smtp
        .wait_for(WAIT, |m| !with_subject(m, "RECOVERED: flaky").is_empty())
        .await;
    assert_eq!(with_subject(&mails, "RECOVERED: flaky").len(), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        with_subject(&smtp.mails(), "DOWN: flaky").len(),
        1,
        "no second down alert"
    );
    run.stop().await;
}

#[tokio::test]
async fn a_status_report_lists_one_slow_one_down_and_six_healthy_apis() {
    let names = ["a1", "a2", "a3", "a4", "a5", "a6", "slowpoke", "deadbeef"];
    let db = database(&names).await;
    let smtp = SmtpServer::start().await;
    let cfg = env(&db, Some(&smtp), &[("ALERT_CHECK_INTERVAL", "300".into())]);
    // The last closed 5-minute period, and an hour of history before it.
    let now = Utc::now();
    let end = alerter::report::last_period_end(now, Duration::from_secs(300));
    let begin = end - chrono::Duration::seconds(300);
    let mut rows = Vec::new();
    for n in names {
        for i in 0..240 {
            rows.push(metric(
                n,
                begin - chrono::Duration::seconds(15 * (i + 1)),
                Some(100.0 + (i % 10) as f64),
            ));
        }
        for i in 0..20 {
            let ts = begin + chrono::Duration::seconds(15 * i);
            let rt = match n {
                "slowpoke" => Some(400.0),
                "deadbeef" => None,
                _ => Some(100.0 + (i % 10) as f64),
            };
            rows.push(metric(n, ts, rt));
        }
    }
    db::metrics::insert_batch(&db.pool, &rows).await.unwrap();
    insert_anomalies(
        &db.pool,
        &[anomaly(
            "slowpoke",
            begin + chrono::Duration::seconds(30),
            "high",
            "slow",
        )],
    )
    .await;
    let mut baselines = alerter::baseline::Baselines::new(cfg.baseline_window);
    let report = alerter::report::build(&db.pool, &cfg, &mut baselines, begin, end)
        .await
        .unwrap();
    let status = |n: &str| report.rows.iter().find(|r| r.api_name == n).unwrap().status;
    use alerter::compose::Status;
    assert_eq!(status("slowpoke"), Status::Slow);
    assert_eq!(status("deadbeef"), Status::Down);
    for n in &names[..6] {
        assert_eq!(status(n), Status::Healthy, "{n}");
    }
    let slow = report
        .rows
        .iter()
        .find(|r| r.api_name == "slowpoke")
        .unwrap();
    assert_eq!((slow.checks, slow.successes, slow.high), (20, 20, 1));
    assert_eq!(slow.p95_ms, Some(400.0));
    assert!((slow.baseline.unwrap().p95_ms - 109.0).abs() < 1.0);
    let dead = report
        .rows
        .iter()
        .find(|r| r.api_name == "deadbeef")
        .unwrap();
    assert_eq!((dead.checks, dead.successes), (20, 0));

    // The report of that period is written once (a second call finds it
    // done) and the service sends it.
    let at = end + chrono::Duration::seconds(10);
    assert!(
        alerter::report::maybe_report(&db.pool, &cfg, &mut baselines, at)
            .await
            .unwrap()
    );
    assert!(
        !alerter::report::maybe_report(&db.pool, &cfg, &mut baselines, at)
            .await
            .unwrap()
    );
    let run = start(cfg);
    let period = format!(
        "Period: {} to {}",
        begin.format("%Y-%m-%d %H:%M:%S UTC"),
        end.format("%Y-%m-%d %H:%M:%S UTC")
    );
    let body = |m: &Mail| {
        let parsed = mailparse::parse_mail(m.data.as_bytes()).unwrap();
        parsed.subparts[0].get_body().unwrap().replace("\r\n", "\n")
    };
    let mails = smtp
        .wait_for(WAIT, |m| m.iter().any(|m| body(m).contains(&period)))
        .await;
    let reports: Vec<&Mail> = mails.iter().filter(|m| body(m).contains(&period)).collect();
    assert_eq!(reports.len(), 1);
    assert_eq!(
        subject(reports[0]),
        "[apimon] Status: 1 down, 1 slow, 6 healthy"
    );
    let text = body(reports[0]);
    assert!(text.contains("Slow: slowpoke\nDown: deadbeef\n"), "{text}");
    assert!(text.contains("slowpoke | slow | 20 | 100.0% |"), "{text}");
    assert!(text.contains("deadbeef | down | 20 | 0.0% |"), "{text}");
    run.stop().await;
}

#[tokio::test]
async fn a_report_has_the_baselines_of_young_apis_even_after_an_alert_looked_further_back() {
    let names = ["young", "other"];
    let db = database(&names).await;
    let cfg = env(&db, None, &[("ALERT_CHECK_INTERVAL", "300".into())]);
    let end = alerter::report::last_period_end(Utc::now(), Duration::from_secs(300));
    let begin = end - chrono::Duration::seconds(300);
    // Ten minutes of history at 100 ms, then a period at 400 ms.
    let mut rows = Vec::new();
    for n in names {
        for i in 0..40 {
            rows.push(metric(
                n,
                begin - chrono::Duration::seconds(15 * (i + 1)),
                Some(100.0),
            ));
        }
        for i in 0..20 {
            rows.push(metric(
                n,
                begin + chrono::Duration::seconds(15 * i),
                Some(400.0),
            ));
        }
    }
    db::metrics::insert_batch(&db.pool, &rows).await.unwrap();
    let mut baselines = alerter::baseline::Baselines::new(cfg.baseline_window);
    // An alert judges against the history 15 minutes before it: none yet.
    let early = begin - chrono::Duration::minutes(15);
    assert!(baselines
        .get(&db.pool, "young", early)
        .await
        .unwrap()
        .is_none());

    let report = alerter::report::build(&db.pool, &cfg, &mut baselines, begin, end)
        .await
        .unwrap();
    for r in &report.rows {
        assert_eq!(r.baseline.map(|b| b.p95_ms), Some(100.0), "{}", r.api_name);
        assert_eq!(r.status, alerter::compose::Status::Slow, "{}", r.api_name);
    }
    // And a later alert finds the history that came in since.
    assert!(baselines
        .get(&db.pool, "young", begin)
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn webhooks_receive_slack_teams_and_generic_json() {
    let db = database(&["api-a"]).await;
    let hooks = HttpServer::start().await;
    for p in ["/slack", "/teams", "/hook"] {
        hooks.set(p, Reply::ok());
    }
    let cfg = env(
        &db,
        None,
        &[
            ("SLACK_WEBHOOK_URL", hooks.url("/slack")),
            ("TEAMS_WEBHOOK_URL", hooks.url("/teams")),
            ("ALERT_WEBHOOK_URL", hooks.url("/hook")),
        ],
    );
    let run = start(cfg);
    insert_anomalies(
        &db.pool,
        &[anomaly("api-a", Utc::now(), "critical", "a < b & c")],
    )
    .await;
    let start = std::time::Instant::now();
    while ["/slack", "/teams", "/hook"]
        .iter()
        .any(|p| hooks.hits(p) == 0)
        && start.elapsed() < WAIT
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = |p: &str| -> serde_json::Value {
        let r = hooks.requests().into_iter().find(|r| r.path == p).unwrap();
        assert_eq!(r.method, "POST");
        serde_json::from_slice(&r.body).unwrap()
    };
    let slack = body("/slack");
    assert!(
        slack["text"].as_str().unwrap().contains("a &lt; b &amp; c"),
        "{slack}"
    );
    let teams = body("/teams");
    assert_eq!(teams["@type"], "MessageCard");
    assert!(teams["title"]
        .as_str()
        .unwrap()
        .contains("CRITICAL anomaly: api-a"));
    let hook = body("/hook");
    assert_eq!(hook["kind"], "alert");
    assert_eq!(hook["api"], "api-a");
    assert_eq!(hook["severity"], "critical");
    assert_eq!(hook["details"], "a < b & c");
    run.stop().await;
}

#[tokio::test]
async fn a_failing_webhook_is_retried_and_others_are_not_held_up() {
    let db = database(&["api-a"]).await;
    let hooks = HttpServer::start().await;
    hooks.set("/hook", Reply::status(503));
    let smtp = SmtpServer::start().await;
    let cfg = env(
        &db,
        Some(&smtp),
        &[("ALERT_WEBHOOK_URL", hooks.url("/hook"))],
    );
    let run = start(cfg);
    insert_anomalies(&db.pool, &[anomaly("api-a", Utc::now(), "critical", "x")]).await;
    smtp.wait_for(WAIT, |m| !m.is_empty()).await;
    let start = std::time::Instant::now();
    while hooks.hits("/hook") < 3 && start.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = notifications::all(&db.pool).await.unwrap();
    let hook = rows.iter().find(|n| n.channel == "webhook").unwrap();
    assert_eq!(hook.state, "pending");
    assert!(hook.attempts >= 2);
    assert!(hook.last_error.as_deref().unwrap().contains("503"));
    hooks.set("/hook", Reply::ok());
    let start = std::time::Instant::now();
    loop {
        let rows = notifications::all(&db.pool).await.unwrap();
        if rows.iter().all(|n| n.state == "sent") {
            break;
        }
        assert!(start.elapsed() < WAIT, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.stop().await;
}

#[tokio::test]
async fn without_channels_notifications_are_recorded_as_skipped() {
    let db = database(&["api-a"]).await;
    let run = start(env(&db, None, &[]));
    insert_anomalies(&db.pool, &[anomaly("api-a", Utc::now(), "critical", "x")]).await;
    let start = std::time::Instant::now();
    loop {
        let rows = notifications::all(&db.pool).await.unwrap();
        if let Some(n) = rows.iter().find(|n| n.kind == "alert") {
            assert_eq!((n.channel.as_str(), n.state.as_str()), ("none", "skipped"));
            break;
        }
        assert!(start.elapsed() < WAIT);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.stop().await;
}

fn alerter_binary(db: &Db, smtp: &SmtpServer) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_alerter"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("ALERT_EMAIL_FROM", "apimon@example.test")
        .env("ALERT_EMAIL_TO", "ops@example.test")
        .env("ALERT_EMAIL_PASSWORD", "s3cret-app-pass")
        .env("SMTP_HOST", "127.0.0.1")
        .env("SMTP_PORT", smtp.port().to_string())
        .env("SMTP_TLS", "none")
        .env("RUST_LOG", "debug");
    c
}

// Multi-threaded: the binary runs while this test's SMTP server serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_email_and_preview_report_commands_work() {
    let db = database(&["api-a"]).await;
    let smtp = SmtpServer::start().await;
    let out = alerter_binary(&db, &smtp)
        .arg("test-email")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("s3cret-app-pass"),
        "the password never reaches the logs"
    );
    let mails = smtp.wait_for(WAIT, |m| !m.is_empty()).await;
    assert_eq!(subject(&mails[0]), "[apimon] Test message");

    db::metrics::insert_batch(&db.pool, &[metric("api-a", Utc::now(), Some(100.0))])
        .await
        .unwrap();
    let out = alerter_binary(&db, &smtp)
        .arg("preview-report")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("Subject: [apimon] Status:"), "{stdout}");
    assert!(stdout.contains("api-a |"), "{stdout}");
    let out = alerter_binary(&db, &smtp)
        .args(["preview-report", "--html"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("<table"));
    assert_eq!(smtp.mails().len(), 1, "previews send nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_healthz_and_metrics() {
    let db = database(&["api-a"]).await;
    let smtp = SmtpServer::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = alerter_binary(&db, &smtp)
        .env("ALERTER_HTTP_PORT", port.to_string())
        .env("HTTP_BIND", "127.0.0.1")
        .env("ALERT_POLL_INTERVAL", "200ms")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let start = std::time::Instant::now();
    loop {
        if matches!(reqwest::get(format!("{base}/healthz")).await, Ok(r) if r.status() == 200) {
            break;
        }
        assert!(start.elapsed() < WAIT, "/healthz never answered 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    insert_anomalies(&db.pool, &[anomaly("api-a", Utc::now(), "critical", "x")]).await;
    smtp.wait_for(WAIT, |m| !with_subject(m, "CRITICAL").is_empty())
        .await;
    let start = std::time::Instant::now();
    loop {
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("apimon_notifications_total{channel=\"email\",state=\"sent\"}") {
            break;
        }
        assert!(start.elapsed() < WAIT, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_alerter_processes_at_once_send_one_email() {
    let db = database(&["api-a", "api-b"]).await;
    let smtp = SmtpServer::start().await;
    let spawn = || {
        alerter_binary(&db, &smtp)
            .env("ALERTER_HTTP_PORT", "0")
            .env("ALERT_POLL_INTERVAL", "200ms")
            .env("ALERT_CHECK_INTERVAL", "1d")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(), spawn());
    // Both running: wait until each has created its progress cursor.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let now = Utc::now();
    insert_anomalies(
        &db.pool,
        &[
            anomaly("api-a", now, "critical", "x"),
            anomaly("api-b", now, "critical", "y"),
        ],
    )
    .await;
    smtp.wait_for(WAIT, |m| with_subject(m, "CRITICAL").len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails = smtp.mails();
    assert_eq!(with_subject(&mails, "CRITICAL anomaly: api-a").len(), 1);
    assert_eq!(with_subject(&mails, "CRITICAL anomaly: api-b").len(), 1);
    for c in [&mut a, &mut b] {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    let (sa, sb) = tokio::task::spawn_blocking(move || (a.wait().unwrap(), b.wait().unwrap()))
        .await
        .unwrap();
    assert!(sa.success() && sb.success());
}
