#!/usr/bin/env bash
# Recovery time after spool faults, measured: the spool's disk (a 24 MiB tmpfs) fills up
# while the broker is away, then (A) the broker comes back with the disk still full, or
# (B) space is freed while the broker stays away. Prints how long until the relay takes
# events again and until its backlog is published. Needs root (mount), curl, python3.
# Run: bench/spool-faults.sh [relay binary, default target/release/hookrelay]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/hookrelay}
D=$(mktemp -d); M=$D/fs; mkdir -p "$M"
PROXY_PID=""; RELAY_PID=""
cleanup() {
  [ -n "$RELAY_PID" ] && kill -9 "$RELAY_PID" 2>/dev/null || true
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null || true
  umount -l "$M" 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT
mount -t tmpfs -o size=24m tmpfs "$M"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PPORT=$(free_port); PORT=$(free_port); EX=bench.spoolfaults.$RANDOM$RANDOM
# A TCP forwarder to the broker that can be started and stopped (the broker "outage").
proxy_up() {
  python3 - "$PPORT" <<'PY' &
import socket, sys, threading
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[1]))); ls.listen(64)
def pipe(a, b):
    try:
        while (d := a.recv(65536)):
            b.sendall(d)
    except OSError:
        pass
    finally:
        a.close(); b.close()
while True:
    c, _ = ls.accept()
    u = socket.create_connection(("127.0.0.1", 5672))
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
PY
  PROXY_PID=$!
}
ready() { curl -s "http://127.0.0.1:$PORT/readyz"; }
now() { date +%s.%N; }
body() { printf '{"key":"%s","from":"u","groupId":42,"message":"%s","timeStamp":1791969697000}' "$1" "$PAD"; }
post() { curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -H 'authentication: Basic YWJjZGVm' --data-binary @- "http://127.0.0.1:$PORT/webhooks/kommunicate"; }
PAD=$(head -c 60000 /dev/zero | tr '\0' x)

start_relay() {
  HOOKRELAY__SERVER__BIND=127.0.0.1:$PORT HOOKRELAY__SPOOL__DIR=$1 HOOKRELAY__AMQP__EXCHANGE=$EX \
  HOOKRELAY__AMQP__URI=amqp://guest:guest@127.0.0.1:$PPORT/%2f HOOKRELAY__AMQP__CONNECT_TIMEOUT_MS=500 \
  HOOKRELAY__AMQP__RECONNECT_INITIAL_MS=50 HOOKRELAY__AMQP__RECONNECT_MAX_MS=300 HOOKRELAY__LOG__LEVEL=info HOOKRELAY__HISTORY__ENABLED=false \
    "$BIN" serve 2>>"$D/log" &
  RELAY_PID=$!
  until ready >/dev/null 2>&1; do sleep 0.05; done
}
fill() {
  local ok=0 no=0 n=0
  while [ $no -lt 5 ]; do
    n=$((n+1)); code=$(body "$1-$n" | post)
    if [ "$code" = 200 ]; then ok=$((ok+1)); else no=$((no+1)); fi
  done
  echo "$ok"
}
wait_for() { # $1: python expression over the readyz JSON r
  until ready | python3 -c "import json,sys; r=json.load(sys.stdin); sys.exit(0 if ($1) else 1)" 2>/dev/null; do sleep 0.02; done
}

echo "== A: disk full, then the broker comes back (disk still full)"
mkdir -p "$M/a"; start_relay "$M/a"
N=$(fill a); echo "spooled $N events of 60 KB before the disk was full; readyz: $(ready)"
T0=$(now); proxy_up
wait_for 'r["broker"] == "connected"'; T1=$(now)
code=$(body a-new | post); T2=$(now)
wait_for 'r["spool"]["depth"] == 0'; T3=$(now)
wait_for 'r["status"] == "ok"'; T4=$(now)
echo "broker back -> connected: $(echo "$T1 - $T0" | bc) s; first new event answered $code after $(echo "$T2 - $T0" | bc) s"
echo "broker back -> backlog of $N published: $(echo "$T3 - $T0" | bc) s; -> readyz ok (spool healthy): $(echo "$T4 - $T0" | bc) s"
kill -TERM "$RELAY_PID"; wait "$RELAY_PID" || true; RELAY_PID=""
kill "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true; PROXY_PID=""
rm -rf "$M/a"

echo "== B: disk full (another file and the spool), broker away, then space is freed"
mkdir -p "$M/b"; head -c $((12 << 20)) /dev/zero > "$M/filler"
start_relay "$M/b"
N=$(fill b); echo "spooled $N events before the disk was full"
T0=$(now); rm "$M/filler"
wait_for 'r["spool"]["healthy"] == True'; T1=$(now)
code=$(body b-new | post); T2=$(now)
echo "space freed -> spool healthy: $(echo "$T1 - $T0" | bc) s; next event answered $code after $(echo "$T2 - $T0" | bc) s"
proxy_up; T3=$(now)
wait_for 'r["status"] == "ok"'; T4=$(now)
echo "broker back -> backlog of $((N+1)) published, readyz ok: $(echo "$T4 - $T3" | bc) s"
echo "log lines (both relays): $(grep -c "spool write failed" "$D/log") 'spool write failed', $(grep -c "spool writable again" "$D/log") 'spool writable again', $(grep -c "answered 503" "$D/log") per-request 503 lines"
kill -TERM "$RELAY_PID"; wait "$RELAY_PID" || true; RELAY_PID=""
"$(dirname "$BIN")/hookrelay-bench" cleanup --exchange "$EX" >/dev/null 2>&1 || true
