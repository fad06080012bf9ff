//! Assertions on HTTP checks (body, regex, JSON, headers, a hard response
//! time limit) and `kind = "tcp"` checks, against loopback servers.

#![allow(clippy::unwrap_used)]

mod helpers;

use std::time::Duration;

use apimon_core::db::metrics::MetricRow;
use apimon_testkit::http::Reply;
use helpers::Harness;

const JSON: &[(&str, &str)] = &[("content-type", "application/json")];

async fn run_once(h: &Harness, toml: &str) {
    let cfg = h.config(toml, &[]);
    pinger::run(cfg, h.pinger_pool(), Some(1), std::future::pending())
        .await
        .unwrap();
}

async fn only_row(h: &Harness, api: &str) -> MetricRow {
    let rows = h.rows(api).await;
    assert_eq!(rows.len(), 1, "{api}: {rows:?}");
    rows.into_iter().next().unwrap()
}

fn assert_failed(row: &MetricRow, starts: &str) {
    assert!(!row.success, "{row:?}");
    assert_eq!(row.error_kind.as_deref(), Some("assertion"), "{row:?}");
    let msg = row.error_message.as_deref().unwrap();
    assert!(
        msg.starts_with(starts),
        "`{starts}` at the start of {msg:?}"
    );
    assert!(
        !msg.contains("S3CR3T") && !msg.contains("127.0.0.1"),
        "{msg}"
    );
}

#[tokio::test]
async fn matching_answers_pass_and_each_failed_assertion_is_named_with_what_was_seen() {
    let h = Harness::new().await;
    let healthy = r#"{"status":"ok","version":"2.7","checks":[{"name":"db","up":true}]}"#;
    let degraded = r#"{"status":"degraded","version":"2.7","checks":[{"name":"db","up":false}]}"#;
    h.server.set("/healthy", Reply::body(healthy, JSON));
    h.server.set("/degraded", Reply::body(degraded, JSON));
    h.server.set(
        "/html",
        Reply::body("<html>maintenance</html>", &[("content-type", "text/html")]),
    );
    h.server.set("/slow", Reply::delayed(400));
    // Every assertion at once, on one entry per answer: the key in the
    // query must never reach a message.
    let all = r#"
expect_body = '"status":"ok"'
expect_body_regex = '"version":\s*"2\.\d+"'
expect_json = { "$.status" = "ok", "$.checks[?@.name == 'db'].up" = true }
expect_headers = { Content-Type = "application/json" }
max_response_time = "2s"
"#;
    let entry = |name: &str, path: &str, extra: &str| {
        format!(
            "[[api]]\nname = \"{name}\"\nurl = \"{}?key=S3CR3T\"\n{extra}\n",
            h.server.url(path)
        )
    };
    let toml = [
        entry("healthy", "/healthy", all),
        entry(
            "degraded-body",
            "/degraded",
            "expect_body = '\"status\":\"ok\"'",
        ),
        entry(
            "degraded-regex",
            "/degraded",
            "expect_body_regex = '\"status\":\"(ok|warn)\"'",
        ),
        entry(
            "degraded-json",
            "/degraded",
            "expect_json = { \"$.status\" = \"ok\" }",
        ),
        entry(
            "missing-path",
            "/healthy",
            "expect_json = { \"$.uptime\" = 1 }",
        ),
        entry(
            "not-json",
            "/html",
            "expect_json = { \"$.status\" = \"ok\" }",
        ),
        entry(
            "wrong-header",
            "/html",
            "expect_headers = { Content-Type = \"application/json\" }",
        ),
        entry("too-slow", "/slow", "max_response_time = \"100ms\""),
    ]
    .concat();
    run_once(&h, &toml).await;

    let ok = only_row(&h, "healthy").await;
    assert!(ok.success, "{ok:?}");
    assert_eq!(ok.error_kind, None);
    assert_eq!(ok.response_size_bytes, Some(healthy.len() as i64));

    assert_failed(
        &only_row(&h, "degraded-body").await,
        r#"expect_body: "\"status\":\"ok\"" not found in the body, which begins "{\"status\":\"degraded\""#,
    );
    assert_failed(
        &only_row(&h, "degraded-regex").await,
        "expect_body_regex: /",
    );
    assert_failed(
        &only_row(&h, "degraded-json").await,
        r#"expect_json: $.status is "degraded", expected "ok""#,
    );
    assert_failed(
        &only_row(&h, "missing-path").await,
        "expect_json: $.uptime selects nothing, expected 1",
    );
    assert_failed(
        &only_row(&h, "not-json").await,
        "expect_json: the body is not JSON",
    );
    assert_failed(
        &only_row(&h, "wrong-header").await,
        r#"expect_headers: content-type is "text/html", expected "application/json""#,
    );
    let slow = only_row(&h, "too-slow").await;
    assert_failed(&slow, "max_response_time: took ");
    // A failed assertion still has the answer's status, size and time: the
    // features and the detector see the slowness.
    assert_eq!(slow.status_code, Some(200));
    assert!(slow.response_time_ms.unwrap() >= 400.0, "{slow:?}");
}

