//! An apimon installation for black-box tests: a database, local HTTP
//! endpoints, an SMTP server, an `apis.toml` with a 1 s interval, and the
//! `pinger`, `detector` and `alerter` binaries as separate processes.
//!
//! Each test builds its own [`Stack`] (its own database, ports and files),
//! so the tests of a file can run in parallel. When a test fails, the
//! stack's directory (the services' logs) is kept and its path printed.

#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use apimon_core::db;
use apimon_core::DbConfig;
use apimon_testkit::http::{HttpServer, Reply};
use apimon_testkit::procs::{eventually, tail, Service};
use apimon_testkit::smtp::{Mail, SmtpServer};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Check interval of every endpoint.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// An endpoint, its last row's timestamp and its detector watermark.
type LastRowAndMark = (String, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

pub struct Stack {
    pub url: String,
    pub pool: PgPool,
    pub web: HttpServer,
    pub smtp: SmtpServer,
    /// Endpoint names, each served at `/<name>`.
    pub names: Vec<String>,
    dir: Option<tempfile::TempDir>,
    env: Vec<(String, String)>,
}

impl Stack {
    /// A stack on the database at `url` with one endpoint per entry,
    /// answered as the entry says, and the services' environment: the
    /// defaults of these tests, then `extra`.
    pub async fn new(url: &str, endpoints: &[(&str, Reply)], extra: &[(&str, &str)]) -> Stack {
        let stack = Self::unmigrated(url, endpoints, extra).await;
        db::migrate(&stack.pool).await.unwrap();
        stack
    }

    /// Like [`Stack::new`], but leaves the database as it is: the first
    /// service started applies the migrations.
    pub async fn unmigrated(
        url: &str,
        endpoints: &[(&str, Reply)],
        extra: &[(&str, &str)],
    ) -> Stack {
        let pool = db::connect(&DbConfig::from_url(url).unwrap())
            .await
            .unwrap();
        let web = HttpServer::start().await;
        let smtp = SmtpServer::start().await;
        let dir = tempfile::Builder::new()
            .prefix("apimon-stack-")
            .tempdir()
            .unwrap();
        let mut toml = format!(
            "[defaults]\ninterval = \"{}ms\"\ntimeout = \"2s\"\n\n",
            INTERVAL.as_millis()
        );
        for (name, reply) in endpoints {
            let path = format!("/{name}");
            web.set(&path, reply.clone());
            toml.push_str(&format!(
                "[[api]]\nname = \"{name}\"\nurl = \"{}\"\n\n",
                web.url(&path)
            ));
        }
        let apis = dir.path().join("apis.toml");
        std::fs::write(&apis, toml).unwrap();
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", url.to_string()),
            ("APIS_FILE", apis.display().to_string()),
            ("RUST_LOG", "info,sqlx=warn".into()),
            ("DB_TIMEOUT", "2s".into()),
            ("SHUTDOWN_GRACE", "5s".into()),
            ("DETECTOR_POLL_INTERVAL", "500ms".into()),
            ("ALERT_POLL_INTERVAL", "500ms".into()),
            ("ALERT_RETRY_BASE", "500ms".into()),
            ("ALERT_RETRY_MAX_DELAY", "2s".into()),
            ("ALERT_CHECK_INTERVAL", "1d".into()),
            // Incident rules scaled to the 1 s interval: a baseline after
            // 20 checks, a 3 s flap window, each opening sent at once.
            ("ALERT_GROUP_WAIT", "0s".into()),
            ("ALERT_FLAP_WINDOW", "3s".into()),
            ("ALERT_BASELINE_MIN_CHECKS", "20".into()),
            ("ALERT_SLOW_WINDOW", "20".into()),
            ("ALERT_SLOW_RESOLVE_WINDOW", "8".into()),
            ("ALERT_EMAIL_FROM", "apimon@example.test".into()),
            ("ALERT_EMAIL_TO", "ops@example.test".into()),
            ("SMTP_HOST", "127.0.0.1".into()),
            ("SMTP_PORT", smtp.port().to_string()),
            ("SMTP_TLS", "none".into()),
            ("SMTP_TIMEOUT", "5s".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        set(&mut env, extra);
        Stack {
            url: url.to_string(),
            pool,
            web,
            smtp,
            names: endpoints.iter().map(|(n, _)| n.to_string()).collect(),
            dir: Some(dir),
            env,
        }
    }

    /// Appends `entries` (TOML `[[api]]` tables, with the stack's
    /// defaults) to `apis.toml`; `names` are their names. Before the
    /// services start.
    pub fn add_apis(&mut self, entries: &str, names: &[&str]) {
        let path = self.dir().join("apis.toml");
        let mut toml = std::fs::read_to_string(&path).unwrap();
        toml.push_str(entries);
        std::fs::write(&path, toml).unwrap();
        self.names.extend(names.iter().map(|n| n.to_string()));
    }

    /// Where `apis.toml` and the logs are.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// Starts `program` with the stack's environment and `extra`.
    pub fn start(&self, program: &str, label: &str, extra: &[(&str, &str)]) -> Service {
        let mut env = self.env.clone();
        set(&mut env, extra);
        Service::start(program, label, &env, self.dir())
    }

    /// The pinger, then (once it has registered the endpoints, so that the
    /// detector owns them from its start) the detector and the alerter;
    /// returns when all three are healthy.
    pub async fn start_all(&self) -> (Service, Service, Service) {
        let pinger = self.start("pinger", "pinger", &[]);
        self.wait_registered(&pinger).await;
        let detector = self.start("detector", "detector", &[]);
        let alerter = self.start("alerter", "alerter", &[]);
        for s in [&pinger, &detector, &alerter] {
            s.wait_health(200, Duration::from_secs(60)).await;
        }
        (pinger, detector, alerter)
    }

    /// Waits until every endpoint is in `api_endpoints` (the pinger writes
    /// it on its first contact with the database).
    pub async fn wait_registered(&self, pinger: &Service) {
        let n = self.names.len() as i64;
        let ok = eventually(Duration::from_secs(60), || async {
            self.scalar("SELECT count(*) FROM api_endpoints").await == n
        })
        .await;
        assert!(
            ok,
            "the pinger did not register the endpoints; log:\n{}",
            tail(&pinger.log(), 40)
        );
    }

    /// A `bigint` query result (0 on error: callers poll).
    pub async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or(0)
    }

    /// Timestamps and outcomes of an endpoint's checks, in time order.
    pub async fn rows(&self, api: &str) -> Vec<(DateTime<Utc>, bool)> {
        sqlx::query_as(
            r#"SELECT "timestamp", success FROM api_metrics WHERE api_name = $1 ORDER BY "timestamp""#,
        )
        .bind(api)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Requests endpoint `api` received.
    pub fn hits(&self, api: &str) -> usize {
        self.web.hits(&format!("/{api}"))
    }

    /// Whether the detector's watermark of every endpoint is at its last
    /// row: every observation has been scored.
    pub async fn scored_to_the_end(&self) -> bool {
        self.scalar(
            r#"SELECT count(*) FROM (SELECT api_name, max("timestamp") AS last
                                      FROM api_metrics GROUP BY api_name) m
               LEFT JOIN detector_watermarks w USING (api_name)
               WHERE w.last_timestamp IS DISTINCT FROM m.last"#,
        )
        .await
            == 0
            && self.scalar("SELECT count(*) FROM api_metrics").await > 0
    }

    /// Waits until every observation is scored and every notification is
    /// out of the outbox, panicking with the logs of `services` after
    /// `limit`.
    pub async fn wait_settled(&self, services: &[&Service], limit: Duration) {
        let ok = eventually(limit, || async {
            self.scored_to_the_end().await
                && self
                    .scalar("SELECT count(*) FROM notifications WHERE state = 'pending'")
                    .await
                    == 0
        })
        .await;
        if !ok {
            let marks: Vec<LastRowAndMark> = sqlx::query_as(
                r#"SELECT m.api_name, max(m."timestamp"), max(w.last_timestamp)
                   FROM api_metrics m LEFT JOIN detector_watermarks w USING (api_name)
                   GROUP BY m.api_name ORDER BY 1"#,
            )
            .fetch_all(&self.pool)
            .await
            .unwrap_or_default();
            let pending = self
                .scalar("SELECT count(*) FROM notifications WHERE state = 'pending'")
                .await;
            panic!(
                "not settled within {limit:?}: (api, last row, watermark) {marks:?}; \
                 {pending} notifications pending; logs:\n{}",
                logs(services)
            );
        }
    }

    /// Anomalies of an endpoint: (timestamp, score, severity).
    pub async fn anomalies(&self, api: &str) -> Vec<(DateTime<Utc>, f64, String)> {
        sqlx::query_as(
            r#"SELECT "timestamp", anomaly_score, severity FROM anomalies
               WHERE api_name = $1 ORDER BY "timestamp""#,
        )
        .bind(api)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Notifications of the email channel: (kind, api, subject, state).
    pub async fn emails_queued(&self) -> Vec<(String, Option<String>, String, String)> {
        sqlx::query_as(
            "SELECT kind, api_name, subject, state FROM notifications
             WHERE channel = 'email' ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Every queued email was sent, and the SMTP server received each one
    /// exactly once (same subjects, same number of times), nothing else.
    pub async fn assert_each_email_sent_once(&self) {
        let queued = self.emails_queued().await;
        let not_sent: Vec<_> = queued.iter().filter(|n| n.3 != "sent").collect();
        assert!(not_sent.is_empty(), "notifications not sent: {not_sent:?}");
        let mut want: BTreeMap<String, usize> = BTreeMap::new();
        for n in &queued {
            *want.entry(n.2.clone()).or_default() += 1;
        }
        let mut got: BTreeMap<String, usize> = BTreeMap::new();
        for m in self.smtp.mails() {
            *got.entry(subject(&m)).or_default() += 1;
        }
        assert_eq!(
            got, want,
            "emails received (left) vs notifications in the outbox (right)"
        );
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("service logs kept in {}", dir.keep().display());
            }
        }
    }
}

/// Sets (or replaces) variables.
fn set(env: &mut Vec<(String, String)>, extra: &[(&str, &str)]) {
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
}

/// The last lines of each service's log.
pub fn logs(services: &[&Service]) -> String {
    services
        .iter()
        .map(|s| format!("--- {} ---\n{}", s.label(), tail(&s.log(), 30)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Seconds between consecutive rows.
pub fn gaps(rows: &[(DateTime<Utc>, bool)]) -> Vec<f64> {
    rows.windows(2)
        .map(|w| (w[1].0 - w[0].0).num_milliseconds() as f64 / 1000.0)
        .collect()
}

pub fn subject(m: &Mail) -> String {
    let parsed = mailparse::parse_mail(m.data.as_bytes()).unwrap();
    parsed
        .headers
        .iter()
        .find(|h| h.get_key() == "Subject")
        .map(|h| h.get_value())
        .unwrap_or_default()
}

/// The plain-text part.
pub fn text(m: &Mail) -> String {
    let parsed = mailparse::parse_mail(m.data.as_bytes()).unwrap();
    let part = parsed
        .subparts
        .iter()
        .find(|p| p.ctype.mimetype == "text/plain")
        .unwrap_or(&parsed);
    part.get_body().unwrap().replace("\r\n", "\n")
}

/// How many of `mails` have exactly this subject.
/// Emails whose subject is `subj` or starts with `subj ` (an incident's
/// subject goes on with its reason).
pub fn count(mails: &[Mail], subj: &str) -> usize {
    mails
        .iter()
        .filter(|m| {
            let s = subject(m);
            s == subj || s.starts_with(&format!("{subj} "))
        })
        .count()
}

/// Every failed check has an anomaly with the failure rule's score for its
/// place in its run of failures: nothing skipped, nothing scored twice
/// with a lost streak (as after a restart that forgot the rolling state).
pub async fn assert_failures_scored_by_the_rule(stack: &Stack, api: &str) {
    let rows = stack.rows(api).await;
    let anomalies: BTreeMap<DateTime<Utc>, (f64, String)> = stack
        .anomalies(api)
        .await
        .into_iter()
        .map(|(t, s, sev)| (t, (s, sev)))
        .collect();
    let mut streak = 0u32;
    let mut failures = 0;
    for (ts, ok) in rows {
        if ok {
            streak = 0;
            continue;
        }
        streak += 1;
        failures += 1;
        let want = apimon_core::features::failure_score(streak);
        match anomalies.get(&ts) {
            None => panic!("{api}: failed check at {ts} (#{streak} in a row) has no anomaly"),
            Some((score, _)) => assert!(
                (score - want).abs() < 1e-9,
                "{api}: failed check at {ts} (#{streak} in a row) scored {score}, want {want}"
            ),
        }
    }
    assert!(failures > 0, "{api}: the test made it fail");
}
