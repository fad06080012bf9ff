//! The Grafana provisioning and dashboard: every panel's SQL runs against
//! the migrated schema, seeded with data, and returns rows; the YAML and
//! JSON parse and refer to each other correctly.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use apimon_core::db::{self, anomalies::AnomalyRow, metrics::MetricRow};
use apimon_core::{DbConfig, Env};
use chrono::{Duration, SubsecRound, Utc};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dashboard() -> serde_json::Value {
    let text =
        std::fs::read_to_string(root().join("grafana/dashboards/api-monitoring.json")).unwrap();
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

/// Every SQL query of the dashboard: (where, sql).
fn queries(d: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            out.push((
                format!(
                    "panel `{}` query {}",
                    p["title"].as_str().unwrap(),
                    t["refId"]
                ),
                t["rawSql"].as_str().unwrap().to_string(),
            ));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        out.push((
            format!("variable `{}`", v["name"]),
            v["query"].as_str().unwrap().to_string(),
        ));
    }
    out
}

/// Expands the Grafana macros our queries use, as Grafana's PostgreSQL
/// datasource does (with TimescaleDB enabled).
fn expand(sql: &str, apis: &[&str]) -> String {
    let to = Utc::now();
    let from = to - Duration::hours(6);
    let mut s = sql.replace("$__interval", "'5m'");
    let api_list = apis
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(",");
    s = s.replace("${api}", &api_list).replace("$api", &api_list);
    while let Some(i) = s.find("$__timeFilter(") {
        let end = i + s[i..].find(')').unwrap();
        let col = &s[i + "$__timeFilter(".len()..end];
        let rep = format!(
            "{col} BETWEEN '{}' AND '{}'",
            from.to_rfc3339(),
            to.to_rfc3339()
        );
        s.replace_range(i..=end, &rep);
    }
    while let Some(i) = s.find("$__timeGroupAlias(") {
        let end = i + s[i..].find(')').unwrap();
        let args = &s[i + "$__timeGroupAlias(".len()..end];
        let (col, interval) = args.split_once(',').unwrap();
        let rep = format!(
            "time_bucket({}, {}) AS \"time\"",
            interval.trim(),
            col.trim()
        );
        s.replace_range(i..=end, &rep);
    }
    assert!(!s.contains("$__"), "an unexpanded macro is left in: {s}");
    s
}

