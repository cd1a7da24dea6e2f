#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from tests/fixtures: each fixture body, framed in the
# targets' input format (hookrelay::invariants::decode): one control byte, header lines,
# an empty line, the body. Per fixture:
#   signed-*   control 0x01: the vendor's own valid headers, clock skew 0
#   open-*     control 0x04: an allow_unauthenticated source
#   raw-*      control 0x00: the genuine headers written out literally, so the fuzzer
#              mutates real credential headers (Chatwoot: the manifest's test vector)
# Safe to re-run: it only adds files. Usage: fuzz/seed.sh
set -euo pipefail
cd "$(dirname "$0")"
fixtures=../tests/fixtures

seed() { # target name control headers body-file
  local dir="corpus/$1"
  mkdir -p "$dir"
  { printf "$3"; printf '%s' "$4"; printf '\n'; cat "$5"; } >"$dir/$2"
}

for f in "$fixtures"/kommunicate/*.json; do
  n=$(basename "$f" .json)
  seed webhook_kommunicate "signed-$n" '\001' '' "$f"
  seed webhook_kommunicate "open-$n" '\004' '' "$f"
  seed webhook_kommunicate "raw-$n" '\000' $'Content-Type: application/json\nAuthentication: Basic YWJjZGVm\n' "$f"
done
for f in "$fixtures"/cometchat/*.json; do
  n=$(basename "$f" .json)
  seed webhook_cometchat "signed-$n" '\001' '' "$f"
  seed webhook_cometchat "open-$n" '\004' '' "$f"
  seed webhook_cometchat "raw-$n" '\000' $'Content-Type: application/json\nAuthorization: Basic cmVsYXl1c2VyOnMzY3JldFBhNTU=\n' "$f"
done
for f in "$fixtures"/chatwoot/*.json; do
  n=$(basename "$f" .json)
  seed webhook_chatwoot "signed-$n" '\001' '' "$f"
  seed webhook_chatwoot "open-$n" '\004' '' "$f"
done
# The manifest's Chatwoot test vector (its timestamp is 1 s after the targets' clock).
seed webhook_chatwoot raw-test-vector '\000' \
  $'Content-Type: application/json\nX-Chatwoot-Delivery: 1c7c6f4e-0d1b-4d4e-9a57-2f2d6b1e8a01\nX-Chatwoot-Timestamp: 1791969698\nX-Chatwoot-Signature: sha256=5b836c66991d051902894165b4a98aa6e116811539bc390f39f6ab9dfa069d8f\n' \
  "$fixtures/chatwoot/message_created_incoming.json"

for t in corpus/*; do echo "$t: $(ls "$t" | wc -l) seeds"; done
