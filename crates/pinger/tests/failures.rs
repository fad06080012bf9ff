//! Every kind of failure is told apart and recorded.

#![allow(clippy::unwrap_used)]

mod helpers;

use apimon_testkit::http::Reply;
use helpers::Harness;

fn entry(name: &str, url: &str, extra: &str) -> String {
    let timeout = if extra.contains("timeout") {
        ""
    } else {
        "timeout = \"2s\"\n"
    };
    format!("[[api]]\nname = \"{name}\"\nurl = \"{url}\"\ninterval = \"1s\"\n{timeout}{extra}\n")
}

/// `/ok`, and the routes that fail: `/hang`, `/cut` (a body cut short),
/// `/close` (no answer).
fn set_failing_routes(h: &Harness) {
    h.server.set("/ok", Reply::ok());
    h.server.set("/hang", Reply::Hang);
    h.server.set(
        "/cut",
        Reply::Truncate {
            declared: 1000,
            sent: 10,
        },
    );
    h.server.set("/close", Reply::Close);
}

/// A loopback address with nothing listening: bound, then freed.
fn closed_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A plain-text server to put behind an https:// URL: like nginx, it
/// answers the TLS ClientHello with a plain HTTP 400, which no TLS client
/// accepts.
async fn plain_http_behind_tls() -> std::net::SocketAddr {
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = plain.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut s, _)) = plain.accept().await {
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    addr
}

#[tokio::test]
async fn each_failure_kind_is_classified() {
    let h = Harness::new().await;
    set_failing_routes(&h);
    h.server.set("/boom", Reply::status(500));
    h.server.set("/created", Reply::status(201));
    let closed = closed_port().port();
    let https = format!("https://{}/ok", plain_http_behind_tls().await);
    let toml = [
        entry("ok", &h.server.url("/ok"), ""),
        entry("timeout", &h.server.url("/hang"), "timeout = \"300ms\""),
        entry("refused", &format!("http://127.0.0.1:{closed}/"), ""),
        entry("dns", "http://no-such-host.invalid/", ""),
        entry("tls", &https, ""),
        entry("status", &h.server.url("/boom"), ""),
        entry(
            "unexpected",
            &h.server.url("/created"),
            "expected_status = 200",
        ),
        entry("body", &h.server.url("/cut"), ""),
        entry("closed", &h.server.url("/close"), ""),
    ]
    .concat();
    let cfg = h.config(&toml, &[]);
    pinger::run(cfg, h.pinger_pool(), Some(1), std::future::pending())
        .await
        .unwrap();

    let expect = [
        ("ok", None, Some(200)),
        ("timeout", Some("timeout"), None),
        ("refused", Some("connect"), None),
        ("dns", Some("dns"), None),
        ("tls", Some("tls"), None),
        ("status", Some("http_status"), Some(500)),
        ("unexpected", Some("http_status"), Some(201)),
        ("body", Some("body"), Some(200)),
        ("closed", Some("request"), None),
    ];
    for (name, kind, status) in expect {
        let rows = h.rows(name).await;
        assert_eq!(rows.len(), 1, "{name}");
        let r = &rows[0];
        assert_eq!(
            r.error_kind.as_deref(),
            kind,
            "{name}: {:?}",
            r.error_message
        );
        assert_eq!(r.status_code, status, "{name}");
        assert_eq!(r.success, kind.is_none(), "{name}");
        // A response time only for complete responses.
        let complete = matches!(kind, None | Some("http_status"));
        assert_eq!(r.response_time_ms.is_some(), complete, "{name}");
        if kind.is_some() {
            let msg = r.error_message.as_deref().unwrap_or("");
            assert!(!msg.is_empty(), "{name} has an error message");
        }
    }
    let ok = &h.rows("ok").await[0];
    assert_eq!(ok.response_size_bytes, Some("{\"ok\":true}".len() as i64));
    let status = &h.rows("status").await[0];
    assert!(status.error_message.as_deref().unwrap().contains("500"));
}

#[tokio::test]
async fn error_messages_do_not_carry_the_url_and_its_query() {
    let h = Harness::new().await;
    h.server.set("/hang", Reply::Hang);
    let url = format!("{}?api_key=s3cr3t", h.server.url("/hang"));
    let cfg = h.config(&entry("keyed", &url, "timeout = \"200ms\""), &[]);
    pinger::run(cfg, h.pinger_pool(), Some(1), std::future::pending())
        .await
        .unwrap();
    let r = &h.rows("keyed").await[0];
    assert_eq!(r.error_kind.as_deref(), Some("timeout"));
    assert!(!r.error_message.as_deref().unwrap().contains("s3cr3t"));
}

