#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on this machine, from Debian's rabbitmq-server, for the
# scale-out tests and benchmarks. Leaves any other broker (rabbit@localhost on 5672) alone:
# own node names, ports and data directories under one temporary directory.
#
#   scripts/cluster.sh start            start 3 nodes, join them, return when all run
#   scripts/cluster.sh stop-node N      stop node N (1-3) gracefully
#   scripts/cluster.sh kill-node N      SIGKILL node N's Erlang VM
#   scripts/cluster.sh start-node N     start node N again (it rejoins the cluster)
#   scripts/cluster.sh node N           print node N's name
#   scripts/cluster.sh uris             print the three AMQP URIs, comma-separated
#   scripts/cluster.sh down             stop every node and delete the directory
#
# Environment: CLUSTER_DIR (default /tmp/hookrelay-cluster), CLUSTER_PORT (first AMQP
# port, default 5681: nodes use CLUSTER_PORT+0..2, distribution ports 20000 above,
# management 10000 above), CLUSTER_NAME (node name prefix, default hookrelay-c).
#
# Facts this relies on: run as root, the packaged wrappers run the node (and rabbitmqctl)
# as the `rabbitmq` user, so everything the node writes must belong to that user; every
# node shares the packaged Erlang cookie (/var/lib/rabbitmq/.erlang.cookie) because the
# wrapper sets HOME to /var/lib/rabbitmq; a node answers `status` only some seconds after
# `-detached` returns, so it is polled before `await_startup`.
set -euo pipefail

DIR="${CLUSTER_DIR:-/tmp/hookrelay-cluster}"
PORT="${CLUSTER_PORT:-5681}"
NAME="${CLUSTER_NAME:-hookrelay-c}"
HOST="localhost"

die() { echo "cluster.sh: $*" >&2; exit 1; }

node_name() { echo "${NAME}$1@${HOST}"; }
amqp_port() { echo $((PORT + $1 - 1)); }
dist_port() { echo $((PORT + 20000 + $1 - 1)); }
mgmt_port() { echo $((PORT + 10000 + $1 - 1)); }

ctl() { rabbitmqctl -q -n "$(node_name "$1")" "${@:2}"; }

need_tools() {
  command -v rabbitmq-server >/dev/null 2>&1 && command -v rabbitmqctl >/dev/null 2>&1 ||
    die "rabbitmq-server is not installed (apt-get install -y rabbitmq-server)"
  [ "$(id -u)" = 0 ] || die "must run as root (the packaged wrapper switches to the rabbitmq user)"
  id rabbitmq >/dev/null 2>&1 || die "no rabbitmq user (the Debian package creates it)"
}

# The node's environment: every path and port it uses is under $DIR/nN.
node_env() {
  local n=$1 d="$DIR/n$1"
  export RABBITMQ_NODENAME="$(node_name "$n")"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$(amqp_port "$n")"
  export RABBITMQ_DIST_PORT="$(dist_port "$n")"
  export RABBITMQ_MNESIA_BASE="$d/mnesia"
  export RABBITMQ_LOG_BASE="$d/log"
  export RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins"
  export RABBITMQ_PLUGINS_EXPAND_DIR="$d/plugins-expand"
  export RABBITMQ_PID_FILE="$d/pid"
  # Not the default node's advanced.config / env file values.
  export RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config"
}

prepare_node() {
  local n=$1 d="$DIR/n$1"
  mkdir -p "$d/mnesia" "$d/log" "$d/plugins-expand"
  cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$n")
management.tcp.ip = 127.0.0.1
management.tcp.port = $(mgmt_port "$n")
loopback_users.guest = true
disk_free_limit.absolute = 50MB
vm_memory_high_watermark.relative = 0.1
# A killed node is noticed within seconds, not the default minute.
net_ticktime = 10
EOF
  echo "[rabbitmq_management]." >"$d/enabled_plugins"
  echo "[]." >"$d/advanced.config"
  chown -R rabbitmq:rabbitmq "$d"
}

node_status_ok() { ctl "$1" status >/dev/null 2>&1; }

