#!/usr/bin/env bash
# Starts the project's docker-compose.yml for real and checks the running stack from the
# host: images built from the project's Dockerfile, every service healthy, the broker
# booted with definitions.json, each vendor's fixtures relayed and archived, a broker
# outage survived through the spool and a relay restart, uid 10001 writing its volumes,
# the relay refusing an empty credential, the RabbitMQ UI in headless Chromium, and a
# `down` that leaves nothing running and the host as it was.
#
# Engines: a Docker daemon with `docker compose` when one answers; otherwise Podman from
# Debian (installed when missing) behind docker-compose 1.29 through `podman system
# service`. Images the files name but no registry serves (rust, debian, rabbitmq) are
# built locally as stand-ins under the same names, from Debian packages, and the output
# says which.
#
# Environment:
#   COMPOSE_TEST_ENGINE   auto (default) | docker | podman
#   COMPOSE_TEST_CACHE    cache kept between runs (base image tarball, image storage,
#                         cargo registry of the image build, the browser client);
#                         default ${XDG_CACHE_HOME:-~/.cache}/hookrelay-compose-test
#   COMPOSE_TEST_OUT      screenshots and logs; default target/compose-test
#   COMPOSE_TEST_KEEP=1   leave the stack running at the end (for a look around)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HERE=$ROOT/scripts/compose
CACHE=${COMPOSE_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hookrelay-compose-test}
OUT=${COMPOSE_TEST_OUT:-$ROOT/target/compose-test}
PROJECT=hookrelay-ctest
# The address pool of the podman networks: away from podman's defaults (10.88/10.89),
# so the checks below can tell this test's firewall rules from anyone else's.
SUBNET_POOL=10.217.0.0/16
PY=python3
export PYTHONDONTWRITEBYTECODE=1
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

say() { printf '[compose-test] %s\n' "$*" >&2; }
die() {
  say "FAIL: $*"
  exit 1
}

# ---- step timing -------------------------------------------------------------------
STEP_NAMES=()
STEP_SECS=()
step_name=""
step_t0=0
T_START=$(date +%s)
step_end() {
  if [ -n "$step_name" ]; then
    local d=$(($(date +%s) - step_t0))
    STEP_NAMES+=("$step_name")
    STEP_SECS+=("$d")
    say "   ${step_name}: ${d} s"
  fi
  step_name=""
}
step() {
  step_end
  step_name=$1
  step_t0=$(date +%s)
  say "== $1"
}
step_report() {
  step_end
  say "step times:"
  local i
  for i in "${!STEP_NAMES[@]}"; do
    printf '[compose-test]   %5s s  %s\n' "${STEP_SECS[$i]}" "${STEP_NAMES[$i]}" >&2
  done
  say "  total $(($(date +%s) - T_START)) s"
}

mkdir -p "$CACHE" "$OUT/logs" "$OUT/screenshots"
RUN=$(mktemp -d /tmp/hookrelay-compose-test.XXXXXX)

# ---- the engine ----------------------------------------------------------------------
ENGINE=${COMPOSE_TEST_ENGINE:-auto}
if [ "$ENGINE" = auto ]; then
  if [ -z "${DOCKER_HOST:-}" ] && command -v docker >/dev/null 2>&1 \
    && timeout 20 docker info >/dev/null 2>&1; then
    ENGINE=docker
  else
    ENGINE=podman
  fi
fi
case $ENGINE in docker | podman) ;; *) die "COMPOSE_TEST_ENGINE must be auto, docker or podman" ;; esac

# One run at a time per cache (they share image storage and the host's firewall).
exec 9>"$CACHE/lock"
if ! flock -n 9; then
  say "another compose test holds $CACHE/lock: waiting"
  flock 9
fi

SERVICE_PID=""
HEALTH_PID=""
STACK_UP=0
HOST_SAVED=0
cleanup() {
  local rc=$?
  set +e
  if [ "$STACK_UP" = 1 ]; then
    say "cleanup: saving logs to $OUT/logs/compose.log, then compose down"
    compose logs --no-color >"$OUT/logs/compose.log" 2>&1
    if [ "${COMPOSE_TEST_KEEP:-0}" = 1 ] && [ "$rc" = 0 ]; then
      say "COMPOSE_TEST_KEEP=1: the stack keeps running; stop it with: $(compose_cmdline) down -v"
      return
    fi
    compose down -v --remove-orphans -t 10 >/dev/null 2>&1
  fi
  [ -n "$HEALTH_PID" ] && kill "$HEALTH_PID" 2>/dev/null && wait "$HEALTH_PID" 2>/dev/null
  [ -n "$SERVICE_PID" ] && kill "$SERVICE_PID" 2>/dev/null && wait "$SERVICE_PID" 2>/dev/null
  if [ "$HOST_SAVED" = 1 ]; then
    restore_host || rc=1
  fi
  rm -rf "$RUN"
  if [ "$rc" != 0 ]; then
    step_report
    say "FAILED (exit $rc); logs in $OUT/logs"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- packages (Podman from Debian) -----------------------------------------------------
missing_pkgs() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}
ensure_pkgs() {
  local want
  want=$(missing_pkgs "$@")
  [ -z "$want" ] && return 0
  [ "$(id -u)" = 0 ] || die "needs Debian packages: $want (run as root, or install them)"
  say "installing from Debian: $want"
  # netavark and aardvark-dns come in the same transaction, before podman's first run:
  # without them podman falls back to CNI and keeps that choice for good.
  DEBIAN_FRONTEND=noninteractive apt-get update -q >"$OUT/logs/apt.log" 2>&1
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $want \
    >>"$OUT/logs/apt.log" 2>&1 || die "apt-get install failed, see $OUT/logs/apt.log"
}

