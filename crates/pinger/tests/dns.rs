//! `kind = "dns"` checks against a DNS server on loopback: answers,
//! `expect`, unknown names and types, a server that never answers, and
//! no caching between checks.

#![allow(clippy::unwrap_used)]

mod helpers;

use std::time::{Duration, Instant};

use apimon_core::db::metrics::MetricRow;
use apimon_testkit::dns::DnsServer;
use helpers::Harness;

async fn run_rounds(h: &Harness, toml: &str, rounds: u64) {
    let cfg = h.config(toml, &[]);
    pinger::run(cfg, h.pinger_pool(), Some(rounds), std::future::pending())
        .await
        .unwrap();
}

async fn only_row(h: &Harness, api: &str) -> MetricRow {
    let rows = h.rows(api).await;
    assert_eq!(rows.len(), 1, "{api}: {rows:?}");
    rows.into_iter().next().unwrap()
}

/// One `[[api]]` of kind dns asking `server`, checked every 100 ms (so
/// that its first check comes within 100 ms).
fn entry(server: &DnsServer, name: &str, keys: &str) -> String {
    format!(
        "[[api]]\nname = \"{name}\"\nkind = \"dns\"\nresolver = \"{}\"\ninterval = \"100ms\"\ntimeout = \"2s\"\n{keys}\n",
        server.addr()
    )
}

fn assert_failed(row: &MetricRow, kind: &str, message: &str) {
    assert!(!row.success, "{row:?}");
    assert_eq!(row.error_kind.as_deref(), Some(kind), "{row:?}");
    let msg = row.error_message.as_deref().unwrap();
    assert_eq!(msg, message, "{row:?}");
}

#[tokio::test]
async fn answers_pass_and_a_missing_expected_answer_an_unknown_name_or_type_fail() {
    let h = Harness::new().await;
    let dns = DnsServer::start().await;
    dns.set("api.example.com", "A", &["192.0.2.10", "192.0.2.11"]);
    dns.set(
        "example.com",
        "MX",
        &["10 mail.example.com.", "20 backup.example.com."],
    );
    let toml = [
        entry(&dns, "record", "dns_name = \"api.example.com\""),
        entry(
            &dns,
            "expected",
            "dns_name = \"API.example.com.\"\nexpect = \"192.0.2.11\"",
        ),
        entry(
            &dns,
            "expected-mx",
            "dns_name = \"example.com\"\nrecord_type = \"mx\"\nexpect = \"20 Backup.Example.com.\"",
        ),
        entry(
            &dns,
            "moved",
            "dns_name = \"api.example.com\"\nexpect = \"192.0.2.99\"",
        ),
        entry(&dns, "unknown-name", "dns_name = \"nosuch.example.com\""),
        entry(
            &dns,
            "no-such-type",
            "dns_name = \"api.example.com\"\nrecord_type = \"TXT\"",
        ),
    ]
    .concat();
    run_rounds(&h, &toml, 1).await;

    let ok = only_row(&h, "record").await;
    assert!(ok.success, "{ok:?}");
    assert_eq!(ok.url, format!("dns://{}/api.example.com/A", dns.addr()));
    assert_eq!((ok.status_code, ok.response_size_bytes), (None, None));
    let ms = ok.response_time_ms.unwrap();
    assert!(ms > 0.0 && ms < 2000.0, "{ok:?}");
    for api in ["expected", "expected-mx"] {
        let row = only_row(&h, api).await;
        assert!(row.success, "{row:?}");
    }
    let moved = only_row(&h, "moved").await;
    assert_failed(
        &moved,
        "assertion",
        "expect: \"192.0.2.99\" not among the A answers for api.example.com: \
         \"192.0.2.10\", \"192.0.2.11\"",
    );
    // The answer came: its time is kept.
    assert!(moved.response_time_ms.is_some(), "{moved:?}");
    assert_failed(
        &only_row(&h, "unknown-name").await,
        "dns",
        "no A record for nosuch.example.com (NXDOMAIN: the name does not exist)",
    );
    assert_failed(
        &only_row(&h, "no-such-type").await,
        "dns",
        "no TXT record for api.example.com",
    );
    // Each entry asked the server once, for its name and type.
    assert_eq!(dns.queries_for("api.example.com", "A"), 3);
    assert_eq!(dns.queries_for("example.com", "MX"), 1);
    assert_eq!(dns.queries_for("nosuch.example.com", "A"), 1);
    assert_eq!(dns.queries_for("api.example.com", "TXT"), 1);
}

#[tokio::test]
async fn a_server_that_never_answers_fails_as_timeout_within_the_endpoints_timeout() {
    let h = Harness::new().await;
    let dns = DnsServer::start().await;
    dns.set("api.example.com", "A", &["192.0.2.10"]);
    dns.silence();
    let toml = format!(
        "[[api]]\nname = \"silent\"\nkind = \"dns\"\ndns_name = \"api.example.com\"\n\
         resolver = \"{}\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\n",
        dns.addr()
    );
    let started = Instant::now();
    run_rounds(&h, &toml, 1).await;
    // The first check within 100 ms, its 500 ms, and the flush.
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2000), "took {took:?}");
    let row = only_row(&h, "silent").await;
    assert_failed(
        &row,
        "timeout",
        "no answer for A api.example.com within 500 ms",
    );
    assert_eq!(row.response_time_ms, None);
    // It was asked, once: no retry past the timeout.
    assert_eq!(
        dns.queries_for("api.example.com", "A"),
        1,
        "{:?}",
        dns.queries()
    );
}

#[tokio::test]
async fn every_check_asks_the_server_nothing_is_cached() {
    let h = Harness::new().await;
    let dns = DnsServer::start().await;
    dns.set("api.example.com", "A", &["192.0.2.10"]);
    let toml = [
        entry(&dns, "found", "dns_name = \"api.example.com\""),
        entry(&dns, "not-found", "dns_name = \"nosuch.example.com\""),
    ]
    .concat();
    run_rounds(&h, &toml, 2).await;
    let rows = h.rows("found").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.success), "{rows:?}");
    assert_eq!(h.rows("not-found").await.len(), 2);
    // Two rounds, two queries each: neither answers nor NXDOMAIN are kept.
    assert_eq!(dns.queries_for("api.example.com", "A"), 2);
    assert_eq!(dns.queries_for("nosuch.example.com", "A"), 2);
}

/// `pinger --check-config` lists a dns entry's type, name, resolver and
/// expected answer.
#[test]
fn check_config_lists_a_dns_entrys_type_name_resolver_and_expected_answer() {
    let lines = helpers::check_config_lines(
        r#"
[[api]]
name = "api record"
kind = "dns"
dns_name = "api.example.com"
expect = "192.0.2.10"
resolver = "127.0.0.1:5353"
timeout = "2s"
[[api]]
name = "mail"
kind = "dns"
dns_name = "example.com."
record_type = "mx"
"#,
        &[],
    );
    assert_eq!(
        lines,
        vec![
            "api record\tdns A api.example.com @127.0.0.1:5353\tevery 15s\ttimeout 2s\texpect 192.0.2.10",
            "mail\tdns MX example.com\tevery 15s\ttimeout 30s",
        ]
    );
}
