#!/usr/bin/env bash
# The broker on a core of its own, as it would be on its own host: RabbitMQ (beam.smp)
# pinned to CPU 0, the relay and the load generator (and the ceiling publisher) to CPU 1.
# Separates what the relay costs the broker from the two programs competing for CPU.
# Needs: cargo build --release -p hookrelay -p hookrelay-bench; taskset (util-linux).
# Run: bench/pinned.sh [compare options...], e.g. bench/pinned.sh --queue-type quorum
set -u
cd "$(dirname "$0")/.."
B=$(pgrep -o beam.smp) || { echo "no RabbitMQ (beam.smp) running" >&2; exit 1; }
restore() { taskset -a -p -c 0,1 "$B" >/dev/null; }
trap restore EXIT
taskset -a -p -c 0 "$B" >/dev/null
taskset -c 1 target/release/hookrelay-bench compare "$@"
