-- Anomalies take less room (docs/storage.md). About 10% of checks become
-- anomalies; a row took about 600 bytes, 255 of them the feature values as
-- JSON with their names. Anomalies are evidence for incidents and
-- dashboard material, and the feature values are for explaining and
-- investigating the severe ones:
--
-- * `feature_values`: the eight values as real[] (float4, about 7
--   significant digits; 53 bytes on disk) in the order of
--   apimon_core::features::FEATURE_NAMES: [1] rt, [2] rolling_mean,
--   [3] rolling_std, [4] z_score, [5] pct_deviation, [6] rate_of_change,
--   [7] hour, [8] weekday. Written for the high and critical anomalies the
--   forest scored; NULL for failed checks (scored by rule) and for medium
--   anomalies, whose explanation is `details`. Every feature is a function
--   of the API's api_metrics rows and can be computed again from them
--   (apimon_core::features::compute_series).
-- * `features` (JSON by name) is no longer written. Rows from before this
--   migration keep it, so a large table is not rewritten; read both with
--   coalesce(feature_values, anomaly_features_from_json(features)). After
--   RETENTION_DAYS no row has it and a later migration can drop it.
--
-- Plain ALTER TABLE ADD COLUMN (nullable, no default) and a function: the
-- same on plain PostgreSQL and on TimescaleDB hypertables, and instant.

ALTER TABLE anomalies ADD COLUMN IF NOT EXISTS feature_values real[];

-- A `features` JSON object as written before this migration, as
-- `feature_values`; NULL when a feature is missing from it.
CREATE OR REPLACE FUNCTION anomaly_features_from_json(f jsonb) RETURNS real[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE
        WHEN f ?& ARRAY['rt', 'rolling_mean', 'rolling_std', 'z_score', 'pct_deviation',
                        'rate_of_change', 'hour', 'weekday']
        THEN ARRAY[(f->>'rt')::real, (f->>'rolling_mean')::real, (f->>'rolling_std')::real,
                   (f->>'z_score')::real, (f->>'pct_deviation')::real,
                   (f->>'rate_of_change')::real, (f->>'hour')::real, (f->>'weekday')::real]
    END
$$;
