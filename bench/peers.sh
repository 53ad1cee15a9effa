#!/usr/bin/env bash
# Installs the peer gateways bench/run.sh measures next to lariat, each at a pinned
# version, outside the repository (default ~/.cache/lariat-bench-peers, or
# BENCH_PEERS_DIR): LiteLLM 1.80.5 and vLLM's agentic-api 0.9.0 in their own venvs
# (pip), Portkey's gateway 1.15.2 (npm). A peer that fails to install is reported and
# left out; run.sh then skips it with a note.
#   bash bench/peers.sh
set -uo pipefail
DIR="${BENCH_PEERS_DIR:-$HOME/.cache/lariat-bench-peers}"
mkdir -p "$DIR"
venv() { # venv NAME PACKAGE
  [[ -x "$DIR/$1/bin/pip" ]] || python3 -m venv "$DIR/$1"
  "$DIR/$1/bin/pip" install -q "$2" || echo "peers: installing $2 failed" >&2
}
venv litellm-venv "litellm[proxy]==1.80.5"
venv agentic-venv "agentic-api==0.9.0"
if command -v npm >/dev/null; then
  mkdir -p "$DIR/portkey"
  (cd "$DIR/portkey" && { [[ -f package.json ]] || npm init -y >/dev/null; } &&
    npm install --silent @portkey-ai/gateway@1.15.2) || echo "peers: installing Portkey's gateway failed" >&2
else
  echo "peers: npm not found, Portkey's gateway not installed" >&2
fi
echo "peers installed in $DIR (bench/run.sh looks there, or set BENCH_PEERS_DIR)"
