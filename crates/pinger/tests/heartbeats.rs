//! `kind = "heartbeat"`: jobs push `POST /heartbeat/<token>` to the
//! pinger's HTTP port; heartbeats on time are successes, late or missing
//! ones failed checks of kind `missed`. Two sharded replicas: a heartbeat
//! received by either is seen by the one that owns the endpoint.

#![allow(clippy::unwrap_used)]

mod helpers;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use apimon_core::shard::Shard;
use helpers::{wait_until, Harness};

const ON_TIME: &str = "ontime-T0KEN-0123456789";
const STOPS: &str = "stops-T0KEN-0123456789";
const NEVER: &str = "never-T0KEN-0123456789";

/// A pinger process with `env`; killed when dropped.
struct Pinger(Child, std::path::PathBuf);

impl Drop for Pinger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Pinger {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

fn start(h: &Harness, toml: &str, port: u16, shard: &str, label: &str) -> Pinger {
    let log = h.dir.path().join(format!("{label}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pinger"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(h.env(toml, &[]))
        .env("PINGER_HTTP_PORT", port.to_string())
        .env("PINGER_SHARD", shard)
        .env("RUST_LOG", "debug,sqlx=warn,hyper=info,reqwest=info")
        .current_dir(h.dir.path())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    Pinger(child, log)
}

async fn post(port: u16, token: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/heartbeat/{token}"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn entry(name: &str, token: &str) -> String {
    format!(
        "[[api]]\nname = \"{name}\"\nkind = \"heartbeat\"\ntoken = \"{token}\"\n\
         interval = \"1s\"\ngrace = \"1s\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_on_time_late_and_missing() {
    let h = Harness::new().await;
    let toml = [
        entry("on-time", ON_TIME),
        entry("stops", STOPS),
        entry("never", NEVER),
    ]
    .concat();
    let port = apimon_testkit::procs::free_port();
    let pinger = start(&h, &toml, port, "0/1", "pinger");
    let up = wait_until(Duration::from_secs(30), || async {
        post(port, STOPS).await == 200
    })
    .await;
    assert!(up, "the pinger did not take heartbeats:\n{}", pinger.log());
    // A wrong token and a GET get nothing.
    assert_eq!(post(port, "not-a-token-000000000").await, 404);
    let get = reqwest::get(format!("http://127.0.0.1:{port}/heartbeat/{ON_TIME}"))
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 405);

    // `on-time` beats every 400 ms for 5 s; `stops` never again; `never`
    // never did.
    for _ in 0..13 {
        assert_eq!(post(port, ON_TIME).await, 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let on_time = h.rows("on-time").await;
    assert!(on_time.len() >= 3, "{on_time:?}");
    assert!(on_time.iter().all(|r| r.success), "{on_time:?}");
    assert!(
        on_time
            .iter()
            .filter_map(|r| r.response_time_ms)
            .all(|ms| (300.0..1500.0).contains(&ms)),
        "the period between heartbeats: {on_time:?}"
    );
    assert_eq!(on_time[0].url, "heartbeat://pinger/heartbeat/REDACTED");

    // `stops`: successes while its one heartbeat was within 1 s + 1 s,
    // then failed checks.
    let stops = h.rows("stops").await;
    let last = stops.last().unwrap();
    assert!(!last.success, "{stops:?}");
    assert_eq!(last.error_kind.as_deref(), Some("missed"));
    assert!(
        last.error_message
            .as_deref()
            .unwrap()
            .starts_with("no heartbeat for "),
        "{last:?}"
    );
    // `never`: nothing during the first 2 s of watching, failures after.
    let never = h.rows("never").await;
    assert!(!never.is_empty());
    assert!(never.iter().all(|r| !r.success), "{never:?}");
    assert!(never[0]
        .error_message
        .as_deref()
        .unwrap()
        .starts_with("no heartbeat received yet"));

    // The tokens are secrets: in no row and no log line.
    let log = pinger.log();
    for token in [ON_TIME, STOPS, NEVER] {
        assert!(!log.contains(token), "token in the log");
    }
    let (found, _) = apimon_testkit::scan::columns_holding(&h.pool, ON_TIME).await;
    assert!(found.is_empty(), "token stored in {found:?}");
}

/// Behind the shard split: each replica checks only its share, but takes
/// every heartbeat; the owner of the endpoint sees those the other got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_received_by_any_replica_reaches_the_endpoints_owner() {
    let h = Harness::new().await;
    let toml = entry("nightly", ON_TIME);
    let owner = (0..2u32)
        .find(|i| {
            Shard {
                index: *i,
                count: 2,
            }
            .owns("nightly")
        })
        .unwrap();
    let other = 1 - owner;
    let (p_owner, p_other) = (
        apimon_testkit::procs::free_port(),
        apimon_testkit::procs::free_port(),
    );
    let a = start(&h, &toml, p_owner, &format!("{owner}/2"), "owner");
    let b = start(&h, &toml, p_other, &format!("{other}/2"), "other");
    // Every heartbeat goes to the replica that does not own the endpoint.
    let up = wait_until(Duration::from_secs(30), || async {
        post(p_other, ON_TIME).await == 200
    })
    .await;
    assert!(up, "{}", b.log());
    for _ in 0..10 {
        assert_eq!(post(p_other, ON_TIME).await, 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let rows = h.rows("nightly").await;
    assert!(rows.len() >= 2, "owner log:\n{}", a.log());
    assert!(rows.iter().all(|r| r.success), "{rows:?}");
    let beats: i64 = sqlx::query_scalar("SELECT beats FROM heartbeats WHERE api_name = 'nightly'")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(beats, 11);
}
