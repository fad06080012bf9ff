//! Reading configuration from the environment, validated once at start.
//!
//! Every service loads `.env` (through dotenvy, without overriding variables
//! that are already set), takes a snapshot of the environment in [`Env`], and
//! builds its typed configuration from it. A bad value gives a
//! [`ConfigError`] naming the variable and what was expected; the binaries
//! print it on one line and exit with status 2.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;

/// Exit status of a binary whose configuration is invalid.
pub const CONFIG_EXIT_CODE: i32 = 2;

/// A configuration value that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The variable, file or entry that is wrong.
    pub key: String,
    /// What was expected, and what was found when it is not a secret.
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A snapshot of the environment variables a service reads.
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be secrets: show the names only.
        let mut keys: Vec<&String> = self.vars.keys().collect();
        keys.sort();
        f.debug_struct("Env").field("keys", &keys).finish()
    }
}

impl Env {
    /// Loads `.env` from the working directory (if there is one) without
    /// overriding variables already set, then snapshots the environment.
    pub fn load() -> Result<Env, ConfigError> {
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(dotenvy::Error::LineParse(line, _)) => return Err(dotenv_line_error(&line)),
            Err(e) => return Err(ConfigError::new(".env", e.to_string())),
        }
        Ok(Env {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        })
    }

    /// An environment made of the given pairs only (for tests).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `key`; an empty value counts as unset.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// `key` parsed as `T`, or `default` when unset. `expected` describes a
    /// valid value for the error message.
    pub fn parse_or<T: FromStr>(
        &self,
        key: &str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| ConfigError::new(key, format!("expected {expected}, got `{v}`"))),
        }
    }

    /// A whole number within `range`, or `default` when unset.
    pub fn int_in<T>(
        &self,
        key: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        let expected = format!("a whole number from {} to {}", range.start(), range.end());
        let v = self.parse_or(key, default, &expected)?;
        if range.contains(&v) {
            Ok(v)
        } else {
            Err(ConfigError::new(
                key,
                format!("expected {expected}, got `{v}`"),
            ))
        }
    }

    /// Days of data kept (`RETENTION_DAYS`, 90), read by every service
    /// for the tables it writes (see `crate::retention`).
    pub fn retention_days(&self) -> Result<u32, ConfigError> {
        self.int_in("RETENTION_DAYS", 90u32, 1..=36_500)
    }

    /// A duration (`15`, `15s`, `500ms`, `2m`, `1h`; a bare number is
    /// seconds), or `default` when unset.
    pub fn duration_or(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse_duration(v).map_err(|m| ConfigError::new(key, m)),
        }
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::new(
                    key,
                    format!("expected true or false, got `{v}`"),
                )),
            },
        }
    }
}

/// The error for a line of `.env` that dotenvy cannot parse: it names the
/// variable (never the value, which may be a password) and says how to
/// quote.
pub fn dotenv_line_error(line: &str) -> ConfigError {
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_start_matches("export ").trim())
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        });
    let what = match key {
        Some(k) => format!("cannot parse the line of {k}"),
        None => "cannot parse a line (expected NAME=value)".to_string(),
    };
    let example = match key {
        None | Some("ALERT_EMAIL_TO") => {
            "ALERT_EMAIL_TO=\"ops@example.com, oncall@example.com\"".to_string()
        }
        Some(k) => format!("{k}=\"a value with spaces\""),
    };
    ConfigError::new(
        ".env",
        format!(
            "{what}: put a value with spaces, `#`, `$` or quotes in double quotes, \
             e.g. {example} (or in single quotes to take it literally)"
        ),
    )
}

/// Parses a duration as `humantime` writes it (`15s`, `500ms`, `2m`,
/// `1h 30m`, `7d`), or a bare number of seconds (`15`, `1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let expected =
        || format!("expected a duration such as 15s, 500ms, 2m, 1h or 1h 30m, got `{text}`");
    let d = match t.parse::<f64>() {
        Ok(secs) if (0.0..=1e9).contains(&secs) => Duration::from_secs_f64(secs),
        Ok(_) => return Err(expected()),
        Err(_) => humantime::parse_duration(t).map_err(|_| expected())?,
    };
    if d > Duration::from_secs(1_000_000_000) {
        return Err(expected());
    }
    Ok(d)
}

/// How to reach PostgreSQL: `DATABASE_URL`, or the seed's `DB_HOST`,
/// `DB_PORT`, `DB_NAME`, `DB_USER`, `DB_PASS`.
#[derive(Clone)]
pub struct DbConfig {
    /// Connection settings, password included; never printed.
    options: PgConnectOptions,
    /// `user@host:port/db`, for logs.
    display: String,
    /// Whether the settings came from `DATABASE_URL` (else the `DB_*`
    /// parts), to name the right variable in errors.
    from_url: bool,
    /// Size of each service's connection pool.
    pub max_connections: u32,
    /// How long to wait for a connection before an operation fails.
    pub acquire_timeout: Duration,
    /// Password given to the read-only `apimon_grafana` role at start
    /// (`GRAFANA_DB_PASSWORD`); never printed.
    pub grafana_password: Option<SecretString>,
}

impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field("target", &self.display)
            .field("password", &"[redacted]")
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl DbConfig {
    pub fn from_env(env: &Env) -> Result<DbConfig, ConfigError> {
        let max_connections = env.int_in("DB_POOL_SIZE", 5u32, 1..=1000)?;
        let acquire_timeout = env.duration_or("DB_TIMEOUT", Duration::from_secs(5))?;
        let from_url = env.get("DATABASE_URL").is_some();
        let (options, display) = if let Some(raw) = env.get("DATABASE_URL") {
            let url = url::Url::parse(raw).map_err(|e| {
                ConfigError::new(
                    "DATABASE_URL",
                    format!("expected postgres://user:password@host:port/database ({e})"),
                )
            })?;
            if url.scheme() != "postgres" && url.scheme() != "postgresql" {
                return Err(ConfigError::new(
                    "DATABASE_URL",
                    format!(
                        "expected a postgres:// or postgresql:// URL, got scheme `{}`",
                        url.scheme()
                    ),
                ));
            }
            let options = PgConnectOptions::from_str(raw).map_err(|_| {
                ConfigError::new(
                    "DATABASE_URL",
                    "expected postgres://user:password@host:port/database",
                )
            })?;
            let display = format!(
                "{}@{}:{}/{}",
                options.get_username(),
                options.get_host(),
                options.get_port(),
                options.get_database().unwrap_or("")
            );
            (options, display)
        } else {
            let host = env.get("DB_HOST").unwrap_or("localhost").to_string();
            let port = env.int_in("DB_PORT", 5432u16, 1..=65535)?;
            let database = env.get("DB_NAME").unwrap_or("apimon").to_string();
            let user = env.get("DB_USER").unwrap_or("apimon").to_string();
            let password = env
                .get("DB_PASS")
                .map(|p| SecretString::from(p.to_string()));
            let mut options = PgConnectOptions::new_without_pgpass()
                .host(&host)
                .port(port)
                .database(&database)
                .username(&user);
            if let Some(p) = &password {
                options = options.password(p.expose_secret());
            }
            (options, format!("{user}@{host}:{port}/{database}"))
        };
        Ok(DbConfig {
            grafana_password: env
                .get("GRAFANA_DB_PASSWORD")
                .map(|p| SecretString::from(p.to_string())),
            options: options.application_name("apimon"),
            display,
            from_url,
            max_connections,
            acquire_timeout,
        })
    }

    /// Fails unless `DB_POOL_SIZE` lets a service hold the `needed`
    /// connections it uses at once; `holds` names them, for the message.
    /// A smaller pool would not fail at start but deadlock or time out
    /// later, under load.
    pub fn require_pool(&self, needed: u32, holds: &str) -> Result<(), ConfigError> {
        if self.max_connections >= needed {
            return Ok(());
        }
        Err(ConfigError::new(
            "DB_POOL_SIZE",
            format!(
                "expected at least {needed} ({holds} at once), got {}",
                self.max_connections
            ),
        ))
    }

    /// Settings from a URL (tests).
    pub fn from_url(url: &str) -> Result<DbConfig, ConfigError> {
        DbConfig::from_env(&Env::from_pairs([("DATABASE_URL", url)]))
    }

    /// Connection settings, password included.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// `user@host:port/database`, safe to log.
    pub fn target(&self) -> &str {
        &self.display
    }

    /// The configuration error for a server that refuses these settings:
    /// one line naming the variable to fix, never the password.
    pub fn refused(&self, why: Refusal) -> ConfigError {
        let user = self.options.get_username();
        let database = self.options.get_database().unwrap_or("");
        let (parts_key, what) = match why {
            Refusal::Authentication => (
                "DB_USER/DB_PASS",
                format!("password authentication failed for role `{user}`"),
            ),
            Refusal::RoleRefused => (
                "DB_USER",
                format!("role `{user}` does not exist or may not log in"),
            ),
            Refusal::NoDatabase => ("DB_NAME", format!("database `{database}` does not exist")),
        };
        let key = if self.from_url {
            "DATABASE_URL"
        } else {
            parts_key
        };
        ConfigError::new(
            key,
            format!(
                "PostgreSQL at {} refused the connection: {what} \
                 (see \"Running without Docker\" in the README to create the role and database)",
                self.display
            ),
        )
    }
}

