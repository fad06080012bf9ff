//! The detector's configuration, read from the environment.

use std::time::Duration;

use apimon_core::incidents::IncidentPolicy;
use apimon_core::model::{ModelParams, Thresholds};
use apimon_core::shard::Shard;
use apimon_core::{ConfigError, DbConfig, Env};

/// Connections the detector holds at once: see [`DbConfig::require_pool`].
pub const POOL_NEEDED: u32 = 4;
const POOL_HOLDS: &str = "its listener, a pass's transaction, the trainer and the retention task";

/// When models are (re)trained: the same rules in streaming (wall time) and
/// in replay (data time).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingPolicy {
    /// History a model is trained on (`TRAINING_WINDOW`, 7 days).
    pub window: Duration,
    /// Successful observations needed for a first model
    /// (`MIN_TRAINING_SAMPLES`, 120: half an hour at 15 s).
    pub min_samples: usize,
    /// Age at which a model is replaced (`MODEL_RETRAIN_INTERVAL`, 1 h).
    pub retrain_interval: Duration,
}

impl Default for TrainingPolicy {
    fn default() -> Self {
        TrainingPolicy {
            window: Duration::from_secs(7 * 86_400),
            min_samples: 120,
            retrain_interval: Duration::from_secs(3600),
        }
    }
}

impl TrainingPolicy {
    /// Whether to train now, given the current model's training time (in
    /// the same clock as `now`) and the samples available.
    pub fn due(
        &self,
        trained_at: Option<chrono::DateTime<chrono::Utc>>,
        now: chrono::DateTime<chrono::Utc>,
        samples: usize,
    ) -> bool {
        if samples < self.min_samples {
            return false;
        }
        match trained_at {
            None => true,
            Some(t) => {
                let age = now.signed_duration_since(t);
                age.to_std()
                    .map(|a| a >= self.retrain_interval)
                    .unwrap_or(false)
            }
        }
    }
}

/// Everything the detector needs, validated.
#[derive(Debug, Clone)]
pub struct DetectorConfig {
    pub db: DbConfig,
    /// This replica's share of the APIs (`DETECTOR_SHARD`).
    pub shard: Shard,
    pub params: ModelParams,
    pub thresholds: Thresholds,
    pub policy: TrainingPolicy,
    /// Fallback poll when a notification is missed (`DETECTOR_POLL_INTERVAL`).
    pub poll_interval: Duration,
    /// How far back a never-seen API is scored from (`DETECTOR_BACKFILL`).
    pub backfill: Duration,
    /// Most rows read per pass (`DETECTOR_BATCH_LIMIT`).
    pub batch_limit: i64,
    /// How long shutdown waits for the pass in progress (`SHUTDOWN_GRACE`).
    pub shutdown_grace: Duration,
    /// `/healthz` and `/metrics` (`DETECTOR_HTTP_PORT`, 9102; 0 turns it off).
    pub http: Option<std::net::SocketAddr>,
    /// The incident rules run on every scored check (`ALERT_DOWN_AFTER`…).
    pub incidents: IncidentPolicy,
    /// Days of anomalies and resolved incidents kept (`RETENTION_DAYS`).
    pub retention_days: u32,
}

impl DetectorConfig {
    pub fn from_env(env: &Env) -> Result<DetectorConfig, ConfigError> {
        Ok(DetectorConfig {
            db: DbConfig::from_env(env).and_then(|db| {
                db.require_pool(POOL_NEEDED, POOL_HOLDS)?;
                Ok(db)
            })?,
            shard: Shard::from_env(env, "DETECTOR_SHARD")?,
            params: model_params(env)?,
            thresholds: thresholds(env)?,
            policy: policy(env)?,
            poll_interval: positive(env, "DETECTOR_POLL_INTERVAL", Duration::from_secs(2))?,
            backfill: env.duration_or("DETECTOR_BACKFILL", Duration::from_secs(3600))?,
            batch_limit: env.int_in("DETECTOR_BATCH_LIMIT", 50_000i64, 100..=10_000_000)?,
            shutdown_grace: env.duration_or("SHUTDOWN_GRACE", Duration::from_secs(10))?,
            http: apimon_core::health::http_addr(env, "detector", 9102)?,
            incidents: IncidentPolicy::from_env(env)?,
            retention_days: env.retention_days()?,
        })
    }
}

fn positive(env: &Env, key: &str, default: Duration) -> Result<Duration, ConfigError> {
    let d = env.duration_or(key, default)?;
    if d.is_zero() {
        return Err(ConfigError::new(key, "expected a duration above 0"));
    }
    Ok(d)
}

/// `N_ESTIMATORS`, `MAX_SAMPLES`, `CONTAMINATION`, `EXTENSION_LEVEL`.
pub fn model_params(env: &Env) -> Result<ModelParams, ConfigError> {
    let d = ModelParams::default();
    let contamination: f64 =
        env.parse_or("CONTAMINATION", d.contamination, "a number in (0, 0.5)")?;
    if !(contamination > 0.0 && contamination < 0.5) {
        return Err(ConfigError::new(
            "CONTAMINATION",
            format!("expected a number in (0, 0.5), got `{contamination}`"),
        ));
    }
    Ok(ModelParams {
        n_trees: env.int_in("N_ESTIMATORS", d.n_trees, 1..=10_000)?,
        max_samples: env.int_in("MAX_SAMPLES", d.max_samples, 2..=1_000_000)?,
        contamination,
        extension_level: env.int_in(
            "EXTENSION_LEVEL",
            d.extension_level,
            0..=apimon_core::features::N_FEATURES - 1,
        )?,
    })
}