step "prerequisites ($ENGINE)"
if [ "$ENGINE" = podman ]; then
  ensure_pkgs podman runc netavark aardvark-dns docker-compose mmdebstrap iptables \
    uidmap slirp4netns fuse-overlayfs curl ca-certificates chromium
  CLI=podman
else
  CLI=docker
  command -v chromium >/dev/null 2>&1 || ensure_pkgs chromium
fi
command -v node >/dev/null 2>&1 || ensure_pkgs nodejs npm
"$PY" -c 'import yaml' 2>/dev/null || ensure_pkgs python3-yaml

if [ "$ENGINE" = docker ] && docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
else
  command -v docker-compose >/dev/null 2>&1 || ensure_pkgs docker-compose
  COMPOSE=(docker-compose)
fi
say "engine: $ENGINE, compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short 2>/dev/null || echo '?'))"

# ---- host state (what netavark changes: ip forwarding, iptables chains) ---------------
iptables_chains() {
  local cmd=$1 t
  for t in filter nat mangle raw; do
    "$cmd" -t "$t" -S 2>/dev/null | awk -v t="$t" '$1 == "-N" { print t, $2 }'
  done | sort
}
save_host() {
  IP_FORWARD_BEFORE=$(cat /proc/sys/net/ipv4/ip_forward)
  AARDVARK_BEFORE=$(pgrep -x aardvark-dns || true)
  iptables_chains iptables >"$RUN/chains4.before"
  iptables_chains ip6tables >"$RUN/chains6.before"
  HOST_SAVED=1
}
# Removes the chains that appeared during the run (and the jumps into them), puts ip
# forwarding back, then checks that no rule mentions this test's networks.
restore_host() {
  local ok=0 cmd v t c rule
  for v in 4 6; do
    cmd=iptables
    [ "$v" = 6 ] && cmd=ip6tables
    iptables_chains "$cmd" >"$RUN/chains$v.after"
    comm -13 "$RUN/chains$v.before" "$RUN/chains$v.after" >"$RUN/chains$v.new"
    while read -r t c; do
      "$cmd" -t "$t" -S | grep -E -- "-j $c( |\$)" | sed 's/^-A /-D /' |
        while read -r rule; do eval "$cmd -t $t $rule" || ok=1; done
    done <"$RUN/chains$v.new"
    while read -r t c; do "$cmd" -t "$t" -F "$c"; done <"$RUN/chains$v.new"
    while read -r t c; do "$cmd" -t "$t" -X "$c" || ok=1; done <"$RUN/chains$v.new"
    if [ -s "$RUN/chains$v.new" ]; then
      say "host: removed the IPv$v chains this run added: $(awk '{printf "%s/%s ", $1, $2}' "$RUN/chains$v.new")"
    fi
    iptables_chains "$cmd" >"$RUN/chains$v.final"
    if ! cmp -s "$RUN/chains$v.before" "$RUN/chains$v.final"; then
      say "FAIL: IPv$v iptables chains differ from before the run:"
      diff "$RUN/chains$v.before" "$RUN/chains$v.final" >&2
      ok=1
    fi
  done
  if iptables-save 2>/dev/null | grep -q "${SUBNET_POOL%.0.0/16}\."; then
    say "FAIL: iptables rules still mention this test's networks ($SUBNET_POOL):"
    iptables-save | grep "${SUBNET_POOL%.0.0/16}\." >&2
    ok=1
  fi
  if [ "$(cat /proc/sys/net/ipv4/ip_forward)" != "$IP_FORWARD_BEFORE" ]; then
    echo "$IP_FORWARD_BEFORE" >/proc/sys/net/ipv4/ip_forward || ok=1
    say "host: net.ipv4.ip_forward set back to $IP_FORWARD_BEFORE"
  fi
  [ "$(cat /proc/sys/net/ipv4/ip_forward)" = "$IP_FORWARD_BEFORE" ] || ok=1
  [ "$ok" = 0 ] && say "host: ip forwarding and iptables chains are as before the run"
  return "$ok"
}

