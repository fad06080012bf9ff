//! `alerter`: sends alerts and status reports. `alerter test-email` checks
//! the SMTP settings; `alerter preview-report` prints the next report.

use std::process::ExitCode;

use alerter::baseline::Baselines;
use alerter::channels::Sender;
use alerter::compose;
use alerter::config::AlerterConfig;
use apimon_core::config::CONFIG_EXIT_CODE;
use apimon_core::{db, shutdown, telemetry, Env};
use chrono::Utc;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "apimon alerter: instant alerts and status reports by email and webhooks"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send one test email with the current SMTP settings.
    TestEmail,
    /// Print the status report of the period in progress, without sending it.
    PreviewReport {
        /// Print the HTML version instead of the plain text.
        #[arg(long)]
        html: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    let cfg = match Env::load().and_then(|env| AlerterConfig::from_env(&env)) {
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
    let result = runtime.block_on(async move {
        match cli.command {
            None => serve(cfg).await,
            Some(Command::TestEmail) => test_email(&cfg).await,
            Some(Command::PreviewReport { html }) => preview(&cfg, html).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alerter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cfg: AlerterConfig) -> anyhow::Result<()> {
    tracing::info!(database = cfg.db.target(), "alerter starting");
    let shutdown = shutdown::signal();
    tokio::pin!(shutdown);
    let Some((pool, _)) = db::connect_and_migrate(&cfg.db, &mut shutdown).await else {
        return Ok(());
    };
    let health = apimon_core::health::start(cfg.http, "ALERTER_HTTP_PORT")
        .await
        .map_err(anyhow::Error::msg)?;
    alerter::service::run_with_health(cfg, pool, health, shutdown).await
}

async fn test_email(cfg: &AlerterConfig) -> anyhow::Result<()> {
    let Some(email) = &cfg.channels.email else {
        anyhow::bail!("email is not configured: set ALERT_EMAIL_TO and ALERT_EMAIL_FROM");
    };
    let sender = Sender::new(&cfg.channels)?;
    let msg = compose::test_message(&cfg.dashboard_url);
    sender
        .send_email(&msg.subject, &msg.text, Some(&msg.html))
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "test email sent through {}:{} to {}",
        email.host,
        email.port,
        email
            .to
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

async fn preview(cfg: &AlerterConfig, html: bool) -> anyhow::Result<()> {
    let pool = db::connect(&cfg.db).await?;
    db::migrate(&pool).await?;
    let now = Utc::now();
    let interval = chrono::Duration::from_std(cfg.report_interval)?;
    let step = interval.num_milliseconds().max(1);
    let start =
        chrono::DateTime::from_timestamp_millis(now.timestamp_millis().div_euclid(step) * step)
            .unwrap_or(now);
    let mut baselines = Baselines::new(cfg.baseline_window);
    let report = alerter::report::build(&pool, cfg, &mut baselines, start, now).await?;
    let msg = compose::report(&report, &cfg.dashboard_url);
    if html {
        println!("{}", msg.html);
    } else {
        println!("Subject: {}\n\n{}", msg.subject, msg.text);
    }
    Ok(())
}
