//! The metrics the detector exports on `/metrics`: their `# HELP` text, and
//! every counter registered at 0 at start, so that a scrape right after
//! start shows them all and `rate()` has a first point.

/// Severities an anomaly can have.
const SEVERITIES: [&str; 3] = ["medium", "high", "critical"];
/// Kinds of incident and the changes the detector records.
const KINDS: [&str; 2] = ["down", "slow"];
const CHANGES: [&str; 4] = ["opened", "recovering", "reopened", "resolved"];

/// Describes the detector's metrics and sets its counters to 0 (call once
/// the recorder is installed; a no-op without one).
pub fn register() {
    apimon_core::health::describe_common();
    metrics::describe_counter!("apimon_rows_scored_total", "Checks scored");
    metrics::describe_counter!("apimon_anomalies_total", "Anomalies written, by severity");
    metrics::describe_counter!(
        "apimon_incident_changes_total",
        "Incident changes, by kind (down, slow) and change (opened, recovering, reopened, resolved)"
    );
    metrics::describe_counter!("apimon_models_trained_total", "Models trained");
    metrics::describe_histogram!("apimon_training_seconds", "Time to train one model");
    metrics::describe_histogram!(
        "apimon_detection_lag_seconds",
        "From a check's arrival in api_metrics to its score's commit"
    );
    metrics::counter!("apimon_rows_scored_total").absolute(0);
    metrics::counter!("apimon_models_trained_total").absolute(0);
    for severity in SEVERITIES {
        metrics::counter!("apimon_anomalies_total", "severity" => severity).absolute(0);
    }
    for kind in KINDS {
        for change in CHANGES {
            metrics::counter!("apimon_incident_changes_total", "kind" => kind, "change" => change)
                .absolute(0);
        }
    }
}
