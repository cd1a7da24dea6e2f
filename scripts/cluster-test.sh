#!/usr/bin/env bash
# The scale-out test on a real 3-node RabbitMQ cluster (tests/cluster): the test starts
# the cluster itself with scripts/cluster.sh on free ports under a temporary directory
# (never touching the broker on 5672) and tears it down. About three minutes, so CI runs
# it as a step of its own after the test command. Needs root (the packaged rabbitmq-server
# runs its nodes as the rabbitmq user) and Redis on 127.0.0.1:6379 (scripts/test.sh starts
# one).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v rabbitmq-server >/dev/null 2>&1 || {
  echo "cluster-test.sh: rabbitmq-server is not installed (apt-get install -y rabbitmq-server)" >&2
  exit 1
}
(exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null || {
  echo "cluster-test.sh: Redis is not answering on 127.0.0.1:6379 (scripts/test.sh starts it)" >&2
  exit 1
}

# The worker binary the test runs, from the same target dir and profile as the test.
cargo build -p hookrelay-worker --bin hookrelay-worker
target="${CARGO_TARGET_DIR:-$PWD/target}"
export HOOKRELAY_WORKER_BIN="$target/debug/hookrelay-worker"

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run -p hookrelay --features cluster-test --test cluster --no-capture "$@"
else
  exec cargo test -p hookrelay --features cluster-test --test cluster "$@" -- --nocapture
fi
