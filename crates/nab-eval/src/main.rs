//! `nab-eval`: the NAB evaluation of the detector, as a tool of its own
//! (see `docs/nab-evaluation.md`). The detector's settings come from the
//! environment (and `.env`) as for the service.

use std::path::PathBuf;
use std::process::ExitCode;

use apimon_core::config::CONFIG_EXIT_CODE;
use apimon_core::{telemetry, Env};
use clap::Parser;
use detector::replay::ReplayOptions;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Replay the NAB corpus through apimon, a rolling z-score and the original pooled \
             forest; print windows caught, false positives, delays and NAB scores per category"
)]
struct Cli {
    /// The NAB directory, holding `data/<category>/*.csv` (e.g.
    /// `../shared/datasets/nab`).
    #[arg(long, value_name = "DIR")]
    nab: PathBuf,
    /// The anomaly windows (default: DIR/combined_windows.json).
    #[arg(long, value_name = "FILE")]
    windows: Option<PathBuf>,
    /// Also write one row per detector and file to this CSV.
    #[arg(long, value_name = "FILE")]
    out_csv: Option<PathBuf>,
    /// Threads the work is spread over.
    #[arg(long, default_value_t = nab_eval::THREADS)]
    threads: usize,
    /// Measure a suggested change: shift-nonnegative, no-time-features,
    /// always-time-features, skip-original (repeatable).
    #[arg(long = "experiment", value_name = "NAME")]
    experiments: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let opts = match Env::load()
        .and_then(|env| telemetry::try_init().map(|()| env))
        .and_then(|env| ReplayOptions::from_env(&env))
    {
        Ok(o) => o,
        Err(e) => return usage_error(format!("configuration error: {e}")),
    };
    let variant = match nab_eval::Variant::default().with_experiments(&cli.experiments) {
        Ok(v) => v,
        Err(e) => return usage_error(e),
    };
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(cli.threads.max(1))
        .build_global()
    {
        eprintln!("nab-eval: cannot start {} threads: {e}", cli.threads);
        return ExitCode::FAILURE;
    }
    match nab_eval::run(
        &cli.nab,
        cli.windows.as_deref(),
        cli.out_csv.as_deref(),
        &variant,
        &opts,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nab-eval: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("nab-eval: {message}");
    ExitCode::from(CONFIG_EXIT_CODE as u8)
}
