#!/usr/bin/env python3
"""Turns bench/out/raw/*.json (written by bench/run.sh) into the Markdown results table."""

import json
import math
import sys
from pathlib import Path

RAW = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/out/raw")
PATHS = ("direct", "nginx", "bare", "lariat")


def load(name):
    p = RAW / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def meta():
    p = RAW / "meta.env"
    if not p.exists():
        return {}
    return dict(line.split("=", 1) for line in p.read_text().splitlines() if "=" in line)


def oha(name):
    """(req/s, p50 ms, p99 ms, errors) of one oha run, or None."""
    d = load(name)
    if d is None:
        return None
    pct = d.get("latencyPercentiles") or {}
    codes = d.get("statusCodeDistribution") or {}
    errors = sum(v for k, v in codes.items() if k != "200")
    errors += sum(v for k, v in (d.get("errorDistribution") or {}).items() if "deadline" not in k)
    ms = lambda v: (v * 1000) if isinstance(v, (int, float)) else math.nan  # noqa: E731
    return {
        "rps": d["summary"].get("requestsPerSec") or math.nan,
        "p50": ms(pct.get("p50")),
        "p99": ms(pct.get("p99")),
        "errors": errors,
        "ok": codes.get("200", 0),
    }


def fmt(v, digits=2):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    if a is None or b is None or math.isnan(a) or math.isnan(b) or a <= 0 or b <= 0:
        return "–"
    return f"{a / b:.2f}"


rows = []


def row(label, vals, target="", verdict=""):
    d, n, b, l = (vals.get(p) for p in PATHS)
    rows.append(
        f"| {label} | {fmt(d)} | {fmt(n)} | {fmt(b)} | {fmt(l)} | {ratio(l, d)} | {ratio(l, n)} | {target} | {verdict} |"
    )


def check(ok):
    return "–" if ok is None else ("pass" if ok else "**FAIL**")


def get(scn, key):
    out = {}
    for p in PATHS:
        r = oha(f"{scn}_{p}")
        out[p] = r[key] if r else None
    return out


def added(vals):
    d = vals.get("direct")
    return {p: (vals[p] - d if vals.get(p) is not None and d is not None else None) for p in PATHS[1:]}


m = meta()
conns = m.get("conns", "50")
print("# lariat benchmark results\n")
for k in ("commit", "cpu", "load_cpus", "oha", "duration_s"):
    if k in m:
        print(f"- {k}: {m[k]}" if k != "load_cpus" else f"- pinning: {k}={m[k]}")
print()
print("| metric | direct | nginx | bare relay | lariat | lariat/direct | lariat/nginx | target | verdict |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")

rps = get(f"plain_c{conns}", "rps")
ok = None if rps["lariat"] is None or rps["nginx"] is None else rps["lariat"] >= 0.9 * rps["nginx"]
row(f"non-stream req/s, c={conns}", rps, "≥ 0.90 × nginx", check(ok))
row(f"non-stream p50 ms, c={conns}", get(f"plain_c{conns}", "p50"))
row(f"non-stream p99 ms, c={conns}", get(f"plain_c{conns}", "p99"))
p50_1 = get("plain_c1", "p50")
p99_1 = get("plain_c1", "p99")
row("non-stream p50 ms, c=1", p50_1)
row("non-stream p99 ms, c=1", p99_1)
a50 = added(p50_1)
a99 = added(p99_1)
row("added p50 ms, c=1 (path − direct)", {"direct": None, **a50})
ok = None if a99["lariat"] is None else a99["lariat"] <= 0.5
row("added p99 ms, c=1 (path − direct)", {"direct": None, **a99}, "lariat ≤ 0.5 ms", check(ok))
slow50 = get(f"slow_c{conns}", "p50")
row(f"50 ms upstream: p50 ms, c={conns}", slow50)
aslow = added(slow50)
ok = None if aslow["lariat"] is None else aslow["lariat"] < 1.0
row(f"50 ms upstream: added p50 ms, c={conns}", {"direct": None, **aslow}, "lariat < 1 ms", check(ok))
row(f"50 ms upstream: req/s, c={conns}", get(f"slow_c{conns}", "rps"))
srps = get(f"stream_c{conns}", "rps")
ok = None if srps["lariat"] is None or srps["nginx"] is None else srps["lariat"] >= 0.9 * srps["nginx"]
row(f"stream req/s, c={conns}", srps, "≥ 0.90 × nginx", check(ok))
row(f"stream p50 ms (whole stream), c={conns}", get(f"stream_c{conns}", "p50"))
row(f"stream p99 ms (whole stream), c={conns}", get(f"stream_c{conns}", "p99"))
row("stream p50 ms (whole stream), c=1", get("stream_c1", "p50"))
row("stream p99 ms (whole stream), c=1", get("stream_c1", "p99"))

ttfb = load("ttfb") or {}
if ttfb:
    t50 = {p: ttfb.get(p, {}).get("p50_ms") for p in PATHS}
    t99 = {p: ttfb.get(p, {}).get("p99_ms") for p in PATHS}
    row("stream first event p50 ms (fresh conn.)", t50)
    row("stream first event p99 ms (fresh conn.)", t99)
    row("added first-event p50 ms", {"direct": None, **added(t50)})
    at99 = added(t99)
    ok = None if at99["lariat"] is None else at99["lariat"] <= 1.0
    row("added first-event p99 ms", {"direct": None, **at99}, "lariat ≤ 1 ms", check(ok))
    ev = {p: ttfb.get(p, {}).get("events_per_stream") for p in PATHS}
    same = ev["lariat"] == ev["direct"]
    rows.append(
        f"| `data:` events per stream | {ev['direct']} | {ev['nginx']} | {ev['bare']} | {ev['lariat']} | | "
        f"| every event relayed | {check(same)} |"
    )

