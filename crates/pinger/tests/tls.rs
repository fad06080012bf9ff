//! https checks against loopback TLS servers whose certificates come from
//! a private CA: trusted through `ca_file` (and only then), with each
//! check's certificate expiry recorded in `tls_expires_at`.

#![allow(clippy::unwrap_used)]

mod helpers;

use apimon_testkit::http::{HttpServer, Reply};
use apimon_testkit::tls::TestCa;
use chrono::{DateTime, Utc};
use helpers::Harness;

fn expiry(identity: &apimon_testkit::tls::Identity) -> DateTime<Utc> {
    DateTime::from_timestamp(identity.not_after.unix_timestamp(), 0).unwrap()
}

#[tokio::test]
async fn certificates_of_a_private_ca_are_trusted_through_ca_file_and_their_expiry_is_recorded() {
    let h = Harness::new().await;
    let ca = TestCa::new();
    std::fs::create_dir(h.dir.path().join("certs")).unwrap();
    ca.write_pem(&h.dir.path().join("certs/ca.pem"));
    let (leaf10, leaf2) = (ca.leaf_for_days(10), ca.leaf_for_days(2));
    let in10 = HttpServer::start_tls(&leaf10).await;
    let in2 = HttpServer::start_tls(&leaf2).await;
    for s in [&in10, &in2] {
        s.set("/health", Reply::ok());
    }
    h.server.set("/health", Reply::ok());
    // ca_file is relative to apis.toml's directory. Three rounds: the
    // later ones reuse the kept-alive connection.
    let toml = format!(
        "[defaults]\ninterval = \"300ms\"\n[[api]]\nname = \"in10\"\nurl = \"{}\"\nca_file = \"certs/ca.pem\"\n\
         [[api]]\nname = \"in2\"\nurl = \"{}\"\nca_file = \"certs/ca.pem\"\n\
         [[api]]\nname = \"untrusted\"\nurl = \"{}\"\n\
         [[api]]\nname = \"plain\"\nurl = \"{}\"\n",
        in10.url("/health"),
        in2.url("/health"),
        in10.url("/health"),
        h.server.url("/health"),
    );
    let cfg = h.config(&toml, &[]);
    pinger::run(cfg, h.pinger_pool(), Some(3), std::future::pending())
        .await
        .unwrap();

    for (api, leaf) in [("in10", &leaf10), ("in2", &leaf2)] {
        let rows = h.rows(api).await;
        assert_eq!(rows.len(), 3, "{api}: {rows:?}");
        for r in &rows {
            assert!(r.success, "{api}: {rows:?}");
            assert_eq!(r.status_code, Some(200));
            assert_eq!(r.tls_expires_at, Some(expiry(leaf)), "{api}: {rows:?}");
        }
    }
    let accepted = in2.connections();
    assert!(
        accepted < 3,
        "the connection is reused: {accepted} accepted"
    );
    let days = |rows: &[apimon_core::db::metrics::MetricRow]| {
        (rows[0].tls_expires_at.unwrap() - rows[0].timestamp).num_minutes() as f64 / 1440.0
    };
    let d10 = days(&h.rows("in10").await);
    let d2 = days(&h.rows("in2").await);
    assert!((9.9..=10.0).contains(&d10), "{d10}");
    assert!((1.9..=2.0).contains(&d2), "{d2}");
    // The same server without ca_file: only the web PKI roots are
    // trusted, so the handshake fails, as a TLS failure.
    let rows = h.rows("untrusted").await;
    assert!(!rows[0].success, "{rows:?}");
    assert_eq!(rows[0].error_kind.as_deref(), Some("tls"), "{rows:?}");
    assert_eq!(rows[0].tls_expires_at, None);
    // Plain HTTP has no certificate.
    let rows = h.rows("plain").await;
    assert!(
        rows[0].success && rows[0].tls_expires_at.is_none(),
        "{rows:?}"
    );
}

