"""The vendor-neutral runner: sessions over in-memory WebSockets in virtual time, and over TCP."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import SimpleNamespace

import orjson
import pytest
import trio
import trio_websocket

from mocks import massive, transport
from mocks.hub import Hub
from mocks.server import MockServer
from mocks.session import VendorServer
from mocks.sim.actor import Market
from mocks.sim.market import MarketSettings, MarketSim
from mocks.vendors import vendor_spec
from tests import echo_vendor
from tests.echo_vendor import EchoServer

TICKER = "O:SPY250321C00575000"


@asynccontextmanager
async def echo_mock(seed: int = 1, **kw: int) -> AsyncIterator[tuple[MockServer, EchoServer]]:
    market = Market(MarketSettings(seed=seed))
    hub = Hub(market)
    core = EchoServer(hub)
    server = MockServer(core, hub, market, seed=seed, **kw)
    async with trio.open_nursery() as nursery:
        await nursery.start(market.run)
        await nursery.start(server.run)
        yield server, core
        nursery.cancel_scope.cancel()


async def test_an_hour_of_quotes_flows_in_virtual_time(autojump_clock: trio.abc.Clock) -> None:
    async with echo_mock() as (server, _), server.connect("ws://x/echo") as ws:
        assert await ws.get_message() == "hello"
        await ws.send_message(TICKER)
        assert await ws.get_message() == f"subscribed {TICKER}"
        start = trio.current_time()
        last_seq, count = 0, 0
        with trio.move_on_after(3600):
            while True:
                quote = orjson.loads(await ws.get_message())
                assert quote["sym"] == TICKER and quote["q"] > last_seq
                last_seq, count = quote["q"], count + 1
        assert trio.current_time() - start == pytest.approx(3600)
        assert count > 1000  # an at-the-money SPY contract quotes several times a second


async def test_same_seed_same_frames(autojump_clock: trio.abc.Clock) -> None:
    async def frames(seed: int) -> list[str | bytes]:
        async with echo_mock(seed) as (server, _), server.connect("ws://x/echo") as ws:
            await ws.get_message()
            await ws.send_message(TICKER)
            out = []
            with trio.move_on_after(60):
                while True:
                    out.append(await ws.get_message())
            return out

    first, second, other = await frames(3), await frames(3), await frames(4)
    assert first == second
    assert first != other


async def test_server_close_code_reaches_the_client(autojump_clock: trio.abc.Clock) -> None:
    async with echo_mock() as (server, core), server.connect("ws://x/echo") as ws:
        await ws.get_message()
        await ws.send_message("close:4001")
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            while True:
                await ws.get_message()
        assert closed.value.reason.code == 4001
        await trio.sleep(1)
        assert core.sessions[0].closed_at is not None
        assert not server.connections


async def test_abort_is_seen_as_1006(autojump_clock: trio.abc.Clock) -> None:
    async with echo_mock() as (server, _), server.connect("ws://x/echo") as ws:
        await ws.get_message()
        await server.connections[1].abort()
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            while True:
                await ws.get_message()
        assert closed.value.reason.code == 1006


async def test_stall_starves_the_client_and_resume_restores(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with echo_mock() as (server, _), server.connect("ws://x/echo") as ws:
        await ws.get_message()
        await ws.send_message(TICKER)
        await ws.get_message()
        server.connections[1].stall()
        with trio.move_on_after(30) as silent:
            await ws.get_message()  # may return frames already in the pipe
            await ws.get_message()
            await ws.get_message()
        assert silent.cancelled_caught
        with trio.move_on_after(5) as pinged:
            await ws.ping(b"are you there")
        assert pinged.cancelled_caught  # no pong through a stalled link
        server.connections[1].resume()
        with trio.fail_after(5):
            await ws.get_message()


async def test_wrong_path_is_rejected_with_404(autojump_clock: trio.abc.Clock) -> None:
    async with echo_mock() as (server, _):
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with server.connect("ws://x/nope"):
                pass
        assert rejected.value.status_code == 404


async def test_slow_consumer_overflows_the_bounded_buffer(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with echo_mock(max_buffer=5) as (server, core), server.connect("ws://x/echo") as ws:
        await ws.get_message()
        for strike in range(560, 600):
            await ws.send_message(f"O:SPY250321C00{strike}000")
        server.connections[1].link.bandwidth = 200.0  # bytes/s: far slower than the feed
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            with trio.fail_after(600):
                while True:
                    await ws.get_message()
        assert closed.value.reason.code == 1008
        assert core.sessions[0].overflows == 1


async def test_tcp_serving_on_loopback() -> None:
    async with echo_mock() as (server, _):
        port = await server.serve_tcp("127.0.0.1", 0)
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/echo") as ws:
            assert await ws.get_message() == "hello"
            await ws.send_message(TICKER)
            assert await ws.get_message() == f"subscribed {TICKER}"
            with trio.fail_after(10):
                assert orjson.loads(await ws.get_message())["sym"] == TICKER
        assert server.history[0].info.remote.startswith("127.0.0.1:")


# -- frames written at delivery (`Connection._send_now`), over TCP ---------------------------------

TICKERS = [f"O:SPY250321C00{strike}000" for strike in range(560, 580)]


@asynccontextmanager
async def tcp_mock(
    core: Callable[[Hub, MarketSim], VendorServer], market: Market, **options: bool
) -> AsyncIterator[tuple[MockServer, int]]:
    """A vendor core served on loopback TCP: the server and its port."""
    hub = Hub(market)
    server = MockServer(core(hub, market.sim), hub, market, seed=1, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(market.run)
        await nursery.start(server.run)
        yield server, await server.serve_tcp("127.0.0.1", 0)
        nursery.cancel_scope.cancel()


def fast_echo_mock() -> AbstractAsyncContextManager[tuple[MockServer, int]]:
    """The echo vendor on loopback TCP, its market at 4,000 events/s over what is watched."""
    market = Market(MarketSettings(seed=1, total_rate=4_000))
    return tcp_mock(lambda hub, _: EchoServer(hub), market)


async def read_quotes(
    ws: trio_websocket.WebSocketConnection, count: int
) -> list[dict[str, object]]:
    """Subscribe to TICKERS, then read `count` quotes, pinging as it goes (and reading on until
    every pong came back): each message must be whole JSON, each contract's sequence must rise."""
    assert await ws.get_message() == "hello"
    for ticker in TICKERS:
        await ws.send_message(ticker)
    quotes: list[dict[str, object]] = []
    last: dict[object, int] = {}
    pings = pongs = 0

    async def ping(payload: bytes) -> None:
        nonlocal pongs
        await ws.ping(payload)  # returns with the pong, which the reading below lets in
        pongs += 1

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            while len(quotes) < count or pongs < pings:
                message = await ws.get_message()
                if isinstance(message, str) and message.startswith("subscribed"):
                    continue
                quote = orjson.loads(message)
                assert quote["sym"] in TICKERS
                assert quote["q"] > last.get(quote["sym"], -1)
                last[quote["sym"]] = quote["q"]
                quotes.append(quote)
                if len(quotes) % 50 == 0 and len(quotes) <= count:
                    pings += 1
                    nursery.start_soon(ping, str(len(quotes)).encode())
    return quotes


