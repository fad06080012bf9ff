//! The manifests carry no dependency or feature the code does not use
//! (review of 2026-12): each one removed then is named here, so that it
//! cannot come back unnoticed.

use std::path::Path;

fn manifest(relative: &str) -> toml::Table {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative);
    let text = std::fs::read_to_string(&path).expect("a manifest of the workspace");
    text.parse().expect("a manifest that is valid TOML")
}

fn table<'a>(t: &'a toml::Table, key: &str) -> &'a toml::Table {
    t.get(key)
        .and_then(toml::Value::as_table)
        .unwrap_or_else(|| panic!("no [{key}] table"))
}

/// The features the workspace enables for `dependency`.
fn workspace_features(dependency: &str) -> Vec<String> {
    let root = manifest("Cargo.toml");
    let deps = table(table(&root, "workspace"), "dependencies");
    deps.get(dependency)
        .and_then(|d| d.get("features"))
        .and_then(toml::Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_services_depend_only_on_crates_they_use() {
    let unused = [
        ("crates/alerter/Cargo.toml", "futures-util"),
        ("crates/alerter/Cargo.toml", "thiserror"),
        ("crates/detector/Cargo.toml", "serde"),
        // Only the detector's bench compares against the crate directly.
        ("crates/detector/Cargo.toml", "extended-isolation-forest"),
    ];
    for (path, dependency) in unused {
        let m = manifest(path);
        let deps = table(&m, "dependencies");
        assert!(
            !deps.contains_key(dependency),
            "{path} depends on {dependency}, which its code does not use"
        );
    }
}

#[test]
fn unused_features_stay_off_outside_tests() {
    assert!(
        !workspace_features("reqwest").contains(&"stream".to_string()),
        "reqwest's `stream` feature is unused"
    );
    let tokio = workspace_features("tokio");
    assert!(tokio.contains(&"rt-multi-thread".to_string()), "{tokio:?}");
    assert!(
        !tokio.contains(&"process".to_string()),
        "tokio's `process` feature is for tests and benches only: enable it in [dev-dependencies]"
    );
    for member in [
        "core", "pinger", "detector", "alerter", "testkit", "nab-eval",
    ] {
        let m = manifest(&format!("crates/{member}/Cargo.toml"));
        let features = m
            .get("dependencies")
            .and_then(|d| d.get("tokio"))
            .and_then(|t| t.get("features"))
            .and_then(toml::Value::as_array)
            .cloned()
            .unwrap_or_default();
        assert!(
            !features.iter().any(|f| f.as_str() == Some("process")),
            "crates/{member} enables tokio's `process` outside [dev-dependencies]"
        );
    }
}
