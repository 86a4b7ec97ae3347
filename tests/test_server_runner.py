"""The vendor-neutral runner: sessions over in-memory WebSockets in virtual time, and over TCP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import pytest
import trio
import trio_websocket

from mocks.hub import Hub
from mocks.server import MockServer
from mocks.sim.actor import Market
from mocks.sim.market import MarketSettings
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
