//! The alerter's configuration, read from the environment and the
//! `[[maintenance]]` entries of the endpoints file.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use apimon_core::apis;
use apimon_core::incidents::IncidentPolicy;
use apimon_core::maintenance::MaintenanceWindow;
use apimon_core::{ConfigError, DbConfig, Env};
use secrecy::SecretString;

/// Connections the alerter holds at once: see [`DbConfig::require_pool`].
pub const POOL_NEEDED: u32 = 4;
const POOL_HOLDS: &str = "its listener, a pass's transaction, delivery and the retention task";

/// How the SMTP connection is secured (`SMTP_TLS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption (local relays, tests).
    None,
}

/// Email settings; present when `ALERT_EMAIL_TO` is set.
#[derive(Clone)]
pub struct EmailConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// Login; `SMTP_USER`, default `ALERT_EMAIL_FROM`.
    pub user: String,
    /// `ALERT_EMAIL_PASSWORD` (an app password for Gmail); never printed.
    pub password: Option<SecretString>,
    pub from: lettre::message::Mailbox,
    pub to: Vec<lettre::message::Mailbox>,
    pub timeout: Duration,
}

impl fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("from", &self.from.to_string())
            .field(
                "to",
                &self.to.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A webhook URL: it usually embeds a token, so it is never printed.
#[derive(Clone)]
pub struct WebhookUrl(pub url::Url);

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}/[redacted]",
            self.0.scheme(),
            self.0.host_str().unwrap_or("")
        )
    }
}

/// What is posted to the Teams webhook (`TEAMS_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TeamsFormat {
    /// An Adaptive Card in a message, as Teams Workflows webhooks ("Post
    /// to a channel when a webhook request is received") take it.
    #[default]
    Adaptive,
    /// The MessageCard of the retired Office 365 connectors.
    MessageCard,
}

/// The delivery channels; each is enabled by its variables.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    pub email: Option<EmailConfig>,
    /// `SLACK_WEBHOOK_URL`: a Slack incoming webhook.
    pub slack: Option<WebhookUrl>,
    /// `TEAMS_WEBHOOK_URL`: a Microsoft Teams (Workflows) webhook.
    pub teams: Option<WebhookUrl>,
    /// The card format the Teams webhook takes.
    pub teams_format: TeamsFormat,
    /// `ALERT_WEBHOOK_URL`: any endpoint taking our JSON.
    pub webhook: Option<WebhookUrl>,
}

impl Channels {
    /// Names of the enabled channels.
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.email.is_some() {
            v.push("email");
        }
        if self.slack.is_some() {
            v.push("slack");
        }
        if self.teams.is_some() {
            v.push("teams");
        }
        if self.webhook.is_some() {
            v.push("webhook");
        }
        v
    }
}

/// Retry policy of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Attempts before a notification is marked failed (`ALERT_RETRY_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// Wait after the first failure, doubled each time (`ALERT_RETRY_BASE`).
    pub base: Duration,
    /// Longest wait between attempts (`ALERT_RETRY_MAX_DELAY`).
    pub max_delay: Duration,
}

impl Retry {
    /// The wait before the next attempt after `attempts` failures, or
    /// `None` when there is none left.
    pub fn next_delay(&self, attempts: u32) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(30));
        Some(self.base.saturating_mul(factor).min(self.max_delay))
    }
}

