//! The Grafana provisioning and dashboard: every panel's and annotation's
//! SQL runs against the migrated schema, seeded with data, as the read-only
//! role and returns rows; the incidents show where a user looks for them;
//! the YAML and JSON parse and refer to each other correctly.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use apimon_core::db::{self, anomalies::AnomalyRow, metrics::MetricRow};
use apimon_core::{DbConfig, Env};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use sqlx::{PgPool, Row};

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
    for (name, sql) in annotation_queries(d) {
        out.push((format!("annotation `{name}`"), sql));
    }
    out
}

/// The SQL of every annotation on our datasource: (name, sql). An
/// annotation in the legacy shape (`rawQuery` at the top, no `target`)
/// fails here rather than being skipped.
fn annotation_queries(d: &serde_json::Value) -> Vec<(String, String)> {
    let Some(list) = d["annotations"]["list"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter(|a| a["datasource"]["type"] == "grafana-postgresql-datasource")
        .map(|a| {
            let name = a["name"].as_str().unwrap().to_string();
            let sql = a["target"]["rawSql"]
                .as_str()
                .unwrap_or_else(|| panic!("annotation `{name}` has no target.rawSql"));
            (name, sql.to_string())
        })
        .collect()
}

/// The SQL of the panel titled `title` (its first query).
fn panel_sql(d: &serde_json::Value, title: &str) -> String {
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("no panel `{title}`"))["targets"][0]["rawSql"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Expands the Grafana macros our queries use, as Grafana's PostgreSQL
/// datasource does (with TimescaleDB enabled), for the last 6 hours and the
/// APIs `apis` selected.
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
    s = s
        .replace("$__timeFrom()", &format!("'{}'", from.to_rfc3339()))
        .replace("$__timeTo()", &format!("'{}'", to.to_rfc3339()));
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

const APIS: [&str; 3] = ["alpha", "beta", "gamma"];

/// A migrated database seeded with what every panel shows, and a pool
/// logged in as Grafana's read-only role.
struct Seeded {
    _db: apimon_testkit::TestDb,
    /// As the services write.
    rw: PgPool,
    /// As `apimon_grafana`, as Grafana reads.
    ro: PgPool,
    /// The seed's "now" (microseconds).
    now: DateTime<Utc>,
}

/// One incident row, written as the detector's incident engine would.
struct Incident<'a> {
    api: &'a str,
    kind: &'a str,
    state: &'a str,
    started: Duration,
    recovered: Option<Duration>,
    resolved: Option<Duration>,
    peak: &'a str,
    reason: &'a str,
    silenced: bool,
}

/// The incidents of the seed, times before "now": alpha slow and open;
/// beta down, resolved inside the last 6 hours; beta slow, resolving
/// (answering again, silenced); gamma down, resolved two days ago (outside
/// every range the tests use); gamma slow and open.
const INCIDENTS: [Incident<'static>; 5] = [
    Incident {
        api: "alpha",
        kind: "slow",
        state: "open",
        started: Duration::minutes(40),
        recovered: None,
        resolved: None,
        peak: "high",
        reason: "p95 3.1x the baseline for 5 minutes",
        silenced: false,
    },
    Incident {
        api: "beta",
        kind: "down",
        state: "resolved",
        started: Duration::hours(3),
        recovered: Some(Duration::minutes(150)),
        resolved: Some(Duration::minutes(140)),
        peak: "critical",
        reason: "5 failed checks in a row",
        silenced: false,
    },
    Incident {
        api: "beta",
        kind: "slow",
        state: "resolving",
        started: Duration::minutes(20),
        recovered: Some(Duration::minutes(2)),
        resolved: None,
        peak: "critical",
        reason: "p95 5.0x the baseline for 5 minutes",
        silenced: true,
    },
    Incident {
        api: "gamma",
        kind: "down",
        state: "resolved",
        started: Duration::hours(49),
        recovered: Some(Duration::hours(48)),
        resolved: Some(Duration::minutes(47 * 60 + 50)),
        peak: "critical",
        reason: "5 failed checks in a row",
        silenced: false,
    },
    Incident {
        api: "gamma",
        kind: "slow",
        state: "open",
        started: Duration::minutes(10),
        recovered: None,
        resolved: None,
        peak: "high",
        reason: "p95 2.5x the baseline for 5 minutes",
        silenced: false,
    },
];

/// The role is the cluster's, shared by the tests running at once, each in
/// its own database; the function's advisory lock is per database, and
/// PostgreSQL refuses two concurrent ALTER ROLE ("tuple concurrently
/// updated"): one test at a time.
static ROLE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn seeded() -> Seeded {
    let t = apimon_testkit::fresh_database().await;
    let pool = db::connect(&DbConfig::from_url(&t.url).unwrap())
        .await
        .unwrap();
    db::migrate(&pool).await.unwrap();
    let toml: String = APIS
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
    for (k, a) in APIS.iter().enumerate() {
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
                // alpha is served over https with a certificate that
                // expires in 9 days; its latest checks saw it.
                tls_expires_at: (k == 0 && ok).then(|| now + Duration::days(9)),
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
         VALUES ('incident_open', 'alpha', 'email', 'open:1', 's', 'b', 'sent')",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    for i in &INCIDENTS {
        sqlx::query(
            "INSERT INTO incidents (api_name, kind, state, started_at, opened_at, recovered_at,
                                    resolved_at, peak_severity, reason, silenced)
             VALUES ($1, $2, $3, $4, $4 + interval '1 minute', $5, $6, $7, $8, $9)",
        )
        .bind(i.api)
        .bind(i.kind)
        .bind(i.state)
        .bind(now - i.started)
        .bind(i.recovered.map(|d| now - d))
        .bind(i.resolved.map(|d| now - d))
        .bind(i.peak)
        .bind(i.reason)
        .bind(i.silenced)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    // Grafana reads as the read-only role, so run the queries as it does.
    {
        let _one_at_a_time = ROLE.lock().await;
        db::set_grafana_password(&pool, "ro-pass").await.unwrap();
    }
    let mut url = url::Url::parse(&t.url).unwrap();
    url.set_username("apimon_grafana").unwrap();
    url.set_password(Some("ro-pass")).unwrap();
    let ro = db::connect(&DbConfig::from_url(url.as_str()).unwrap())
        .await
        .unwrap();
    Seeded {
        _db: t,
        rw: pool,
        ro,
        now,
    }
}

/// Runs `sql` as Grafana would for the last 6 hours and `apis`.
async fn run(ro: &PgPool, sql: &str, apis: &[&str]) -> Vec<sqlx::postgres::PgRow> {
    let expanded = expand(sql, apis);
    sqlx::query(&expanded)
        .fetch_all(ro)
        .await
        .unwrap_or_else(|e| panic!("fails: {e}\n{expanded}"))
}

#[tokio::test]
async fn every_dashboard_query_runs_and_returns_rows_on_seeded_data() {
    let s = seeded().await;
    // An API down now, for the "APIs down now" count.
    sqlx::query(
        "INSERT INTO incidents (api_name, kind, state, started_at, opened_at, peak_severity, reason)
         VALUES ('gamma', 'down', 'open', $1, $1, 'critical', '2 consecutive failed checks')",
    )
    .bind(s.now - chrono::Duration::minutes(3))
    .execute(&s.rw)
    .await
    .unwrap();
    let d = dashboard();
    let qs = queries(&d);
    assert!(qs.len() >= 12, "{} queries", qs.len());
    assert!(
        qs.iter().any(|(place, _)| place.starts_with("annotation")),
        "the annotation queries are tested too: {qs:?}"
    );
    for (place, sql) in qs {
        let expanded = expand(&sql, &APIS);
        let result = sqlx::query(&expanded).fetch_all(&s.ro).await;
        let rows = result.unwrap_or_else(|e| panic!("{place} fails: {e}\n{expanded}"));
        assert!(
            !rows.is_empty(),
            "{place} returns nothing on seeded data:\n{expanded}"
        );
        // Stat panels: a count of 0 where data exists is "nothing" too.
        if place.contains("down now") || place.contains("Alerts sent") || place.contains("24 h") {
            let n: i64 = rows[0].get(0);
            assert!(n > 0, "{place} counts 0");
        }
    }
}

#[tokio::test]
async fn open_incidents_lists_the_unresolved_incidents_of_the_selected_apis_newest_first() {
    let s = seeded().await;
    let sql = panel_sql(&dashboard(), "Open incidents");

    let rows = run(&s.ro, &sql, &APIS).await;
    let listed: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get("API"), r.get("kind"), r.get("state")))
        .collect();
    let expected = [
        ("gamma", "slow", "open"),
        ("beta", "slow", "resolving"),
        ("alpha", "slow", "open"),
    ]
    .map(|(a, k, st)| (a.to_string(), k.to_string(), st.to_string()));
    assert_eq!(listed, expected, "resolved incidents are not listed");
    let alpha = &rows[2];
    assert_eq!(
        alpha.get::<DateTime<Utc>, _>("since"),
        s.now - Duration::minutes(40)
    );
    // Open: lasting until now (about 40 minutes).
    let d: i64 = alpha.get("duration");
    assert!((2400..2460).contains(&d), "duration {d} s");
    assert_eq!(alpha.get::<String, _>("peak severity"), "high");
    assert_eq!(
        alpha.get::<String, _>("reason"),
        "p95 3.1x the baseline for 5 minutes"
    );
    assert!(!alpha.get::<bool, _>("silenced"));
    // Resolving: lasted from the first bad check to the first good one.
    let beta = &rows[1];
    assert_eq!(beta.get::<i64, _>("duration"), 18 * 60);
    assert!(beta.get::<bool, _>("silenced"));

    let rows = run(&s.ro, &sql, &["alpha", "beta"]).await;
    let apis: Vec<String> = rows.iter().map(|r| r.get("API")).collect();
    assert_eq!(apis, ["beta", "alpha"], "only the selected APIs");
}

