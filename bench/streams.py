#!/usr/bin/env python3
"""Streaming probes for bench/run.sh (standard library only, loopback only).

ttfb: sequential streamed requests, alternating between the given targets, each on a
      fresh connection; measures the time from sending the request to the first
      `data:` event, and counts the events of every stream (to check that a relay
      forwards every upstream event).
hold: opens N concurrent streams against one target, waits until each has received its
      first event, samples the VmRSS of --pid while they are all open, then closes them.

Both print one JSON object on stdout.
"""

import argparse
import asyncio
import json
import socket
import sys
import time
from urllib.parse import urlsplit


def request_bytes(url: str, model: str, keep_alive: bool) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"refusing non-loopback target {url}")
    port = parts.port or 80
    body = json.dumps(
        {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        separators=(",", ":"),
    ).encode()
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    ).encode()
    return host, port, head + body


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def one_ttfb(host: str, port: int, payload: bytes, timeout: float) -> tuple[float, int, int]:
    """Returns (seconds to the first `data:` event, events seen, HTTP status)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        sock.sendall(payload)
        buf = b""
        first = None
        while True:
            data = sock.recv(65536)
            if not data:
                break
            buf += data
            if first is None and b"\ndata:" in buf:
                first = time.perf_counter() - start
            if b"data: [DONE]" in buf and buf.endswith(b"\r\n0\r\n\r\n"):
                break
        status_line = buf.split(b"\r\n", 1)[0].split()
        status = int(status_line[1]) if len(status_line) > 1 else 0
        events = buf.count(b"data:")
        return (first if first is not None else float("nan")), events, status


def cmd_ttfb(args: argparse.Namespace) -> None:
    targets = []
    for spec in args.target:
        name, url, model = spec.split("=", 1)[0], *spec.split("=", 1)[1].split(",", 1)
        host, port, payload = request_bytes(url, model, keep_alive=False)
        targets.append((name, host, port, payload))
    samples: dict[str, list[float]] = {t[0]: [] for t in targets}
    events: dict[str, set[int]] = {t[0]: set() for t in targets}
    errors: dict[str, int] = {t[0]: 0 for t in targets}
    deadline = time.monotonic() + args.max_seconds
    for i in range(args.warmup + args.n):
        if time.monotonic() > deadline:
            break
        for name, host, port, payload in targets:
            try:
                ttfb, count, status = one_ttfb(host, port, payload, args.timeout)
            except OSError:
                errors[name] += 1
                continue
            if status != 200 or ttfb != ttfb:
                errors[name] += 1
                continue
            if i >= args.warmup:
                samples[name].append(ttfb)
                events[name].add(count)
    out = {}
    for name, values in samples.items():
        out[name] = {
            "n": len(values),
            "errors": errors[name],
            "p50_ms": percentile(values, 50) * 1000,
            "p99_ms": percentile(values, 99) * 1000,
            "events_per_stream": sorted(events[name]),
        }
    print(json.dumps(out))


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def hold_one(host, port, payload, opened: asyncio.Event, counters, stop: asyncio.Event, timeout):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        counters["connect_failed"] += 1
        opened.set()
        return
    try:
        writer.write(payload)
        await writer.drain()
        buf = b""
        got_first = False
        while not stop.is_set():
            try:
                data = await asyncio.wait_for(reader.read(65536), 0.5)
            except asyncio.TimeoutError:
                continue
            if not data:
                if not got_first:
                    counters["closed_early"] += 1
                else:
                    counters["ended_while_held"] += 1
                break
            counters["bytes"] += len(data)
            if not got_first:
                buf += data
                if b"\ndata:" in buf:
                    got_first = True
                    counters["open"] += 1
                    opened.set()
                elif len(buf) > 65536:
                    break
        if got_first and stop.is_set():
            counters["held_to_end"] += 1
    except OSError:
        counters["io_errors"] += 1
    finally:
        opened.set()
        writer.close()


async def hold_main(args: argparse.Namespace) -> dict:
    host, port, payload = request_bytes(args.url, args.model, keep_alive=True)
    counters = {k: 0 for k in ("open", "connect_failed", "closed_early", "ended_while_held", "io_errors", "held_to_end", "bytes")}
    stop = asyncio.Event()
    tasks = []
    gate = asyncio.Semaphore(args.ramp)
    start = time.monotonic()

    async def launch():
        async with gate:
            opened = asyncio.Event()
            task = asyncio.create_task(hold_one(host, port, payload, opened, counters, stop, args.timeout))
            tasks.append(task)
            try:
                await asyncio.wait_for(opened.wait(), args.timeout)
            except asyncio.TimeoutError:
                pass

    await asyncio.gather(*(launch() for _ in range(args.n)))
    ramp_s = time.monotonic() - start
    samples = []
    for _ in range(max(1, int(args.hold_s / 0.5))):
        await asyncio.sleep(0.5)
        try:
            samples.append(rss_kb(args.pid))
        except OSError:
            break
    open_at_end = counters["open"] - counters["ended_while_held"] - counters["closed_early"]
    stop.set()
    await asyncio.wait(tasks, timeout=10)
    return {
        "requested": args.n,
        "opened": counters["open"],
        "open_while_sampling": open_at_end,
        "ramp_s": round(ramp_s, 2),
        "rss_kb_max": max(samples) if samples else 0,
        "rss_kb_last": samples[-1] if samples else 0,
        **{k: v for k, v in counters.items() if k not in ("open",)},
    }


def cmd_hold(args: argparse.Namespace) -> None:
    print(json.dumps(asyncio.run(hold_main(args))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("ttfb")
    t.add_argument("--target", action="append", required=True, help="NAME=URL,MODEL (repeatable)")
    t.add_argument("-n", type=int, default=200)
    t.add_argument("--warmup", type=int, default=20)
    t.add_argument("--timeout", type=float, default=10.0)
    t.add_argument("--max-seconds", type=float, default=60.0)
    t.set_defaults(func=cmd_ttfb)
    h = sub.add_parser("hold")
    h.add_argument("--url", required=True)
    h.add_argument("--model", required=True)
    h.add_argument("--pid", type=int, required=True, help="process whose VmRSS is sampled")
    h.add_argument("-n", type=int, default=2000)
    h.add_argument("--ramp", type=int, default=200, help="streams being opened at once")
    h.add_argument("--hold-s", type=float, default=5.0)
    h.add_argument("--timeout", type=float, default=30.0)
    h.set_defaults(func=cmd_hold)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