/// Everything the alerter needs, validated.
#[derive(Debug, Clone)]
pub struct AlerterConfig {
    pub db: DbConfig,
    pub channels: Channels,
    /// The incident rules (read here for `alerter replay`; the detector
    /// applies them as it scores).
    pub incidents: IncidentPolicy,
    /// Incidents opening (or resolving) within this time of each other go
    /// out as one notification (`ALERT_GROUP_WAIT`, 30 s).
    pub group_wait: Duration,
    /// A reminder this often while an incident stays open
    /// (`ALERT_REPEAT_INTERVAL`, 4 h; 0 turns reminders off).
    pub repeat_interval: Duration,
    /// Links in messages (`DASHBOARD_URL`).
    pub dashboard_url: String,
    /// Status report period (`ALERT_CHECK_INTERVAL`, s).
    pub report_interval: Duration,
    /// Slow: interval p95 above baseline p95 times this (`SLOW_FACTOR`).
    pub slow_factor: f64,
    /// Slow: interval p95 above this, when set (`SLOW_THRESHOLD_MS`).
    pub slow_threshold_ms: Option<f64>,
    /// Send a report when every API is healthy (`STATUS_REPORT_WHEN_HEALTHY`).
    pub report_when_healthy: bool,
    /// History the baseline is computed over (`BASELINE_WINDOW`, 7 days).
    pub baseline_window: Duration,
    /// Fallback poll (`ALERT_POLL_INTERVAL`).
    pub poll_interval: Duration,
    pub retry: Retry,
    pub shutdown_grace: Duration,
    /// `/healthz` and `/metrics` (`ALERTER_HTTP_PORT`, 9103; 0 turns it off).
    pub http: Option<std::net::SocketAddr>,
    /// Recurring windows in which incidents are recorded but not notified:
    /// the `[[maintenance]]` entries of the endpoints file (`APIS_FILE`;
    /// none when it is unset and `./apis.toml` does not exist).
    pub maintenance: Vec<MaintenanceWindow>,
    /// Days of status reports and ended silences kept (`RETENTION_DAYS`).
    pub retention_days: u32,
    /// Days of sent (or failed) notifications kept
    /// (`NOTIFICATIONS_RETENTION_DAYS`, 14): each holds a whole email, text
    /// and HTML, and a status report of many APIs is large.
    pub notifications_retention_days: u32,
}

impl AlerterConfig {
    pub fn from_env(env: &Env) -> Result<AlerterConfig, ConfigError> {
        for gone in ["ALERT_MIN_SEVERITY", "ALERT_COOLDOWN", "ALERT_BACKFILL"] {
            if env.get(gone).is_some() {
                tracing::warn!(
                    variable = gone,
                    "no longer used: notifications come from incidents (see ALERT_DOWN_AFTER, ALERT_SLOW_RATIO, ALERT_GROUP_WAIT)"
                );
            }
        }
        let dashboard_url = env
            .get("DASHBOARD_URL")
            .unwrap_or("http://localhost:3000")
            .trim_end_matches('/')
            .to_string();
        url::Url::parse(&dashboard_url).map_err(|_| {
            ConfigError::new(
                "DASHBOARD_URL",
                format!("expected a URL such as http://localhost:3000, got `{dashboard_url}`"),
            )
        })?;
        let slow_factor: f64 = env.parse_or("SLOW_FACTOR", 1.5, "a number above 1 such as 1.5")?;
        if !(slow_factor.is_finite() && slow_factor > 1.0) {
            return Err(ConfigError::new(
                "SLOW_FACTOR",
                format!("expected a number above 1 such as 1.5, got `{slow_factor}`"),
            ));
        }
        let slow_threshold_ms = match env.get("SLOW_THRESHOLD_MS") {
            None => None,
            Some(v) => Some(
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .ok_or_else(|| {
                        ConfigError::new(
                            "SLOW_THRESHOLD_MS",
                            format!("expected a number of milliseconds above 0, got `{v}`"),
                        )
                    })?,
            ),
        };
        let report_interval = secs(env, "ALERT_CHECK_INTERVAL", 300)?;
        Ok(AlerterConfig {
            db: DbConfig::from_env(env).and_then(|db| {
                db.require_pool(POOL_NEEDED, POOL_HOLDS)?;
                Ok(db)
            })?,
            channels: channels(env)?,
            incidents: IncidentPolicy::from_env(env)?,
            group_wait: env.duration_or("ALERT_GROUP_WAIT", Duration::from_secs(30))?,
            repeat_interval: env
                .duration_or("ALERT_REPEAT_INTERVAL", Duration::from_secs(4 * 3600))?,
            dashboard_url,
            report_interval,
            slow_factor,
            slow_threshold_ms,
            report_when_healthy: env.bool_or("STATUS_REPORT_WHEN_HEALTHY", true)?,
            baseline_window: env.duration_or("BASELINE_WINDOW", Duration::from_secs(7 * 86_400))?,
            poll_interval: nonzero(env, "ALERT_POLL_INTERVAL", Duration::from_secs(2))?,
            retry: Retry {
                max_attempts: env.int_in("ALERT_RETRY_MAX_ATTEMPTS", 20u32, 1..=1000)?,
                base: nonzero(env, "ALERT_RETRY_BASE", Duration::from_secs(10))?,
                max_delay: nonzero(env, "ALERT_RETRY_MAX_DELAY", Duration::from_secs(300))?,
            },
            shutdown_grace: env.duration_or("SHUTDOWN_GRACE", Duration::from_secs(10))?,
            http: apimon_core::health::http_addr(env, "alerter", 9103)?,
            maintenance: maintenance(env, Path::new(DEFAULT_APIS_FILE))?,
            retention_days: env.retention_days()?,
            notifications_retention_days: env.int_in(
                "NOTIFICATIONS_RETENTION_DAYS",
                14u32,
                1..=36_500,
            )?,
        })
    }
}

