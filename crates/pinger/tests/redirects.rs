//! Redirects: not followed unless the endpoint says so; then the
//! endpoint's headers and body stay with its own origin. Two loopback
//! servers on different ports are two origins.

#![allow(clippy::unwrap_used)]

mod helpers;

use apimon_testkit::http::{HttpServer, Reply, Request};
use helpers::Harness;

const TOKEN: &str = "t0k3n-SECRET";
const BODY: &str = "{\"secret\":\"b0dy-SECRET\"}";

/// An endpoint `name` at `url` that POSTs [`BODY`] with an `X-Api-Key`
/// header read from the environment, plus `extra` lines.
fn entry(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[api]]\nname = \"{name}\"\nurl = \"{url}\"\ninterval = \"1s\"\ntimeout = \"5s\"\n\
         method = \"POST\"\nbody = '{BODY}'\nheaders = {{ X-Api-Key = \"${{TOKEN}}\" }}\n{extra}\n"
    )
}

async fn run_once(h: &Harness, toml: &str) {
    let cfg = h.config(toml, &[("TOKEN", TOKEN)]);
    pinger::run(cfg, h.pinger_pool(), Some(1), std::future::pending())
        .await
        .unwrap();
}

fn header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn only_request(server: &HttpServer, path: &str) -> Request {
    let reqs: Vec<Request> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.split('?').next() == Some(path))
        .collect();
    assert_eq!(reqs.len(), 1, "requests to {path}: {reqs:?}");
    reqs.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_redirect_is_the_checks_result_unless_the_endpoint_follows_redirects() {
    let h = Harness::new().await;
    let other = HttpServer::start().await;
    other.set("/land", Reply::ok());
    h.server
        .set("/moved", Reply::redirect(302, other.url("/land")));
    h.server.set("/kept", Reply::redirect(301, "/elsewhere"));
    let toml = [
        entry("default", &h.server.url("/moved"), ""),
        entry("expected", &h.server.url("/kept"), "expected_status = 301"),
    ]
    .concat();

    run_once(&h, &toml).await;

    let r = &h.rows("default").await[0];
    assert_eq!(r.status_code, Some(302));
    assert_eq!(r.error_kind.as_deref(), Some("http_status"));
    assert_eq!(r.error_message.as_deref(), Some("status 302, expected 2xx"));
    assert!(r.response_time_ms.is_some());
    let r = &h.rows("expected").await[0];
    assert!(r.success, "{r:?}");
    assert_eq!(r.status_code, Some(301));
    assert!(other.requests().is_empty(), "{:?}", other.requests());
    assert_eq!(h.server.hits("/elsewhere"), 0);
}

#[tokio::test]
async fn a_same_origin_redirect_keeps_the_headers_and_body() {
    let h = Harness::new().await;
    h.server.set("/old", Reply::redirect(308, "/new?page=2"));
    h.server.set("/new", Reply::status(201));

    run_once(
        &h,
        &entry("same", &h.server.url("/old"), "follow_redirects = true"),
    )
    .await;

    let r = &h.rows("same").await[0];
    assert!(r.success, "{r:?}");
    assert_eq!(r.status_code, Some(201));
    let landed = only_request(&h.server, "/new");
    assert_eq!(landed.path, "/new?page=2");
    assert_eq!(landed.method, "POST", "308 keeps the method");
    assert_eq!(header(&landed, "x-api-key"), Some(TOKEN));
    assert_eq!(landed.body, BODY.as_bytes());
}

#[tokio::test]
async fn a_cross_origin_redirect_is_followed_without_the_endpoints_headers_and_body() {
    let h = Harness::new().await;
    let other = HttpServer::start().await;
    other.set("/land", Reply::ok());
    other.set("/back", Reply::redirect(307, h.server.url("/home")));
    h.server
        .set("/go", Reply::redirect(307, other.url("/land")));
    h.server
        .set("/round", Reply::redirect(307, other.url("/back")));
    h.server.set("/home", Reply::ok());
    let toml = [
        entry("away", &h.server.url("/go"), "follow_redirects = true"),
        entry("round", &h.server.url("/round"), "follow_redirects = true"),
    ]
    .concat();

    run_once(&h, &toml).await;

    for name in ["away", "round"] {
        let r = &h.rows(name).await[0];
        assert!(r.success, "{name}: {r:?}");
        assert_eq!(r.status_code, Some(200), "{name}");
    }
    // The first hop went to the endpoint's own origin with everything.
    let first = only_request(&h.server, "/go");
    assert_eq!(header(&first, "x-api-key"), Some(TOKEN));
    assert_eq!(first.body, BODY.as_bytes());
    // The other origin got neither the header nor the body.
    for path in ["/land", "/back"] {
        let hop = only_request(&other, path);
        assert_eq!(header(&hop, "x-api-key"), None, "{path}: {hop:?}");
        assert!(hop.body.is_empty(), "{path}: {hop:?}");
        assert!(header(&hop, "user-agent").is_some_and(|ua| ua.starts_with("apimon-pinger/")));
    }
    // Nor did the endpoint's origin once the chain had left it.
    let home = only_request(&h.server, "/home");
    assert_eq!(header(&home, "x-api-key"), None, "{home:?}");
    assert!(home.body.is_empty());
    let everything = [h.server.requests(), other.requests()].concat();
    let leaked = everything
        .iter()
        .filter(|r| r.path != "/go" && r.path != "/round")
        .find(|r| {
            String::from_utf8_lossy(&r.body).contains("SECRET")
                || r.headers.iter().any(|(_, v)| v.contains("SECRET"))
        });
    assert!(leaked.is_none(), "{leaked:?}");
}

#[tokio::test]
async fn a_post_redirected_with_303_becomes_a_get_without_its_body() {
    let h = Harness::new().await;
    h.server.set("/submit", Reply::redirect(303, "/result"));
    h.server.set("/result", Reply::ok());

    run_once(
        &h,
        &entry(
            "see-other",
            &h.server.url("/submit"),
            "follow_redirects = true",
        ),
    )
    .await;

    assert!(h.rows("see-other").await[0].success);
    let r = only_request(&h.server, "/result");
    assert_eq!(r.method, "GET");
    assert!(r.body.is_empty());
    assert_eq!(header(&r, "x-api-key"), Some(TOKEN), "same origin");
}

#[tokio::test]
async fn a_redirect_loop_fails_as_redirect_after_ten_hops() {
    let h = Harness::new().await;
    h.server.set("/loop", Reply::redirect(302, "/loop?again"));

    run_once(
        &h,
        &entry("loop", &h.server.url("/loop"), "follow_redirects = true"),
    )
    .await;

    let r = &h.rows("loop").await[0];
    assert_eq!(r.error_kind.as_deref(), Some("redirect"), "{r:?}");
    assert_eq!(r.status_code, Some(302));
    assert_eq!(r.error_message.as_deref(), Some("more than 10 redirects"));
    let tries = h
        .server
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/loop"))
        .count();
    assert_eq!(tries, 11, "the first request and 10 redirects");
}