# ---- podman: its own configuration, storage and API socket ----------------------------
start_podman() {
  # Fixed run-time paths (cleared at boot, like /run/containers): podman records them
  # in its database on first use and keeps using the recorded ones afterwards.
  PODMAN_RUN=/run/hookrelay-compose-test
  mkdir -p "$CACHE/storage" "$CACHE/networks" "$CACHE/tmp" "$PODMAN_RUN"
  cat >"$RUN/containers.conf" <<EOF
# Written by scripts/compose-test.sh; the machine's own containers.conf is not used.
[containers]
# The VM's hard open-files limit is below podman's default (1048576).
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"
[engine]
# crun cannot run with cgroups v1 in hybrid mode; there is no systemd.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$PODMAN_RUN/libpod"
# An API exec session's monitor waits this long for its client to read the exit code.
exit_command_delay = 5
[network]
network_backend = "netavark"
network_config_dir = "$CACHE/networks"
default_subnet_pools = [{"base" = "$SUBNET_POOL", "size" = 24}]
EOF
  cat >"$RUN/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$CACHE/storage"
runroot = "$PODMAN_RUN/storage"
EOF
  cat >"$RUN/registries.conf" <<EOF
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
EOF
  export CONTAINERS_CONF=$RUN/containers.conf
  export CONTAINERS_STORAGE_CONF=$RUN/storage.conf
  export CONTAINERS_REGISTRIES_CONF=$RUN/registries.conf
  # TMPDIR: buildah keeps `RUN --mount=type=cache` directories (the cargo registry of
  # the image build) under it, so they outlive the run.
  TMPDIR=$CACHE/tmp podman system service --time=0 "unix://$RUN/podman.sock" \
    >"$OUT/logs/podman-service.log" 2>&1 &
  SERVICE_PID=$!
  export DOCKER_HOST=unix://$RUN/podman.sock
  local i
  for i in $(seq 1 100); do
    curl -fsS --unix-socket "$RUN/podman.sock" http://d/_ping >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fsS --unix-socket "$RUN/podman.sock" http://d/_ping >/dev/null ||
    die "podman system service did not answer on $RUN/podman.sock"
  # Podman schedules healthchecks with systemd timers; there is no systemd here, so this
  # loop runs them: every 2 s for containers not yet healthy, every 10 s for the rest.
  (
    n=0
    while sleep 2; do
      n=$((n + 1))
      if [ $((n % 5)) = 0 ]; then filters=(--filter health=healthy --filter health=starting --filter health=unhealthy); else filters=(--filter health=starting --filter health=unhealthy); fi
      for id in $(podman ps -q "${filters[@]}" 2>/dev/null); do
        podman healthcheck run "$id" >/dev/null 2>&1 || true
      done
    done
  ) &
  HEALTH_PID=$!
}

if [ "$ENGINE" = podman ]; then
  save_host
  start_podman
  say "podman $(podman version --format '{{.Client.Version}}'), storage $CACHE/storage, API $DOCKER_HOST"
fi

compose() { "${COMPOSE[@]}" -p "$PROJECT" --env-file "$RUN/test.env" -f "$ROOT/docker-compose.yml" "$@"; }
compose_cmdline() { echo "DOCKER_HOST=${DOCKER_HOST:-} ${COMPOSE[*]} -p $PROJECT -f $ROOT/docker-compose.yml"; }

# A leftover of an interrupted run (same project name) would break the checks below.
printf 'KOMMUNICATE_TOKEN=x\nCHATWOOT_SECRET=x\nCOMETCHAT_USERNAME=x\nCOMETCHAT_PASSWORD=x\n' >"$RUN/test.env"
compose down -v --remove-orphans -t 5 >/dev/null 2>&1 || true

# ---- base images: the real ones, or stand-ins built here -------------------------------
STANDINS=()
has_image() { "$CLI" image inspect "$1" >/dev/null 2>&1; }
standin_label() { "$CLI" image inspect --format '{{ index .Config.Labels "org.hookrelay.stand-in" }}' "$1" 2>/dev/null || true; }
# A real image: already here (and not one of our stand-ins), or pulled now.
real_image() {
  local img=$1 label
  if has_image "$img"; then
    label=$(standin_label "$img")
    if [ -z "$label" ] || [ "$label" = "<no value>" ]; then
      say "image $img: present"
      return 0
    fi
  fi
  if timeout 300 "$CLI" pull -q "$img" >"$RUN/pull.log" 2>&1; then
    say "image $img: pulled"
    return 0
  fi
  say "image $img: not pullable ($(tail -1 "$RUN/pull.log" | cut -c1-150))"
  return 1
}

