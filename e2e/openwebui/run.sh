#!/usr/bin/env bash
# lariat behind a real Open WebUI in a real browser. Installs what it needs (Open WebUI
# pinned, cached outside the clone; Debian's chromium; playwright-core from the lock
# file), builds lariat's debug binary, runs e2e.mjs. Exits non-zero on any failure.
#   bash e2e/openwebui/run.sh
# LARIAT_E2E_CACHE moves the Open WebUI cache (default /var/cache/lariat-e2e, else
# ~/.cache/lariat-e2e); LARIAT_BIN skips the build and uses that binary.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CARGO_TERM_COLOR=never
OPENWEBUI_VERSION=0.12.4
t0=$(date +%s)

cache="${LARIAT_E2E_CACHE:-}"
if [ -z "$cache" ]; then
  if mkdir -p /var/cache/lariat-e2e 2>/dev/null && [ -w /var/cache/lariat-e2e ]; then
    cache=/var/cache/lariat-e2e
  else
    cache="$HOME/.cache/lariat-e2e"
  fi
fi
mkdir -p "$cache"
venv="$cache/openwebui-$OPENWEBUI_VERSION"

# Open WebUI (~7 GB, ~5 min): built beside the cache and renamed when complete, so an
# interrupted install is never mistaken for a cached one; the lock keeps two runs on
# one machine from installing at once.
exec 9>"$cache/.lock"
flock 9
if [ ! -e "$venv/.complete" ]; then
  echo "== installing Open WebUI $OPENWEBUI_VERSION into $venv"
  uv=$(command -v uv || true)
  if [ -z "$uv" ]; then
    [ -x "$cache/uv/bin/uv" ] || { python3 -m venv "$cache/uv" && "$cache/uv/bin/pip" install --quiet uv; }
    uv="$cache/uv/bin/uv"
  fi
  rm -rf "$venv" "$venv.partial"
  # Relocatable: its scripts find their interpreter relative to themselves, so the
  # finished venv can be renamed into place.
  "$uv" venv --quiet --relocatable -p 3.11 "$venv.partial"
  "$uv" pip install --quiet -p "$venv.partial" "open-webui==$OPENWEBUI_VERSION"
  touch "$venv.partial/.complete"
  mv "$venv.partial" "$venv"
fi
flock -u 9
"$venv/bin/python" -c "import importlib.metadata as m; print('open-webui', m.version('open-webui'))"

if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing Debian's chromium"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
chromium --version

(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

if [ -z "${LARIAT_BIN:-}" ]; then
  (cd "$root" && cargo build --locked --bin lariat)
  LARIAT_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/lariat"
fi

t1=$(date +%s)
echo "== setup took $((t1 - t0)) s"
rc=0
(cd "$here" && LARIAT_BIN="$LARIAT_BIN" OPENWEBUI_VENV="$venv" node e2e.mjs) || rc=$?
t2=$(date +%s)
echo "== e2e/openwebui: setup $((t1 - t0)) s, browser test $((t2 - t1)) s, total $((t2 - t0)) s (exit $rc)"
exit "$rc"
