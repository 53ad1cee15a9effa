#!/usr/bin/env bash
# Where one lariat build spends its instructions on the relay path, by function, with
# callgrind (deterministic, so usable on a busy machine): N requests of one kind
# through a relay model (no tools) against the fast mock, then callgrind_annotate's
# top functions by own cost and by inclusive cost. Needs valgrind and a build with
# symbols (CARGO_PROFILE_RELEASE_STRIP=false cargo build --release ...).
#   bash bench/profile.sh LARIAT [sse|plain] [N=200]
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN=${1:?usage: bench/profile.sh LARIAT [sse|plain] [N]} KIND=${2:-sse} N=${3:-200}
MOCK=${MOCK_BIN:-$ROOT/target/release/examples/mock_upstream}
H=127.0.0.1
W=$(mktemp -d)
$MOCK --listen $H:19402 --chunks 21 2>/dev/null & M=$!
cat >$W/c.toml <<TOML
[server]
listen = "$H:19480"
[providers.relay]
base_url = "http://$H:19402/v1"
[models.relay]
chain = ["relay/bench-model"]
tools = []
TOML
stream=$([ "$KIND" = sse ] && echo true || echo false)
body='{"model":"relay","stream":'$stream',"messages":[{"role":"user","content":"hi"}]}'
RUST_LOG=error valgrind --tool=callgrind --callgrind-out-file=$W/cg.out "$BIN" serve --config $W/c.toml 2>$W/vg.log &
pid=$!
for _ in $(seq 1 300); do curl -fs -o /dev/null http://$H:19480/health && break; sleep 0.2; done
# One curl for all N requests: one kept-alive connection, as the load benchmarks use.
curl -s -H 'content-type: application/json' -d "$body" $(printf "http://$H:19480/v1/chat/completions %.0s" $(seq 1 "$N")) >/dev/null
kill -INT $pid; wait $pid 2>/dev/null; kill $M
echo "$KIND, $N requests: $(grep -E '^(summary|totals):' $W/cg.out | head -1 | awk '{print $2}') instructions in all (start-up included)"
echo "--- by own cost"
callgrind_annotate --threshold=80 $W/cg.out 2>/dev/null | sed -n '/^Ir/,$p' | head -40 | cut -c1-200
echo "--- by inclusive cost"
callgrind_annotate --inclusive=yes --threshold=99 $W/cg.out 2>/dev/null | sed -n '/^Ir/,$p' | head -60 | cut -c1-200
echo "(callgrind output: $W/cg.out)"
