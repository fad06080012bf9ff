-- Grafana's role reads what the dashboard shows, and nothing else.
--
-- 20261125000003 gave apimon_grafana SELECT on every table, and on every
-- table created later: it could read the endpoints' URLs (which held their
-- keys), the checks' error messages, the outbox (bodies, payloads, delivery
-- errors) and the models. Now it gets SELECT on the columns that
-- grafana/dashboards/api-monitoring.json queries, per column, and no
-- default privilege: a new table or column is invisible to Grafana until a
-- migration grants it (crates/core/tests/grafana.rs checks both ways: every
-- dashboard query runs as the role, and the role reads no column the
-- dashboard does not name).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'apimon_grafana') THEN
        -- Table privileges, and with them every column privilege.
        REVOKE ALL ON ALL TABLES IN SCHEMA public FROM apimon_grafana;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM apimon_grafana;
        -- TimescaleDB copied the old grant to the chunks, which can be read
        -- directly; reads through a hypertable do not need them.
        IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '_timescaledb_internal') THEN
            REVOKE ALL ON ALL TABLES IN SCHEMA _timescaledb_internal FROM apimon_grafana;
        END IF;

        -- The API variable.
        GRANT SELECT (api_name) ON api_endpoints TO apimon_grafana;
        -- Response time, success rate, detection lag. On TimescaleDB a
        -- grant on a compressed hypertable is copied to its compressed
        -- table, whose columns differ: a per-column grant fails there
        -- (undefined_column), and the role gets the table instead. Its
        -- other columns are the URL, stored redacted (below), the status
        -- code, size and the failure's kind and message, which never hold
        -- the URL.
        BEGIN
            GRANT SELECT ("timestamp", api_name, response_time_ms, success, ingested_at)
                ON api_metrics TO apimon_grafana;
        EXCEPTION WHEN undefined_column THEN
            GRANT SELECT ON api_metrics TO apimon_grafana;
        END;
        -- Anomaly counts, scores and the list of recent anomalies.
        GRANT SELECT ("timestamp", api_name, response_time_ms, anomaly_score, severity, details,
                      detected_at)
            ON anomalies TO apimon_grafana;
        -- Open and recent incidents, their annotations, APIs down now.
        GRANT SELECT (api_name, kind, state, started_at, recovered_at, resolved_at, peak_severity,
                      reason, flaps, silenced)
            ON incidents TO apimon_grafana;
        -- Alerts sent: a count, never what was sent or the delivery errors.
        GRANT SELECT (kind, state, dedup_key, created_at) ON notifications TO apimon_grafana;
    END IF;
END
$$;

-- The URLs stored so far held their keys: userinfo, query values. The
-- pinger now stores them redacted (apimon_core::redact); this is the same
-- redaction in SQL, applied once to what is already stored: no userinfo,
-- no fragment, each query value replaced by REDACTED (names kept; a
-- parameter without `=` becomes REDACTED).
CREATE OR REPLACE FUNCTION apimon_redact_url(u text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    WITH parts AS (
        SELECT split_part(split_part(u, '#', 1), '?', 1) AS base,
               CASE WHEN position('?' IN split_part(u, '#', 1)) > 0
                    THEN substr(split_part(u, '#', 1), position('?' IN split_part(u, '#', 1)) + 1)
               END AS query
    )
    -- The userinfo: up to the last @ of the authority, which starts after
    -- `scheme:` and its slashes, or at the start without them.
    SELECT CASE WHEN base ~ '^[A-Za-z][A-Za-z0-9+.-]*:[/\\]+'
                THEN regexp_replace(base, '^([A-Za-z][A-Za-z0-9+.-]*:[/\\]+)[^/\\]*@', '\1')
                ELSE regexp_replace(base, '^[^/\\]*@', '')
           END
           || CASE WHEN query IS NULL THEN '' ELSE '?' || coalesce((
                  SELECT string_agg(
                             CASE WHEN position('=' IN p) = 0 THEN 'REDACTED'
                                  WHEN position('=' IN p) = length(p) THEN p
                                  ELSE split_part(p, '=', 1) || '=REDACTED'
                             END, '&' ORDER BY n)
                  FROM unnest(string_to_array(query, '&')) WITH ORDINALITY AS q(p, n)
                  WHERE p <> ''), '')
              END
    FROM parts
$$;

-- Only the rows that can hold a secret (an @, a query or a fragment).
UPDATE api_endpoints SET url = apimon_redact_url(url) WHERE url ~ '[@?#]';
UPDATE api_metrics SET url = apimon_redact_url(url) WHERE url ~ '[@?#]';
