//! What the alerter's integration tests share: a fresh database with the
//! schema and the tests' APIs registered.

#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use apimon_core::db;
use apimon_core::{DbConfig, Env};
use chrono::Utc;
use sqlx::PgPool;

pub struct Db {
    pub url: String,
    pub pool: PgPool,
}

/// A fresh migrated database with `apis` registered (at
/// `http://<name>.test/`, spaces as `-`). The tests' alerters report daily
/// (`ALERT_CHECK_INTERVAL=1d`): the report of the day that closed before
/// the test is taken as sent, so that none arrives during a test.
pub async fn database(apis: &[&str]) -> Db {
    let t = apimon_testkit::fresh_database().await;
    let pool = db::connect(&DbConfig::from_url(&t.url).unwrap())
        .await
        .unwrap();
    db::migrate(&pool).await.unwrap();
    let toml: String = apis
        .iter()
        .map(|n| {
            let host = n.replace(' ', "-");
            format!("[[api]]\nname = \"{n}\"\nurl = \"http://{host}.test/\"\n")
        })
        .collect();
    let eps = apimon_core::apis::parse(&toml, "test", &Env::default()).unwrap();
    db::endpoints::upsert(&pool, &eps).await.unwrap();
    let end = alerter::report::last_period_end(Utc::now(), Duration::from_secs(86_400));
    sqlx::query(
        "INSERT INTO status_reports (period_end, period_start) VALUES ($1, $1 - interval '1 day')",
    )
    .bind(end)
    .execute(&pool)
    .await
    .unwrap();
    Db { url: t.url, pool }
}