# debian:bookworm-slim: a minbase bookworm from the Debian mirror (mmdebstrap), kept as a
# tarball in the cache for a week, imported only when the tarball changed (a new import
# is a new image id, which would invalidate every layer built on it).
standin_debian() {
  local img=$1 tar=$CACHE/bookworm-minbase.tar stamp=$CACHE/bookworm-minbase.imported
  if [ ! -s "$tar" ] || [ -n "$(find "$tar" -mtime +7)" ]; then
    ensure_pkgs mmdebstrap
    say "stand-in $img: building a bookworm minbase with mmdebstrap"
    mmdebstrap --variant=minbase --mode=root --format=tar \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
      bookworm "$tar.tmp" \
      "deb http://deb.debian.org/debian bookworm main" \
      "deb http://deb.debian.org/debian bookworm-updates main" \
      "deb http://deb.debian.org/debian-security bookworm-security main" \
      >"$OUT/logs/mmdebstrap.log" 2>&1 || die "mmdebstrap failed, see $OUT/logs/mmdebstrap.log"
    mv "$tar.tmp" "$tar"
  fi
  # Imported again only when the tarball changed: each import is a new image id, which
  # would invalidate every layer built on it (the toolchain, the project's dependencies).
  local want have
  want="$(stat -c %Y "$tar") $(stat -c %s "$tar")"
  have=$("$CLI" image inspect --format '{{.Id}}' "$img" 2>/dev/null || true)
  if [ -z "$have" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want $have" ]; then
    "$CLI" import --change 'CMD ["bash"]' \
      --change "LABEL org.hookrelay.stand-in=\"${img#docker.io/library/} (mmdebstrap bookworm minbase)\"" \
      "$tar" "$img" >/dev/null
    echo "$want $("$CLI" image inspect --format '{{.Id}}' "$img")" >"$stamp"
  fi
  STANDINS+=("$img: Debian bookworm minbase from mmdebstrap")
}

# rust:<version>-slim-bookworm: the stand-in debian with the host's rustup toolchain of
# that version (Debian's rustc is too old for the workspace's rust-version).
standin_rust() {
  local img=$1 want tc ver host sysroot="" name ctx=$RUN/rust-ctx
  want=${img#*:}
  want=${want%%-*}
  for tc in $(rustup toolchain list 2>/dev/null | awk '{print $1}'); do
    ver=$(rustc "+$tc" --version 2>/dev/null | awk '{print $2}')
    case $ver in "$want" | "$want".*)
      sysroot=$(rustc "+$tc" --print sysroot)
      host=$(rustc "+$tc" -vV | sed -n 's/^host: //p')
      break
      ;;
    esac
  done
  [ -n "$sysroot" ] || die "stand-in $img: no rustup toolchain $want on this host (rustup toolchain install $want)"
  # Named like the official image's toolchain: <version>-<host>.
  name=$ver-$host
  mkdir -p "$ctx/toolchain/bin" "$ctx/ca"
  # Hard links: the context is ~600 MB and stays on the same filesystem.
  cp -al "$sysroot"/bin/{cargo,rustc,rustdoc} "$ctx/toolchain/bin/" 2>/dev/null ||
    cp -a "$sysroot"/bin/{cargo,rustc,rustdoc} "$ctx/toolchain/bin/"
  cp -al "$sysroot/lib" "$ctx/toolchain/" 2>/dev/null || cp -a "$sysroot/lib" "$ctx/toolchain/"
  if [ -d /usr/local/share/ca-certificates ]; then
    find /usr/local/share/ca-certificates -name '*.crt' -exec cp {} "$ctx/ca/" \;
  fi
  local extra
  extra=$(find "$ctx/ca" -name '*.crt' | wc -l)
  # COPY needs something to copy.
  [ "$extra" -gt 0 ] || touch "$ctx/ca/.none"
  "$CLI" build -f "$HERE/standins/rust.Containerfile" \
    --build-arg RUST_VERSION="$name" --build-arg STANDIN_FOR="${img#docker.io/library/}" \
    -t "$img" "$ctx" >"$OUT/logs/standin-rust.log" 2>&1 ||
    die "stand-in $img failed to build, see $OUT/logs/standin-rust.log"
  STANDINS+=("$img: the debian stand-in + this host's Rust toolchain $name$([ "$extra" -gt 0 ] && echo ", trusting this host's $extra extra CA certificate(s) (crates.io is reached through the same network)")")
}

# rabbitmq:<version>-management: Debian's rabbitmq-server with the management plugin.
standin_rabbitmq() {
  local img=$1
  mkdir -p "$RUN/empty"
  "$CLI" build -f "$HERE/standins/rabbitmq.Containerfile" --build-arg STANDIN_FOR="${img#docker.io/library/}" \
    -t "$img" "$RUN/empty" >"$OUT/logs/standin-rabbitmq.log" 2>&1 ||
    die "stand-in $img failed to build, see $OUT/logs/standin-rabbitmq.log"
  local v
  v=$("$CLI" run --rm --entrypoint dpkg-query "$img" -W -f='${Version}' rabbitmq-server 2>/dev/null || echo '?')
  STANDINS+=("$img: Debian rabbitmq-server $v + rabbitmq_management")
}

step "base images"
# The images the files name: FROM lines of the Dockerfile (ARG defaults resolved, stage
# names skipped) and the compose services that do not build.
rust_version=$(sed -nE 's/^ARG RUST_VERSION=(.*)/\1/p' Dockerfile | head -1)
mapfile -t BASE_IMAGES < <(
  {
    awk 'toupper($1) == "FROM" { print $2 }' Dockerfile | sed "s/\${RUST_VERSION}/$rust_version/"
    "$PY" -c 'import sys, yaml
for s in yaml.safe_load(open("docker-compose.yml"))["services"].values():
    if "build" not in s: print(s["image"])'
  } | awk '!seen[$0]++' | grep -vxE 'planner|build|runtime'
)
# debian first: the other stand-ins are built on it.
for img in $(printf '%s\n' "${BASE_IMAGES[@]}" | sort -t: -k1,1 -s | awk '/^debian:/ { print; next } { rest = rest $0 "\n" } END { printf "%s", rest }'); do
  case $img in */*) full=$img ;; *) full=docker.io/library/$img ;; esac
  real_image "$full" && continue
  case ${img%%:*} in
    debian) standin_debian "$full" ;;
    rust) has_image docker.io/library/debian:bookworm-slim || standin_debian docker.io/library/debian:bookworm-slim; standin_rust "$full" ;;
    rabbitmq) has_image docker.io/library/debian:bookworm-slim || standin_debian docker.io/library/debian:bookworm-slim; standin_rabbitmq "$full" ;;
    *) die "image $img cannot be pulled and there is no stand-in for it" ;;
  esac
done
if [ "${#STANDINS[@]}" -gt 0 ]; then
  say "STAND-INS built locally (no registry serves these images here):"
  for s in "${STANDINS[@]}"; do say "  - $s"; done
else
  say "no stand-ins: every image is the real one"
fi

# No override file: the stand-ins are built to behave like the real images where
# docker-compose.yml relies on them (paths, users, ports, healthcheck commands), so the
# stack runs from docker-compose.yml alone, as a user runs it.

# ---- the test's own .env ----------------------------------------------------------------
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_or_free() { if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then free_port; else echo "$1"; fi; }
RELAY_PORT=$(port_or_free 8080)
AMQP_PORT=$(port_or_free 5672)
UI_PORT=$(port_or_free 15672)
rand() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
KOMMUNICATE_TOKEN=$(rand)
CHATWOOT_SECRET=$(rand)
COMETCHAT_USERNAME=relay-$(rand | cut -c1-8)
COMETCHAT_PASSWORD=$(rand)
# .env.example with every value filled in, so a variable compose needs but the example
# lacks shows up here.
sed -e "s/^KOMMUNICATE_TOKEN=.*/KOMMUNICATE_TOKEN=$KOMMUNICATE_TOKEN/" \
  -e "s/^CHATWOOT_SECRET=.*/CHATWOOT_SECRET=$CHATWOOT_SECRET/" \
  -e "s/^COMETCHAT_USERNAME=.*/COMETCHAT_USERNAME=$COMETCHAT_USERNAME/" \
  -e "s/^COMETCHAT_PASSWORD=.*/COMETCHAT_PASSWORD=$COMETCHAT_PASSWORD/" \
  -e "s/^COMPOSE_PROJECT_NAME=.*/COMPOSE_PROJECT_NAME=$PROJECT/" \
  -e "s/^HOOKRELAY_PORT=.*/HOOKRELAY_PORT=$RELAY_PORT/" \
  -e "s/^RABBITMQ_AMQP_PORT=.*/RABBITMQ_AMQP_PORT=$AMQP_PORT/" \
  -e "s/^RABBITMQ_UI_PORT=.*/RABBITMQ_UI_PORT=$UI_PORT/" \
  .env.example >"$RUN/test.env"
API=http://127.0.0.1:$UI_PORT
RELAY=http://127.0.0.1:$RELAY_PORT
say "published on 127.0.0.1: relay $RELAY_PORT, AMQP $AMQP_PORT, UI $UI_PORT"

# ---- build and start ---------------------------------------------------------------------
step "compose build (the project's Dockerfile)"
compose build >"$OUT/logs/build.log" 2>&1 || {
  tail -40 "$OUT/logs/build.log" >&2
  die "compose build failed, see $OUT/logs/build.log"
}
say "build: $(grep -c 'Using cache' "$OUT/logs/build.log") cached layer(s) reused, $(grep -c ' Compiling ' "$OUT/logs/build.log") crate(s) compiled"

cid() { compose ps -q "$1"; }
# "<health>|<state>": health is empty without a healthcheck (podman has an empty struct
# there, docker none).
health() { "$CLI" inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{end}}|{{.State.Status}}' "$1" 2>/dev/null; }
wait_healthy() {
  local svc=$1 limit=${2:-180} t0 id h
  t0=$(date +%s)
  while :; do
    id=$(cid "$svc")
    h=$([ -n "$id" ] && health "$id" || echo "no container")
    case $h in
      "healthy|running") say "$svc: healthy after $(($(date +%s) - t0)) s"; return 0 ;;
      "|running") say "$svc: running (no healthcheck)"; return 0 ;;
      *exited* | *dead*) compose logs --no-color --tail 40 "$svc" >&2; die "$svc: $h" ;;
    esac
    if [ $(($(date +%s) - t0)) -ge "$limit" ]; then
      compose logs --no-color --tail 40 "$svc" >&2
      die "$svc is '$h' after $limit s"
    fi
    sleep 1
  done
}