/// Where the endpoints file is when `APIS_FILE` is unset (as for the pinger).
pub const DEFAULT_APIS_FILE: &str = "./apis.toml";

/// The maintenance windows of `APIS_FILE`, which must be readable when it
/// is set; else of `default` when that file exists; else none.
pub fn maintenance(env: &Env, default: &Path) -> Result<Vec<MaintenanceWindow>, ConfigError> {
    match env.get("APIS_FILE") {
        Some(path) => apis::load_maintenance(Path::new(path)),
        None if default.exists() => apis::load_maintenance(default),
        None => Ok(Vec::new()),
    }
}

fn nonzero(env: &Env, key: &str, default: Duration) -> Result<Duration, ConfigError> {
    let d = env.duration_or(key, default)?;
    if d.is_zero() {
        return Err(ConfigError::new(key, "expected a duration above 0"));
    }
    Ok(d)
}

/// A duration given in seconds by default (`300`, or `5m`).
fn secs(env: &Env, key: &str, default: u64) -> Result<Duration, ConfigError> {
    nonzero(env, key, Duration::from_secs(default))
}

fn webhook(env: &Env, key: &str) -> Result<Option<WebhookUrl>, ConfigError> {
    match env.get(key) {
        None => Ok(None),
        Some(v) => {
            let u = url::Url::parse(v)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .ok_or_else(|| ConfigError::new(key, "expected an http:// or https:// URL"))?;
            Ok(Some(WebhookUrl(u)))
        }
    }
}

fn mailbox(key: &str, v: &str) -> Result<lettre::message::Mailbox, ConfigError> {
    v.trim().parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("expected an email address, got `{}`", v.trim()),
        )
    })
}

