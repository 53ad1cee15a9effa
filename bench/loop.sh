#!/usr/bin/env bash
# The tool loop's own overhead per round (target: under 1 ms), measured against an
# instant mock upstream that calls one no-op tool (`current_time`) and then answers:
#   one lariat request = 2 upstream rounds + 1 tool call.
# overhead per round = (lariat p50 − 2 × direct p50 of one upstream call) / 2, at one
# connection; the same at 50 connections for throughput. Run: bash bench/loop.sh
# (LARIAT_BIN / MOCK_BIN: use these binaries instead of building)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/bench/out"
DUR="${BENCH_DURATION:-8}"
P_MOCK=18201 P_LARIAT=18280 H=127.0.0.1
export PATH="$HOME/.cargo/bin:$PATH"
command -v oha >/dev/null || cargo install oha --locked --quiet
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 >/dev/null; }
# LARIAT_BIN / MOCK_BIN: measure these binaries instead of building.
if [[ -z "${LARIAT_BIN:-}" || -z "${MOCK_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build --release --quiet --bin lariat --example mock_upstream)
fi
LARIAT="${LARIAT_BIN:-$ROOT/target/release/lariat}" MOCK="${MOCK_BIN:-$ROOT/target/release/examples/mock_upstream}"
WORK="$(mktemp -d /tmp/lariat-loop.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$OUT"
"$MOCK" --listen "$H:$P_MOCK" --tool-call current_time 2>/dev/null &
PIDS+=($!)
cat >"$WORK/lariat.toml" <<TOML
[server]
listen = "$H:$P_LARIAT"
[providers.mock]
base_url = "http://$H:$P_MOCK/v1"
[models.loop]
chain = ["mock/bench-model"]
tools = ["current_time"]
TOML
RUST_LOG=warn "$LARIAT" serve --config "$WORK/lariat.toml" 2>"$OUT/loop-lariat.log" &
PIDS+=($!)
for _ in $(seq 1 100); do curl -fs -o /dev/null "http://$H:$P_LARIAT/ready" && break; sleep 0.1; done
ASK='{"model":"loop","messages":[{"role":"user","content":"what time is it?"}]}'
# What lariat sends in round 1 (the upstream answers it with the tool call).
DIRECT='{"model":"bench-model","messages":[{"role":"user","content":"what time is it?"}]}'
run() { # run URL BODY CONNS -> json
  oha --no-tui --output-format json -z "${DUR}s" -c "$3" -m POST -H 'content-type: application/json' -d "$2" "$1"
}
oha --no-tui -z 1s -c 1 -m POST -H 'content-type: application/json' -d "$ASK" "http://$H:$P_LARIAT/v1/chat/completions" >/dev/null
run "http://$H:$P_MOCK/v1/chat/completions" "$DIRECT" 1 >"$WORK/direct1.json"
run "http://$H:$P_LARIAT/v1/chat/completions" "$ASK" 1 >"$WORK/lariat1.json"
run "http://$H:$P_MOCK/v1/chat/completions" "$DIRECT" 50 >"$WORK/direct50.json"
run "http://$H:$P_LARIAT/v1/chat/completions" "$ASK" 50 >"$WORK/lariat50.json"
curl -fsS "http://$H:$P_LARIAT/v1/chat/completions" -H 'content-type: application/json' -d "$ASK" >"$WORK/answer.json"
python3 - "$WORK" "$OUT/loop.md" <<'PY'
import json, sys, pathlib
work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
def load(name):
    d = json.loads((work / f"{name}.json").read_text())
    s = d["summary"]; p = d["latencyPercentiles"]
    return s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000, s["successRate"]
answer = json.loads((work / "answer.json").read_text())
assert answer.get("lariat", {}).get("rounds") == 1, answer  # one tool round, then the answer
d1, l1, d50, l50 = load("direct1"), load("lariat1"), load("direct50"), load("lariat50")
per_round_p50 = (l1[1] - 2 * d1[1]) / 2
per_round_p99 = (l1[2] - 2 * d1[2]) / 2
rows = [
    "| metric | direct (1 upstream call) | lariat (2 rounds + 1 tool) |",
    "| --- | ---: | ---: |",
    f"| p50 / p99 ms, c=1 | {d1[1]:.3f} / {d1[2]:.3f} | {l1[1]:.3f} / {l1[2]:.3f} |",
    f"| req/s, c=50 | {d50[0]:,.0f} | {l50[0]:,.0f} |",
    f"| success rate | {d1[3]:.2%} | {l1[3]:.2%} |",
    "",
    f"**Loop overhead per round** (lariat − 2 × direct, ÷ 2, c=1): p50 {per_round_p50:.3f} ms, p99 {per_round_p99:.3f} ms "
    f"(target < 1 ms: {'pass' if per_round_p50 < 1 else 'FAIL'}). It includes lariat's HTTP in/out, both upstream "
    "client exchanges' own CPU, tool dispatch and JSON work; the mock's time is subtracted.",
]
text = "# lariat tool-loop overhead\n\n" + "\n".join(rows) + "\n"
out.write_text(text)
print(text)
PY
