"""A long-running `feedlab serve` under connection churn keeps bounded state (issue 10, the soak).

Clients connect, subscribe a few contracts from a fixed pool, read a little and go (clean closes
and abrupt drops), more of them than a long-running server remembers. What the server keeps
afterwards must not depend on how many came and went: finished connections in the history and
the ledger, per-connection state in the vendor cores and the hub. The soak (`bench/soak.py`)
watches the process's RSS for minutes; this checks the structures behind it, in virtual time.
"""

from __future__ import annotations

import datetime as dt
import gc
import importlib.util
import random
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import orjson
import pytest
import trio
import trio_websocket

from mocks.serve import long_running_server
from mocks.server import Connection, ConnectionStats, MockServer
from mocks.sim.actor import Market
from mocks.sim.clock import UTC
from mocks.sim.contracts import OptionContract
from mocks.sim.market import MarketSettings
from mocks.sim.symbols import from_theta, parse_deribit, parse_occ
from mocks.vendors import vendor_spec

# A finished connection keeps its WebSocket, link and session: 20-30 KiB. A server that runs for
# days may remember this many of them per vendor (a few MiB), not more.
REMEMBERED = 100
CHURNED = REMEMBERED + 40  # connections per vendor in a test: more than are remembered
MORE = 60  # then this many more: after CHURNED, the server's objects must not grow with them
WORKERS = 4


def _soak_module() -> ModuleType:
    """bench/soak.py (bench is scripts, not a package)."""
    path = Path(__file__).resolve().parent.parent / "bench" / "soak.py"
    spec = importlib.util.spec_from_file_location("feedlab_soak", path)
    assert spec is not None and spec.loader is not None
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    return module


soak = _soak_module()  # the soak's clients, pools and requests (bench/soak.py)
MASSIVE_POOL, THETA_POOL, AMBERDATA_POOL = soak.MASSIVE_POOL, soak.THETA_POOL, soak.AMBERDATA_POOL


def _pool(vendor: str) -> list[OptionContract]:
    if vendor == "massive":
        return [parse_occ(s) for s in MASSIVE_POOL]
    if vendor == "theta":
        return [from_theta("SPY", *stream) for stream in THETA_POOL]
    return [parse_deribit(s) for s in AMBERDATA_POOL]


# Whatever a core keeps per contract, root or open connection fits in this; per finished
# connection (or per request ever made) does not, after CHURNED connections.
CORE_BOUND = 2 * len(MASSIVE_POOL)


async def _subscribe(
    vendor: str, ws: trio_websocket.WebSocketConnection, slot: int, rng: random.Random
) -> None:
    """What bench/soak.py's clients do."""
    if vendor == "massive":
        auth, subscribe = soak.massive_requests(slot, rng)
        await ws.get_message()  # connected
        await ws.send_message(auth)
        await ws.get_message()  # auth_success
        await ws.send_message(subscribe)
        return
    requests = soak.theta_requests(rng) if vendor == "theta" else soak.amberdata_requests(rng)
    for request in requests:
        await ws.send_message(request)


