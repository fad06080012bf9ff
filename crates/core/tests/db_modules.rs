//! SQL lives in `apimon_core::db`, one module per table (review of
//! 2026-12): the alerter's report SQL moved there, and `status_reports`
//! has its module, tested here against a real PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use apimon_core::db::{self, status_reports};
use apimon_core::DbConfig;
use chrono::{DateTime, Duration, SubsecRound, Utc};

#[test]
fn the_alerters_report_code_holds_no_sql_of_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../alerter/src");
    for file in [
        "report.rs",
        "baseline.rs",
        "service.rs",
        "silence.rs",
        "outbox.rs",
    ] {
        let text = std::fs::read_to_string(src.join(file)).unwrap();
        for needle in ["sqlx::query", "SELECT ", "INSERT INTO", "DELETE FROM"] {
            assert!(
                !text.contains(needle),
                "crates/alerter/src/{file} holds SQL (`{needle}`): put it in a module of apimon_core::db"
            );
        }
    }
}

#[tokio::test]
async fn a_report_period_is_claimed_once_and_then_reads_as_reported() {
    let t = apimon_testkit::fresh_database().await;
    let pool = db::connect(&DbConfig::from_url(&t.url).unwrap())
        .await
        .unwrap();
    db::migrate(&pool).await.unwrap();
    let end: DateTime<Utc> = Utc::now().trunc_subsecs(0);
    let start = end - Duration::minutes(5);
    let other = end - Duration::minutes(10);
    assert!(status_reports::reported_among(&pool, &[end, other])
        .await
        .unwrap()
        .is_empty());

    let mut tx = pool.begin().await.unwrap();
    assert!(status_reports::claim(&mut tx, start, end).await.unwrap());
    tx.commit().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    assert!(
        !status_reports::claim(&mut tx, start, end).await.unwrap(),
        "a second alerter must not claim the same period"
    );
    tx.rollback().await.unwrap();

    assert_eq!(
        status_reports::reported_among(&pool, &[end, other])
            .await
            .unwrap(),
        [end]
    );
}
