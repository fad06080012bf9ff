//! What a newcomer meets first, with the real `detector` binary: a database
//! that refuses our settings, one that cannot be reached, SIGTERM, and
//! `/metrics` right after start.

use apimon_testkit::first_contact;

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_or_a_missing_database_exits_2_naming_database_url_without_the_password() {
    first_contact::refused_settings_exit_2("detector", "DETECTOR_HTTP_PORT").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_answers_503_with_the_reason_while_the_database_cannot_be_reached() {
    first_contact::healthz_503_while_connecting("detector").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_is_logged_once_and_metrics_have_help_and_zero_counters_from_start() {
    first_contact::sigterm_once_and_metrics_from_start("detector", &COUNTERS_AT_ZERO).await;
}

/// Samples of a detector with nothing to score yet.
const COUNTERS_AT_ZERO: [&str; 5] = [
    "apimon_rows_scored_total",
    "apimon_models_trained_total",
    "apimon_anomalies_total{severity=\"critical\"}",
    "apimon_incident_changes_total{kind=\"down\",change=\"opened\"}",
    "apimon_incident_changes_total{kind=\"slow\",change=\"resolved\"}",
];
