#!/usr/bin/env bash
# Smoke test of the Docker image and the whole Compose stack. Run by hand
# where a Docker engine and Compose 2.24+ are available:
#
#   scripts/smoke.sh
#
# 1. builds the image (docker compose build: the repo's Dockerfile);
# 2. starts the stack under its own project name (apimon-smoke: its own
#    containers, network and volumes; no host port published; the
#    project's .env is not read) with scripts/smoke/compose.smoke.yml,
#    whose apis.toml checks the stack's own services every second plus
#    one endpoint that refuses connections;
# 3. waits for every health check;
# 4. checks that rows flow into api_metrics, that a model is trained, that
#    anomalies are written (critical ones for the refused endpoint), that a
#    `down` incident opens and the alerter handles it, that the database
#    runs TimescaleDB with hypertables, that Grafana answers, and that no
#    container restarted;
# 5. prints the image size;
# 6. removes everything it started (down -v), on success and on failure.
#
# Exit status 0 only when every check passed. Settings (environment):
#   SMOKE_PROJECT       Compose project name (default apimon-smoke)
#   SMOKE_WAIT_TIMEOUT  seconds for the health checks (default 300)
#   SMOKE_DATA_TIMEOUT  seconds for each data check (default 180)
#   SMOKE_NO_BUILD=1    skip the build (use the existing apimon:latest)
#   SMOKE_KEEP=1        leave the stack running at the end (debugging;
#                       remove it with the `down` command it prints)
# The image built is tagged apimon:latest, as `docker compose build` of the
# real stack tags it.
set -Eeuo pipefail

cd "$(dirname "$0")/.."

PROJECT=${SMOKE_PROJECT:-apimon-smoke}
WAIT_TIMEOUT=${SMOKE_WAIT_TIMEOUT:-300}
DATA_TIMEOUT=${SMOKE_DATA_TIMEOUT:-180}
IMAGE=apimon:latest
REFUSED_API=smoke-refused
HEALTHY_APIS="'smoke-detector-healthz','smoke-alerter-metrics','smoke-pinger-healthz','smoke-grafana-health'"

# Only the smoke files decide the stack's settings: nothing from the
# caller's shell (the project's .env is replaced by --env-file).
unset COMPOSE_FILE COMPOSE_PROJECT_NAME COMPOSE_PROFILES COMPOSE_ENV_FILES \
    DB_NAME DB_USER DB_PASS GRAFANA_DB_PASSWORD GRAFANA_ADMIN_USER GRAFANA_ADMIN_PASSWORD \
    PINGER_HTTP_PORT DETECTOR_HTTP_PORT ALERTER_HTTP_PORT
compose_args=(-p "$PROJECT" --env-file scripts/smoke/smoke.env
    -f docker-compose.yml -f scripts/smoke/compose.smoke.yml)
compose() { docker compose "${compose_args[@]}" "$@"; }

say() { echo "smoke: $*"; }
passed=0
pass() {
    passed=$((passed + 1))
    echo "smoke: PASS: $*"
}

