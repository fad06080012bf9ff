//! The streaming detector: LISTEN for the pinger's batches, score the rows
//! after each API's watermark, write anomalies and move the watermarks in
//! one transaction, NOTIFY the alerter.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use std::sync::Arc;

use apimon_core::backoff::Backoff;
use apimon_core::db::{self, anomalies::AnomalyRow, metrics::NewRow};
use apimon_core::health::Health;
use apimon_core::listen::Listener;
use apimon_core::retention::{self, Rule, Table};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};

use crate::config::DetectorConfig;
use crate::engine::{ActiveModel, ApiDetector};
use crate::trainer::Trainer;
use apimon_core::incidents::{Tracker, Transition};

/// How often the list of APIs is re-read from `api_endpoints`.
const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// Rows read back per API to warm the rolling state after a restart.
const WARM_ROWS: i64 = 120;

/// Totals of a run, returned when it ends.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DetectorOutcome {
    pub scored: u64,
    pub anomalies: u64,
}

/// The scoring side: rolling state and models of the owned APIs.
pub struct Scorer {
    pool: PgPool,
    cfg: DetectorConfig,
    apis: HashMap<String, ApiDetector>,
    /// Last scored timestamp per API (mirrors `detector_watermarks`).
    marks: HashMap<String, DateTime<Utc>>,
    owned_tx: watch::Sender<Vec<String>>,
    lag_ms: Vec<f64>,
    outcome: DetectorOutcome,
}

/// The tables the detector keeps `RETENTION_DAYS` of: anomalies (plain
/// PostgreSQL; a policy on TimescaleDB), resolved incidents whose events
/// were handled, and the models and watermarks of endpoints retired longer
/// ago than that. Run by a task of its own beside the scoring loop.
pub fn retention_rules(retention_days: u32) -> Vec<Rule> {
    [
        Table::Anomalies,
        Table::Incidents,
        Table::Models,
        Table::Watermarks,
    ]
    .into_iter()
    .map(|t| Rule::new(t, retention_days))
    .collect()
}

