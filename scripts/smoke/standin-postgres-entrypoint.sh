#!/usr/bin/env bash
# Entrypoint of the offline TimescaleDB stand-in (standin-images.sh): what
# the official postgres / timescale images do, as far as docker-compose.yml
# uses it. NOT the official script.
#
# - POSTGRES_PASSWORD (required on first start), POSTGRES_USER (default
#   postgres, a superuser), POSTGRES_DB (default POSTGRES_USER);
# - data in $PGDATA (/var/lib/postgresql/data, a volume), made by initdb on
#   the first start only;
# - during that initialisation a temporary server listens on the Unix
#   socket only (listen_addresses=''), so `pg_isready -h 127.0.0.1` fails
#   until the real server starts;
# - shared_preload_libraries = 'timescaledb', the extension created in
#   postgres, template1 and POSTGRES_DB (as the timescale image does);
# - local and loopback connections trusted (initdb's default, as in the
#   official image), every other TCP connection by scram-sha-256 password;
# - then postgres in the foreground as the postgres user, on every address.
set -Eeuo pipefail

PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA

if [ "${1:-postgres}" != postgres ]; then
    exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

log() { echo "standin-entrypoint: $*"; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set on the first start}"
    POSTGRES_USER=${POSTGRES_USER:-postgres}
    POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
    log "initialising $PGDATA (PostgreSQL 15 + TimescaleDB stand-in)"
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" >/dev/null
    {
        echo "listen_addresses = '*'"
        echo "shared_preload_libraries = 'timescaledb'"
        echo "timescaledb.telemetry_level = off"
    } >>"$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"

    # The temporary server: Unix socket only.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc -q)
    if [ "$POSTGRES_DB" != postgres ]; then
        "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    for db in postgres template1 "$POSTGRES_DB"; do
        "${psql[@]}" --dbname "$db" -c 'CREATE EXTENSION IF NOT EXISTS timescaledb CASCADE;'
    done
    for f in /docker-entrypoint-initdb.d/*; do
        # shellcheck source=/dev/null
        case $f in
        *.sh) log "running $f" && . "$f" ;;
        *.sql) log "running $f" && "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    log "initialisation done; starting the server"
fi

exec postgres -D "$PGDATA"
