#!/usr/bin/env bash
# Runs every test of the workspace against a real RabbitMQ on 127.0.0.1:5672.
# Uses the broker if it answers, starts an installed rabbitmq-server if not, and
# otherwise stops with a message saying how to get one. Never mocks the broker.
set -euo pipefail
cd "$(dirname "$0")/.."

broker_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if ! broker_up; then
  if command -v rabbitmq-server >/dev/null 2>&1; then
    echo "RabbitMQ is not answering on 127.0.0.1:5672: starting rabbitmq-server" >&2
    rabbitmq-server -detached || true
    for _ in $(seq 1 90); do broker_up && break; sleep 1; done
  fi
fi
if ! broker_up; then
  cat >&2 <<'MSG'
RabbitMQ is not reachable on 127.0.0.1:5672 and no rabbitmq-server is installed here.
Get one, then run this again:
  - Debian/Ubuntu:  sudo apt-get install -y rabbitmq-server && sudo rabbitmq-server -detached
  - Docker:         docker run -d --name rabbitmq -p 5672:5672 -p 15672:15672 rabbitmq:3.13-management
MSG
  exit 1
fi
# The port can open before the broker accepts AMQP; wait until it is fully booted.
if command -v rabbitmqctl >/dev/null 2>&1; then
  timeout 60 rabbitmqctl await_startup >/dev/null 2>&1 || true
fi

# The fuzz targets (fuzz/, their own workspace) must keep compiling. libfuzzer-sys builds
# and links on stable with plain cargo (cargo-fuzz and nightly only add the coverage
# instrumentation), and the shared target dir lets it reuse the workspace's crates.
# Long fuzzing stays outside CI: fuzz/run.sh.
echo "building the fuzz targets (fuzz/)" >&2
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}" \
  cargo build --manifest-path fuzz/Cargo.toml --bins

# The contract tests' outside packages: the example consumers' (pika, cloudevents;
# amqplib, cloudevents) and the official AsyncAPI validators, in target/examples-env.
./scripts/examples-env.sh

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --all-targets --no-fail-fast "$@"
else
  exec cargo test --workspace --all-targets --no-fail-fast "$@" -- --test-threads 8
fi
