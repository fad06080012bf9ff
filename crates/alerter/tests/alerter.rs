//! The alerter against a real PostgreSQL, a real SMTP server on loopback
//! and local webhook receivers.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use alerter::config::AlerterConfig;
use apimon_core::db::{self, metrics::MetricRow, notifications};
use apimon_core::incidents::{Change, Evidence, Incident, Kind, State, Transition};
use apimon_core::model::Severity;
use apimon_core::Env;
use apimon_testkit::http::{HttpServer, Reply};
use apimon_testkit::smtp::{Mail, SmtpServer};
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::PgPool;
use tokio::sync::oneshot;

mod helpers;
use helpers::{database, Db};

fn env(db: &Db, smtp: Option<&SmtpServer>, extra: &[(&str, String)]) -> AlerterConfig {
    let mut pairs: Vec<(&str, String)> = vec![
        ("DATABASE_URL", db.url.clone()),
        ("ALERT_POLL_INTERVAL", "200ms".into()),
        ("ALERT_RETRY_BASE", "200ms".into()),
        ("ALERT_RETRY_MAX_DELAY", "500ms".into()),
        ("ALERT_CHECK_INTERVAL", "1d".into()),
        ("DASHBOARD_URL", "http://grafana.test:3000".into()),
        ("ALERT_GROUP_WAIT", "1s".into()),
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

/// An incident as the detector's rules would record it.
fn incident(kind: Kind, started: DateTime<Utc>, error: &str) -> Incident {
    Incident {
        kind,
        state: State::Open,
        started_at: started.trunc_subsecs(6),
        opened_at: (started + chrono::Duration::seconds(15)).trunc_subsecs(6),
        recovered_at: None,
        resolved_at: None,
        severity: Severity::Critical,
        reason: "2 consecutive failed checks".into(),
        evidence: Evidence {
            checks: 2,
            failures: 2,
            last_error: Some(error.to_string()),
            ..Evidence::default()
        },
        flaps: 0,
    }
}

/// Writes changes through the detector's own path (`db::incidents::apply`).
async fn apply(pool: &PgPool, api: &str, changes: Vec<(Change, Incident)>) {
    let changes: Vec<Transition> = changes
        .into_iter()
        .map(|(change, incident)| Transition { change, incident })
        .collect();
    let mut tx = pool.begin().await.unwrap();
    db::incidents::apply(&mut tx, api, &changes).await.unwrap();
    tx.commit().await.unwrap();
}

async fn open_down(pool: &PgPool, api: &str, started: DateTime<Utc>, error: &str) -> Incident {
    let i = incident(Kind::Down, started, error);
    apply(pool, api, vec![(Change::Opened, i.clone())]).await;
    i
}

async fn resolve(pool: &PgPool, api: &str, mut i: Incident, recovered: DateTime<Utc>) {
    i.state = State::Resolved;
    i.recovered_at = Some(recovered.trunc_subsecs(6));
    i.resolved_at = Some(recovered.trunc_subsecs(6));
    apply(pool, api, vec![(Change::Resolved, i)]).await;
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
        tls_expires_at: None,
    }
}

fn with_subject<'a>(mails: &'a [Mail], needle: &str) -> Vec<&'a Mail> {
    mails
        .iter()
        .filter(|m| subject(m).contains(needle))
        .collect()
}

/// The mails that are not status reports (a test's alerter may send the
/// report of the period that closed before it started).
fn pages(mails: &[Mail]) -> Vec<&Mail> {
    mails
        .iter()
        .filter(|m| !subject(m).starts_with("[apimon] Status:"))
        .collect()
}

/// The text/plain part of a multipart mail.
fn plain_text(m: &Mail) -> String {
    mailparse::parse_mail(m.data.as_bytes())
        .unwrap()
        .subparts
        .iter()
        .find(|p| p.ctype.mimetype == "text/plain")
        .unwrap()
        .get_body()
        .unwrap()
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
async fn an_incident_opening_sends_one_multipart_email_with_escaped_values() {
    let db = database(&["api-a"]).await;
    let smtp = SmtpServer::start().await;
    let run = start(env(&db, Some(&smtp), &[]));
    let t0 = Utc::now() - chrono::Duration::seconds(20);
    open_down(
        &db.pool,
        "api-a",
        t0,
        "connect: <script>alert('pwned')</script> & more",
    )
    .await;
    let mails = smtp
        .wait_for(WAIT, |m| !with_subject(m, "DOWN").is_empty())
        .await;
    let alerts = with_subject(&mails, "DOWN: api-a");
    assert_eq!(alerts.len(), 1, "one notification");
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
        text.contains(&format!(
            "Since: {} (first failed check)",
            t0.trunc_subsecs(6).format("%Y-%m-%d %H:%M:%S UTC")
        )) && text.contains("Why: 2 consecutive failed checks"),
        "{text}"
    );
    assert!(
        text.contains("http://grafana.test:3000/d/apimon/api-monitoring?var-api=api-a"),
        "{text}"
    );
    let rows = notifications::all(&db.pool).await.unwrap();
    let alert = rows.iter().find(|n| n.kind == "incident_open").unwrap();
    assert_eq!((alert.state.as_str(), alert.attempts), ("sent", 1));
    run.stop().await;
}