#[tokio::test]
async fn the_endpoints_panel_shows_each_kind_and_the_tls_days_left_soonest_first() {
    let s = seeded().await;
    // A TCP check besides the three HTTP ones.
    let tcp = apimon_core::apis::parse(
        "[[api]]\nname = \"db\"\nkind = \"tcp\"\naddress = \"db.test:5432\"\n",
        "t",
        &Env::default(),
    )
    .unwrap();
    db::endpoints::upsert(&s.rw, &tcp).await.unwrap();
    let sql = panel_sql(&dashboard(), "Endpoints: kind and TLS days left");
    let rows = run(&s.ro, &sql, &["alpha", "beta", "gamma", "db"]).await;
    let listed: Vec<(String, String, Option<f64>)> = rows
        .iter()
        .map(|r| (r.get("API"), r.get("kind"), r.get("TLS days left")))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("alpha".to_string(), "http".to_string(), Some(9.0)),
            ("beta".to_string(), "http".to_string(), None),
            ("db".to_string(), "tcp".to_string(), None),
            ("gamma".to_string(), "http".to_string(), None),
        ]
    );
}

#[tokio::test]
async fn recent_incidents_lists_the_incidents_resolved_in_the_range_with_their_duration() {
    let s = seeded().await;
    let sql = panel_sql(&dashboard(), "Recent incidents");

    let rows = run(&s.ro, &sql, &APIS).await;

    // Not the open or resolving ones, nor gamma's, resolved two days ago.
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (r.get::<String, _>("API"), r.get::<String, _>("kind")),
        ("beta".to_string(), "down".to_string())
    );
    assert_eq!(
        r.get::<DateTime<Utc>, _>("started"),
        s.now - Duration::hours(3)
    );
    assert_eq!(r.get::<i64, _>("duration"), 30 * 60);
    assert_eq!(r.get::<String, _>("peak severity"), "critical");
}

