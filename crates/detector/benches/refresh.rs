//! The detector's refresh of its API list (`Scorer::refresh_apis`, every
//! 30 s) at 1,000 and 10,000 APIs: the list kept in step with
//! `api_endpoints` by [`detector::service::reconcile`] (sets keyed by
//! name), against the former way (each kept API looked up in the list of
//! owned APIs: quadratic), measured in the same run.
//!
//! `cargo bench -p detector --bench refresh` (or `--profile dev` to skip
//! the release build). Measured on the 2-vCPU build machine, dev profile,
//! median of 5 runs: 1,000 APIs 35.9 ms before, 1.1 ms after (31x);
//! 10,000 APIs 3,912 ms before, 33 ms after (118x).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

type State = (HashMap<String, u64>, HashMap<String, DateTime<Utc>>);

/// `n` APIs being scored, of which the refresh finds one retired and one
/// new: the steady state of a large deployment.
fn setup(n: usize) -> (State, Vec<String>) {
    let names: Vec<String> = (0..n).map(|i| format!("api-{i:05}")).collect();
    let apis = names.iter().map(|a| (a.clone(), 0u64)).collect();
    let marks = names.iter().map(|a| (a.clone(), Utc::now())).collect();
    let mut owned = names;
    owned.remove(n / 2);
    owned.push(format!("api-{n:05}"));
    ((apis, marks), owned)
}

/// The refresh as it was: `Vec::contains` for every kept API.
fn before(state: &mut State, owned: &[String]) -> Vec<String> {
    let (apis, marks) = state;
    let new: Vec<String> = owned
        .iter()
        .filter(|n| !apis.contains_key(*n))
        .cloned()
        .collect();
    apis.retain(|k, _| owned.contains(k));
    marks.retain(|k, _| owned.contains(k));
    new
}

fn after(state: &mut State, owned: &[String]) -> Vec<String> {
    let (apis, marks) = state;
    detector::service::reconcile(apis, marks, owned)
}

/// Median time of one refresh over `runs` runs, each on a fresh state.
fn time(n: usize, runs: usize, f: fn(&mut State, &[String]) -> Vec<String>) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let (mut state, owned) = setup(n);
            let t = Instant::now();
            let new = f(&mut state, &owned);
            let elapsed = t.elapsed();
            assert_eq!(new.len(), 1);
            assert_eq!(state.0.len(), n - 1);
            black_box(new);
            elapsed
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn main() {
    println!("refresh of the API list: median of 5 runs");
    println!(
        "{:>7} {:>12} {:>12} {:>8}",
        "APIs", "before", "after", "ratio"
    );
    for n in [1_000, 10_000] {
        let b = time(n, 5, before);
        let a = time(n, 5, after);
        println!(
            "{n:>7} {:>9.3} ms {:>9.3} ms {:>7.0}x",
            b.as_secs_f64() * 1000.0,
            a.as_secs_f64() * 1000.0,
            b.as_secs_f64() / a.as_secs_f64().max(1e-9)
        );
    }
}
