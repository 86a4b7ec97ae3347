"""Soak (issue 10): churning clients against `feedlab serve` for minutes; memory must stay flat.

50 asyncio `websockets` clients connect, authenticate, subscribe a few contracts from a fixed
pool, read for a while and go, again and again: half the goodbyes are clean close frames, half
abrupt drops (the TCP connection closed without a close frame). With `serve all` the clients are
split over the vendors: Massive and Amberdata each get their own API key per client (Massive
allows one connection per key); Theta gets a few, because the terminal takes one client at a
time (a newcomer drops the one before, which is churn too). The contract pool is fixed, so the
set of contracts the market simulates stops growing after warm-up: what grows after that is a
leak, not new work. Beside them a rolling client, 2 s after the last one left, names 20 contracts
nobody named before (`roll`): the market ends their lives a minute later and the vendors let go,
as they must for a feed handler rolling through strikes for days (a few hundred bytes stay, for
a day).

The server's RSS (`VmRSS` of /proc/PID/status) and open file descriptors are sampled every few
seconds. After the warm-up (the first third of the run, at least 30 s), the rest of the run is
cut into three equal spans and the median RSS of each taken: the sustained growth is the smaller
of the two rises between consecutive spans, extrapolated over the whole post-warm-up span. A leak
grows in every span; Python's allocator keeps the arenas it has used, so RSS also moves in
one-time steps (a market chunk of tens of thousands of events at once lifts the high-water mark
by 10-30 MiB, and the memory is reused afterwards), and a step lies in one rise only. Sustained
growth above `--max-growth` MiB per minute of post-warm-up span (default 2; the leaks this soak
found grew 14 MiB and more every minute), or above `--noise-mib` (default 4) if that is larger,
fails the soak. The least-squares line is printed too, for comparison. So does a server that
died, one that stopped serving (a fresh client per vendor must get data at the end), or more
open descriptors at the end than at the start (beyond a few). A leak slower than the threshold
(under 90-140 bytes per visit at the 15,000-23,000 visits a minute measured) passes: the
regression tests in `tests/test_serve_memory.py` count the server's objects themselves.

    .venv/bin/python bench/soak.py [--minutes 10] [--vendors all] [--clients 50] [--seed 1]
        [--max-growth 2] [--noise-mib 4] [--feedlab 'COMMAND']   (COMMAND + `serve ...`: a wrapper)

Exit status 0 if memory stayed flat and the server kept serving, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import websockets.asyncio.client
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import WebSocketException

ROOT = Path(__file__).resolve().parent.parent
FEEDLAB = ROOT / ".venv" / "bin" / "feedlab"
MIB = 1 << 20

# A fixed pool per vendor: clients pick from it, so the watched set is bounded.
MASSIVE_POOL = [
    f"O:SPY250620{right}{strike * 1000:08d}" for strike in range(500, 600, 5) for right in "CP"
]
THETA_POOL = [(20250620, strike * 1000, right) for strike in range(500, 600, 10) for right in "CP"]
AMBERDATA_POOL = [
    f"BTC-27JUN25-{strike}-{right}" for strike in range(50_000, 110_000, 5_000) for right in "CP"
]


# -- the server ------------------------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[str]
    urls: dict[str, str]  # vendor -> ws URL
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def errors(self) -> list[str]:
        """Lines the server logged about failures (a connection's bug, a traceback)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if "failed" in line or "Traceback" in line]


def start_server(
    vendors: list[str], extra: list[str], log: Path, feedlab: list[str] | None = None
) -> Server:
    """`feedlab serve VENDORS --port 0 ...`, stderr to `log`; waits for every listening line.
    `feedlab` replaces the command (e.g. a patched server, to check a fix)."""
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*(feedlab or [str(FEEDLAB)]), "serve", *vendors, "--port", "0", *extra],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert proc.stdout is not None
    expected = 3 if vendors == ["all"] else len(vendors)
    urls: dict[str, str] = {}
    while len(urls) < expected:
        line = proc.stdout.readline()
        if "listening on" not in line:
            proc.kill()
            raise RuntimeError(f"feedlab serve did not start: {line!r}; see {log}")
        name, url = line.split(" listening on ", 1)
        urls[name.strip()] = url.strip()
    return Server(proc, urls, log)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- one client's visit, per vendor ----------------------------------------------------------------