class Spy:
    """Counts calls of a method, then calls it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> None:
        self.calls = 0
        real = getattr(owner, name)

        def counted(*args: object, **kwargs: object) -> object:
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)


async def test_frames_written_at_delivery_arrive_whole_in_order_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The kernel takes only half of each write at delivery: the link holds the rest, the driver
    # writes it before anything else, pongs included (a pong inside a frame breaks the stream).
    def half_write(fd: int, data: bytes) -> int:
        return os.write(fd, data[: max(1, len(data) // 2)])

    monkeypatch.setattr(transport, "os", SimpleNamespace(write=half_write))
    written_now = Spy(monkeypatch, transport.Link, "write_now")
    flushed = Spy(monkeypatch, transport.Link, "flush")
    async with fast_echo_mock() as (server, port):
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/echo") as ws:
            quotes = await read_quotes(ws, 400)
            # Counted once the driver wrote the rest (a pong may have carried it out first).
            stats = server.connections[1].stats
            with trio.fail_after(10):
                while stats.events_sent < len(quotes):
                    await trio.sleep(0.01)
        assert written_now.calls > 0 and flushed.calls > 0  # both halves of the way were taken
        assert server.errors == []


async def test_frames_go_the_drivers_way_while_anything_watches_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    written_now = Spy(monkeypatch, transport.Link, "write_now")
    async with fast_echo_mock() as (server, port):
        tapped: list[object] = []
        server.taps.append(lambda conn, send: tapped.append(send))
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/echo") as ws:
            quotes = await read_quotes(ws, 100)
        assert written_now.calls == 0
        assert len(tapped) >= len(quotes)
        server.taps.clear()
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/echo") as ws:
            await read_quotes(ws, 100)
        assert written_now.calls > 0  # the check above can fail


async def test_a_session_failing_at_delivery_ends_its_connection_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_publish = echo_vendor.EchoSession.publish

    def publish(self: echo_vendor.EchoSession, events: object, now: float) -> object:
        if self.info.conn_id == 1:
            raise RuntimeError("a bug in the session")
        return real_publish(self, events, now)  # type: ignore[arg-type]

    monkeypatch.setattr(echo_vendor.EchoSession, "publish", publish)
    async with fast_echo_mock() as (server, port):
        url = f"ws://127.0.0.1:{port}/echo"
        async with trio_websocket.open_websocket_url(url) as doomed:
            assert await doomed.get_message() == "hello"
            await doomed.send_message(TICKER)
            assert await doomed.get_message() == f"subscribed {TICKER}"
            with pytest.raises(trio_websocket.ConnectionClosed), trio.fail_after(10):
                await doomed.get_message()  # its first quote fails it
        async with trio_websocket.open_websocket_url(url) as ws:
            assert len(await read_quotes(ws, 100)) >= 100  # the feed and the server go on
        assert len(server.errors) == 1
        assert "a bug in the session" in repr(server.errors[0])


async def test_a_connection_waiting_for_its_timer_is_sent_for_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Theta's driver always waits for a timer (the next heartbeat): the feed sends for it
    # all the same, and wakes it only for an earlier timer.
    written_now = Spy(monkeypatch, transport.Link, "write_now")
    spec = vendor_spec("theta")
    contract = {"root": "SPY", "expiration": 20250321, "strike": 575000, "right": "C"}
    subscribe = {"msg_type": "STREAM", "sec_type": "OPTION", "req_type": "QUOTE"}
    market = Market(MarketSettings(seed=1, total_rate=2_000))
    async with tcp_mock(spec.create_server, market) as (server, port):
        url = f"ws://127.0.0.1:{port}{spec.path}"
        async with trio_websocket.open_websocket_url(url) as ws:
            request = {**subscribe, "add": True, "id": 1, "contract": contract}
            await ws.send_message(orjson.dumps(request).decode())
            quotes = 0
            with trio.fail_after(30):
                while quotes < 200:
                    message = orjson.loads(await ws.get_message())
                    quotes += message["header"]["type"] == "QUOTE"
    assert written_now.calls > 0
    assert server.errors == []


async def test_a_timer_a_delivery_sets_wakes_the_driver() -> None:
    # Massive with a flush interval: the first event of a batch sets a timer the parked
    # driver does not wait for yet; the feed wakes it, and the batch leaves on time (with no
    # wake-up it would wait to fill a frame: some 400 quotes, 8 s at this rate).
    market = Market(MarketSettings(seed=1, total_rate=50))

    def core(hub: Hub, sim: MarketSim) -> VendorServer:
        return massive.create_server(hub, sim, flush_interval=0.05, max_batch_events=100_000)

    async with tcp_mock(core, market) as (server, port):
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/options") as ws:
            await ws.get_message()  # connected
            await ws.send_message('{"action":"auth","params":"k"}')
            await ws.get_message()
            await ws.send_message('{"action":"subscribe","params":"Q.' + TICKER + '"}')
            await ws.get_message()
            with trio.fail_after(10):
                for _ in range(3):
                    frame = orjson.loads(await ws.get_message())
                    assert {event["ev"] for event in frame} == {"Q"}
        assert server.errors == []


async def test_deliveries_tell_a_driver_its_timer_is_due_when_market_time_runs_ahead() -> None:
    # `--rate max`: market time runs far ahead of the clock the driver's timer is set on.
    # Amberdata's snapshots are due by market time; each delivery that finds one due wakes
    # the driver (waiting for its timer on the clock, it would send about one a second).
    spec = vendor_spec("amberdata")
    market = Market(MarketSettings(seed=1), max_rate=True, resolution=0.25)
    instrument = {"instrument": "BTC-28MAR25-90000-C", "exchange": "deribit"}
    subscribe = {"jsonrpc": "2.0", "id": 1, "method": "subscribe"}
    options = {"backpressure": True, "keep_events": False}
    async with tcp_mock(spec.create_server, market, **options) as (server, port):
        url = f"ws://127.0.0.1:{port}{spec.path}"
        headers = [(b"x-api-key", b"k")]
        async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
            request = {**subscribe, "params": ["market:options:order:snapshots", instrument]}
            await ws.send_message(orjson.dumps(request).decode())
            snapshots = 0
            with trio.fail_after(20):
                while snapshots < 200:
                    message = orjson.loads(await ws.get_message())
                    snapshots += "params" in message
    assert server.errors == []
