//! `alerter`: sends alerts and status reports. `alerter test-email` checks
//! the SMTP settings; `alerter preview-report` prints the next report;
//! `alerter silence add|list|expire` manages silences (these need only the
//! database settings).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use alerter::baseline::Baselines;
use alerter::channels::Sender;
use alerter::compose;
use alerter::config::AlerterConfig;
use alerter::silence;
use apimon_core::config::CONFIG_EXIT_CODE;
use apimon_core::db::silences;
use apimon_core::glob::Glob;
use apimon_core::{db, shutdown, telemetry, DbConfig, Env};
use chrono::{DateTime, Utc};
use clap::{CommandFactory, Parser, Subcommand};

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
    /// Hold back the notifications of some APIs for a while.
    #[command(subcommand)]
    Silence(SilenceCommand),
}

#[derive(Subcommand, Debug)]
enum SilenceCommand {
    /// Silence the APIs whose name matches a pattern, from now (or --start)
    /// for a while. Incidents are still recorded.
    Add {
        /// API name, or glob: `*` any run of characters, `?` one character
        /// (e.g. "Billing*"; "*" for every API).
        #[arg(long = "api", value_name = "PATTERN", value_parser = silence::parse_pattern)]
        api: Glob,
        /// How long it lasts: 30m, 2h, 1d.
        #[arg(long = "for", value_name = "DURATION", value_parser = silence::parse_for)]
        duration: Duration,
        /// Why, for whoever wonders where the alerts went.
        #[arg(long, value_name = "TEXT", value_parser = silence::parse_reason)]
        reason: String,
        /// Who sets it (default: $USER, else $LOGNAME, else "unknown").
        #[arg(long = "by", value_name = "NAME", value_parser = silence::parse_by)]
        by: Option<String>,
        /// When it starts, in RFC 3339 (default: now).
        #[arg(long, value_name = "RFC3339", value_parser = silence::parse_start)]
        start: Option<DateTime<Utc>>,
    },
    /// List the active and scheduled silences.
    List {
        /// Also the silences that ended or were expired.
        #[arg(long)]
        all: bool,
    },
    /// End an active (or scheduled) silence now.
    Expire {
        /// Its id, as `silence list` shows it (with or without the `#`).
        #[arg(value_name = "ID", value_parser = parse_id)]
        id: i64,
    },
}

fn parse_id(text: &str) -> Result<i64, String> {
    text.trim()
        .trim_start_matches('#')
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("expected a silence id such as 4, got `{text}`"))
}

