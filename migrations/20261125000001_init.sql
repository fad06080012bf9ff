-- apimon schema: api_metrics (one row per check) and anomalies (one row per
-- anomalous observation). On TimescaleDB both are hypertables with 1-day
-- chunks and api_metrics is compressed after 7 days; on plain PostgreSQL
-- (>= 14) they are ordinary tables and time_bucket() is defined on date_bin()
-- so that every query of the project runs unchanged on both.

DO $$
BEGIN
    -- CREATE EXTENSION of a TimescaleDB that is installed but not in
    -- shared_preload_libraries ends the session (FATAL), which no handler
    -- catches: look first. The binaries warn with the fix; the schema falls
    -- back to plain tables.
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
       AND (EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
            OR current_setting('shared_preload_libraries') ~ 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'apimon: TimescaleDB is installed but CREATE EXTENSION failed: %', SQLERRM;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
       AND current_setting('server_version_num')::int < 140000 THEN
        RAISE EXCEPTION 'apimon needs PostgreSQL 14 or newer, or TimescaleDB (found %)',
            current_setting('server_version');
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS api_metrics (
    "timestamp"         timestamptz      NOT NULL,
    api_name            text             NOT NULL,
    url                 text             NOT NULL,
    -- NULL when no complete response arrived.
    response_time_ms    double precision,
    status_code         integer,
    success             boolean          NOT NULL,
    response_size_bytes bigint,
    -- timeout, dns, connect, tls, http_status, body, redirect, request
    error_kind          text,
    error_message       text,
    -- When the row was written (the detector's lag is measured from it).
    ingested_at         timestamptz      NOT NULL DEFAULT now()
);
-- The unique key doubles as the (api_name, timestamp DESC) index.
CREATE UNIQUE INDEX IF NOT EXISTS api_metrics_api_name_timestamp_key
    ON api_metrics (api_name, "timestamp" DESC);

CREATE TABLE IF NOT EXISTS anomalies (
    -- Time of the observation, not of the detection.
    "timestamp"      timestamptz      NOT NULL,
    api_name         text             NOT NULL,
    response_time_ms double precision,
    -- scikit-learn convention: below 0 is anomalous, lower is worse.
    anomaly_score    double precision NOT NULL,
    severity         text             NOT NULL CHECK (severity IN ('critical', 'high', 'medium')),
    details          text,
    -- Feature values the model saw, by name.
    features         jsonb,
    -- models.version of the model that scored it.
    model_version    bigint,
    detected_at      timestamptz      NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS anomalies_api_name_timestamp_key
    ON anomalies (api_name, "timestamp" DESC);

-- The endpoints the pinger is configured with, upserted by every pinger at
-- start: the list the detector shards and the dashboards' API variable.
CREATE TABLE IF NOT EXISTS api_endpoints (
    api_name        text        PRIMARY KEY,
    url             text        NOT NULL,
    method          text        NOT NULL,
    interval_ms     bigint      NOT NULL,
    timeout_ms      bigint      NOT NULL,
    expected_status text        NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- One Isolation Forest per API, replaced at each retraining.
CREATE TABLE IF NOT EXISTS models (
    api_name      text             PRIMARY KEY,
    version       bigint           NOT NULL,
    trained_at    timestamptz      NOT NULL,
    sample_count  integer          NOT NULL,
    -- anomaly_score = score_offset - s(x)
    score_offset  double precision NOT NULL,
    -- Training parameters and feature standardisation, as JSON.
    params        jsonb            NOT NULL,
    -- The forest, serialised with postcard.
    forest        bytea            NOT NULL
);

-- The detector's progress: every api_metrics row of an API up to and
-- including last_timestamp has been scored. Moved in the same transaction
-- as the anomalies it produced, so nothing is skipped or scored twice.
CREATE TABLE IF NOT EXISTS detector_watermarks (
    api_name       text        PRIMARY KEY,
    last_timestamp timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE $sql$SELECT create_hypertable('api_metrics', 'timestamp',
            chunk_time_interval => INTERVAL '1 day', if_not_exists => TRUE, migrate_data => TRUE)$sql$;
        EXECUTE $sql$SELECT create_hypertable('anomalies', 'timestamp',
            chunk_time_interval => INTERVAL '1 day', if_not_exists => TRUE, migrate_data => TRUE)$sql$;
        EXECUTE $sql$ALTER TABLE api_metrics SET (timescaledb.compress,
            timescaledb.compress_segmentby = 'api_name',
            timescaledb.compress_orderby = '"timestamp" DESC')$sql$;
        EXECUTE $sql$SELECT add_compression_policy('api_metrics', INTERVAL '7 days', if_not_exists => TRUE)$sql$;
    ELSE
        -- Same signature and origin (Monday 2000-01-03) as TimescaleDB's.
        EXECUTE $sql$CREATE OR REPLACE FUNCTION time_bucket(bucket_width interval, ts timestamptz)
            RETURNS timestamptz LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
            AS 'SELECT date_bin(bucket_width, ts, TIMESTAMPTZ ''2000-01-03 00:00:00+00'')'$sql$;
        -- Time-range scans across all APIs (dashboards); BRIN is cheap to
        -- maintain on append-mostly data.
        EXECUTE 'CREATE INDEX IF NOT EXISTS api_metrics_timestamp_brin ON api_metrics USING brin ("timestamp")';
        EXECUTE 'CREATE INDEX IF NOT EXISTS anomalies_timestamp_idx ON anomalies ("timestamp" DESC)';
    END IF;
END
$$;
