-- Issue 14: every kind of check through one pipeline, and TLS expiry.
--
-- The kind of each endpoint (http, tcp, dns, heartbeat): dashboards and
-- the status report show it. Rows registered before it are HTTP checks.
ALTER TABLE api_endpoints ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'http'
    CHECK (kind IN ('http', 'tcp', 'dns', 'heartbeat'));

-- The notAfter of the leaf certificate the check's TLS session presented
-- (https checks that completed the handshake; NULL otherwise). Nullable
-- and without a default: a compressed hypertable takes such a column.
ALTER TABLE api_metrics ADD COLUMN IF NOT EXISTS tls_expires_at timestamptz;

-- A certificate incident opens TLS_EXPIRY_WARN_DAYS before the expiry
-- (severity high) and again, critical, TLS_EXPIRY_CRITICAL_DAYS before it:
-- the warning is then closed with resolution 'escalated' (no resolve
-- notification: the critical incident replaces it).
ALTER TABLE incidents DROP CONSTRAINT IF EXISTS incidents_kind_check;
ALTER TABLE incidents ADD CONSTRAINT incidents_kind_check
    CHECK (kind IN ('down', 'slow', 'certificate'));
ALTER TABLE incidents DROP CONSTRAINT IF EXISTS incidents_resolution_check;
ALTER TABLE incidents ADD CONSTRAINT incidents_resolution_check
    CHECK (resolution IN ('retired', 'escalated'));

-- Grafana shows the kind and the days left (see 20261203000008 for why a
-- per-column grant on api_metrics may fail on TimescaleDB: the role then
-- reads that table whole already).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'apimon_grafana') THEN
        GRANT SELECT (kind, retired_at) ON api_endpoints TO apimon_grafana;
        BEGIN
            GRANT SELECT (tls_expires_at) ON api_metrics TO apimon_grafana;
        EXCEPTION WHEN undefined_column THEN
            GRANT SELECT ON api_metrics TO apimon_grafana;
        END;
    END IF;
END
$$;
