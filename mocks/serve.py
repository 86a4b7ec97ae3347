"""`feedlab serve`: vendor mocks on the real clock, on TCP, until SIGINT or SIGTERM.

Each vendor gets its own hub and server over one shared market, so `serve all` shows the same
instruments moving consistently across the three vendors' symbologies. Also what every serving
command shares: the listening URL (ws:// or, with TLS, wss://), the warning when a server is
reachable from other machines, and the going-away close on shutdown.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import signal
import ssl
import sys
from collections.abc import Iterable, Iterator

import trio

from mocks.hub import Hub
from mocks.server import SERVE_HISTORY, MockServer
from mocks.sim.actor import Market
from mocks.sim.market import MarketSettings
from mocks.vendors import vendor_spec

SHUTDOWN_GRACE = 2.0  # seconds for clients to answer our 1001 close frames
# `serve` looks this often at how late the market published, and says so on stderr when a batch
# went out more than `LAG_WARNING` after it was due: the process is short of CPU, and latency a
# client measures then is the mock's (bench_fanout at 200 connections: p99 55-150 ms).
LAG_PERIOD = 10.0
LAG_WARNING = 0.05
# `--rate max` (a benchmark): the market publishes in batches of this much market time, so the
# cost of each batch (scheduling, routing, waking each connection) spreads over more events.
MAX_RATE_RESOLUTION = 0.25
# On the real clock the market publishes what is due at most this often: a live feed sends an
# event within a few milliseconds of its timestamp at light load, and under heavy load each tick
# takes longer and carries more (the ticks then follow each other as fast as they are done).
LIVE_RESOLUTION = 0.001
# ... and its chunks are smaller than in scenarios (`CHUNK_BUDGET`): a chunk made at once is made
# in one go while every connection waits, so what it costs (1-2 ms for this much work) is a
# latency spike every few hundred milliseconds. (Measured with 10 clients at 2,500 events/s in
# all: 2 ms ticks and 1,500 gave p99 6.4 ms from `t` to receipt, these 3.8-4.3 ms, for the same
# CPU.) With more than about 100 contracts that budget makes the market stagger its chunks
# instead (`mocks.sim.market`), which spreads the work over time whatever the budget.
LIVE_CHUNK_BUDGET = 1_000
# A contract no client has wanted for this long (market time) stops: a long-running `serve` that
# has seen thousands of contracts come and go works only for those still wanted, and `--rate N`
# is shared by them alone. A client back within it finds the contract's stream going on; later,
# the contract starts a new life (its sequence numbers go on). Scenarios keep every contract.
FORGET_AFTER = 60.0
# A serving process makes market events by the thousand a tick, nearly all dying young (by
# reference count: none is part of a cycle); the cyclic GC runs a young collection every this
# many allocations instead of 700.
SERVE_GC_THRESHOLD = 50_000


@contextlib.contextmanager
def server_collector() -> Iterator[None]:
    """The cyclic GC for a long-running server: what exists at start-up is set aside for good
    (`gc.freeze`) and young collections run less often. With the defaults, events waiting for
    their tick were promoted to the old generations and full collections over the whole heap
    stalled every connection (200 connections at 50,000 events/s: p99 beyond the schedule 760
    -> 160 ms). Restored on the way out (`serve_forever` also runs inside test processes)."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(SERVE_GC_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def url(host: str, port: int, path: str, *, tls: bool = False) -> str:
    url_host = f"[{host}]" if ":" in host else host
    return f"{'wss' if tls else 'ws'}://{url_host}:{port}{path}"


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach a server bound to `host`."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str) -> None:
    """Servers bind 127.0.0.1 unless told otherwise; when told otherwise, say so."""
    if not is_loopback(host):
        where = "every interface" if host in ("", "0.0.0.0", "::") else host
        print(
            f"feedlab: warning: listening on {where}, reachable from other machines",
            file=sys.stderr,
            flush=True,
        )


async def close_all(servers: Iterable[MockServer]) -> None:
    """Going away: every client gets a 1001 close frame, for a little while."""
    with trio.move_on_after(SHUTDOWN_GRACE):
        async with trio.open_nursery() as closing:
            for server in servers:
                for conn in list(server.connections.values()):
                    closing.start_soon(conn.close, 1001, "server shutting down")


def long_running_server(
    vendor: str, market: Market, api_keys: tuple[str, ...], seed: int, max_rate: bool
) -> MockServer:
    """One vendor's server over `market` for a process that may run for days (`serve`, `serve
    --record`): the ledger keeps counts only and finished connections are forgotten."""
    hub = Hub(market)
    core = vendor_spec(vendor).create_server(hub, market.sim, api_keys=api_keys)
    return MockServer(
        core,
        hub,
        market,
        seed=seed,
        backpressure=max_rate,  # --rate max: the market waits for slow connections
        keep_events=False,
        history_limit=SERVE_HISTORY,
    )


def serving_market(settings: MarketSettings, *, max_rate: bool, wall_clock: bool) -> Market:
    """The market `serve` runs: a live feed on the real clock, or `--rate max`'s batches."""
    if max_rate:
        return Market(
            settings, max_rate=True, resolution=MAX_RATE_RESOLUTION, wall_clock=wall_clock
        )
    return Market(
        settings,
        resolution=LIVE_RESOLUTION,
        chunk_budget=LIVE_CHUNK_BUDGET,
        wall_clock=wall_clock,
    )


async def warn_when_behind(
    market: Market, period: float = LAG_PERIOD, threshold: float = LAG_WARNING
) -> None:
    """Every `period` seconds: one line on stderr if the market fell behind the clock."""
    while True:
        await trio.sleep(period)
        lag, market.worst_lag = market.worst_lag, 0.0
        if lag > threshold:
            print(
                f"feedlab serve: behind the clock: events went out up to {lag * 1000:.0f} ms "
                f"after they were due in the last {period:g} s (short of CPU: latency measured "
                "now is the mock's, not the client's)",
                file=sys.stderr,
                flush=True,
            )


async def start_market(nursery: trio.Nursery, market: Market) -> None:
    """The market's task, and (on the clock) the warning when it falls behind."""
    await nursery.start(market.run)
    if not market.max_rate:  # `--rate max` has no clock to keep up with
        nursery.start_soon(warn_when_behind, market)


async def serve_forever(
    vendors: list[str],
    host: str,
    port: int | None,
    settings: MarketSettings,
    api_keys: tuple[str, ...],
    max_rate: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    *,
    wall_clock: bool = False,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGINT/SIGTERM. `wall_clock`: `settings.start` is the wall-clock reading the
    market starts at (the command's), not a date of the user's."""
    market = serving_market(settings, max_rate=max_rate, wall_clock=wall_clock)
    servers: list[MockServer] = []
    urls: list[str] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals, server_collector():
        async with trio.open_nursery() as nursery:
            await start_market(nursery, market)
            for name in vendors:
                spec = vendor_spec(name)
                server = long_running_server(name, market, api_keys, settings.seed, max_rate)
                await nursery.start(server.run)
                bound = await server.serve_tcp(
                    host,
                    spec.default_port if port is None else port,
                    ssl_context=ssl_context,
                )
                servers.append(server)
                urls.append(url(host, bound, spec.path, tls=ssl_context is not None))
                print(f"{name} listening on {urls[-1]}", flush=True)
            task_status.started(urls)
            async for _ in signals:
                break
            await close_all(servers)
            nursery.cancel_scope.cancel()
