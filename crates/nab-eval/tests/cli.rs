//! `nab-eval` as a user runs it: on a corpus laid out as NAB's, and with
//! the mistakes a user makes.

use std::path::Path;
use std::process::{Command, Output};

fn nab_eval(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nab-eval"))
        .args(args)
        .env_clear()
        .env("RUST_LOG", "off")
        .output()
        .expect("the nab-eval binary runs")
}

/// `dir/data/synthetic/spike.csv`: 600 rows at 5 minutes, a steady
/// wave with one labelled spike at row 450, and its windows file.
fn write_corpus(dir: &Path) {
    let data = dir.join("data/synthetic");
    std::fs::create_dir_all(&data).expect("corpus directory");
    let start = chrono::DateTime::parse_from_rfc3339("2014-04-01T00:00:00Z")
        .expect("a timestamp")
        .naive_utc();
    let at = |i: i64| {
        (start + chrono::Duration::minutes(5 * i))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let mut csv = String::from("timestamp,value\n");
    for i in 0..600 {
        let v = if i == 450 {
            500.0
        } else {
            100.0 + f64::from((i * 7 % 13) as i32)
        };
        csv.push_str(&format!("{},{v}\n", at(i)));
    }
    std::fs::write(data.join("spike.csv"), csv).expect("corpus file");
    let windows = format!(
        r#"{{"synthetic/spike.csv": [["{}", "{}"]]}}"#,
        at(445),
        at(460)
    );
    std::fs::write(dir.join("combined_windows.json"), windows).expect("windows file");
}

#[test]
fn the_dataset_directory_is_a_required_argument() {
    let out = nab_eval(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--nab"), "{err}");
}

#[test]
fn a_missing_dataset_directory_is_named() {
    let out = nab_eval(&["--nab", "/no/such/nab"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/no/such/nab"), "{err}");
}

#[test]
fn an_unknown_experiment_is_refused_with_the_known_ones() {
    let out = nab_eval(&["--nab", "/tmp", "--experiment", "faster"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("faster") && err.contains("skip-original"),
        "{err}"
    );
}

#[test]
fn a_small_corpus_is_evaluated_with_every_detector_and_written_as_csv() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    write_corpus(dir.path());
    let csv = dir.path().join("out.csv");
    let out = nab_eval(&[
        "--nab",
        dir.path().to_str().expect("a UTF-8 path"),
        "--out-csv",
        csv.to_str().expect("a UTF-8 path"),
        "--threads",
        "2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("1 files, 600 rows, 1 windows; 2 threads"),
        "{text}"
    );
    let rows = std::fs::read_to_string(&csv).expect("the CSV was written");
    let detectors: Vec<&str> = rows
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .collect();
    assert_eq!(
        detectors,
        [
            "apimon",
            "apimon-high",
            "apimon-critical",
            "zscore",
            "original"
        ]
    );
    // The spike is 30 standard deviations out: the z-score catches it.
    let zscore = rows
        .lines()
        .find(|l| l.starts_with("zscore,"))
        .expect("a zscore row");
    let fields: Vec<&str> = zscore.split(',').collect();
    assert_eq!((fields[5], fields[6]), ("1", "1"), "{zscore}");
}
