# syntax=docker/dockerfile:1
# Builds the three binaries once; dependencies are compiled in their own
# layer, rebuilt only when a Cargo.toml or Cargo.lock changes.

FROM rust:1-bookworm AS build
WORKDIR /src
# Shipped binaries without symbols or debug line tables (the release
# profile keeps line tables for benchmarks and profiling): 451 MB images
# were mostly those.
ENV CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols
COPY Cargo.toml Cargo.lock ./
# Patched dependencies ([patch.crates-io] in Cargo.toml).
COPY vendor vendor
COPY crates/core/Cargo.toml crates/core/build.rs crates/core/
COPY crates/pinger/Cargo.toml crates/pinger/
COPY crates/detector/Cargo.toml crates/detector/
COPY crates/alerter/Cargo.toml crates/alerter/
COPY crates/testkit/Cargo.toml crates/testkit/
COPY crates/nab-eval/Cargo.toml crates/nab-eval/
# Stub sources: compile only the dependencies.
RUN mkdir -p migrations crates/core/src crates/testkit/src crates/nab-eval/src \
        crates/pinger/src crates/detector/src crates/alerter/src \
        crates/pinger/benches crates/detector/benches crates/testkit/benches crates/alerter/benches \
    && touch crates/core/src/lib.rs crates/testkit/src/lib.rs crates/pinger/src/lib.rs \
        crates/detector/src/lib.rs crates/alerter/src/lib.rs crates/nab-eval/src/lib.rs \
    && for b in pinger detector alerter nab-eval; do echo 'fn main() {}' > crates/$b/src/main.rs; done \
    && for f in pinger/benches/load detector/benches/detector detector/benches/storage detector/benches/refresh testkit/benches/scale alerter/benches/alert_quality; do echo 'fn main() {}' > crates/$f.rs; done \
    && cargo build --release --locked -p pinger -p detector -p alerter \
    && rm -rf crates/*/src
COPY migrations migrations
COPY crates crates
# Make sure cargo sees the real sources as newer than the stubs.
RUN find crates -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p pinger -p detector -p alerter

FROM debian:bookworm-slim AS runtime
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin apimon
WORKDIR /app
COPY --from=build /src/target/release/pinger /src/target/release/detector /src/target/release/alerter /usr/local/bin/
COPY apis.toml /app/apis.toml
USER apimon
ENV APIS_FILE=/app/apis.toml RUST_LOG=info
CMD ["pinger"]
