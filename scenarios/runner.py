"""Runs a scenario: the vendor mock with its faults, the client under test, and a watch on
both — a tap on the market, every event the application received, samples of the mock's view of
the subscriptions before each disruptive fault — then hands the run to `scenarios.ground_truth`
for the comparison that becomes the `Report` (DESIGN.md, principle 8).
"""

from __future__ import annotations

import datetime as dt
import importlib
import platform
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing
import trio_websocket

from clients.common import Backoff, GapNotice, Rejected, Status, tcp_connector
from mocks.sim.contracts import OptionContract
from mocks.sim.events import Event, OptionQuote, OptionTrade
from mocks.sim.market import MarketSettings
from mocks.sim.rng import derive_seed
from mocks.sim.symbols import SymbolError
from mocks.testing import MockService, run_mock
from mocks.vendors import vendor_spec
from scenarios.actors import actor_record, play_actor
from scenarios.ground_truth import (
    ACTOR_HEADER,
    DISRUPTIVE,
    Delivered,
    Observation,
    classify,
    compare,
    parse_streams,
    subscription_view,
)
from scenarios.model import (
    Actor,
    Scenario,
    ScenarioError,
)
from scenarios.report import Report

ClientFactory = Callable[..., Any]
"""`factory(*, url, connector, api_key, clock, seed, **options)` -> a client with the common
shape: `async with client`, `await client.subscribe(*subs)`, `async for event in client`."""

DEFAULT_KEYS = {"massive": "FEEDLAB", "theta": "", "amberdata": "UAK-feedlab"}


def client_key(s: Scenario) -> str:
    """The key the scenario's client logs in with: `[client] options.api_key`, or the default."""
    return str(s.client.options.get("api_key", DEFAULT_KEYS[s.vendor]))


# -- clients ----------------------------------------------------------------------------------


def builtin_client(vendor: str) -> ClientFactory:
    """The vendor's built-in client as a factory, its backoff seeded from the run's seed."""

    def massive(
        *, url: str, connector: Any, api_key: str | None, clock: Any, seed: int, **options: Any
    ) -> Any:
        from clients.massive import MassiveClient

        options.setdefault("backoff", Backoff(rng=random.Random(derive_seed(seed, "backoff"))))
        options.setdefault(
            "eviction_backoff",
            Backoff(initial=5.0, cap=300.0, rng=random.Random(derive_seed(seed, "eviction"))),
        )
        return MassiveClient(api_key, url, connector=connector, clock=clock, **options)

    def theta(
        *, url: str, connector: Any, api_key: str | None, clock: Any, seed: int, **options: Any
    ) -> Any:
        from clients.theta import ThetaClient

        options.setdefault("backoff", Backoff(rng=random.Random(derive_seed(seed, "backoff"))))
        return ThetaClient(api_key, url, connector=connector, clock=clock, **options)

    def amberdata(
        *, url: str, connector: Any, api_key: str | None, clock: Any, seed: int, **options: Any
    ) -> Any:
        from clients.amberdata import AmberdataClient

        options.setdefault("backoff", Backoff(rng=random.Random(derive_seed(seed, "backoff"))))
        return AmberdataClient(api_key, url, connector=connector, clock=clock, **options)

    factories: dict[str, ClientFactory] = {
        "massive": massive,
        "theta": theta,
        "amberdata": amberdata,
    }
    if vendor not in factories:
        raise ValueError(f"unknown vendor {vendor!r}")
    return factories[vendor]


def load_factory(s: Scenario) -> ClientFactory:
    if s.client.factory is None:
        return builtin_client(s.vendor)
    module_name, _, name = s.client.factory.partition(":")
    where = s.source or s.name
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ScenarioError(
            f"{where}: client.factory: cannot import {module_name}: {exc}"
        ) from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ScenarioError(f"{where}: client.factory: {module_name} has no function {name!r}")
    return factory  # type: ignore[no-any-return]


# -- determinism ------------------------------------------------------------------------------