async def _connect(url: str, headers: dict[str, str] | None = None) -> ClientConnection:
    return await websockets.asyncio.client.connect(
        url,
        additional_headers=headers,
        max_size=1 << 20,
        compression=None,
        open_timeout=20,
        ping_interval=None,
    )


# What a visit asks for, as JSON texts: shared with tests/test_serve_memory.py, which makes the
# same visits in-process. Massive's auth and subscribe go after `connected` and `auth_success`.


def massive_subscribe(symbols: list[str]) -> str:
    """A Massive subscribe to quotes and trades of these contracts."""
    params = ",".join(f"{channel}.{s}" for s in symbols for channel in ("Q", "T"))
    return orjson.dumps({"action": "subscribe", "params": params}).decode()


def theta_quote_streams(streams: list[tuple[int, int, str]], first_id: int) -> list[str]:
    """Theta STREAM requests for SPY quotes of (expiration, strike, right), ids from `first_id`."""
    return [
        orjson.dumps(
            {
                "msg_type": "STREAM",
                "sec_type": "OPTION",
                "req_type": "QUOTE",
                "add": True,
                "id": first_id + n,
                "contract": {
                    "root": "SPY",
                    "expiration": expiration,
                    "strike": strike,
                    "right": right,
                },
            }
        ).decode()
        for n, (expiration, strike, right) in enumerate(streams)
    ]


def amberdata_snapshots(instruments: list[str]) -> list[str]:
    """Amberdata subscriptions to these instruments' order-book snapshots."""
    return [
        orjson.dumps(
            {
                "jsonrpc": "2.0",
                "id": n + 1,
                "method": "subscribe",
                "params": [
                    "market:options:order:snapshots",
                    {"instrument": instrument, "exchange": "deribit"},
                ],
            }
        ).decode()
        for n, instrument in enumerate(instruments)
    ]


def massive_requests(slot: int, rng: random.Random) -> tuple[str, str]:
    """(auth, subscribe): Q and T for 1-10 contracts of the pool."""
    auth = orjson.dumps({"action": "auth", "params": f"soak-{slot}"}).decode()
    return auth, massive_subscribe(rng.sample(MASSIVE_POOL, rng.randint(1, 10)))


def theta_requests(rng: random.Random) -> list[str]:
    """Quote streams for 1-5 contracts of the pool, with unique, increasing ids."""
    base = rng.randrange(1_000_000)
    return theta_quote_streams(rng.sample(THETA_POOL, rng.randint(1, 5)), base)


def amberdata_requests(rng: random.Random) -> list[str]:
    """Order-book snapshots of 1-5 instruments of the pool."""
    return amberdata_snapshots(rng.sample(AMBERDATA_POOL, rng.randint(1, 5)))


async def massive_visit(url: str, slot: int, rng: random.Random) -> ClientConnection:
    ws = await _connect(url)
    auth, subscribe = massive_requests(slot, rng)
    await ws.recv()  # connected
    await ws.send(auth)
    await ws.recv()  # auth_success
    await ws.send(subscribe)
    return ws


async def theta_visit(url: str, slot: int, rng: random.Random) -> ClientConnection:
    ws = await _connect(url)
    for request in theta_requests(rng):
        await ws.send(request)
    return ws


async def amberdata_visit(url: str, slot: int, rng: random.Random) -> ClientConnection:
    ws = await _connect(url, {"x-api-key": f"UAK-soak-{slot}"})
    for request in amberdata_requests(rng):
        await ws.send(request)
    return ws