fn config_error(e: apimon_core::ConfigError) -> ExitCode {
    eprintln!("alerter: configuration error: {e}");
    ExitCode::from(CONFIG_EXIT_CODE as u8)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `.env` first: it may set RUST_LOG and LOG_FORMAT.
    let env = match Env::load().and_then(|env| telemetry::try_init().map(|()| env)) {
        Ok(env) => env,
        Err(e) => return config_error(e),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("alerter: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        // Silences need the database only: no channel settings.
        Some(Command::Silence(cmd)) => {
            let db = match DbConfig::from_env(&env) {
                Ok(db) => db,
                Err(e) => return config_error(e),
            };
            runtime.block_on(silence_command(&db, &env, cmd))
        }
        command => {
            let cfg = match AlerterConfig::from_env(&env) {
                Ok(cfg) => cfg,
                Err(e) => return config_error(e),
            };
            runtime.block_on(async move {
                match command {
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
                        &env,
                        &csv,
                        &time_col,
                        &value_col,
                        api_col.as_deref(),
                        api.as_deref(),
                    ),
                    Some(Command::Silence(_)) | None => serve(cfg).await,
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(e) = e.downcast_ref::<apimon_core::ConfigError>() {
                return config_error(e.clone());
            }
            eprintln!("alerter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn silence_command(db: &DbConfig, env: &Env, cmd: SilenceCommand) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let now = Utc::now();
    if let SilenceCommand::Add {
        duration, start, ..
    } = &cmd
    {
        let ends_at = start.unwrap_or(now) + chrono::Duration::from_std(*duration)?;
        if ends_at <= now {
            let mut root = Cli::command();
            root.build();
            let mut add = root
                .find_subcommand("silence")
                .and_then(|s| s.find_subcommand("add"))
                .cloned()
                .unwrap_or(root);
            add.error(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "--start plus --for ends at {}, in the past: nothing to silence",
                    silence::timestamp(ends_at)
                ),
            )
            .exit();
        }
    }
    let pool = db::connect(db).await?;
    // Quietly: a command's output is its answer, not the schema's state.
    db::MIGRATOR
        .run(&pool)
        .await
        .context("applying the migrations")?;
    match cmd {
        SilenceCommand::Add {
            api,
            duration,
            reason,
            by,
            start,
        } => {
            let starts_at = start.unwrap_or(now);
            let ends_at = starts_at + chrono::Duration::from_std(duration)?;
            let by = by.unwrap_or_else(|| silence::default_by(env.get("USER"), env.get("LOGNAME")));
            let s = silences::add(&pool, api.as_str(), starts_at, ends_at, &by, &reason)
                .await
                .context("adding the silence")?;
            println!(
                "silence #{} on \"{}\" from {} until {} (by {}: {})",
                s.id,
                s.api_pattern,
                silence::timestamp(s.starts_at),
                silence::timestamp(s.ends_at),
                s.created_by,
                s.reason
            );
            let known = db::endpoints::names(&pool).await.unwrap_or_default();
            let matched: Vec<&String> = known.iter().filter(|n| api.matches(n)).collect();
            if matched.is_empty() && !known.is_empty() {
                eprintln!(
                    "alerter: note: \"{api}\" matches none of the {} known APIs",
                    known.len()
                );
            } else if !matched.is_empty() {
                let names: Vec<&str> = matched.iter().take(10).map(|n| n.as_str()).collect();
                let more = matched.len().saturating_sub(names.len());
                let more = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                println!("matches: {}{more}", names.join(", "));
            }
        }
        SilenceCommand::List { all } => {
            let rows = silences::list(&pool, all)
                .await
                .context("listing silences")?;
            if rows.is_empty() {
                println!(
                    "{}",
                    if all {
                        "no silences"
                    } else {
                        "no active or scheduled silences"
                    }
                );
            } else {
                print!("{}", silence::table(&rows, now));
            }
        }
        SilenceCommand::Expire { id } => {
            if !silences::expire(&pool, id)
                .await
                .context("expiring the silence")?
            {
                anyhow::bail!(
                    "no active or scheduled silence #{id} (see `alerter silence list --all`)"
                );
            }
            println!("silence #{id} expired");
        }
    }
    Ok(())
}

async fn serve(cfg: AlerterConfig) -> anyhow::Result<()> {
    tracing::info!(database = cfg.db.target(), "alerter starting");
    let shutdown = shutdown::signal();
    tokio::pin!(shutdown);
    // /healthz from the start: 503 with the reason until the database is
    // ready.
    let health = apimon_core::health::start(cfg.http, "ALERTER_HTTP_PORT")
        .await
        .map_err(anyhow::Error::msg)?;
    alerter::catalog::register(&cfg.channels);
    let Some((pool, _)) = db::connect_and_migrate(&cfg.db, &health, &mut shutdown).await? else {
        return Ok(());
    };
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
    env: &Env,
    path: &std::path::Path,
    time_col: &str,
    value_col: &str,
    api_col: Option<&str>,
    api: Option<&str>,
) -> anyhow::Result<()> {
    let opts = detector::replay::ReplayOptions {
        params: detector::config::model_params(env).map_err(|e| anyhow::anyhow!("{e}"))?,
        thresholds: detector::config::thresholds(env).map_err(|e| anyhow::anyhow!("{e}"))?,
        policy: detector::config::policy(env).map_err(|e| anyhow::anyhow!("{e}"))?,
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