/// Why PostgreSQL refused a connection, when trying again cannot help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong password (SQLSTATE 28P01).
    Authentication,
    /// The role does not exist, or `pg_hba.conf` does not let it in
    /// (SQLSTATE 28000).
    RoleRefused,
    /// The database does not exist (SQLSTATE 3D000).
    NoDatabase,
}

impl Refusal {
    /// The refusal a connection error stands for, from its SQLSTATE.
    pub fn of(e: &sqlx::Error) -> Option<Refusal> {
        let sqlx::Error::Database(d) = e else {
            return None;
        };
        match d.code().as_deref() {
            Some("28P01") => Some(Refusal::Authentication),
            Some("28000") => Some(Refusal::RoleRefused),
            Some("3D000") => Some(Refusal::NoDatabase),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2min").unwrap(), Duration::from_secs(120));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("inf").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn db_config_from_parts_uses_defaults() {
        let env = Env::from_pairs([("DB_HOST", "db.example"), ("DB_PASS", "hunter2")]);
        let cfg = DbConfig::from_env(&env).unwrap();
        assert_eq!(cfg.target(), "apimon@db.example:5432/apimon");
    }

    #[test]
    fn database_url_overrides_parts() {
        let env = Env::from_pairs([
            ("DATABASE_URL", "postgres://u:secret@h:6000/d"),
            ("DB_HOST", "ignored"),
        ]);
        let cfg = DbConfig::from_env(&env).unwrap();
        assert_eq!(cfg.target(), "u@h:6000/d");
    }

    #[test]
    fn password_never_appears_in_debug_output() {
        for env in [
            Env::from_pairs([("DATABASE_URL", "postgres://u:s3cr3tpw@h/d")]),
            Env::from_pairs([("DB_PASS", "s3cr3tpw")]),
        ] {
            let cfg = DbConfig::from_env(&env).unwrap();
            assert!(!format!("{cfg:?}").contains("s3cr3tpw"));
            assert!(!format!("{env:?}").contains("s3cr3tpw"));
        }
    }

    #[test]
    fn a_refused_connection_names_the_variable_to_fix_and_not_the_password() {
        let cfg = DbConfig::from_url("postgres://u:s3cr3tpw@h:6000/d").unwrap();
        for why in [
            Refusal::Authentication,
            Refusal::RoleRefused,
            Refusal::NoDatabase,
        ] {
            let e = cfg.refused(why);
            assert_eq!(e.key, "DATABASE_URL");
            assert!(!e.to_string().contains("s3cr3tpw"), "{e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        assert!(cfg.refused(Refusal::NoDatabase).message.contains("`d`"));
        let parts = DbConfig::from_env(&Env::from_pairs([("DB_PASS", "s3cr3tpw")])).unwrap();
        assert_eq!(parts.refused(Refusal::NoDatabase).key, "DB_NAME");
        assert_eq!(
            parts.refused(Refusal::Authentication).key,
            "DB_USER/DB_PASS"
        );
    }

    #[test]
    fn bad_port_names_the_variable() {
        let env = Env::from_pairs([("DB_PORT", "70000")]);
        let err = DbConfig::from_env(&env).unwrap_err();
        assert_eq!(err.key, "DB_PORT");
        assert!(err.message.contains("70000"), "{err}");
    }

    #[test]
    fn bad_database_url_does_not_echo_the_password() {
        let env = Env::from_pairs([("DATABASE_URL", "mysql://u:s3cr3tpw@h/d")]);
        let err = DbConfig::from_env(&env).unwrap_err();
        assert_eq!(err.key, "DATABASE_URL");
        assert!(!err.to_string().contains("s3cr3tpw"));
    }

    #[test]
    fn an_unparsable_env_line_names_the_variable_says_how_to_quote_and_hides_the_value() {
        let e = dotenv_line_error("DB_PASS=my s3cr3t pw");
        assert_eq!(e.key, ".env");
        assert!(e.message.contains("DB_PASS"), "{e}");
        assert!(e.message.contains("double quotes"), "{e}");
        assert!(e.message.contains("DB_PASS=\""), "{e}");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        let e = dotenv_line_error("what is this");
        assert!(e.message.contains("NAME=value"), "{e}");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let env = Env::from_pairs([("DB_PORT", "  ")]);
        assert_eq!(env.int_in("DB_PORT", 5432u16, 1..=65535).unwrap(), 5432);
    }

    #[test]
    fn booleans_parse_and_reject_garbage() {
        let env = Env::from_pairs([("A", "yes"), ("B", "0"), ("C", "maybe")]);
        assert!(env.bool_or("A", false).unwrap());
        assert!(!env.bool_or("B", true).unwrap());
        assert_eq!(env.bool_or("C", true).unwrap_err().key, "C");
    }
}
