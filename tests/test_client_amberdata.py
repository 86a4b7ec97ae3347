"""The Amberdata client's connection behaviour against a tiny scripted JSON-RPC server over
memory streams, in virtual time: requests and ids, routing by subscription id, errors, plan
limits, reconnects with new ids, gap notices, half-open sockets, staleness, corrupt frames.

The fake here is deliberately dumb and separate from `mocks/amberdata/` (which the integration
tests use): it answers exactly what each test scripts.
"""

from __future__ import annotations

import io
import json
import os
import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket

from clients.amberdata import (
    LIVE_URL,
    ORDER_SNAPSHOTS,
    TRADES,
    AmberdataClient,
    Event,
    OrderBookSnapshot,
    Trade,
    watch,
)
from clients.common import (
    GAP_MARGIN,
    AuthError,
    Backoff,
    ClientError,
    Dropped,
    GapNotice,
    LimitError,
    Rejected,
    Status,
)

BTC_PUT = "BTC-24JUN22-15000-P"
BTC_CALL = "BTC-24JUN22-70000-C"
EPOCH = 1_700_000_000.0  # the Unix time our virtual clock starts at


def virtual_unix_clock() -> float:
    return EPOCH + trio.current_time()


def snapshot(instrument: str, sequence: int, at: float | None = None) -> dict[str, Any]:
    ms = round((virtual_unix_clock() if at is None else at) * 1000)
    return {
        "exchange": "deribit",
        "instrument": instrument,
        "timestamp": ms - 2000,
        "exchangeTimestamp": ms,
        "exchangeTimestampNanoseconds": 0,
        "markPrice": 0.005,
        "bids": [[0.0045, 34.5]],
        "asks": [[0.0055, 3.2]],
        "bestBidPrice": 0.0045,
        "bestAskPrice": 0.0055,
        "sequence": sequence,
    }


def trade(instrument: str, sequence: int) -> dict[str, Any]:
    return {
        "instrument": instrument,
        "exchange": "deribit",
        "exchangeTimestamp": round(virtual_unix_clock() * 1000),
        "exchangeTimestampNanoseconds": 0,
        "isBuySide": True,
        "price": 0.004,
        "size": 1.0,
        "tradeId": str(sequence),
        "tradeSequence": sequence,
    }


# ---------------------------------------------------------------------------------------------
# The scripted fake