#[tokio::test]
async fn incidents_opening_together_are_one_email_and_their_recoveries_another() {
    let apis: Vec<String> = (0..12).map(|i| format!("api-{i:02}")).collect();
    let names: Vec<&str> = apis.iter().map(String::as_str).collect();
    let db = database(&names).await;
    let smtp = SmtpServer::start().await;
    let run = start(env(&db, Some(&smtp), &[("ALERT_GROUP_WAIT", "3s".into())]));
    // A network blip: every API fails within a few seconds.
    let t0 = Utc::now();
    let mut opened = Vec::new();
    for (k, api) in names.iter().enumerate() {
        let started = t0 + chrono::Duration::milliseconds(100 * k as i64);
        opened.push(open_down(&db.pool, api, started, "connect: refused").await);
    }
    smtp.wait_for(WAIT, |m| !with_subject(m, "incidents opened").is_empty())
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let all = smtp.mails();
    let mails = pages(&all);
    assert_eq!(
        mails.len(),
        1,
        "one email for the blip: {:?}",
        mails.iter().map(|m| subject(m)).collect::<Vec<_>>()
    );
    assert!(
        subject(mails[0]).starts_with("[apimon] 12 incidents opened: api-00 down, api-01 down"),
        "{}",
        subject(mails[0])
    );
    // They recover together: one email.
    for (api, i) in names.iter().zip(opened) {
        resolve(&db.pool, api, i, Utc::now()).await;
    }
    smtp.wait_for(WAIT, |m| !with_subject(m, "incidents resolved").is_empty())
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let everything = smtp.mails();
    let all = pages(&everything);
    assert_eq!(
        all.len(),
        2,
        "{:?}",
        all.iter().map(|m| subject(m)).collect::<Vec<_>>()
    );
    assert!(subject(all[1]).starts_with("[apimon] 12 incidents resolved"));
    let handled: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT event, outcome FROM incident_events ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(handled.len(), 24);
    assert!(
        handled
            .iter()
            .all(|(_, o)| o.as_deref() == Some("notified")),
        "{handled:?}"
    );
    run.stop().await;
}

#[tokio::test]
async fn reminders_repeat_while_an_incident_stays_open_and_stop_at_its_resolution() {
    let db = database(&["api-a"]).await;
    let smtp = SmtpServer::start().await;
    let run = start(env(
        &db,
        Some(&smtp),
        &[("ALERT_REPEAT_INTERVAL", "2s".into())],
    ));
    let i = open_down(
        &db.pool,
        "api-a",
        Utc::now() - chrono::Duration::minutes(1),
        "timeout",
    )
    .await;
    smtp.wait_for(WAIT, |m| with_subject(m, "Still down: api-a").len() >= 2)
        .await;
    resolve(&db.pool, "api-a", i, Utc::now()).await;
    smtp.wait_for(WAIT, |m| !with_subject(m, "RESOLVED: api-a").is_empty())
        .await;
    let reminders = with_subject(&smtp.mails(), "Still down").len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mails = smtp.mails();
    assert_eq!(with_subject(&mails, "DOWN: api-a").len(), 1);
    assert_eq!(
        with_subject(&mails, "Still down").len(),
        reminders,
        "no reminder after the resolution"
    );
    assert_eq!(with_subject(&mails, "RESOLVED: api-a").len(), 1);
    run.stop().await;
}

/// A certificate incident pages once at the warning and once when it turns
/// critical (the warning it replaces gets no resolve mail), is reminded at
/// most daily while a down incident is reminded every ALERT_REPEAT_INTERVAL,
/// and its renewal sends one resolution.
#[tokio::test]
async fn certificate_incidents_page_once_per_level_are_not_reminded_hourly_and_resolve_once() {
    let db = database(&["api-a", "api-b"]).await;
    let smtp = SmtpServer::start().await;
    let run = start(env(
        &db,
        Some(&smtp),
        &[("ALERT_REPEAT_INTERVAL", "2s".into())],
    ));
    // Openings a minute old: past the group wait, each its own page.
    let now = (Utc::now() - chrono::Duration::minutes(1)).trunc_subsecs(6);
    let expires = (now + chrono::Duration::days(10)).trunc_subsecs(0);
    let cert = |severity: Severity, state: State| Incident {
        kind: Kind::Certificate,
        state,
        started_at: now,
        opened_at: now,
        recovered_at: None,
        resolved_at: None,
        severity,
        reason: format!(
            "the TLS certificate expires at {} (10 days 0 h left)",
            expires.format("%Y-%m-%d %H:%M UTC")
        ),
        evidence: Evidence {
            tls_expires_at: Some(expires),
            ..Evidence::default()
        },
        flaps: 0,
    };
    apply(
        &db.pool,
        "api-b",
        vec![(Change::Opened, cert(Severity::High, State::Open))],
    )
    .await;
    smtp.wait_for(WAIT, |m| !with_subject(m, "CERTIFICATE: api-b").is_empty())
        .await;
    open_down(&db.pool, "api-a", now, "timeout").await;
    smtp.wait_for(WAIT, |m| {
        with_subject(m, "Still down: api-a").len() >= 2
            && !with_subject(m, "CERTIFICATE: api-b").is_empty()
    })
    .await;
    let mails = smtp.mails();
    let page = with_subject(&mails, "CERTIFICATE: api-b");
    assert_eq!(page.len(), 1);
    let text = plain_text(page[0]);
    assert!(text.contains("Certificate expires"), "{text}");
    assert!(with_subject(&mails, "Still certificate").is_empty());
    // Critical: the warning is closed as escalated, a new page goes out.
    let mut warning = cert(Severity::High, State::Resolved);
    warning.resolved_at = Some(now);
    apply(
        &db.pool,
        "api-b",
        vec![
            (Change::Escalated, warning),
            (Change::Opened, cert(Severity::Critical, State::Open)),
        ],
    )
    .await;
    smtp.wait_for(WAIT, |m| {
        !with_subject(m, "CERTIFICATE CRITICAL: api-b").is_empty()
    })
    .await;
    // Renewed: one resolution.
    let mut renewed = cert(Severity::Critical, State::Resolved);
    renewed.recovered_at = Some(Utc::now().trunc_subsecs(6));
    renewed.resolved_at = renewed.recovered_at;
    apply(&db.pool, "api-b", vec![(Change::Resolved, renewed)]).await;
    smtp.wait_for(WAIT, |m| !with_subject(m, "RESOLVED: api-b").is_empty())
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = smtp.mails();
    assert_eq!(with_subject(&mails, "RESOLVED: api-b").len(), 1);
    assert_eq!(with_subject(&mails, "CERTIFICATE CRITICAL: api-b").len(), 1);
    assert!(with_subject(&mails, "Still certificate").is_empty());
    let resolutions: Vec<Option<String>> =
        sqlx::query_scalar("SELECT resolution FROM incidents WHERE api_name = 'api-b' ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(resolutions, vec![Some("escalated".to_string()), None]);
    run.stop().await;
}

#[tokio::test]
async fn reminders_are_off_at_zero() {
    let db = database(&["api-a"]).await;
    let smtp = SmtpServer::start().await;
    let run = start(env(
        &db,
        Some(&smtp),
        &[("ALERT_REPEAT_INTERVAL", "0".into())],
    ));
    open_down(
        &db.pool,
        "api-a",
        Utc::now() - chrono::Duration::minutes(1),
        "timeout",
    )
    .await;
    smtp.wait_for(WAIT, |m| !with_subject(m, "DOWN: api-a").is_empty())
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pages(&smtp.mails()).len(), 1);
    run.stop().await;
}

