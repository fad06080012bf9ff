-- Heartbeats pushed to `POST /heartbeat/<token>` (kind = "heartbeat"
-- endpoints): the last two arrival times of each. Whichever pinger replica
-- receives a heartbeat records it here; the replica whose shard owns the
-- endpoint reads it on the endpoint's schedule and writes its api_metrics
-- rows. One row per endpoint, so it needs no retention.
CREATE TABLE IF NOT EXISTS heartbeats (
    api_name    text        PRIMARY KEY,
    last_at     timestamptz NOT NULL,
    previous_at timestamptz,
    beats       bigint      NOT NULL DEFAULT 1
);