/// `SEVERITY_CRITICAL` < `SEVERITY_HIGH` < 0, and the practical floors
/// `SEVERITY_CRITICAL_MIN_MS` and `SEVERITY_CRITICAL_MIN_PCT` (0 or more).
pub fn thresholds(env: &Env) -> Result<Thresholds, ConfigError> {
    let d = Thresholds::default();
    let critical: f64 = env.parse_or(
        "SEVERITY_CRITICAL",
        d.critical,
        "a negative number such as -0.2",
    )?;
    let high: f64 = env.parse_or("SEVERITY_HIGH", d.high, "a negative number such as -0.1")?;
    if !(critical < high && high < 0.0) {
        return Err(ConfigError::new(
            "SEVERITY_CRITICAL",
            format!("expected SEVERITY_CRITICAL < SEVERITY_HIGH < 0, got {critical} and {high}"),
        ));
    }
    let floor = |key: &str, default: f64| -> Result<f64, ConfigError> {
        let v: f64 = env.parse_or(key, default, "a number of 0 or more")?;
        if !(v.is_finite() && v >= 0.0) {
            return Err(ConfigError::new(
                key,
                format!("expected a number of 0 or more, got `{v}`"),
            ));
        }
        Ok(v)
    };
    Ok(Thresholds {
        critical,
        high,
        critical_min_ms: floor("SEVERITY_CRITICAL_MIN_MS", d.critical_min_ms)?,
        critical_min_pct: floor("SEVERITY_CRITICAL_MIN_PCT", d.critical_min_pct)?,
    })
}

/// `TRAINING_WINDOW`, `MIN_TRAINING_SAMPLES`, `MODEL_RETRAIN_INTERVAL`.
pub fn policy(env: &Env) -> Result<TrainingPolicy, ConfigError> {
    let d = TrainingPolicy::default();
    Ok(TrainingPolicy {
        window: positive(env, "TRAINING_WINDOW", d.window)?,
        min_samples: env.int_in("MIN_TRAINING_SAMPLES", d.min_samples, 2..=10_000_000)?,
        retrain_interval: positive(env, "MODEL_RETRAIN_INTERVAL", d.retrain_interval)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration as CDuration, TimeZone, Utc};

    #[test]
    fn training_is_due_at_cold_start_and_after_the_retrain_interval() {
        let p = TrainingPolicy::default();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert!(!p.due(None, t, 119));
        assert!(p.due(None, t, 120));
        assert!(!p.due(Some(t), t + CDuration::minutes(59), 1000));
        assert!(p.due(Some(t), t + CDuration::minutes(60), 1000));
        // A clock that went back never triggers.
        assert!(!p.due(Some(t), t - CDuration::minutes(90), 1000));
    }

    #[test]
    fn a_pool_smaller_than_what_the_detector_holds_at_once_is_refused() {
        let small = (POOL_NEEDED - 1).to_string();
        let e = DetectorConfig::from_env(&Env::from_pairs([("DB_POOL_SIZE", small.as_str())]))
            .unwrap_err();
        assert_eq!(e.key, "DB_POOL_SIZE");
        assert!(e.message.contains("its listener"), "{e}");
        let enough = POOL_NEEDED.to_string();
        assert!(DetectorConfig::from_env(&Env::from_pairs([("DB_POOL_SIZE", enough)])).is_ok());
    }

    #[test]
    fn thresholds_must_be_ordered() {
        let env = Env::from_pairs([("SEVERITY_CRITICAL", "-0.1"), ("SEVERITY_HIGH", "-0.2")]);
        assert_eq!(thresholds(&env).unwrap_err().key, "SEVERITY_CRITICAL");
        let env = Env::from_pairs([("CONTAMINATION", "0.6")]);
        assert_eq!(model_params(&env).unwrap_err().key, "CONTAMINATION");
        let env = Env::from_pairs([("SEVERITY_CRITICAL", "-0.4"), ("SEVERITY_HIGH", "-0.3")]);
        assert_eq!(
            thresholds(&env).unwrap(),
            Thresholds {
                critical: -0.4,
                high: -0.3,
                ..Thresholds::default()
            }
        );
        let env = Env::from_pairs([("SEVERITY_CRITICAL_MIN_MS", "-1")]);
        assert_eq!(
            thresholds(&env).unwrap_err().key,
            "SEVERITY_CRITICAL_MIN_MS"
        );
        let env = Env::from_pairs([("SEVERITY_CRITICAL_MIN_PCT", "lots")]);
        assert_eq!(
            thresholds(&env).unwrap_err().key,
            "SEVERITY_CRITICAL_MIN_PCT"
        );
        let env = Env::from_pairs([
            ("SEVERITY_CRITICAL_MIN_MS", "200"),
            ("SEVERITY_CRITICAL_MIN_PCT", "0"),
        ]);
        let t = thresholds(&env).unwrap();
        assert_eq!((t.critical_min_ms, t.critical_min_pct), (200.0, 0.0));
    }
}
