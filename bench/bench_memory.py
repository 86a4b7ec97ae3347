"""Memory (issue 9, item 7): the RSS of a `feedlab serve massive` per idle connection, per 1,000
subscribed contracts, and over a minute of churning connections (flat: no growth beyond noise).

RSS is `VmRSS` from /proc/PID/status of the server subprocess (`--rate 5000`, so the traffic does
not grow with the contracts watched). The baseline is the same server's RSS just before each step,
measured in the same run:
  - idle: N connections that connect and authenticate, then only hold the socket;
  - contracts: connections that each subscribe `Q` and `T` for 1,000 contracts of their own (the
    per-connection quote limit) and read the stream; the increment per 1,000 contracts covers the
    market's state for them and the server's subscription tables;
  - churn: `bench/soak.py`'s clients (connect, subscribe from a fixed pool, read, close cleanly or
    drop; not its rolling client, whose contracts take minutes to level off) for
    `--churn-seconds`; growth after a warm-up, from a least-squares line through RSS samples.
    `make soak` is the ten-minute version, with the rolling client.

    .venv/bin/python bench/bench_memory.py [--idle 500] [--contract-connections 3]
        [--churn-seconds 60] [--churn-clients 50]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import orjson
import websockets.asyncio.client
from websockets.asyncio.client import ClientConnection

sys.path.insert(0, str(Path(__file__).resolve().parent))
import soak  # the churning clients and the RSS sampling, shared with `make soak`

MIB = soak.MIB


async def authenticated(url: str, key: str) -> ClientConnection:
    ws = await websockets.asyncio.client.connect(
        url, max_size=1 << 20, compression=None, open_timeout=60, ping_interval=None
    )
    await ws.recv()  # connected
    await ws.send(orjson.dumps({"action": "auth", "params": key}).decode())
    await ws.recv()  # auth_success
    return ws


async def drain(ws: ClientConnection) -> None:
    try:
        async for _ in ws:
            pass
    except Exception:  # the benchmark closes it; how it ends does not matter
        pass


async def settle(pid: int, seconds: float = 3.0) -> int:
    """RSS after `seconds`, once it stopped moving much (the lowest of the last few readings)."""
    readings = []
    for _ in range(6):
        await asyncio.sleep(seconds / 6)
        readings.append(soak.rss_bytes(pid))
    return min(readings[-3:])


async def measure(server: soak.Server, idle: int, contract_connections: int) -> None:
    url = server.urls["massive"]
    pid = server.pid
    base = await settle(pid)
    print(f"  server RSS at start: {base / MIB:.1f} MiB, {soak.open_fds(pid)} fds")

    connections = []
    for i in range(idle):
        connections.append(await authenticated(url, f"idle-{i}"))
    with_idle = await settle(pid)
    fds = soak.open_fds(pid)
    print(
        f"  {idle} idle connections: RSS {with_idle / MIB:.1f} MiB ({fds} fds): "
        f"{(with_idle - base) / idle / 1024:.1f} KiB per idle connection"
    )
    await asyncio.gather(*(ws.close() for ws in connections))
    after_idle = await settle(pid)
    print(
        f"  after closing them: RSS {after_idle / MIB:.1f} MiB "
        f"({(after_idle - base) / MIB:+.1f} MiB over the start; {soak.open_fds(pid)} fds)"
    )

    before = after_idle
    increments = []
    readers = []
    for c in range(contract_connections):
        ws = await authenticated(url, f"contracts-{c}")
        symbols = [
            f"O:QQQ{expiration}{right}{strike * 1000:08d}"
            for expiration in (f"25{m:02d}20" for m in (c * 4 + 1, c * 4 + 2))
            for right in "CP"
            for strike in range(200 + c, 700 + c)
        ][:1000]
        params = ",".join(f"{channel}.{s}" for s in symbols for channel in ("Q", "T"))
        await ws.send(orjson.dumps({"action": "subscribe", "params": params}).decode())
        readers.append(asyncio.create_task(drain(ws)))
        connections = [ws]
        now = await settle(pid, 6.0)
        increments.append(now - before)
        print(
            f"  + connection {c + 1} with 1,000 contracts: RSS {now / MIB:.1f} MiB "
            f"({(now - before) / MIB:+.1f} MiB)"
        )
        before = now
    per_thousand = sorted(increments)[len(increments) // 2]
    print(
        f"  per 1,000 subscribed contracts: {per_thousand / MIB:.1f} MiB "
        f"(median of {len(increments)} steps)"
    )
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="RSS of feedlab serve: connections, contracts")
    parser.add_argument("--idle", type=int, default=500)
    parser.add_argument("--contract-connections", type=int, default=3)
    parser.add_argument("--churn-seconds", type=float, default=60.0)
    parser.add_argument("--churn-clients", type=int, default=50)
    args = parser.parse_args()
    log = Path(tempfile.gettempdir()) / "feedlab-bench-memory.log"
    print("memory: feedlab serve massive --rate 5000")
    server = soak.start_server(["massive"], ["--rate", "5000"], log)
    try:
        asyncio.run(measure(server, args.idle, args.contract_connections))
    finally:
        server.stop()

    print(
        f"churn: feedlab serve all --rate 2000, {args.churn_clients} clients for "
        f"{args.churn_seconds:g} s (the soak's clients; `make soak` runs it for 10 minutes)"
    )
    server = soak.start_server(["all"], ["--rate", "2000"], log)
    try:
        time.sleep(1.0)
        result = asyncio.run(
            soak.soak(
                server,
                args.churn_seconds,
                args.churn_clients,
                seed=1,
                interval=2.0,
                max_growth_mib=2.0,  # the soak's defaults
                noise_mib=4.0,
                warmup=args.churn_seconds / 3,
                out=lambda line: None,
                # Connection churn over the fixed pool: the rolling client's contracts take
                # minutes to level off (their lives end a minute after it leaves): `make soak`.
                rolling=False,
            )
        )
    finally:
        server.stop()
    soak.report(result)
    verdict = "flat" if result.flat and result.fds_ok else "GROWING"
    print(f"  churn verdict: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
