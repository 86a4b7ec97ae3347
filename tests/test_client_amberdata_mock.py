"""Our Amberdata client against the Amberdata mock, in virtual time, under the faults of issue 5:
close 1011, abort without close frame (1006), a half-open socket, a bad key (at once and on a
reconnect), plan limits (spread over connections, the server's own limit, LimitError), and
resubscription with new subscription ids.

Each recovery is checked the same way: a new connection that streams again, the exact
subscription set restored on it under new ids, one gap notice whose window covers the outage,
nothing the mock sent lost without a gap notice covering it, and nothing delivered twice.
"""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec

import orjson
import pytest
import trio

from clients.amberdata import (
    OHLCV,
    OPEN_INTERESTS,
    ORDER_SNAPSHOTS,
    TICKERS,
    TRADES,
    AmberdataClient,
    Event,
    OrderBookSnapshot,
    Ticker,
    Trade,
    parse_subscription,
)
from clients.common import AuthError, Backoff, GapNotice, LimitError, Rejected, Status
from mocks.amberdata import AmberdataSession
from mocks.server import Connection
from mocks.session import Send
from mocks.sim.market import MarketSettings
from mocks.testing import MockService, run_mock

P = ParamSpec("P")

# The market starts 2025-03-14 09:30 ET; 28MAR25 is a Deribit quarterly two weeks out.
CALL = "BTC-28MAR25-60000-C"
PUT = "ETH-28MAR25-2500-P"
KEY = "UAK-enterprise"
SUBSCRIPTIONS = (
    f"{ORDER_SNAPSHOTS}:{CALL}",
    f"{TICKERS}:{CALL}@okex",
    f"{TRADES}:{CALL}",
    f"{OHLCV}:{CALL}",
    f"{OPEN_INTERESTS}:{CALL}",
    f"{ORDER_SNAPSHOTS}:{PUT}@deribit",
    f"{TRADES}:{PUT}@bybit",
)
WANTED = {parse_subscription(s).key for s in SUBSCRIPTIONS}


def bounded(test: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
    """Fail instead of hanging when a wait never ends (an hour of virtual time passes fast)."""

    @functools.wraps(test)
    async def run(*args: P.args, **kwargs: P.kwargs) -> None:
        with trio.fail_after(3600):
            await test(*args, **kwargs)

    return run


@dataclass(frozen=True)
class Sent:
    """One push as the mock put it on the wire."""

    conn_id: int
    subscription_id: str
    stream: str
    instrument: str
    exchange: str
    sequence: int | None
    published: float  # Unix seconds: the snapshot instant, or the trade's exchange time
    exchange_time: float


@dataclass
class Run:
    mock: MockService
    client: AmberdataClient
    sent: list[Sent] = field(default_factory=list)
    received: list[Event] = field(default_factory=list)

    def tap(self, conn: Connection, action: Send) -> None:
        frame = orjson.loads(action.data)
        if not isinstance(frame, dict) or frame.get("method") != "subscription":
            return
        session = conn.session
        assert isinstance(session, AmberdataSession)
        subscription_id = frame["params"]["subscription"]
        result = frame["params"]["result"]
        stream = session.subscriptions[subscription_id].stream
        sequence = result.get("tradeSequence") if stream == TRADES else result.get("sequence")
        exchange_ms = result.get("exchangeTimestamp", result.get("timestamp"))
        self.sent.append(
            Sent(
                conn.conn_id,
                subscription_id,
                stream,
                result["instrument"],
                result.get("exchange", "deribit"),
                sequence,
                result.get("timestamp", exchange_ms) / 1000,
                exchange_ms / 1000,
            )
        )

    def unix_now(self) -> float:
        return self.mock.market.now_ns() / 1e9

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.received if isinstance(e, kind)]

    def session(self, n: int) -> AmberdataSession:
        session = self.mock.history[n].session
        assert isinstance(session, AmberdataSession)
        return session

    async def wait_subscribed(self, n: int, count: int) -> AmberdataSession:
        """Until connection n (0-based, ever accepted) holds `count` subscriptions."""
        await self.mock.wait_connections(n + 1)
        while len(self.session(n).subscriptions) < count:
            await trio.sleep(0.1)
        return self.session(n)

    async def consume(self) -> None:
        async for event in self.client:
            self.received.append(event)


def mock_subscriptions(session: AmberdataSession) -> set[str]:
    """The mock's view, in the client's canonical syntax."""
    return {f"{s.stream}:{s.instrument}@{s.exchange}" for s in session.subscriptions.values()}


def make_client(mock: MockService, key: str = KEY, **settings: Any) -> AmberdataClient:
    return AmberdataClient(
        key,
        mock.url,
        connector=mock.connector,
        clock=lambda: mock.market.now_ns() / 1e9,
        backoff=Backoff(rng=random.Random(11)),
        ping_interval=5.0,
        ping_timeout=5.0,
        **settings,
    )