# One more client comes ROLL_EVERY seconds after the last one left and names ROLL_CONTRACTS
# contracts no client has named before (strikes counting up), as feed handlers do when
# expirations and strikes roll: on a fixed pool no contract ever goes a minute unwanted, so the
# market never ends a life and the vendors never let one go (a rolling `serve --rate` died within
# two minutes on 2026-12-07). About 300 new contracts a minute: what is kept per contract ever
# named (a few hundred bytes) stays far under the growth allowed.
ROLL_EVERY = 2.0
ROLL_CONTRACTS = 20


def rolled_requests(vendor: str, n: int) -> list[str]:
    """The n-th rolling client's subscriptions (Massive's without the auth)."""
    strikes = range(1_000 + n * ROLL_CONTRACTS, 1_000 + (n + 1) * ROLL_CONTRACTS)
    if vendor == "massive":
        return [massive_subscribe([f"O:SPY250919C{k * 1000:08d}" for k in strikes])]
    if vendor == "theta":
        return theta_quote_streams([(20250919, k * 1000, "C") for k in strikes], 10_000_000 + n)
    return amberdata_snapshots([f"BTC-26DEC25-{k * 100}-C" for k in strikes])


async def rolling_visit(url: str, vendor: str, n: int) -> ClientConnection:
    ws = await _connect(url, {"x-api-key": f"UAK-roll-{n}"} if vendor == "amberdata" else None)
    if vendor == "massive":
        await ws.recv()  # connected
        await ws.send(orjson.dumps({"action": "auth", "params": f"roll-{n}"}).decode())
        await ws.recv()  # auth_success
    for request in rolled_requests(vendor, n):
        await ws.send(request)
    return ws


Visit = Callable[[str, int, random.Random], "asyncio.Future[ClientConnection] | object"]
VISITS = {"massive": massive_visit, "theta": theta_visit, "amberdata": amberdata_visit}


def vendor_for(slot: int, vendors: list[str]) -> str:
    """Theta takes one client at a time: with several vendors, every tenth client is Theta's."""
    if len(vendors) == 1:
        return vendors[0]
    others = [v for v in vendors if v != "theta"] or vendors
    if "theta" in vendors and slot % 10 == 9:
        return "theta"
    return others[slot % len(others)]


@dataclass
class Tally:
    visits: int = 0
    clean: int = 0
    dropped: int = 0
    rolled: int = 0  # rolling clients' visits (`roll`), counted in `visits` too
    messages: int = 0
    failures: list[str] = field(default_factory=list)


async def read_for(ws: ClientConnection, seconds: float, tally: Tally) -> None:
    """Read (and count) what comes for `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            async for _ in ws:
                tally.messages += 1
    except TimeoutError:
        pass


async def churn(
    urls: dict[str, str], slot: int, seed: int, until: float, tally: Tally, reading: float = 4.0
) -> None:
    """One client slot: visit, read 0.2-`reading` s, leave cleanly or abruptly; until `until`."""
    rng = random.Random(f"{seed}:{slot}")
    vendor = vendor_for(slot, list(urls))
    visit = VISITS[vendor]
    while time.monotonic() < until:
        try:
            ws = await visit(urls[vendor], slot, rng)
            await read_for(ws, rng.uniform(0.2, reading), tally)
            tally.visits += 1
            if rng.random() < 0.5:
                tally.clean += 1
                await ws.close()
            else:
                tally.dropped += 1
                ws.transport.abort()  # no close frame: the server sees the TCP connection go
        except (OSError, WebSocketException, TimeoutError) as exc:
            # Theta's terminal drops a client when the next one comes: expected churn.
            if vendor != "theta":
                tally.failures.append(f"{vendor} slot {slot}: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.2)


async def roll(urls: dict[str, str], until: float, tally: Tally, reading: float = 1.0) -> None:
    """A rolling client every `ROLL_EVERY` s, the vendors in turn: subscribe, read, stop (Theta's
    streams outlive the connection otherwise), leave."""
    vendors = list(urls)
    n = 0
    while time.monotonic() < until:
        vendor = vendors[n % len(vendors)]
        try:
            ws = await rolling_visit(urls[vendor], vendor, n)
            await read_for(ws, reading, tally)
            if vendor == "theta":
                await ws.send('{"msg_type":"STOP"}')
            await ws.close()
            tally.visits += 1
            tally.rolled += 1
        except (OSError, WebSocketException, TimeoutError) as exc:
            if vendor != "theta":  # (Theta's terminal drops a client when the next one comes)
                tally.failures.append(f"{vendor} rolling client {n}: {type(exc).__name__}: {exc}")
        n += 1
        await asyncio.sleep(ROLL_EVERY)


async def serving(urls: dict[str, str], timeout: float = 15.0) -> dict[str, bool]:
    """Does a fresh client of each vendor get data within `timeout`?"""
    results: dict[str, bool] = {}
    rng = random.Random(0)
    for vendor, url in urls.items():
        ok = False
        try:
            async with asyncio.timeout(timeout):
                ws = await VISITS[vendor](url, 10_000, rng)
                async for message in ws:
                    text = message if isinstance(message, str) else message.decode()
                    if any(
                        mark in text for mark in ('"ev":"Q"', '"ev":"T"', "QUOTE", "subscription")
                    ):
                        ok = True
                        break
                await ws.close()
        except (OSError, WebSocketException, TimeoutError):
            ok = False
        results[vendor] = ok
    return results


# -- the soak --------------------------------------------------------------------------------------


def slope_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares (slope per second, intercept)."""
    n = len(points)
    if n < 2:
        return 0.0, points[0][1] if points else 0.0
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    sxy = sum((p[0] - mx) * (p[1] - my) for p in points)
    slope = sxy / sxx if sxx else 0.0
    return slope, my - slope * mx