async def _visit(server: MockServer, vendor: str, slot: int, rng: random.Random) -> None:
    """One client: subscribe, read 0.05-0.3 s, then a close frame or (every other one) a drop."""
    headers = [(b"x-api-key", f"UAK-churn-{slot}".encode())] if vendor == "amberdata" else []
    try:
        async with server.connect(f"ws://{vendor}.mock{vendor_spec(vendor).path}", headers) as ws:
            await _subscribe(vendor, ws, slot, rng)
            with trio.move_on_after(rng.uniform(0.05, 0.3)):
                while True:
                    await ws.get_message()
            if slot % 2:
                await trio.aclose_forcefully(ws._stream)  # the client vanishes: no close frame
    except (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # Theta's terminal drops a client when the next one comes


SHARED = {"market", "hub", "server"}  # what a core refers to but does not own


def _containers(obj: object, depth: int = 2) -> Iterator[tuple[str, int]]:
    """(name, size) of every dict, set, list and deque held by `obj`'s attributes, and by their
    attributes' attributes (Theta's resubscription log, Amberdata's fault state)."""
    attrs = getattr(obj, "__dict__", None)
    if attrs is None:
        slots = [s for c in type(obj).__mro__ for s in getattr(c, "__slots__", ())]
        attrs = {s: getattr(obj, s) for s in slots if hasattr(obj, s)}
    for name, value in attrs.items():
        if isinstance(value, dict | set | list | deque):
            yield name, len(value)
        elif depth > 1 and name not in SHARED and type(value).__module__.startswith("mocks."):
            for inner, size in _containers(value, depth - 1):
                yield f"{name}.{inner}", size


# Not counted: market events come and go with the market's chunks; the test itself keeps every
# connection's stats.
UNCOUNTED = {
    "mocks.sim.events.OptionQuote",
    "mocks.sim.events.OptionTrade",
    "mocks.sim.events.UnderlyingTick",
    "mocks.sim.events.IndexPrice",
    "mocks.server.ConnectionStats",
}


def _is_trio_deadline(obj: object) -> bool:
    """Trio keeps a finished timeout's entry, (deadline, tie-break, cancel scope), in its
    deadline heap until the heap holds 1,000 more than the live ones and is pruned: bounded, so
    neither the entries nor their scopes are counted. (Recognised by shape rather than through
    Trio's private `Deadlines._heap`, which a Trio release may rename.)"""
    if isinstance(obj, trio.CancelScope):
        return True
    return type(obj) is tuple and len(obj) == 3 and isinstance(obj[2], trio.CancelScope)


def _object_counts() -> dict[str, int]:
    """Live objects by type, but for market events, test bookkeeping and Trio's deadlines."""
    gc.collect()
    counts: dict[str, int] = {}
    for obj in gc.get_objects():
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        if name not in UNCOUNTED and not _is_trio_deadline(obj):
            counts[name] = counts.get(name, 0) + 1
    return counts


@pytest.mark.parametrize("vendor", ["massive", "theta", "amberdata"])
async def test_churn_keeps_bounded_state(vendor: str, autojump_clock: trio.abc.Clock) -> None:
    settings = MarketSettings(
        seed=1, start=dt.datetime(2025, 3, 14, 14, 30, tzinfo=UTC), total_rate=500
    )
    market = Market(settings)
    stats: list[ConnectionStats] = []  # every connection's counters, without the connection
    async with trio.open_nursery() as nursery:
        await nursery.start(market.run)
        server = long_running_server(vendor, market, (), settings.seed, False)
        server.on_accept.append(lambda conn: stats.append(conn.stats))
        await nursery.start(server.run)
        workers = 1 if vendor == "theta" else WORKERS  # one Theta client at a time

        async def churn(first: int, count: int) -> None:
            slots = iter(range(first, first + count))

            async def client(worker: int) -> None:
                rng = random.Random(first + worker)
                for slot in slots:
                    await _visit(server, vendor, slot, rng)

            async with trio.open_nursery() as clients:
                for worker in range(workers):
                    clients.start_soon(client, worker)
            await trio.sleep(1.0)  # the last connections finish on the server's side

        await churn(0, CHURNED)

        assert len(stats) == CHURNED and not server.connections
        assert len(server.history) <= REMEMBERED
        assert len(server.ledger.connections) <= REMEMBERED
        gc.collect()
        assert sum(1 for o in gc.get_objects() if type(o) is Connection) <= REMEMBERED
        # The ledger forgets old connections, not what they were sent.
        assert sum(s.frames_sent for s in stats) > 0
        assert server.ledger.total("sent") == sum(s.events_sent for s in stats)
        for owner in (server.vendor, server.hub):
            for name, size in _containers(owner):
                assert size <= CORE_BOUND, f"{type(owner).__name__}.{name} holds {size}"
        assert server.errors == []

        # Whatever else a visit might leave behind: once CHURNED have come and gone, no kind of
        # object grows by one for every other visit (what a vendor keeps per instrument of the
        # fixed pool may still grow a little).
        # (The remembered connections are cleared before each count: what each of them holds
        # depends on what it subscribed, and their number is bounded, checked above. And every
        # contract of the pool is watched first: a first watch under `total_rate` is a rate
        # change, which leaves per-contract state behind that is bounded by the pool.)
        for contract in _pool(vendor):
            market.watch(contract)
        await trio.sleep(1.0)
        server.history.clear()
        before = _object_counts()
        await churn(CHURNED, MORE)
        server.history.clear()
        after = _object_counts()
        assert len(stats) == CHURNED + MORE and server.errors == []
        grown = {name: n - before.get(name, 0) for name, n in after.items()}
        assert {name: n for name, n in grown.items() if n >= MORE // 2} == {}
        nursery.cancel_scope.cancel()


MIB = 1 << 20


def _rss(
    minutes: float, base: float, leak_per_min: float, steps: dict[float, float]
) -> list[tuple[float, float]]:
    """RSS samples every 5 s: a level, a steady leak, one-time steps (minute -> MiB), jitter."""
    rng = random.Random(7)
    points = []
    for k in range(int(minutes * 12) + 1):
        t = k * 5.0
        level = base + leak_per_min * t / 60 + sum(mib for at, mib in steps.items() if t >= at * 60)
        points.append((t, (level + rng.uniform(-1.5, 1.5)) * MIB))
    return points


def test_soak_verdict_tells_a_high_water_step_from_a_leak() -> None:
    """The soak judges sustained growth: one-time allocator steps pass, a steady leak fails."""
    # Last session's 10-minute runs after warm-up: one step of 18-27 MiB, then flat.
    for step_at in (4.0, 5.0, 6.5, 8.5):
        step = _rss(6.7, 82, 0.0, {step_at - 3.3: 27.0})
        assert soak.sustained_growth(step) < 4 * MIB, step_at
        assert soak.slope_fit(step)[0] * step[-1][0] > 4 * MIB  # a fitted line counts the step
    # A deliberate 100 KB/s leak (5.9 MiB/min) over 80 s, with a 30 MiB step inside.
    leak = _rss(80 / 60, 70, 5.9, {0.6: 30.0})
    assert 5 * MIB < soak.sustained_growth(leak) < 11 * MIB
    # The real leaks: 14 MiB/min, with or without a step.
    for steps in ({}, {2.0: 20.0}):
        real = _rss(6.7, 82, 14.0, steps)
        assert soak.sustained_growth(real) > 80 * MIB


# -- contracts nobody wants any more (`serve`'s `forget_after`) ------------------------------------

FORGET_AFTER = 2.0  # market seconds (`serve` uses a minute: mocks.serve.FORGET_AFTER)
ROLLED = 60  # visits, each naming three contracts no other visit names
# What a vendor keeps per contract on purpose after its life ends, until the day ends (Theta's day
# OHLC: a client back on the contract must not see the day's volume go down).
KEPT_PER_CONTRACT = {"_option_ohlc"}


def _rolled_requests(vendor: str, slot: int) -> list[str]:
    """Subscriptions to this slot's own three contracts (Massive: without the auth)."""
    strikes = [100 + 3 * slot + n for n in range(3)]
    if vendor == "massive":
        return [soak.massive_subscribe([f"O:SPY250620C{k * 1000:08d}" for k in strikes])]
    if vendor == "theta":
        return soak.theta_quote_streams([(20250620, k * 1000, "C") for k in strikes], 3 * slot)
    return soak.amberdata_snapshots([f"BTC-27JUN25-{k * 1000}-C" for k in strikes])


DATA = {"massive": b'"ev":"Q"', "theta": b'"type":"QUOTE"', "amberdata": b'"bids"'}


async def _rolled_visit(server: MockServer, vendor: str, slot: int) -> int:
    """Subscribe this slot's contracts, read for a while, stop (Theta: STOP, or the terminal
    keeps the streams for the next client), go. Returns the data messages received."""
    headers = [(b"x-api-key", f"UAK-roll-{slot}".encode())] if vendor == "amberdata" else []
    data = 0
    async with server.connect(f"ws://{vendor}.mock{vendor_spec(vendor).path}", headers) as ws:
        if vendor == "massive":
            await ws.get_message()  # connected
            await ws.send_message(orjson.dumps({"action": "auth", "params": "k"}).decode())
            await ws.get_message()  # auth_success
        for request in _rolled_requests(vendor, slot):
            await ws.send_message(request)
        with trio.move_on_after(1.2):  # (Amberdata snapshots: one a second)
            while True:
                message = await ws.get_message()
                raw = message.encode() if isinstance(message, str) else message
                data += DATA[vendor] in raw.replace(b" ", b"")
        if vendor == "theta":
            await ws.send_message('{"msg_type":"STOP"}')
    return data


@pytest.mark.parametrize("vendor", ["massive", "theta", "amberdata"])
async def test_contracts_nobody_wants_are_let_go(
    vendor: str, autojump_clock: trio.abc.Clock
) -> None:
    """Clients that roll through contracts (new strikes every day) leave nothing behind once
    nobody has wanted a contract for `forget_after`: the market ends its life and the vendor's
    core lets go of what it kept for it. Named again, it streams as if first seen."""
    settings = MarketSettings(
        seed=1,
        start=dt.datetime(2025, 3, 14, 14, 30, tzinfo=UTC),
        total_rate=500,
        forget_after=FORGET_AFTER,
    )
    market = Market(settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(market.run)
        server = long_running_server(vendor, market, (), settings.seed, False)
        await nursery.start(server.run)
        for slot in range(ROLLED):
            assert await _rolled_visit(server, vendor, slot) > 0, slot
        await trio.sleep(FORGET_AFTER + 1.0)

        assert server.errors == []
        for owner in (server.vendor, server.hub):
            for name, size in _containers(owner):
                if name not in KEPT_PER_CONTRACT:
                    assert size <= CORE_BOUND, f"{type(owner).__name__}.{name} holds {size}"
        # Named again: a new life, on the wire like the first.
        assert await _rolled_visit(server, vendor, 0) > 0
        nursery.cancel_scope.cancel()
