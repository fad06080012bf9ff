//! `apimon_core::listen::Listener` against a real PostgreSQL: it hears
//! NOTIFY, and hears it again after its connection is killed.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use apimon_core::db;
use apimon_core::listen::{Listener, Wake};
use apimon_core::DbConfig;
use sqlx::PgPool;

const CHANNEL: &str = "apimon_test_listen";

async fn pool() -> PgPool {
    let t = apimon_testkit::fresh_database().await;
    db::connect(&DbConfig::from_url(&t.url).unwrap())
        .await
        .unwrap()
}

async fn notify(pool: &PgPool) {
    sqlx::query("SELECT pg_notify($1, 'x')")
        .bind(CHANNEL)
        .execute(pool)
        .await
        .unwrap();
}

/// The backends of this database that are LISTENing, as PostgreSQL sees them.
async fn listening_backends(pool: &PgPool) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Notifies every 100 ms until the listener wakes with a notification.
async fn notified_within(listener: &mut Listener, pool: &PgPool, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        notify(pool).await;
        tokio::select! {
            wake = listener.recv() => if wake == Wake::Notified { return true },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
    }
}

#[tokio::test]
async fn the_listener_hears_notify_again_after_its_connection_is_killed() {
    let pool = pool().await;
    let mut listener = Listener::start(&pool, &[CHANNEL]).await;
    assert!(listener.is_connected());
    assert!(notified_within(&mut listener, &pool, Duration::from_secs(5)).await);

    let pids = listening_backends(&pool).await;
    assert_eq!(pids.len(), 1, "{pids:?}");
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pids[0])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(killed);

    // The loss wakes the caller (work may have been missed) ...
    let wake = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("the lost connection is noticed");
    assert_eq!(wake, Wake::Reconnected);
    assert!(listener.is_connected());
    // ... and a new connection listens on the same channel.
    assert!(notified_within(&mut listener, &pool, Duration::from_secs(10)).await);
    let again = listening_backends(&pool).await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_ne!(again, pids);
}
