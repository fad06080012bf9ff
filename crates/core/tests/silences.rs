//! `apimon_core::db::silences` against a real PostgreSQL.

#![allow(clippy::unwrap_used)]

use apimon_core::db::{self, silences};
use apimon_core::DbConfig;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use sqlx::PgPool;

async fn migrated_pool() -> PgPool {
    let test_db = apimon_testkit::fresh_database().await;
    let cfg = DbConfig::from_url(&test_db.url).expect("test URL is valid");
    let pool = db::connect(&cfg).await.expect("connect");
    db::migrate(&pool).await.expect("migrate");
    pool
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

#[tokio::test]
async fn active_at_holds_the_silences_whose_interval_contains_the_time() {
    let pool = migrated_pool().await;
    let t = now();
    let h = Duration::hours(1);
    let s = silences::add(&pool, "Billing*", t, t + h, "alice", "deploy")
        .await
        .unwrap();
    assert_eq!(
        (
            s.api_pattern.as_str(),
            s.created_by.as_str(),
            s.reason.as_str()
        ),
        ("Billing*", "alice", "deploy")
    );
    assert_eq!((s.starts_at, s.ends_at, s.expired_at), (t, t + h, None));
    let ids = |v: Vec<silences::Silence>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(silences::active_at(&pool, t).await.unwrap()), [s.id]);
    assert_eq!(
        ids(
            silences::active_at(&pool, t + h - Duration::microseconds(1))
                .await
                .unwrap()
        ),
        [s.id]
    );
    assert!(silences::active_at(&pool, t + h).await.unwrap().is_empty());
    assert!(silences::active_at(&pool, t - Duration::microseconds(1))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn expire_ends_an_active_silence_now_and_only_once() {
    let pool = migrated_pool().await;
    let t = now() - Duration::minutes(5);
    let s = silences::add(&pool, "*", t, t + Duration::hours(2), "bob", "x")
        .await
        .unwrap();
    assert!(silences::expire(&pool, s.id).await.unwrap());
    let after = silences::list(&pool, true).await.unwrap();
    let e = &after[0];
    let expired_at = e.expired_at.expect("expired_at is set");
    assert_eq!(e.ends_at, expired_at, "ends_at pulled back to the expiry");
    assert!(expired_at > t && expired_at <= Utc::now());
    assert!(silences::active_at(&pool, Utc::now())
        .await
        .unwrap()
        .is_empty());
    assert!(
        !silences::expire(&pool, s.id).await.unwrap(),
        "already expired"
    );
    assert!(
        !silences::expire(&pool, s.id + 100).await.unwrap(),
        "no such id"
    );
    assert!(silences::list(&pool, false).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_scheduled_silence_can_be_expired_before_it_starts() {
    let pool = migrated_pool().await;
    let start = now() + Duration::hours(1);
    let s = silences::add(&pool, "a", start, start + Duration::hours(1), "c", "later")
        .await
        .unwrap();
    assert_eq!(
        silences::list(&pool, false).await.unwrap(),
        std::slice::from_ref(&s)
    );
    assert!(silences::expire(&pool, s.id).await.unwrap());
    let e = &silences::list(&pool, true).await.unwrap()[0];
    assert_eq!((e.starts_at, e.ends_at), (s.starts_at, s.ends_at));
    assert!(e.expired_at.is_some());
    assert!(silences::active_at(&pool, start + Duration::minutes(30))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn an_ended_silence_cannot_be_expired_and_is_listed_only_with_all() {
    let pool = migrated_pool().await;
    let t = now() - Duration::hours(3);
    let s = silences::add(&pool, "a", t, t + Duration::hours(1), "d", "old")
        .await
        .unwrap();
    assert!(!silences::expire(&pool, s.id).await.unwrap());
    assert!(silences::list(&pool, false).await.unwrap().is_empty());
    assert_eq!(silences::list(&pool, true).await.unwrap(), [s]);
}

#[tokio::test]
async fn the_table_refuses_an_end_before_the_start() {
    let pool = migrated_pool().await;
    let t = now();
    assert!(silences::add(&pool, "a", t, t, "e", "zero").await.is_err());
}

#[tokio::test]
async fn retention_deletes_silences_that_ended_before_the_cutoff() {
    let pool = migrated_pool().await;
    let t = now();
    let old = silences::add(
        &pool,
        "a",
        t - Duration::days(100),
        t - Duration::days(99),
        "f",
        "old",
    )
    .await
    .unwrap();
    let recent = silences::add(
        &pool,
        "a",
        t - Duration::days(2),
        t - Duration::days(1),
        "f",
        "new",
    )
    .await
    .unwrap();
    let n = silences::delete_ended_before(&pool, t - Duration::days(90), 100)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let left: Vec<i64> = silences::list(&pool, true)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, [recent.id]);
    assert_ne!(old.id, recent.id);
}