class HalfOpenable(trio.abc.Stream):
    """The client's end of the bytes. Once stalled nothing arrives and what is sent vanishes,
    like a connection whose peer died without a FIN."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self._inner = inner
        self.stalled = False
        self._closed = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if not self.stalled:
            await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = b"" if self.stalled else await self._inner.receive_some(max_bytes)
        if self.stalled:
            await self._closed.wait()
            raise trio.ClosedResourceError
        return bytes(data)

    async def aclose(self) -> None:
        self._closed.set()
        await self._inner.aclose()


class FakeConnection:
    def __init__(self, index: int, headers: list[tuple[bytes, bytes]], stream: HalfOpenable):
        self.index = index
        self.headers = dict(headers)
        self.link = stream
        self.opened_at = trio.current_time()
        self.ws: trio_websocket.WebSocketConnection | None = None
        self.server_stream: trio.abc.Stream | None = None
        self.requests: list[dict[str, Any]] = []
        self.streams: dict[str, tuple[str, str]] = {}  # subscription id -> (stream, instrument)
        self.client_close_code: int | None = None

    def id_for(self, stream: str, instrument: str) -> str:
        return next(i for i, target in self.streams.items() if target == (stream, instrument))

    async def send(self, message: object) -> None:
        assert self.ws is not None
        text = message if isinstance(message, str | bytes) else json.dumps(message)
        await self.ws.send_message(text)

    async def push(self, stream: str, instrument: str, result: object) -> None:
        await self.push_to(self.id_for(stream, instrument), result)

    async def push_to(self, subscription_id: str, result: object) -> None:
        params = {"subscription": subscription_id, "result": result}
        await self.send({"jsonrpc": "2.0", "method": "subscription", "params": params})

    async def close(self, code: int) -> None:
        assert self.ws is not None
        with trio.move_on_after(1):  # the client's side may be torn down before it answers
            await self.ws.aclose(code)

    async def abort(self) -> None:
        assert self.server_stream is not None
        await self.server_stream.aclose()


class FakeAmberdata:
    def __init__(
        self,
        keys: tuple[str, ...] = ("UAKgood",),
        limit_per_connection: int | None = None,
        reply_delay: float = 0.0,
    ) -> None:
        self.keys = keys
        self.limit_per_connection = limit_per_connection
        self.reply_delay = reply_delay
        self.connections: list[FakeConnection] = []
        self.urls: list[str] = []
        self.refuse: dict[str, dict[str, Any]] = {}  # instrument -> the error object
        self.mute = False  # read requests, answer nothing
        self._ids = 0

    def subscribed(self, index: int = 0) -> int:
        """How many subscriptions connection `index` holds (0 before it exists)."""
        return len(self.connections[index].streams) if index < len(self.connections) else 0

    def subscribes(self) -> list[dict[str, Any]]:
        return [r for c in self.connections for r in c.requests if r.get("method") == "subscribe"]

    @asynccontextmanager
    async def connector(
        self, url: str, headers: list[tuple[bytes, bytes]]
    ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        self.urls.append(url)
        client_stream, server_stream = trio.testing.memory_stream_pair()
        link = HalfOpenable(client_stream)
        connection = FakeConnection(len(self.connections), headers, link)
        connection.server_stream = server_stream
        self.connections.append(connection)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serve, connection, server_stream)
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                link,  # type: ignore[arg-type]  # any Stream works; typed too narrowly
                "ws.amberdata.com",
                "/options",
                extra_headers=headers,
            )
            try:
                yield ws
            finally:
                await ws.aclose()
                nursery.cancel_scope.cancel()

    async def _serve(self, connection: FakeConnection, stream: trio.abc.Stream) -> None:
        async with trio.open_nursery() as nursery:
            request = await trio_websocket.wrap_server_stream(nursery, stream)
            ws = connection.ws = await request.accept()
            key = connection.headers.get(b"x-api-key", b"").decode()
            if key not in self.keys:
                await ws.send_message(f"invalid api key '{key}'")
                await ws.aclose(1008)
                return
            try:
                while True:
                    message = json.loads(await ws.get_message())
                    connection.requests.append(message)
                    if not self.mute:
                        nursery.start_soon(self._answer, connection, message)
            except trio_websocket.ConnectionClosed as exc:
                connection.client_close_code = None if exc.reason is None else exc.reason.code
            nursery.cancel_scope.cancel()

    async def _answer(self, connection: FakeConnection, request: dict[str, Any]) -> None:
        await trio.sleep(self.reply_delay)
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
        if request["method"] == "unsubscribe":
            reply["result"] = connection.streams.pop(request["params"][0], None) is not None
        elif (instrument := request["params"][1]["instrument"]) in self.refuse:
            reply["error"] = self.refuse[instrument]
        elif (
            self.limit_per_connection is not None
            and len(connection.streams) >= self.limit_per_connection
        ):
            reply["error"] = {
                "description": "Max subscription limit reached on this connection. Please "
                "open additional connections to subscribe to more instruments.",
                "code": 400,
            }
        else:
            self._ids += 1
            subscription_id = str(uuid.UUID(int=self._ids))
            connection.streams[subscription_id] = (request["params"][0], instrument)
            reply["result"] = subscription_id
        with trio.move_on_after(1):  # the connection may be gone meanwhile
            try:
                await connection.send(reply)
            except trio_websocket.ConnectionClosed:
                pass


async def until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def first_rejected(client: AmberdataClient) -> Rejected:
    with trio.fail_after(30):
        async for event in client:
            if isinstance(event, Rejected):
                return event
    raise AssertionError("the iterator ended without a Rejected")


async def collect(client: AmberdataClient, into: list[Event]) -> None:
    async for event in client:
        into.append(event)


def of(kind: type[Any], events: list[Event]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def make_client(fake: FakeAmberdata, **settings: Any) -> AmberdataClient:
    settings.setdefault("api_key", "UAKgood")
    return AmberdataClient(
        url="ws://127.0.0.1:8766/options",
        connector=fake.connector,
        clock=virtual_unix_clock,
        backoff=Backoff(rng=random.Random(1)),
        **settings,
    )


# ---------------------------------------------------------------------------------------------
# Requests, routing, errors


async def test_subscribes_with_json_rpc_requests_and_the_key_header(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeAmberdata()
    async with make_client(fake) as client:
        await client.subscribe(f"{ORDER_SNAPSHOTS}:{BTC_PUT}", f"{TRADES}:{BTC_CALL}@deribit")
        await until(lambda: fake.subscribed() == 2)
    assert fake.urls == ["ws://127.0.0.1:8766/options"]
    assert fake.connections[0].headers[b"x-api-key"] == b"UAKgood"
    assert fake.subscribes() == [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "subscribe",
            "params": [ORDER_SNAPSHOTS, {"instrument": BTC_PUT, "exchange": "deribit"}],
        },
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "subscribe",
            "params": [TRADES, {"instrument": BTC_CALL, "exchange": "deribit"}],
        },
    ]
    assert fake.connections[0].client_close_code == 1000  # an orderly close on exit


async def test_key_comes_from_the_environment(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMBERDATA_API_KEY", "UAKgood")
    fake = FakeAmberdata()
    async with make_client(fake, api_key=None):
        await until(lambda: bool(fake.connections) and fake.connections[0].ws is not None)
    assert fake.connections[0].headers[b"x-api-key"] == b"UAKgood"
    assert AmberdataClient()._url == LIVE_URL


async def test_pushes_are_routed_by_subscription_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeAmberdata()
    events: list[Event] = []
    async with make_client(fake) as client, trio.open_nursery() as nursery:
        nursery.start_soon(collect, client, events)
        await client.subscribe(f"{ORDER_SNAPSHOTS}:{BTC_PUT}", f"{TRADES}:{BTC_PUT}")
        await until(lambda: fake.subscribed() == 2)
        connection = fake.connections[0]
        await connection.push(TRADES, BTC_PUT, trade(BTC_PUT, 7))
        await connection.push(ORDER_SNAPSHOTS, BTC_PUT, snapshot(BTC_PUT, 100))
        await connection.push_to("00000000-0000-0000-0000-00000000dead", trade(BTC_PUT, 8))
        await until(lambda: len(of(OrderBookSnapshot, events)) == 1)
        nursery.cancel_scope.cancel()
    [traded] = of(Trade, events)
    [book] = of(OrderBookSnapshot, events)
    assert (traded.symbol, traded.sequence) == (BTC_PUT, 7)
    assert (book.symbol, book.sequence, book.best_bid_price) == (BTC_PUT, 100, 0.0045)
    assert book.contract is not None and book.contract.strike == 15000
    assert client.stats.unknown_subscription_dropped == 1


async def test_both_error_shapes_become_rejected(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeAmberdata()
    fake.refuse["*"] = {
        "description": "Wildcard subscription is not allowed for instruments. Please subscribe "
        "with each instrument name explicitly.",
        "code": 400,
    }
    fake.refuse["BAD"] = {"code": -32602, "message": "Invalid params"}
    events: list[Event] = []
    async with make_client(fake) as client, trio.open_nursery() as nursery:
        nursery.start_soon(collect, client, events)
        await client.subscribe(f"{TRADES}:*", f"{TRADES}:BAD@okex", f"{TRADES}:{BTC_PUT}")
        await until(lambda: len(of(Rejected, events)) == 2)
        # an error that names no request (JSON-RPC's parse error) is surfaced too
        await fake.connections[0].send(
            {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}
        )
        await until(lambda: len(of(Rejected, events)) == 3)
        nursery.cancel_scope.cancel()
        assert client.subscriptions == (f"{TRADES}:{BTC_PUT}@deribit",)  # refused ones are gone
    wildcard, bad, parse_error = of(Rejected, events)
    assert wildcard.vendor == "amberdata" and wildcard.subscription == f"{TRADES}:*"
    assert wildcard.reason.startswith("400: Wildcard subscription is not allowed")
    assert (bad.subscription, bad.reason) == (f"{TRADES}:BAD@okex", "-32602: Invalid params")
    assert (parse_error.subscription, parse_error.reason) == ("", "-32700: Parse error")
    assert client.stats.rejected == 3


async def test_unsubscribe_uses_the_subscription_id(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeAmberdata()
    async with make_client(fake) as client:
        await client.subscribe(f"{TRADES}:{BTC_PUT}")
        await until(lambda: fake.subscribed() == 1)
        connection = fake.connections[0]
        subscription_id = connection.id_for(TRADES, BTC_PUT)
        await client.unsubscribe(f"{TRADES}:{BTC_PUT}@deribit")
        await until(lambda: not connection.streams)
        assert connection.requests[-1] == {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "unsubscribe",
            "params": [subscription_id],
        }
        await connection.push_to(subscription_id, trade(BTC_PUT, 1))  # already in flight
        await trio.sleep(1)
        assert client.subscriptions == ()
        assert client.stats.dropped_after_unsubscribe == 1
        assert client.stats.unknown_subscription_dropped == 0
        assert client.stats.unsubscribe_unknown == 0


async def test_unsubscribe_before_the_id_arrives(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeAmberdata(reply_delay=2.0)
    async with make_client(fake) as client:
        await client.subscribe(f"{TRADES}:{BTC_PUT}")
        await until(lambda: bool(fake.connections) and len(fake.connections[0].requests) == 1)
        await client.unsubscribe(f"{TRADES}:{BTC_PUT}")
        await until(lambda: len(fake.connections[0].requests) == 2)
        await until(lambda: not fake.connections[0].streams)  # undone once the id was known
        assert fake.connections[0].requests[1]["method"] == "unsubscribe"


# ---------------------------------------------------------------------------------------------
# Sequences and hostile frames


async def deliver_snapshots(
    pushes: list[tuple[int, float | None]], expect: int
) -> tuple[AmberdataClient, list[int]]:
    """Push order-book snapshots of one instrument, (sequence, time) each, on one connection;
    the client and the sequences it delivered, once `expect` are in and a second has passed."""
    fake = FakeAmberdata()
    events: list[Event] = []
    async with make_client(fake) as client, trio.open_nursery() as nursery:
        nursery.start_soon(collect, client, events)
        await client.subscribe(f"{ORDER_SNAPSHOTS}:{BTC_PUT}")
        await until(lambda: fake.subscribed() == 1)
        for sequence, at in pushes:
            push = snapshot(BTC_PUT, sequence, at)
            await fake.connections[0].push(ORDER_SNAPSHOTS, BTC_PUT, push)
        await until(lambda: len(of(OrderBookSnapshot, events)) == expect)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    return client, [e.sequence for e in of(OrderBookSnapshot, events)]


async def test_duplicates_are_dropped_and_regressions_delivered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, delivered = await deliver_snapshots([(s, None) for s in (10, 10, 12, 11, 20)], 4)
    assert delivered == [10, 12, 11, 20]
    assert client.stats.duplicates_dropped == 1 and client.stats.regressions == 1


async def test_a_new_event_that_meets_an_old_number_is_delivered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Found by `feedlab chaos --vendor amberdata --seed 7`: after a reconnect the numbers went
    on from below where the last connection's had jumped to, and a new trade that met an old
    number was dropped as a repeat, lost without a gap notice. The number and the time are the
    event; the number alone is not."""
    t = virtual_unix_clock()
    pushes: list[tuple[int, float | None]] = [(10, t), (20, t + 1), (10, t + 2), (10, t + 2)]
    client, delivered = await deliver_snapshots(pushes, 3)
    assert delivered == [10, 20, 10]
    assert client.stats.regressions == 1 and client.stats.duplicates_dropped == 1