@asynccontextmanager
async def running(key: str = KEY, **mock_options: Any) -> AsyncIterator[Run]:
    async with run_mock("amberdata", market=MarketSettings(seed=5), **mock_options) as mock:
        run = Run(mock, make_client(mock, key))
        mock.mock_server.taps.append(run.tap)
        async with run.client, trio.open_nursery() as nursery:
            nursery.start_soon(run.consume)
            yield run
            nursery.cancel_scope.cancel()


def check_recovery(run: Run, lost_at: float, resumed_at: float) -> None:
    """The invariants every fault must keep; `lost_at`/`resumed_at` in Unix seconds."""
    client = run.client
    assert set(client.subscriptions) == WANTED
    first, last = run.session(0), run.session(len(run.mock.history) - 1)
    assert mock_subscriptions(last) == WANTED  # exactly the set, restored
    assert set(last.subscriptions).isdisjoint(first.subscriptions)  # under new ids
    (gap,) = run.of(GapNotice)
    assert set(gap.contracts) == {CALL, PUT}
    assert gap.start <= lost_at and gap.end >= resumed_at
    market = run.of(OrderBookSnapshot) + run.of(Ticker) + run.of(Trade)
    delivered = [(type(e), e.exchange, e.symbol, e.sequence) for e in market]
    assert len(delivered) == len(set(delivered))  # nothing delivered twice
    got = {(e.exchange, e.symbol, e.sequence) for e in market}
    lost = [s for s in run.sent if s.sequence is not None]
    lost = [s for s in lost if (s.exchange, s.instrument, s.sequence) not in got]
    for sent in lost:  # lost only inside the gap notice's window
        assert gap.start <= sent.published <= gap.end, sent
        assert gap.start <= sent.exchange_time, sent
    after = [e for e in market if e.timestamp_ns / 1e9 > resumed_at]
    assert {type(e) for e in after} >= {OrderBookSnapshot, Ticker}, "no data after reconnect"
    assert client.stats.reconnects == 1 and client.stats.gap_notices == 1
    assert client.stats.frames_dropped_unparseable == 0


async def fault_and_recover(
    run: Run, fault: Callable[[Connection], Awaitable[None]]
) -> tuple[float, float]:
    await run.client.subscribe(*SUBSCRIPTIONS)
    await run.wait_subscribed(0, len(SUBSCRIPTIONS))
    await trio.sleep(20)
    assert run.of(OrderBookSnapshot) and run.of(Ticker)
    lost_at = run.unix_now()
    await fault(run.mock.history[0])
    await run.wait_subscribed(1, len(SUBSCRIPTIONS))
    resumed_at = run.mock.market.clock.unix_ns(run.mock.history[1].info.opened_at) / 1e9
    await trio.sleep(20)
    return lost_at, resumed_at


async def first_rejected(client: AmberdataClient) -> Rejected:
    with trio.fail_after(30):
        async for event in client:
            if isinstance(event, Rejected):
                return event
    raise AssertionError("the iterator ended without a Rejected")


@bounded
async def test_streams_every_kind_from_the_mock(autojump_clock: trio.abc.Clock) -> None:
    async with running() as run:
        await run.client.subscribe(*SUBSCRIPTIONS)
        await trio.sleep(150)
        kinds = {type(e).__name__ for e in run.received}
        assert kinds >= {"OrderBookSnapshot", "Ticker", "Trade", "Ohlcv", "OpenInterest"}
        snapshots = run.of(OrderBookSnapshot)
        assert {(e.symbol, e.exchange) for e in snapshots} == {(CALL, "deribit"), (PUT, "deribit")}
        assert {e.exchange for e in run.of(Ticker)} == {"okex"}
        assert {(e.symbol, e.exchange) for e in run.of(Trade)} <= {
            (CALL, "deribit"),
            (PUT, "bybit"),
        }
        book = [e for e in snapshots if e.symbol == CALL][-1]
        assert book.contract is not None and book.contract.strike == 60000
        assert book.bids and book.asks and book.bids[0].price < book.asks[0].price
        assert book.greeks is not None and 0 < (book.greeks.delta or 0) < 1
        assert client_clean(run.client)
        # every push the mock sent was delivered: nothing lost, nothing twice
        assert len(run.sent) == len([e for e in run.received if not isinstance(e, Status)])


def client_clean(client: AmberdataClient) -> bool:
    stats = client.stats
    return (
        stats.frames_dropped_unparseable == stats.unknown_subscription_dropped == 0
        and stats.duplicates_dropped == stats.regressions == stats.rejected == 0
    )


@bounded
async def test_close_1011(autojump_clock: trio.abc.Clock) -> None:
    async with running() as run:
        lost_at, resumed_at = await fault_and_recover(run, lambda conn: conn.close(1011))
        check_recovery(run, lost_at, resumed_at)
        assert "1011" in run.of(GapNotice)[0].reason


