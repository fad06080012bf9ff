//! `alerter silence add|list|expire`, the real binary against a real
//! PostgreSQL, and the [`Silencer`] the dispatcher asks, reading what the
//! commands wrote.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use alerter::silence::Silencer;
use apimon_core::db::silences;
use chrono::Utc;

mod helpers;
use helpers::database;

/// The binary with nothing but `PATH`, the database and `extra` in its
/// environment (no channel settings at all), in a directory without `.env`
/// or `apis.toml`.
fn alerter(db_url: Option<&str>, dir: &Path, extra: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_alerter"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir)
        .args(args);
    if let Some(url) = db_url {
        c.env("DATABASE_URL", url);
    }
    c.envs(extra.iter().copied());
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// Multi-threaded: the binary runs while this test holds a pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_added_listed_and_expired_through_the_cli_silences_then_stops() {
    let db = database(&["Billing", "Billing EU", "Payments"]).await;
    let dir = tempfile::tempdir().unwrap();
    let run =
        |extra: &[(&str, &str)], args: &[&str]| alerter(Some(&db.url), dir.path(), extra, args);
    let silencer = Silencer::default();

    // Add: the id and the end are printed, with the APIs it matches.
    let out = run(
        &[("USER", "alice")],
        &[
            "silence",
            "add",
            "--api",
            "Billing*",
            "--for",
            "2h",
            "--reason",
            "deploy v2",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.starts_with("silence #1 on \"Billing*\" from "),
        "{stdout}"
    );
    let row = &silences::list(&db.pool, false).await.unwrap()[0];
    assert!(
        stdout.contains(&format!(
            "until {}",
            alerter::silence::timestamp(row.ends_at)
        )),
        "{stdout}"
    );
    assert!(stdout.contains("(by alice: deploy v2)"), "{stdout}");
    assert!(
        stdout.contains("matches: Billing, Billing EU\n"),
        "{stdout}"
    );
    let length = row.ends_at - row.starts_at;
    assert_eq!(length, chrono::Duration::hours(2));
    assert!((Utc::now() - row.starts_at).num_seconds().abs() < 60);

    // List: a row that says it is active.
    let out = run(&[], &["silence", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = text(&out.stdout);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(lines[0].starts_with("ID "), "{list}");
    for cell in ["#1", "Billing*", "alice", "active", "deploy v2"] {
        assert!(lines[1].contains(cell), "{cell} in {list}");
    }

    // The dispatcher's view: active_at finds it, the silencer names it.
    let now = Utc::now();
    let active = silences::active_at(&db.pool, now).await.unwrap();
    assert_eq!(active.len(), 1);
    let why = silencer.why_silenced("Billing EU", now, &active).unwrap();
    assert!(why.starts_with("silence #1 by alice until "), "{why}");
    assert!(why.ends_with(": deploy v2"), "{why}");
    assert_eq!(silencer.why_silenced("Payments", now, &active), None);

    // Expire: it stops silencing.
    let out = run(&[], &["silence", "expire", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "silence #1 expired\n");
    let now = Utc::now();
    let active = silences::active_at(&db.pool, now).await.unwrap();
    assert!(active.is_empty());
    assert_eq!(silencer.why_silenced("Billing EU", now, &active), None);
    // Even handed the row itself, the silencer knows it is expired.
    let all = silences::list(&db.pool, true).await.unwrap();
    assert_eq!(silencer.why_silenced("Billing EU", now, &all), None);

    let out = run(&[], &["silence", "list"]);
    assert_eq!(text(&out.stdout), "no active or scheduled silences\n");
    let out = run(&[], &["silence", "list", "--all"]);
    let list = text(&out.stdout);
    assert!(list.lines().nth(1).unwrap().contains("expired"), "{list}");

    // Expiring again, or an unknown id: exit 1 with a clear message.
    for id in ["1", "999"] {
        let out = run(&[], &["silence", "expire", id]);
        assert_eq!(out.status.code(), Some(1), "{id}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("no active or scheduled silence #{id}")),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_commands_need_only_the_database_settings() {
    let db = database(&["a"]).await;
    let dir = tempfile::tempdir().unwrap();
    // Half-done email settings stop the service and its other commands...
    let broken_email = [("ALERT_EMAIL_TO", "ops@example.test")];
    let out = alerter(
        Some(&db.url),
        dir.path(),
        &broken_email,
        &["preview-report"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // ...not the silences.
    let out = alerter(
        Some(&db.url),
        dir.path(),
        &broken_email,
        &[
            "silence", "add", "--api", "*", "--for", "30m", "--reason", "r", "--by", "bob",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = alerter(
        Some(&db.url),
        dir.path(),
        &broken_email,
        &["silence", "list"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("bob"));
    // Without --by, $USER nor $LOGNAME: "unknown".
    let out = alerter(
        Some(&db.url),
        dir.path(),
        &[("LOGNAME", "carol")],
        &[
            "silence", "add", "--api", "a", "--for", "1h", "--reason", "r",
        ],
    );
    assert!(
        text(&out.stdout).contains("(by carol: r)"),
        "{}",
        text(&out.stdout)
    );
    let out = alerter(
        Some(&db.url),
        dir.path(),
        &[],
        &[
            "silence", "add", "--api", "zz*", "--for", "1h", "--reason", "r",
        ],
    );
    assert!(
        text(&out.stdout).contains("(by unknown: r)"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("matches none of the 1 known APIs"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_can_start_later() {
    let db = database(&["a"]).await;
    let dir = tempfile::tempdir().unwrap();
    let start = (Utc::now() + chrono::Duration::hours(3)).to_rfc3339();
    let out = alerter(
        Some(&db.url),
        dir.path(),
        &[],
        &[
            "silence", "add", "--api", "a", "--for", "1h", "--reason", "later", "--start", &start,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = alerter(Some(&db.url), dir.path(), &[], &["silence", "list"]);
    assert!(
        text(&out.stdout).contains("scheduled"),
        "{}",
        text(&out.stdout)
    );
    assert!(silences::active_at(&db.pool, Utc::now())
        .await
        .unwrap()
        .is_empty());
    let row = &silences::list(&db.pool, false).await.unwrap()[0];
    let later = row.starts_at + chrono::Duration::minutes(30);
    let active = silences::active_at(&db.pool, later).await.unwrap();
    assert!(Silencer::default()
        .why_silenced("a", later, &active)
        .is_some());
}

#[test]
fn bad_arguments_exit_2_with_a_message_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    // (arguments, expected in the message)
    let cases: [(&[&str], &str); 6] = [
        (&["--api", "a", "--for", "soon", "--reason", "r"], "--for"),
        (&["--api", "a", "--for", "0s", "--reason", "r"], "--for"),
        (&["--api", "a", "--for", "2h"], "--reason"),
        (&["--api", "a", "--for", "2h", "--reason", "  "], "--reason"),
        (&["--api", "", "--for", "2h", "--reason", "r"], "--api"),
        (
            &[
                "--api",
                "a",
                "--for",
                "1h",
                "--reason",
                "r",
                "--start",
                "2020-01-01T00:00:00Z",
            ],
            "in the past",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["silence", "add"];
        all.extend_from_slice(args);
        // No database at all: the arguments are checked before connecting.
        let out = alerter(None, dir.path(), &[("DB_PORT", "1")], &all);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: `{needle}` in {stderr}");
    }
    let out = alerter(None, dir.path(), &[], &["silence", "expire", "abc"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("ID"), "{}", text(&out.stderr));
}

#[test]
fn a_bad_maintenance_window_stops_the_alerter_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apis.toml");
    std::fs::write(
        &file,
        "[[api]]\nname = \"A\"\nurl = \"http://a.test/\"\n\
         [[maintenance]]\ncron = \"0 2 * * SUN\"\nduration = \"2h\"\n\
         [[maintenance]]\nweekdays = [\"sat\"]\nstart = \"25:00\"\nduration = \"2h\"\n",
    )
    .unwrap();
    let apis_file = file.display().to_string();
    let out = alerter(None, dir.path(), &[("APIS_FILE", &apis_file)], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{apis_file}: maintenance[1]: start: expected a time"
        )),
        "{stderr}"
    );
    let out = alerter(
        None,
        dir.path(),
        &[("APIS_FILE", "/nonexistent/apis.toml")],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("APIS_FILE"));
}
