-- A read-only role for Grafana. It is created without a password (it cannot
-- log in) and the services give it GRAFANA_DB_PASSWORD at start. Roles are
-- cluster-wide: it may exist already (another database of the cluster), and
-- a user without CREATEROLE gets a warning instead of a failed migration.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'apimon_grafana') THEN
        BEGIN
            CREATE ROLE apimon_grafana NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE WARNING 'apimon: cannot create role apimon_grafana (needs CREATEROLE); Grafana must use another role';
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'apimon_grafana') THEN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO apimon_grafana', current_database());
        GRANT USAGE ON SCHEMA public TO apimon_grafana;
        GRANT SELECT ON ALL TABLES IN SCHEMA public TO apimon_grafana;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO apimon_grafana;
    END IF;
END
$$;

-- Sets the role's password from a bound parameter, so that the password
-- never appears in a statement text (client or server logs).
CREATE OR REPLACE FUNCTION apimon_set_grafana_password(secret text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER ROLE apimon_grafana LOGIN PASSWORD %L', secret);
END
$$;