#[tokio::test]
async fn method_headers_and_body_are_sent() {
    let h = Harness::new().await;
    h.server.set("/post", Reply::status(204));
    let extra = "method = \"POST\"\nbody = \"{\\\"q\\\":1}\"\nexpected_status = [204]\n\
                 headers = { X-Token = \"abc\" }";
    let cfg = h.config(&entry("poster", &h.server.url("/post"), extra), &[]);
    pinger::run(cfg, h.pinger_pool(), Some(1), std::future::pending())
        .await
        .unwrap();
    let req = &h.server.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.body, b"{\"q\":1}");
    assert!(req
        .headers
        .iter()
        .any(|(k, v)| k == "x-token" && v == "abc"));
    assert!(req
        .headers
        .iter()
        .any(|(k, v)| k == "user-agent" && v.starts_with("apimon-pinger/")));
    assert!(h.rows("poster").await[0].success);
}

/// A refused connection to `https://tls.example.com` was stored as `tls`:
/// the kind came from searching the error's text, which holds the URL.
/// Every kind, with host names, paths, queries and userinfo full of the
/// words the old classifier looked for.
#[tokio::test]
async fn failure_kinds_come_from_the_errors_not_from_words_in_the_url() {
    let h = Harness::new().await;
    let misleading = "/tls/certificate/handshake/dns-error/timeout/refused\
                      ?tls=handshake&error=dns%20error&why=no+such+host";
    set_failing_routes(&h);
    h.server.set(
        &misleading[..misleading.find('?').unwrap()],
        Reply::status(503),
    );
    h.server.set("/loop", Reply::redirect(302, "/loop"));
    let closed = closed_port();
    let plain_addr = plain_http_behind_tls().await;
    let server = h.server.addr();
    // Host names resolved to the loopback servers, each naming another kind.
    let hosts = [
        ("tls-certificate-handshake.test", closed),
        ("dns-error-no-such-host.test", server),
        ("tls-handshake-timeout.test", server),
        ("timeout-refused-dns-error.test", plain_addr),
    ];
    let port = |a: std::net::SocketAddr| a.port();
    let cases = [
        (
            "connect",
            format!(
                "https://tls:handshake@tls-certificate-handshake.test:{}{misleading}",
                port(closed)
            ),
            None,
            "",
        ),
        (
            "dns",
            "http://tls-handshake-timeout-refused.invalid/certificate?tls=1".to_string(),
            None,
            "",
        ),
        (
            "tls",
            format!(
                "https://timeout-refused-dns-error.test:{}/dns-error/timeout?connection=refused",
                port(plain_addr)
            ),
            None,
            "",
        ),
        (
            "http_status",
            format!(
                "http://tls-handshake-timeout.test:{}{misleading}",
                port(server)
            ),
            Some(503),
            "",
        ),
        (
            "timeout",
            format!(
                "http://dns-error-no-such-host.test:{}/hang?tls=handshake",
                port(server)
            ),
            None,
            "timeout = \"300ms\"",
        ),
        (
            "body",
            format!(
                "http://tls-handshake-timeout.test:{}/cut?e=dns+error&t=timeout",
                port(server)
            ),
            Some(200),
            "",
        ),
        (
            "request",
            format!(
                "http://dns-error-no-such-host.test:{}/close?tls=certificate",
                port(server)
            ),
            None,
            "",
        ),
        (
            "redirect",
            format!(
                "http://tls-handshake-timeout.test:{}/loop?dns=error",
                port(server)
            ),
            Some(302),
            "follow_redirects = true",
        ),
    ];
    let toml: String = cases
        .iter()
        .map(|(kind, url, _, extra)| entry(kind, url, extra))
        .collect();
    let cfg = h.config(&toml, &[]);
    let checker = pinger::check::Checker::with_resolved("apimon-test", &hosts).unwrap();

    for ep in &cfg.endpoints {
        let row = checker.check(ep).await;

        assert_eq!(
            row.error_kind.as_deref(),
            Some(ep.name.as_str()),
            "{}: {:?}",
            ep.url.redacted(),
            row.error_message
        );
        let status = cases.iter().find(|c| c.0 == ep.name).unwrap().2;
        assert_eq!(row.status_code, status, "{}", ep.name);
        let msg = row.error_message.unwrap_or_default();
        assert!(!msg.is_empty(), "{}", ep.name);
        for word in [
            "handshake@",
            "tls=",
            "connection=refused",
            ".test",
            ".invalid",
        ] {
            assert!(
                !msg.contains(word),
                "{}: the message shows the URL: {msg}",
                ep.name
            );
        }
    }
}
