//! A database as an earlier release left it: the migrations before a
//! version only, for tests of what a later migration does to old rows.

use std::borrow::Cow;

use sqlx::migrate::Migrator;
use sqlx::PgPool;

/// Applies the migrations of `migrator` older than `version`.
pub async fn migrate_before(pool: &PgPool, migrator: &Migrator, version: i64) {
    let before = Migrator {
        migrations: Cow::Owned(
            migrator
                .migrations
                .iter()
                .filter(|m| m.version < version)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    before
        .run(pool)
        .await
        .unwrap_or_else(|e| panic!("the migrations before {version}: {e}"));
}
