-- Endpoints removed from apis.toml are retired, not deleted: their history
-- stays, but they are no longer reported, trained or scored, and are never
-- "down". The pinger sets `retired_at` on every endpoint missing from its
-- file when it registers the file's endpoints, and clears it when an
-- endpoint comes back. A retired endpoint's row is deleted with its last
-- checks, RETENTION_DAYS after its retirement.
ALTER TABLE api_endpoints ADD COLUMN IF NOT EXISTS retired_at timestamptz;

-- How an incident ended when it did not recover: 'retired' when its
-- endpoint was removed from the configuration while it was open. NULL for
-- an incident that recovered (or is not resolved).
ALTER TABLE incidents ADD COLUMN IF NOT EXISTS resolution text
    CHECK (resolution IN ('retired'));
