//! Email threading against a real PostgreSQL and a real SMTP server: an
//! incident's reminders and resolution answer its opening's `Message-ID`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use alerter::channels::thread::message_id;
use alerter::config::AlerterConfig;
use apimon_core::db;
use apimon_core::incidents::{Change, Evidence, Incident, Kind, State, Transition};
use apimon_core::model::Severity;
use apimon_core::Env;
use apimon_testkit::smtp::{Mail, SmtpServer};
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::PgPool;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(20);
const DOMAIN: &str = "example.test";

mod helpers;
use helpers::{database, Db};

fn config(db: &Db, smtp: &SmtpServer, extra: &[(&str, &str)]) -> AlerterConfig {
    let mut pairs: Vec<(String, String)> = [
        ("DATABASE_URL", db.url.as_str()),
        ("ALERT_POLL_INTERVAL", "200ms"),
        ("ALERT_CHECK_INTERVAL", "1d"),
        ("ALERT_GROUP_WAIT", "1s"),
        ("ALERT_EMAIL_FROM", "apimon@example.test"),
        ("ALERT_EMAIL_TO", "ops@example.test"),
        ("SMTP_HOST", "127.0.0.1"),
        ("SMTP_TLS", "none"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    pairs.push(("SMTP_PORT".into(), smtp.port().to_string()));
    AlerterConfig::from_env(&Env::from_pairs(pairs)).unwrap()
}

fn start(
    cfg: AlerterConfig,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let pool = db::lazy_pool(&cfg.db);
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(alerter::service::run(cfg, pool, async {
        let _ = rx.await;
    }));
    (stop, task)
}

fn incident(started: DateTime<Utc>) -> Incident {
    Incident {
        kind: Kind::Down,
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
            last_error: Some("connect: refused".into()),
            ..Evidence::default()
        },
        flaps: 0,
    }
}

async fn apply(pool: &PgPool, api: &str, change: Change, incident: Incident) {
    let mut tx = pool.begin().await.unwrap();
    db::incidents::apply(&mut tx, api, &[Transition { change, incident }])
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn resolve(pool: &PgPool, api: &str, mut i: Incident) {
    let now = Utc::now().trunc_subsecs(6);
    i.state = State::Resolved;
    i.recovered_at = Some(now);
    i.resolved_at = Some(now);
    apply(pool, api, Change::Resolved, i).await;
}

/// A header of a raw message, unfolded.
fn header(m: &Mail, key: &str) -> Option<String> {
    let parsed = mailparse::parse_mail(m.data.as_bytes()).unwrap();
    parsed
        .headers
        .iter()
        .find(|h| h.get_key().eq_ignore_ascii_case(key))
        .map(|h| h.get_value().trim().to_string())
}

fn with_subject<'a>(mails: &'a [Mail], needle: &str) -> Vec<&'a Mail> {
    mails
        .iter()
        .filter(|m| header(m, "Subject").is_some_and(|s| s.contains(needle)))
        .collect()
}

/// The `Message-ID` the opening notification's row derives.
async fn opening_id_in_db(pool: &PgPool) -> String {
    let (key, at): (String, DateTime<Utc>) = sqlx::query_as(
        "SELECT dedup_key, created_at FROM notifications
         WHERE channel = 'email' AND kind = 'incident_open'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    message_id(&key, at, DOMAIN)
}

#[tokio::test]
async fn reminders_and_the_resolution_answer_the_openings_message_id() {
    let db = database(&["api-a"]).await;
    let smtp = SmtpServer::start().await;
    let (stop, task) = start(config(&db, &smtp, &[("ALERT_REPEAT_INTERVAL", "2s")]));
    let i = incident(Utc::now() - chrono::Duration::minutes(1));
    apply(&db.pool, "api-a", Change::Opened, i.clone()).await;
    smtp.wait_for(WAIT, |m| !with_subject(m, "Still down: api-a").is_empty())
        .await;
    resolve(&db.pool, "api-a", i).await;
    smtp.wait_for(WAIT, |m| !with_subject(m, "RESOLVED: api-a").is_empty())
        .await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();

    let mails = smtp.mails();
    let opening = with_subject(&mails, "DOWN: api-a");
    assert_eq!(opening.len(), 1);
    let open_id = header(opening[0], "Message-ID").expect("the opening has a Message-ID");
    assert_eq!(
        open_id,
        opening_id_in_db(&db.pool).await,
        "derived from its row"
    );
    assert!(open_id.ends_with("@example.test>"), "{open_id}");
    assert_eq!(header(opening[0], "In-Reply-To"), None);

    let mut ids = vec![open_id.clone()];
    for m in with_subject(&mails, "Still down: api-a")
        .into_iter()
        .chain(with_subject(&mails, "RESOLVED: api-a"))
    {
        let subject = header(m, "Subject").unwrap_or_default();
        assert_eq!(header(m, "In-Reply-To"), Some(open_id.clone()), "{subject}");
        assert!(
            header(m, "References").is_some_and(|r| r.contains(&open_id)),
            "{subject}: {:?}",
            header(m, "References")
        );
        ids.push(header(m, "Message-ID").expect("every email has a Message-ID"));
    }
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
}

#[tokio::test]
async fn incidents_opened_in_one_email_and_resolved_apart_both_answer_that_email() {
    let db = database(&["api-a", "api-b"]).await;
    let smtp = SmtpServer::start().await;
    let (stop, task) = start(config(&db, &smtp, &[("ALERT_REPEAT_INTERVAL", "0")]));
    let started = Utc::now() - chrono::Duration::minutes(1);
    let a = incident(started);
    let b = incident(started + chrono::Duration::milliseconds(100));
    apply(&db.pool, "api-a", Change::Opened, a.clone()).await;
    apply(&db.pool, "api-b", Change::Opened, b.clone()).await;
    smtp.wait_for(WAIT, |m| !with_subject(m, "2 incidents opened").is_empty())
        .await;
    resolve(&db.pool, "api-a", a).await;
    smtp.wait_for(WAIT, |m| !with_subject(m, "RESOLVED: api-a").is_empty())
        .await;
    resolve(&db.pool, "api-b", b).await;
    smtp.wait_for(WAIT, |m| !with_subject(m, "RESOLVED: api-b").is_empty())
        .await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();

    let mails = smtp.mails();
    let opening = with_subject(&mails, "2 incidents opened");
    assert_eq!(opening.len(), 1);
    let open_id = header(opening[0], "Message-ID").unwrap();
    for api in ["api-a", "api-b"] {
        let resolution = with_subject(&mails, &format!("RESOLVED: {api}"));
        assert_eq!(resolution.len(), 1, "{api}");
        assert_eq!(
            header(resolution[0], "In-Reply-To"),
            Some(open_id.clone()),
            "{api}"
        );
    }
}