@bounded
async def test_abort_without_close_frame(autojump_clock: trio.abc.Clock) -> None:
    async with running() as run:
        lost_at, resumed_at = await fault_and_recover(run, lambda conn: conn.abort())
        check_recovery(run, lost_at, resumed_at)
        assert "1006" in run.of(GapNotice)[0].reason


@bounded
async def test_half_open_socket(autojump_clock: trio.abc.Clock) -> None:
    async def stall(conn: Connection) -> None:
        conn.stall()

    async with running() as run:
        lost_at, resumed_at = await fault_and_recover(run, stall)
        check_recovery(run, lost_at, resumed_at)
        assert "no pong" in run.of(GapNotice)[0].reason
        assert run.client.stats.ping_timeouts == 1
        # ping interval + ping timeout + close timeout + first backoff
        assert resumed_at - lost_at <= 5 + 5 + 5 + 0.5


@bounded
async def test_bad_key_is_fatal_and_never_retried(autojump_clock: trio.abc.Clock) -> None:
    async with run_mock("amberdata", api_keys=("UAK-good",)) as mock:
        with pytest.raises(AuthError, match=r"refused the API key \(invalid api key\)$"):
            async with make_client(mock, "UAK-bad") as client:
                await client.subscribe(f"{TRADES}:{CALL}")
                async for _ in client:
                    pass
        await trio.sleep(600)
        assert len(mock.history) == 1
        assert mock.history[0].close_code == 1008


@bounded
async def test_auth_failure_on_reconnect_is_fatal(autojump_clock: trio.abc.Clock) -> None:
    async with run_mock("amberdata", market=MarketSettings(seed=5)) as mock:
        delivered: list[Event] = []
        with pytest.raises(AuthError):
            async with make_client(mock) as client:
                await client.subscribe(f"{ORDER_SNAPSHOTS}:{CALL}")
                await mock.wait_connections(1)
                await trio.sleep(5)
                mock.server.auth_failure(1)  # type: ignore[attr-defined]
                await mock.history[0].close(1011)
                async for event in client:
                    delivered.append(event)
        assert any(isinstance(e, OrderBookSnapshot) for e in delivered)
        await trio.sleep(600)
        assert len(mock.history) == 2


@bounded
async def test_trial_plan_spreads_subscriptions_over_connections(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running("UAT-trial") as run:
        wanted = [f"{OHLCV}:BTC-28MAR25-{30000 + 500 * i}-C" for i in range(101)]
        await run.client.subscribe(*wanted)
        await run.wait_subscribed(0, 100)
        await run.wait_subscribed(1, 1)
        assert len(run.mock.connections) == 2
        assert mock_subscriptions(run.session(0)) | mock_subscriptions(run.session(1)) == {
            parse_subscription(s).key for s in wanted
        }
        assert not run.of(Rejected)
        # four more connections' worth is all a trial key may have
        with pytest.raises(LimitError):
            await run.client.subscribe(
                *(f"{OHLCV}:BTC-28MAR25-{30000 + 500 * i}-P" for i in range(400))
            )
        await trio.sleep(5)
        assert len(run.mock.history) == 2


@bounded
async def test_a_server_limit_below_the_plan_spills_onto_another_connection(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running() as run:
        run.mock.server.set_plan_limits("enterprise", subscriptions=2)  # type: ignore[attr-defined]
        await run.client.subscribe(*SUBSCRIPTIONS[:3])
        await run.wait_subscribed(0, 2)
        await run.wait_subscribed(1, 1)
        await trio.sleep(10)
        assert set(run.client.subscriptions) == {
            parse_subscription(s).key for s in SUBSCRIPTIONS[:3]
        }
        assert [s.status for s in run.of(Status)].count("rebalanced") == 1
        assert not run.of(Rejected)
        assert {e.exchange for e in run.of(Ticker)} == {"okex"}  # the moved one streams


@bounded
async def test_the_server_limit_with_one_connection_allowed_is_rejected(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with run_mock("amberdata", market=MarketSettings(seed=5)) as mock:
        mock.server.set_plan_limits("enterprise", subscriptions=2)  # type: ignore[attr-defined]
        async with make_client(mock, max_connections=1) as client:
            await client.subscribe(*SUBSCRIPTIONS[:3])
            event = await first_rejected(client)
        assert event.subscription == SUBSCRIPTIONS[2]
        assert "Max subscription limit reached on this connection" in event.reason
        assert len(mock.history) == 1


@bounded
async def test_subscribe_limit_error_before_sending(autojump_clock: trio.abc.Clock) -> None:
    async with run_mock("amberdata", market=MarketSettings(seed=5)) as mock:
        client = make_client(mock, max_connections=1, max_subscriptions_per_connection=2)
        async with client:
            await client.subscribe(*SUBSCRIPTIONS[:2])
            with pytest.raises(LimitError):
                await client.subscribe(SUBSCRIPTIONS[2])
            await trio.sleep(5)
            session = mock.history[0].session
            assert isinstance(session, AmberdataSession)
            assert len(session.subscriptions) == 2
