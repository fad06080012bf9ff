//! Hardening that lives in the schema and the deployment files: the URLs
//! stored before redaction existed are redacted by a migration, the same
//! way as the pinger redacts them now; the services' HTTP port is offered
//! to the network only inside Docker Compose.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use apimon_core::db;
use apimon_core::redact::redact;
use apimon_core::DbConfig;
use chrono::{SubsecRound, Utc};
use sqlx::PgPool;

/// The migration that redacts stored URLs and narrows Grafana's grants.
const REDACTING: i64 = 20261203000008;

/// URLs as the pinger stored them before (`Url::to_string()`), and odd
/// ones.
const URLS: [&str; 9] = [
    "https://scott:pa55-SECRET@api.test/v1/x?api_key=qk3y-SECRET&page=2",
    "http://tok-SECRET@127.0.0.1:8080/",
    "https://api.test/cb#access_token=f-SECRET",
    "https://api.test/q?flag&empty=&sig=a%2Fb-SECRET&x=1=2-SECRET",
    "https://a:b@c:d-SECRET@api.test/p@q",
    "https://api.test/plain/path",
    "https://api.test/?",
    "http:\\\\u:p-SECRET@api.test\\x?k=v-SECRET",
    "user:pass-SECRET@api.test/x?k=v-SECRET",
];

async fn pool() -> PgPool {
    let t = apimon_testkit::fresh_database().await;
    db::connect(&DbConfig::from_url(&t.url).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn urls_stored_before_redaction_are_redacted_by_the_migration() {
    let pool = pool().await;
    apimon_testkit::migrations::migrate_before(&pool, &db::MIGRATOR, REDACTING).await;
    let t0 = Utc::now().trunc_subsecs(6);
    for (i, url) in URLS.iter().enumerate() {
        let api = format!("api-{i}");
        sqlx::query(
            "INSERT INTO api_endpoints (api_name, url, method, interval_ms, timeout_ms, expected_status)
             VALUES ($1, $2, 'GET', 15000, 30000, '2xx')",
        )
        .bind(&api)
        .bind(url)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            r#"INSERT INTO api_metrics ("timestamp", api_name, url, success) VALUES ($1, $2, $3, true)"#,
        )
        .bind(t0)
        .bind(&api)
        .bind(url)
        .execute(&pool)
        .await
        .unwrap();
    }

    db::migrate(&pool).await.unwrap();

    for (i, url) in URLS.iter().enumerate() {
        let api = format!("api-{i}");
        for table in ["api_endpoints", "api_metrics"] {
            let stored: String =
                sqlx::query_scalar(&format!("SELECT url FROM {table} WHERE api_name = $1"))
                    .bind(&api)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert_eq!(stored, redact(url), "{table}: {url}");
            assert!(!stored.contains("SECRET"), "{table}: {stored}");
        }
    }
    let (found, _) = apimon_testkit::scan::columns_holding(&pool, "SECRET").await;
    assert!(found.is_empty(), "{found:?}");
}

#[tokio::test]
async fn the_sql_redaction_agrees_with_the_pinger_on_odd_urls() {
    let pool = pool().await;
    db::migrate(&pool).await.unwrap();
    let odd = [
        "",
        "?",
        "#x",
        "no-scheme",
        "https://u@/x",
        "https://[::1]:9/a?b=c&&d",
        "HTTPS://U:P@API.test/a",
        "https://api.test/?a=1#b?c=2",
    ];
    for url in URLS.iter().chain(odd.iter()) {
        let sql: String = sqlx::query_scalar("SELECT apimon_redact_url($1)")
            .bind(url)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(sql, redact(url), "{url:?}");
    }
}

#[test]
fn compose_offers_the_health_ports_to_its_network_and_checks_them_on_loopback() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut compose: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(root.join("docker-compose.yml")).unwrap())
            .unwrap();
    // The services share their settings through `<<: *apimon-service`.
    compose.apply_merge().unwrap();
    for (service, var, port) in [
        ("pinger", "PINGER_HTTP_PORT", 9101),
        ("detector", "DETECTOR_HTTP_PORT", 9102),
        ("alerter", "ALERTER_HTTP_PORT", 9103),
    ] {
        let s = &compose["services"][service];
        assert_eq!(
            s["environment"]["HTTP_BIND"].as_str(),
            Some("0.0.0.0"),
            "{service}: the default is loopback, which other containers cannot reach"
        );
        let test: Vec<&str> = s["healthcheck"]["test"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        // The configured port (`$$` is a `$` for the container's shell),
        // which the service gets from .env or the shell, else the default.
        assert_eq!(test[0], "CMD-SHELL", "{service}: {test:?}");
        assert!(
            test[1].contains(&format!("http://127.0.0.1:$${{{var}:-{port}}}/healthz")),
            "{service}: {test:?}"
        );
        assert_eq!(
            s["environment"][var].as_str(),
            Some(format!("${{{var}:-{port}}}").as_str()),
            "{service}: {var} must reach the container for its health check"
        );
        assert!(s.get("ports").is_none(), "{service} publishes its port");
    }
    // And outside Docker: loopback unless HTTP_BIND says otherwise.
    assert_eq!(apimon_core::health::DEFAULT_BIND, "127.0.0.1");
}
