"""Massive client connection behaviour against a tiny scripted server in this file (in-memory
streams, virtual time): handshake, resubscription, reconnects, gap notices, keepalive, statuses.

The scripted server knows only what each test needs; the faithful mock is tested in
test_client_massive_mock.py.
"""

from __future__ import annotations

import functools
import io
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, ParamSpec, TypeVar

import orjson
import pytest
import trio
import trio.testing
import trio_websocket

from clients.common import (
    GAP_MARGIN,
    AuthError,
    Backoff,
    ClientError,
    GapNotice,
    Rejected,
    Status,
)
from clients.massive import Event, MassiveClient, Quote, Trade, watch

EPOCH = 1_765_000_000.0  # Unix seconds at virtual time 0
P = ParamSpec("P")
T = TypeVar("T")
SPY = "O:SPY251219C00650000"
QQQ = "O:QQQ251219P00500000"


def unix_now() -> float:
    return EPOCH + trio.current_time()


class StallableStream(trio.abc.Stream):
    """The server's end of a connection that can go half-open: after `stall()` nothing moves in
    either direction and no FIN is sent, like a dead NAT entry."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.stalled = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.stalled:
            await trio.sleep_forever()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        while self.stalled:
            await trio.sleep_forever()
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


class ServerConnection:
    """One scripted Massive connection: speaks the conversation, records what the client sent."""

    def __init__(self, server: ScriptedServer, stream: StallableStream) -> None:
        self.server = server
        self.stream = stream
        self.ws: trio_websocket.WebSocketConnection | None = None
        self.received: list[dict[str, Any]] = []
        self.subscriptions: list[str] = []
        self.authenticated = trio.Event()
        self.subscribed = trio.Event()
        self.closed = trio.Event()

    async def send(self, *items: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_message(orjson.dumps(list(items)).decode())

    async def close(self, code: int) -> None:
        assert self.ws is not None
        await self.ws.aclose(code)

    async def abort(self) -> None:
        await self.stream.inner.aclose()  # no close frame: the client sees 1006

    def stall(self) -> None:
        self.stream.stalled = True

    async def serve(self, nursery: trio.Nursery) -> None:
        request = await trio_websocket.wrap_server_stream(nursery, self.stream)
        self.ws = await request.accept()
        try:
            if self.server.greet:
                await self.send(status("connected", "Connected Successfully"))
            while True:
                message = orjson.loads(await self.ws.get_message())
                self.received.append(message)
                await self.server.on_message(self, message)
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            self.closed.set()


def status(name: str, message: str) -> dict[str, Any]:
    return {"ev": "status", "status": name, "message": message}


class ScriptedServer:
    def __init__(self, nursery: trio.Nursery, key: str = "KEY") -> None:
        self.nursery = nursery
        self.key = key
        self.greet = True
        self.refuse: set[str] = set()  # subscriptions answered with an unnamed "not authorized"
        self.connections: list[ServerConnection] = []
        self.connected_at: list[float] = []
        self._new = trio.Condition()

    async def on_message(self, conn: ServerConnection, message: dict[str, Any]) -> None:
        if message["action"] == "auth":
            if message["params"] != self.key:
                await conn.send(status("auth_failed", "authentication failed"))
                await conn.abort()
                return
            await conn.send(status("auth_success", "authenticated"))
            conn.authenticated.set()
        elif message["action"] == "subscribe":
            replies = []
            for subscription in message["params"].split(","):
                if subscription in self.refuse:
                    replies.append(status("error", "not authorized"))
                else:
                    conn.subscriptions.append(subscription)
                    replies.append(status("success", f"subscribed to: {subscription}"))
            await conn.send(*replies)
            conn.subscribed.set()
        elif message["action"] == "unsubscribe":
            for subscription in message["params"].split(","):
                conn.subscriptions.remove(subscription)
            await conn.send(
                *(status("success", f"unsubscribed to: {s}") for s in message["params"].split(","))
            )

    @asynccontextmanager
    async def connector(
        self, url: str, headers: list[tuple[bytes, bytes]]
    ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        assert url == "ws://127.0.0.1:0/options"
        client_stream, server_stream = trio.testing.memory_stream_pair()
        conn = ServerConnection(self, StallableStream(server_stream))
        self.connections.append(conn)
        self.connected_at.append(trio.current_time())
        self.nursery.start_soon(conn.serve, self.nursery)
        async with self._new:
            self._new.notify_all()
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                client_stream,  # type: ignore[arg-type]  # typed for sockets, works on any stream
                "127.0.0.1",
                "/options",
            )
            try:
                yield ws
            finally:
                await ws.aclose()

    async def connection(self, index: int) -> ServerConnection:
        async with self._new:
            while len(self.connections) <= index:
                await self._new.wait()
        return self.connections[index]


def quote(sym: str, q: int, at: float) -> dict[str, Any]:
    return {"ev": "Q", "sym": sym, "bx": 302, "ax": 303, "bp": 1.0, "ap": 1.1, "bs": 5,
            "as": 6, "t": int(at * 1000), "q": q}  # fmt: skip


def trade(sym: str, q: int, at: float) -> dict[str, Any]:
    return {"ev": "T", "sym": sym, "x": 65, "p": 1.05, "s": 2, "c": [233],
            "t": int(at * 1000), "q": q}  # fmt: skip


def make_client(server: ScriptedServer, key: str = "KEY", **settings: Any) -> MassiveClient:
    return MassiveClient(
        key,
        "ws://127.0.0.1:0/options",
        connector=server.connector,
        clock=unix_now,
        backoff=Backoff(rng=random.Random(7)),
        **settings,
    )


async def take(events: AsyncIterator[Event], n: int, *kinds: type[T]) -> list[T]:
    """The next n events of the given kinds (others are skipped)."""
    got: list[T] = []
    while len(got) < n:
        event = await anext(events)
        if isinstance(event, kinds):
            got.append(event)
    return got


def bounded(test: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
    """Fail instead of hanging when a wait never ends (an hour of virtual time passes fast)."""

    @functools.wraps(test)
    async def run(*args: P.args, **kwargs: P.kwargs) -> None:
        with trio.fail_after(3600):
            await test(*args, **kwargs)

    return run


@pytest.fixture
async def server(nursery: trio.Nursery) -> ScriptedServer:
    return ScriptedServer(nursery)


@bounded
async def test_waits_for_connected_then_authenticates_and_subscribes_comma_separated(
    server: ScriptedServer, autojump_clock: trio.abc.Clock
) -> None:
    async with make_client(server) as client:
        await client.subscribe(f"T.{SPY}", f"Q.{SPY}")
        conn = await server.connection(0)
        await conn.subscribed.wait()
        assert conn.received == [
            {"action": "auth", "params": "KEY"},
            {"action": "subscribe", "params": f"T.{SPY},Q.{SPY}"},
        ]
        events = aiter(client)
        assert await anext(events) == Status("massive", "connected", "connection 0 authenticated")
        await conn.send(quote(SPY, 1, EPOCH), trade(SPY, 1, EPOCH), quote(QQQ, 1, EPOCH))
        got = await take(events, 3, Quote, Trade)
        assert [type(e) for e in got] == [Quote, Trade, Quote]
        assert [e.symbol for e in got if isinstance(e, Quote | Trade)] == [SPY, SPY, QQQ]
        await client.unsubscribe(f"T.{SPY}")
        await trio.sleep(1)
        assert conn.received[-1] == {"action": "unsubscribe", "params": f"T.{SPY}"}
        assert conn.subscriptions == [f"Q.{SPY}"]
    await conn.closed.wait()
    assert conn.ws is not None and conn.ws.closed is not None
    assert conn.ws.closed.code == 1000  # orderly close


@bounded
async def test_cancelling_the_application_still_closes_with_1000(
    server: ScriptedServer, autojump_clock: trio.abc.Clock
) -> None:
    with trio.move_on_after(30):
        async with make_client(server):
            await trio.sleep_forever()
    conn = await server.connection(0)
    await conn.closed.wait()
    assert conn.ws is not None and conn.ws.closed is not None
    assert conn.ws.closed.code == 1000


@bounded
async def test_without_a_greeting_auth_is_sent_after_the_handshake_timeout(
    server: ScriptedServer, autojump_clock: trio.abc.Clock
) -> None:
    server.greet = False
    async with make_client(server, handshake_timeout=3.0) as client:
        conn = await server.connection(0)
        await conn.authenticated.wait()
        assert trio.current_time() == pytest.approx(3.0)
        assert client.stats.reconnects == 0


@bounded
async def test_auth_failure_raises_from_the_iterator_and_never_reconnects(
    server: ScriptedServer, autojump_clock: trio.abc.Clock
) -> None:
    client = make_client(server, key="WRONG")
    with pytest.raises(AuthError, match="authentication failed"):
        async with client:
            await client.subscribe(f"Q.{SPY}")
            async for _ in client:
                pass
    await trio.sleep(60)
    assert len(server.connections) == 1


@bounded
async def test_auth_failure_raises_from_aexit_when_not_iterating(
    server: ScriptedServer, autojump_clock: trio.abc.Clock
) -> None:
    with pytest.raises(AuthError):
        async with make_client(server, key="WRONG"):
            await trio.sleep(5)
    assert len(server.connections) == 1


@pytest.mark.parametrize("fault", ["close 1011", "abort", "close 1000"])
@bounded
async def test_reconnect_resubscribes_exactly_and_emits_a_gap_notice_without_duplicates(
    server: ScriptedServer, autojump_clock: trio.abc.Clock, fault: str
) -> None:
    async with make_client(server) as client:
        await client.subscribe(f"Q.{SPY}", f"T.{SPY}", f"Q.{QQQ}", "AM.*")
        await client.unsubscribe(f"Q.{QQQ}")
        events = aiter(client)
        first = await server.connection(0)
        await first.subscribed.wait()
        await first.send(quote(SPY, 10, EPOCH + 0.5), trade(SPY, 3, EPOCH + 0.7))
        await take(events, 2, Quote, Trade)
        await trio.sleep(2)
        lost_at = unix_now()
        if fault == "abort":
            await first.abort()
        else:
            await first.close(int(fault.split()[1]))
        second = await server.connection(1)
        await second.subscribed.wait()
        assert second.subscriptions == [f"Q.{SPY}", f"T.{SPY}", "AM.*"]
        # The server replays what the client already has, then news.
        await second.send(quote(SPY, 10, EPOCH + 0.5), quote(SPY, 14, lost_at + 1))
        got = await take(events, 3, GapNotice, Quote, Status)
        reconnecting, connected, gap = got
        assert isinstance(reconnecting, Status) and reconnecting.status == "reconnecting"
        assert isinstance(connected, Status) and connected.status == "connected"
        assert isinstance(gap, GapNotice)
        assert gap.contracts == (SPY, "*")
        # The last event seen before the loss, less the margin for events out of time order.
        assert gap.start == pytest.approx(EPOCH + 0.7 - GAP_MARGIN)
        assert lost_at < gap.end <= unix_now()
        assert ("1011" in gap.reason) if fault == "close 1011" else True
        (news,) = await take(events, 1, Quote)
        assert isinstance(news, Quote) and news.sequence == 14
        assert client.stats.duplicates_dropped == 1
        assert client.stats.reconnects == 1
        assert client.stats.gap_notices == 1


@bounded
async def test_half_open_socket_is_detected_by_the_ping_timeout_and_replaced(
    server: ScriptedServer, autojump_clock: trio.abc.Clock
) -> None:
    async with make_client(server, ping_interval=5.0, ping_timeout=5.0) as client:
        await client.subscribe(f"Q.{SPY}")
        first = await server.connection(0)
        await first.subscribed.wait()
        stalled_at = trio.current_time()
        first.stall()
        second = await server.connection(1)
        # ping at most 5 s later, no pong for 5 s, then backoff (at most 0.5 s) and a new socket
        assert 5.0 <= server.connected_at[1] - stalled_at <= 5.0 + 5.0 + 0.5 + client._close_timeout
        await second.subscribed.wait()
        assert second.subscriptions == [f"Q.{SPY}"]
        (gap,) = await take(aiter(client), 1, GapNotice)
        assert isinstance(gap, GapNotice) and "no pong" in gap.reason


@bounded
async def test_staleness_watchdog_replaces_a_socket_that_answers_nothing(
    server: ScriptedServer, autojump_clock: trio.abc.Clock
) -> None:
    async with make_client(server, ping_interval=1000.0, stale_after=30.0) as client:
        await client.subscribe(f"T.{SPY}")
        first = await server.connection(0)
        await first.subscribed.wait()
        first.stall()
        await server.connection(1)
        (gap,) = await take(aiter(client), 1, GapNotice)
        assert isinstance(gap, GapNotice) and "stale" in gap.reason


@bounded
async def test_an_idle_healthy_connection_stays_up(
    server: ScriptedServer, autojump_clock: trio.abc.Clock
) -> None:
    async with make_client(server, ping_interval=10.0, stale_after=30.0) as client:
        await client.subscribe(f"T.{SPY}")
        await trio.sleep(600)  # no data at all, but pongs keep coming
        assert len(server.connections) == 1
        assert client.stats.reconnects == 0


@bounded
async def test_max_connections_status_backs_off_instead_of_evicting_in_a_loop(
    server: ScriptedServer, autojump_clock: trio.abc.Clock
) -> None:
    async with make_client(
        server, eviction_backoff=Backoff(initial=60.0, cap=600.0, rng=random.Random(3))
    ) as client:
        await client.subscribe(f"Q.{SPY}")
        for n in range(3):
            conn = await server.connection(n)
            await conn.subscribed.wait()
            await conn.send(status("max_connections", "Maximum number of websocket connections"))
            await conn.close(1008)
        await server.connection(3)
        gaps = [b - a for a, b in zip(server.connected_at, server.connected_at[1:], strict=False)]
        # Full jitter below 60, 120, 240 s: far slower than the instant reconnect of the official
        # client, and growing.
        assert sum(gaps) > 60
        assert client.stats.evictions == 3
        statuses = [
            e for e in await take(aiter(client), 3, Status) if e.status == "max_connections"
        ]
        assert statuses and "Maximum number" in statuses[0].message


@bounded
async def test_slow_consumer_status_then_close_reconnects(
    server: ScriptedServer, autojump_clock: trio.abc.Clock
) -> None:
    async with make_client(server) as client:
        await client.subscribe(f"Q.{SPY}")
        first = await server.connection(0)
        await first.subscribed.wait()
        await first.send(status("slow_consumer", "buffer full"))
        await first.close(1008)
        second = await server.connection(1)
        await second.subscribed.wait()
        (gap,) = await take(aiter(client), 1, GapNotice)
        assert isinstance(gap, GapNotice) and gap.reason.startswith("slow_consumer: buffer full")
        assert client.stats.slow_consumer_kills == 1


@bounded
async def test_a_closing_status_without_a_close_is_ended_by_the_client(
    server: ScriptedServer, autojump_clock: trio.abc.Clock
) -> None:
    async with make_client(server, close_timeout=2.0) as client:
        await client.subscribe(f"Q.{SPY}")
        first = await server.connection(0)
        await first.subscribed.wait()
        await first.send(status("force_disconnect", "maintenance"))
        await server.connection(1)
        assert 2.0 <= server.connected_at[1] <= 2.0 + 0.5 + 2.0
        assert client.stats.reconnects == 1


@bounded
async def test_refused_subscription_becomes_rejected_and_is_not_restored(
    server: ScriptedServer, autojump_clock: trio.abc.Clock
) -> None:
    server.refuse = {f"Q.{QQQ}"}
    async with make_client(server) as client:
        await client.subscribe(f"T.{SPY}", f"Q.{QQQ}", f"Q.{SPY}")
        (rejected,) = await take(aiter(client), 1, Rejected)
        assert rejected == Rejected("massive", f"Q.{QQQ}", "not authorized")
        assert client.subscriptions == (f"T.{SPY}", f"Q.{SPY}")
        await (await server.connection(0)).close(1011)
        second = await server.connection(1)
        await second.subscribed.wait()
        assert second.received[-1] == {"action": "subscribe", "params": f"T.{SPY},Q.{SPY}"}


@bounded
async def test_1001_quote_contracts_use_two_connections_when_allowed(
    server: ScriptedServer, autojump_clock: trio.abc.Clock
) -> None:
    contracts = [f"Q.O:SPY251219C{n * 1000:08d}" for n in range(1, 1002)]
    async with make_client(server, max_connections=2) as client:
        await client.subscribe("T.*", *contracts)
        first, second = await server.connection(0), await server.connection(1)
        await first.subscribed.wait()
        await second.subscribed.wait()
        assert first.subscriptions == ["T.*", *contracts[:1000]]
        assert second.subscriptions == contracts[1000:]
        await second.abort()  # only the second connection's contracts have a gap
        third = await server.connection(2)
        await third.subscribed.wait()
        assert third.subscriptions == contracts[1000:]
        (gap,) = await take(aiter(client), 1, GapNotice)
        assert isinstance(gap, GapNotice) and gap.contracts == ("O:SPY251219C01001000",)
    assert len(server.connections) == 3


@bounded
async def test_max_reconnects_gives_up_with_client_error(
    server: ScriptedServer, autojump_clock: trio.abc.Clock
) -> None:
    client = make_client(server, max_reconnects=2)
    with pytest.raises(ClientError, match="max_reconnects=2"):
        async with client:
            for n in range(3):
                conn = await server.connection(n)
                await conn.authenticated.wait()
                await conn.close(1011)
            async for _ in client:
                pass
    assert len(server.connections) == 3


@bounded
async def test_watch_prints_json_lines(
    server: ScriptedServer, autojump_clock: trio.abc.Clock
) -> None:
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: watch(
                [f"Q.{SPY}"],
                url="ws://127.0.0.1:0/options",
                api_key="KEY",
                out=out,
                table=False,
                connector=server.connector,
            )
        )
        conn = await server.connection(0)
        await conn.subscribed.wait()
        await conn.send(quote(SPY, 1, EPOCH))
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [line["type"] for line in lines] == ["Status", "Quote"]
    assert lines[1]["symbol"] == SPY and lines[1]["contract"]["strike"] == "650"
