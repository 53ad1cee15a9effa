#!/usr/bin/env bash
# lariat benchmark suite: direct-to-mock vs nginx vs lariat, in one run, on loopback.
# See bench/README.md. Usage (as root on a fresh Debian machine, or with the tools present):
#   bash bench/run.sh
# Knobs (environment):
#   BENCH_DURATION=10      seconds per throughput/latency measurement (warm-up is 1 s more)
#   BENCH_CONNS=50         connections for the throughput runs
#   BENCH_STREAMS=2000     concurrent streams held open for the memory measurement
#   BENCH_HOLD_ROUNDS=2    rounds of those (later rounds show whether memory keeps growing)
#   BENCH_CHUNKS=10        content chunks per streamed answer
#   BENCH_TTFB_N=200       streamed requests per path for the time-to-first-byte probe
#   LOAD_CPUS= SERVER_CPUS=     taskset CPU lists for the load generator and for the
#                          servers (mocks, nginx, relays); empty (the default) = no pinning,
#                          e.g. LOAD_CPUS=0 SERVER_CPUS=1 to keep them off each other's core
#   LARIAT_BIN / MOCK_BIN / BARE_BIN  use these binaries instead of building
#   BENCH_PORT_BASE=18000  ports BASE+1..3 (mocks), +80 (lariat), +81..82 (nginx),
#                          +84..86 (bare axum+reqwest relay, +86 with a runtime per
#                          core), +90..92 (peer gateways)
#   BENCH_PEERS_DIR=~/.cache/lariat-bench-peers  where bench/peers.sh installed the peer
#                          gateways (LiteLLM, Portkey, agentic-api); each one found there
#                          or on PATH is measured, a missing one is skipped with a note
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
OUT="$BENCH/out"
DUR="${BENCH_DURATION:-10}"
CONNS="${BENCH_CONNS:-50}"
STREAMS="${BENCH_STREAMS:-2000}"
HOLD_ROUNDS="${BENCH_HOLD_ROUNDS:-2}"
CHUNKS="${BENCH_CHUNKS:-10}"
TTFB_N="${BENCH_TTFB_N:-200}"
NCPU="$(nproc)"
LOAD_CPUS="${LOAD_CPUS:-}"
SERVER_CPUS="${SERVER_CPUS:-}"
BASE="${BENCH_PORT_BASE:-18000}"
P_MOCK=$((BASE + 1)) P_MOCK_SLOW=$((BASE + 2)) P_MOCK_HOLD=$((BASE + 3))
P_LARIAT=$((BASE + 80)) P_NGINX=$((BASE + 81)) P_NGINX_SLOW=$((BASE + 82))
P_BARE=$((BASE + 84)) P_BARE_SLOW=$((BASE + 85)) P_BARE_CORE=$((BASE + 86))
P_LITELLM=$((BASE + 90)) P_PORTKEY=$((BASE + 91)) P_AGENTIC=$((BASE + 92))
PEERS_DIR="${BENCH_PEERS_DIR:-$HOME/.cache/lariat-bench-peers}"
H=127.0.0.1
BODY='{"model":"bench","messages":[{"role":"user","content":"hi"}]}'
SBODY='{"model":"bench","stream":true,"messages":[{"role":"user","content":"hi"}]}'
T0=$SECONDS

