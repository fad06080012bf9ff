//! The Slack and Teams channels against webhook receivers on loopback: what
//! they are sent when a notification carries hostile text, and what is
//! kept of a failing receiver's answer (bounded, without the URL's token).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use alerter::channels::Sender;
use alerter::config::AlerterConfig;
use apimon_core::db::{self, notifications};
use apimon_core::{DbConfig, Env};
use apimon_testkit::http::{HttpServer, Reply};
use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An API name and an error text from outside that try every trick.
const API: &str = "*evil* <https://x|click> a_b";
const ERROR: &str = "<!channel> <@U123> [pay here](https://evil.test) `rm` ~gone~ # big & bold";
const DASHBOARD: &str = "http://grafana.test:3000/d/apimon/api-monitoring?var-api=a_b";

/// The token parts of the webhook URLs below.
const TOKEN_PATH: &str = "tok3n-path-SECRET";
const TOKEN_QUERY: &str = "sig-query-SECRET";

fn sender(pairs: &[(&str, String)]) -> Sender {
    let cfg = AlerterConfig::from_env(&Env::from_pairs(pairs.iter().cloned())).unwrap();
    Sender::new(&cfg.channels).unwrap()
}

fn notification(channel: &str) -> notifications::Notification {
    notifications::Notification {
        id: 1,
        kind: "down".into(),
        api_name: Some(API.into()),
        channel: channel.into(),
        dedup_key: "down:x".into(),
        subject: format!("[apimon] DOWN: {API}"),
        body_text: format!("API: {API}\nLast error: {ERROR}\n\nDashboard: {DASHBOARD}\n"),
        body_html: None,
        payload: serde_json::json!({ "kind": "down", "api": API, "dashboard_url": DASHBOARD }),
        state: "pending".into(),
        attempts: 0,
        last_error: None,
        created_at: Utc::now(),
        sent_at: None,
    }
}

fn posted(hooks: &HttpServer, path: &str) -> serde_json::Value {
    let r = hooks
        .requests()
        .into_iter()
        .find(|r| r.path == path)
        .unwrap();
    assert_eq!(r.method, "POST");
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test]
async fn slack_shows_a_hostile_api_name_and_error_literally_under_a_bold_subject() {
    let hooks = HttpServer::start().await;
    hooks.set("/slack", Reply::ok());
    let s = sender(&[("SLACK_WEBHOOK_URL", hooks.url("/slack"))]);

    s.send(&notification("slack")).await.unwrap();

    let text = posted(&hooks, "/slack")["text"]
        .as_str()
        .unwrap()
        .to_string();
    let (subject, body) = text.split_once('\n').unwrap();
    assert_eq!(
        subject,
        "*[apimon] DOWN: \u{2217}evil\u{2217} &lt;https://x|click&gt; a\u{02CD}b*"
    );
    assert!(
        body.contains(
            "Last error: &lt;!channel&gt; &lt;@U123&gt; [pay here](https://evil.test) \
             \u{02CB}rm\u{02CB} \u{223C}gone\u{223C} # big &amp; bold"
        ),
        "{body}"
    );
    // The only markup left is ours: the bold subject; the link still works.
    let inner = &subject[1..subject.len() - 1];
    assert!(!inner.contains(['*', '_', '~', '`', '<', '>']), "{inner}");
    assert!(!body.contains(['<', '>']), "{body}");
    assert!(body.contains(&format!("Dashboard: {DASHBOARD}")), "{body}");
}

#[tokio::test]
async fn teams_gets_an_adaptive_card_with_escaped_text_and_a_dashboard_button() {
    let hooks = HttpServer::start().await;
    hooks.set("/teams", Reply::ok());
    let s = sender(&[("TEAMS_WEBHOOK_URL", hooks.url("/teams"))]);

    s.send(&notification("teams")).await.unwrap();

    let m = posted(&hooks, "/teams");
    assert_eq!(m["type"], "message");
    let attachment = &m["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    let blocks = card["body"].as_array().unwrap();
    let texts: Vec<&str> = blocks.iter().map(|b| b["text"].as_str().unwrap()).collect();
    assert_eq!(
        texts,
        [
            r"\[apimon\] DOWN: \*evil\* \<https://x\|click\> a\_b",
            "API: \\*evil\\* \\<https://x\\|click\\> a\\_b\n\n\
             Last error: \\<\\!channel\\> \\<@U123\\> \\[pay here\\]\\(https://evil\\.test\\) \
             \\`rm\\` \\~gone\\~ \\# big \\& bold",
            r"Dashboard: http://grafana\.test:3000/d/apimon/api\-monitoring?var\-api=a\_b",
        ]
    );
    assert_eq!(
        (&blocks[0]["weight"], &blocks[0]["size"]),
        (&serde_json::json!("Bolder"), &serde_json::json!("Large"))
    );
    assert!(blocks
        .iter()
        .all(|b| b["type"] == "TextBlock" && b["wrap"] == true));
    assert_eq!(
        card["actions"],
        serde_json::json!([{"type": "Action.OpenUrl", "title": "Open dashboard", "url": DASHBOARD}])
    );
}

#[tokio::test]
async fn teams_format_messagecard_keeps_the_old_card_with_escaped_text() {
    let hooks = HttpServer::start().await;
    hooks.set("/teams", Reply::ok());
    let s = sender(&[
        ("TEAMS_WEBHOOK_URL", hooks.url("/teams")),
        ("TEAMS_FORMAT", "messagecard".into()),
    ]);

    s.send(&notification("teams")).await.unwrap();

    let m = posted(&hooks, "/teams");
    assert_eq!(m["@type"], "MessageCard");
    assert_eq!(m["@context"], "http://schema.org/extensions");
    // Title and summary are plain text in a MessageCard: shown as they are.
    assert_eq!(m["title"], format!("[apimon] DOWN: {API}"));
    let text = m["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "API: \\*evil\\* \\<https://x\\|click\\> a\\_b  \nLast error: \\<\\!channel\\>"
        ),
        "{text}"
    );
    assert!(
        text.contains(r"\[pay here\]\(https://evil\.test\)"),
        "{text}"
    );
}