#[tokio::test]
async fn incidents_overlapping_the_range_are_region_annotations_on_the_response_time_panel() {
    let s = seeded().await;
    let d = dashboard();
    let anns = annotation_queries(&d);
    let (_, sql) = anns
        .iter()
        .find(|(name, _)| name == "Incidents")
        .expect("an `Incidents` annotation");

    let rows = run(&s.ro, sql, &APIS).await;

    let got: Vec<(DateTime<Utc>, DateTime<Utc>, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.get("time"),
                r.get("timeend"),
                r.get("text"),
                r.get("tags"),
            )
        })
        .collect();
    let texts: Vec<&str> = got.iter().map(|g| g.2.as_str()).collect();
    assert_eq!(
        texts,
        [
            "down on beta: 5 failed checks in a row",
            "slow on alpha: p95 3.1x the baseline for 5 minutes (open)",
            "slow on beta: p95 5.0x the baseline for 5 minutes (resolving) [silenced]",
            "slow on gamma: p95 2.5x the baseline for 5 minutes (open)",
        ],
        "gamma's incident of two days ago is outside the range"
    );
    // The resolved one: a region from its first bad check to its first good
    // one.
    assert_eq!(
        (got[0].0, got[0].1),
        (s.now - Duration::hours(3), s.now - Duration::minutes(150))
    );
    assert_eq!(got[0].3, "down,critical,beta");
    // An open one lasts until now.
    let until_now = got[1].1 - Utc::now();
    assert!(until_now.num_seconds().abs() < 60, "{until_now}");
    assert_eq!(got[1].3, "slow,high,alpha");
    assert_eq!(got[2].3, "slow,critical,beta,silenced");

    let rows = run(&s.ro, sql, &["alpha"]).await;
    assert_eq!(rows.len(), 1, "only the selected APIs");

    // Shown on the response-time panel only.
    let ann = &d["annotations"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "Incidents")
        .unwrap();
    let rt_panel = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "Response time (mean and p95)")
        .unwrap();
    assert_eq!(ann["filter"]["exclude"], false);
    assert_eq!(ann["filter"]["ids"], serde_json::json!([rt_panel["id"]]));
    assert_eq!(ann["enable"], true);
}