log() { printf '\033[1m[bench %3ds]\033[0m %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Command prefixes that pin to a CPU list. taskset execs its command, so `$!` of a
# backgrounded "${SERVER_PIN[@]}" cmd & is the server's own pid.
LOAD_PIN=()
SERVER_PIN=()
[[ -n "$LOAD_CPUS" ]] && LOAD_PIN=(taskset -c "$LOAD_CPUS")
[[ -n "$SERVER_CPUS" ]] && SERVER_PIN=(taskset -c "$SERVER_CPUS")

# --- tools -----------------------------------------------------------------------------
need_apt=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need_apt+=(nginx)
command -v python3 >/dev/null || need_apt+=(python3)
command -v curl >/dev/null || need_apt+=(curl)
command -v taskset >/dev/null || need_apt+=(util-linux)
command -v ss >/dev/null || need_apt+=(iproute2)
if ((${#need_apt[@]})); then
  [[ "$(id -u)" == 0 ]] || die "missing ${need_apt[*]}: run as root or install them"
  log "installing ${need_apt[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v oha >/dev/null; then
  log "installing oha (cargo install oha --locked; a few minutes, once)"
  cargo install oha --locked --quiet
fi
command -v cargo >/dev/null || die "cargo is needed to build lariat"

# --- build -----------------------------------------------------------------------------
WORK="$(mktemp -d /tmp/lariat-bench.XXXXXX)"
chmod 755 "$WORK"
PIDS=()
declare -A SERVER_PIDS=() # path -> the pids whose CPU a request through it costs
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

if [[ -z "${LARIAT_BIN:-}" || -z "${MOCK_BIN:-}" || -z "${BARE_BIN:-}" ]]; then
  log "building lariat, the mock upstream and the bare relay (release)"
  (cd "$ROOT" && cargo build --release --quiet --bin lariat --example mock_upstream --example bare_relay)
fi
# Copies, so that a rebuild in target/ during the run cannot change what is measured.
cp "${LARIAT_BIN:-$ROOT/target/release/lariat}" "$WORK/lariat"
cp "${MOCK_BIN:-$ROOT/target/release/examples/mock_upstream}" "$WORK/mock_upstream"
cp "${BARE_BIN:-$ROOT/target/release/examples/bare_relay}" "$WORK/bare_relay"

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[[ "$(ulimit -n)" -ge $((STREAMS * 2 + 200)) ]] || log "warning: ulimit -n $(ulimit -n) may be too low for $STREAMS streams"

for p in $P_MOCK $P_MOCK_SLOW $P_MOCK_HOLD $P_LARIAT $P_NGINX $P_NGINX_SLOW $P_BARE $P_BARE_SLOW $P_BARE_CORE; do
  if (exec 3<>"/dev/tcp/$H/$p") 2>/dev/null; then die "port $p on $H is already in use (set BENCH_PORT_BASE)"; fi
done

rm -rf "$OUT/raw"
mkdir -p "$OUT/raw"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- servers ---------------------------------------------------------------------------
wait_http() { # wait_http URL [curl args...]: up to 10 s
  local url="$1"
  shift
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null --max-time 1 "$@" "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "$url did not come up"
}

start_mock() { # start_mock PORT LOGNAME [flags...]
  local port="$1" name="$2"
  shift 2
  "${SERVER_PIN[@]}" "$WORK/mock_upstream" --listen "$H:$port" "$@" 2>"$OUT/$name.log" &
  PIDS+=($!)
  [[ "$name" == mock-hold ]] || SERVER_PIDS[direct]+=" $!"
  wait_http "http://$H:$port/health"
}

log "starting mocks on :$P_MOCK (fast), :$P_MOCK_SLOW (50 ms), :$P_MOCK_HOLD (slow streams)"
start_mock "$P_MOCK" mock --chunks "$CHUNKS"
start_mock "$P_MOCK_SLOW" mock-slow --chunks "$CHUNKS" --delay-ms 50
start_mock "$P_MOCK_HOLD" mock-hold --chunks 100000 --chunk-interval-ms 1000

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
worker_rlimit_nofile $(ulimit -n);
pid $WORK/nginx/nginx.pid;
error_log $OUT/nginx-error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  keepalive_requests 1000000;
  upstream mock_fast { server $H:$P_MOCK; keepalive 256; keepalive_requests 1000000; }
  upstream mock_slow { server $H:$P_MOCK_SLOW; keepalive 256; keepalive_requests 1000000; }
  server {
    listen $H:$P_NGINX;
    location / {
      proxy_pass http://mock_fast;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
  server {
    listen $H:$P_NGINX_SLOW;
    location / {
      proxy_pass http://mock_slow;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
EOF
log "starting nginx on :$P_NGINX and :$P_NGINX_SLOW"
"${SERVER_PIN[@]}" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' 2>>"$OUT/nginx-error.log" &
PIDS+=($!)
SERVER_PIDS[nginx]=$!
wait_http "http://$H:$P_NGINX/v1/chat/completions" -X POST -H 'content-type: application/json' -d "$BODY"

log "starting the bare axum+reqwest relay on :$P_BARE and :$P_BARE_SLOW"
for pair in "$P_BARE:$P_MOCK" "$P_BARE_SLOW:$P_MOCK_SLOW"; do
  "${SERVER_PIN[@]}" "$WORK/bare_relay" --listen "$H:${pair%%:*}" \
    --upstream "http://$H:${pair##*:}/v1/chat/completions" 2>>"$OUT/bare.log" &
  PIDS+=($!)
  SERVER_PIDS[bare]+=" $!"
  wait_http "http://$H:${pair%%:*}/health"
done

cat >"$WORK/lariat.toml" <<EOF
[server]
listen = "$H:$P_LARIAT"

[providers.fast]
base_url = "http://$H:$P_MOCK/v1"
[providers.slow]
base_url = "http://$H:$P_MOCK_SLOW/v1"
[providers.hold]
base_url = "http://$H:$P_MOCK_HOLD/v1"

# No server tools: the relay the peers are compared with (the built-in tools are on
# by default, and a model with tools runs the loop).
[models.bench]
chain = ["fast/bench-model"]
tools = []
[models.bench-slow]
chain = ["slow/bench-model"]
tools = []
[models.bench-hold]
chain = ["hold/bench-model"]
tools = []
EOF
log "starting lariat on :$P_LARIAT"
RUST_LOG=warn "${SERVER_PIN[@]}" env "$WORK/lariat" serve --config "$WORK/lariat.toml" 2>"$OUT/lariat.log" &
LARIAT_PID=$!
PIDS+=("$LARIAT_PID")
SERVER_PIDS[lariat]=$LARIAT_PID
wait_http "http://$H:$P_LARIAT/health"

# --- peer gateways: each optional, skipped with a note when absent ---------------------
# Installed by bench/peers.sh into $PEERS_DIR (pinned versions), or found on PATH.
PEERS=()
declare -A PEER_URL=() PEER_ARGS=()
: >"$OUT/raw/peers_skipped.txt"
skip_peer() { log "skipping $1: $2"; echo "$1: $2" >>"$OUT/raw/peers_skipped.txt"; }
peer_bin() { # peer_bin PATH-IN-PEERS_DIR COMMAND -> the executable, or nothing
  if [[ -x "$PEERS_DIR/$1" || -f "$PEERS_DIR/$1" ]]; then echo "$PEERS_DIR/$1"; else command -v "$2" || true; fi
}
start_peer() { # start_peer NAME URL PID [curl args...]: registers the peer once it answers (up to 60 s)
  local name="$1" url="$2" pid="$3"
  shift 3
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null --max-time 2 -X POST -H 'content-type: application/json' -d "$BODY" "$@" "$url" 2>/dev/null; then
      PEERS+=("$name")
      PEER_URL[$name]="$url"
      SERVER_PIDS[$name]="$pid"
      return 0
    fi
    sleep 0.2
  done
  skip_peer "$name" "did not answer a chat completion within 60 s (see $OUT/$name.log)"
}

LITELLM="$(peer_bin litellm-venv/bin/litellm litellm)"
litellm_version=""
if [[ -n "$LITELLM" ]]; then
  litellm_version="$("$(dirname "$LITELLM")/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || true)"
fi
if [[ -z "$LITELLM" ]]; then
  skip_peer litellm "not installed (bash bench/peers.sh)"
elif [[ "$litellm_version" != 1.80.5 ]]; then
  skip_peer litellm "version ${litellm_version:-unknown} is not the pinned 1.80.5"
else
  cat >"$WORK/litellm.yaml" <<EOF
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench-model
      api_base: http://$H:$P_MOCK/v1
      api_key: sk-bench
EOF
  log "starting LiteLLM $litellm_version on :$P_LITELLM"
  LITELLM_LOG=ERROR "${SERVER_PIN[@]}" "$LITELLM" --config "$WORK/litellm.yaml" --host "$H" --port "$P_LITELLM" \
    >"$OUT/litellm.log" 2>&1 &
  PIDS+=($!)
  start_peer litellm "http://$H:$P_LITELLM/v1/chat/completions" $!
fi

PORTKEY="$(peer_bin portkey/node_modules/@portkey-ai/gateway/build/start-server.js portkey-gateway)"
PORTKEY_CONFIG="{\"provider\":\"openai\",\"api_key\":\"sk-bench\",\"custom_host\":\"http://$H:$P_MOCK/v1\"}"
if [[ -z "$PORTKEY" ]] || ! command -v node >/dev/null; then
  skip_peer portkey "not installed (bash bench/peers.sh; needs node)"
else
  log "starting Portkey's gateway on :$P_PORTKEY"
  "${SERVER_PIN[@]}" node "$PORTKEY" --port="$P_PORTKEY" --headless >"$OUT/portkey.log" 2>&1 &
  PIDS+=($!)
  start_peer portkey "http://$H:$P_PORTKEY/v1/chat/completions" $! -H "x-portkey-config: $PORTKEY_CONFIG"
  PEER_ARGS[portkey]="x-portkey-config: $PORTKEY_CONFIG"
fi

AGENTIC="$(peer_bin agentic-venv/bin/agentic-server agentic-server)"
if [[ -z "$AGENTIC" ]]; then
  skip_peer agentic "not installed (bash bench/peers.sh)"
else
  log "starting vLLM's agentic-api on :$P_AGENTIC"
  RUST_LOG=warn "${SERVER_PIN[@]}" "$AGENTIC" --llm-api-base "http://$H:$P_MOCK" --gateway-host "$H" \
    --gateway-port "$P_AGENTIC" --skip-llm-ready-check --db-url "sqlite://$WORK/agentic.db?mode=rwc" \
    >"$OUT/agentic.log" 2>&1 &
  PIDS+=($!)
  start_peer agentic "http://$H:$P_AGENTIC/v1/chat/completions" $!
fi

# The bare relay once more, served as lariat serves (a single-threaded runtime per
# core, each with its own client): the floor of lariat's own stack and threading.
log "starting the bare relay with a runtime per core on :$P_BARE_CORE"
"${SERVER_PIN[@]}" "$WORK/bare_relay" --listen "$H:$P_BARE_CORE" --threads "$NCPU" \
  --upstream "http://$H:$P_MOCK/v1/chat/completions" 2>>"$OUT/bare.log" &
PIDS+=($!)
start_peer bare_core "http://$H:$P_BARE_CORE/v1/chat/completions" $!

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
sleep 1
echo "{\"rss_kb\": $(rss "$LARIAT_PID")}" >"$OUT/raw/rss_idle.json"
log "lariat idle RSS: $(rss "$LARIAT_PID") kB"

# --- load ------------------------------------------------------------------------------
declare -A URL=(
  [direct]="http://$H:$P_MOCK/v1/chat/completions"
  [nginx]="http://$H:$P_NGINX/v1/chat/completions"
  [lariat]="http://$H:$P_LARIAT/v1/chat/completions"
  [bare]="http://$H:$P_BARE/v1/chat/completions"
)
declare -A URL_SLOW=(
  [direct]="http://$H:$P_MOCK_SLOW/v1/chat/completions"
  [nginx]="http://$H:$P_NGINX_SLOW/v1/chat/completions"
  [lariat]="http://$H:$P_LARIAT/v1/chat/completions"
  [bare]="http://$H:$P_BARE_SLOW/v1/chat/completions"
)
PATHS=(direct nginx bare lariat)

# CPU seconds (user + system) of a process and all its descendants, from /proc.
tree_pids() { local p; echo "$1"; for p in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree_pids "$p"; done; }
cpu_s() { # cpu_s PID...
  local tck p t=0
  tck=$(getconf CLK_TCK)
  for p in $(for root in "$@"; do tree_pids "$root"; done); do
    [[ -r "/proc/$p/stat" ]] || continue
    t=$((t + $(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat")))
  done
  python3 -c "print($t / $tck)"
}

oha_run() { # oha_run NAME URL BODY CONNS SECONDS [CPU_PATH [oha args...]]
  local name="$1" url="$2" body="$3" conns="$4" secs="$5" path="${6:-}" before after
  shift 6 2>/dev/null || shift $#
  [[ -n "$path" ]] && before=$(cpu_s ${SERVER_PIDS[$path]})
  "${LOAD_PIN[@]}" oha --no-tui --output-format json -m POST -T application/json -d "$body" "$@" \
    -c "$conns" -z "${secs}s" -t 30s "$url" >"$OUT/raw/$name.json"
  if [[ -n "$path" ]]; then
    after=$(cpu_s ${SERVER_PIDS[$path]})
    echo "{\"cpu_s\": $(python3 -c "print($after - $before)")}" >"$OUT/raw/$name.cpu.json"
  fi
}

scenario() { # scenario NAME CONNS BODY(direct/nginx) BODY(lariat) SLOW(0/1)
  local name="$1" conns="$2" body="$3" lbody="$4" slow="$5" p url b
  for p in "${PATHS[@]}"; do
    if [[ "$slow" == 1 ]]; then url="${URL_SLOW[$p]}"; else url="${URL[$p]}"; fi
    b="$body"
    [[ "$p" == lariat ]] && b="$lbody"
    log "$name: $p (c=$conns, ${DUR}s)"
    oha_run "warmup" "$url" "$b" "$conns" 1
    oha_run "${name}_$p" "$url" "$b" "$conns" "$DUR" "$p"
  done
}

scenario "plain_c$CONNS" "$CONNS" "$BODY" "$BODY" 0
scenario plain_c1 1 "$BODY" "$BODY" 0
scenario "slow_c$CONNS" "$CONNS" "$BODY" "${BODY/\"bench\"/\"bench-slow\"}" 1
scenario "stream_c$CONNS" "$CONNS" "$SBODY" "$SBODY" 0
scenario stream_c1 1 "$SBODY" "$SBODY" 0
for peer in "${PEERS[@]}"; do
  extra=()
  [[ -n "${PEER_ARGS[$peer]:-}" ]] && extra=(-H "${PEER_ARGS[$peer]}")
  for kind in plain stream; do
    b="$BODY"
    [[ "$kind" == stream ]] && b="$SBODY"
    log "${kind}_c$CONNS: $peer (c=$CONNS, ${DUR}s)"
    oha_run warmup "${PEER_URL[$peer]}" "$b" "$CONNS" 1 "" "${extra[@]}"
    oha_run "${kind}_c${CONNS}_$peer" "${PEER_URL[$peer]}" "$b" "$CONNS" "$DUR" "$peer" "${extra[@]}"
  done
done
rm -f "$OUT/raw/warmup.json"

log "time to first stream event: $TTFB_N streams per path, alternating"
"${LOAD_PIN[@]}" python3 "$BENCH/streams.py" ttfb -n "$TTFB_N" --max-seconds 120 \
  --target "direct=${URL[direct]},bench" \
  --target "nginx=${URL[nginx]},bench" \
  --target "bare=${URL[bare]},bench" \
  --target "lariat=${URL[lariat]},bench" >"$OUT/raw/ttfb.json"

sleep 2
echo "{\"rss_kb\": $(rss "$LARIAT_PID")}" >"$OUT/raw/rss_after_load.json"
log "lariat RSS after load: $(rss "$LARIAT_PID") kB"

# Several rounds: the later ones show whether memory keeps growing round after round.
for round in $(seq 1 "$HOLD_ROUNDS"); do
  log "holding $STREAMS concurrent streams through lariat (round $round)"
  "${LOAD_PIN[@]}" python3 "$BENCH/streams.py" hold -n "$STREAMS" --hold-s 5 --timeout 60 \
    --url "${URL[lariat]}" --model bench-hold --pid "$LARIAT_PID" >"$OUT/raw/hold$round.json"
  sleep 3
  # Upstream connections still open: lariat should drop a stream whose client left.
  upstream_open=$(ss -Htn state established "( dport = :$P_MOCK_HOLD )" | wc -l)
  echo "{\"rss_kb\": $(rss "$LARIAT_PID"), \"upstream_conns_open\": $upstream_open}" >"$OUT/raw/rss_after_hold$round.json"
  log "lariat RSS after the streams closed: $(rss "$LARIAT_PID") kB; upstream connections still open: $upstream_open"
done

kill -0 "$LARIAT_PID" 2>/dev/null || die "lariat died during the run (see $OUT/lariat.log)"

# --- report ----------------------------------------------------------------------------
{
  if [[ -n "${LARIAT_BIN:-}" ]]; then
    echo "commit=binary $LARIAT_BIN"
  else
    echo "commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo '+dirty')"
  fi
  echo "cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo) x$NCPU"
  echo "load_cpus=${LOAD_CPUS:-all} server_cpus=${SERVER_CPUS:-all}"
  echo "oha=$(oha --version 2>/dev/null | head -1) nginx=$("$NGINX" -v 2>&1 | sed 's/.*\///')"
  echo "duration_s=$DUR conns=$CONNS chunks=$CHUNKS ttfb_n=$TTFB_N streams=$STREAMS"
  echo "peers=${PEERS[*]}"
  echo "load_before=$LOAD_BEFORE"
  echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "lariat_log_warn=$(grep -c -E 'WARN|ERROR' "$OUT/lariat.log" || true)"
} >"$OUT/raw/meta.env"
python3 "$BENCH/report.py" "$OUT/raw" >"$OUT/results.md"
cat "$OUT/results.md"
log "done in $((SECONDS - T0)) s; table in $OUT/results.md, raw JSON in $OUT/raw/"
