//! Endpoints removed from the configuration (retired) in the detector,
//! against a real PostgreSQL: not trained, not scored, their open incident
//! closed as `retired` (with a resolution for the alerter), and active
//! again with their history when re-added.

#![allow(clippy::unwrap_used)]

use apimon_core::db::{self, metrics::MetricRow};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

mod helpers;
use helpers::*;

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn watermark(pool: &PgPool, api: &str) -> Option<DateTime<Utc>> {
    sqlx::query_scalar("SELECT last_timestamp FROM detector_watermarks WHERE api_name = $1")
        .bind(api)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// What the pinger does at start with a file listing only `names`.
async fn configure(pool: &PgPool, names: &[&str]) {
    let toml: String = names
        .iter()
        .map(|n| format!("[[api]]\nname = \"{n}\"\nurl = \"http://{n}.test/\"\n"))
        .collect();
    let eps = apimon_core::apis::parse(&toml, "test", &apimon_core::Env::default()).unwrap();
    db::endpoints::sync(pool, &eps).await.unwrap();
}

type IncidentState = (String, String, Option<String>, Option<DateTime<Utc>>);

async fn incidents(pool: &PgPool) -> Vec<IncidentState> {
    sqlx::query_as("SELECT api_name, state, resolution, resolved_at FROM incidents ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn events(pool: &PgPool) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT incident_id, event FROM incident_events ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_endpoint_is_neither_trained_nor_scored() {
    let db = database().await;
    register(&db.pool, &["kept", "gone"]).await;
    let mut rows = history("kept", 200, 3);
    rows.extend(history("gone", 200, 5));
    db::metrics::insert_batch(&db.pool, &rows).await.unwrap();
    configure(&db.pool, &["kept"]).await;

    let run = start(config(&db.url, &[]), &db.url);
    let last = rows[199].timestamp;
    wait_for("the active endpoint trained and scored", || async {
        watermark(&db.pool, "kept").await == Some(last)
            && scalar(
                &db.pool,
                "SELECT count(*) FROM models WHERE api_name = 'kept'",
            )
            .await
                == 1
    })
    .await;
    // A trainer pass more (it looks every 2 s), then stop.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let outcome = run.stop().await;

    assert_eq!(outcome.scored, 200, "only the active endpoint's rows");
    assert_eq!(watermark(&db.pool, "gone").await, None);
    assert_eq!(
        scalar(
            &db.pool,
            "SELECT count(*) FROM models WHERE api_name = 'gone'"
        )
        .await,
        0
    );
    assert_eq!(
        scalar(
            &db.pool,
            "SELECT count(*) FROM anomalies WHERE api_name = 'gone'"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_endpoint_removed_from_the_config_is_closed_as_retired_and_comes_back_when_re_added()
{
    let db = database().await;
    register(&db.pool, &["api", "calm"]).await;
    let mut rows = history("api", 150, 3);
    rows.extend(history("calm", 150, 5));
    db::metrics::insert_batch(&db.pool, &rows).await.unwrap();
    let cfg = config(&db.url, &[]);
    let run = start(cfg.clone(), &db.url);
    wait_for("the history scored", || async {
        db::watermarks::all(&db.pool).await.unwrap().len() == 2
    })
    .await;
    let t0 = Utc::now() - chrono::Duration::seconds(50);
    let fails: Vec<MetricRow> = (0..3)
        .map(|i| row("api", t0 + chrono::Duration::seconds(i), None))
        .collect();
    db::metrics::insert_batch(&db.pool, &fails).await.unwrap();
    wait_for("a down incident", || async {
        !incidents(&db.pool).await.is_empty()
    })
    .await;
    run.stop().await;
    assert_eq!(incidents(&db.pool).await[0].1, "open");

    // The endpoint leaves the configuration while down. The detector (at
    // its next refresh of the list; here its start) closes the incident as
    // retired and queues its resolution: the page gets its end.
    configure(&db.pool, &["calm"]).await;
    let run = start(cfg.clone(), &db.url);
    wait_for("the incident closed", || async {
        incidents(&db.pool).await[0].1 == "resolved"
    })
    .await;
    let got = incidents(&db.pool).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].2.as_deref(), Some("retired"));
    let retired_at: DateTime<Utc> =
        sqlx::query_scalar("SELECT retired_at FROM api_endpoints WHERE api_name = 'api'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(got[0].3, Some(retired_at), "resolved at its retirement");
    let ev: Vec<String> = events(&db.pool).await.into_iter().map(|e| e.1).collect();
    assert_eq!(ev, ["open", "resolve"]);
    let state: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT incident_state FROM detector_watermarks WHERE api_name = 'api'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(state, None, "the rules start afresh if it comes back");
    run.stop().await;

    // Re-added: scored again from where it stopped, its history intact;
    // a new outage is a new incident.
    configure(&db.pool, &["api", "calm"]).await;
    let history_rows = scalar(
        &db.pool,
        "SELECT count(*) FROM api_metrics WHERE api_name = 'api'",
    )
    .await;
    assert_eq!(history_rows, 153);
    let run = start(cfg, &db.url);
    let t1 = Utc::now() - chrono::Duration::seconds(5);
    let fails: Vec<MetricRow> = (0..3)
        .map(|i| row("api", t1 + chrono::Duration::milliseconds(100 * i), None))
        .collect();
    db::metrics::insert_batch(&db.pool, &fails).await.unwrap();
    let end = fails[2].timestamp;
    wait_for("the new checks scored", || async {
        watermark(&db.pool, "api").await == Some(end)
    })
    .await;
    wait_for("a second incident", || async {
        incidents(&db.pool).await.len() == 2
    })
    .await;
    run.stop().await;
    let got = incidents(&db.pool).await;
    assert_eq!((got[1].1.as_str(), got[1].2.as_deref()), ("open", None));
}
