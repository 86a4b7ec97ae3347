"""Fan-out (issue 9, item 4): many client connections on one `feedlab serve massive` at a fixed
offered load. Latency from an event's timestamp to the client's receipt, events per connection
(does any starve?) and the mock's CPU share.

`feedlab serve massive --port 0 --rate 50000` runs as a subprocess (the market offers 50,000
events/s in total, quotes and trades, over every watched contract). 200 connections, each with
its own API key (Massive allows one connection per key), each subscribe `Q` and `T` for 50
contracts of its own: 10,000 distinct contracts, so every event the market makes goes to exactly
one connection and the delivered load is the offered load. The clients are asyncio `websockets`
connections split over two client processes (the machine has 2 cores: one for the mock, one for
the clients, shared with whatever else runs).

What the latency means. Under `serve` the market's clock is the real clock: it starts at the
wall-clock reading taken when the command starts, and an event's `t` (Unix ms) is that start plus
the event's market time, so `receipt - t` compares two readings of the same wall clock: it is
the issue's "latency from the event's timestamp to the client's receipt", with the target applied
to it directly. The mock publishes what is due every 1 ms at most (`mocks.serve.LIVE_RESOLUTION`)
and sends each batch as it comes; under load a tick takes longer and carries more. `t` is
truncated to the millisecond, so a figure reads up to 1 ms high.

The baseline, measured in the same run: one connection with the same 50 contracts per
connection and the same per-connection load (`--rate 250`), so the ratio shows what 200
connections cost over one.

    .venv/bin/python bench/bench_fanout.py [--connections 200] [--contracts 50] [--rate 50000]
        [--processes 2] [--seconds 15]

Prints the figures and exits 0 (non-zero only if the mock could not be started or measured):
a benchmark informs, CI never asserts on wall-clock speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
FEEDLAB = ROOT / ".venv" / "bin" / "feedlab"
BIN_MS = 0.1  # latency histogram resolution
EXPIRATIONS = ("250321", "250620", "250919", "251219")


def contract(n: int) -> str:
    """The n-th of 10,000+ distinct, well-formed SPY contracts: strikes 300..., C and P, four
    expirations. Connection i takes n = i, i + connections, ... so every connection gets a spread
    of strikes and expirations (near and far from the money) and none is favoured."""
    expiration = EXPIRATIONS[n % len(EXPIRATIONS)]
    right = "CP"[(n // len(EXPIRATIONS)) % 2]
    strike = 300 + n // (2 * len(EXPIRATIONS))
    return f"O:SPY{expiration}{right}{strike * 1000:08d}"


# -- the mock --------------------------------------------------------------------------------------


def start_mock(rate: int) -> tuple[subprocess.Popen[str], str]:
    """`feedlab serve massive --port 0 --rate N`; returns the process and its URL."""
    proc = subprocess.Popen(
        [str(FEEDLAB), "serve", "massive", "--port", "0", "--rate", str(rate)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"feedlab serve did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].strip()


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- a client process ------------------------------------------------------------------------------


async def one_connection(
    url: str,
    key: str,
    symbols: list[str],
    ready: asyncio.Event,
    window: asyncio.Future[tuple[float, float]],
    out: dict[str, object],
) -> None:
    """Auth, subscribe, read; `ready` when the first event is in; then note every frame
    received in the window (known only once every connection of every process is ready)."""
    import websockets.asyncio.client

    latencies: Counter[int] = Counter()
    frames = 0
    events = 0
    params = ",".join(f"{channel}.{s}" for s in symbols for channel in ("Q", "T"))
    async with websockets.asyncio.client.connect(
        url, max_size=1 << 20, compression=None, open_timeout=120, ping_interval=None
    ) as ws:
        await ws.recv()  # connected
        await ws.send(orjson.dumps({"action": "auth", "params": key}).decode())
        await ws.recv()  # auth_success
        await ws.send(orjson.dumps({"action": "subscribe", "params": params}).decode())
        while not window.done():
            message = await ws.recv()
            if '"t":' in str(message):
                ready.set()
                break
        start, end = await asyncio.shield(window)
        try:
            async with asyncio.timeout(max(0.0, end - time.time())):
                while True:
                    message = await ws.recv()
                    received = time.time()
                    if received < start:
                        continue
                    stamps = [e["t"] for e in orjson.loads(message) if e.get("ev") in ("Q", "T")]
                    if not stamps:
                        continue
                    events += len(stamps)
                    frames += 1
                    received_ms = received * 1000.0
                    for t in stamps:
                        latencies[int((received_ms - t) / BIN_MS)] += 1
        except TimeoutError:
            pass
    out.update(events=events, latencies=latencies, frames=frames)


async def client_main(
    url: str, first: int, count: int, contracts: int, stride: int
) -> dict[str, object]:
    """Prints `ready` once every connection has had an event, then reads the window
    ("START END", wall-clock seconds) from stdin."""
    loop = asyncio.get_running_loop()
    window: asyncio.Future[tuple[float, float]] = loop.create_future()
    results: list[dict[str, object]] = [{} for _ in range(count)]
    readies = [asyncio.Event() for _ in range(count)]
    tasks = []
    for k in range(count):
        i = first + k
        symbols = [contract(i + j * stride) for j in range(contracts)]
        tasks.append(
            asyncio.create_task(
                one_connection(url, f"key-{i}", symbols, readies[k], window, results[k])
            )
        )
    await asyncio.gather(*(r.wait() for r in readies))
    print("ready", flush=True)
    line = await loop.run_in_executor(None, sys.stdin.readline)
    start, end = (float(x) for x in line.split())
    window.set_result((start, end))
    await asyncio.gather(*tasks)
    latencies: Counter[int] = Counter()
    frames = 0
    for r in results:
        latencies.update(r["latencies"])  # type: ignore[call-overload]
        frames += r["frames"]  # type: ignore[operator]
    return {
        "events": [r["events"] for r in results],
        "latencies": dict(latencies),
        "frames": frames,
    }


# -- the measurement -------------------------------------------------------------------------------


def percentile(histogram: Counter[int], q: float) -> float:
    """The q-quantile (0..1) of a histogram of BIN_MS bins, in ms (the bin's upper edge)."""
    total = sum(histogram.values())
    rank = q * total
    seen = 0
    for b in sorted(histogram):
        seen += histogram[b]
        if seen >= rank:
            return (b + 1) * BIN_MS
    return math_inf()


def math_inf() -> float:
    return float("inf")


def run(
    connections: int,
    contracts: int,
    rate: int,
    processes: int,
    seconds: float,
    warmup: float,
    setup_timeout: float,
) -> dict[str, object] | None:
    """One measurement; None if the connections did not all get data within `setup_timeout`."""
    mock, url = start_mock(rate)
    clients: list[subprocess.Popen[str]] = []
    try:
        processes = max(1, min(processes, connections))
        share = -(-connections // processes)
        began = time.monotonic()
        for p in range(processes):
            first, count = p * share, min(share, connections - p * share)
            args = [url, str(first), str(count), str(contracts), str(connections)]
            clients.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--client", *args],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        deadline = time.monotonic() + setup_timeout
        for c in clients:
            assert c.stdout is not None
            ready, _, _ = select.select([c.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready or c.stdout.readline().strip() != "ready":
                print(
                    f"  {connections} connections: not all had data {setup_timeout:g} s after "
                    f"connecting (mock CPU {cpu_seconds(mock.pid):.0f} s so far)"
                )
                return None
        setup = time.monotonic() - began
        start = time.time() + warmup
        end = start + seconds
        for c in clients:
            assert c.stdin is not None
            c.stdin.write(f"{start!r} {end!r}\n")
            c.stdin.flush()
        time.sleep(max(0.0, start - time.time()))
        cpu_start = cpu_seconds(mock.pid)
        client_cpu_start = sum(cpu_seconds(c.pid) for c in clients)
        time.sleep(max(0.0, end - time.time()))
        cpu_used = cpu_seconds(mock.pid) - cpu_start
        client_cpu = sum(cpu_seconds(c.pid) for c in clients) - client_cpu_start
        outputs = [c.communicate(timeout=60)[0] for c in clients]
        if any(c.returncode != 0 for c in clients):
            raise RuntimeError("a client process failed")
        if mock.poll() is not None:
            raise RuntimeError("the mock died")
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
                c.wait()
        stop(mock)
    latencies: Counter[int] = Counter()
    events: list[int] = []
    frames = 0
    for text in outputs:
        part = json.loads(text)
        latencies.update({int(k): v for k, v in part["latencies"].items()})
        events.extend(part["events"])
        frames += part["frames"]
    return {
        "connections": connections,
        "seconds": seconds,
        "setup": setup,
        "events": events,
        "latencies": latencies,
        "frames": frames,
        "mock_cpu": cpu_used / seconds,
        "client_cpu": client_cpu / seconds,
    }


def describe(name: str, r: dict[str, object]) -> float:
    """Print one measurement; returns its p99 from `t` to receipt, in ms."""
    events: list[int] = r["events"]  # type: ignore[assignment]
    latencies: Counter[int] = r["latencies"]  # type: ignore[assignment]
    seconds: float = r["seconds"]  # type: ignore[assignment]
    total = sum(events)
    p50, p99 = (percentile(latencies, q) for q in (0.5, 0.99))
    worst = (max(latencies) + 1) * BIN_MS if latencies else float("nan")
    starved = sum(1 for e in events if e == 0)
    print(
        f"  {name}: {total / seconds:,.0f} events/s delivered in {r['frames']:,} frames "
        f"(all connections had data {float(r['setup']):.1f} s after connecting)"  # type: ignore[arg-type]
    )
    print(
        f"    t -> receipt: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms "
        f"(target p99 < 5 ms: {'met' if p99 < 5.0 else 'NOT met'})"
    )
    if len(events) > 1:
        print(
            f"    events per connection over {seconds:g} s: min {min(events):,}, median "
            f"{statistics.median(events):,.0f}, max {max(events):,}; starved (none): {starved}"
        )
    print(
        f"    mock CPU {100 * float(r['mock_cpu']):.0f}% of one core; "  # type: ignore[arg-type]
        f"clients {100 * float(r['client_cpu']):.0f}%"  # type: ignore[arg-type]
    )
    return p99


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        url, first, count, contracts, stride = sys.argv[2:7]
        result = asyncio.run(client_main(url, int(first), int(count), int(contracts), int(stride)))
        sys.stdout.write(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(description="fan-out latency of feedlab serve massive")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--contracts", type=int, default=50, help="per connection")
    parser.add_argument("--rate", type=int, default=50_000, help="total events/s offered")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--seconds", type=float, default=15.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=3.0, help="after every connection has data")
    parser.add_argument("--setup-timeout", type=float, default=120.0)
    parser.add_argument(
        "--baseline", type=int, default=10, help="connections of the baseline (same load each)"
    )
    args = parser.parse_args()
    per_connection = args.rate / args.connections
    print(
        f"fan-out: feedlab serve massive --rate {args.rate}; {args.connections} connections x "
        f"{args.contracts} contracts (Q and T, all distinct) over {args.processes} asyncio "
        f"client process(es); {args.seconds:g} s window after {args.warmup:g} s warm-up"
    )
    n = min(args.baseline, args.connections)
    base = run(
        n,
        args.contracts,
        round(per_connection * n),
        1,
        min(args.seconds, 10.0),
        args.warmup,
        args.setup_timeout,
    )
    if base is None:
        return 1
    base_p99 = describe(f"baseline: {n} connections at --rate {per_connection * n:g}", base)
    full = run(
        args.connections,
        args.contracts,
        args.rate,
        args.processes,
        args.seconds,
        args.warmup,
        args.setup_timeout,
    )
    if full is None:
        return 0  # printed: the mock could not take the load (a finding, not a crash)
    p99 = describe(f"{args.connections} connections at --rate {args.rate}", full)
    print(
        f"  ratio {args.connections} / {n} connections: p99 t -> receipt {p99:.1f} / "
        f"{base_p99:.1f} ms ({p99 / base_p99:.1f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
