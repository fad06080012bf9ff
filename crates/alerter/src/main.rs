//! `alerter`: sends alerts and status reports. `alerter test-email` checks
//! the SMTP settings; `alerter preview-report` prints the next report.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

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
    /// Backtest the alert policy on history: response times (ms; empty or
    /// negative = a failed check) go through the detector's replay and the
    /// incident rules with the configured settings, in data time. Prints
    /// `timestamp,api_name,event,kind,detail`, one row per incident in each
    /// notification that would be sent.
    Replay {
        /// The CSV file.
        #[arg(long)]
        csv: PathBuf,
        /// Name of the timestamp column.
        #[arg(long, default_value = "timestamp")]
        time_col: String,
        /// Name of the response-time column (ms).
        #[arg(long, default_value = "value")]
        value_col: String,
        /// A column naming each row's API (several APIs in one file).
        #[arg(long)]
        api_col: Option<String>,
        /// The API's name (without --api-col), or the one API to replay
        /// (with it).
        #[arg(long)]
        api: Option<String>,
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
            Some(Command::Replay {
                csv,
                time_col,
                value_col,
                api_col,
                api,
            }) => replay(
                &cfg,
                &csv,
                &time_col,
                &value_col,
                api_col.as_deref(),
                api.as_deref(),
            ),
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

fn replay(
    cfg: &AlerterConfig,
    path: &std::path::Path,
    time_col: &str,
    value_col: &str,
    api_col: Option<&str>,
    api: Option<&str>,
) -> anyhow::Result<()> {
    let env = Env::load().map_err(|e| anyhow::anyhow!("{e}"))?;
    let opts = detector::replay::ReplayOptions {
        params: detector::config::model_params(&env).map_err(|e| anyhow::anyhow!("{e}"))?,
        thresholds: detector::config::thresholds(&env).map_err(|e| anyhow::anyhow!("{e}"))?,
        policy: detector::config::policy(&env).map_err(|e| anyhow::anyhow!("{e}"))?,
        ..Default::default()
    };
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let default_api = api.unwrap_or("api");
    let mut series = alerter::replay::read_csv(file, time_col, value_col, api_col, default_api)
        .with_context(|| format!("{}", path.display()))?;
    if let (Some(_), Some(only)) = (api_col, api) {
        series.retain(|(a, _)| a == only);
        if series.is_empty() {
            anyhow::bail!("no rows of API `{only}` in {}", path.display());
        }
    }
    let policy = alerter::replay::Policy {
        incidents: cfg.incidents.clone(),
        group_wait: cfg.group_wait,
        repeat_interval: cfg.repeat_interval,
    };
    let pages = alerter::replay::replay(&series, &opts, &policy);
    let stdout = std::io::stdout();
    alerter::replay::write_csv(stdout.lock(), &pages)?;
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
