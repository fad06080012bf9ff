//! `kind = "heartbeat"`: push monitors for cron jobs and batch workers.
//!
//! A job calls `POST /heartbeat/<token>` on the pinger's HTTP port
//! (`PINGER_HTTP_PORT`). Any pinger replica may receive it: the token is
//! compared in constant time with every heartbeat endpoint's, and the
//! arrival is recorded in the `heartbeats` table (503 when the database
//! cannot take it, so the job can retry). The replica whose shard owns the
//! endpoint reads that table on the endpoint's schedule and writes its
//! `api_metrics` row: a success while the last heartbeat is at most
//! `interval + grace` old, else a failed check of kind `missed`, which the
//! detector's rules turn into a `down` incident like any failed check.

use std::sync::Arc;
use std::time::Duration;

use apimon_core::apis::{Endpoint, HeartbeatProbe, Probe};
use apimon_core::db::heartbeats::{self, Beats};
use apimon_core::db::metrics::MetricRow;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, SubsecRound, Utc};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::check::ErrorKind;

/// The tokens of every heartbeat endpoint of the file (not only this
/// shard's: a job may reach any replica).
struct Receiver {
    pool: PgPool,
    tokens: Vec<(String, secrecy::SecretString)>,
}

impl Receiver {
    /// The endpoint whose token is `token`. Every token is compared, each
    /// in constant time, so the time taken tells nothing of how much of a
    /// guess was right.
    fn find(&self, token: &str) -> Option<&str> {
        let mut found = None;
        for (name, t) in &self.tokens {
            let same: bool = t.expose_secret().as_bytes().ct_eq(token.as_bytes()).into();
            if same && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// `POST /heartbeat/{token}` for the heartbeat endpoints among
/// `endpoints`; no route when there are none.
pub fn routes(pool: PgPool, endpoints: &[Endpoint]) -> Router {
    let tokens: Vec<(String, secrecy::SecretString)> = endpoints
        .iter()
        .filter_map(|ep| match &ep.probe {
            Probe::Heartbeat(h) => Some((ep.name.clone(), h.token.clone())),
            _ => None,
        })
        .collect();
    if tokens.is_empty() {
        return Router::new();
    }
    Router::new()
        .route("/heartbeat/{token}", post(receive))
        .with_state(Arc::new(Receiver { pool, tokens }))
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    Path(token): Path<String>,
) -> (StatusCode, &'static str) {
    // The token is a secret: it is never logged, and an unknown one gets
    // no hint.
    let Some(name) = receiver.find(&token) else {
        metrics::counter!("apimon_heartbeats_total", "outcome" => "unknown_token").increment(1);
        return (StatusCode::NOT_FOUND, "unknown heartbeat\n");
    };
    match heartbeats::record(&receiver.pool, name).await {
        Ok(_) => {
            metrics::counter!("apimon_heartbeats_total", "outcome" => "recorded").increment(1);
            tracing::debug!(api = name, "heartbeat recorded");
            (StatusCode::OK, "ok\n")
        }
        Err(e) => {
            metrics::counter!("apimon_heartbeats_total", "outcome" => "not_recorded").increment(1);
            tracing::warn!(api = name, error.message = %e, "cannot record a heartbeat");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the heartbeat could not be recorded; retry\n",
            )
        }
    }
}

/// The row of one scheduled check of a heartbeat endpoint, or `None` when
/// there is nothing to say yet (no heartbeat since this pinger began
/// watching, within `interval + grace`) or the database cannot tell.
pub(crate) async fn check(
    pool: &PgPool,
    ep: &Endpoint,
    probe: &HeartbeatProbe,
    watching_since: DateTime<Utc>,
) -> Option<MetricRow> {
    match heartbeats::last(pool, &ep.name).await {
        Ok((beats, now)) => judge(ep, probe, beats, now, watching_since),
        Err(e) => {
            tracing::warn!(api = %ep.name, error.message = %e, "cannot read the heartbeats; no row this time");
            None
        }
    }
}

/// The verdict on `beats` at `now`: pure, tested without a database.
pub(crate) fn judge(
    ep: &Endpoint,
    probe: &HeartbeatProbe,
    beats: Option<Beats>,
    now: DateTime<Utc>,
    watching_since: DateTime<Utc>,
) -> Option<MetricRow> {
    let allowed = ep.interval + probe.grace;
    let mut row = MetricRow::empty(now.trunc_subsecs(6), &ep.name, ep.url.redacted().as_str());
    let expected = format!(
        "expected every {}, grace {}",
        humantime::format_duration(ep.interval),
        humantime::format_duration(probe.grace)
    );
    let age = |t: DateTime<Utc>| (now - t).to_std().unwrap_or(Duration::ZERO);
    match beats {
        Some(b) if age(b.last_at) <= allowed => {
            row.success = true;
            // The time between the last two heartbeats: a job that runs
            // later and later shows as slower and slower.
            row.response_time_ms = b
                .previous_at
                .map(|p| (b.last_at - p).num_milliseconds().max(0) as f64);
        }
        Some(b) => {
            row.error_kind = Some(ErrorKind::Missed.as_str().to_string());
            row.error_message = Some(format!(
                "no heartbeat for {} s ({expected}); the last came at {}",
                age(b.last_at).as_secs(),
                b.last_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        None if age(watching_since) <= allowed => return None,
        None => {
            row.error_kind = Some(ErrorKind::Missed.as_str().to_string());
            row.error_message = Some(format!(
                "no heartbeat received yet, {} s after this pinger began watching ({expected})",
                age(watching_since).as_secs()
            ));
        }
    }
    Some(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use apimon_core::Env;

    fn endpoint() -> (Endpoint, HeartbeatProbe) {
        let eps = apimon_core::apis::parse(
            "[[api]]\nname = \"nightly\"\nkind = \"heartbeat\"\ntoken = \"0123456789abcdefXYZ\"\n\
             interval = \"60s\"\ngrace = \"30s\"\n",
            "apis.toml",
            &Env::default(),
        )
        .unwrap();
        let ep = eps.into_iter().next().unwrap();
        let Probe::Heartbeat(h) = ep.probe.clone() else {
            panic!("a heartbeat")
        };
        (ep, h)
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn on_time_late_and_missing_heartbeats() {
        let (ep, h) = endpoint();
        let beats = |last: i64, prev: Option<i64>| {
            Some(Beats {
                last_at: at(last),
                previous_at: prev.map(at),
                beats: 2,
            })
        };
        // On time: a success whose time is the period between the last two.
        let r = judge(&ep, &h, beats(100, Some(40)), at(150), at(0)).unwrap();
        assert!(r.success, "{r:?}");
        assert_eq!(r.response_time_ms, Some(60_000.0));
        assert_eq!(r.url, "heartbeat://pinger/heartbeat/REDACTED");
        // Late but within the grace: still a success.
        let r = judge(&ep, &h, beats(100, None), at(190), at(0)).unwrap();
        assert!(r.success && r.response_time_ms.is_none(), "{r:?}");
        // Beyond interval + grace: a failed check of kind `missed`.
        let r = judge(&ep, &h, beats(100, Some(40)), at(191), at(0)).unwrap();
        assert!(!r.success);
        assert_eq!(r.error_kind.as_deref(), Some("missed"));
        let msg = r.error_message.unwrap();
        assert!(
            msg.starts_with("no heartbeat for 91 s (expected every 1m, grace 30s)"),
            "{msg}"
        );
        // Never came: nothing to say during the first interval + grace of
        // watching, a failure after.
        assert!(judge(&ep, &h, None, at(90), at(0)).is_none());
        let r = judge(&ep, &h, None, at(91), at(0)).unwrap();
        assert_eq!(r.error_kind.as_deref(), Some("missed"));
        assert!(r
            .error_message
            .unwrap()
            .starts_with("no heartbeat received yet"));
    }

    #[tokio::test]
    async fn a_token_finds_its_endpoint_and_a_wrong_one_nothing() {
        let r = Receiver {
            pool: sqlx::postgres::PgPoolOptions::new()
                .connect_lazy("postgres://nobody@127.0.0.1:1/none")
                .unwrap(),
            tokens: vec![
                ("a".into(), "aaaaaaaaaaaaaaaa1".to_string().into()),
                ("b".into(), "bbbbbbbbbbbbbbbb2".to_string().into()),
            ],
        };
        assert_eq!(r.find("bbbbbbbbbbbbbbbb2"), Some("b"));
        assert_eq!(r.find("bbbbbbbbbbbbbbbb"), None);
        assert_eq!(r.find("bbbbbbbbbbbbbbbb3"), None);
        assert_eq!(r.find(""), None);
    }
}