#[tokio::test]
async fn every_dashboard_query_runs_and_returns_rows_on_seeded_data() {
    let t = apimon_testkit::fresh_database().await;
    let pool = db::connect(&DbConfig::from_url(&t.url).unwrap())
        .await
        .unwrap();
    db::migrate(&pool).await.unwrap();
    let apis = ["alpha", "beta", "gamma"];
    let toml: String = apis
        .iter()
        .map(|n| format!("[[api]]\nname = \"{n}\"\nurl = \"http://{n}.test/\"\n"))
        .collect();
    db::endpoints::upsert(
        &pool,
        &apimon_core::apis::parse(&toml, "t", &Env::default()).unwrap(),
    )
    .await
    .unwrap();
    let now = Utc::now().trunc_subsecs(6);
    let mut rows = Vec::new();
    for (k, a) in apis.iter().enumerate() {
        for i in 0..480 {
            let ok = i % 50 != 0;
            rows.push(MetricRow {
                timestamp: now - Duration::seconds(15 * i),
                api_name: a.to_string(),
                url: format!("http://{a}.test/"),
                response_time_ms: ok.then_some(100.0 * (k + 1) as f64 + (i % 7) as f64),
                status_code: ok.then_some(200),
                success: ok,
                response_size_bytes: Some(10),
                error_kind: (!ok).then(|| "timeout".into()),
                error_message: None,
            });
        }
    }
    db::metrics::insert_batch(&pool, &rows).await.unwrap();
    let anomalies: Vec<AnomalyRow> = rows
        .iter()
        .filter(|r| !r.success)
        .enumerate()
        .map(|(i, r)| AnomalyRow {
            timestamp: r.timestamp,
            api_name: r.api_name.clone(),
            response_time_ms: r.response_time_ms,
            anomaly_score: [-0.3, -0.15, -0.05][i % 3],
            severity: ["critical", "high", "medium"][i % 3].into(),
            details: "seeded".into(),
            features: None,
            model_version: None,
        })
        .collect();
    let mut tx = pool.begin().await.unwrap();
    db::anomalies::insert(&mut tx, &anomalies).await.unwrap();
    sqlx::query(
        "INSERT INTO notifications (kind, api_name, channel, dedup_key, subject, body_text, state)
         VALUES ('alert', 'alpha', 'email', 'alert:alpha:1', 's', 'b', 'sent')",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("INSERT INTO alert_state (api_name, down_since) VALUES ('beta', now())")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Grafana reads as the read-only role, so run the queries as it does.
    db::set_grafana_password(&pool, "ro-pass").await.unwrap();
    let mut url = url::Url::parse(&t.url).unwrap();
    url.set_username("apimon_grafana").unwrap();
    url.set_password(Some("ro-pass")).unwrap();
    let ro = db::connect(&DbConfig::from_url(url.as_str()).unwrap())
        .await
        .unwrap();

    let d = dashboard();
    let qs = queries(&d);
    assert!(qs.len() >= 9, "{} queries", qs.len());
    for (place, sql) in qs {
        let expanded = expand(&sql, &apis);
        let result = sqlx::query(&expanded).fetch_all(&ro).await;
        let rows = result.unwrap_or_else(|e| panic!("{place} fails: {e}\n{expanded}"));
        assert!(
            !rows.is_empty(),
            "{place} returns nothing on seeded data:\n{expanded}"
        );
        // Stat panels: a count of 0 where data exists is "nothing" too.
        if place.contains("down now") || place.contains("Alerts sent") || place.contains("24 h") {
            let n: i64 = sqlx::Row::get(&rows[0], 0);
            assert!(n > 0, "{place} counts 0");
        }
    }
}

#[test]
fn provisioning_parses_and_refers_to_the_dashboard_and_datasource() {
    let ds: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(root().join("grafana/provisioning/datasources/apimon.yml"))
            .unwrap(),
    )
    .expect("datasource YAML parses");
    let ds0 = &ds["datasources"][0];
    let uid = ds0["uid"].as_str().unwrap();
    assert_eq!(ds0["type"].as_str(), Some("grafana-postgresql-datasource"));
    assert_eq!(
        ds0["user"].as_str(),
        Some("apimon_grafana"),
        "the read-only role"
    );
    assert_eq!(ds0["jsonData"]["timescaledb"].as_bool(), Some(true));

    let prov: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(root().join("grafana/provisioning/dashboards/apimon.yml"))
            .unwrap(),
    )
    .expect("dashboard provider YAML parses");
    let path = prov["providers"][0]["options"]["path"].as_str().unwrap();

    let compose: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(root().join("docker-compose.yml")).unwrap(),
    )
    .expect("docker-compose.yml parses");
    let volumes: Vec<&str> = compose["services"]["grafana"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        volumes.contains(&format!("./grafana/dashboards:{path}:ro").as_str()),
        "{volumes:?}"
    );
    assert!(
        volumes.contains(&"./grafana/provisioning:/etc/grafana/provisioning:ro"),
        "{volumes:?}"
    );

    let d = dashboard();
    assert_eq!(d["uid"], "apimon", "alert links point at /d/apimon/");
    let mut refs = 0;
    for p in d["panels"].as_array().unwrap() {
        assert_eq!(p["datasource"]["uid"].as_str(), Some(uid), "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"].as_str(), Some(uid));
            refs += 1;
        }
    }
    assert!(refs >= 9);
    let var = &d["templating"]["list"][0];
    assert_eq!(
        (var["name"].as_str(), var["multi"].as_bool()),
        (Some("api"), Some(true))
    );
}
