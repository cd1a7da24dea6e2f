#!/usr/bin/env bash
# The relay on a 3-node RabbitMQ cluster against the cluster's quorum ceiling, in both ack
# modes, and what dedup.backend = "redis" costs per event, all in one session.
# Needs: root, Debian's rabbitmq-server and redis-server, and
#   cargo build --release -p hookrelay -p hookrelay-bench
# Run: bench/cluster.sh [ROUNDS] [SECONDS]   (defaults 3 and 10; about 2 min per compare)
# Starts the cluster (scripts/cluster.sh, ports 5681-5683) unless it already runs, and a
# private redis-server on 127.0.0.1:6390 (so the shared one's CPU is not mixed in).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-10}
B=target/release/hookrelay-bench
[ -x "$B" ] && [ -x target/release/hookrelay ] || { echo "build first: cargo build --release -p hookrelay -p hookrelay-bench" >&2; exit 1; }

started_cluster=0
if ! (exec 3<>/dev/tcp/127.0.0.1/5681) 2>/dev/null; then
  ./scripts/cluster.sh start
  started_cluster=1
fi
redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --pidfile /tmp/hookrelay-bench-redis.pid >/dev/null
trap 'kill "$(cat /tmp/hookrelay-bench-redis.pid)" 2>/dev/null || true; [ $started_cluster = 1 ] && ./scripts/cluster.sh down' EXIT
sleep 0.5
REDIS_PID=$(cat /tmp/hookrelay-bench-redis.pid)

export HOOKRELAY__AMQP__URI
HOOKRELAY__AMQP__URI=$(./scripts/cluster.sh uris)
export HOOKRELAY__LOG__LEVEL=warn

redis_ticks() { awk '{print $14+$15}' "/proc/$REDIS_PID/stat"; }
redis_calls() { redis-cli -p 6390 info commandstats | awk -F'[:=,]' '/^cmdstat_set:/{print $3}'; }

run() {
  local title=$1; shift
  echo
  echo "### $title"
  local t0 c0 t1 c1
  t0=$(redis_ticks); c0=$(redis_calls); c0=${c0:-0}
  "$B" compare --queue-type quorum --rounds "$ROUNDS" --duration "$SECS" "$@"
  t1=$(redis_ticks); c1=$(redis_calls); c1=${c1:-0}
  if [ "$c1" != "$c0" ]; then
    # Two SETs per new event: the pending claim and its "done".
    echo "redis-server: $(( (c1 - c0) / 2 )) events, $(echo "($t1 - $t0) * 1000000 / $(getconf CLK_TCK) / (($c1 - $c0) / 2)" | bc -l | xargs printf '%.1f') µs CPU/event"
  fi
}

REDIS=(--relay-env HOOKRELAY__DEDUP__BACKEND=redis --relay-env HOOKRELAY__DEDUP__REDIS_URL=redis://127.0.0.1:6390/0)
run "broker mode, memory dedup" --ack broker
run "broker mode, redis dedup" --ack broker "${REDIS[@]}"
run "spool mode, memory dedup" --ack spool
run "spool mode, redis dedup" --ack spool "${REDIS[@]}"