diagnose() {
    echo "smoke: ---- docker compose ps -a ----" >&2
    compose ps -a >&2 || true
    local services=("$@") s
    if [ ${#services[@]} -eq 0 ]; then
        mapfile -t services < <(compose config --services 2>/dev/null)
    fi
    for s in "${services[@]}"; do
        echo "smoke: ---- logs of $s (last 60 lines) ----" >&2
        compose logs --no-color --tail 60 "$s" >&2 || true
    done
}

fail() {
    echo "smoke: FAIL: $1" >&2
    shift
    diagnose "$@"
    exit 1
}

teardown() {
    local rc=$?
    trap - EXIT
    if [ "${SMOKE_KEEP:-0}" = 1 ]; then
        say "SMOKE_KEEP=1: the stack is left running; remove it with:"
        say "  docker compose ${compose_args[*]} down -v --remove-orphans"
    else
        say "tearing down (docker compose -p $PROJECT down -v --remove-orphans)"
        compose down -v --remove-orphans --timeout 20 >/dev/null 2>&1 ||
            echo "smoke: warning: docker compose down failed" >&2
    fi
    if [ "$rc" -eq 0 ]; then
        say "all $passed checks passed"
    else
        echo "smoke: FAILED (exit status $rc) after $passed passed checks" >&2
    fi
    exit "$rc"
}

# psql in the database container; prints the bare value(s).
sql() {
    compose exec -T timescaledb psql -X -v ON_ERROR_STOP=1 -U apimon -d apimon -Atc "$1"
}

# Waits until the query prints a value that is not 0 (or empty); prints it.
wait_sql() {
    local what=$1 query=$2 deadline=$((SECONDS + DATA_TIMEOUT)) v
    while :; do
        v=$(sql "$query" 2>/dev/null || true)
        if [ -n "$v" ] && [ "$v" != 0 ]; then
            echo "$v"
            return 0
        fi
        if [ $SECONDS -ge $deadline ]; then
            echo "smoke: FAIL: $what: none after ${DATA_TIMEOUT}s (last value: '${v:-}')" >&2
            return 1
        fi
        sleep 2
    done
}

command -v docker >/dev/null || { echo "smoke: docker not found" >&2 && exit 1; }
docker compose version >/dev/null 2>&1 || { echo "smoke: docker compose (v2.24+) not found" >&2 && exit 1; }
say "$(docker compose version); Docker engine $(docker version --format '{{.Server.Version}}')"

# A stack left over by an interrupted run goes first.
compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
trap teardown EXIT
# Any other command that fails ends the run too (set -e), saying which.
trap 'echo "smoke: FAIL: line $LINENO: \`$BASH_COMMAND\` failed" >&2' ERR

# Without the buildx plugin, the docker CLI falls back to the classic
# builder by itself; Compose needs to be told. The three services share one
# image: BuildKit builds it once, the classic builder three times in
# parallel, so there they are built one after the other (the second and
# third from the cache).
build_services=()
if ! docker buildx version >/dev/null 2>&1; then
    say "no docker buildx plugin: building with the classic builder (DOCKER_BUILDKIT=0)"
    export DOCKER_BUILDKIT=0
    build_services=(pinger detector alerter)
fi

# 1. The image.
if [ "${SMOKE_NO_BUILD:-0}" = 1 ]; then
    say "SMOKE_NO_BUILD=1: using the existing $IMAGE"
else
    say "building $IMAGE (docker compose build; the first build compiles for 10-20 minutes)"
    build_start=$SECONDS
    if [ ${#build_services[@]} -eq 0 ]; then
        compose build || fail "docker compose build failed"
    else
        for s in "${build_services[@]}"; do
            compose build "$s" || fail "docker compose build $s failed"
        done
    fi
    say "build took $((SECONDS - build_start)) s"
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || fail "no image $IMAGE"
if [ "${SMOKE_NO_BUILD:-0}" = 1 ]; then
    pass "image $IMAGE exists (not rebuilt)"
else
    pass "image $IMAGE built"
fi

# Stand-ins (scripts/smoke/standin-images.sh) say what they are.
for img in debian:bookworm-slim rust:1-bookworm timescale/timescaledb:2.28.3-pg17 grafana/grafana:11.3.1; do
    label=$(docker image inspect "$img" --format '{{index .Config.Labels "apimon.standin"}}' 2>/dev/null || true)
    if [ -n "$label" ]; then
        say "NOTE: $img is a local stand-in, not the Docker Hub image: $label"
    fi
done

# 2 and 3. The stack, healthy.
say "starting the stack (project $PROJECT), waiting up to ${WAIT_TIMEOUT}s for every health check"
up_start=$SECONDS
if ! compose up -d --wait --wait-timeout "$WAIT_TIMEOUT"; then
    bad=()
    while read -r service state health; do
        if [ "$state" != running ] || { [ -n "$health" ] && [ "$health" != healthy ]; }; then
            bad+=("$service")
        fi
    done < <(compose ps -a --format '{{.Service}} {{.State}} {{.Health}}')
    fail "the stack did not become healthy within ${WAIT_TIMEOUT}s (not healthy: ${bad[*]:-unknown})" "${bad[@]}"
fi
pass "every service running and healthy after $((SECONDS - up_start)) s"
compose ps --format 'table {{.Service}}\t{{.Image}}\t{{.Status}}'

# 4. Data.
n1=$(sql "SELECT count(*) FROM api_metrics") || fail "cannot query api_metrics" timescaledb
sleep 5
n2=$(sql "SELECT count(*) FROM api_metrics")
say "api_metrics: $n1 rows, then $n2 rows 5 s later"
[ "$n2" -gt "$n1" ] || fail "api_metrics does not grow ($n1 -> $n2)" pinger
pass "rows flow into api_metrics (+$((n2 - n1)) in 5 s)"
say "checks per API so far:"
sql "SELECT '  ' || api_name || ': ' || count(*) || ' checks, ' || count(*) FILTER (WHERE success) || ' successful'
        || coalesce(', failures: ' || string_agg(DISTINCT error_kind, ','), '')
     FROM api_metrics GROUP BY api_name ORDER BY api_name"

say "waiting for a trained model (30 successful checks of an API, then the trainer)"
models=$(wait_sql "models" "SELECT count(*) FROM models WHERE api_name IN ($HEALTHY_APIS)") ||
    fail "no model was trained" detector
pass "models trained: $models"
sql "SELECT '  ' || api_name || ': version ' || version || ', ' || sample_count || ' training rows, trained at ' || trained_at FROM models ORDER BY api_name"

anomalies=$(wait_sql "anomalies" "SELECT count(*) FROM anomalies") || fail "no anomaly was written" detector
critical=$(wait_sql "critical anomalies of $REFUSED_API" \
    "SELECT count(*) FROM anomalies WHERE api_name = '$REFUSED_API' AND severity = 'critical'") ||
    fail "no critical anomaly for the refused endpoint" detector pinger
pass "anomalies written: $anomalies at first look, $critical critical for $REFUSED_API"
sql "SELECT '  ' || api_name || ' ' || severity || ': ' || count(*) FROM anomalies
     GROUP BY api_name, severity ORDER BY api_name, severity"

incident=$(wait_sql "down incident of $REFUSED_API" \
    "SELECT count(*) FROM incidents WHERE api_name = '$REFUSED_API' AND kind = 'down' AND state = 'open'") ||
    fail "no open down incident for the refused endpoint" detector
handled=$(wait_sql "alerter handling the incident" \
    "SELECT count(*) FROM incident_events e JOIN incidents i ON i.id = e.incident_id
      WHERE i.api_name = '$REFUSED_API' AND e.event = 'open' AND e.handled_at IS NOT NULL") ||
    fail "the alerter did not handle the incident's opening" alerter
pass "$incident open down incident for $REFUSED_API, its opening handled by the alerter ($handled event)"
sql "SELECT '  incident ' || i.id || ' ' || i.api_name || ': ' || i.kind || ' ' || i.state || ', opened ' || i.opened_at
            || ', event ' || e.event || ' ' || coalesce(e.outcome, 'pending')
       FROM incidents i JOIN incident_events e ON e.incident_id = i.id ORDER BY e.id"

# The backend.
ts=$(sql "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'") || fail "cannot query pg_extension" timescaledb
[ -n "$ts" ] || fail "the database does not run TimescaleDB (no timescaledb extension)" timescaledb detector
pg=$(sql "SHOW server_version")
say "database: PostgreSQL $pg, TimescaleDB $ts"
hypertables=$(sql "SELECT string_agg(hypertable_name, ', ' ORDER BY hypertable_name)
                     FROM timescaledb_information.hypertables WHERE hypertable_schema = 'public'")
say "hypertables: ${hypertables:-none}"
case ", $hypertables," in
*", api_metrics,"*) ;;
*) fail "api_metrics is not a hypertable" detector pinger ;;
esac
pass "the database runs TimescaleDB $ts and api_metrics is a hypertable"
say "services' backend log lines:"
compose logs --no-color pinger detector alerter 2>/dev/null | grep -E 'schema ready|plain PostgreSQL' | sed 's/^/  /' || true

# Grafana, asked from inside the network (no port is published).
health=$(compose exec -T detector curl -fsS --max-time 5 http://grafana:3000/api/health) ||
    fail "Grafana's /api/health does not answer" grafana
say "grafana /api/health: $(echo "$health" | tr -d '\n ')"
case $health in
*'"database"'*'"ok"'*) ;;
*) fail "Grafana's /api/health does not say the database is ok" grafana ;;
esac
if [ -n "$(docker image inspect grafana/grafana:11.3.1 --format '{{index .Config.Labels "apimon.standin"}}' 2>/dev/null)" ]; then
    pass "Grafana /api/health answers (STAND-IN image, not Grafana: dashboards untested)"
else
    pass "Grafana /api/health answers"
fi

# Nothing crashed and came back.
restarts=""
for id in $(compose ps -aq); do
    n=$(docker inspect "$id" --format '{{.RestartCount}} {{index .Config.Labels "com.docker.compose.service"}}')
    case $n in
    "0 "*) ;;
    *) restarts="$restarts ${n#* } (${n%% *})" ;;
    esac
done
[ -z "$restarts" ] || fail "containers restarted:$restarts"
pass "no container restarted"

n3=$(sql "SELECT count(*) FROM api_metrics")
a3=$(sql "SELECT count(*) FROM anomalies")
m3=$(sql "SELECT count(*) FROM models")
i3=$(sql "SELECT count(*) FROM incidents")
say "final figures: api_metrics $n3 rows, anomalies $a3, models $m3, incidents $i3, $((SECONDS - up_start)) s after start"

# 5. The image size.
size=$(docker image inspect "$IMAGE" --format '{{.Size}}')
say "image $IMAGE: $size bytes = $(awk -v b="$size" 'BEGIN { printf "%.1f MB (%.1f MiB)", b / 1e6, b / 1048576 }')"
