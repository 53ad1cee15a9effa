#!/usr/bin/env bash
# Instructions per request of two lariat builds, counted by callgrind (repeatable on
# a busy 2-core machine, unlike wall-clock figures): a tool-loop request (2 rounds +
# 1 tool), a 23-event SSE relay and a non-streaming relay, each minus an idle run.
# Needs valgrind. MOCK_BIN: the mock upstream to use instead of target/release's.
#   bash bench/instructions.sh BASELINE_LARIAT [NEW_LARIAT]
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE=${1:?usage: bench/instructions.sh BASELINE_LARIAT [NEW_LARIAT]} NEW=${2:-$ROOT/target/release/lariat}
H=127.0.0.1
MOCK=${MOCK_BIN:-$ROOT/target/release/examples/mock_upstream}
$MOCK --listen $H:19301 --tool-call current_time 2>/dev/null & M1=$!
$MOCK --listen $H:19302 --chunks 21 2>/dev/null & M2=$!
W=$(mktemp -d)
cat >$W/c.toml <<TOML
[server]
listen = "$H:19380"
[providers.mock]
base_url = "http://$H:19301/v1"
[providers.relay]
base_url = "http://$H:19302/v1"
[models.loop]
chain = ["mock/bench-model"]
tools = ["current_time"]
[models.relay]
chain = ["relay/bench-model"]
tools = []
TOML
body_loop='{"model":"loop","messages":[{"role":"user","content":"what time is it?"}]}'
body_sse='{"model":"relay","stream":true,"messages":[{"role":"user","content":"hi"}]}'
body_plain='{"model":"relay","messages":[{"role":"user","content":"hi"}]}'
measure() { # bin body requests -> instructions
  local bin=$1 body=$2 n=$3
  RUST_LOG=error valgrind --tool=callgrind --callgrind-out-file=$W/cg.out $bin serve --config $W/c.toml 2>$W/vg.log &
  local pid=$!
  for i in $(seq 1 300); do curl -fs -o /dev/null http://$H:19380/health && break; sleep 0.2; done
  # One curl for all n requests: one kept-alive connection, as the load benchmarks use.
  curl -s -H 'content-type: application/json' -d "$body" $(printf "http://$H:19380/v1/chat/completions %.0s" $(seq 1 $n)) >/dev/null
  kill -INT $pid; wait $pid 2>/dev/null
  grep -E "^(summary|totals):" $W/cg.out | head -1 | awk '{print $2}'
}
for who in base new; do
  bin=$([ $who = base ] && echo "$BASE" || echo "$NEW")
  idle=$(measure $bin "$body_loop" 1)
  loop=$(measure $bin "$body_loop" 201)
  sse=$(measure $bin "$body_sse" 201)
  plain=$(measure $bin "$body_plain" 201)
  python3 -c "print(f'$who: loop request {($loop-$idle)/200:,.0f} instructions, SSE relay request (23 events) {($sse-$idle)/200:,.0f}, non-streaming relay request {($plain-$idle)/200:,.0f}')"
done
kill $M1 $M2
