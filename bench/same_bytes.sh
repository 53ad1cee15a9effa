#!/usr/bin/env bash
# Byte-compatibility of two lariat builds: the same requests (relay and tool loop,
# JSON and SSE, errors) to both, side by side against the mock upstream; responses
# must match once ids, timestamps and dates are normalised. Build both first
# (cargo build --release --bin lariat --example mock_upstream; MOCK_BIN: another mock binary).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE=${1:?usage: bench/same_bytes.sh BASELINE_LARIAT [NEW_LARIAT]} NEW=${2:-$ROOT/target/release/lariat} MOCK=${MOCK_BIN:-$ROOT/target/release/examples/mock_upstream}
H=127.0.0.1
$MOCK --listen $H:19101 --chunks 5 2>/dev/null & P1=$!
$MOCK --listen $H:19102 --chunks 5 --tool-call current_time 2>/dev/null & P2=$!
W=$(mktemp -d)
for who in base new; do
  port=$([ $who = base ] && echo 19180 || echo 19181)
  cat >$W/$who.toml <<TOML
[server]
listen = "$H:$port"
[providers.a]
base_url = "http://$H:19101/v1"
[providers.b]
base_url = "http://$H:19102/v1"
[models.relay]
chain = ["a/m"]
tools = []
[models.loop]
chain = ["b/m"]
tools = ["current_time"]
TOML
done
RUST_LOG=error $BASE serve --config $W/base.toml 2>$W/base.log & P3=$!
RUST_LOG=error $NEW serve --config $W/new.toml 2>$W/new.log & P4=$!
sleep 1.5
norm() { sed -E 's/chatcmpl-[0-9a-f]{32}/chatcmpl-ID/g; s/"created":[0-9]+/"created":N/g; s/call_[0-9a-f]{32}/call_ID/g; s/x-request-id: .*/x-request-id: R/I; s/^date: .*/date: D/I'; }
fail=0; n=0
while IFS= read -r body; do
  [ -z "$body" ] && continue
  n=$((n+1))
  for who in base new; do
    port=$([ $who = base ] && echo 19180 || echo 19181)
    curl -sN -D - "http://$H:$port/v1/chat/completions" -H 'content-type: application/json' -d "$body" | tr -d '\r' | norm | grep -v '^x-request-id' >$W/$who.$n
  done
  if [ ! -s $W/base.$n ] || [ ! -s $W/new.$n ]; then fail=1; echo "EMPTY for $body"; fi
  if ! diff -q $W/base.$n $W/new.$n >/dev/null; then fail=1; echo "DIFF for $body"; diff $W/base.$n $W/new.$n | head -20; fi
done <<'REQS'
{"model":"relay","messages":[{"role":"user","content":"hi"}]}
{"model":"relay","stream":true,"messages":[{"role":"user","content":"hi"}]}
{"model":"relay","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}],"temperature":0.2}
{"model":"loop","messages":[{"role":"user","content":"time?"}]}
{"model":"loop","stream":true,"messages":[{"role":"user","content":"time?"}]}
{"model":"loop","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"time?"}]}
{"model":"loop","messages":[{"role":"user","content":[{"type":"text","text":"time?"}]}],"tools":[{"type":"function","function":{"name":"my_tool"}}]}
{"model":"nope","messages":[{"role":"user","content":"hi"}]}
{"model":"relay","messages":[]}
{"model":"loop","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"current_time"}}]}
{"model":"loop","messages":[{"role":"user","content":"x"}],"lariat":{"confirm":{"id":3}}}
REQS
echo "$n requests compared; fail=$fail"
kill $P1 $P2 $P3 $P4 2>/dev/null
exit $fail
