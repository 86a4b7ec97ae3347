"""Run a vendor mock inside the current Trio run: for tests, scenarios and benchmarks.

    async with run_mock("massive", seed=7) as mock:
        async with MassiveClient("key", url=mock.url, connector=mock.connector) as client:
            ...

Under `trio.testing.MockClock(autojump_threshold=0)` (pytest-trio's `autojump_clock`) this is
virtual time over in-memory streams; `await mock.serve_tcp()` also listens on 127.0.0.1 for
clients that need a real socket (other processes, asyncio libraries in a thread).
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from mocks.director import Applied, Director
from mocks.faults import Fault, parse_fault
from mocks.hub import Hub
from mocks.ledger import Ledger
from mocks.server import Connection, MockServer
from mocks.session import VendorServer
from mocks.sim.actor import Market
from mocks.sim.market import MarketSettings
from mocks.vendors import vendor_spec


class MockService:
    """A running vendor mock: its core, the market, and the connections it serves."""

    def __init__(self, vendor: str, server: MockServer, path: str, director: Director) -> None:
        self.vendor = vendor
        self._server = server
        self.director = director
        self.path = path
        self.url = f"ws://{vendor}.mock{path}"  # host ignored by the in-memory connector
        self.connector = server.connect
        self.tcp_port: int | None = None
        self.tcp_scheme = "ws"

    @property
    def server(self) -> VendorServer:
        return self._server.vendor

    @property
    def mock_server(self) -> MockServer:
        return self._server

    @property
    def market(self) -> Market:
        return self._server.market

    @property
    def hub(self) -> Hub:
        return self._server.hub

    @property
    def connections(self) -> dict[int, Connection]:
        """Open connections by id."""
        return self._server.connections

    @property
    def history(self) -> list[Connection]:
        """Every connection ever accepted, open or closed, in order."""
        return self._server.history

    @property
    def ledger(self) -> Ledger:
        return self._server.ledger

    @property
    def turned_away(self) -> Sequence[float]:
        """When a `restart` answering "none" or "503" turned a connection away (market time)."""
        return self._server.turned_away

    async def inject(self, kind: str, **params: Any) -> Applied:
        """Apply a fault now: `await mock.inject("close", code=1011)`; `connection=N` targets the
        N-th accepted connection, `contract=...` one contract (message faults)."""
        params.setdefault("at", "0s")
        return await self.director.inject(parse_fault({"kind": kind, **params}, self.vendor))

    async def serve_tcp(
        self, host: str = "127.0.0.1", port: int = 0, *, ssl_context: ssl.SSLContext | None = None
    ) -> int:
        """Also listen on TCP (with `ssl_context`: wss://); returns the bound port."""
        self.tcp_port = await self._server.serve_tcp(host, port, ssl_context=ssl_context)
        self.tcp_scheme = "ws" if ssl_context is None else "wss"
        return self.tcp_port

    def tcp_url(self, host: str = "127.0.0.1") -> str:
        assert self.tcp_port is not None, "call serve_tcp() first"
        return f"{self.tcp_scheme}://{host}:{self.tcp_port}{self.path}"

    async def wait_connections(self, count: int = 1) -> None:
        """Until at least `count` connections have been accepted in total."""
        while len(self.history) < count:
            await trio.sleep(0.01)


@asynccontextmanager
async def run_mock(
    vendor: str,
    *,
    seed: int = 0,
    market: MarketSettings | None = None,
    market_resolution: float = 0.05,
    api_keys: tuple[str, ...] = (),
    max_buffer: int = 50_000,
    faults: Sequence[Fault] = (),
    horizon: float = math.inf,
    keep_events: bool = True,
    history_limit: int | None = None,
    **options: Any,
) -> AsyncIterator[MockService]:
    """Start the market and one vendor's mock in a nursery; cancel both on exit. For a mock
    that serves for hours: `keep_events=False` (the ledger keeps counts only), and
    `history_limit` (finished connections remembered)."""
    spec = vendor_spec(vendor)
    settings = market or MarketSettings(seed=seed)
    actor = Market(settings, resolution=market_resolution)
    hub = Hub(actor)
    core = spec.create_server(hub, actor.sim, api_keys=api_keys, **options)
    server = MockServer(
        core,
        hub,
        actor,
        seed=settings.seed,
        max_buffer=max_buffer,
        keep_events=keep_events,
        history_limit=history_limit,
    )
    director = Director(
        server, faults, seed=settings.seed, horizon=horizon, parse_contract=spec.parse_contract
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await nursery.start(server.run)
        await nursery.start(director.run)
        try:
            yield MockService(vendor, server, spec.path, director)
        finally:
            nursery.cancel_scope.cancel()
    if server.errors:  # a bug of the mock on one connection must fail the test that hit it
        raise server.errors[0]
