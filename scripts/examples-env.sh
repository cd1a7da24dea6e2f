#!/usr/bin/env bash
# Installs what the contract tests run, into target/examples-env (ignored by git):
#   venv/       Python venv with examples/python/requirements.txt (pika, cloudevents)
#   node/       examples/node's packages (amqplib, cloudevents), from its package-lock.json
#   asyncapi/   the official AsyncAPI validators (@asyncapi/specs, @asyncapi/parser)
# Idempotent: each part is reinstalled only when its pinned list changed (a stamp file
# holds the list's hash), so a second run takes well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
env_dir=target/examples-env
mkdir -p "$env_dir"

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "examples-env: $1 is required ($2)" >&2; exit 1; }
}
need python3 "Python 3.9+ with venv: apt-get install -y python3 python3-venv"
need node "Node.js 18+: apt-get install -y nodejs npm"
need npm "npm: apt-get install -y npm"

# up_to_date DIR FILE...: whether DIR/.stamp matches the hash of FILE...
up_to_date() {
  local dir=$1; shift
  [ -f "$dir/.stamp" ] && [ "$(cat "$@" | sha256sum)" = "$(cat "$dir/.stamp")" ]
}
stamp() {
  local dir=$1; shift
  cat "$@" | sha256sum >"$dir/.stamp"
}

req=examples/python/requirements.txt
if ! up_to_date "$env_dir/venv" "$req"; then
  echo "examples-env: installing $req into $env_dir/venv" >&2
  python3 -m venv "$env_dir/venv"
  "$env_dir/venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  stamp "$env_dir/venv" "$req"
fi

# npm_env NAME SOURCE_DIR: npm ci of SOURCE_DIR's package.json and lock into env/NAME.
npm_env() {
  local dir=$env_dir/$1 src=$2
  if ! up_to_date "$dir" "$src/package.json" "$src/package-lock.json"; then
    echo "examples-env: installing $src's packages into $dir" >&2
    mkdir -p "$dir"
    cp "$src/package.json" "$src/package-lock.json" "$dir/"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
    stamp "$dir" "$src/package.json" "$src/package-lock.json"
  fi
}
npm_env node examples/node
npm_env asyncapi crates/hookrelay-contract
