//! The metrics the pinger exports on `/metrics`: their `# HELP` text, and
//! every counter registered at 0 at start, so that a scrape right after
//! start shows them all and `rate()` has a first point.

use apimon_core::apis::Endpoint;

/// Describes the pinger's metrics and sets its counters to 0 (call once the
/// recorder is installed; a no-op without one).
pub fn register(endpoints: &[Endpoint]) {
    apimon_core::health::describe_common();
    metrics::describe_counter!(
        "apimon_checks_total",
        "Checks made, by API and outcome (ok, or the kind of failure)"
    );
    metrics::describe_histogram!(
        "apimon_response_time_seconds",
        "Response time of the checks that got an answer"
    );
    metrics::describe_histogram!(
        "apimon_check_late_seconds",
        "How late each check started after its scheduled time"
    );
    metrics::describe_gauge!(
        "apimon_buffered_rows",
        "Results held in memory, not yet written to the database"
    );
    metrics::describe_counter!("apimon_rows_written_total", "Rows written to api_metrics");
    metrics::describe_counter!(
        "apimon_rows_dropped_total",
        "Rows dropped because the buffer was full while the database was unreachable"
    );
    for ep in endpoints {
        metrics::counter!("apimon_checks_total", "api" => ep.name.clone(), "outcome" => "ok")
            .absolute(0);
    }
    metrics::counter!("apimon_rows_written_total").absolute(0);
    metrics::counter!("apimon_rows_dropped_total").absolute(0);
    metrics::gauge!("apimon_buffered_rows").set(0.0);
}
