-- A no-op, kept so that the migration history stays complete: 0002
-- (20261125000002_alerter.sql) already creates anomalies_detected_at_idx,
-- so IF NOT EXISTS makes this statement do nothing. It was written as a
-- speed-up, and none came from it. (The alerter's reads by detected_at are
-- served by 0002's index.) Its text changed after release; see
-- `db::accept_reworded` for how databases that applied the old text accept
-- the new one.
CREATE INDEX IF NOT EXISTS anomalies_detected_at_idx ON anomalies (detected_at);
