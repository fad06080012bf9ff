//! Database access: the pool, the embedded migrations, and one module per
//! table.

pub mod anomalies;
pub mod endpoints;
pub mod heartbeats;
pub mod incidents;
pub mod metrics;
pub mod models;
pub mod notifications;
pub mod silences;
pub mod status_reports;
pub mod watermarks;

use std::fmt;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::backoff::Backoff;
use crate::config::{ConfigError, DbConfig, Refusal};
use crate::health::Health;

/// The migrations under `migrations/`, embedded in every binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// NOTIFY channel the pinger signals after each batch of `api_metrics`.
pub const METRICS_CHANNEL: &str = "apimon_metrics";
/// NOTIFY channel the detector signals after inserting `anomalies`.
pub const ANOMALIES_CHANNEL: &str = "apimon_anomalies";
/// NOTIFY channel the detector signals when it queues incident events.
pub const INCIDENTS_CHANNEL: &str = "apimon_incidents";

/// A database failure, with what we were doing when it happened.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to PostgreSQL at {target}")]
    Connect {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("applying the migrations failed")]
    Migrate(#[from] MigrateError),
    #[error(transparent)]
    Query(#[from] sqlx::Error),
}

impl DbError {
    /// The server refused our settings (wrong password, no such role or
    /// database): a configuration error, not an outage.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            DbError::Connect { source, .. } | DbError::Query(source) => Refusal::of(source),
            DbError::Migrate(MigrateError::Execute(source))
            | DbError::Migrate(MigrateError::ExecuteMigration(source, _)) => Refusal::of(source),
            DbError::Migrate(_) => None,
        }
    }

    /// The migrations themselves failed (a statement the server rejected,
    /// an applied migration modified or missing), as opposed to a database
    /// that could not be reached while applying them.
    pub fn is_migration_failure(&self) -> bool {
        match self {
            DbError::Migrate(MigrateError::Execute(source))
            | DbError::Migrate(MigrateError::ExecuteMigration(source, _)) => {
                matches!(source, sqlx::Error::Database(_)) && Refusal::of(source).is_none()
            }
            DbError::Migrate(_) => true,
            DbError::Connect { .. } | DbError::Query(_) => false,
        }
    }

    /// What `/healthz` says about this failure.
    pub fn health_reason(&self) -> String {
        match self {
            DbError::Migrate(e) if self.is_migration_failure() => {
                format!("applying the database migrations failed: {e}")
            }
            _ if self.refusal().is_some() => "the database refuses our settings".to_string(),
            _ => "database unreachable".to_string(),
        }
    }
}

/// What the schema runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// TimescaleDB, with its version: hypertables and policies.
    TimescaleDb { version: String },
    /// Plain PostgreSQL: ordinary tables and our own `time_bucket`.
    Postgres {
        /// The server's version.
        version: String,
        /// TimescaleDB is installed on the server but could not be created.
        timescale_available: bool,
    },
}

impl Backend {
    pub fn is_timescale(&self) -> bool {
        matches!(self, Backend::TimescaleDb { .. })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::TimescaleDb { version } => write!(f, "TimescaleDB {version}"),
            Backend::Postgres { version, .. } => {
                write!(f, "plain PostgreSQL {version} (without TimescaleDB)")
            }
        }
    }
}

/// A pool that connects on first use, so a service can start while the
/// database is still down.
pub fn lazy_pool(cfg: &DbConfig) -> PgPool {
    PgPoolOptions::new()
        .max_connections(cfg.max_connections)
        .acquire_timeout(cfg.acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
        .connect_lazy_with(cfg.connect_options())
}

/// Connects, failing when the database cannot be reached now.
pub async fn connect(cfg: &DbConfig) -> Result<PgPool, DbError> {
    PgPoolOptions::new()
        .max_connections(cfg.max_connections)
        .acquire_timeout(cfg.acquire_timeout)
        .connect_with(cfg.connect_options())
        .await
        .map_err(|source| DbError::Connect {
            target: cfg.target().to_string(),
            source,
        })
}

/// One connection attempt, without the pool's retries: tells at start
/// whether the server refuses our settings. `Ok` when it connected, or when
/// it could not be reached at all (an outage, retried later).
pub async fn probe(cfg: &DbConfig) -> Result<(), ConfigError> {
    use sqlx::ConnectOptions;
    let options = cfg.connect_options();
    let attempt = options.connect();
    match tokio::time::timeout(cfg.acquire_timeout, attempt).await {
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
            Ok(())
        }
        Ok(Err(e)) => match Refusal::of(&e) {
            Some(why) => Err(cfg.refused(why)),
            None => Ok(()),
        },
        Err(_) => Ok(()),
    }
}

