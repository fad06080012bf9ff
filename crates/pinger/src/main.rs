//! `pinger`: checks the endpoints of `apis.toml` and stores every result in
//! `api_metrics`.

use std::process::ExitCode;

use anyhow::Context;
use apimon_core::config::CONFIG_EXIT_CODE;
use apimon_core::{db, shutdown, telemetry, Env};
use clap::Parser;
use pinger::config::PingerConfig;
use pinger::RunOutcome;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Checks HTTP APIs on a schedule and stores every result in api_metrics"
)]
struct Cli {
    /// Check each endpoint this many times, then flush and exit.
    #[arg(long, value_name = "N")]
    rounds: Option<u64>,
    /// Validate the configuration, print the endpoints, and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `.env` first: it may set RUST_LOG and LOG_FORMAT.
    let cfg = match Env::load()
        .and_then(|env| telemetry::try_init().map(|()| env))
        .and_then(|env| PingerConfig::from_env(&env))
    {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("pinger: configuration error: {e}");
            return ExitCode::from(CONFIG_EXIT_CODE as u8);
        }
    };
    if cli.check_config {
        for ep in cfg.owned_endpoints() {
            println!("{}", pinger::describe(&ep));
        }
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pinger: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cfg, cli.rounds)) {
        Ok(outcome) if outcome.rows_lost() > 0 => {
            eprintln!(
                "pinger: {} rows lost ({} dropped from a full buffer, {} not written at exit)",
                outcome.rows_lost(),
                outcome.dropped,
                outcome.lost
            );
            ExitCode::from(ROWS_LOST_EXIT_CODE)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<apimon_core::ConfigError>().is_some() => {
            eprintln!("pinger: configuration error: {e}");
            ExitCode::from(CONFIG_EXIT_CODE as u8)
        }
        Err(e) => {
            tracing::error!(error.cause_chain = ?e, error.message = %e, "pinger failed");
            ExitCode::FAILURE
        }
    }
}

/// Exit status when some check results never reached the database.
const ROWS_LOST_EXIT_CODE: u8 = 3;

async fn serve(cfg: PingerConfig, rounds: Option<u64>) -> anyhow::Result<RunOutcome> {
    tracing::info!(
        database = cfg.db.target(),
        "connecting (the pinger keeps checking while the database is down)"
    );
    // A server that refuses our settings is a configuration error; one that
    // cannot be reached is an outage: checks go on, rows wait in memory.
    db::probe(&cfg.db).await?;
    let pool = db::lazy_pool(&cfg.db);
    // Heartbeats of every endpoint of the file are received here, whatever
    // this replica's shard: a job may reach any replica.
    let heartbeats = pinger::heartbeat::routes(pool.clone(), &cfg.endpoints);
    let health = apimon_core::health::start_with(cfg.http, "PINGER_HTTP_PORT", heartbeats)
        .await
        .map_err(anyhow::Error::msg)?;
    pinger::catalog::register(&cfg.owned_endpoints());
    pinger::run_with_health(cfg, pool, rounds, health, shutdown::signal())
        .await
        .context("running the pinger")
}
