"""`serve`'s market is a live feed: an event reaches the client within one market tick of its
timestamp (issue 9, item 4), not after a fixed batching delay. Virtual time (Trio's autojump
clock): the mock's own work takes no time, so what is measured is the schedule alone. On the
real clock: `--rate max` rests without clients, and `serve` says when it falls behind."""

from __future__ import annotations

import datetime as dt
import time

import orjson
import pytest
import trio
import trio_websocket

import mocks.serve
from mocks.serve import (
    LIVE_RESOLUTION,
    MAX_RATE_RESOLUTION,
    long_running_server,
    serving_market,
    warn_when_behind,
)
from mocks.sim.actor import Market
from mocks.sim.clock import EASTERN
from mocks.sim.market import MarketSettings
from mocks.sim.symbols import parse_occ

START = dt.datetime(2025, 3, 14, 9, 30, tzinfo=EASTERN)
QUOTES = [f"Q.O:SPY250321{right}00{strike}000" for strike in range(560, 590) for right in "CP"]


async def _subscribe_to_quotes(ws: trio_websocket.WebSocketConnection) -> None:
    """Massive's handshake, then `QUOTES`."""
    await ws.get_message()  # connected
    await ws.send_message('{"action":"auth","params":"k"}')
    await ws.get_message()
    await ws.send_message(
        orjson.dumps({"action": "subscribe", "params": ",".join(QUOTES)}).decode()
    )
    await ws.get_message()  # subscribed


async def _lateness_ms(rate: float | None, seconds: float) -> tuple[list[float], int]:
    """Per Massive event: the client's receipt (as a Unix ms reading of the market's clock)
    minus the event's `t`; and how many frames carried them."""
    settings = MarketSettings(seed=5, start=START, total_rate=rate)
    market = serving_market(settings, max_rate=False, wall_clock=False)
    server = long_running_server("massive", market, (), settings.seed, max_rate=False)
    late: list[float] = []
    frames = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(market.run)
        await nursery.start(server.run)
        async with server.connect("ws://massive.mock/options") as ws:
            await _subscribe_to_quotes(ws)
            with trio.move_on_after(seconds):
                while True:
                    events = orjson.loads(await ws.get_message())
                    received_ms = market.now_ns() / 1e6
                    frames += 1
                    late.extend(received_ms - e["t"] for e in events if e["ev"] == "Q")
        nursery.cancel_scope.cancel()
    return late, frames


@pytest.mark.parametrize("rate", [None, 2_000.0])
async def test_each_event_reaches_the_client_within_a_tick_of_its_timestamp(
    autojump_clock: trio.abc.Clock, rate: float | None
) -> None:
    """The market publishes what is due every `LIVE_RESOLUTION` and the Massive mock sends a
    batch as it comes (it used to hold every batch 20 ms for company, on top of 50 ms ticks).
    `t` is whole milliseconds (truncated), hence the extra millisecond."""
    late, frames = await _lateness_ms(rate, 5.0)
    assert len(late) > 100
    assert min(late) >= 0.0
    assert max(late) <= LIVE_RESOLUTION * 1000 + 1.0
    assert frames > 50  # frames go out as events fall due, not in a few big batches


def test_max_rate_keeps_its_big_batches() -> None:
    """`--rate max` is a throughput benchmark: its batches stay large (per-batch costs spread
    over many events), whatever the live feed's tick is."""
    market = serving_market(MarketSettings(seed=1), max_rate=True, wall_clock=False)
    assert market.max_rate and market.resolution == MAX_RATE_RESOLUTION > 50 * LIVE_RESOLUTION


async def test_max_rate_idles_once_every_client_has_gone() -> None:
    """`--rate max` produces as fast as its clients drain. With none left it stops (it used to
    keep a core busy until the process ended: its contracts stay watched) and the next client
    gets events again. Trio's real clock: the market would otherwise run on in any pause."""
    settings = MarketSettings(seed=1, start=START)
    market = serving_market(settings, max_rate=True, wall_clock=False)
    server = long_running_server("massive", market, (), settings.seed, max_rate=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(market.run)
        await nursery.start(server.run)
        for _ in range(2):  # the second client comes after the first has gone
            async with server.connect("ws://massive.mock/options") as ws:
                await _subscribe_to_quotes(ws)
                with trio.fail_after(10):
                    assert orjson.loads(await ws.get_message())[0]["ev"] == "Q"
            with trio.fail_after(10):
                while server.hub.has_interest():
                    await trio.sleep(0.01)
            await trio.sleep(0.05)  # a batch made before the last client left may still go out
            idle_at = market.sim.now
            await trio.sleep(0.3)
            assert market.sim.now == idle_at
        nursery.cancel_scope.cancel()


async def _live_market_watching_quotes(nursery: trio.Nursery) -> Market:
    """`serve`'s live market, running in `nursery`, with `QUOTES` watched (no server)."""
    market = serving_market(MarketSettings(seed=1, start=START), max_rate=False, wall_clock=False)
    await nursery.start(market.run)
    for symbol in QUOTES:
        market.watch(parse_occ(symbol.removeprefix("Q.")))
    return market


async def test_serve_is_silent_while_the_market_keeps_up(
    autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Virtual time: the mock's work takes none, so every batch goes out when due."""
    async with trio.open_nursery() as nursery:
        market = await _live_market_watching_quotes(nursery)
        nursery.start_soon(warn_when_behind, market, 1.0, 0.0)
        await trio.sleep(5.5)
        assert market.sim.now > 5.0 and market.worst_lag < 1e-9
        nursery.cancel_scope.cancel()
    assert capsys.readouterr().err == ""


async def test_serve_says_when_the_market_falls_behind_the_clock(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Real clock, and a process short of CPU, played by blocking the event loop for 0.3 s:
    the next batch goes out about 300 ms after it was due, and `serve` says so on stderr."""
    async with trio.open_nursery() as nursery:
        market = await _live_market_watching_quotes(nursery)
        nursery.start_soon(warn_when_behind, market, 0.5, 0.2)
        await trio.sleep(0.1)
        time.sleep(0.3)  # the point: nothing else runs meanwhile
        await trio.sleep(0.6)
        nursery.cancel_scope.cancel()
    err = capsys.readouterr().err
    assert "feedlab serve: behind the clock: events went out up to " in err
    late_ms = int(err.split("up to ", 1)[1].split(" ms", 1)[0])
    assert 250 <= late_ms < 2_000


@pytest.mark.parametrize("max_rate", [False, True])
async def test_serve_looks_out_for_lateness_on_the_clock_only(
    monkeypatch: pytest.MonkeyPatch, max_rate: bool
) -> None:
    """`feedlab serve` runs `warn_when_behind` on its market; `--rate max` has no clock to keep."""
    looked_at: list[Market] = []

    async def spy(market: Market) -> None:
        looked_at.append(market)

    monkeypatch.setattr(mocks.serve, "warn_when_behind", spy)
    settings = MarketSettings(seed=1, start=START)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            mocks.serve.serve_forever, ["massive"], "127.0.0.1", 0, settings, (), max_rate
        )
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert len(looked_at) == (0 if max_rate else 1)
