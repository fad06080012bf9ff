//! Background training: a first model as soon as an API has enough
//! history, then a new one every retrain interval. Runs beside the scorer,
//! which keeps scoring with the previous model until the new one arrives.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apimon_core::db;
use apimon_core::features::ValueDomain;
use apimon_core::features::{compute_series, N_FEATURES};
use apimon_core::model::{ignored_features, model_seed, Model, TrainingSpec};
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};

use crate::config::DetectorConfig;
use crate::engine::ActiveModel;

/// How often the trainer looks for work.
const TICK: Duration = Duration::from_secs(2);

pub struct Trainer {
    pub pool: PgPool,
    pub cfg: DetectorConfig,
    /// The APIs this replica owns (from the scorer).
    pub owned: watch::Receiver<Vec<String>>,
    /// Training time of each API's current model.
    pub trained_at: HashMap<String, DateTime<Utc>>,
    /// New models go to the scorer.
    pub out: mpsc::Sender<(String, ActiveModel)>,
}

impl Trainer {
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            if let Err(e) = self.pass(&mut stop).await {
                tracing::warn!(error.message = %e, error.cause_chain = ?e, "training pass failed; will retry");
            }
        }
    }

    /// Trains every owned API that is due. Returns early on stop.
    async fn pass(&mut self, stop: &mut watch::Receiver<bool>) -> Result<(), sqlx::Error> {
        let owned = self.owned.borrow().clone();
        let now = Utc::now();
        let cold: Vec<String> = owned
            .iter()
            .filter(|a| !self.trained_at.contains_key(*a))
            .cloned()
            .collect();
        let mut due: Vec<String> = owned
            .iter()
            .filter(|a| {
                self.trained_at
                    .get(*a)
                    .is_some_and(|t| self.cfg.policy.due(Some(*t), now, usize::MAX))
            })
            .cloned()
            .collect();
        if !cold.is_empty() {
            let counts = db::metrics::success_counts(
                &self.pool,
                &cold,
                window_start(now, self.cfg.policy.window),
            )
            .await?;
            due.extend(
                counts
                    .into_iter()
                    .filter(|(_, n)| *n as usize >= self.cfg.policy.min_samples)
                    .map(|(a, _)| a),
            );
        }
        for api in due {
            if *stop.borrow() {
                return Ok(());
            }
            self.train(&api).await?;
        }
        Ok(())
    }

    #[tracing::instrument(skip(self), fields(api = %api))]
    async fn train(&mut self, api: &str) -> Result<(), sqlx::Error> {
        // In the database's precision: the model read back after a restart
        // is the same model (same version and training time), so what it
        // had seen is still its own (`ApiDetector::seen`).
        let now = Utc::now().trunc_subsecs(6);
        let rows =
            db::metrics::series_since(&self.pool, api, window_start(now, self.cfg.policy.window))
                .await?;
        let times: Vec<DateTime<Utc>> = rows.iter().map(|r| r.0).collect();
        let mut first_last = None;
        let features: Vec<[f64; N_FEATURES]> = compute_series(rows)
            .iter()
            .zip(times)
            .filter_map(|(o, t)| {
                let f = o.features()?;
                first_last = Some((first_last.map_or(t, |(a, _)| a), t));
                Some(f.to_array())
            })
            .collect();
        if features.len() < self.cfg.policy.min_samples {
            return Ok(());
        }
        let span = first_last.map_or(chrono::Duration::zero(), |(a, b)| b - a);
        // Seeded from the API and the version this model will get: the
        // same rows give the same forest here and in `detector replay`.
        let expected_version = db::models::next_version(&self.pool, api).await?;
        let spec = TrainingSpec {
            ignored: ignored_features(span),
            domain: ValueDomain::ResponseTime,
            seed: model_seed(api, expected_version),
        };
        let params = self.cfg.params.clone();
        let started = std::time::Instant::now();
        let trained =
            tokio::task::spawn_blocking(move || Model::train_for(&features, &params, &spec)).await;
        let model = match trained {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "training failed; keeping the previous model");
                // Do not retry at once.
                self.trained_at.insert(api.to_string(), now);
                return Ok(());
            }
            Err(e) => {
                tracing::error!(error = %e, "training task panicked");
                self.trained_at.insert(api.to_string(), now);
                return Ok(());
            }
        };
        let train_ms = started.elapsed().as_secs_f64() * 1000.0;
        metrics::counter!("apimon_models_trained_total").increment(1);
        metrics::histogram!("apimon_training_seconds").record(train_ms / 1000.0);
        let version = match db::models::save(&self.pool, api, now, &model).await {
            Ok(v) => v,
            Err(db::models::ModelSaveError::Db(e)) => return Err(e),
            Err(e) => {
                tracing::error!(error = %e, "cannot store the model; using it unsaved");
                0
            }
        };
        if version != expected_version {
            // Another writer saved a model in between: this one is still
            // valid, only seeded with another version's number.
            tracing::warn!(
                version,
                expected_version,
                "model saved under another version than it was seeded with"
            );
        }
        tracing::info!(
            samples = model.sample_count,
            version,
            train_ms = format_args!("{train_ms:.1}"),
            "model trained"
        );
        self.trained_at.insert(api.to_string(), now);
        let _ = self
            .out
            .send((
                api.to_string(),
                ActiveModel {
                    model: Arc::new(model),
                    version,
                    trained_at: now,
                },
            ))
            .await;
        Ok(())
    }
}

fn window_start(now: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::days(7))
}
