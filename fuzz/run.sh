#!/usr/bin/env bash
# Long fuzzing, outside CI: seeds the corpus, then runs the target (one for every vendor
# of the registry) for SECONDS (default 300) on one core, keeping the grown corpus in fuzz/corpus/ and
# any crash in fuzz/artifacts/<target>/. Needs a nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-300}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(webhook)
fi
./seed.sh
for t in "${targets[@]}"; do
  echo "== $t: ${secs}s"
  cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -print_final_stats=1
done
