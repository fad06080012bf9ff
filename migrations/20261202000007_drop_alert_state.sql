-- The per-anomaly alerts and their timestamp cursor were replaced by
-- incidents and the incident_events queue (20261201000005): their state
-- tables are no longer read or written.
DROP TABLE IF EXISTS alert_state;
DROP TABLE IF EXISTS alerter_progress;
