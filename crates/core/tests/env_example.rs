//! `.env.example` and the README list every variable the services read.

use std::path::Path;

/// Upper-case string literals (`"DB_PORT"`) of a source file.
fn env_names(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in src.split('"').skip(1).step_by(2) {
        let ok = part.len() > 2
            && part.starts_with(|c: char| c.is_ascii_uppercase())
            && part
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && part.contains('_');
        if ok {
            out.push(part.to_string());
        }
    }
    out
}

#[test]
fn every_variable_read_by_a_service_is_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let example = std::fs::read_to_string(root.join(".env.example")).expect(".env.example");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let sources = [
        "crates/core/src/config.rs",
        "crates/pinger/src/config.rs",
        "crates/detector/src/config.rs",
        "crates/alerter/src/config.rs",
        "crates/core/src/incidents.rs",
    ];
    let mut names: Vec<String> = sources
        .iter()
        .flat_map(|f| env_names(&std::fs::read_to_string(root.join(f)).expect(f)))
        .collect();
    names.retain(|n| !n.starts_with("CARGO_"));
    names.extend(["RUST_LOG", "LOG_FORMAT", "APIS_FILE"].map(String::from));
    names.sort();
    names.dedup();
    assert!(names.len() > 40, "found only {names:?}");
    let missing_example: Vec<&String> = names
        .iter()
        .filter(|n| !example.contains(n.as_str()))
        .collect();
    let missing_readme: Vec<&String> = names
        .iter()
        .filter(|n| !readme.contains(&format!("`{n}`")))
        .collect();
    assert!(
        missing_example.is_empty(),
        "missing from .env.example: {missing_example:?}"
    );
    assert!(
        missing_readme.is_empty(),
        "missing from the README's tables: {missing_readme:?}"
    );
}
