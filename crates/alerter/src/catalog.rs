//! The metrics the alerter exports on `/metrics`: their `# HELP` text, and
//! every counter registered at 0 at start, so that a scrape right after
//! start shows them all and `rate()` has a first point.

use crate::config::Channels;

/// What an incident notification is about (see `dispatch::Event`).
const EVENTS: [&str; 3] = ["open", "reminder", "resolve"];
/// What became of a delivery attempt.
const STATES: [&str; 3] = ["sent", "retrying", "failed"];

/// Describes the alerter's metrics and sets its counters to 0 for the
/// configured channels (call once the recorder is installed; a no-op
/// without one).
pub fn register(channels: &Channels) {
    apimon_core::health::describe_common();
    metrics::describe_counter!(
        "apimon_incident_notifications_total",
        "Incident notifications queued, by event (open, reminder, resolve)"
    );
    metrics::describe_counter!(
        "apimon_notifications_total",
        "Delivery attempts, by channel and state (sent, retrying, failed)"
    );
    for event in EVENTS {
        metrics::counter!("apimon_incident_notifications_total", "event" => event).absolute(0);
    }
    for channel in channels.names() {
        for state in STATES {
            metrics::counter!("apimon_notifications_total", "channel" => channel, "state" => state)
                .absolute(0);
        }
    }
}
