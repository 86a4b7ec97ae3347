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

The baseline, measured in the same run by the same clients: a bare asyncio `websockets` server
(`--bare-server`, in this file) that offers the same load, Poisson arrivals at `rate /
connections` per connection. Every millisecond it sends each connection the events whose time
has passed, one frame of orjson-encoded Massive quotes and trades: the least a server can do
with this load on this machine, clients included. For scale, the same per-connection load on
`--baseline` connections (10) is measured too.

    .venv/bin/python bench/bench_fanout.py [--connections 200] [--contracts 50] [--rate 50000]
        [--processes 2] [--seconds 15] [--baseline 10]

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def mock_argv(rate: int, connections: int) -> list[str]:
    """`feedlab serve massive --port 0 --rate N`."""
    return [str(FEEDLAB), "serve", "massive", "--port", "0", "--rate", str(rate)]


def bare_argv(rate: int, connections: int) -> list[str]:
    """The bare baseline server (this file, `--bare-server`)."""
    return [sys.executable, __file__, "--bare-server", str(rate), str(connections)]


def start_server(argv: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start a server that prints `... listening on URL`; returns the process and its URL."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"{argv[1]} did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].strip()


# -- the bare baseline server ----------------------------------------------------------------------


async def bare_server(rate: float, connections: int) -> None:
    """Massive's handshake, then Poisson quotes (and 1 in 30 a trade) on the subscribed
    contracts at `rate / connections` per connection; every 1 ms each connection gets the
    events whose time has passed, in one frame."""
    import random

    import websockets.asyncio.server
    import websockets.exceptions

    per_connection = rate / connections
    rng = random.Random(1)
    subscribed: dict[Any, tuple[list[str], list[float]]] = {}  # ws -> (symbols, [next t])

    async def handler(ws: Any) -> None:
        await ws.send(b'[{"ev":"status","status":"connected","message":"Connected"}]', text=True)
        await ws.recv()
        await ws.send(b'[{"ev":"status","status":"auth_success","message":"ok"}]', text=True)
        params = orjson.loads(await ws.recv())["params"].split(",")
        symbols = sorted({p.split(".", 1)[1] for p in params})
        subscribed[ws] = (symbols, [time.time()])
        try:
            await ws.wait_closed()
        finally:
            del subscribed[ws]

    async with websockets.asyncio.server.serve(
        handler, "127.0.0.1", 0, compression=None, ping_interval=None, max_size=1 << 20
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"bare listening on ws://127.0.0.1:{port}/options", flush=True)
        sequence = 1
        while True:
            await asyncio.sleep(0.001)
            now = time.time()
            for ws, (symbols, next_t) in list(subscribed.items()):
                t = next_t[0]
                events = []
                while t <= now:
                    sequence += 1
                    sym, ms = rng.choice(symbols), int(t * 1000)
                    if sequence % 30:
                        events.append(
                            {"ev": "Q", "sym": sym, "bx": 304, "ax": 302, "bp": 6.44, "ap": 6.87,
                             "bs": 12, "as": 21, "t": ms, "q": sequence}
                        )  # fmt: skip
                    else:
                        events.append(
                            {"ev": "T", "sym": sym, "x": 304, "p": 6.5, "s": 3, "c": [227],
                             "t": ms, "q": sequence}
                        )  # fmt: skip
                    t += rng.expovariate(per_connection)
                next_t[0] = t
                if events:
                    try:
                        await ws.send(orjson.dumps(events), text=True)
                    except websockets.exceptions.ConnectionClosed:
                        pass


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
    received in the window (known only once every connection of every process is ready).
    Until then it reads and drops: a connection that stopped reading while the others got
    ready would pile up events in the server and measure that instead."""
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
            if not ready.is_set() and '"t":' in str(message):
                ready.set()
        start, end = window.result()
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

    async def ready_or_ended(k: int) -> None:
        waiter = asyncio.ensure_future(readies[k].wait())
        await asyncio.wait({waiter, tasks[k]}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()

    await asyncio.gather(*(ready_or_ended(k) for k in range(count)))
    ended = [(first + k, t) for k, t in enumerate(tasks) if t.done()]
    if ended:  # a refused handshake, a closed connection: the setup failed, and why
        i, task = ended[0]
        why = repr(task.exception()) if task.exception() else "closed before any event"
        print(f"{len(ended)} connection(s) failed, the first (#{i}): {why}", flush=True)
        return {}
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
    server: Callable[[int, int], list[str]],
    connections: int,
    contracts: int,
    rate: int,
    processes: int,
    seconds: float,
    warmup: float,
    setup_timeout: float,
) -> dict[str, object] | None:
    """One measurement; None if the connections did not all get data within `setup_timeout`."""
    proc, url = start_server(server(rate, connections))
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
            said = c.stdout.readline().strip() if ready else ""
            if said != "ready":
                print(
                    f"  {connections} connections: not all had data {setup_timeout:g} s after "
                    f"connecting (server CPU {cpu_seconds(proc.pid):.0f} s so far) {said}"
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
        cpu_start = cpu_seconds(proc.pid)
        client_cpu_start = sum(cpu_seconds(c.pid) for c in clients)
        time.sleep(max(0.0, end - time.time()))
        cpu_used = cpu_seconds(proc.pid) - cpu_start
        client_cpu = sum(cpu_seconds(c.pid) for c in clients) - client_cpu_start
        outputs = [c.communicate(timeout=60)[0] for c in clients]
        if any(c.returncode != 0 for c in clients):
            raise RuntimeError("a client process failed")
        if proc.poll() is not None:
            raise RuntimeError("the server died")
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
                c.wait()
        stop(proc)
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
        "server_cpu": cpu_used / seconds,
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
        f"    server CPU {100 * float(r['server_cpu']):.0f}% of one core; "  # type: ignore[arg-type]
        f"clients {100 * float(r['client_cpu']):.0f}%"  # type: ignore[arg-type]
    )
    return p99


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--bare-server":
        asyncio.run(bare_server(float(sys.argv[2]), int(sys.argv[3])))
        return 0
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
        "--baseline", type=int, default=10, help="connections of the small run (same load each)"
    )
    args = parser.parse_args()
    per_connection = args.rate / args.connections
    print(
        f"fan-out: {args.connections} connections x {args.contracts} contracts (Q and T, all "
        f"distinct) at {args.rate:,} events/s in total, over {args.processes} asyncio client "
        f"process(es); {args.seconds:g} s window after {args.warmup:g} s warm-up"
    )
    full_load = (args.connections, args.contracts, args.rate, args.processes, args.seconds)
    timing = (args.warmup, args.setup_timeout)
    bare = run(bare_argv, *full_load, *timing)
    if bare is None:
        return 1
    bare_p99 = describe(f"bare asyncio websockets server, {args.connections} connections", bare)
    n = min(args.baseline, args.connections)
    small = run(
        mock_argv,
        n,
        args.contracts,
        round(per_connection * n),
        1,
        min(args.seconds, 10.0),
        *timing,
    )
    if small is None:
        return 1
    describe(f"feedlab serve massive, {n} connections at --rate {per_connection * n:g}", small)
    full = run(mock_argv, *full_load, *timing)
    if full is None:
        return 0  # printed: the mock could not take the load (a finding, not a crash)
    p99 = describe(f"feedlab serve massive, {args.connections} connections", full)
    print(
        f"  ratio feedlab / bare at {args.connections} connections: p99 t -> receipt "
        f"{p99:.1f} / {bare_p99:.1f} ms ({p99 / bare_p99:.1f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
