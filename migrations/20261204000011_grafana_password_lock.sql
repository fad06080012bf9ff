-- Services that set the Grafana role's password at the same moment (two
-- detector replicas) made one ALTER ROLE fail with "tuple concurrently
-- updated". The function now takes a transaction-scoped advisory lock first,
-- so concurrent calls run one after the other.
CREATE OR REPLACE FUNCTION apimon_set_grafana_password(secret text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(727364002);
    EXECUTE format('ALTER ROLE apimon_grafana LOGIN PASSWORD %L', secret);
END
$$;
