# syntax=docker/dockerfile:1
#
# hookrelay: one runtime image with both binaries, `hookrelay` (the relay, the default
# command) and `hookrelay-worker` (the consumers). Build: `docker build -t hookrelay .`
# or `docker compose build`.
#
# Stages:
#   planner  the workspace reduced to its manifests, Cargo.lock and a stub for every
#            build target; it only changes when a manifest (or the set of targets) does
#   build    compiles the dependencies against that skeleton (a cached layer), then the
#            real sources
#   runtime  debian:bookworm-slim, non-root, both binaries and config/default.toml

# The builder is bookworm too: binaries linked against a newer glibc do not run on the
# bookworm runtime. Bump together with the toolchain the project tests with.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS planner
WORKDIR /src
COPY . .
# Same idea as cargo-chef, without the extra tool: the target list comes from
# `cargo metadata` (no network with --no-deps), so a new workspace member, bin or
# build script needs no edit here. Each target root becomes `fn main() {}`.
RUN set -eu; \
    mkdir /skeleton; \
    find . -path ./target -prune -o -type f \
        \( -name Cargo.toml -o -name Cargo.lock -o -name 'rust-toolchain*' -o -path './.cargo/config*' \) \
        -print | xargs -r cp --parents -t /skeleton; \
    cargo metadata --no-deps --format-version 1 --offline \
        | grep -oE '\{"kind":\[[^]]*\][^{}]*"src_path":"[^"]*"' \
        | sed -E 's/.*"src_path":"([^"]*)"/\1/' \
        | while read -r path; do \
            rel="${path#/src/}"; \
            mkdir -p "/skeleton/$(dirname "$rel")"; \
            echo '#![allow(warnings)] fn main() {}' > "/skeleton/$rel"; \
          done

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Dependencies only: this layer is reused until a manifest or Cargo.lock changes.
COPY --from=planner /skeleton/ ./
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --release --locked -p hookrelay -p hookrelay-worker --bins
# The real sources. COPY keeps the files' own mtimes, which can be older than the stub
# build above; touching them makes cargo rebuild the workspace crates (dependencies
# stay cached: their fingerprints do not use mtimes).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    find . -path ./target -prune -o -type f -name '*.rs' -exec touch {} + \
    && cargo build --release --locked -p hookrelay -p hookrelay-worker --bins

FROM debian:bookworm-slim AS runtime
# ca-certificates: for https:// forward URLs and amqps:// brokers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 hookrelay \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin hookrelay \
    && mkdir -p /app/config /app/data/spool /app/data/archive \
    && chown -R 10001:10001 /app/data
# The binaries read config/default.toml relative to the working directory (they also
# carry a built-in copy); data/spool and data/archive are the defaults there too.
WORKDIR /app
COPY --from=build /src/target/release/hookrelay /src/target/release/hookrelay-worker /usr/local/bin/
COPY config/default.toml /app/config/default.toml
# A container is reached from outside, so the relay listens on all interfaces. It then
# refuses to start while a source still has a demo credential from default.toml: pass
# real ones (HOOKRELAY__SOURCES__<NAME>__TOKEN/SECRET/USERNAME/PASSWORD, see .env.example).
ENV HOOKRELAY__SERVER__BIND=0.0.0.0:8080 \
    HOOKRELAY__SPOOL__DIR=/app/data/spool \
    HOOKRELAY__ARCHIVE__DIR=/app/data/archive
# The spool holds accepted events the broker has not confirmed yet: it must outlive the
# container. One volume per relay instance (the spool is a single-writer database).
VOLUME ["/app/data/spool"]
# Numeric, so orchestrators can verify runAsNonRoot.
USER 10001:10001
EXPOSE 8080
# GET /readyz of the relay in this container (address from server.bind); exit 0/1.
# Worker containers run the same image and must override or disable this.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["hookrelay", "healthcheck"]
CMD ["hookrelay", "serve"]