fn channels(env: &Env) -> Result<Channels, ConfigError> {
    let email = match env.get("ALERT_EMAIL_TO") {
        None => None,
        Some(to) => {
            let from_raw = env.get("ALERT_EMAIL_FROM").ok_or_else(|| {
                ConfigError::new(
                    "ALERT_EMAIL_FROM",
                    "missing: needed to send email to ALERT_EMAIL_TO",
                )
            })?;
            let from = mailbox("ALERT_EMAIL_FROM", from_raw)?;
            let to = to
                .split([',', ';'])
                .filter(|s| !s.trim().is_empty())
                .map(|s| mailbox("ALERT_EMAIL_TO", s))
                .collect::<Result<Vec<_>, _>>()?;
            if to.is_empty() {
                return Err(ConfigError::new(
                    "ALERT_EMAIL_TO",
                    "expected at least one address",
                ));
            }
            let tls = match env.get("SMTP_TLS").map(str::to_ascii_lowercase).as_deref() {
                None | Some("starttls") => SmtpTls::StartTls,
                Some("tls") | Some("ssl") => SmtpTls::Tls,
                Some("none") | Some("off") => SmtpTls::None,
                Some(other) => {
                    return Err(ConfigError::new(
                        "SMTP_TLS",
                        format!("expected starttls, tls or none, got `{other}`"),
                    ))
                }
            };
            let default_port = if tls == SmtpTls::Tls { 465 } else { 587 };
            Some(EmailConfig {
                host: env.get("SMTP_HOST").unwrap_or("smtp.gmail.com").to_string(),
                port: env.int_in("SMTP_PORT", default_port, 1..=65535)?,
                tls,
                user: env
                    .get("SMTP_USER")
                    .unwrap_or(from.email.as_ref())
                    .to_string(),
                password: env
                    .get("ALERT_EMAIL_PASSWORD")
                    .map(|p| SecretString::from(p.to_string())),
                from,
                to,
                timeout: nonzero(env, "SMTP_TIMEOUT", Duration::from_secs(20))?,
            })
        }
    };
    let teams_format = match env
        .get("TEAMS_FORMAT")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("adaptive") => TeamsFormat::Adaptive,
        Some("messagecard") => TeamsFormat::MessageCard,
        Some(other) => {
            return Err(ConfigError::new(
                "TEAMS_FORMAT",
                format!("expected adaptive or messagecard, got `{other}`"),
            ))
        }
    };
    Ok(Channels {
        email,
        slack: webhook(env, "SLACK_WEBHOOK_URL")?,
        teams: webhook(env, "TEAMS_WEBHOOK_URL")?,
        teams_format,
        webhook: webhook(env, "ALERT_WEBHOOK_URL")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_smaller_than_what_the_alerter_holds_at_once_is_refused() {
        let small = (POOL_NEEDED - 1).to_string();
        let e = AlerterConfig::from_env(&Env::from_pairs([("DB_POOL_SIZE", small.as_str())]))
            .unwrap_err();
        assert_eq!(e.key, "DB_POOL_SIZE");
        assert!(e.message.contains("delivery"), "{e}");
        let enough = POOL_NEEDED.to_string();
        assert!(AlerterConfig::from_env(&Env::from_pairs([("DB_POOL_SIZE", enough)])).is_ok());
    }

    #[test]
    fn defaults_fit_gmail_and_secrets_stay_hidden() {
        let env = Env::from_pairs([
            ("ALERT_EMAIL_FROM", "me@gmail.com"),
            ("ALERT_EMAIL_TO", "a@x.test, b@x.test"),
            ("ALERT_EMAIL_PASSWORD", "app-pass-123"),
            (
                "SLACK_WEBHOOK_URL",
                "https://hooks.slack.com/services/T/B/secrettoken",
            ),
        ]);
        let cfg = AlerterConfig::from_env(&env).unwrap();
        let email = cfg.channels.email.as_ref().unwrap();
        assert_eq!(
            (email.host.as_str(), email.port, email.tls),
            ("smtp.gmail.com", 587, SmtpTls::StartTls)
        );
        assert_eq!(email.user, "me@gmail.com");
        assert_eq!(email.to.len(), 2);
        assert_eq!(cfg.group_wait, Duration::from_secs(30));
        assert_eq!(cfg.repeat_interval, Duration::from_secs(4 * 3600));
        assert_eq!(cfg.incidents.down_after, 2);
        assert_eq!(cfg.report_interval, Duration::from_secs(300));
        let debug = format!("{cfg:?}");
        assert!(
            !debug.contains("app-pass-123") && !debug.contains("secrettoken"),
            "{debug}"
        );
        assert_eq!(cfg.channels.names(), ["email", "slack"]);
        assert_eq!(cfg.channels.teams_format, TeamsFormat::Adaptive);
    }

    #[test]
    fn teams_format_is_adaptive_or_messagecard() {
        for (v, want) in [
            ("adaptive", TeamsFormat::Adaptive),
            ("MessageCard", TeamsFormat::MessageCard),
            (" messagecard ", TeamsFormat::MessageCard),
        ] {
            let env = Env::from_pairs([("TEAMS_FORMAT", v)]);
            assert_eq!(
                AlerterConfig::from_env(&env).unwrap().channels.teams_format,
                want
            );
        }
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (k, v) in [
            ("ALERT_GROUP_WAIT", "a while"),
            ("ALERT_DOWN_AFTER", "0"),
            ("SMTP_TLS", "maybe"),
            ("SLOW_FACTOR", "0.5"),
            ("SLOW_THRESHOLD_MS", "-3"),
            ("TEAMS_WEBHOOK_URL", "not a url"),
            ("ALERT_REPEAT_INTERVAL", "soon"),
            ("TEAMS_FORMAT", "connector"),
        ] {
            let env = Env::from_pairs([
                (k, v),
                ("ALERT_EMAIL_TO", "a@x.test"),
                ("ALERT_EMAIL_FROM", "b@x.test"),
            ]);
            assert_eq!(AlerterConfig::from_env(&env).unwrap_err().key, k);
        }
        let env = Env::from_pairs([("ALERT_EMAIL_TO", "a@x.test")]);
        assert_eq!(
            AlerterConfig::from_env(&env).unwrap_err().key,
            "ALERT_EMAIL_FROM"
        );
        let env = Env::from_pairs([
            ("ALERT_EMAIL_TO", "not-an-address"),
            ("ALERT_EMAIL_FROM", "b@x.test"),
        ]);
        assert_eq!(
            AlerterConfig::from_env(&env).unwrap_err().key,
            "ALERT_EMAIL_TO"
        );
    }

    #[test]
    fn maintenance_windows_come_from_apis_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("apis.toml");
        std::fs::write(
            &file,
            "[[api]]\nname = \"A\"\nurl = \"http://a.test\"\nheaders = { X = \"${UNSET_TOKEN}\" }\n\
             [[maintenance]]\napi = \"A*\"\ncron = \"0 2 * * SUN\"\nduration = \"2h\"\nreason = \"db\"\n",
        )
        .unwrap();
        let env = Env::from_pairs([("APIS_FILE", file.display().to_string())]);
        let cfg = AlerterConfig::from_env(&env).unwrap();
        assert_eq!(
            cfg.maintenance.len(),
            1,
            "the endpoints' variables are not needed"
        );
        assert_eq!(cfg.maintenance[0].reason.as_deref(), Some("db"));
        // Without APIS_FILE the default file is read when it exists.
        let windows = maintenance(&Env::default(), &file).unwrap();
        assert_eq!(windows.len(), 1);
    }

    #[test]
    fn no_apis_file_and_no_default_file_means_no_windows() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("apis.toml");
        assert!(maintenance(&Env::default(), &missing).unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_apis_file_or_a_bad_window_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let env = Env::from_pairs([("APIS_FILE", missing.display().to_string())]);
        assert_eq!(AlerterConfig::from_env(&env).unwrap_err().key, "APIS_FILE");
        let file = dir.path().join("apis.toml");
        std::fs::write(
            &file,
            "[[maintenance]]\ncron = \"0 2 * * SUN\"\nduration = \"2h\"\n\
             [[maintenance]]\nweekdays = [\"someday\"]\nstart = \"22:00\"\nduration = \"2h\"\n",
        )
        .unwrap();
        let env = Env::from_pairs([("APIS_FILE", file.display().to_string())]);
        let err = AlerterConfig::from_env(&env).unwrap_err();
        assert_eq!(err.key, format!("{}: maintenance[1]", file.display()));
        assert!(err.message.contains("someday"), "{err}");
    }

    #[test]
    fn retry_backs_off_exponentially_up_to_a_cap_and_a_limit() {
        let r = Retry {
            max_attempts: 5,
            base: Duration::from_secs(10),
            max_delay: Duration::from_secs(60),
        };
        let d: Vec<Option<u64>> = (1..=5)
            .map(|a| r.next_delay(a).map(|d| d.as_secs()))
            .collect();
        assert_eq!(d, [Some(10), Some(20), Some(40), Some(60), None]);
    }
}
