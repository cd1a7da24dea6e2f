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

# Redis on 127.0.0.1:6379 for the shared dedup tests (dedup.backend = "redis"): used if it
# answers, else an installed redis-server is started (installed first if missing, as root
# on Debian), never persisting anything.
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }
if ! redis_up; then
  if ! command -v redis-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server (apt-get)" >&2
    apt-get install -y -q redis-server >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q redis-server >/dev/null; }
  fi
  if command -v redis-server >/dev/null 2>&1; then
    echo "Redis is not answering on 127.0.0.1:6379: starting redis-server" >&2
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no >/dev/null
    for _ in $(seq 1 50); do redis_up && break; sleep 0.2; done
  fi
fi
if ! redis_up; then
  echo "Redis is not reachable on 127.0.0.1:6379 and redis-server could not be installed: install it (apt-get install redis-server) and run this again" >&2
  exit 1
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
