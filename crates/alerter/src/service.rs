//! The alerter service: a decision loop (incident events → grouped
//! notifications and reminders, status reports) woken by the detector's
//! NOTIFY or a poll, and a delivery loop draining the outbox.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apimon_core::db::{self, notifications};
use apimon_core::health::Health;
use apimon_core::listen::Listener;
use apimon_core::retention::{self, Rule, Table};
use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::{watch, Notify};

use crate::baseline::Baselines;
use crate::channels::Sender;
use crate::config::AlerterConfig;
use crate::dispatch;
use crate::report;

/// The tables the alerter keeps a bounded history of: notifications done
/// with (`NOTIFICATIONS_RETENTION_DAYS`), status report periods and ended
/// silences (`RETENTION_DAYS`). Run by a task of its own beside the
/// decision and delivery loops.
pub fn retention_rules(cfg: &AlerterConfig) -> Vec<Rule> {
    vec![
        Rule::new(Table::Notifications, cfg.notifications_retention_days),
        Rule::new(Table::StatusReports, cfg.retention_days),
        Rule::new(Table::Silences, cfg.retention_days),
    ]
}

/// Runs until `shutdown` completes.
pub async fn run(
    cfg: AlerterConfig,
    pool: PgPool,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    run_with_health(cfg, pool, Health::new(Duration::from_secs(30)), shutdown).await
}

/// [`run`], reporting liveness to `health` (served on `/healthz`).
pub async fn run_with_health(
    cfg: AlerterConfig,
    pool: PgPool,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let channels = cfg.channels.names();
    if channels.is_empty() {
        tracing::warn!(
            "no delivery channel configured (ALERT_EMAIL_TO, SLACK_WEBHOOK_URL, TEAMS_WEBHOOK_URL, \
             ALERT_WEBHOOK_URL): notifications are recorded in the outbox but none will be delivered"
        );
    } else {
        tracing::info!(?channels, "alerter starting");
    }
    let sender = Arc::new(Sender::new(&cfg.channels)?);
    let wake_delivery = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let delivery = tokio::spawn(deliver_loop(
        pool.clone(),
        cfg.clone(),
        sender,
        wake_delivery.clone(),
        stop_rx.clone(),
    ));
    let retention_task = tokio::spawn(retention::run(
        pool.clone(),
        retention_rules(&cfg),
        retention::Settings::default(),
        stop_rx,
    ));

    let mut baselines = Baselines::new(cfg.baseline_window);
    let mut listener =
        Listener::start(&pool, &[db::ANOMALIES_CHANNEL, db::INCIDENTS_CHANNEL]).await;
    let mut poll = tokio::time::interval(cfg.poll_interval);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = listener.recv() => {}
            _ = poll.tick() => {}
        }
        health.beat();
        match step(&pool, &cfg, &mut baselines).await {
            Ok(queued) => {
                health.set_db(true);
                if queued {
                    wake_delivery.notify_one();
                }
            }
            Err(e) => {
                health.set_db(false);
                tracing::warn!(error.message = %e, error.cause_chain = ?e, "alerter pass failed; will retry")
            }
        }
    }
    let _ = stop_tx.send(true);
    wake_delivery.notify_one();
    let _ = tokio::time::timeout(cfg.shutdown_grace, delivery).await;
    let _ = tokio::time::timeout(cfg.shutdown_grace, retention_task).await;
    tracing::info!("alerter stopped");
    Ok(())
}

/// One decision pass: incident notifications due now, then the status
/// report of the period that closed. Returns whether anything was queued.
pub async fn step(
    pool: &PgPool,
    cfg: &AlerterConfig,
    baselines: &mut Baselines,
) -> anyhow::Result<bool> {
    let now = Utc::now();
    let silences = apimon_core::db::silences::active_at(pool, now).await?;
    let silencer = crate::silence::Silencer::from_config(cfg);
    let check = |api: &str, at: chrono::DateTime<Utc>| silencer.why_silenced(api, at, &silences);
    let notices = dispatch::pass(pool, cfg, &check, now).await?;
    let reported = report::maybe_report(pool, cfg, baselines, now).await?;
    Ok(notices > 0 || reported)
}

/// Sends due notifications one at a time: each is locked (`FOR UPDATE SKIP
/// LOCKED`) while it is sent, so two alerters never send the same one.
async fn deliver_loop(
    pool: PgPool,
    cfg: AlerterConfig,
    sender: Arc<Sender>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        match deliver_one(&pool, &cfg, &sender).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => tracing::warn!(error.message = %e, "outbox unavailable; will retry"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Sends the oldest due notification, if any. Returns whether there was one.
pub async fn deliver_one(
    pool: &PgPool,
    cfg: &AlerterConfig,
    sender: &Sender,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(n) = notifications::claim_due(&mut tx).await? else {
        tx.commit().await?;
        return Ok(false);
    };
    let openings = if n.channel == "email" && n.kind != "incident_open" {
        notifications::openings_of(&mut tx, &n.channel, &incident_ids(&n.payload)).await?
    } else {
        Vec::new()
    };
    match sender.send_in_thread(&n, &openings).await {
        Ok(()) => {
            notifications::mark_sent(&mut tx, n.id).await?;
            metrics::counter!("apimon_notifications_total", "channel" => n.channel.clone(), "state" => "sent").increment(1);
            tracing::info!(id = n.id, channel = %n.channel, kind = %n.kind, subject = %n.subject, "notification sent");
        }
        Err(error) => {
            let attempts = u32::try_from(n.attempts).unwrap_or(0) + 1;
            let retry = cfg.retry.next_delay(attempts);
            match retry {
                Some(d) => {
                    tracing::warn!(id = n.id, channel = %n.channel, attempts, retry_in_secs = d.as_secs_f64(), %error, "delivery failed; will retry")
                }
                None => {
                    tracing::error!(id = n.id, channel = %n.channel, attempts, %error, "delivery failed; giving up")
                }
            }
            let state = if retry.is_some() {
                "retrying"
            } else {
                "failed"
            };
            metrics::counter!("apimon_notifications_total", "channel" => n.channel.clone(), "state" => state).increment(1);
            notifications::mark_failed(&mut tx, n.id, &error, retry).await?;
        }
    }
    tx.commit().await?;
    Ok(true)
}

/// The ids of the incidents a notification is about (its payload's
/// `incidents[].id`).
fn incident_ids(payload: &serde_json::Value) -> Vec<i64> {
    payload
        .get("incidents")
        .and_then(serde_json::Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("id").and_then(serde_json::Value::as_i64))
                .collect()
        })
        .unwrap_or_default()
}
