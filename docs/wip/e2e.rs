//! End to end: local HTTP endpoints, PostgreSQL, an SMTP server, and the
//! pinger, detector and alerter binaries as separate processes with a 1 s
//! interval. After a warm-up one endpoint becomes ten times slower and
//! another stops answering.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apimon_core::db;
use apimon_core::DbConfig;
use apimon_testkit::http::{HttpServer, Reply};
use apimon_testkit::smtp::{Mail, SmtpServer};

/// The workspace's binaries, next to this test's executable. `cargo build`
/// runs first (a no-op when they are up to date), so that a partial `cargo
/// test` never runs stale binaries against a newer schema.
fn binaries() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "pinger", "-p", "detector", "-p", "alerter"])
        .status()
        .unwrap();
    assert!(status.success(), "building the binaries");
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
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

fn text(m: &Mail) -> String {
    let parsed = mailparse::parse_mail(m.data.as_bytes()).unwrap();
    let part = parsed.subparts.first().unwrap_or(&parsed);
    part.get_body().unwrap().replace("\r\n", "\n")
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_and_a_dead_endpoint_are_detected_alerted_and_reported() {
    let t = apimon_testkit::fresh_database().await;
    let pool = db::connect(&DbConfig::from_url(&t.url).unwrap()).await.unwrap();
    db::migrate(&pool).await.unwrap();
    let web = HttpServer::start().await;
    let smtp = SmtpServer::start().await;
    let healthy = ["ok1", "ok2", "ok3", "ok4", "ok5", "ok6"];
    let mut toml = String::from("[defaults]\ninterval = \"1s\"\ntimeout = \"2s\"\n\n");
    for name in healthy.iter().chain(["slow", "dead"].iter()) {
        web.set(&format!("/{name}"), Reply::delayed(40));
        toml.push_str(&format!("[[api]]\nname = \"{name}\"\nurl = \"{}\"\n\n", web.url(&format!("/{name}"))));
    }
    let dir = tempfile::tempdir().unwrap();
    let apis = dir.path().join("apis.toml");
    std::fs::write(&apis, toml).unwrap();
    let env: Vec<(&str, String)> = vec![
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("DATABASE_URL", t.url.clone()),
        ("APIS_FILE", apis.display().to_string()),
        ("RUST_LOG", "info".into()),
        ("PINGER_HTTP_PORT", "0".into()),
        ("DETECTOR_HTTP_PORT", "0".into()),
        ("ALERTER_HTTP_PORT", "0".into()),
        ("MIN_TRAINING_SAMPLES", "40".into()),
        ("DETECTOR_POLL_INTERVAL", "500ms".into()),
        ("ALERT_POLL_INTERVAL", "500ms".into()),
        ("ALERT_CHECK_INTERVAL", "20".into()),
        ("STATUS_REPORT_WHEN_HEALTHY", "false".into()),
        ("ALERT_EMAIL_FROM", "apimon@example.test".into()),
        ("ALERT_EMAIL_TO", "ops@example.test".into()),
        ("SMTP_HOST", "127.0.0.1".into()),
        ("SMTP_PORT", smtp.port().to_string()),
        ("SMTP_TLS", "none".into()),
        ("ALERT_RETRY_BASE", "500ms".into()),
    ];
    let logs = std::env::temp_dir().join(format!("apimon-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    eprintln!("service logs in {}", logs.display());
    let bin = binaries();
    let spawn = |name: &str| {
        let log = std::fs::File::create(logs.join(format!("{name}.log"))).unwrap();
        Command::new(bin.join(name))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let _procs = Procs(vec![spawn("pinger"), spawn("detector"), spawn("alerter")]);

    // Warm-up: a model for every API.
    wait_for("a model per API", Duration::from_secs(120), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM models")
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
            == 8
    })
    .await;
    let fault_at = chrono::Utc::now();
    web.set("/slow", Reply::delayed(400));
    web.set("/dead", Reply::Close);

    let critical = |api: &'static str| {
        let pool = pool.clone();
        move || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM anomalies WHERE api_name = $1 AND severity = 'critical' AND \"timestamp\" > $2",
                )
                .bind(api)
                .bind(fault_at)
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
                    > 0
            }
        }
    };
    wait_for("a critical anomaly for `slow`", Duration::from_secs(30), critical("slow")).await;
    wait_for("a critical anomaly for `dead`", Duration::from_secs(30), critical("dead")).await;
    let mails = smtp
        .wait_for(Duration::from_secs(30), |m| {
            m.iter().any(|m| subject(m) == "[apimon] DOWN: dead")
                && m.iter().any(|m| subject(m) == "[apimon] CRITICAL anomaly: slow")
        })
        .await;
    assert!(mails.iter().any(|m| subject(m) == "[apimon] DOWN: dead"), "a down alert");

    // A status report that lists the slow and the down API.
    let mails = smtp
        .wait_for(Duration::from_secs(60), |m| {
            m.iter().any(|m| subject(m).starts_with("[apimon] Status:") && text(m).contains("Down: dead"))
                && m.iter().any(|m| text(m).contains("Slow: slow"))
        })
        .await;
    let report = mails
        .iter()
        .find(|m| subject(m).starts_with("[apimon] Status:") && text(m).contains("Down: dead"))
        .expect("a report listing the down API");
    assert!(
        mails.iter().any(|m| subject(m).starts_with("[apimon] Status:") && text(m).contains("Slow: slow")),
        "a report listing the slow API: {}",
        text(report)
    );

    // The endpoint comes back: a recovery message.
    web.set("/dead", Reply::delayed(40));
    let mails = smtp
        .wait_for(Duration::from_secs(30), |m| m.iter().any(|m| subject(m) == "[apimon] RECOVERED: dead"))
        .await;
    assert!(mails.iter().any(|m| subject(m) == "[apimon] RECOVERED: dead"));

    // Within the cooldown: exactly one alert per faulty API, none for the
    // healthy ones.
    let mails = smtp.mails();
    let count = |s: &str| mails.iter().filter(|m| subject(m) == s).count();
    assert_eq!(count("[apimon] CRITICAL anomaly: slow"), 1);
    assert_eq!(count("[apimon] CRITICAL anomaly: dead"), 1);
    assert_eq!(count("[apimon] DOWN: dead"), 1);
    for h in healthy {
        assert_eq!(count(&format!("[apimon] CRITICAL anomaly: {h}")), 0, "{h} is healthy");
    }
}