step "broker alone: healthy, definitions.json loaded"
STACK_UP=1
compose up -d rabbitmq >"$OUT/logs/up-rabbitmq.log" 2>&1 || {
  cat "$OUT/logs/up-rabbitmq.log" >&2
  die "compose up rabbitmq failed"
}
wait_healthy rabbitmq 180
for _ in $(seq 1 60); do curl -fsS -u guest:guest "$API/api/overview" >/dev/null 2>&1 && break; sleep 1; done
"$PY" "$HERE/check.py" topology --api "$API" --definitions config/rabbitmq/definitions.json --pristine

step "compose up -d: every service healthy"
compose up -d >"$OUT/logs/up.log" 2>&1 || {
  cat "$OUT/logs/up.log" >&2
  die "compose up failed"
}
wait_healthy relay 120
wait_healthy archive 60
for _ in $(seq 1 30); do
  "$PY" "$HERE/check.py" consumers --api "$API" --queue hookrelay.archive >/dev/null 2>&1 && break
  sleep 1
done
"$PY" "$HERE/check.py" consumers --api "$API" --queue hookrelay.archive
compose ps

# ---- the image's binary on the host, configured like the stack ------------------------
BIN=$RUN/bin
mkdir -p "$BIN"
tmp_c=$("$CLI" create hookrelay:local)
"$CLI" cp "$tmp_c:/usr/local/bin/hookrelay" "$BIN/hookrelay" >/dev/null
"$CLI" rm "$tmp_c" >/dev/null
"$BIN/hookrelay" --help >/dev/null 2>&1 || die "the image's hookrelay binary does not run on this host"
send() {
  HOOKRELAY__SOURCES__KOMMUNICATE__TOKEN=$KOMMUNICATE_TOKEN \
    HOOKRELAY__SOURCES__CHATWOOT__SECRET=$CHATWOOT_SECRET \
    HOOKRELAY__SOURCES__COMETCHAT__USERNAME=$COMETCHAT_USERNAME \
    HOOKRELAY__SOURCES__COMETCHAT__PASSWORD=$COMETCHAT_PASSWORD \
    "$BIN/hookrelay" send "$1" "tests/fixtures/$2" --url "$RELAY/webhooks/$1"
}
# Fixtures the manifest expects a 200 for, of the sources docker-compose.yml configures
# (a vendor without a source in the stack, e.g. standard-webhooks, is said and left out);
# per vendor the last two are kept for the outage below (a fixture sent twice is a
# duplicate, not a new event).
"$PY" - >"$RUN/fixtures" <<'EOF'
import json, re, sys
m = json.load(open("tests/fixtures/manifest.json"))
configured = {n.lower() for n in re.findall(r"HOOKRELAY__SOURCES__([A-Z0-9]+)__", open("docker-compose.yml").read())}
by = {}
rk = {}
for f in m["fixtures"]:
    rk[f["file"]] = f["expected_routing_key"]
    if f.get("expected_status") != 200:
        continue
    if f["vendor"].replace("-", "_").lower() not in configured:
        print(f"[compose-test] {f['file']}: no {f['vendor']} source in docker-compose.yml, not sent", file=sys.stderr)
        continue
    by.setdefault(f["vendor"], []).append(f["file"])
