//! `alerter`: emails and webhooks about anomalies and status reports.
//!
//! For now it readies the schema (migrations), reports which backend it runs
//! on, and waits for SIGTERM; its work arrives with its own issue.

use std::process::ExitCode;

use apimon_core::config::CONFIG_EXIT_CODE;
use apimon_core::{db, shutdown, telemetry, DbConfig, Env};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "apimon alerter: emails and webhooks about anomalies and status reports"
)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    telemetry::init();
    let cfg = match Env::load().and_then(|env| DbConfig::from_env(&env)) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("alerter: configuration error: {e}");
            return ExitCode::from(CONFIG_EXIT_CODE as u8);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("alerter: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        tracing::info!(database = cfg.target(), "alerter starting");
        let shutdown = shutdown::signal();
        tokio::pin!(shutdown);
        if db::connect_and_migrate(&cfg, &mut shutdown).await.is_some() {
            (&mut shutdown).await;
        }
        tracing::info!("alerter stopped");
    });
    ExitCode::SUCCESS
}
