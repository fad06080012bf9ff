//! Counters and the per-round summary line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// What happened since start, and within the current summary period.
#[derive(Debug, Default)]
pub struct Stats {
    checks: AtomicU64,
    failures: AtomicU64,
    written: AtomicU64,
    /// INSERT statements that wrote rows.
    batches: AtomicU64,
    dropped: AtomicU64,
    period: Mutex<Period>,
}

#[derive(Debug, Default)]
struct Period {
    checks: u64,
    failures: u64,
    /// Response times (ms) of the successful checks.
    response_ms: Vec<f64>,
    /// How late each check started after it was due (ms).
    late_ms: Vec<f64>,
}

/// One summary period, as logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub checks: u64,
    pub failures: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub late_p99_ms: f64,
}

impl Stats {
    pub fn record(&self, response_ms: Option<f64>, success: bool, late: Duration) {
        self.checks.fetch_add(1, Ordering::Relaxed);
        if !success {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let mut p = self.period.lock().unwrap_or_else(|e| e.into_inner());
        p.checks += 1;
        if !success {
            p.failures += 1;
        }
        if let (Some(ms), true) = (response_ms, success) {
            p.response_ms.push(ms);
        }
        p.late_ms.push(late.as_secs_f64() * 1000.0);
    }

    /// One batch statement wrote `n` rows.
    pub fn add_written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    pub fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Ends the current period and returns its summary.
    pub fn take_period(&self) -> Summary {
        let mut p = std::mem::take(&mut *self.period.lock().unwrap_or_else(|e| e.into_inner()));
        Summary {
            checks: p.checks,
            failures: p.failures,
            p50_ms: percentile(&mut p.response_ms, 0.50),
            p95_ms: percentile(&mut p.response_ms, 0.95),
            late_p99_ms: percentile(&mut p.late_ms, 0.99),
        }
    }
}

/// Nearest-rank percentile (`q` in 0..=1); 0 for an empty set.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = (q * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.5), 50.0);
        assert_eq!(percentile(&mut v, 0.95), 95.0);
        assert_eq!(percentile(&mut v, 0.99), 99.0);
        assert_eq!(percentile(&mut v, 1.0), 100.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
        assert_eq!(percentile(&mut [7.0], 0.99), 7.0);
    }

    #[test]
    fn a_period_counts_checks_and_failures_then_resets() {
        let s = Stats::default();
        s.record(Some(10.0), true, Duration::from_millis(1));
        s.record(Some(30.0), true, Duration::from_millis(3));
        s.record(None, false, Duration::from_millis(2));
        let p = s.take_period();
        assert_eq!((p.checks, p.failures), (3, 1));
        assert_eq!((p.p50_ms, p.p95_ms), (10.0, 30.0));
        assert_eq!(p.late_p99_ms, 3.0);
        assert_eq!(s.take_period().checks, 0);
        assert_eq!(s.checks(), 3);
    }
}