err = {}
for p in PATHS:
    total = 0
    for f in RAW.glob(f"*_{p}.json"):
        r = oha(f.stem)
        total += r["errors"] if r else 0
    total += (ttfb.get(p) or {}).get("errors", 0)
    err[p] = total
rows.append(
    f"| failed requests (all runs) | {err['direct']} | {err['nginx']} | {err['bare']} | {err['lariat']} | | "
    f"| 0 | {check(err['lariat'] == 0)} |"
)
print("\n".join(rows))


# Every gateway side by side at c=CONNS: throughput as a ratio to nginx's, and the CPU
# a request costs the gateway's own processes (user + system, from /proc).
NAMES = {
    "direct": "direct to mock",
    "nginx": "nginx",
    "bare": "bare axum + reqwest relay",
    "bare_core": "bare relay, a runtime per core (as lariat serves)",
    "lariat": "**lariat (no tools)**",
    "litellm": "LiteLLM 1.80.5",
    "portkey": "Portkey gateway 1.15.2",
    "agentic": "vLLM agentic-api 0.9.0",
}


def cpu_us(name):
    c, r = load(f"{name}.cpu"), oha(name)
    if not c or not r or not r["ok"]:
        return None
    return c["cpu_s"] * 1e6 / r["ok"]


peers = [p for p in m.get("peers", "").split() if p]
print(f"\n| gateway, c={conns} | non-stream req/s | ×nginx | CPU µs/req | SSE req/s | ×nginx | CPU µs/req | failed |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
nginx_rps = {k: (oha(f"{k}_c{conns}_nginx") or {}).get("rps") for k in ("plain", "stream")}
# The bare relay served as lariat serves goes next to the other bare relay.
gateways = list(PATHS) + [p for p in peers if p != "bare_core"]
if "bare_core" in peers:
    gateways.insert(gateways.index("bare") + 1, "bare_core")
for p in gateways:
    cells, failed = [], 0
    for k in ("plain", "stream"):
        r = oha(f"{k}_c{conns}_{p}")
        failed += r["errors"] if r else 0
        cells += [fmt(r["rps"] if r else None), ratio(r["rps"] if r else None, nginx_rps[k]), fmt(cpu_us(f"{k}_c{conns}_{p}"), 0)]
    print(f"| {NAMES.get(p, p)} | " + " | ".join(cells) + f" | {failed} |")
skipped = RAW / "peers_skipped.txt"
if skipped.exists() and skipped.read_text().strip():
    print("\nNot measured: " + "; ".join(skipped.read_text().strip().splitlines()) + ".")
cpu_l, cpu_n = cpu_us(f"plain_c{conns}_lariat"), cpu_us(f"plain_c{conns}_nginx")
if cpu_l and cpu_n:
    print(f"\nlariat CPU per non-stream request: {cpu_l / cpu_n:.2f} × nginx's (target ≤ 1.5 ×: {check(cpu_l <= 1.5 * cpu_n)}).")
for k in ("load_before", "load_after"):
    if k in m:
        print(f"- {k.replace('_', ' ')} (1, 5, 15 min): {m[k]}")
print("\n| lariat memory (VmRSS) | MB | target | verdict |")
print("| --- | ---: | --- | --- |")
idle = (load("rss_idle") or {}).get("rss_kb")
after = (load("rss_after_load") or {}).get("rss_kb")
mb = lambda kb: None if kb is None else kb / 1024  # noqa: E731
print(f"| idle, after start | {fmt(mb(idle), 1)} | < 20 MB | {check(None if idle is None else idle < 20 * 1024)} |")
print(f"| after the load above (2 s idle) | {fmt(mb(after), 1)} | | |")
notes = []
for rnd in range(1, 100):
    hold = load(f"hold{rnd}")
    if not hold:
        break
    closed = load(f"rss_after_hold{rnd}") or {}
    n_open = hold.get("open_while_sampling")
    peak = hold.get("rss_kb_max")
    ok = None if peak is None else (peak < 200 * 1024 and n_open == hold.get("requested") and n_open >= 2000)
    print(f"| round {rnd}: {n_open} of {hold.get('requested')} streams open (peak) | {fmt(mb(peak), 1)} "
          f"| < 200 MB with 2,000 | {check(ok)} |")
    print(f"| round {rnd}: 3 s after those streams closed | {fmt(mb(closed.get('rss_kb')), 1)} | | |")
    skip = ("requested", "opened", "open_while_sampling", "rss_kb_max", "rss_kb_last", "bytes", "ramp_s", "held_to_end")
    extra = {k: v for k, v in hold.items() if k not in skip and v}
    notes.append(
        f"Round {rnd}: {hold.get('opened')} streams opened in {hold.get('ramp_s')} s, {hold.get('held_to_end')} held to the end"
        f"{'; ' + str(extra) if extra else ''}; upstream connections still open after the clients left: "
        f"{closed.get('upstream_conns_open', '–')}."
    )
print()
for n in notes:
    print(n + "  ")
if "lariat_log_warn" in m:
    print(f"lariat log lines at WARN/ERROR: {m['lariat_log_warn']} (bench/out/lariat.log).")
print(
    "\nbare relay = bench/bare_relay.rs, the smallest axum + reqwest relay (lariat's stack without lariat),"
    " on tokio's work-stealing runtime; with a runtime per core (`--threads`), it serves as lariat does."
)
