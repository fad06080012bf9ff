#!/usr/bin/env bash
# ONLY for machines WITHOUT Docker Hub access. With Docker Hub, do not run
# this: scripts/smoke.sh uses the real images.
#
# Builds local stand-ins, under the real names, for the four base images
# the stack needs, so that scripts/smoke.sh can run offline (a Debian
# mirror is still needed, and crates.io for the image build):
#
#   debian:bookworm-slim      debootstrap --variant=minbase of bookworm, with
#                             the official image's apt and dpkg settings
#                             (no apt caches, no docs, man pages, locales)
#   rust:1-bookworm           that + gcc, libc6-dev, pkg-config and THIS
#                             HOST's Rust toolchain (rustup's default one)
#   timescale/timescaledb:2.28.3-pg17
#                             Debian's PostgreSQL 15 (NOT 17: bookworm has
#                             only 15) + TimescaleDB files already built and
#                             installed on this host for PostgreSQL 15, with
#                             an entrypoint that does what the official image
#                             does for docker-compose.yml (POSTGRES_USER,
#                             POSTGRES_PASSWORD, POSTGRES_DB; initdb on first
#                             start with a server on the Unix socket only)
#   grafana/grafana:11.3.1    NOT Grafana: python3 answering /api/health on
#                             :3000, so that the stack starts
#
# Every stand-in carries the label apimon.standin (scripts/smoke.sh says so
# when it sees one). An image that already exists is kept unless
# STANDIN_FORCE=1 (with `all`: every one; else only the one named).
# Rebuilding debian or rust invalidates the build cache of the apimon
# image: the next `docker compose build` compiles everything again.
#
# Usage: scripts/smoke/standin-images.sh [debian|rust|timescaledb|grafana|all]
#
# Settings (environment):
#   DEBIAN_MIRROR      default http://deb.debian.org/debian
#   STANDIN_WORKDIR    scratch directory (default: a temporary one)
#   STANDIN_EXTRA_CA   extra CA certificates (*.crt) trusted by the Rust
#                      stand-in, for a TLS-intercepting proxy in front of
#                      crates.io (default: /usr/local/share/ca-certificates)
#   RUSTUP_HOME, CARGO_HOME  the host toolchain (default ~/.rustup, ~/.cargo)
#   PG_LIBDIR, PG_SHAREDIR   where TimescaleDB is installed on the host
#                      (default /usr/lib/postgresql/15/lib and
#                      /usr/share/postgresql/15/extension)
#   TIMESCALEDB_VERSION      default 2.28.3
set -Eeuo pipefail

DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
STANDIN_EXTRA_CA=${STANDIN_EXTRA_CA:-/usr/local/share/ca-certificates}
RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
PG_LIBDIR=${PG_LIBDIR:-/usr/lib/postgresql/15/lib}
PG_SHAREDIR=${PG_SHAREDIR:-/usr/share/postgresql/15/extension}
TIMESCALEDB_VERSION=${TIMESCALEDB_VERSION:-2.28.3}

DEBIAN_IMAGE=debian:bookworm-slim
RUST_IMAGE=rust:1-bookworm
TSDB_IMAGE=timescale/timescaledb:2.28.3-pg17
GRAFANA_IMAGE=grafana/grafana:11.3.1
LABEL_KEY=apimon.standin

if [ -n "${STANDIN_WORKDIR:-}" ]; then
    work=$STANDIN_WORKDIR
    mkdir -p "$work"
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi

say() { echo "standin: $*"; }
die() {
    echo "standin: error: $*" >&2
    exit 1
}

# True when the image exists and may be kept.
keep() {
    if [ "${STANDIN_FORCE:-0}" != 1 ] && docker image inspect "$1" >/dev/null 2>&1; then
        say "$1 exists, kept (STANDIN_FORCE=1 rebuilds it)"
        return 0
    fi
    return 1
}