if sorted(by) != sorted(configured):
    sys.exit(f"fixtures for {sorted(by)} but docker-compose.yml configures {sorted(configured)}")
for vendor, files in by.items():
    for i, f in enumerate(files):
        print("outage" if i >= len(files) - 2 else "normal", vendor, f, rk[f])
EOF
archive_lines() { compose exec -T archive sh -c 'cat /app/data/archive/*.jsonl 2>/dev/null' 2>/dev/null; }
wait_archived() {
  local ids=$1 limit=$2 t0
  t0=$(date +%s)
  until archive_lines | "$PY" "$HERE/check.py" archived --ids "$ids" --quiet 2>/dev/null; do
    [ $(($(date +%s) - t0)) -ge "$limit" ] && break
    sleep 1
  done
  archive_lines | "$PY" "$HERE/check.py" archived --ids "$ids"
  say "archived within $(($(date +%s) - t0)) s"
}
send_phase() {
  local phase=$1 ids=$2 kind vendor file key out id
  : >"$ids"
  while read -r kind vendor file key; do
    [ "$kind" = "$phase" ] || continue
    out=$(send "$vendor" "$file") || die "hookrelay send $vendor $file: $out"
    id=$(echo "$out" | "$PY" "$HERE/check.py" response-id) || die "hookrelay send $vendor $file: $out"
    echo "$id $key" >>"$ids"
  done <"$RUN/fixtures"
  say "$(wc -l <"$ids") fixtures ($(awk -v p="$phase" '$1 == p { print $2 }' "$RUN/fixtures" | sort -u | tr '\n' ' ')) answered 200"
}

