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