build_debian() {
    keep "$DEBIAN_IMAGE" && return 0
    command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap)"
    [ "$(id -u)" = 0 ] || die "debootstrap needs root"
    local root="$work/rootfs"
    rm -rf "$root"
    say "debootstrap bookworm from $DEBIAN_MIRROR (a few minutes)"
    debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 ||
        {
            tail -n 20 "$work/debootstrap.log" >&2
            die "debootstrap failed"
        }
    # The suites of the real image; the security archive sits beside the
    # mirror's /debian as /debian-security.
    cat >"$root/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb ${DEBIAN_MIRROR%/debian}/debian-security bookworm-security main
EOF
    # What the official image adds for containers (its apt and dpkg
    # settings), so that images built on the stand-in have about the
    # real sizes: no apt caches or package files left in layers, and the
    # -slim variant's docs, man pages and translations left out.
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
    echo 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
    echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/{groff,info,linda,locale,man}/* "$root"/usr/share/lintian/overrides/*
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
        "$root"/var/lib/apt/lists/* "$root"/tmp/* "$root"/var/log/*.log
    say "importing $DEBIAN_IMAGE"
    tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "LABEL $LABEL_KEY=debootstrap-minbase-bookworm" \
        --change 'CMD ["bash"]' \
        - "$DEBIAN_IMAGE" >/dev/null
    rm -rf "$root"
}

build_rust() {
    keep "$RUST_IMAGE" && return 0
    local settings="$RUSTUP_HOME/settings.toml" toolchain ctx="$work/rust"
    [ -f "$settings" ] || die "no rustup at $RUSTUP_HOME"
    toolchain=$(sed -n 's/^default_toolchain = "\(.*\)"$/\1/p' "$settings")
    if [ -z "$toolchain" ] || [ ! -d "$RUSTUP_HOME/toolchains/$toolchain" ]; then
        die "no default toolchain in $settings"
    fi
    rm -rf "$ctx"
    mkdir -p "$ctx/rustup/toolchains/$toolchain" "$ctx/cargo/bin" "$ctx/ca"
    say "copying the host toolchain $toolchain (without its docs)"
    tar -C "$RUSTUP_HOME/toolchains/$toolchain/" --exclude=./share/doc -c . |
        tar -C "$ctx/rustup/toolchains/$toolchain" -x
    printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\nauto_self_update = "disable"\n' \
        "$toolchain" >"$ctx/rustup/settings.toml"
    cp "$CARGO_HOME/bin/rustup" "$ctx/cargo/bin/"
    local p
    for p in cargo rustc rustdoc cargo-clippy clippy-driver cargo-fmt rustfmt; do
        ln -s rustup "$ctx/cargo/bin/$p"
    done
    if [ -d "$STANDIN_EXTRA_CA" ]; then
        find "$STANDIN_EXTRA_CA" -maxdepth 1 -name '*.crt' -exec cp {} "$ctx/ca/" \;
    fi
    cat >"$ctx/Dockerfile" <<EOF
FROM $DEBIAN_IMAGE
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \\
    && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config make ca-certificates \\
    && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
COPY rustup /usr/local/rustup
COPY cargo /usr/local/cargo
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN rustc --version && cargo --version
LABEL $LABEL_KEY="debian stand-in + host toolchain $toolchain"
EOF
    say "building $RUST_IMAGE"
    docker build -t "$RUST_IMAGE" "$ctx"
    rm -rf "$ctx"
}

build_timescaledb() {
    keep "$TSDB_IMAGE" && return 0
    local ctx="$work/timescaledb"
    [ -f "$PG_SHAREDIR/timescaledb--$TIMESCALEDB_VERSION.sql" ] ||
        die "TimescaleDB $TIMESCALEDB_VERSION is not installed in $PG_SHAREDIR (see README: Testing on TimescaleDB)"
    [ -f "$PG_LIBDIR/timescaledb-$TIMESCALEDB_VERSION.so" ] ||
        die "no $PG_LIBDIR/timescaledb-$TIMESCALEDB_VERSION.so"
    rm -rf "$ctx"
    mkdir -p "$ctx/lib" "$ctx/extension"
    cp "$PG_LIBDIR"/timescaledb*.so "$ctx/lib/"
    cp "$PG_SHAREDIR"/timescaledb* "$ctx/extension/"
    cp "$(dirname "$0")/standin-postgres-entrypoint.sh" "$ctx/docker-entrypoint.sh"
    cat >"$ctx/Dockerfile" <<EOF
FROM $DEBIAN_IMAGE
ARG DEBIAN_FRONTEND=noninteractive
# No cluster from the package: the entrypoint makes one in the volume.
RUN mkdir -p /etc/postgresql-common/createcluster.d \\
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/no-main-cluster.conf \\
    && apt-get update \\
    && apt-get install -y --no-install-recommends postgresql-15 \\
    && rm -rf /var/lib/apt/lists/*
COPY lib/ /usr/lib/postgresql/15/lib/
COPY extension/ /usr/share/postgresql/15/extension/
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 755 /usr/local/bin/docker-entrypoint.sh \\
    && mkdir -p /var/run/postgresql /var/lib/postgresql/data /docker-entrypoint-initdb.d \\
    && chown -R postgres:postgres /var/run/postgresql /var/lib/postgresql \\
    && chmod 3777 /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    PGDATA=/var/lib/postgresql/data
VOLUME /var/lib/postgresql/data
LABEL $LABEL_KEY="PostgreSQL 15 (Debian) + TimescaleDB $TIMESCALEDB_VERSION built on the host; not the official pg17 image"
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
EOF
    say "building $TSDB_IMAGE (PostgreSQL 15 underneath)"
    docker build -t "$TSDB_IMAGE" "$ctx"
    rm -rf "$ctx"
}

build_grafana() {
    keep "$GRAFANA_IMAGE" && return 0
    local ctx="$work/grafana"
    rm -rf "$ctx"
    mkdir -p "$ctx"
    cat >"$ctx/health.py" <<'EOF'
# Grafana stand-in for offline smoke tests: NOT Grafana. Answers
# /api/health as Grafana does, and nothing else.
import http.server
import json


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.split("?")[0] == "/api/health":
            body = json.dumps(
                {"database": "ok", "version": "stand-in", "commit": "stand-in"}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        else:
            body = b"apimon smoke test: Grafana stand-in (only /api/health)\n"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.ThreadingHTTPServer(("0.0.0.0", 3000), Handler).serve_forever()
EOF
    cat >"$ctx/Dockerfile" <<EOF
FROM $DEBIAN_IMAGE
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \\
    && apt-get install -y --no-install-recommends python3 \\
    && rm -rf /var/lib/apt/lists/* \\
    && useradd --system --uid 472 --home-dir /usr/share/grafana grafana \\
    && mkdir -p /var/lib/grafana /etc/grafana && chown grafana /var/lib/grafana
COPY health.py /usr/share/grafana/health.py
USER grafana
EXPOSE 3000
LABEL $LABEL_KEY="NOT Grafana: python3 answering /api/health only"
CMD ["python3", "-u", "/usr/share/grafana/health.py"]
EOF
    say "building $GRAFANA_IMAGE (NOT Grafana)"
    docker build -t "$GRAFANA_IMAGE" "$ctx"
    rm -rf "$ctx"
}

# The Debian stand-in under another one: made when missing, else kept
# (STANDIN_FORCE=1 rebuilds only the image asked for).
need_debian() {
    docker image inspect "$DEBIAN_IMAGE" >/dev/null 2>&1 || STANDIN_FORCE=0 build_debian
}

what=${1:-all}
case $what in
debian) build_debian ;;
rust) need_debian && build_rust ;;
timescaledb) need_debian && build_timescaledb ;;
grafana) need_debian && build_grafana ;;
all) build_debian && build_rust && build_timescaledb && build_grafana ;;
*) die "usage: $0 [debian|rust|timescaledb|grafana|all]" ;;
esac
say "done: $what"