def sustained_growth(points: list[tuple[float, float]]) -> float:
    """Growth over the points' span that every part of it shares: the span cut into three equal
    times, the smaller of the two rises between consecutive thirds' medians, times three. A
    steady leak rises in both; a one-time step (the allocator's high-water mark) in one only."""
    if len(points) < 3:
        return 0.0
    start, end = points[0][0], points[-1][0]
    third = (end - start) / 3
    parts: list[list[float]] = [[], [], []]
    for t, value in points:
        parts[min(2, int((t - start) / third)) if third > 0 else 0].append(value)
    if not all(parts):
        return 0.0
    m1, m2, m3 = (statistics.median(part) for part in parts)
    return 3 * min(m2 - m1, m3 - m2)


@dataclass
class SoakResult:
    samples: list[tuple[float, int, int]]  # (seconds since start, RSS bytes, open fds)
    tally: Tally
    warmup: float
    growth: float  # bytes over the post-warm-up span that every third of it shares
    fitted: float  # bytes over the post-warm-up span, from the least-squares line (shown only)
    span: float  # seconds after warm-up
    threshold: float
    alive: bool
    serving: dict[str, bool]

    @property
    def flat(self) -> bool:
        return self.growth <= self.threshold

    @property
    def fds_ok(self) -> bool:
        return self.samples[-1][2] <= self.samples[0][2] + 8