/// A receiver whose path and query are the token, answering 500 with
/// 10 MiB of body that starts by echoing the request line.
async fn failing_receiver() -> (HttpServer, String) {
    let hooks = HttpServer::start().await;
    let path = format!("/hook/{TOKEN_PATH}");
    let mut body = format!("no workflow at POST {path}?sig={TOKEN_QUERY} (token {TOKEN_PATH})\n");
    body.push_str(&"x".repeat(10 << 20));
    hooks.set(
        &path,
        Reply::Status {
            code: 500,
            body,
            delay: Duration::ZERO,
        },
    );
    let url = hooks.url(&format!("{path}?sig={TOKEN_QUERY}"));
    (hooks, url)
}

fn assert_bounded_and_tokenless(e: &str) {
    assert!(e.contains("500"), "{e}");
    assert!(e.chars().count() < 300, "{} chars", e.chars().count());
    assert!(
        !e.contains(TOKEN_PATH) && !e.contains(TOKEN_QUERY) && !e.contains("/hook"),
        "{e}"
    );
    assert!(e.contains("[redacted]"), "{e}");
}

#[tokio::test]
async fn a_webhook_answering_500_with_10_mib_fails_quickly_with_a_short_tokenless_error() {
    let (_hooks, url) = failing_receiver().await;
    let s = sender(&[("TEAMS_WEBHOOK_URL", url)]);

    let t = Instant::now();
    let e = s.send(&notification("teams")).await.unwrap_err();

    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_bounded_and_tokenless(&e);
    assert!(e.contains("no workflow at POST [redacted]"), "{e}");
}

/// A receiver that answers `500` announcing 10 MiB of body, sends 64 KiB
/// of it and then holds the connection open without sending the rest.
async fn stalling_receiver() -> (tokio::task::JoinHandle<()>, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hook/{TOKEN_PATH}?sig={TOKEN_QUERY}",
        listener.local_addr().unwrap()
    );
    let task = tokio::spawn(async move {
        let mut open = Vec::new();
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // The head and the (small JSON) body of the request.
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            let head = format!(
                "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
                10 << 20
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&vec![b'y'; 64 << 10]).await;
            let _ = stream.flush().await;
            open.push(stream);
        }
    });
    (task, url)
}

#[tokio::test]
async fn a_webhook_that_never_finishes_its_error_body_is_not_waited_for() {
    let (server, url) = stalling_receiver().await;
    let s = sender(&[("SLACK_WEBHOOK_URL", url)]);

    let t = Instant::now();
    let e = s.send(&notification("slack")).await.unwrap_err();

    // Reading the whole body would wait for the client's 15 s timeout.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_bounded_and_tokenless(&e);
    assert!(e.ends_with('…'), "{e}");
    server.abort();
}

#[tokio::test]
async fn the_outbox_row_keeps_a_short_error_without_the_token() {
    let t = apimon_testkit::fresh_database().await;
    let pool = db::connect(&DbConfig::from_url(&t.url).unwrap())
        .await
        .unwrap();
    db::migrate(&pool).await.unwrap();
    let (_hooks, url) = failing_receiver().await;
    let mut tx = pool.begin().await.unwrap();
    let n = notification("teams");
    notifications::enqueue(
        &mut tx,
        &notifications::NewNotification {
            kind: n.kind,
            api_name: n.api_name,
            channel: n.channel,
            dedup_key: n.dedup_key,
            subject: n.subject,
            body_text: n.body_text,
            body_html: None,
            payload: n.payload,
            state: "pending".into(),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let cfg = AlerterConfig::from_env(&Env::from_pairs([
        ("DATABASE_URL", t.url.clone()),
        ("TEAMS_WEBHOOK_URL", url),
        ("ALERT_POLL_INTERVAL", "200ms".into()),
        ("ALERT_RETRY_BASE", "200ms".into()),
        ("ALERT_RETRY_MAX_DELAY", "500ms".into()),
        ("ALERT_CHECK_INTERVAL", "1d".into()),
    ]))
    .unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let service_pool = db::lazy_pool(&cfg.db);
    let run = tokio::spawn(alerter::service::run(cfg, service_pool, async {
        let _ = rx.await;
    }));

    let start = Instant::now();
    let row = loop {
        let rows = notifications::all(&pool).await.unwrap();
        let row = rows.into_iter().find(|r| r.channel == "teams").unwrap();
        if row.attempts >= 1 && row.last_error.is_some() {
            break row;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{row:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    assert_ne!(row.state, "sent");
    assert_bounded_and_tokenless(row.last_error.as_deref().unwrap());
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
}
