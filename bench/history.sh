#!/usr/bin/env bash
# What the history stream costs and gives, in one run: (1) `hookrelay-bench history`:
# `hookrelay-worker history` replaying a filled stream against the broker's own read
# rate of it; (2) the relay's throughput with and without the history stream, in both
# ack modes, back to back (`compare`, history on = the default, off = the relay env
# HOOKRELAY__HISTORY__ENABLED=false).
# Needs: cargo build --release -p hookrelay -p hookrelay-worker -p hookrelay-bench.
# Run: bench/history.sh [ROUNDS] [SECONDS]   (defaults 2 and 8)
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
SECS=${2:-8}
B=target/release/hookrelay-bench
for bin in hookrelay hookrelay-worker hookrelay-bench; do
  [ -x "target/release/$bin" ] || { echo "build target/release/$bin first (see above)" >&2; exit 1; }
done
echo "## history replay"
"$B" history --events 100000 --size 1024 --prefetch 256 --rounds 3
for ack in broker spool; do
  for history in true false; do
    echo "## relay, ack=$ack, history.enabled=$history"
    "$B" compare --ack "$ack" --rounds "$ROUNDS" --duration "$SECS" \
      --relay-env "HOOKRELAY__HISTORY__ENABLED=$history"
  done
done
