"""Our Massive client against the Massive mock, in virtual time, under the faults of issue 3:
close 1011, abort without close frame (1006), auth failure, max_connections eviction, a
1,001-contract subscription, a slow-consumer kill and a half-open socket.

Each recovery is checked the same way: a new connection that streams again, the exact
subscription set restored on it, one gap notice whose window covers the outage, nothing the mock
sent lost without a gap notice covering it, and no event delivered twice.
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

from clients.common import AuthError, Backoff, GapNotice, LimitError, Status
from clients.massive import Event, MassiveClient, Quote, Trade
from mocks.massive.server import MassiveServer
from mocks.massive.session import MassiveSession
from mocks.server import Connection
from mocks.session import Send
from mocks.sim.market import MarketSettings
from mocks.testing import MockService, run_mock

P = ParamSpec("P")

CALL = "O:SPY250321C00560000"
PUT = "O:QQQ250321P00480000"
SUBSCRIPTIONS = (f"Q.{CALL}", f"T.{CALL}", f"AM.{CALL}", f"Q.{PUT}", f"T.{PUT}", "A.*")


def bounded(
    seconds: float = 600.0,
) -> Callable[[Callable[P, Awaitable[None]]], Callable[P, Awaitable[None]]]:
    """Fail instead of hanging when a wait never ends (virtual time passes fast)."""

    def decorate(test: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
        @functools.wraps(test)
        async def run(*args: P.args, **kwargs: P.kwargs) -> None:
            with trio.fail_after(seconds):
                await test(*args, **kwargs)

        return run

    return decorate


@dataclass
class Run:
    """One client against one mock: what the mock sent (parsed from its frames) and what the
    application received."""

    mock: MockService
    client: MassiveClient
    sent: list[tuple[int, str, str, int, int]] = field(default_factory=list)  # conn, ev, sym, q, t
    received: list[Event] = field(default_factory=list)

    def tap(self, conn: Connection, action: Send) -> None:
        for item in orjson.loads(action.data):
            if item["ev"] in ("Q", "T"):
                self.sent.append((conn.conn_id, item["ev"], item["sym"], item["q"], item["t"]))

    def unix_now(self) -> float:
        return self.mock.market.now_ns() / 1e9

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.received if isinstance(e, kind)]

    @property
    def server(self) -> MassiveServer:
        server = self.mock.server
        assert isinstance(server, MassiveServer)
        return server

    def session(self, n: int) -> MassiveSession:
        session = self.mock.history[n].session
        assert isinstance(session, MassiveSession)
        return session

    async def wait_subscribed(self, n: int, count: int) -> MassiveSession:
        """Until connection n (0-based, ever accepted) holds `count` subscriptions."""
        await self.mock.wait_connections(n + 1)
        while len(mock_subscriptions(self.session(n))) < count:
            await trio.sleep(0.1)
        return self.session(n)

    async def consume(self) -> None:
        async for event in self.client:
            self.received.append(event)


def mock_subscriptions(session: MassiveSession) -> set[str]:
    """The mock's view, in the client's syntax."""
    subscribed = {f"{ch}.{sym}" for ch, syms in session.subscriptions.items() for sym in syms}
    return subscribed | {f"{ch}.*" for ch in session.wildcards}


@asynccontextmanager
async def running(
    market: MarketSettings | None = None, client_connections: int = 1, **mock_options: Any
) -> AsyncIterator[Run]:
    async with run_mock("massive", market=market or MarketSettings(seed=5), **mock_options) as mock:
        client = MassiveClient(
            "KEY",
            mock.url,
            connector=mock.connector,
            clock=lambda: mock.market.now_ns() / 1e9,
            backoff=Backoff(rng=random.Random(11)),
            eviction_backoff=Backoff(initial=5.0, cap=300.0, rng=random.Random(12)),
            ping_interval=5.0,
            ping_timeout=5.0,
            max_connections=client_connections,
        )
        run = Run(mock, client)
        mock.mock_server.taps.append(run.tap)
        async with client, trio.open_nursery() as nursery:
            nursery.start_soon(run.consume)
            yield run
            nursery.cancel_scope.cancel()


def check_recovery(run: Run, lost_at: float, resumed_at: float) -> None:
    """The invariants every fault must keep; `lost_at`/`resumed_at` in Unix seconds."""
    client = run.client
    wanted = set(client.subscriptions)
    last = run.session(len(run.mock.history) - 1)
    assert mock_subscriptions(last) == wanted  # exact resubscription
    (gap,) = run.of(GapNotice)
    assert set(gap.contracts) == {s.split(".", 1)[1] for s in wanted}
    assert gap.start <= lost_at and gap.end >= resumed_at
    delivered = [(e.symbol, e.sequence, type(e)) for e in run.of(Quote) + run.of(Trade)]
    assert len(delivered) == len(set(delivered))  # no duplicate delivered
    got = {(sym, seq) for sym, seq, _ in delivered}
    for _, _, sym, q, t in run.sent:
        if (sym, q) not in got:  # lost: only inside the gap notice's window
            assert gap.start <= t / 1000 <= gap.end, (sym, q, t)
    after = [e for e in run.of(Quote) + run.of(Trade) if e.timestamp_ns / 1e9 > resumed_at]
    assert after, "no data after the reconnect"
    assert client.stats.reconnects == 1
    assert client.stats.gap_notices == 1


async def fault_and_recover(
    run: Run, fault: Callable[[Connection], Awaitable[None]]
) -> tuple[float, float]:
    await run.client.subscribe(*SUBSCRIPTIONS)
    await run.wait_subscribed(0, len(SUBSCRIPTIONS))
    await trio.sleep(20)
    assert run.of(Quote)
    lost_at = run.unix_now()
    await fault(run.mock.history[0])
    await run.wait_subscribed(1, len(SUBSCRIPTIONS))
    resumed_at = run.mock.market.clock.unix_ns(run.mock.history[1].info.opened_at) / 1e9
    await trio.sleep(20)
    return lost_at, resumed_at


@bounded()
async def test_close_1011(autojump_clock: trio.abc.Clock) -> None:
    async with running() as run:
        lost_at, resumed_at = await fault_and_recover(run, lambda conn: conn.close(1011))
        check_recovery(run, lost_at, resumed_at)
        assert "1011" in run.of(GapNotice)[0].reason


@bounded()
async def test_abort_without_close_frame(autojump_clock: trio.abc.Clock) -> None:
    async with running() as run:
        lost_at, resumed_at = await fault_and_recover(run, lambda conn: conn.abort())
        check_recovery(run, lost_at, resumed_at)
        assert "1006" in run.of(GapNotice)[0].reason


@bounded()
async def test_half_open_socket(autojump_clock: trio.abc.Clock) -> None:
    async def stall(conn: Connection) -> None:
        conn.stall()

    async with running() as run:
        lost_at, resumed_at = await fault_and_recover(run, stall)
        check_recovery(run, lost_at, resumed_at)
        assert "no pong" in run.of(GapNotice)[0].reason
        assert resumed_at - lost_at <= 5 + 5 + 0.5 + 5  # ping interval + timeout + backoff + close


@bounded()
async def test_a_connection_lost_before_its_first_event_leaves_a_gap_from_when_it_was_ready(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Found by `feedlab chaos --vendor massive --seed 20261207` (a cut at 47 s, a stall at 48 s):
    the connection that replaced a lost one went half-open before it had delivered an event.
    Noticed a ping timeout later, its gap notice started then, when it should start when the
    connection was back: 47 events lost without a notice covering them (the scenario itself:
    tests/test_chaos.py)."""
    async with running() as run:
        await run.client.subscribe(*SUBSCRIPTIONS)
        await run.wait_subscribed(0, len(SUBSCRIPTIONS))
        await trio.sleep(20)
        await run.mock.history[0].abort()
        await run.wait_subscribed(1, len(SUBSCRIPTIONS))
        second = run.mock.history[1]
        second.stall()
        stalled_at = run.unix_now()
        assert not [s for s in run.sent if s[0] == second.conn_id]  # nothing reached the client
        await run.wait_subscribed(2, len(SUBSCRIPTIONS))  # a ping timeout later
        resumed_at = run.mock.market.clock.unix_ns(run.mock.history[2].info.opened_at) / 1e9
        await trio.sleep(20)
        _, second_gap = run.of(GapNotice)
        assert "no pong" in second_gap.reason
        assert second_gap.start <= stalled_at and second_gap.end >= resumed_at
        assert run.client.stats.reconnects == 2


