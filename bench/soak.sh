#!/usr/bin/env bash
# lariat soak: a long, bounded run at many connections, counting errors and watching
# lariat's resident memory before, at its peak and after. See bench/README.md.
# Usage (tools as for bench/run.sh: oha, curl, python3; builds in release if needed):
#   bash bench/soak.sh
# Knobs (environment):
#   SOAK_REQUESTS=1000000  requests to send (non-streaming, then SOAK_STREAM_SHARE of
#                          them again as streams)
#   SOAK_STREAM_SHARE=10   percent of SOAK_REQUESTS sent as streams in a second phase
#   SOAK_CONNS=200         connections
#   SOAK_MAX_S=900         hard bound on the whole load (each phase gets what is left)
#   SOAK_SETTLE_S=10       wait after the load before the "after" RSS sample
#   LARIAT_BIN / MOCK_BIN  use these binaries instead of building
#   SOAK_PORT_BASE=19000   ports BASE+1 (mock) and BASE+80 (lariat)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/bench/out"
REQUESTS="${SOAK_REQUESTS:-1000000}"
STREAM_SHARE="${SOAK_STREAM_SHARE:-10}"
CONNS="${SOAK_CONNS:-200}"
MAX_S="${SOAK_MAX_S:-900}"
SETTLE_S="${SOAK_SETTLE_S:-10}"
BASE="${SOAK_PORT_BASE:-19000}"
P_MOCK=$((BASE + 1)) P_LARIAT=$((BASE + 80))
H=127.0.0.1
BODY='{"model":"soak","messages":[{"role":"user","content":"hi"}]}'
SBODY='{"model":"soak","stream":true,"messages":[{"role":"user","content":"hi"}]}'
T0=$SECONDS

log() { printf '\033[1m[soak %4ds]\033[0m %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

export PATH="$HOME/.cargo/bin:$PATH"
for tool in curl python3 oha; do command -v "$tool" >/dev/null || die "$tool is needed (bench/run.sh installs it)"; done

WORK="$(mktemp -d /tmp/lariat-soak.XXXXXX)"
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z "${LARIAT_BIN:-}" || -z "${MOCK_BIN:-}" ]]; then
  log "building lariat and the mock upstream (release)"
  (cd "$ROOT" && cargo build --release --quiet --bin lariat --example mock_upstream)
fi
cp "${LARIAT_BIN:-$ROOT/target/release/lariat}" "$WORK/lariat"
cp "${MOCK_BIN:-$ROOT/target/release/examples/mock_upstream}" "$WORK/mock_upstream"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p "$OUT/raw"

wait_http() {
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  die "$1 did not come up"
}

"$WORK/mock_upstream" --listen "$H:$P_MOCK" --chunks 10 2>"$OUT/soak-mock.log" &
PIDS+=($!)
wait_http "http://$H:$P_MOCK/health"

# The shipped defaults, but for the address: the limits under test are the defaults.
cat >"$WORK/lariat.toml" <<TOML
[server]
listen = "$H:$P_LARIAT"
[providers.mock]
base_url = "http://$H:$P_MOCK/v1"
[models.soak]
chain = ["mock/soak-model"]
TOML
RUST_LOG=warn "$WORK/lariat" serve --config "$WORK/lariat.toml" 2>"$OUT/soak-lariat.log" &
LARIAT_PID=$!
PIDS+=("$LARIAT_PID")
wait_http "http://$H:$P_LARIAT/health"

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$LARIAT_PID/status"; }
BEFORE="$(rss)"
log "lariat RSS before: $BEFORE kB"
: >"$WORK/rss.samples"
(while kill -0 "$LARIAT_PID" 2>/dev/null; do rss >>"$WORK/rss.samples" 2>/dev/null || true; sleep 1; done) &
SAMPLER=$!
PIDS+=("$SAMPLER")

phase() { # phase NAME BODY REQUESTS
  local left=$((MAX_S - (SECONDS - T0)))
  ((left > 0)) || die "SOAK_MAX_S ($MAX_S s) used up before phase $1"
  log "phase $1: $3 requests at $CONNS connections (at most ${left} s)"
  # oha prints its report when interrupted, so the time bound still yields figures.
  timeout --signal=INT --kill-after=30 "$left" oha --no-tui --output-format json -n "$3" -c "$CONNS" -t 30s \
    -m POST -T application/json -d "$2" "http://$H:$P_LARIAT/v1/chat/completions" >"$OUT/raw/soak_$1.json" || true
}
phase plain "$BODY" "$REQUESTS"
STREAMS=$((REQUESTS * STREAM_SHARE / 100))
((STREAMS > 0)) && phase stream "$SBODY" "$STREAMS"
kill "$SAMPLER" 2>/dev/null || true
PEAK="$(sort -n "$WORK/rss.samples" | tail -1)"
log "load done; settling ${SETTLE_S} s"
sleep "$SETTLE_S"
AFTER="$(rss)"

python3 - "$OUT" "$BEFORE" "$PEAK" "$AFTER" "$CONNS" "$((SECONDS - T0))" <<'PY'
import json, os, sys
out, before, peak, after, conns, elapsed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
rows, total_req, total_err = [], 0, 0
for phase in ("plain", "stream"):
    path = os.path.join(out, "raw", f"soak_{phase}.json")
    if not os.path.exists(path):
        continue
    d = json.load(open(path))
    codes = {int(k): v for k, v in (d.get("statusCodeDistribution") or {}).items()}
    errors = sum(v for k, v in codes.items() if k != 200) + sum((d.get("errorDistribution") or {}).values())
    sent = sum(codes.values()) + sum((d.get("errorDistribution") or {}).values())
    s = d.get("summary", {})
    rows.append(f"| {phase} | {sent:,} | {errors:,} | {s.get('requestsPerSec', 0):,.0f} | {1000 * (d.get('latencyPercentiles', {}).get('p99') or 0):.2f} |")
    total_req += sent
    total_err += errors
report = "\n".join([
    f"# lariat soak ({conns} connections, {elapsed} s)",
    "",
    "| phase | requests | errors | req/s | p99 ms |",
    "|---|--:|--:|--:|--:|",
    *rows,
    "",
    f"lariat RSS: before {before / 1024:.1f} MB, peak {peak / 1024:.1f} MB, after {after / 1024:.1f} MB",
    "",
])
open(os.path.join(out, "soak.md"), "w").write(report)
print(report)
sys.exit(1 if total_err else 0)
PY
