//! Every kind of check through one pipeline (issue 14): https endpoints of
//! a private CA (trusted through `ca_file`) whose certificates expire in 10
//! and 2 days, a TCP port, a DNS name and a heartbeat, checked by the real
//! pinger, scored by the detector and paged by the alerter over SMTP.

#![allow(clippy::unwrap_used)]

mod helpers;

use std::time::Duration;

use apimon_testkit::dns::DnsServer;
use apimon_testkit::http::{HttpServer, Reply};
use apimon_testkit::procs::{eventually, http_request, tail};
use apimon_testkit::smtp::Mail;
use apimon_testkit::tls::TestCa;
use helpers::{logs, subject, Stack};

/// Mails whose subject contains `needle`.
fn count(mails: &[Mail], needle: &str) -> usize {
    mails.iter().filter(|m| subject(m).contains(needle)).count()
}

const TOKEN: &str = "nightly-T0KEN-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_check_writes_rows_and_expiring_certificates_page_once_per_level() {
    let t = apimon_testkit::fresh_database().await;
    let mut stack = Stack::new(&t.url, &[("web", Reply::ok())], &[]).await;
    let ca = TestCa::new();
    ca.write_pem(&stack.dir().join("ca.pem"));
    let tls10 = HttpServer::start_tls(&ca.leaf_for_days(10)).await;
    let tls2 = HttpServer::start_tls(&ca.leaf_for_days(2)).await;
    for s in [&tls10, &tls2] {
        s.set("/health", Reply::body(r#"{"status":"ok"}"#, &[]));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dns = DnsServer::start().await;
    dns.set("api.example.test", "A", &["192.0.2.10"]);
    stack.add_apis(
        &format!(
            r#"
[[api]]
name = "tls10"
url = "{}"
ca_file = "ca.pem"
expect_json = {{ "$.status" = "ok" }}

[[api]]
name = "tls2"
url = "{}"
ca_file = "ca.pem"

[[api]]
name = "port"
kind = "tcp"
address = "{}"

[[api]]
name = "record"
kind = "dns"
dns_name = "api.example.test"
expect = "192.0.2.10"
resolver = "{}"

[[api]]
name = "nightly"
kind = "heartbeat"
token = "{TOKEN}"
interval = "1s"
grace = "30s"
"#,
            tls10.url("/health"),
            tls2.url("/health"),
            port.local_addr().unwrap(),
            dns.addr(),
        ),
        &["tls10", "tls2", "port", "record", "nightly"],
    );
    let (pinger, detector, alerter) = stack.start_all().await;
    let services = [&pinger, &detector, &alerter];
    let beat = http_request(pinger.http_port(), "POST", &format!("/heartbeat/{TOKEN}")).await;
    assert_eq!(beat.map(|b| b.0), Some(200), "{}", tail(&pinger.log(), 20));
    // The job keeps beating, every 500 ms.
    let http_port = pinger.http_port();
    let job = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            http_request(http_port, "POST", &format!("/heartbeat/{TOKEN}")).await;
        }
    });

    // Rows of every kind, all successful.
    let all_rows = eventually(Duration::from_secs(60), || async {
        stack
            .scalar(
                "SELECT count(DISTINCT api_name) FROM api_metrics
                 WHERE success AND api_name IN ('tls10', 'tls2', 'port', 'record', 'nightly')",
            )
            .await
            == 5
    })
    .await;
    let kinds: Vec<(String, String)> =
        sqlx::query_as("SELECT api_name, kind FROM api_endpoints ORDER BY api_name")
            .fetch_all(&stack.pool)
            .await
            .unwrap();
    // Each certificate paged once (both open in one detector pass, so
    // they may share one notification), and nothing else.
    stack
        .smtp
        .wait_for(Duration::from_secs(60), |m| {
            count(m, "tls10") >= 1 && count(m, "tls2") >= 1
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    job.abort();
    let mails = stack.smtp.mails();
    let incidents: Vec<(String, String, String)> =
        sqlx::query_as("SELECT api_name, kind, peak_severity FROM incidents ORDER BY api_name")
            .fetch_all(&stack.pool)
            .await
            .unwrap();
    let expiry_days: Vec<(String, f64)> = sqlx::query_as(
        "SELECT api_name, extract(epoch FROM max(tls_expires_at) - now())::float8 / 86400
         FROM api_metrics WHERE tls_expires_at IS NOT NULL GROUP BY api_name ORDER BY api_name",
    )
    .fetch_all(&stack.pool)
    .await
    .unwrap();
    let detail = || format!("\nlogs:\n{}", tail(&logs(&services), 60));
    assert!(all_rows, "rows of every kind{}", detail());
    assert_eq!(
        kinds,
        [
            ("nightly", "heartbeat"),
            ("port", "tcp"),
            ("record", "dns"),
            ("tls10", "http"),
            ("tls2", "http"),
            ("web", "http"),
        ]
        .map(|(a, k)| (a.to_string(), k.to_string()))
    );
    assert_eq!(expiry_days.len(), 2, "{expiry_days:?}");
    assert!((9.9..10.0).contains(&expiry_days[0].1), "{expiry_days:?}");
    assert!((1.9..2.0).contains(&expiry_days[1].1), "{expiry_days:?}");
    assert_eq!(
        incidents,
        [
            ("tls10", "certificate", "high"),
            ("tls2", "certificate", "critical")
        ]
        .map(|(a, k, s)| (a.to_string(), k.to_string(), s.to_string())),
        "{}",
        detail()
    );
    let subjects: Vec<String> = mails.iter().map(subject).collect();
    assert_eq!(count(&mails, "tls10"), 1, "{subjects:?}{}", detail());
    assert_eq!(count(&mails, "tls2"), 1, "{subjects:?}");
    let pages = mails.len() - count(&mails, "[apimon] Status:");
    assert_eq!(
        pages,
        count(&mails, "tls"),
        "only the certificates paged: {subjects:?}"
    );
    let page = mails
        .iter()
        .find(|m| subject(m).contains("tls2"))
        .map(helpers::text)
        .unwrap();
    assert!(page.contains("certificate (critical)"), "{page}");
    assert!(page.contains("Certificate expires"), "{page}");
}