@bounded()
async def test_slow_consumer_kill(autojump_clock: trio.abc.Clock) -> None:
    async def kill(conn: Connection) -> None:
        run.server.slow_consumer(conn.conn_id)

    async with running() as run:
        lost_at, resumed_at = await fault_and_recover(run, kill)
        check_recovery(run, lost_at, resumed_at)
        assert run.client.stats.slow_consumer_kills == 1
        assert run.mock.history[0].close_code == 1008
        assert [s.status for s in run.of(Status)].count("slow_consumer") == 1


@bounded()
async def test_max_connections_eviction(autojump_clock: trio.abc.Clock) -> None:
    async def evict(conn: Connection) -> None:
        run.server.evict(conn.conn_id)

    async with running() as run:
        lost_at, resumed_at = await fault_and_recover(run, evict)
        check_recovery(run, lost_at, resumed_at)
        assert run.client.stats.evictions == 1
        assert any(s.status == "max_connections" for s in run.of(Status))


@bounded(3600)
async def test_two_sessions_with_one_key_do_not_evict_each_other_in_a_loop(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running() as run:
        await run.client.subscribe(f"T.{CALL}")
        await run.wait_subscribed(0, 1)
        other = MassiveClient(
            "KEY",
            run.mock.url,
            connector=run.mock.connector,
            backoff=Backoff(rng=random.Random(21)),
            eviction_backoff=Backoff(initial=5.0, cap=300.0, rng=random.Random(22)),
        )
        async with other:
            await other.subscribe(f"T.{PUT}")
            await trio.sleep(1800)
        # The official client reconnects at once and would fight thousands of times in 30 min.
        assert len(run.mock.history) < 60
        assert run.client.stats.evictions + other.stats.evictions < 60
        assert run.client.stats.evictions >= 1
        # After the other session left, ours is back with its exact subscriptions.
        await trio.sleep(400)
        (live,) = run.mock.connections.values()
        assert isinstance(live.session, MassiveSession)
        assert mock_subscriptions(live.session) == {f"T.{CALL}"}
        assert len(run.of(GapNotice)) == run.client.stats.reconnects


@bounded()
async def test_auth_failure_on_reconnect_raises_and_never_retries(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with run_mock("massive", market=MarketSettings(seed=5)) as mock:
        client = MassiveClient(
            "KEY", mock.url, connector=mock.connector, backoff=Backoff(rng=random.Random(1))
        )
        with pytest.raises(AuthError, match="authentication failed"):
            async with client:
                await client.subscribe(f"T.{CALL}")
                await mock.wait_connections(1)
                await trio.sleep(5)
                assert isinstance(mock.server, MassiveServer)
                mock.server.auth_failure(1)
                await mock.history[0].close(1011)
                async for _ in client:
                    pass
        await trio.sleep(300)
        assert len(mock.history) == 2


@bounded()
async def test_unknown_key_raises_auth_error(autojump_clock: trio.abc.Clock) -> None:
    async with run_mock("massive", api_keys=("GOOD",)) as mock:
        with pytest.raises(AuthError):
            async with MassiveClient("BAD", mock.url, connector=mock.connector) as client:
                async for _ in client:
                    pass
        assert len(mock.history) == 1


def contracts(count: int) -> list[str]:
    return [f"Q.O:SPY250321C{(100_000 + 500 * n):08d}" for n in range(count)]


@bounded()
async def test_1001_quote_contracts_on_a_one_connection_account(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running() as run:
        await run.mock.wait_connections(1)
        await trio.sleep(1)
        with pytest.raises(LimitError):
            await run.client.subscribe(*contracts(1001))
        await trio.sleep(1)
        assert run.mock.history[0].stats.frames_received == 1  # the auth, no subscribe
        assert mock_subscriptions(run.session(0)) == set()


@bounded()
async def test_1001_quote_contracts_over_two_connections_and_recovery(
    autojump_clock: trio.abc.Clock,
) -> None:
    wanted = contracts(1001)
    market = MarketSettings(seed=5, activity=0.05)
    async with running(market, client_connections=2, max_connections=2) as run:
        await run.client.subscribe(*wanted)
        first = await run.wait_subscribed(0, 1000)
        second = await run.wait_subscribed(1, 1)
        await trio.sleep(2)
        assert mock_subscriptions(first) == set(wanted[:1000])
        assert mock_subscriptions(second) == {wanted[1000]}
        assert not [s for s in run.of(Status) if s.status == "error"]  # the limit was kept
        await run.mock.history[1].abort()
        third = await run.wait_subscribed(2, 1)
        await trio.sleep(2)
        assert mock_subscriptions(third) == {wanted[1000]}
        (gap,) = run.of(GapNotice)
        assert gap.contracts == (wanted[1000][2:],)
        assert len(run.mock.connections) == 2
        delivered = [(e.symbol, e.sequence) for e in run.of(Quote)]
        assert len(delivered) == len(set(delivered))


@pytest.mark.parametrize("consuming", [True, False])
@bounded()
async def test_leaving_the_client_finishes_the_close_handshake(
    autojump_clock: trio.abc.Clock, consuming: bool
) -> None:
    """Our close frame, then the server's answer, then the end: the client used to stop
    trio-websocket's reader as soon as its own close frame was out, so the answer went unread
    and leaving took the whole `close_timeout` (5 s) every time."""
    async with run_mock("massive", market=MarketSettings(seed=5)) as mock:
        client = MassiveClient("KEY", mock.url, connector=mock.connector, close_timeout=5.0)
        async with client:
            await client.subscribe(f"Q.{CALL}", f"T.{CALL}")
            with trio.move_on_after(3):  # quotes keep coming, read or not
                if consuming:
                    async for _ in client:
                        pass
                else:
                    await trio.sleep_forever()
            leaving = trio.current_time()
        assert trio.current_time() - leaving < 1.0  # virtual seconds
        (conn,) = mock.history
        assert conn.client_close_code == 1000