/// Connects and migrates, retrying with backoff (up to 30 s between tries)
/// while the database is unreachable, until it succeeds or `shutdown`
/// completes (then `None`). `health` tells what it is waiting for. A server
/// that refuses the settings (wrong password, no such role or database) is
/// a configuration error: no retry.
pub async fn connect_and_migrate(
    cfg: &DbConfig,
    health: &Health,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Option<(PgPool, Backend)>, ConfigError> {
    tokio::pin!(shutdown);
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    health.set_problem(format!("connecting to the database at {}", cfg.target()));
    loop {
        let attempt = async {
            let pool = connect(cfg).await?;
            let backend = migrate(&pool).await?;
            Ok::<_, DbError>((pool, backend))
        };
        let delay = tokio::select! {
            _ = &mut shutdown => return Ok(None),
            res = attempt => match res {
                Ok(ready) => {
                    health.set_db(true);
                    health.beat();
                    return Ok(Some(ready));
                }
                Err(e) => {
                    if let Some(why) = e.refusal() {
                        return Err(cfg.refused(why));
                    }
                    let reason = if e.is_migration_failure() {
                        e.health_reason()
                    } else {
                        format!("connecting to the database at {}", cfg.target())
                    };
                    health.set_problem(reason);
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        error.message = %e,
                        error.cause_chain = ?e,
                        retry_in_secs = delay.as_secs_f64(),
                        "database not ready"
                    );
                    delay
                }
            },
        };
        tokio::select! {
            _ = &mut shutdown => return Ok(None),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Migrations whose text was changed after release in a way that cannot
/// matter to a database that applied the old text: their version and the
/// SHA-384 of the old text. sqlx refuses to run when an applied migration's
/// checksum differs.
/// - 0001: looks at `shared_preload_libraries` before `CREATE EXTENSION
///   timescaledb`, which ended the session when the library was installed
///   but not preloaded (a database where 0001 was applied got past it).
/// - 0004: its comment.
pub const REWORDED: &[(i64, &str)] = &[
    (
        20261125000001,
        "f4a513365367df16086d925528ecffc2af09e292461f41a7ba5f3dfdbce9015\
         648855e81f122cfde0ddafe732c7fc329",
    ),
    (
        20261125000004,
        "95792b7bf799c9f075358e0b87aae388fcaace4b4a30dc73ae95737c3244a6b1\
         2fc534f5ab1674d0694f5bc77e04a850",
    ),
];

/// Lets a database that applied the old text of a [`REWORDED`] migration
/// accept the new one: its recorded checksum is replaced, only when it is
/// exactly the old text's. Any other difference still fails the migration.
async fn accept_reworded(pool: &PgPool) -> Result<(), sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(());
    }
    for (version, old) in REWORDED {
        let Some(current) = MIGRATOR.iter().find(|m| m.version == *version) else {
            continue;
        };
        let done = sqlx::query(
            "UPDATE _sqlx_migrations SET checksum = $2 \
             WHERE version = $1 AND checksum = decode($3, 'hex')",
        )
        .bind(version)
        .bind(current.checksum.as_ref())
        .bind(old)
        .execute(pool)
        .await?
        .rows_affected();
        if done > 0 {
            tracing::info!(
                version,
                "accepted the reworded text of an applied migration"
            );
        }
    }
    Ok(())
}

/// Applies the migrations (a no-op when they are applied already; sqlx holds
/// an advisory lock, so several binaries may start at once), then reports
/// which backend the schema runs on, logging it, and warning with the fix
/// when TimescaleDB is installed but could not be created.
#[tracing::instrument(skip_all)]
pub async fn migrate(pool: &PgPool) -> Result<Backend, DbError> {
    accept_reworded(pool).await?;
    let mut conn = pool.acquire().await?;
    // `run_direct` is `run` on a connection we hold, without the
    // "Acquire is not general enough" error of `run(&mut *conn)` in a
    // spawned task (sqlx's own note).
    if let Err(e) = MIGRATOR.run_direct(&mut *conn).await {
        // sqlx returns on an error without releasing its session-level
        // advisory lock: a pooled connection would keep it, and the next
        // attempt on another connection would wait until the pool closed
        // this one. Close the session, and the lock goes with it.
        let _ = sqlx::Connection::close(conn.detach()).await;
        return Err(e.into());
    }
    drop(conn);
    let backend = backend(pool).await?;
    match &backend {
        Backend::TimescaleDb { .. } => tracing::info!(%backend, "schema ready on TimescaleDB"),
        Backend::Postgres {
            timescale_available: true,
            ..
        } => tracing::warn!(
            %backend,
            "TimescaleDB is installed on the server but the extension could not be created; \
             add `shared_preload_libraries = 'timescaledb'` to postgresql.conf, restart \
             PostgreSQL and run `CREATE EXTENSION timescaledb` (then hypertables need a \
             manual conversion); running on plain PostgreSQL tables meanwhile"
        ),
        Backend::Postgres { .. } => tracing::info!(
            %backend,
            "schema ready on plain PostgreSQL (TimescaleDB not available on this server)"
        ),
    }
    Ok(backend)
}

/// Gives the read-only `apimon_grafana` role `cfg.grafana_password`, when
/// one is configured; a failure is logged, not fatal (Grafana alone needs
/// it). Only the detector calls this, so that one service sets it.
pub async fn apply_grafana_password(pool: &PgPool, cfg: &DbConfig) {
    if let Some(p) = &cfg.grafana_password {
        match set_grafana_password(pool, p.expose_secret()).await {
            Ok(()) => tracing::info!("password of role apimon_grafana set"),
            Err(e) => {
                tracing::warn!(error.message = %e, "cannot set the password of role apimon_grafana")
            }
        }
    }
}

/// Lets the read-only `apimon_grafana` role log in with `password`.
/// Concurrent calls wait for each other (an advisory lock in the function).
pub async fn set_grafana_password(pool: &PgPool, password: &str) -> Result<(), sqlx::Error> {
    // Through a function with a bound parameter: the password never
    // appears in a statement's text, so no log can show it.
    sqlx::query("SELECT apimon_set_grafana_password($1)")
        .bind(password)
        .execute(pool)
        .await?;
    Ok(())
}

/// Which backend the migrated schema runs on.
pub async fn backend(pool: &PgPool) -> Result<Backend, sqlx::Error> {
    let ts: Option<String> =
        sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
            .fetch_optional(pool)
            .await?;
    if let Some(version) = ts {
        return Ok(Backend::TimescaleDb { version });
    }
    let (version, available): (String, bool) = sqlx::query_as(
        "SELECT current_setting('server_version'), \
         EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
    )
    .fetch_one(pool)
    .await?;
    Ok(Backend::Postgres {
        version,
        timescale_available: available,
    })
}

/// Runs one retention batch: `sql` is a DELETE that binds the cutoff as
/// `$1` and the most rows it may delete as `$2`. Returns how many it
/// deleted.
async fn delete_batch(
    pool: &PgPool,
    sql: &'static str,
    before: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query(sql)
        .bind(before)
        .bind(limit)
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}

/// Keeps `RETENTION_DAYS` of data on TimescaleDB: creates the retention
/// policy of each hypertable when it is missing, and changes only its
/// `drop_after` when `days` changed, so that the job keeps its id and any
/// `alter_job` setting an operator gave it (schedule, retries). On plain
/// PostgreSQL it does nothing: the services' retention tasks delete old
/// rows in batches ([`crate::retention`]).
#[tracing::instrument(skip(pool))]
pub async fn apply_retention(
    pool: &PgPool,
    backend: &Backend,
    days: u32,
) -> Result<(), sqlx::Error> {
    if !backend.is_timescale() {
        return Ok(());
    }
    let days = i32::try_from(days).unwrap_or(i32::MAX);
    let mut tx = pool.begin().await?;
    // Serialise with other binaries doing the same at start.
    sqlx::query("SELECT pg_advisory_xact_lock(727364001)")
        .execute(&mut *tx)
        .await?;
    for table in ["api_metrics", "anomalies"] {
        let job: Option<(i32, bool)> = sqlx::query_as(
            "SELECT job_id, (config->>'drop_after')::interval = make_interval(days => $2) \
             FROM timescaledb_information.jobs \
             WHERE proc_name = 'policy_retention' \
               AND hypertable_schema = current_schema() AND hypertable_name = $1 \
             ORDER BY job_id LIMIT 1",
        )
        .bind(table)
        .bind(days)
        .fetch_optional(&mut *tx)
        .await?;
        match job {
            None => {
                sqlx::query("SELECT add_retention_policy($1::regclass, make_interval(days => $2))")
                    .bind(table)
                    .bind(days)
                    .execute(&mut *tx)
                    .await?;
                tracing::info!(table, days, "retention policy created");
            }
            Some((job_id, false)) => {
                sqlx::query(
                    "SELECT alter_job($1, config => jsonb_set(config, '{drop_after}', \
                     to_jsonb(make_interval(days => $2)::text))) \
                     FROM timescaledb_information.jobs WHERE job_id = $1",
                )
                .bind(job_id)
                .bind(days)
                .execute(&mut *tx)
                .await?;
                tracing::info!(table, days, job_id, "retention policy changed");
            }
            Some((_, true)) => {}
        }
    }
    tx.commit().await?;
    Ok(())
}