# Start node N's VM detached and wait until the RabbitMQ application runs.
boot_node() {
  local n=$1
  (node_env "$n" && cd / && rabbitmq-server -detached >>"$DIR/n$n/log/detached.out" 2>&1) ||
    die "rabbitmq-server -detached failed for $(node_name "$n") (see $DIR/n$n/log)"
}

wait_node() {
  local n=$1 i
  for i in $(seq 1 120); do
    node_status_ok "$n" && break
    # `status` also fails while the VM still boots; give up only when it is gone.
    sleep 1
  done
  timeout 120 rabbitmqctl -q -n "$(node_name "$n")" await_startup >/dev/null 2>&1 ||
    die "$(node_name "$n") did not start (logs: $DIR/n$n/log)"
}

check_ports_free() {
  local n p
  for n in 1 2 3; do
    for p in "$(amqp_port "$n")" "$(dist_port "$n")" "$(mgmt_port "$n")"; do
      if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        die "port $p is in use (another cluster running? scripts/cluster.sh down, or set CLUSTER_PORT)"
      fi
    done
  done
}

cmd_start() {
  need_tools
  [ -e "$DIR" ] && die "$DIR exists (scripts/cluster.sh down first, or set CLUSTER_DIR)"
  check_ports_free
  mkdir -p "$DIR"
  chmod 755 "$DIR"
  local n
  for n in 1 2 3; do prepare_node "$n"; done
  for n in 1 2 3; do boot_node "$n"; done
  for n in 1 2 3; do wait_node "$n"; done
  for n in 2 3; do
    ctl "$n" stop_app >/dev/null
    ctl "$n" join_cluster "$(node_name 1)" >/dev/null 2>&1 || die "$(node_name "$n") could not join $(node_name 1)"
    ctl "$n" start_app >/dev/null
    timeout 120 rabbitmqctl -q -n "$(node_name "$n")" await_startup >/dev/null
  done
  local running
  running=$(ctl 1 eval 'length(rabbit_nodes:all_running()).' 2>/dev/null || echo 0)
  [ "$running" = 3 ] || die "cluster formed with $running running nodes, expected 3"
  echo "cluster up: $(node_name 1) $(node_name 2) $(node_name 3) on AMQP ports $(amqp_port 1)-$(amqp_port 3)" >&2
}

node_pid() {
  local n=$1
  if [ -s "$DIR/n$n/pid" ]; then cat "$DIR/n$n/pid"; return; fi
  ctl "$n" eval 'list_to_integer(os:getpid()).' 2>/dev/null
}

check_n() { case "${1:-}" in 1|2|3) ;; *) die "node number must be 1, 2 or 3";; esac; }

cmd_stop_node() {
  check_n "${1:-}"
  ctl "$1" stop >/dev/null
}

cmd_kill_node() {
  check_n "${1:-}"
  local pid
  pid=$(node_pid "$1") || true
  [ -n "$pid" ] || die "cannot find the OS pid of $(node_name "$1")"
  kill -KILL "$pid"
  # Wait until the VM is gone (its AMQP port closes).
  local i
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  rm -f "$DIR/n$1/pid"
}

cmd_start_node() {
  check_n "${1:-}"
  rm -f "$DIR/n$1/pid"
  boot_node "$1"
  wait_node "$1"
}

cmd_down() {
  local n pid
  [ -d "$DIR" ] || return 0
  for n in 1 2 3; do
    if node_status_ok "$n"; then ctl "$n" stop >/dev/null 2>&1 || true; fi
    pid=$(cat "$DIR/n$n/pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" || true; fi
  done
  rm -rf "$DIR"
}

case "${1:-}" in
  start) cmd_start ;;
  stop-node) cmd_stop_node "${2:-}" ;;
  kill-node) cmd_kill_node "${2:-}" ;;
  start-node) cmd_start_node "${2:-}" ;;
  node) check_n "${2:-}"; node_name "$2" ;;
  uris) echo "amqp://guest:guest@127.0.0.1:$(amqp_port 1)/%2f,amqp://guest:guest@127.0.0.1:$(amqp_port 2)/%2f,amqp://guest:guest@127.0.0.1:$(amqp_port 3)/%2f" ;;
  down) cmd_down ;;
  *) sed -n '2,16p' "$0" >&2; exit 2 ;;
esac