/// Whether `apimon_grafana` may read `table.column`, however granted.
async fn grafana_reads(pool: &PgPool, table: &str, column: &str) -> bool {
    sqlx::query_scalar("SELECT has_column_privilege('apimon_grafana', $1, $2, 'SELECT')")
        .bind(table)
        .bind(column)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_grafana_role_reads_only_the_columns_the_dashboard_queries() {
    let s = seeded().await;
    let d = dashboard();
    let sqls: Vec<String> = queries(&d)
        .into_iter()
        .map(|(_, sql)| sql.to_ascii_lowercase())
        .collect();
    let words = |sql: &str| -> Vec<String> {
        sql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
         WHERE table_schema = 'public' ORDER BY 1, 2",
    )
    .fetch_all(&s.rw)
    .await
    .unwrap();
    // On TimescaleDB the role gets api_metrics whole: a per-column grant
    // fails on a compressed hypertable (migration 0008). Its URLs are
    // stored redacted.
    let whole_metrics = matches!(
        apimon_core::db::backend(&s.rw).await.unwrap(),
        apimon_core::db::Backend::TimescaleDb { .. }
    );
    let mut readable = Vec::new();
    for (table, column) in &columns {
        if !grafana_reads(&s.rw, table, column).await {
            continue;
        }
        readable.push(format!("{table}.{column}"));
        if whole_metrics && table == "api_metrics" {
            continue;
        }
        let used = sqls.iter().any(|sql| {
            let w = words(sql);
            w.contains(table) && w.contains(column)
        });
        assert!(
            used,
            "Grafana reads {table}.{column}, which no dashboard query names"
        );
    }
    assert!(readable.len() >= 20, "{readable:?}");
    // What held keys, messages and delivery errors.
    for (table, column) in [
        ("api_metrics", "url"),
        ("api_metrics", "error_message"),
        ("api_endpoints", "url"),
        ("notifications", "body_text"),
        ("notifications", "payload"),
        ("notifications", "last_error"),
        ("models", "forest"),
    ] {
        if whole_metrics && table == "api_metrics" {
            continue;
        }
        assert!(
            !grafana_reads(&s.rw, table, column).await,
            "{table}.{column}"
        );
    }
    let denied = sqlx::query(if whole_metrics {
        "SELECT url FROM api_endpoints"
    } else {
        "SELECT url FROM api_metrics"
    })
    .fetch_all(&s.ro)
    .await;
    let e = denied.expect_err("url is not Grafana's");
    assert!(e.to_string().contains("permission denied"), "{e}");
    // A table created later is not Grafana's either.
    sqlx::query("CREATE TABLE added_later (secret text)")
        .execute(&s.rw)
        .await
        .unwrap();
    assert!(!grafana_reads(&s.rw, "added_later", "secret").await);
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
    assert!(refs >= 11);
    let anns = d["annotations"]["list"].as_array().unwrap();
    assert!(!anns.is_empty());
    for a in anns {
        assert_eq!(a["datasource"]["uid"].as_str(), Some(uid), "{}", a["name"]);
        assert_eq!(a["target"]["datasource"]["uid"].as_str(), Some(uid));
    }
    let mut ids: Vec<i64> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(
        ids.len(),
        n,
        "panel ids are unique (annotations refer to them)"
    );
    let var = &d["templating"]["list"][0];
    assert_eq!(
        (var["name"].as_str(), var["multi"].as_bool()),
        (Some("api"), Some(true))
    );
}

/// Two detector replicas set the password at the same moment: the calls
/// wait for each other instead of failing with "tuple concurrently
/// updated" (a warning in the log of one of them, before migration 0011).
#[tokio::test]
async fn concurrent_grafana_password_changes_in_one_database_all_succeed() {
    let t = apimon_testkit::fresh_database().await;
    let pool = db::connect(&DbConfig::from_url(&t.url).unwrap())
        .await
        .unwrap();
    db::migrate(&pool).await.unwrap();
    let _one_test_at_a_time = ROLE.lock().await;
    let mut failures = Vec::new();
    for round in 0..10 {
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    db::set_grafana_password(&pool, &format!("pw-{round}-{i}")).await
                })
            })
            .collect();
        for c in calls {
            if let Err(e) = c.await.unwrap() {
                failures.push(format!("round {round}: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 80 calls failed: {failures:?}",
        failures.len()
    );
}
