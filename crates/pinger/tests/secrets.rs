//! Keys in endpoint URLs (`user:pass@`, `?api_key=`, `${VAR}`s) and in
//! headers reach the endpoint and nothing else: not a row of any table, not
//! a log line (at `trace`), not `--check-config` or a configuration error,
//! not a column Grafana can read.

#![allow(clippy::unwrap_used)]

mod helpers;

use std::time::Duration;

use apimon_testkit::http::{HttpServer, Reply};
use apimon_testkit::procs::{run_to_exit, Exit};
use apimon_testkit::scan::columns_holding;
use helpers::Harness;

/// Every secret below contains this, and nothing else does.
const MARK: &str = "SECRET";
/// The user name of the userinfo: not marked, looked for too.
const USER: &str = "scott";

/// The environment's secrets, used through `${NAME}`.
const VARS: [(&str, &str); 3] = [
    ("PATH_KEY", "pk3y-SECRET"),
    ("API_KEY", "ek3y-SECRET"),
    ("HEADER_KEY", "hk3y-SECRET"),
];

fn apis(h: &Harness, other: &HttpServer, closed: u16) -> String {
    let p = h.server.addr().port();
    let api = |name: &str, url: String, extra: &str| {
        format!(
            "[[api]]\nname = \"{name}\"\nurl = \"{url}\"\ninterval = \"200ms\"\n\
             headers = {{ X-Api-Key = \"${{HEADER_KEY}}\" }}\n{extra}\n"
        )
    };
    [
        api(
            "ok",
            format!(
                "http://{USER}:pa55-SECRET@127.0.0.1:{p}/ok?api_key=qk3y-SECRET&page=1#frag-SECRET"
            ),
            "",
        ),
        api(
            "fails",
            format!("http://127.0.0.1:{p}/fail/${{PATH_KEY}}?api_key=${{API_KEY}}"),
            "",
        ),
        api(
            "hangs",
            format!("http://{USER}:pa55-SECRET@127.0.0.1:{p}/hang?token=qk3y-SECRET"),
            "timeout = \"300ms\"",
        ),
        api(
            "refused",
            format!("http://{USER}:pa55-SECRET@127.0.0.1:{closed}/x?api_key=qk3y-SECRET"),
            "",
        ),
        api(
            "unresolved",
            format!("https://{USER}:pa55-SECRET@no-such-host.invalid/?api_key=qk3y-SECRET"),
            "",
        ),
        api(
            "redirected",
            format!("http://{USER}:pa55-SECRET@127.0.0.1:{p}/away?sig=qk3y-SECRET"),
            "follow_redirects = true",
        ),
        // Answers on the other origin: the header must not go there.
        api("elsewhere", other.url("/moved?k=qk3y-SECRET"), ""),
    ]
    .concat()
}