#[tokio::test]
async fn an_event_committed_thirty_seconds_late_is_still_notified() {
    let db = database(&["api-a"]).await;
    let smtp = SmtpServer::start().await;
    let run = start(env(&db, Some(&smtp), &[]));
    // The detector's transaction: the incident and its event, held open
    // 30 s before it commits (an I/O stall, a paused process).
    let started = Utc::now() - chrono::Duration::seconds(20);
    let mut tx = db.pool.begin().await.unwrap();
    let i = incident(Kind::Down, started, "timeout");
    db::incidents::apply(
        &mut tx,
        "api-a",
        &[Transition {
            change: Change::Opened,
            incident: i,
        }],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(pages(&smtp.mails()).is_empty(), "nothing before the commit");
    tx.commit().await.unwrap();
    let mails = smtp
        .wait_for(WAIT, |m| !with_subject(m, "DOWN: api-a").is_empty())
        .await;
    assert_eq!(with_subject(&mails, "DOWN: api-a").len(), 1);
    run.stop().await;
}

#[tokio::test]
async fn an_smtp_outage_loses_nothing_and_delivers_each_message_once() {
    let db = database(&["api-a"]).await;
    let mut smtp = SmtpServer::start().await;
    smtp.stop();
    let run = start(env(&db, Some(&smtp), &[]));
    open_down(&db.pool, "api-a", Utc::now(), "while down").await;
    // Failed attempts are visible in the outbox.
    let start = std::time::Instant::now();
    let failing = loop {
        let rows = notifications::all(&db.pool).await.unwrap();
        if let Some(n) = rows
            .iter()
            .find(|n| n.kind == "incident_open" && n.attempts >= 2)
        {
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
        .wait_for(WAIT, |m| !with_subject(m, "DOWN").is_empty())
        .await;
    assert_eq!(with_subject(&mails, "DOWN").len(), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        with_subject(&smtp.mails(), "DOWN").len(),
        1,
        "delivered exactly once"
    );
    let rows = notifications::all(&db.pool).await.unwrap();
    let sent = rows.iter().find(|n| n.kind == "incident_open").unwrap();
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
        open_down(&db.pool, api, now, "x").await;
    }
    smtp.wait_for(WAIT, |m| !with_subject(m, "incidents opened").is_empty())
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = smtp.mails();
    let mails = pages(&all);
    assert_eq!(mails.len(), 1, "one notification for the three, sent once");
    assert!(subject(mails[0]).starts_with("[apimon] 3 incidents opened"));
    a.stop().await;
    b.stop().await;
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
        // The first check after the period: its rows are all in.
        rows.push(metric(n, end, Some(100.0)));
    }
    db::metrics::insert_batch(&db.pool, &rows).await.unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let anomaly = |api: &str, severity: &str, rt: f64| db::anomalies::AnomalyRow {
        timestamp: begin + chrono::Duration::seconds(30),
        api_name: api.into(),
        response_time_ms: Some(rt),
        anomaly_score: -0.15,
        severity: severity.into(),
        details: "slow".into(),
        features: None,
        model_version: Some(1),
    };
    db::anomalies::insert(
        &mut tx,
        &[
            anomaly("slowpoke", "high", 400.0),
            anomaly("a1", "critical", 900.0),
        ],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
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
    // done) and the service sends it. (Just after midnight this 5-minute
    // period ends where the day the helper marks as reported ends.)
    sqlx::query("DELETE FROM status_reports WHERE period_end = $1")
        .bind(end)
        .execute(&db.pool)
        .await
        .unwrap();
    // After the settle time: 5 s plus the 30 s default timeout.
    let at = end + chrono::Duration::seconds(40);
    assert!(reports_at(&db, &cfg, &mut baselines, at).await);
    assert!(!reports_at(&db, &cfg, &mut baselines, at).await);
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
    // A healthy row next to a critical anomaly says why it is healthy.
    let a1 = text.lines().find(|l| l.starts_with("a1 |")).unwrap();
    assert!(
        a1.starts_with("a1 | healthy | 20 |")
            && a1.ends_with(
                "| 1 | 0 | 0 | 1 single-check anomaly (1 critical, 0 high), no sustained incident"
            ),
        "{a1}"
    );
    let a2 = text.lines().find(|l| l.starts_with("a2 |")).unwrap();
    assert!(
        a2.ends_with("| 0 | 0 | 0 | "),
        "no note without anomalies: {a2}"
    );
    run.stop().await;
}

/// The 5-minute period that closed last, with the one before it marked as
/// reported (an alerter has been running).
async fn five_minute_period(db: &Db) -> (DateTime<Utc>, DateTime<Utc>) {
    let end = alerter::report::last_period_end(Utc::now(), Duration::from_secs(300));
    let begin = end - chrono::Duration::seconds(300);
    sqlx::query("DELETE FROM status_reports WHERE period_end >= $1")
        .bind(begin)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO status_reports (period_end, period_start) VALUES ($1, $1 - interval '5 minutes')",
    )
    .bind(begin)
    .execute(&db.pool)
    .await
    .unwrap();
    (begin, end)
}

/// Checks every 15 s over `[from, from + n × 15 s)`.
fn checks(api: &str, from: DateTime<Utc>, n: i64, rt: f64) -> Vec<MetricRow> {
    (0..n)
        .map(|i| metric(api, from + chrono::Duration::seconds(15 * i), Some(rt)))
        .collect()
}

/// Whether the alerter writes a report when asked at `at`.
async fn reports_at(
    db: &Db,
    cfg: &AlerterConfig,
    baselines: &mut alerter::baseline::Baselines,
    at: DateTime<Utc>,
) -> bool {
    alerter::report::maybe_report(&db.pool, cfg, baselines, at)
        .await
        .unwrap()
}

/// The queued report of the period ending at `end`: subject and text.
async fn queued_report(pool: &PgPool, end: DateTime<Utc>) -> Option<(String, String)> {
    sqlx::query_as(
        "SELECT subject, body_text FROM notifications WHERE kind = 'report' AND dedup_key = $1",
    )
    .bind(format!("report:{}", end.timestamp()))
    .fetch_optional(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_report_waits_for_rows_still_on_their_way_and_then_counts_them_all() {
    let db = database(&["steady", "buffered"]).await;
    let cfg = env(&db, None, &[("ALERT_CHECK_INTERVAL", "300".into())]);
    let (begin, end) = five_minute_period(&db).await;
    let mut baselines = alerter::baseline::Baselines::new(cfg.baseline_window);
    let mut rows = checks("steady", begin, 21, 100.0);
    // 9 of its 20 checks are in; the rest sit in the pinger's buffer.
    rows.extend(checks("buffered", begin, 9, 100.0));
    db::metrics::insert_batch(&db.pool, &rows).await.unwrap();
    // After the settle time: 5 s plus the 30 s default timeout.
    let at = end + chrono::Duration::seconds(40);
    assert!(
        !reports_at(&db, &cfg, &mut baselines, at).await,
        "a period whose rows are still on their way is not reported"
    );
    assert!(queued_report(&db.pool, end).await.is_none());
    // The buffer is flushed: the other 11 and the first check after.
    let late = checks(
        "buffered",
        begin + chrono::Duration::seconds(135),
        12,
        100.0,
    );
    db::metrics::insert_batch(&db.pool, &late).await.unwrap();
    assert!(reports_at(&db, &cfg, &mut baselines, at).await);
    let (subject, text) = queued_report(&db.pool, end).await.unwrap();
    assert_eq!(subject, "[apimon] Status: all 2 APIs healthy");
    assert!(
        text.contains("buffered | healthy | 20 | 100.0% |"),
        "{text}"
    );
}

/// The report lists the certificates that expire within
/// TLS_EXPIRY_WARN_DAYS of the period's end, soonest first, as the
/// period's latest check of each API saw them.
#[tokio::test]
async fn a_report_lists_the_certificates_that_expire_within_the_warning_soonest_first() {
    let db = database(&["soon", "later", "far", "plain"]).await;
    let cfg = env(&db, None, &[("ALERT_CHECK_INTERVAL", "300".into())]);
    let (begin, end) = five_minute_period(&db).await;
    let mut baselines = alerter::baseline::Baselines::new(cfg.baseline_window);
    let expiry = |days: i64| (end + chrono::Duration::days(days)).trunc_subsecs(0);
    let tls = |api: &str, days: i64| -> Vec<MetricRow> {
        let mut rows = checks(api, begin, 21, 100.0);
        for (i, r) in rows.iter_mut().enumerate() {
            // An older certificate on the first checks: the latest counts.
            r.tls_expires_at = Some(if i < 5 { expiry(1) } else { expiry(days) });
        }
        rows
    };
    let mut rows = tls("soon", 2);
    rows.extend(tls("later", 10));
    rows.extend(tls("far", 60));
    rows.extend(checks("plain", begin, 21, 100.0));
    db::metrics::insert_batch(&db.pool, &rows).await.unwrap();
    assert!(
        reports_at(
            &db,
            &cfg,
            &mut baselines,
            end + chrono::Duration::seconds(40)
        )
        .await
    );
    let (_, text) = queued_report(&db.pool, end).await.unwrap();
    let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let expected = format!(
        "Certificates expiring soon:\n- soon: expires at {} (in 2d 0h)\n\
         - later: expires at {} (in 10d 0h)\n\n",
        fmt(expiry(2)),
        fmt(expiry(10))
    );
    assert!(text.contains(&expected), "{expected}\nin\n{text}");
    assert!(!text.contains("far:") && !text.contains("plain:"), "{text}");
}

/// A check that started just before the period's end may answer up to its
/// timeout later: with one 30 s timeout among 5 s ones, the report waits
/// 35 s even though every row it can see has come.
#[tokio::test]
async fn a_report_settles_for_the_longest_check_timeout() {
    let db = database(&["steady"]).await;
    let eps = apimon_core::apis::parse(
        "[[api]]\nname = \"steady\"\nurl = \"http://steady.test/\"\ntimeout = \"5s\"\n\
         [[api]]\nname = \"patient\"\nurl = \"http://patient.test/\"\ntimeout = \"30s\"\n",
        "test",
        &Env::default(),
    )
    .unwrap();
    db::endpoints::upsert(&db.pool, &eps).await.unwrap();
    let cfg = env(&db, None, &[("ALERT_CHECK_INTERVAL", "300".into())]);
    let (begin, end) = five_minute_period(&db).await;
    let mut baselines = alerter::baseline::Baselines::new(cfg.baseline_window);
    let mut rows = checks("steady", begin, 21, 100.0);
    rows.extend(checks("patient", begin, 21, 100.0));
    db::metrics::insert_batch(&db.pool, &rows).await.unwrap();
    let early = end + chrono::Duration::seconds(34);
    assert!(
        !reports_at(&db, &cfg, &mut baselines, early).await,
        "35 s have not passed"
    );
    assert!(queued_report(&db.pool, end).await.is_none());
    let settled = end + chrono::Duration::seconds(36);
    assert!(reports_at(&db, &cfg, &mut baselines, settled).await);
    assert!(queued_report(&db.pool, end).await.is_some());
}

#[tokio::test]
async fn rows_that_never_arrive_are_reported_as_data_missing_not_healthy() {
    let db = database(&["steady", "cut-off"]).await;
    let cfg = env(&db, None, &[("ALERT_CHECK_INTERVAL", "300".into())]);
    let (begin, end) = five_minute_period(&db).await;
    let mut baselines = alerter::baseline::Baselines::new(cfg.baseline_window);
    let mut rows = checks("steady", begin, 21, 100.0);
    rows.extend(checks("cut-off", begin, 9, 100.0));
    db::metrics::insert_batch(&db.pool, &rows).await.unwrap();
    // After the settle time: 5 s plus the 30 s default timeout.
    let at = end + chrono::Duration::seconds(40);
    assert!(!reports_at(&db, &cfg, &mut baselines, at).await);
    // One report interval later the rows have still not come: the period
    // is reported, and says so.
    let later = end + chrono::Duration::seconds(310);
    assert!(reports_at(&db, &cfg, &mut baselines, later).await);
    let (subject, text) = queued_report(&db.pool, end).await.unwrap();
    assert_eq!(subject, "[apimon] Status: 1 data missing, 1 healthy");
    let row = text.lines().find(|l| l.starts_with("cut-off |")).unwrap();
    assert!(
        row.starts_with("cut-off | data missing | 9 | 100.0% |")
            && row.ends_with(
                "9 of about 20 checks arrived; the rest had not come in when the report was due"
            ),
        "{row}"
    );
}

#[tokio::test]
async fn a_report_baseline_leaves_out_the_checks_of_earlier_incidents() {
    let db = database(&["repeat"]).await;
    let cfg = env(&db, None, &[("ALERT_CHECK_INTERVAL", "300".into())]);
    let (begin, end) = five_minute_period(&db).await;
    let hour_ago = begin - chrono::Duration::minutes(60);
    // An hour at 100 ms, of which 15 minutes were a first slowdown at
    // 400 ms (a recorded incident), then the period: a second slowdown.
    let mut rows = checks("repeat", hour_ago, 240, 100.0);
    let first = hour_ago + chrono::Duration::minutes(20);
    rows.retain(|r| r.timestamp < first || r.timestamp >= first + chrono::Duration::minutes(15));
    rows.extend(checks("repeat", first, 60, 400.0));
    rows.extend(checks("repeat", begin, 21, 400.0));
    db::metrics::insert_batch(&db.pool, &rows).await.unwrap();
    let mut slow = incident(Kind::Slow, first, "");
    slow.reason = "median of the last 8 checks 400 ms, 4.0x the baseline 100 ms".into();
    apply(&db.pool, "repeat", vec![(Change::Opened, slow.clone())]).await;
    let recovered = first + chrono::Duration::minutes(15);
    slow.state = State::Resolved;
    slow.recovered_at = Some(recovered.trunc_subsecs(6));
    slow.resolved_at = Some((recovered + chrono::Duration::minutes(5)).trunc_subsecs(6));
    apply(&db.pool, "repeat", vec![(Change::Resolved, slow)]).await;

    let mut baselines = alerter::baseline::Baselines::new(cfg.baseline_window);
    let report = alerter::report::build(&db.pool, &cfg, &mut baselines, begin, end)
        .await
        .unwrap();
    let row = &report.rows[0];
    // 60 of 240 checks were at 400 ms: a p95 over all of them would be
    // 400 ms and the second slowdown would look usual.
    assert_eq!(row.baseline.map(|b| b.p95_ms), Some(100.0), "{row:?}");
    assert_eq!(row.status, alerter::compose::Status::Slow, "{row:?}");
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
    open_down(&db.pool, "api-a", Utc::now(), "a < b & c").await;
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
    let card = &teams["attachments"][0]["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert!(card["body"][0]["text"]
        .as_str()
        .unwrap()
        .contains("DOWN: api\\-a"));
    let hook = body("/hook");
    assert_eq!(hook["kind"], "incident_open");
    assert_eq!(hook["event"], "open");
    assert_eq!(hook["incidents"][0]["api"], "api-a");
    assert_eq!(hook["incidents"][0]["kind"], "down");
    assert_eq!(hook["incidents"][0]["severity"], "critical");
    assert_eq!(hook["incidents"][0]["evidence"]["last_error"], "a < b & c");
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
    open_down(&db.pool, "api-a", Utc::now(), "x").await;
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

/// Webhook URLs carry their token in the path and query: a failing
/// delivery (a 500, a refused connection, an unknown host, a redirect)
/// logs and stores its error without them, even at `trace`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_webhooks_log_and_store_no_part_of_their_urls_secrets() {
    const PATH_TOKEN: &str = "T0K3N-path-SECRET";
    const QUERY_TOKEN: &str = "s1g-query-SECRET";
    let db = database(&["api-a"]).await;
    let smtp = SmtpServer::start().await;
    let hooks = HttpServer::start().await;
    let path = format!("/services/{PATH_TOKEN}");
    hooks.set(&path, Reply::status(500));
    hooks.set("/moving", Reply::redirect(308, hooks.url(&path)));
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("alerter.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = alerter_binary(&db, &smtp)
        .env(
            "SLACK_WEBHOOK_URL",
            hooks.url(&format!("{path}?sig={QUERY_TOKEN}")),
        )
        .env(
            "TEAMS_WEBHOOK_URL",
            format!("http://127.0.0.1:{closed}/workflows/{PATH_TOKEN}?sig={QUERY_TOKEN}"),
        )
        .env(
            "ALERT_WEBHOOK_URL",
            hooks.url(&format!("/moving?token={QUERY_TOKEN}")),
        )
        .env("ALERTER_HTTP_PORT", "0")
        .env("ALERT_POLL_INTERVAL", "200ms")
        .env("ALERT_RETRY_BASE", "200ms")
        .env("ALERT_RETRY_MAX_DELAY", "500ms")
        .env("ALERT_CHECK_INTERVAL", "1d")
        .env("ALERT_GROUP_WAIT", "1s")
        .env("RUST_LOG", "trace")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    open_down(&db.pool, "api-a", Utc::now(), "x").await;

    let start = std::time::Instant::now();
    let rows = loop {
        let rows = notifications::all(&db.pool).await.unwrap();
        let hooks_tried = ["slack", "teams", "webhook"].iter().all(|c| {
            rows.iter()
                .any(|n| n.channel == *c && n.attempts >= 2 && n.last_error.is_some())
        });
        if hooks_tried {
            break rows;
        }
        assert!(start.elapsed() < WAIT, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();

    let error = |c: &str| {
        rows.iter()
            .find(|n| n.channel == c)
            .and_then(|n| n.last_error.clone())
            .unwrap()
    };
    assert!(error("slack").contains("500"), "{}", error("slack"));
    assert!(
        error("webhook").contains("308"),
        "not followed: {}",
        error("webhook")
    );
    assert!(!error("teams").is_empty());
    let tries = hooks
        .requests()
        .iter()
        .filter(|r| r.path.starts_with(&path))
        .count();
    assert!(tries >= 2, "the 500 was tried again: {tries}");
    assert!(log.contains("delivery failed"), "{log}");
    assert!(log.contains("TRACE"), "logs at trace");
    for secret in [PATH_TOKEN, QUERY_TOKEN, "/services/", "/workflows/"] {
        if let Some(line) = log.lines().find(|l| l.contains(secret)) {
            panic!("`{secret}` in the log: {line}");
        }
        let (found, searched) = apimon_testkit::scan::columns_holding(&db.pool, secret).await;
        assert!(searched > 30, "searched {searched} columns");
        assert!(found.is_empty(), "`{secret}` stored in {found:?}");
    }
}

#[tokio::test]
async fn without_channels_notifications_are_recorded_as_skipped() {
    let db = database(&["api-a"]).await;
    let run = start(env(&db, None, &[]));
    open_down(&db.pool, "api-a", Utc::now(), "x").await;
    let start = std::time::Instant::now();
    loop {
        let rows = notifications::all(&db.pool).await.unwrap();
        if let Some(n) = rows.iter().find(|n| n.kind == "incident_open") {
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
    open_down(&db.pool, "api-a", Utc::now(), "x").await;
    smtp.wait_for(WAIT, |m| !with_subject(m, "DOWN").is_empty())
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
            .env("ALERT_GROUP_WAIT", "1s")
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
    open_down(&db.pool, "api-a", now, "x").await;
    open_down(&db.pool, "api-b", now, "y").await;
    smtp.wait_for(WAIT, |m| !with_subject(m, "incidents opened").is_empty())
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = smtp.mails();
    let mails = pages(&all);
    assert_eq!(mails.len(), 1, "one notification, sent once");
    assert!(subject(mails[0]).starts_with("[apimon] 2 incidents opened"));
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

async fn silenced(pool: &PgPool, api: &str) -> (bool, Option<String>) {
    sqlx::query_as("SELECT silenced, silence_reason FROM incidents WHERE api_name = $1")
        .bind(api)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_set_with_the_cli_and_a_maintenance_window_hold_back_openings() {
    let db = database(&["billing-1", "other", "batch-7"]).await;
    let smtp = SmtpServer::start().await;
    let out = alerter_binary(&db, &smtp)
        .args([
            "silence",
            "add",
            "--api",
            "billing-*",
            "--for",
            "1h",
            "--reason",
            "deploy v2",
            "--by",
            "alice",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A maintenance window covering now for batch-*.
    let dir = tempfile::tempdir().unwrap();
    let apis = dir.path().join("apis.toml");
    let from = (Utc::now() - chrono::Duration::minutes(30)).format("%H:%M");
    std::fs::write(
        &apis,
        format!(
            "[[maintenance]]\napi = \"batch-*\"\nweekdays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\nstart = \"{from}\"\nduration = \"2h\"\nreason = \"nightly batch\"\n"
        ),
    )
    .unwrap();
    let run = start(env(
        &db,
        Some(&smtp),
        &[("APIS_FILE", apis.display().to_string())],
    ));
    let t0 = Utc::now() - chrono::Duration::seconds(20);
    open_down(&db.pool, "billing-1", t0, "timeout").await;
    open_down(&db.pool, "batch-7", t0, "timeout").await;
    // Started in the past too: its group is due whether or not the
    // alerter's pass sees it together with the two above.
    open_down(
        &db.pool,
        "other",
        t0 + chrono::Duration::seconds(5),
        "timeout",
    )
    .await;
    smtp.wait_for(WAIT, |m| !with_subject(m, "DOWN: other").is_empty())
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = smtp.mails();
    let mails = pages(&all);
    assert_eq!(
        mails.iter().map(|m| subject(m)).collect::<Vec<_>>(),
        ["[apimon] DOWN: other (2 consecutive failed checks)"],
        "only the API that is neither silenced nor in maintenance"
    );
    let (s, why) = silenced(&db.pool, "billing-1").await;
    assert!(s, "recorded as silenced");
    let why = why.unwrap();
    assert!(
        why.contains("silence #1 by alice") && why.contains("deploy v2"),
        "{why}"
    );
    let (s, why) = silenced(&db.pool, "batch-7").await;
    assert!(s && why.unwrap().contains("nightly batch"));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_incident_gets_its_resolution_even_if_a_silence_began_since() {
    let db = database(&["api-a"]).await;
    let smtp = SmtpServer::start().await;
    let run = start(env(&db, Some(&smtp), &[]));
    let i = open_down(
        &db.pool,
        "api-a",
        Utc::now() - chrono::Duration::seconds(20),
        "timeout",
    )
    .await;
    smtp.wait_for(WAIT, |m| !with_subject(m, "DOWN: api-a").is_empty())
        .await;
    let out = alerter_binary(&db, &smtp)
        .args([
            "silence", "add", "--api", "*", "--for", "1h", "--reason", "too late",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    resolve(&db.pool, "api-a", i, Utc::now()).await;
    let mails = smtp
        .wait_for(WAIT, |m| !with_subject(m, "RESOLVED: api-a").is_empty())
        .await;
    assert_eq!(with_subject(&mails, "RESOLVED: api-a").len(), 1);
    // And while the silence lasts, a new incident is recorded, not sent.
    open_down(&db.pool, "api-a", Utc::now(), "timeout again").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pages(&smtp.mails()).len(), 2);
    run.stop().await;
}

/// What the pinger does at start with a file listing only `names`: the
/// other endpoints are retired.
async fn configure(pool: &PgPool, names: &[&str]) {
    let toml: String = names
        .iter()
        .map(|n| format!("[[api]]\nname = \"{n}\"\nurl = \"http://{n}.test/\"\n"))
        .collect();
    let eps = apimon_core::apis::parse(&toml, "test", &Env::default()).unwrap();
    db::endpoints::sync(pool, &eps).await.unwrap();
}

#[tokio::test]
async fn a_retired_endpoint_is_left_out_of_reports_so_a_healthy_period_sends_none() {
    let db = database(&["steady", "removed"]).await;
    let cfg = env(
        &db,
        None,
        &[
            ("ALERT_CHECK_INTERVAL", "300".into()),
            ("STATUS_REPORT_WHEN_HEALTHY", "false".into()),
        ],
    );
    let (begin, end) = five_minute_period(&db).await;
    let mut baselines = alerter::baseline::Baselines::new(cfg.baseline_window);
    // "removed" was checked until an hour ago, then left the file.
    let mut rows = checks("steady", begin, 21, 100.0);
    rows.extend(checks(
        "removed",
        begin - chrono::Duration::hours(1),
        10,
        100.0,
    ));
    db::metrics::insert_batch(&db.pool, &rows).await.unwrap();
    configure(&db.pool, &["steady"]).await;

    let report = alerter::report::build(&db.pool, &cfg, &mut baselines, begin, end)
        .await
        .unwrap();
    let listed: Vec<&str> = report.rows.iter().map(|r| r.api_name.as_str()).collect();
    assert_eq!(listed, ["steady"]);
    assert!(alerter::report::not_arrived(&db.pool, end)
        .await
        .unwrap()
        .is_empty());
    // The period is written at once (nothing waited for), and all healthy:
    // STATUS_REPORT_WHEN_HEALTHY=false holds it back. (After the settle
    // time: 5 s plus the 30 s default timeout.)
    let at = end + chrono::Duration::seconds(40);
    assert!(reports_at(&db, &cfg, &mut baselines, at).await);
    assert!(queued_report(&db.pool, end).await.is_none());
}

#[tokio::test]
async fn a_paged_outage_of_an_endpoint_removed_from_the_config_ends_with_one_resolution_saying_so()
{
    let db = database(&["api", "other"]).await;
    let smtp = SmtpServer::start().await;
    let run = start(env(&db, Some(&smtp), &[]));
    open_down(
        &db.pool,
        "api",
        Utc::now() - chrono::Duration::seconds(20),
        "connect: refused",
    )
    .await;
    smtp.wait_for(WAIT, |m| !with_subject(m, "DOWN: api").is_empty())
        .await;

    // Removed from the file while down; the detector closes the incident.
    configure(&db.pool, &["other"]).await;
    let mut tx = db.pool.begin().await.unwrap();
    let closed = db::incidents::close_retired(&mut tx, &["api".to_string()])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(closed, ["api"]);

    let subject_line = "[apimon] RESOLVED: api down (endpoint removed from the configuration)";
    let mails = smtp
        .wait_for(WAIT, |m| !with_subject(m, subject_line).is_empty())
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.stop().await;
    let resolved = with_subject(&mails, "RESOLVED");
    assert_eq!(resolved.len(), 1, "one resolution");
    let text = plain_text(resolved[0]);
    assert!(
        text.contains("the endpoint was removed from the configuration at "),
        "{text}"
    );
    assert!(!text.contains("recovered at"), "{text}");
    let state: (String, Option<String>) =
        sqlx::query_as("SELECT state, resolution FROM incidents WHERE api_name = 'api'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(state, ("resolved".to_string(), Some("retired".to_string())));
}

/// A notification row as the outbox holds it, created `days` days ago.
async fn notification(
    pool: &PgPool,
    key: &str,
    kind: &str,
    state: &str,
    days: i64,
    payload: serde_json::Value,
) {
    sqlx::query(
        "INSERT INTO notifications (kind, channel, dedup_key, subject, body_text, payload, state, created_at)
         VALUES ($1, 'email', $2, 's', 't', $3, $4, now() - make_interval(days => $5::int))",
    )
    .bind(kind)
    .bind(key)
    .bind(payload)
    .bind(state)
    .bind(days as i32)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_alerters_retention_deletes_old_notifications_reports_and_silences_only() {
    let db = database(&["api"]).await;
    let cfg = env(&db, None, &[("RETENTION_DAYS", "90".into())]);
    assert_eq!(cfg.notifications_retention_days, 14);
    let open = open_down(
        &db.pool,
        "open-api",
        Utc::now() - chrono::Duration::days(20),
        "x",
    )
    .await;
    let _ = open;
    let open_id: i64 = sqlx::query_scalar("SELECT id FROM incidents WHERE api_name = 'open-api'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let none = serde_json::json!({});
    for i in 0..7 {
        notification(
            &db.pool,
            &format!("old-sent-{i}"),
            "report",
            "sent",
            15,
            none.clone(),
        )
        .await;
    }
    notification(&db.pool, "old-failed", "report", "failed", 15, none.clone()).await;
    notification(
        &db.pool,
        "old-pending",
        "report",
        "pending",
        15,
        none.clone(),
    )
    .await;
    notification(&db.pool, "recent-sent", "report", "sent", 13, none.clone()).await;
    notification(
        &db.pool,
        "old-opening-of-open-incident",
        "incident_open",
        "sent",
        20,
        serde_json::json!({"incidents": [{"id": open_id}]}),
    )
    .await;
    for (end_days, n) in [(100, 3), (10, 1)] {
        for k in 0..n {
            sqlx::query(
                "INSERT INTO status_reports (period_end, period_start)
                 VALUES (now() - make_interval(days => $1::int, mins => $2::int),
                         now() - make_interval(days => $1::int, mins => $2::int + 5))",
            )
            .bind(end_days)
            .bind(k * 5)
            .execute(&db.pool)
            .await
            .unwrap();
        }
    }
    let t = Utc::now();
    for (pattern, from, to) in [
        ("ended-long-ago", 120, 100),
        ("ended-recently", 20, 10),
        ("active", 1, -1),
    ] {
        db::silences::add(
            &db.pool,
            pattern,
            t - chrono::Duration::days(from),
            t - chrono::Duration::days(to),
            "ops",
            "test",
        )
        .await
        .unwrap();
    }

    let settings = apimon_core::retention::Settings {
        batch_size: 3,
        pause: Duration::from_millis(1),
        ..Default::default()
    };
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let report = apimon_core::retention::pass(
        &db.pool,
        &alerter::service::retention_rules(&cfg),
        &settings,
        &stop,
    )
    .await
    .unwrap();

    let of = |table: &str| report.iter().find(|d| d.table == table).unwrap().clone();
    let n = of("notifications");
    assert_eq!((n.rows, n.statements, n.largest), (8, 3, 3), "3 + 3 + 2");
    let keys: Vec<String> = sqlx::query_scalar("SELECT dedup_key FROM notifications ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        keys,
        ["old-pending", "recent-sent", "old-opening-of-open-incident"]
    );
    assert_eq!(of("status_reports").rows, 3);
    let reports: i64 = sqlx::query_scalar("SELECT count(*) FROM status_reports")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        reports, 2,
        "the recent one and the one the test database began with"
    );
    assert_eq!(of("silences").rows, 1);
    let patterns: Vec<String> = db::silences::list(&db.pool, true)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.api_pattern)
        .collect();
    assert_eq!(patterns, ["ended-recently", "active"]);
}
