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

/// `.env.example` with every commented-out assignment (`# NAME=value`)
/// turned on: what a newcomer gets by uncommenting what they need.
fn example_uncommented() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let example = std::fs::read_to_string(root.join(".env.example")).expect(".env.example");
    example
        .lines()
        .map(|line| {
            let rest = line.strip_prefix("# ").unwrap_or(line);
            let is_assignment = rest.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            });
            if is_assignment {
                rest
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn env_example_parses_with_every_commented_assignment_uncommented() {
    let text = example_uncommented();
    let vars: Vec<(String, String)> = dotenvy::from_read_iter(text.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!(".env.example, uncommented, does not parse: {e}"));
    let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert!(vars.len() > 60, "only {} assignments", vars.len());
    assert_eq!(
        get("ALERT_EMAIL_TO"),
        Some("ops@example.com, oncall@example.com")
    );
    assert_eq!(
        get("DATABASE_URL"),
        Some("postgres://apimon:change-me@localhost:5432/apimon")
    );
}

#[test]
fn an_unquoted_list_in_env_is_refused_with_the_way_to_quote_it() {
    let line = "ALERT_EMAIL_TO=ops@example.com, oncall@example.com";
    let err = dotenvy::from_read_iter(line.as_bytes())
        .find_map(Result::err)
        .expect("dotenvy refuses an unquoted value with a space");
    let dotenvy::Error::LineParse(bad, _) = err else {
        panic!("expected a line parse error, got {err}");
    };
    let e = apimon_core::config::dotenv_line_error(&bad);
    assert!(e.to_string().contains("ALERT_EMAIL_TO"), "{e}");
    assert!(
        e.to_string()
            .contains("ALERT_EMAIL_TO=\"ops@example.com, oncall@example.com\""),
        "{e}"
    );
}