step "every vendor's fixtures: 200, archived as JSON lines"
send_phase normal "$RUN/ids.normal"
wait_archived "$RUN/ids.normal" 60

step "broker down: accepted into the spool, relay restarted, then all archived"
compose stop rabbitmq >/dev/null 2>&1
send_phase outage "$RUN/ids.outage"
depth=$(curl -fsS "$RELAY/metrics" | awk '$1 == "hookrelay_spool_depth" { print $2 }')
[ "${depth:-0}" -ge "$(wc -l <"$RUN/ids.outage")" ] ||
  die "spool depth is '${depth:-}' after $(wc -l <"$RUN/ids.outage") webhooks accepted with the broker down"
spool_files=$(compose exec -T relay sh -c 'ls -ln /app/data/spool')
say "spool depth $depth; the relay-spool volume holds: $(echo "$spool_files" | awk 'NR > 1 { printf "%s (uid %s, %s bytes) ", $9, $3, $5 }')"
compose restart relay >/dev/null 2>&1
# Still down: the spooled events can only reach the archive from the spool file kept by
# the volume across the restart.
sleep 3
compose start rabbitmq >/dev/null 2>&1
wait_healthy rabbitmq 120
wait_healthy relay 120
cat "$RUN/ids.normal" "$RUN/ids.outage" >"$RUN/ids.all"
wait_archived "$RUN/ids.all" 120

step "uid 10001 owns and writes the volumes"
[ "$("$CLI" image inspect --format '{{.Config.User}}' hookrelay:local)" = "10001:10001" ] ||
  die "hookrelay:local does not run as 10001:10001"
