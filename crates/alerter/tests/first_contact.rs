//! What a newcomer meets first, with the real `alerter` binary: a database
//! that refuses our settings, one that cannot be reached, SIGTERM, and
//! `/metrics` right after start.

use apimon_testkit::first_contact;

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_or_a_missing_database_exits_2_naming_database_url_without_the_password() {
    first_contact::refused_settings_exit_2("alerter", "ALERTER_HTTP_PORT").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_answers_503_with_the_reason_while_the_database_cannot_be_reached() {
    first_contact::healthz_503_while_connecting("alerter").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_is_logged_once_and_metrics_have_help_and_zero_counters_from_start() {
    first_contact::sigterm_once_and_metrics_from_start("alerter", &COUNTERS_AT_ZERO).await;
}

/// Samples of an alerter with nothing to send yet.
const COUNTERS_AT_ZERO: [&str; 3] = [
    "apimon_incident_notifications_total{event=\"open\"}",
    "apimon_incident_notifications_total{event=\"reminder\"}",
    "apimon_incident_notifications_total{event=\"resolve\"}",
];