def pin_trio_scheduler(seed: int) -> None:
    """Trio shuffles the order of tasks woken at the same instant with its private generator
    `trio._core._run._r`. The simulation is built not to depend on that order, but a client
    under test may, so the runner seeds it: a report must be a pure function of (scenario,
    seed). A private hook, kept in this one function."""
    import trio._core._run as trio_run

    trio_run._r.seed(derive_seed(seed, "trio-scheduler"))


# -- watching a run ---------------------------------------------------------------------------


class _Run:
    def __init__(self, s: Scenario, seed: int, mock: MockService, realtime: bool) -> None:
        self.s, self.seed, self.mock, self.realtime = s, seed, mock, realtime
        self.obs = Observation()
        self.streams = parse_streams(s.vendor, s.client.subscribe)
        self.contracts = {st.contract for st in self.streams if st.identity}
        self.symbols: dict[str, OptionContract | None] = {}
        self.api_key = client_key(s)
        self.options = {k: v for k, v in s.client.options.items() if k != "api_key"}
        self.end = s.duration + s.settle

    # -- the pieces that run ---------------------------------------------------------------------

    def now(self) -> float:
        return self.mock.market.now()

    def contract_of(self, symbol: str) -> OptionContract | None:
        if symbol not in self.symbols:
            try:
                self.symbols[symbol] = vendor_spec(self.s.vendor).parse_contract(symbol)
            except (SymbolError, ValueError):
                self.symbols[symbol] = None
        return self.symbols[symbol]

    async def tap(self, batches: trio.MemoryReceiveChannel[list[Event]]) -> None:
        wanted, published = self.contracts, self.obs.published
        async for batch in batches:
            for event in batch:
                if type(event) in (OptionQuote, OptionTrade) and event.contract in wanted:  # type: ignore[union-attr]
                    published.append(event)  # type: ignore[arg-type]

    def observe(self, event: object) -> None:
        obs = self.obs
        if isinstance(event, GapNotice):
            obs.gaps.append((event, self.now()))
        elif isinstance(event, Rejected):
            obs.rejected.append(event.subscription)
        elif isinstance(event, Status):
            obs.statuses += 1
        else:
            what = classify(self.s.vendor, event)
            if what is not None:
                kind, symbol, exchange = what
                ts_ns: int = event.timestamp_ns  # type: ignore[attr-defined]
                obs.delivered.append(
                    Delivered(self.now(), kind, self.contract_of(symbol), exchange, ts_ns)
                )

    def client_ids(self) -> set[int]:
        return {c.conn_id for c in self.mock.history if ACTOR_HEADER not in c.info.headers}

    def sample(self) -> None:
        self.obs.samples.append((self.now(), subscription_view(self.mock, self.client_ids())))

    async def sampler(self, times: Sequence[float]) -> None:
        for t in times:
            await trio.sleep_until(self.mock.market.trio_time(t))
            self.sample()

    def url(self) -> str:
        return self.mock.tcp_url() if self.realtime else self.mock.url

    @property
    def connector(self) -> Any:
        return tcp_connector if self.realtime else self.mock.connector

    @asynccontextmanager
    async def client_connector(
        self, url: str, headers: list[tuple[bytes, bytes]]
    ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        """The client's connector, noting every attempt that never opened: refused, rejected,
        timed out, or given up by the client's own deadline. Over TCP a closed port's
        refusals reach no server, so only the client's side can count them."""
        opened = False
        try:
            async with self.connector(url, headers) as ws:
                opened = True
                yield ws
        except BaseException:
            if not opened and self.now() < self.end:  # not one the run's end cut short
                self.obs.failed_connects.append(self.now())
            raise

    async def actor(self, index: int, actor: Actor) -> None:
        await trio.sleep_until(self.mock.market.trio_time(actor.at))
        record = actor_record(self.now(), actor)
        self.obs.actors.append(record)
        await play_actor(self.mock, self.connector, self.url(), index, actor, self.api_key, record)

    async def drive(self, factory: ClientFactory) -> None:
        """The application: subscribe, then hand every event to `observe` until told to stop."""
        obs = self.obs
        try:
            client = factory(
                url=self.url(),
                connector=self.client_connector,
                api_key=self.api_key,
                clock=lambda: self.mock.market.now_ns() / 1e9,
                seed=self.seed,
                **self.options,
            )
            async with client:
                with trio.CancelScope() as scope:
                    obs.consuming = scope
                    try:
                        await client.subscribe(*self.s.client.subscribe)
                    except Exception as exc:  # a LimitError: the application hears of it
                        self.failed(exc)
                    async for event in client:
                        self.observe(event)
                    await trio.sleep_forever()  # the iterator ended: keep the run's shape
        except Exception as exc:
            self.failed(exc)

    def failed(self, exc: BaseException) -> None:
        if self.obs.error is None:
            self.obs.error = describe(exc)
            self.obs.error_at = self.now()

    async def play(self, factory: ClientFactory) -> None:
        mock, s = self.mock, self.s
        batches = mock.market.subscribe(buffer=64)
        disruptions = sorted(
            {
                t
                for i, f in enumerate(s.faults)
                if f.kind in DISRUPTIVE
                for t in mock.director.firing_times(i, f)
            }
            | {a.at for a in s.actors}
        )
        sample_times = sorted({max(0.0, t - 0.25) for t in disruptions if t <= s.duration})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.tap, batches)
            nursery.start_soon(self.sampler, sample_times)
            for index, actor in enumerate(s.actors):
                nursery.start_soon(self.actor, index, actor)
            async with trio.open_nursery() as client_nursery:
                client_nursery.start_soon(self.drive, factory)
                await trio.sleep_until(mock.market.trio_time(self.end))
                self.sample()
                if self.obs.consuming is not None:
                    self.obs.consuming.cancel()
                client_nursery.cancel_scope.deadline = trio.current_time() + 30.0
            nursery.cancel_scope.cancel()


def describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- entry points -----------------------------------------------------------------------------


async def run_scenario(s: Scenario, *, seed: int | None = None) -> Report:
    """Run inside the caller's Trio run (virtual time when its clock is a MockClock)."""
    return await _run(s, s.seed if seed is None else seed, realtime=False)


async def _run(s: Scenario, seed: int, *, realtime: bool) -> Report:
    factory = load_factory(s)
    started = dt.datetime.now(dt.UTC)
    wall = time.perf_counter()
    pin_trio_scheduler(seed)
    options = dict(s.mock)
    api_keys = tuple(options.pop("api_keys", ()))
    max_buffer = int(options.pop("max_buffer", 50_000))
    market = MarketSettings(seed=seed, start=s.start, **s.market)
    async with run_mock(
        s.vendor,
        seed=seed,
        market=market,
        faults=s.faults,
        horizon=s.duration,
        api_keys=api_keys,
        max_buffer=max_buffer,
        **options,
    ) as mock:
        if realtime:
            await mock.serve_tcp()
        run = _Run(s, seed, mock, realtime)
        await run.play(factory)
        report = compare(run)
    elapsed = time.perf_counter() - wall
    report.wall = {
        "started_at": started.isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 3),
        "simulated_s": round(run.end, 3),
        "speedup": round(run.end / elapsed, 1) if elapsed > 0 else None,
        "realtime": realtime,
        "host": platform.node(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    return report


def run_scenario_sync(s: Scenario, *, seed: int | None = None, realtime: bool = False) -> Report:
    """Run in a Trio run of its own: virtual time over memory streams, or with `realtime` the
    real clock over TCP on 127.0.0.1 (port 0)."""
    chosen = s.seed if seed is None else seed
    if realtime:
        return trio.run(lambda: _run(s, chosen, realtime=True))
    return trio.run(
        lambda: _run(s, chosen, realtime=False),
        clock=trio.testing.MockClock(autojump_threshold=0),
    )


__all__ = [
    "ClientFactory",
    "builtin_client",
    "run_scenario",
    "run_scenario_sync",
]
