#!/usr/bin/env bash
# Seeds fuzz/corpus/webhook/ from tests/fixtures, for every vendor of the registry: each
# fixture body framed in the target's input format (hookrelay_test_support::run_fuzz_bytes:
# the vendor's name and a newline, one control byte, header lines, an empty line, the
# body). Per fixture:
#   <vendor>-signed-*   control 0x01: the vendor's own valid headers, clock skew 0
#   <vendor>-open-*     control 0x04: an allow_unauthenticated source
#   <vendor>-raw-*      control 0x00: the genuine headers written out literally, so the
#                       fuzzer mutates real credential headers
# The seeds are made by hookrelay-test-support's `seeds` example, from the registry, so a
# new vendor needs no edit here. Safe to re-run: it only adds or rewrites seed files.
# Usage: fuzz/seed.sh            the corpus
#        fuzz/seed.sh --regressions   rewrite the minimized per-vendor seeds in
#                                     fuzz/regressions/webhook/ (committed; CI replays them)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds() { cargo run -q -p hookrelay-test-support --example seeds -- "$@"; }
if [ "${1:-}" = "--regressions" ]; then
  seeds regressions fuzz/regressions/webhook
else
  seeds corpus tests/fixtures fuzz/corpus/webhook
fi