/// Assertions read at most `max_body_bytes`; the size is still counted to
/// the end of the body.
#[tokio::test]
async fn assertions_read_at_most_max_body_bytes_and_the_size_is_counted_to_the_end() {
    let h = Harness::new().await;
    let big = format!("{}needle", "x".repeat(2 << 20));
    h.server.set("/big", Reply::body(big.clone(), &[]));
    let entry = |name: &str, extra: &str| {
        format!(
            "[[api]]\nname = \"{name}\"\nurl = \"{}\"\ntimeout = \"20s\"\nexpect_body = \"needle\"\n{extra}\n",
            h.server.url("/big")
        )
    };
    let toml = [
        entry("small-window", "max_body_bytes = 1024"),
        entry("whole", "max_body_bytes = 4194304"),
    ]
    .concat();
    run_once(&h, &toml).await;
    let cut = only_row(&h, "small-window").await;
    assert_failed(
        &cut,
        "expect_body: \"needle\" not found in the body (first 1024 bytes read)",
    );
    assert_eq!(cut.response_size_bytes, Some(big.len() as i64));
    let whole = only_row(&h, "whole").await;
    assert!(whole.success, "{whole:?}");
    assert_eq!(whole.response_size_bytes, Some(big.len() as i64));
}

/// `kind = "tcp"`: a listener that is up is a success whose time is the
/// connect; once closed, the check fails as `connect`.
#[tokio::test]
async fn a_tcp_check_succeeds_on_a_listener_and_fails_once_it_is_closed() {
    let h = Harness::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let toml = format!(
        "[[api]]\nname = \"db-port\"\nkind = \"tcp\"\naddress = \"{address}\"\ntimeout = \"2s\"\n"
    );
    run_once(&h, &toml).await;
    drop(listener);
    // The port is closed now: connection refused.
    tokio::time::sleep(Duration::from_millis(50)).await;
    run_once(&h, &toml).await;
    let rows = h.rows("db-port").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (up, down) = (&rows[0], &rows[1]);
    assert!(up.success, "{up:?}");
    assert_eq!(up.url, format!("tcp://{address}"));
    assert_eq!(up.status_code, None);
    let connect_ms = up.response_time_ms.unwrap();
    assert!(connect_ms > 0.0 && connect_ms < 2000.0, "{up:?}");
    assert!(!down.success, "{down:?}");
    assert_eq!(down.error_kind.as_deref(), Some("connect"), "{down:?}");
    assert_eq!(down.response_time_ms, None);

    // max_response_time holds for a connect too: no connect takes 1 ns.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    run_once(
        &h,
        &format!(
            "[[api]]\nname = \"too-slow\"\nkind = \"tcp\"\naddress = \"{address}\"\n\
             max_response_time = \"1ns\"\n"
        ),
    )
    .await;
    let slow = only_row(&h, "too-slow").await;
    assert_failed(&slow, "max_response_time: took ");
    assert!(slow.response_time_ms.is_some(), "{slow:?}");
}

/// `pinger --check-config` lists each endpoint's kind and assertions.
#[test]
fn check_config_lists_each_endpoints_kind_and_assertions() {
    let lines = helpers::check_config_lines(
        r#"
[[api]]
name = "orders"
url = "https://orders.test/health?key=S3CR3T"
expect_json = { "$.status" = "ok" }
expect_headers = { Content-Type = "application/json" }
max_response_time = "2s"
[[api]]
name = "db"
kind = "tcp"
address = "db.test:5432"
timeout = "5s"
"#,
        &[],
    );
    assert_eq!(
        lines,
        vec![
            "orders\tGET https://orders.test/health?key=REDACTED\tevery 15s\ttimeout 30s\texpect 2xx\t\
             $.status == \"ok\"\theader content-type: \"application/json\"\tresponse within 2s",
            "db\ttcp db.test:5432\tevery 15s\ttimeout 5s",
        ]
    );
}