async def test_corrupt_frames_are_counted_and_skipped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeAmberdata()
    events: list[Event] = []
    async with make_client(fake) as client, trio.open_nursery() as nursery:
        nursery.start_soon(collect, client, events)
        await client.subscribe(f"{ORDER_SNAPSHOTS}:{BTC_PUT}")
        await until(lambda: fake.subscribed() == 1)
        connection = fake.connections[0]
        subscription_id = connection.id_for(ORDER_SNAPSHOTS, BTC_PUT)
        for garbage in (
            "{not json",
            b"\xff\xfe",
            "[1, 2]",
            '"hello"',
            {"jsonrpc": "2.0", "method": "subscription", "params": "x"},
            {"jsonrpc": "2.0", "method": "subscription", "params": {"subscription": 5}},
            {"jsonrpc": "2.0", "method": "mystery"},
        ):
            await connection.send(garbage)
        await connection.push_to(subscription_id, snapshot(BTC_PUT, 1) | {"sequence": "1"})
        await connection.push_to(subscription_id, {"instrument": BTC_PUT})  # no timestamp
        await connection.push_to(subscription_id, snapshot(BTC_PUT, 2))
        await until(lambda: bool(of(OrderBookSnapshot, events)))
        nursery.cancel_scope.cancel()
    assert [e.sequence for e in of(OrderBookSnapshot, events)] == [2]
    assert client.stats.frames_dropped_unparseable == 10
    drops = of(Dropped, events)  # each one reported, in order, before the snapshot after them
    assert len(drops) == client.stats.dropped == 10
    assert drops[0].reason.startswith("invalid JSON") and drops[0].frame == "{not json"
    assert [d.frame for d in drops[2:5]] == ["1", "2", "hello"]  # each message of a batch
    no_id = "subscription push without a `subscription` id string"
    assert drops[5].reason == drops[6].reason == no_id
    assert drops[7].reason == "not a JSON-RPC reply or subscription push"
    assert drops[8].reason.startswith(f"unreadable {ORDER_SNAPSHOTS} result")
    assert events.index(drops[-1]) < events.index(of(OrderBookSnapshot, events)[0])
    assert client.stats.reconnects == 0


