#!/usr/bin/env bash
# lariat soak: a long, bounded run at many connections, counting errors and watching
# lariat's resident memory before, at its peak and after. See bench/README.md.
# Usage (wrk, curl, python3: installed with apt-get when missing and run as root;
# builds lariat and the mock in release if needed):
#   bash bench/soak.sh
# Knobs (environment):
#   SOAK_REQUESTS=1000000  non-streaming requests to send at least (in rounds of
#                          SOAK_ROUND_S seconds), then SOAK_STREAM_SHARE percent of
#                          that as streams
#   SOAK_STREAM_SHARE=10   percent of SOAK_REQUESTS sent as streams in a second phase
#   SOAK_CONNS=200         connections
#   SOAK_ROUND_S=20        length of one wrk run
#   SOAK_MAX_S=900         hard bound on the whole load
#   SOAK_SETTLE_S=10       wait after the load before the "after" RSS sample
#   LARIAT_BIN / MOCK_BIN  use these binaries instead of building
#   SOAK_PORT_BASE=19000   ports BASE+1 (mock) and BASE+80 (lariat)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/bench/out"
REQUESTS="${SOAK_REQUESTS:-1000000}"
STREAM_SHARE="${SOAK_STREAM_SHARE:-10}"
CONNS="${SOAK_CONNS:-200}"
ROUND_S="${SOAK_ROUND_S:-20}"
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
need_apt=()
for tool in curl python3 wrk; do command -v "$tool" >/dev/null || need_apt+=("$tool"); done
if ((${#need_apt[@]})); then
  [[ "$(id -u)" == 0 ]] || die "missing ${need_apt[*]}: run as root or install them"
  log "installing ${need_apt[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

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

# wrk posts BODY and prints one JSON line of counts when a run is done.
cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("SOAK_BODY")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "seconds": %.3f, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, "p99_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6, e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(99) / 1000))
end
LUA

phase() { # phase NAME BODY REQUESTS: rounds of wrk until REQUESTS were sent
  local name="$1" body="$2" want="$3" sent=0 left
  : >"$OUT/raw/soak_$name.jsonl"
  while ((sent < want)); do
    left=$((MAX_S - (SECONDS - T0)))
    ((left > 5)) || { log "SOAK_MAX_S ($MAX_S s) reached in phase $name"; break; }
    log "phase $name: $sent of $want requests sent; $ROUND_S s more at $CONNS connections"
    line="$(SOAK_BODY="$body" wrk -t 2 -c "$CONNS" -d "$((ROUND_S < left ? ROUND_S : left))s" --timeout 30s \
      -s "$WORK/post.lua" "http://$H:$P_LARIAT/v1/chat/completions" | grep '^{')"
    echo "${line%\}}, \"rss_kb\": $(rss)}" >>"$OUT/raw/soak_$name.jsonl"
    sent=$(python3 -c 'import json,sys; print(sum(json.loads(l)["requests"] for l in open(sys.argv[1])))' "$OUT/raw/soak_$name.jsonl")
  done
}
phase plain "$BODY" "$REQUESTS"
STREAMS=$((REQUESTS * STREAM_SHARE / 100))
((STREAMS > 0)) && phase stream "$SBODY" "$STREAMS"
kill "$SAMPLER" 2>/dev/null || true
PEAK="$(sort -n "$WORK/rss.samples" | tail -1)"
log "load done; settling ${SETTLE_S} s"
sleep "$SETTLE_S"
AFTER="$(rss)"

python3 - "$OUT" "$BEFORE" "$PEAK" "$AFTER" "$CONNS" "$((SECONDS - T0))" "$REQUESTS" <<'PY'
import json, os, sys
out, conns, elapsed, wanted = sys.argv[1], sys.argv[5], sys.argv[6], int(sys.argv[7])
before, peak, after = (int(v) for v in sys.argv[2:5])
rows, total_req, total_err, plain = [], 0, 0, 0
for phase in ("plain", "stream"):
    path = os.path.join(out, "raw", f"soak_{phase}.jsonl")
    if not os.path.exists(path):
        continue
    runs = [json.loads(line) for line in open(path) if line.strip()]
    sent = sum(r["requests"] for r in runs)
    errors = sum(r[k] for r in runs for k in ("connect", "read", "write", "status", "timeout"))
    seconds = sum(r["seconds"] for r in runs) or 1
    p99 = max((r["p99_ms"] for r in runs), default=0)
    rss = " → ".join(f"{r['rss_kb'] / 1024:.1f}" for r in runs)
    rows.append(f"| {phase} | {sent:,} | {errors:,} | {sent / seconds:,.0f} | {p99:.2f} | {rss} |")
    total_req += sent
    total_err += errors
    if phase == "plain":
        plain = sent
report = "\n".join([
    f"# lariat soak ({conns} connections, {elapsed} s)",
    "",
    "| phase | requests | errors | req/s | worst p99 of a round, ms | RSS after each round, MB |",
    "|---|--:|--:|--:|--:|---|",
    *rows,
    "",
    f"lariat RSS: before {before / 1024:.1f} MB, peak {peak / 1024:.1f} MB, after {after / 1024:.1f} MB",
    "",
])
open(os.path.join(out, "soak.md"), "w").write(report)
print(report)
sys.exit(1 if total_err or plain < wanted else 0)
PY
