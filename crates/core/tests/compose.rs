//! `docker-compose.yml` against what the services need of it.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use apimon_core::config::parse_duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `key` of a service, or of the mapping it merges (`<<: *anchor`).
fn setting<'a>(service: &'a serde_norway::Value, key: &str) -> Option<&'a serde_norway::Value> {
    service
        .get(key)
        .or_else(|| service.get("<<").and_then(|m| m.get(key)))
}

/// The default `SHUTDOWN_GRACE` is what a service may spend from SIGTERM to
/// exit; Docker must wait longer before its SIGKILL.
#[test]
fn every_service_gets_more_stop_time_than_its_shutdown_grace() {
    let compose: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(root().join("docker-compose.yml")).unwrap(),
    )
    .unwrap();
    let env_example = std::fs::read_to_string(root().join(".env.example")).unwrap();
    let grace = env_example
        .lines()
        .find_map(|l| l.strip_prefix("SHUTDOWN_GRACE="))
        .map(|v| parse_duration(v.trim()).unwrap())
        .unwrap();
    for name in ["pinger", "detector", "alerter"] {
        let service = &compose["services"][name];
        let stop = setting(service, "stop_grace_period")
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("{name}: no stop_grace_period (Docker's default is 10s)"));
        let stop = parse_duration(stop).unwrap();
        assert!(
            stop >= grace + Duration::from_secs(3),
            "{name}: stop_grace_period {stop:?} leaves no margin over SHUTDOWN_GRACE {grace:?}"
        );
    }
}

fn compose() -> serde_norway::Value {
    let mut c: serde_norway::Value = serde_norway::from_str(
        &std::fs::read_to_string(root().join("docker-compose.yml")).unwrap(),
    )
    .unwrap();
    c.apply_merge().unwrap();
    c
}

/// During its first-start initialisation the database image runs a server
/// on its Unix socket only: a health check over the socket would call it
/// healthy then, and the services would meet a server about to restart.
#[test]
fn the_database_is_healthy_only_once_it_answers_over_tcp() {
    let c = compose();
    let test: Vec<&str> = c["services"]["timescaledb"]["healthcheck"]["test"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let cmd = test.join(" ");
    assert!(cmd.contains("pg_isready"), "{cmd}");
    assert!(cmd.contains("-h 127.0.0.1"), "{cmd}");
}

/// timescale/timescaledb#7672: an `INSERT … ON CONFLICT DO NOTHING` into a
/// compressed chunk lost rows before 2.18.1.
#[test]
fn the_timescaledb_image_is_pinned_to_2_18_1_or_newer() {
    let c = compose();
    let image = c["services"]["timescaledb"]["image"].as_str().unwrap();
    let tag = image
        .strip_prefix("timescale/timescaledb:")
        .unwrap_or_else(|| panic!("{image}: not the TimescaleDB image"));
    let (version, pg) = tag.split_once("-pg").unwrap_or_else(|| {
        panic!("{image}: pin a version and a PostgreSQL major, e.g. 2.28.3-pg17")
    });
    let v: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
    assert_eq!(v.len(), 3, "{image}: a full version, not a moving tag");
    assert!(v >= vec![2, 18, 1], "{image}");
    assert!(pg.parse::<u32>().unwrap() >= 16, "{image}");
}

/// The services get the database settings the database container gets,
/// from the shell or `.env`, and never a `DATABASE_URL` from `.env` that
/// would point them elsewhere.
#[test]
fn the_services_use_the_compose_database_with_the_settings_it_got() {
    let c = compose();
    let db_env = &c["services"]["timescaledb"]["environment"];
    for name in ["pinger", "detector", "alerter"] {
        let env = &c["services"][name]["environment"];
        assert_eq!(env["DATABASE_URL"].as_str(), Some(""), "{name}");
        assert_eq!(env["DB_HOST"].as_str(), Some("timescaledb"), "{name}");
        for (var, db_var) in [
            ("DB_NAME", "POSTGRES_DB"),
            ("DB_USER", "POSTGRES_USER"),
            ("DB_PASS", "POSTGRES_PASSWORD"),
        ] {
            assert_eq!(env[var], db_env[db_var], "{name}: {var}");
        }
        assert!(env["GRAFANA_DB_PASSWORD"]
            .as_str()
            .unwrap()
            .starts_with("${GRAFANA_DB_PASSWORD"));
    }
}

/// The Dockerfile compiles the dependencies in a layer of their own, with
/// stub sources for every target cargo would look for: a `[[bench]]` added
/// to a crate without its stub there breaks `docker compose build` (the
/// detector's `refresh` bench did).
#[test]
fn every_declared_target_has_a_stub_in_the_dockerfiles_dependency_layer() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let manifest: toml::Value = toml::from_str(&text).unwrap();
        let krate = dir.file_name().unwrap().to_str().unwrap().to_string();
        for (section, folder) in [("bench", "benches"), ("test", "tests"), ("bin", "src/bin")] {
            for target in manifest
                .get(section)
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                let name = target["name"].as_str().unwrap();
                let stub = format!("{krate}/{folder}/{name}");
                assert!(
                    dockerfile.contains(&stub),
                    "crates/{krate}/Cargo.toml declares [[{section}]] `{name}`, but the Dockerfile \
                     makes no stub `crates/{stub}.rs` for its dependency layer"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 6, "found {checked} declared targets");
}