#[tokio::test]
async fn a_failed_status_still_records_the_certificate_and_an_https_to_http_redirect_is_refused() {
    let h = Harness::new().await;
    let ca = TestCa::new();
    ca.write_pem(&h.dir.path().join("ca.pem"));
    let leaf = ca.leaf_for_days(30);
    let tls = HttpServer::start_tls(&leaf).await;
    tls.set("/broken", Reply::status(503));
    tls.set(
        "/downgrade",
        Reply::redirect(302, h.server.url("/plain?key=S3CR3T")),
    );
    h.server.set("/plain", Reply::ok());
    let toml = format!(
        "[[api]]\nname = \"broken\"\nurl = \"{}\"\nca_file = \"ca.pem\"\n\
         [[api]]\nname = \"downgrade\"\nurl = \"{}\"\nca_file = \"ca.pem\"\nfollow_redirects = true\n",
        tls.url("/broken"),
        tls.url("/downgrade"),
    );
    let cfg = h.config(&toml, &[]);
    pinger::run(cfg, h.pinger_pool(), Some(1), std::future::pending())
        .await
        .unwrap();
    let rows = h.rows("broken").await;
    assert_eq!(
        rows[0].error_kind.as_deref(),
        Some("http_status"),
        "{rows:?}"
    );
    assert_eq!(rows[0].tls_expires_at, Some(expiry(&leaf)));
    let rows = h.rows("downgrade").await;
    assert_eq!(rows[0].error_kind.as_deref(), Some("redirect"), "{rows:?}");
    let msg = rows[0].error_message.as_deref().unwrap();
    assert!(msg.contains("from https to http"), "{msg}");
    assert!(!msg.contains("S3CR3T"), "{msg}");
    assert_eq!(h.server.hits("/plain"), 0, "the http hop is never made");
}

/// A certificate renewed while the pinger keeps its connection open: the
/// checks' connection still shows the old one, the handshake-only probe
/// (every PINGER_TLS_RECHECK) reads the new one, and rows record the later.
/// With the probes off, the rows keep showing the old certificate.
#[tokio::test]
async fn a_renewed_certificate_is_seen_by_the_probe_while_the_connection_stays_open() {
    let h = Harness::new().await;
    let ca = TestCa::new();
    ca.write_pem(&h.dir.path().join("ca.pem"));
    let (old, renewed) = (ca.leaf_for_days(5), ca.leaf_for_days(90));
    let server = HttpServer::start_tls(&old).await;
    server.set("/health", Reply::ok());
    let toml = format!(
        "[defaults]\ninterval = \"200ms\"\n\
         [[api]]\nname = \"probed\"\nurl = \"{}\"\nca_file = \"ca.pem\"\n",
        server.url("/health"),
    );
    let run = |recheck: &'static str, rounds: u64| {
        let cfg = h.config(&toml, &[("PINGER_TLS_RECHECK", recheck)]);
        let pool = h.pinger_pool();
        tokio::spawn(
            async move { pinger::run(cfg, pool, Some(rounds), std::future::pending()).await },
        )
    };
    // Renewed after the first checks, on a connection that stays open.
    let task = run("500ms", 20);
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    server.set_identity(&renewed);
    task.await.unwrap().unwrap();
    let rows = h.rows("probed").await;
    assert_eq!(rows.len(), 20, "{rows:?}");
    assert!(rows.iter().all(|r| r.success), "{rows:?}");
    assert_eq!(rows[0].tls_expires_at, Some(expiry(&old)));
    assert_eq!(rows[19].tls_expires_at, Some(expiry(&renewed)), "{rows:?}");
    // One connection for the checks, kept open, and one per probe (every
    // 500 ms over the 4 s of 20 rounds).
    let connections = server.connections();
    assert!((2..=10).contains(&connections), "{connections}");

    // Without probes the open connection keeps the old certificate.
    sqlx::query("DELETE FROM api_metrics")
        .execute(&h.pool)
        .await
        .unwrap();
    server.set_identity(&old);
    let task = run("0s", 8);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    server.set_identity(&renewed);
    task.await.unwrap().unwrap();
    let rows = h.rows("probed").await;
    assert!(
        rows.iter().all(|r| r.tls_expires_at == Some(expiry(&old))),
        "{rows:?}"
    );
}

/// `pinger --check-config` names the CA file each endpoint trusts.
#[test]
fn check_config_lists_the_ca_file_of_an_endpoint() {
    let ca = TestCa::new();
    let lines = helpers::check_config_lines(
        "[[api]]\nname = \"internal\"\nurl = \"https://internal.test/health\"\nca_file = \"ca.pem\"\n",
        &[("ca.pem", ca.pem().as_bytes())],
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].ends_with("ca.pem (1 certificate)") && lines[0].contains("\ttrusts ca_file "),
        "{lines:?}"
    );
}