async def soak(
    server: Server,
    seconds: float,
    clients: int,
    seed: int,
    interval: float,
    max_growth_mib: float,
    noise_mib: float,
    warmup: float | None = None,
    out: Callable[[str], None] = print,
    rolling: bool = True,
) -> SoakResult:
    started = time.monotonic()
    until = started + seconds
    tally = Tally()
    samples = [(0.0, rss_bytes(server.pid), open_fds(server.pid))]
    tasks = [
        asyncio.create_task(churn(server.urls, slot, seed, until, tally)) for slot in range(clients)
    ]
    if rolling:
        tasks.append(asyncio.create_task(roll(server.urls, until, tally)))
    next_report = started + 60.0
    while time.monotonic() < until and server.alive():
        await asyncio.sleep(min(interval, max(0.0, until - time.monotonic())))
        if not server.alive():
            break
        samples.append((time.monotonic() - started, rss_bytes(server.pid), open_fds(server.pid)))
        if time.monotonic() >= next_report:
            next_report += 60.0
            at, rss, fds = samples[-1]
            out(
                f"  {at:5.0f} s: RSS {rss / MIB:.1f} MiB, {fds} fds, {tally.visits} visits, "
                f"{len(tally.failures)} failures"
            )
    await asyncio.gather(*tasks, return_exceptions=True)
    alive = server.alive()
    if alive:
        await asyncio.sleep(2.0)  # the last connections' endings reach the server
        samples.append((time.monotonic() - started, rss_bytes(server.pid), open_fds(server.pid)))
    serving_now = await serving(server.urls) if alive else {v: False for v in server.urls}
    warm = warmup if warmup is not None else max(30.0, seconds / 3)
    after = [(t, float(r)) for t, r, _ in samples if t >= warm]
    span = after[-1][0] - after[0][0] if len(after) > 1 else 0.0
    slope, _ = slope_fit(after)
    threshold = max(max_growth_mib * MIB * span / 60, noise_mib * MIB)
    return SoakResult(
        samples,
        tally,
        warm,
        sustained_growth(after),
        slope * span,
        span,
        threshold,
        alive,
        serving_now,
    )


def report(result: SoakResult, out: Callable[[str], None] = print) -> None:
    rss = [s[1] for s in result.samples]
    fds = [s[2] for s in result.samples]
    t = result.tally
    out(
        f"  {t.visits} visits ({t.clean} clean closes, {t.dropped} abrupt drops, {t.rolled} "
        f"rolling clients naming {t.rolled * ROLL_CONTRACTS:,} new contracts), "
        f"{t.messages:,} messages read, {len(t.failures)} failed visits"
    )
    for failure in t.failures[:5]:
        out(f"    {failure}")
    out(
        f"  RSS start {rss[0] / MIB:.1f} MiB, end {rss[-1] / MIB:.1f} MiB, "
        f"max {max(rss) / MIB:.1f} MiB; open fds start {fds[0]}, end {fds[-1]}, max {max(fds)}"
    )
    minutes = result.span / 60
    rate = result.growth / MIB / minutes if minutes else 0.0
    out(
        f"  after {result.warmup:.0f} s warm-up ({minutes:.1f} min): sustained growth "
        f"{result.growth / MIB:+.1f} MiB ({rate:+.2f} MiB/min; threshold "
        f"{result.threshold / MIB:.1f} MiB); fitted line {result.fitted / MIB:+.1f} MiB"
    )
    out(
        f"  server alive: {result.alive}; serving at the end: "
        + ", ".join(f"{v} {'yes' if ok else 'NO'}" for v, ok in result.serving.items())
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="churning clients; memory must stay flat")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--vendors", nargs="+", default=["all"], help="all, or vendor names")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--max-growth", type=float, default=2.0, help="MiB per minute of sustained growth"
    )
    parser.add_argument("--noise-mib", type=float, default=4.0, help="growth always allowed")
    parser.add_argument("--rate", default="2000", help="feedlab serve --rate (total events/s)")
    parser.add_argument("--feedlab", default=None, help="the command instead of .venv/bin/feedlab")
    args = parser.parse_args()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"feedlab-soak-{os.getpid()}.log"
    command = args.feedlab.split() if args.feedlab else None
    server = start_server(args.vendors, ["--rate", args.rate], log, command)
    try:
        time.sleep(1.0)
        print(
            f"soak: feedlab serve {' '.join(args.vendors)} --rate {args.rate}, {args.clients} "
            f"churning clients for {args.minutes:g} min (pid {server.pid}, log {log})",
            flush=True,
        )
        result = asyncio.run(
            soak(
                server,
                args.minutes * 60,
                args.clients,
                args.seed,
                args.interval,
                args.max_growth,
                args.noise_mib,
                out=lambda line: print(line, flush=True),
            )
        )
    finally:
        server.stop()
    report(result)
    errors = server.errors()
    if errors:
        print(f"  server logged {len(errors)} failure line(s), e.g. {errors[0]}")
    ok = result.flat and result.alive and all(result.serving.values()) and result.fds_ok
    print(f"soak: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
