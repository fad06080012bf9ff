//! Logging for every binary: `tracing` with an `EnvFilter` from `RUST_LOG`
//! (default `info`), as text or, with `LOG_FORMAT=json`, as JSON lines.
//!
//! The binaries call [`try_init`] after loading `.env`: a `LOG_FORMAT` other
//! than `text` or `json`, or a `RUST_LOG` that is not a valid filter, is a
//! configuration error.

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::ConfigError;

/// The filter used when `RUST_LOG` is unset.
const DEFAULT_FILTER: &str = "info,sqlx=warn,hyper=warn,reqwest=warn";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The logging settings, validated.
#[derive(Debug)]
pub struct LogConfig {
    pub filter: EnvFilter,
    pub format: LogFormat,
}

impl LogConfig {
    /// Reads `RUST_LOG` and `LOG_FORMAT` (an empty value counts as unset).
    pub fn from_vars(
        rust_log: Option<&str>,
        log_format: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let format = match log_format.map(str::trim).filter(|v| !v.is_empty()) {
            None => LogFormat::Text,
            Some(v) if v.eq_ignore_ascii_case("text") => LogFormat::Text,
            Some(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
            Some(v) => {
                return Err(ConfigError::new(
                    "LOG_FORMAT",
                    format!("expected text or json, got `{}`", v.escape_debug()),
                ))
            }
        };
        let filter = match rust_log.map(str::trim).filter(|v| !v.is_empty()) {
            None => EnvFilter::new(DEFAULT_FILTER),
            Some(v) => EnvFilter::builder().parse(v).map_err(|e| {
                ConfigError::new(
                    "RUST_LOG",
                    format!(
                        "expected a filter such as `info` or `warn,pinger=debug`, got `{}` ({e})",
                        v.escape_debug()
                    ),
                )
            })?,
        };
        Ok(LogConfig { filter, format })
    }
}

/// Installs the global subscriber from `RUST_LOG` and `LOG_FORMAT` of the
/// process environment, or says which of them is invalid. Later calls
/// install nothing.
pub fn try_init() -> Result<(), ConfigError> {
    let var = |k: &str| std::env::var(k).ok();
    let cfg = LogConfig::from_vars(var("RUST_LOG").as_deref(), var("LOG_FORMAT").as_deref())?;
    install(cfg);
    Ok(())
}

/// Installs the global subscriber, falling back to the defaults for an
/// invalid setting. Safe to call more than once (later calls do nothing),
/// so tests and benches may call it too.
pub fn init() {
    let var = |k: &str| std::env::var(k).ok();
    let cfg = LogConfig::from_vars(var("RUST_LOG").as_deref(), var("LOG_FORMAT").as_deref())
        .unwrap_or_else(|_| LogConfig {
            filter: EnvFilter::new(DEFAULT_FILTER),
            format: LogFormat::Text,
        });
    install(cfg);
}

fn install(cfg: LogConfig) {
    // Colours only on a terminal: log files and `docker logs` stay plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(cfg.filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_is_text_or_json_and_nothing_else() {
        assert_eq!(
            LogConfig::from_vars(None, None).map(|c| c.format),
            Ok(LogFormat::Text)
        );
        assert_eq!(
            LogConfig::from_vars(None, Some("JSON")).map(|c| c.format),
            Ok(LogFormat::Json)
        );
        assert_eq!(
            LogConfig::from_vars(None, Some(" ")).map(|c| c.format),
            Ok(LogFormat::Text)
        );
        let e = LogConfig::from_vars(None, Some("xml")).unwrap_err();
        assert_eq!(e.key, "LOG_FORMAT");
        assert!(e.message.contains("xml"), "{e}");
    }

    #[test]
    fn an_invalid_rust_log_names_the_variable() {
        assert!(LogConfig::from_vars(Some("warn,pinger=debug"), None).is_ok());
        for bad in ["info,apimon=loud", "=debug", "pinger[=x"] {
            let e = LogConfig::from_vars(Some(bad), None).unwrap_err();
            assert_eq!(e.key, "RUST_LOG", "{bad}");
        }
    }
}