# ---------------------------------------------------------------------------------------------
# Losing the connection


async def test_bad_key_is_fatal_and_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeAmberdata()
    client = make_client(fake, api_key="UAKwrong")
    with pytest.raises(AuthError, match=r"refused the API key \(invalid api key\)$"):
        async with client:
            await client.subscribe(f"{TRADES}:{BTC_PUT}")
            async for _ in client:
                pass
    await trio.sleep(60)
    assert len(fake.connections) == 1
    with pytest.raises(AuthError):  # also raised from __aexit__ for one who never iterates
        async with make_client(fake, api_key="UAKwrong"):
            await trio.sleep(10)


async def test_reconnects_after_1011_with_new_subscription_ids(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeAmberdata()
    events: list[Event] = []
    async with make_client(fake) as client, trio.open_nursery() as nursery:
        nursery.start_soon(collect, client, events)
        await client.subscribe(f"{ORDER_SNAPSHOTS}:{BTC_PUT}", f"{TRADES}:{BTC_CALL}")
        await until(lambda: fake.subscribed() == 2)
        first = fake.connections[0]
        await first.push(ORDER_SNAPSHOTS, BTC_PUT, snapshot(BTC_PUT, 1))
        await until(lambda: len(of(OrderBookSnapshot, events)) == 1)
        [book] = of(OrderBookSnapshot, events)
        assert book.snapshot_ns is not None and book.snapshot_ns < book.timestamp_ns
        last_seen = book.snapshot_ns / 1e9  # when it was published
        old_ids = set(first.streams)
        await trio.sleep(3)
        lost_at = virtual_unix_clock()
        await first.close(1011)
        await until(lambda: bool(of(GapNotice, events)))
        second = fake.connections[1]
        assert set(second.streams).isdisjoint(old_ids)
        assert sorted(r["params"][0] for r in second.requests) == [ORDER_SNAPSHOTS, TRADES]
        await second.push_to(next(iter(old_ids)), snapshot(BTC_PUT, 2))  # a dead id
        await second.push(ORDER_SNAPSHOTS, BTC_PUT, snapshot(BTC_PUT, 3))
        await until(lambda: len(of(OrderBookSnapshot, events)) == 2)
        nursery.cancel_scope.cancel()
    [gap] = of(GapNotice, events)
    assert gap.contracts == (BTC_PUT, BTC_CALL)  # sorted
    assert gap.start == pytest.approx(last_seen - GAP_MARGIN, abs=1e-6) and gap.start < lost_at
    assert gap.end >= lost_at and gap.reason == "closed with 1011"
    assert [e.sequence for e in of(OrderBookSnapshot, events)] == [1, 3]
    assert client.stats.reconnects == 1 and client.stats.unknown_subscription_dropped == 1
    statuses = [s.status for s in of(Status, events)]
    assert statuses == ["connected", "reconnecting", "connected"]


async def test_reconnects_after_1006_with_jittered_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeAmberdata()
    twin = Backoff(rng=random.Random(1))  # the same draws as the client's
    async with make_client(fake) as client:
        await client.subscribe(f"{TRADES}:{BTC_PUT}")
        await until(lambda: fake.subscribed() == 1)
        for attempt in range(3):
            connection = fake.connections[-1]
            await until(lambda c=connection: len(c.streams) == 1)  # type: ignore[misc]
            lost_at = trio.current_time()
            await connection.abort()
            await until(lambda n=attempt: len(fake.connections) == n + 2)  # type: ignore[misc]
            waited = fake.connections[-1].opened_at - lost_at
            assert waited == pytest.approx(twin.next_delay(), abs=1e-6)
        assert client.stats.reconnects == 3
    assert [len(c.requests) for c in fake.connections] == [1, 1, 1, 1]


async def test_a_half_open_socket_is_replaced_after_the_ping_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeAmberdata()
    events: list[Event] = []
    client = make_client(fake, ping_interval=5.0, ping_timeout=3.0, close_timeout=2.0)
    async with client, trio.open_nursery() as nursery:
        nursery.start_soon(collect, client, events)
        await client.subscribe(f"{TRADES}:{BTC_PUT}")
        await until(lambda: fake.subscribed() == 1)
        await trio.sleep(30)  # pings answered: nothing happens on a quiet trade stream
        assert len(fake.connections) == 1
        stalled_at = trio.current_time()
        fake.connections[0].link.stalled = True
        await until(lambda: bool(of(GapNotice, events)))
        nursery.cancel_scope.cancel()
    # at most a ping interval, the ping timeout, the close timeout and the first backoff
    assert fake.connections[1].opened_at - stalled_at <= 5.0 + 3.0 + 2.0 + 0.5
    assert client.stats.ping_timeouts == 1 and client.stats.stale_replacements == 0
    assert len(fake.connections[1].streams) == 1


async def test_a_silent_snapshot_stream_is_replaced_a_quiet_trade_stream_is_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeAmberdata()
    async with make_client(fake) as trades_only:
        await trades_only.subscribe(f"{TRADES}:{BTC_PUT}")
        await trio.sleep(3600)
        assert trades_only.stats.stale_replacements == 0 and len(fake.connections) == 1
    fake = FakeAmberdata()
    async with make_client(fake) as books:
        await books.subscribe(f"{ORDER_SNAPSHOTS}:{BTC_PUT}")
        await until(lambda: fake.subscribed() == 1)
        subscribed_at = trio.current_time()
        await until(lambda: len(fake.connections) == 2, timeout=300)
        assert fake.connections[1].opened_at - subscribed_at >= 180.0
        assert books.stats.stale_replacements == 1


async def test_unanswered_requests_count_as_a_dead_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeAmberdata()
    fake.mute = True
    async with make_client(fake, request_timeout=10.0) as client:
        await client.subscribe(f"{TRADES}:{BTC_PUT}")
        await until(lambda: len(fake.connections) == 2, timeout=60)
        assert client.stats.request_timeouts == 1
        assert fake.connections[1].requests[0]["method"] == "subscribe"


async def test_gives_up_after_max_reconnects(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeAmberdata()
    client = make_client(fake, max_reconnects=1)
    with pytest.raises(ClientError, match="max_reconnects=1"):
        async with client:
            await client.subscribe(f"{TRADES}:{BTC_PUT}")
            for count in (1, 2):
                await until(lambda n=count: len(fake.connections) == n)  # type: ignore[misc]
                await until(lambda: fake.connections[-1].ws is not None)
                await fake.connections[-1].close(1011)
            async for _ in client:
                pass
    assert len(fake.connections) == 2


# ---------------------------------------------------------------------------------------------
# Plan limits


def instruments(count: int) -> list[str]:
    return [f"{TRADES}:BTC-24JUN22-{10000 + 1000 * i}-C" for i in range(count)]


async def test_subscriptions_spread_over_connections_within_the_plan(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeAmberdata(keys=("UATtrial",), limit_per_connection=100)
    async with make_client(fake, api_key="UATtrial") as client:
        assert (client.max_connections, client.max_subscriptions_per_connection) == (5, 100)
        await client.subscribe(*instruments(101))
        await until(lambda: sum(len(c.streams) for c in fake.connections) == 101)
        assert [len(c.streams) for c in fake.connections] == [100, 1]
        with pytest.raises(LimitError):
            await client.subscribe(*instruments(501)[101:])
        await trio.sleep(1)
        assert len(fake.subscribes()) == 101 and client.connection_count == 2
    assert client.stats.rejected == 0


async def test_limit_error_before_sending_when_the_plan_is_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeAmberdata(keys=("UAOdemand",))
    client = make_client(
        fake, api_key="UAOdemand", max_connections=1, max_subscriptions_per_connection=2
    )
    async with client:
        await client.subscribe(*instruments(2))
        with pytest.raises(LimitError):
            await client.subscribe(*instruments(4)[2:])
        await trio.sleep(1)
        assert len(fake.subscribes()) == 2 and client.subscriptions == tuple(
            s + "@deribit" for s in instruments(2)
        )


async def test_a_server_limit_below_the_plan_moves_the_subscription(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeAmberdata(limit_per_connection=2)
    events: list[Event] = []
    async with make_client(fake) as client, trio.open_nursery() as nursery:
        nursery.start_soon(collect, client, events)
        await client.subscribe(*instruments(3))
        await until(lambda: sum(len(c.streams) for c in fake.connections) == 3)
        await client.subscribe(*instruments(4)[3:])  # learned: goes straight to connection 1
        await until(lambda: sum(len(c.streams) for c in fake.connections) == 4)
        nursery.cancel_scope.cancel()
    assert [len(c.streams) for c in fake.connections] == [2, 2]
    assert [s.status for s in of(Status, events)].count("rebalanced") == 1
    assert not of(Rejected, events)


async def test_a_server_limit_with_no_room_left_is_rejected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeAmberdata(limit_per_connection=2)
    events: list[Event] = []
    async with make_client(fake, max_connections=1) as client, trio.open_nursery() as nursery:
        nursery.start_soon(collect, client, events)
        await client.subscribe(*instruments(3))
        await until(lambda: bool(of(Rejected, events)))
        nursery.cancel_scope.cancel()
    [rejected] = of(Rejected, events)
    assert rejected.subscription == instruments(3)[2]
    assert rejected.reason.startswith("400: Max subscription limit reached on this connection")
    assert len(client.subscriptions) == 2


# ---------------------------------------------------------------------------------------------
# `feedlab watch amberdata`


async def test_watch_prints_one_json_line_per_event(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeAmberdata()
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: watch(
                [f"{TRADES}:{BTC_PUT}"],
                url="ws://127.0.0.1:8766/",
                api_key="UAKgood",
                out=out,
                table=False,
                connector=fake.connector,
            )
        )
        await until(lambda: fake.subscribed() == 1)
        await fake.connections[0].push(TRADES, BTC_PUT, trade(BTC_PUT, 5))
        await until(lambda: "Trade" in out.getvalue())
        nursery.cancel_scope.cancel()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["type"] for line in lines] == ["Status", "Trade"]
    assert lines[1]["symbol"] == BTC_PUT and lines[1]["sequence"] == 5


# ---------------------------------------------------------------------------------------------
# Live


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("AMBERDATA_API_KEY"), reason="needs AMBERDATA_API_KEY")
async def test_live_wildcards_are_refused_with_the_documented_error() -> None:
    """Proves the key, the endpoint and the error mapping without naming a listed instrument
    (option names expire)."""
    async with AmberdataClient() as client:
        await client.subscribe(f"{ORDER_SNAPSHOTS}:*@deribit")
        event = await first_rejected(client)
    assert event.subscription == f"{ORDER_SNAPSHOTS}:*@deribit"
    assert "400" in event.reason or "-326" in event.reason