for pair in relay:/app/data/spool archive:/app/data/archive; do
  svc=${pair%%:*}
  dir=${pair#*:}
  got=$(compose exec -T "$svc" sh -c "id -u; id -g; touch $dir/.probe && rm $dir/.probe && echo writable; stat -c %u $dir; find $dir -mindepth 1 ! -user 10001 | head -3" 2>&1 | tr '\n' ' ')
  [ "$got" = "10001 10001 writable 10001 " ] || die "$svc: expected uid/gid 10001 writing $dir, got: $got"
  say "$svc: uid 10001 writes $dir (a named volume; every file in it is owned by 10001)"
done

step "relay refuses an empty credential"
sed 's/^CHATWOOT_SECRET=.*/CHATWOOT_SECRET=/' "$RUN/test.env" >"$RUN/empty.env"
before=$("$CLI" ps -aq | sort)
if out=$("${COMPOSE[@]}" -p "$PROJECT" --env-file "$RUN/empty.env" -f docker-compose.yml up -d relay 2>&1); then
  die "compose up started with CHATWOOT_SECRET empty in .env: $out"
fi
echo "$out" | grep -q 'set CHATWOOT_SECRET in .env' || die "compose refused, but without naming CHATWOOT_SECRET: $out"
[ "$("$CLI" ps -aq | sort)" = "$before" ] || die "compose created containers with an empty credential"
say "compose up with CHATWOOT_SECRET empty: refused ($(echo "$out" | grep -o 'set CHATWOOT_SECRET in .env[^}]*' | tail -1)), nothing created"
# The relay itself given an empty value (past compose's interpolation): the service's
# image, command and environment from `compose config`, with the secret emptied. It
# exits non-zero naming the key and prints no secret. (`compose run` is not used:
# docker-compose 1.29 adds links to one-off containers, which podman refuses.)
compose config | "$PY" -c '
import sys, yaml
relay = yaml.safe_load(sys.stdin)["services"]["relay"]
env = dict(relay["environment"], HOOKRELAY__SOURCES__CHATWOOT__SECRET="")
print("\n".join(f"{k}={v}" for k, v in env.items()))
print("#" + " ".join(relay["command"]))' >"$RUN/relay-empty.env"
# shellcheck disable=SC2046
if out=$("$CLI" run --rm --network none --env-file "$RUN/relay-empty.env" hookrelay:local \
  $(sed -n 's/^#//p' "$RUN/relay-empty.env") 2>&1); then
  die "the relay started with an empty chatwoot secret: $out"
fi
echo "$out" | grep -q 'sources.chatwoot.secret' || die "the relay stopped, but without naming sources.chatwoot.secret: $out"
for s in "$KOMMUNICATE_TOKEN" "$COMETCHAT_PASSWORD"; do
  echo "$out" | grep -qF "$s" && die "the relay's refusal prints a secret: $out"
done
say "relay: $(echo "$out" | grep -m1 'sources.chatwoot.secret')"

step "RabbitMQ UI in headless Chromium"
[ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ] ||
  die "the browser check needs Node.js 20 or newer (playwright-core), found $(node --version)"
UI_DIR=$CACHE/ui-node
lock_hash=$(sha256sum "$HERE/ui/package-lock.json" | cut -c1-16)
if [ "$(cat "$UI_DIR/.lock-hash" 2>/dev/null)" != "$lock_hash" ]; then
  rm -rf "$UI_DIR"
  mkdir -p "$UI_DIR"
  cp "$HERE/ui/package.json" "$HERE/ui/package-lock.json" "$UI_DIR/"
  (cd "$UI_DIR" && npm ci --no-audit --no-fund --ignore-scripts >"$OUT/logs/npm.log" 2>&1) ||
    die "npm ci failed, see $OUT/logs/npm.log"
  echo "$lock_hash" >"$UI_DIR/.lock-hash"
fi
# ES modules resolve imports next to the script, not through NODE_PATH.
cp "$HERE/ui/ui-check.mjs" "$UI_DIR/"
node "$UI_DIR/ui-check.mjs" \
  --url "$API/" --definitions config/rabbitmq/definitions.json --out "$OUT/screenshots" \
  --chromium "$(command -v chromium)" \
  --connection "hookrelay relay (" --connection "hookrelay-worker archive (hookrelay.archive)"
"$PY" "$HERE/check.py" connections --api "$API" \
  --expect "hookrelay relay (" --expect "hookrelay-worker archive (hookrelay.archive)"

step "compose down: nothing left running"
compose logs --no-color >"$OUT/logs/compose.log" 2>&1 || true
if [ "${COMPOSE_TEST_KEEP:-0}" = 1 ]; then
  step_report
  exit 0
fi
compose down -v --remove-orphans -t 30 >"$OUT/logs/down.log" 2>&1 || {
  cat "$OUT/logs/down.log" >&2
  die "compose down failed"
}
STACK_UP=0
left=$("$CLI" ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}}')
[ -z "$left" ] || die "containers left after down: $left"
[ "$ENGINE" = podman ] && [ -n "$(podman ps -q)" ] && die "containers still running in this test's storage: $(podman ps --format '{{.Names}}')"
vols=$("$CLI" volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$vols" ] || die "volumes left after down -v: $vols"
say "no container, volume or network of the project left"
# No image prune: the build stages' images are untagged, and pruning them would throw
# away the dependency layer the next run reuses.
[ "$ENGINE" = podman ] && say "image storage: $(du -sh "$CACHE/storage" 2>/dev/null | cut -f1) in $CACHE/storage"

if [ "$ENGINE" = podman ]; then
  step "host restored"
  kill "$HEALTH_PID" 2>/dev/null || true
  wait "$HEALTH_PID" 2>/dev/null || true
  HEALTH_PID=""
  kill "$SERVICE_PID" 2>/dev/null || true
  wait "$SERVICE_PID" 2>/dev/null || true
  SERVICE_PID=""
  # conmon of a finished `exec` lingers for exit_command_delay; then nothing is left.
  for _ in $(seq 1 30); do
    pgrep -f "conmon .*$CACHE/storage/" >/dev/null || break
    sleep 1
  done
  if pgrep -f "conmon .*$CACHE/storage/" >/dev/null; then
    die "container monitors (conmon) still running: $(pgrep -f "conmon .*$CACHE/storage/" | tr '\n' ' ')"
  fi
  say "no container process left"
  HOST_SAVED=0
  restore_host || die "the host is not as it was before the run"
  # aardvark-dns exits by itself once its last network is gone, a moment after `down`.
  if [ -z "$AARDVARK_BEFORE" ]; then
    for _ in $(seq 1 20); do
      pgrep -x aardvark-dns >/dev/null || break
      sleep 0.5
    done
  fi
  if pgrep -x aardvark-dns >/dev/null && [ -z "$AARDVARK_BEFORE" ]; then
    die "aardvark-dns still running: $(pgrep -x aardvark-dns | tr '\n' ' ')"
  fi
fi
step_report
say "PASS"