/// Runs the detector until `shutdown` completes.
pub async fn run(
    cfg: DetectorConfig,
    pool: PgPool,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<DetectorOutcome> {
    run_with_health(cfg, pool, Health::new(Duration::from_secs(30)), shutdown).await
}

/// [`run`], reporting liveness to `health` (served on `/healthz`).
pub async fn run_with_health(
    cfg: DetectorConfig,
    pool: PgPool,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<DetectorOutcome> {
    tokio::pin!(shutdown);
    let (owned_tx, owned_rx) = watch::channel(Vec::new());
    let mut scorer = Scorer {
        pool: pool.clone(),
        cfg: cfg.clone(),
        apis: HashMap::new(),
        marks: HashMap::new(),
        owned_tx,
        lag_ms: Vec::new(),
        outcome: DetectorOutcome::default(),
    };
    // Start-up: APIs, watermarks, stored models, warm state. Retried while
    // the database is unreachable.
    let trained_at = loop {
        match scorer.start().await {
            Ok(t) => break t,
            Err(e) => {
                tracing::warn!(error.message = %e, error.cause_chain = ?e, "start-up failed; retrying");
                tokio::select! {
                    _ = &mut shutdown => return Ok(scorer.outcome),
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };
    let (model_tx, mut model_rx) = mpsc::channel(1024);
    let (stop_tx, stop_rx) = watch::channel(false);
    let trainer = Trainer {
        pool: pool.clone(),
        cfg: cfg.clone(),
        owned: owned_rx,
        trained_at,
        out: model_tx,
    };
    let trainer_task = tokio::spawn(trainer.run(stop_rx.clone()));
    let retention_task = tokio::spawn(retention::run(
        pool.clone(),
        retention_rules(cfg.retention_days),
        retention::Settings::default(),
        stop_rx,
    ));

    let mut listener = Listener::start(&pool, &[db::METRICS_CHANNEL]).await;
    let mut poll = tokio::time::interval(cfg.poll_interval);
    let mut refresh =
        tokio::time::interval_at(tokio::time::Instant::now() + REFRESH_EVERY, REFRESH_EVERY);
    let mut summary = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(60),
        Duration::from_secs(60),
    );
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = listener.recv() => {}
            _ = poll.tick() => {}
            Some((api, model)) = model_rx.recv() => scorer.set_model(&api, model),
            _ = refresh.tick() => {
                if let Err(e) = scorer.refresh_apis().await {
                    tracing::warn!(error.message = %e, "cannot refresh the list of APIs");
                }
            }
            _ = summary.tick() => scorer.log_summary(),
        }
        while let Ok((api, model)) = model_rx.try_recv() {
            scorer.set_model(&api, model);
        }
        health.beat();
        match scorer.pass_until_caught_up().await {
            Ok(()) => {
                health.set_db(true);
                backoff.reset();
            }
            Err(e) => {
                health.set_db(false);
                tracing::warn!(error.message = %e, error.cause_chain = ?e, "scoring pass failed; will retry");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(cfg.shutdown_grace, trainer_task).await;
    let _ = tokio::time::timeout(cfg.shutdown_grace, retention_task).await;
    scorer.log_summary();
    tracing::info!(outcome = ?scorer.outcome, "detector stopped");
    Ok(scorer.outcome)
}

impl Scorer {
    /// Loads APIs, watermarks and models, and warms each API's state.
    /// Returns the training times of the loaded models.
    async fn start(&mut self) -> anyhow::Result<HashMap<String, DateTime<Utc>>> {
        self.apis.clear();
        self.marks.clear();
        self.refresh_apis().await?;
        let owned: Vec<String> = self.apis.keys().cloned().collect();
        let mut trained_at = HashMap::new();
        for loaded in db::models::load(&self.pool, &owned).await? {
            match loaded {
                Ok(m) => {
                    trained_at.insert(m.api_name.clone(), m.trained_at);
                    tracing::info!(api = %m.api_name, version = m.version, "loaded stored model");
                    self.set_model(
                        &m.api_name,
                        ActiveModel {
                            model: std::sync::Arc::new(m.model),
                            version: m.version,
                            trained_at: m.trained_at,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read a stored model; the API will be retrained")
                }
            }
        }
        Ok(trained_at)
    }

    /// Re-reads `api_endpoints`, adds the new APIs of this shard (with
    /// their watermark, saved state and warm state), drops the ones gone,
    /// and closes the incidents of this shard's retired endpoints. Linear
    /// in the number of APIs (sets and maps keyed by name).
    async fn refresh_apis(&mut self) -> anyhow::Result<()> {
        let names = db::endpoints::names(&self.pool).await?;
        let owned: Vec<String> = names
            .into_iter()
            .filter(|n| self.cfg.shard.owns(n))
            .collect();
        let new = reconcile(&mut self.apis, &mut self.marks, &owned);
        if !new.is_empty() {
            self.add_apis(&new, owned.len()).await?;
        }
        self.close_retired().await?;
        let _ = self.owned_tx.send(owned);
        Ok(())
    }

    /// Starts scoring `new` APIs: their watermark (or the backfill start),
    /// the incident rules' and the model's saved state, then the window
    /// rebuilt from the rows before the watermark.
    async fn add_apis(&mut self, new: &[String], owned: usize) -> anyhow::Result<()> {
        let start = Utc::now()
            - chrono::Duration::from_std(self.cfg.backfill).unwrap_or(chrono::Duration::hours(1));
        let stored: HashMap<String, DateTime<Utc>> =
            db::watermarks::all(&self.pool).await?.into_iter().collect();
        let marks: Vec<(String, DateTime<Utc>)> = new
            .iter()
            .map(|api| (api.clone(), stored.get(api).copied().unwrap_or(start)))
            .collect();
        let mut fresh: HashMap<String, ApiDetector> = new
            .iter()
            .map(|a| (a.clone(), ApiDetector::default()))
            .collect();
        for (api, state) in db::watermarks::incident_states(&self.pool).await? {
            if let Some(d) = fresh.get_mut(&api) {
                match serde_json::from_value::<Tracker>(state) {
                    Ok(t) => d.incidents = t,
                    Err(e) => {
                        tracing::warn!(api = %api, error = %e, "cannot read the saved incident state; starting afresh")
                    }
                }
            }
        }
        // What the model has seen: a level it flagged before a restart is
        // not flagged again.
        for (api, state) in db::watermarks::seen_states(&self.pool).await? {
            if let Some(d) = fresh.get_mut(&api) {
                match serde_json::from_value(state) {
                    Ok(seen) => d.seen = seen,
                    Err(e) => {
                        tracing::warn!(api = %api, error = %e, "cannot read what the model had seen; starting afresh")
                    }
                }
            }
        }
        for (api, ts, rt, ok) in
            db::metrics::before_watermarks(&self.pool, &marks, WARM_ROWS).await?
        {
            if let Some(d) = fresh.get_mut(&api) {
                d.warm(&self.cfg.incidents, ts, rt, ok);
            }
        }
        for (api, mark) in marks {
            if let Some(d) = fresh.get_mut(&api) {
                d.last_timestamp = Some(mark.max(d.last_timestamp.unwrap_or(mark)));
            }
            self.marks.insert(api, mark);
        }
        tracing::info!(new = new.len(), owned, shard = %self.cfg.shard, "APIs to score");
        self.apis.extend(fresh);
        Ok(())
    }

    /// Closes the current incidents of this shard's retired endpoints (as
    /// `retired`, with a resolution for the alerter), and forgets their
    /// incident rules' state, so that a re-added endpoint starts afresh.
    async fn close_retired(&mut self) -> anyhow::Result<()> {
        let retired: Vec<String> = db::endpoints::retired(&self.pool)
            .await?
            .into_iter()
            .filter(|n| self.cfg.shard.owns(n))
            .collect();
        if retired.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let closed = db::incidents::close_retired(&mut tx, &retired).await?;
        if !closed.is_empty() {
            db::watermarks::clear_incident_state(&mut tx, &closed).await?;
        }
        tx.commit().await?;
        for api in &closed {
            tracing::info!(api = %api, "endpoint retired: its open incidents are closed");
        }
        Ok(())
    }

    fn set_model(&mut self, api: &str, model: ActiveModel) {
        if let Some(d) = self.apis.get_mut(api) {
            d.model = Some(model);
        }
    }

    async fn pass_until_caught_up(&mut self) -> anyhow::Result<()> {
        while self.pass().await? >= self.cfg.batch_limit as usize {}
        Ok(())
    }

    /// Scores every row after the watermarks (up to the batch limit) and
    /// commits the anomalies and the new watermarks together. Returns the
    /// number of rows read.
    #[tracing::instrument(skip_all)]
    pub async fn pass(&mut self) -> anyhow::Result<usize> {
        if self.marks.is_empty() {
            return Ok(0);
        }
        let marks: Vec<(String, DateTime<Utc>)> =
            self.marks.iter().map(|(a, t)| (a.clone(), *t)).collect();
        let rows = db::metrics::after_watermarks(&self.pool, &marks, self.cfg.batch_limit).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let n = rows.len();
        // Work on copies: if the commit fails, the state stays as it was.
        let mut touched: HashMap<String, ApiDetector> = HashMap::new();
        let mut new_marks: HashMap<String, DateTime<Utc>> = HashMap::new();
        let mut anomalies: Vec<AnomalyRow> = Vec::new();
        let mut changes: Vec<(String, Vec<Transition>)> = Vec::new();
        for row in &rows {
            let Some(base) = self.apis.get(&row.api_name) else {
                continue;
            };
            let det = touched
                .entry(row.api_name.clone())
                .or_insert_with(|| base.clone());
            new_marks.insert(row.api_name.clone(), row.timestamp);
            match det.observe(
                row.timestamp,
                row.response_time_ms,
                row.success,
                &self.cfg.thresholds,
            ) {
                Some(v) => {
                    let error = error_text(row);
                    if let Some(a) = v.anomaly(&row.api_name, error.as_deref()) {
                        anomalies.push(a);
                    }
                    let t = det.incidents(
                        &self.cfg.incidents,
                        &v,
                        row.success,
                        error.as_deref(),
                        row.tls_expires_at,
                    );
                    if !t.is_empty() {
                        changes.push((row.api_name.clone(), t));
                    }
                }
                None => tracing::warn!(
                    api = %row.api_name,
                    timestamp = %row.timestamp,
                    "observation not after the previous one (duplicate or clock went back); skipped"
                ),
            }
        }
        let marks: Vec<(String, DateTime<Utc>)> = new_marks.into_iter().collect();
        let mut tx = self.pool.begin().await?;
        let inserted = db::anomalies::insert(&mut tx, &anomalies).await?;
        db::watermarks::set(&mut tx, &marks).await?;
        // The incidents these rows decided, and the rules' state, commit
        // with the watermark: the alerter's work is handed over with the
        // data that caused it.
        for (api, t) in &changes {
            db::incidents::apply(&mut tx, api, t).await?;
        }
        let mut states = Vec::with_capacity(touched.len());
        let mut seen = Vec::with_capacity(touched.len());
        for (api, det) in &touched {
            let current: Vec<_> = det.incidents.current().collect();
            if !current.is_empty() {
                db::incidents::refresh(&mut tx, api, &current).await?;
            }
            states.push((api.clone(), serde_json::to_value(&det.incidents)?));
            seen.push((
                api.clone(),
                det.seen.as_ref().map(serde_json::to_value).transpose()?,
            ));
        }
        db::watermarks::set_incident_state(&mut tx, &states).await?;
        db::watermarks::set_seen_state(&mut tx, &seen).await?;
        tx.commit().await?;
        for (api, t) in &changes {
            for c in t {
                tracing::info!(api = %api, kind = %c.incident.kind, change = ?c.change, reason = %c.incident.reason, "incident");
                metrics::counter!("apimon_incident_changes_total", "kind" => c.incident.kind.as_str(), "change" => format!("{:?}", c.change).to_lowercase()).increment(1);
            }
        }
        let committed = Utc::now();
        for r in &rows {
            let lag = (committed - r.ingested_at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
            self.lag_ms.push(lag.max(0.0));
            metrics::histogram!("apimon_detection_lag_seconds").record(lag.max(0.0) / 1000.0);
        }
        metrics::counter!("apimon_rows_scored_total").increment(n as u64);
        for a in &anomalies {
            metrics::counter!("apimon_anomalies_total", "severity" => a.severity.clone())
                .increment(1);
        }
        for (api, mark) in marks {
            self.marks.insert(api, mark);
        }
        self.apis.extend(touched);
        self.outcome.scored += n as u64;
        self.outcome.anomalies += inserted;
        for a in anomalies.iter().filter(|a| a.severity == "critical") {
            tracing::warn!(api = %a.api_name, score = a.anomaly_score, details = %a.details, "critical anomaly");
        }
        Ok(n)
    }

    fn log_summary(&mut self) {
        let mut lag = std::mem::take(&mut self.lag_ms);
        if lag.is_empty() {
            return;
        }
        let p50 = apimon_core::model::quantile(&mut lag, 0.5);
        let p99 = apimon_core::model::quantile(&mut lag, 0.99);
        let max = lag.last().copied().unwrap_or(0.0);
        tracing::info!(
            rows = lag.len(),
            scored_total = self.outcome.scored,
            anomalies_total = self.outcome.anomalies,
            lag_p50_ms = format_args!("{p50:.1}"),
            lag_p99_ms = format_args!("{p99:.1}"),
            lag_max_ms = format_args!("{max:.1}"),
            "detector summary"
        );
    }
}

/// Keeps only the APIs of `owned` in `apis` and `marks`, and returns the
/// APIs of `owned` that `apis` did not hold yet, in `owned`'s order. Linear
/// in the number of APIs: 10,000 APIs cost milliseconds, where comparing
/// lists cost seconds (`cargo bench -p detector --bench refresh`).
pub fn reconcile<V, M>(
    apis: &mut HashMap<String, V>,
    marks: &mut HashMap<String, M>,
    owned: &[String],
) -> Vec<String> {
    let owned_set: HashSet<&str> = owned.iter().map(String::as_str).collect();
    apis.retain(|k, _| owned_set.contains(k.as_str()));
    marks.retain(|k, _| owned_set.contains(k.as_str()));
    owned
        .iter()
        .filter(|n| !apis.contains_key(*n))
        .cloned()
        .collect()
}

fn error_text(row: &NewRow) -> Option<String> {
    match (&row.error_kind, &row.error_message) {
        (Some(k), Some(m)) => Some(format!("{k}: {m}")),
        (Some(k), None) => Some(k.clone()),
        (None, Some(m)) => Some(m.clone()),
        (None, None) => None,
    }
}
