//! `detector`: scores each new check with its API's Isolation Forest and
//! writes anomalies; `detector replay` streams history through the same
//! code and prints CSV.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use apimon_core::config::CONFIG_EXIT_CODE;
use apimon_core::features::ValueDomain;
use apimon_core::{db, shutdown, telemetry, DbConfig, Env};
use clap::{Parser, Subcommand};
use detector::config::DetectorConfig;
use detector::replay::{self, Point, ReplayOptions};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "apimon detector: per-API Isolation Forest anomaly detection"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Stream history through the detector and print
    /// `timestamp,value,anomaly_score,severity` as CSV.
    Replay {
        /// A CSV file to replay.
        #[arg(long, conflicts_with_all = ["api", "from", "to"])]
        csv: Option<PathBuf>,
        /// Name of the timestamp column of the CSV.
        #[arg(long, default_value = "timestamp")]
        time_col: String,
        /// Name of the value column of the CSV.
        #[arg(long, default_value = "value")]
        value_col: String,
        /// An API whose rows of api_metrics to replay.
        #[arg(long, requires_all = ["from", "to"])]
        api: Option<String>,
        /// Start (RFC 3339 or YYYY-MM-DD HH:MM:SS, UTC).
        #[arg(long)]
        from: Option<String>,
        /// End (exclusive).
        #[arg(long)]
        to: Option<String>,
        /// Treat the CSV's values as response times: a negative value is a
        /// failed check (as in api_metrics). By default a CSV may hold any
        /// metric and negative values are values.
        #[arg(long, requires = "csv")]
        response_times: bool,
    },
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
            eprintln!("detector: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        None => {
            let cfg = match DetectorConfig::from_env(&env) {
                Ok(c) => c,
                Err(e) => return config_error(e),
            };
            runtime.block_on(serve(cfg))
        }
        Some(Command::Replay {
            csv,
            time_col,
            value_col,
            api,
            from,
            to,
            response_times,
        }) => {
            let mut opts = match ReplayOptions::from_env(&env) {
                Ok(o) => o,
                Err(e) => return config_error(e),
            };
            if csv.is_some() && !response_times {
                opts.domain = ValueDomain::AnyValue;
            }
            match (csv, api) {
                (Some(path), _) => replay_csv(&path, &time_col, &value_col, &opts),
                (None, Some(api)) => {
                    let db = match DbConfig::from_env(&env) {
                        Ok(c) => c,
                        Err(e) => return config_error(e),
                    };
                    runtime.block_on(replay_api(&db, &api, from.as_deref(), to.as_deref(), &opts))
                }
                (None, None) => {
                    eprintln!("detector replay: give --csv FILE or --api NAME --from T --to T");
                    return ExitCode::from(CONFIG_EXIT_CODE as u8);
                }
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(e) = e.downcast_ref::<apimon_core::ConfigError>() {
                return config_error(e.clone());
            }
            eprintln!("detector: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_error(e: apimon_core::ConfigError) -> ExitCode {
    eprintln!("detector: configuration error: {e}");
    ExitCode::from(CONFIG_EXIT_CODE as u8)
}

async fn serve(cfg: DetectorConfig) -> anyhow::Result<()> {
    tracing::info!(database = cfg.db.target(), shard = %cfg.shard, "detector starting");
    let shutdown = shutdown::signal();
    tokio::pin!(shutdown);
    // /healthz from the start: 503 with the reason until the database is
    // ready.
    let health = apimon_core::health::start(cfg.http, "DETECTOR_HTTP_PORT")
        .await
        .map_err(anyhow::Error::msg)?;
    detector::catalog::register();
    let Some((pool, _backend)) = db::connect_and_migrate(&cfg.db, &health, &mut shutdown).await?
    else {
        return Ok(());
    };
    db::apply_grafana_password(&pool, &cfg.db).await;
    detector::service::run_with_health(cfg, pool, health, shutdown).await?;
    Ok(())
}

fn replay_csv(
    path: &PathBuf,
    time_col: &str,
    value_col: &str,
    opts: &ReplayOptions,
) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let points = replay::read_csv(std::io::BufReader::new(file), time_col, value_col)
        .with_context(|| format!("reading {}", path.display()))?;
    let scored = replay::replay(&points, opts);
    replay::write_csv(std::io::stdout().lock(), &scored).context("writing CSV to stdout")?;
    Ok(())
}

async fn replay_api(
    db_cfg: &DbConfig,
    api: &str,
    from: Option<&str>,
    to: Option<&str>,
    opts: &ReplayOptions,
) -> anyhow::Result<()> {
    let parse = |label: &str, v: Option<&str>| {
        let v = v.unwrap_or_default();
        replay::parse_timestamp(v).with_context(|| {
            format!("--{label}: expected RFC 3339 or YYYY-MM-DD HH:MM:SS, got `{v}`")
        })
    };
    let (from, to) = (parse("from", from)?, parse("to", to)?);
    let pool = db::connect(db_cfg).await?;
    let rows =
        db::metrics::series_since(&pool, api, from - chrono::Duration::microseconds(1)).await?;
    let points: Vec<Point> = rows
        .into_iter()
        .take_while(|(t, _, _)| *t < to)
        .map(|(timestamp, value, success)| Point {
            timestamp,
            value,
            success,
        })
        .collect();
    if points.is_empty() {
        anyhow::bail!("no rows of `{api}` between {from} and {to}");
    }
    let opts = ReplayOptions {
        api_name: api.to_string(),
        ..opts.clone()
    };
    let scored = replay::replay(&points, &opts);
    replay::write_csv(std::io::stdout().lock(), &scored).context("writing CSV to stdout")?;
    Ok(())
}