fn env(h: &Harness, toml: &str) -> Vec<(String, String)> {
    let mut env = h.env(
        toml,
        &[
            ("PINGER_HTTP_PORT", "0"),
            // Everything any crate logs, ours and the HTTP and SQL stacks'.
            ("RUST_LOG", "trace"),
        ],
    );
    env.extend(VARS.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

fn run(h: &Harness, env: &[(String, String)], args: &[&str]) -> Exit {
    tokio::task::block_in_place(|| {
        run_to_exit("pinger", args, env, h.dir.path(), Duration::from_secs(60))
    })
}

fn assert_no_secret(what: &str, text: &str) {
    for (n, line) in text.lines().enumerate() {
        assert!(
            !line.contains(MARK) && !line.contains(USER),
            "{what}, line {}: {line}",
            n + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_in_urls_and_headers_reach_no_row_log_line_or_grafana() {
    let h = Harness::new().await;
    let other = HttpServer::start().await;
    h.server.set("/ok", Reply::ok());
    h.server
        .set(&format!("/fail/{}", VARS[0].1), Reply::status(500));
    h.server.set("/hang", Reply::Hang);
    h.server
        .set("/away", Reply::redirect(307, other.url("/moved")));
    other.set("/moved", Reply::ok());
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = env(&h, &apis(&h, &other, closed));

    let exit = run(&h, &env, &["--rounds", "2"]);

    assert_eq!(exit.code(), Some(0), "{}", exit.output);
    // The logs say what happened, and tell no secret.
    assert!(exit.output.contains("check failed"), "{}", exit.output);
    assert!(exit.output.contains("TRACE"), "logs at trace");
    assert_no_secret("the pinger's log", &exit.output);
    // Every check is stored, with its URL redacted.
    let urls: Vec<(String, String)> =
        sqlx::query_as("SELECT DISTINCT api_name, url FROM api_metrics ORDER BY 1")
            .fetch_all(&h.pool)
            .await
            .unwrap();
    assert_eq!(urls.len(), 7, "{urls:?}");
    let url = |name: &str| &urls.iter().find(|(n, _)| n == name).unwrap().1;
    let p = h.server.addr().port();
    assert_eq!(
        url("ok"),
        &format!("http://127.0.0.1:{p}/ok?api_key=REDACTED&page=REDACTED")
    );
    assert_eq!(
        url("fails"),
        &format!("http://127.0.0.1:{p}/fail/${{PATH_KEY}}?api_key=REDACTED")
    );
    let kinds: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT DISTINCT api_name, error_kind FROM api_metrics ORDER BY 1")
            .fetch_all(&h.pool)
            .await
            .unwrap();
    let kind = |name: &str| kinds.iter().find(|(n, _)| n == name).unwrap().1.as_deref();
    assert_eq!(kind("fails"), Some("http_status"));
    assert_eq!(kind("hangs"), Some("timeout"));
    assert_eq!(kind("refused"), Some("connect"));
    assert_eq!(kind("unresolved"), Some("dns"));
    assert_eq!(kind("redirected"), None);
    // The endpoints got their keys; the other origin did not.
    let ok = h
        .server
        .requests()
        .into_iter()
        .find(|r| r.path.starts_with("/ok"))
        .unwrap();
    assert!(ok.path.contains("qk3y-SECRET"));
    assert!(ok
        .headers
        .iter()
        .any(|(k, v)| k == "x-api-key" && v == VARS[2].1));
    let moved = other.requests();
    assert!(moved.iter().any(|r| r.path == "/moved"), "{moved:?}");
    assert!(moved
        .iter()
        .filter(|r| r.path == "/moved")
        .all(|r| !r.headers.iter().any(|(k, _)| k == "x-api-key")));

    // No column of any table holds a secret.
    for needle in [MARK, USER] {
        let (found, searched) = columns_holding(&h.pool, needle).await;
        assert!(searched > 30, "searched {searched} columns");
        assert!(found.is_empty(), "`{needle}` stored in {found:?}");
    }
    // Grafana's role cannot read the columns that held them before. On
    // TimescaleDB it reads api_metrics whole (a column grant on a
    // compressed hypertable is refused), whose URLs are redacted above.
    let timescale = apimon_testkit::on_timescaledb(&h.pool).await;
    for (table, column) in [
        ("api_metrics", "url"),
        ("api_metrics", "error_message"),
        ("api_endpoints", "url"),
    ] {
        let readable: bool =
            sqlx::query_scalar("SELECT has_column_privilege('apimon_grafana', $1, $2, 'SELECT')")
                .bind(table)
                .bind(column)
                .fetch_one(&h.pool)
                .await
                .unwrap();
        let expected = timescale && table == "api_metrics";
        assert_eq!(
            readable, expected,
            "Grafana reads {table}.{column}: {readable}"
        );
    }

    // `--check-config` lists the endpoints redacted.
    let listed = run(&h, &env, &["--check-config"]);
    assert_eq!(listed.code(), Some(0), "{}", listed.output);
    assert!(
        listed.output.contains(&format!(
            "http://127.0.0.1:{p}/fail/${{PATH_KEY}}?api_key=REDACTED"
        )),
        "{}",
        listed.output
    );
    assert!(
        listed.output.contains("follows redirects"),
        "{}",
        listed.output
    );
    assert_no_secret("--check-config", &listed.output);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_url_is_a_configuration_error_that_shows_no_secret() {
    let h = Harness::new().await;
    for url in [
        "ftp://scott:pa55-SECRET@files.test/?api_key=qk3y-SECRET",
        "https://scott:pa55-SECRET@bad host/?api_key=${API_KEY}",
        "https://files.test:99999/${PATH_KEY}?token=qk3y-SECRET",
    ] {
        let toml = format!("[[api]]\nname = \"A\"\nurl = \"{url}\"\n");
        let exit = run(&h, &env(&h, &toml), &["--check-config"]);

        assert_eq!(exit.code(), Some(2), "{url}: {}", exit.output);
        assert!(exit.output.contains("url:"), "{}", exit.output);
        assert_no_secret(url, &exit.output);
    }
}
