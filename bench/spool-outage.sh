#!/usr/bin/env bash
# Throughput while spooling (broker unreachable, broker mode) and drain rate after recovery.
# Needs: cargo build --release -p hookrelay -p hookrelay-bench; curl; bc. Run: bench/spool-outage.sh
set -u
cd "$(dirname "$0")/.."
D=$(mktemp -d); EX=bench.spool.$RANDOM$RANDOM
PORT=18931
export HOOKRELAY__SERVER__BIND=127.0.0.1:$PORT HOOKRELAY__SPOOL__DIR=$D HOOKRELAY__AMQP__EXCHANGE=$EX HOOKRELAY__LOG__LEVEL=warn
HOOKRELAY__AMQP__URI=amqp://guest:guest@127.0.0.1:1/%2f HOOKRELAY__AMQP__CONNECT_TIMEOUT_MS=200 target/release/hookrelay serve 2>$D/log1 &
P=$!; sleep 1.5
target/release/hookrelay-bench load --url http://127.0.0.1:$PORT --concurrency 64 --duration 8 --no-check --pid $P 2>&1 | tail -12
DEPTH=$(curl -s http://127.0.0.1:$PORT/metrics | grep '^hookrelay_spool_depth ' | awk '{print $2}')
echo "spooled depth: $DEPTH"
kill -TERM $P; wait $P; echo "exit $?"
target/release/hookrelay serve 2>$D/log2 &
P=$!
TICKS0=$(awk '{print $14+$15}' /proc/$P/stat)
START=$(date +%s.%N)
while :; do
  d=$(curl -s http://127.0.0.1:$PORT/metrics 2>/dev/null | grep '^hookrelay_spool_depth ' | awk '{print $2}')
  [ "$d" = "0" ] && break
  sleep 0.05
done
END=$(date +%s.%N)
TICKS1=$(awk '{print $14+$15}' /proc/$P/stat)
echo "drained $DEPTH in $(echo "$END - $START" | bc) s => $(echo "$DEPTH / ($END - $START)" | bc) events/s (includes start-up)"
# The relay's CPU (utime + stime, in clock ticks) over the drain: reading the spool back,
# publishing, the confirms and the deletions, per drained event.
echo "relay CPU while draining: $(echo "($TICKS1 - $TICKS0) * 1000000 / $(getconf CLK_TCK) / $DEPTH" | bc -l | xargs printf '%.1f') µs/event"
kill -TERM $P; wait $P
target/release/hookrelay-bench cleanup --exchange $EX >/dev/null 2>&1 || true
rm -rf $D
