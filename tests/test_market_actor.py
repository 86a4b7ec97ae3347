"""The market actor on Trio's clock: batches keep coming whatever the subscribers do."""

from __future__ import annotations

import datetime as dt
import itertools
import time

import trio

from mocks.sim.actor import Market
from mocks.sim.clock import EASTERN, UTC
from mocks.sim.market import MarketSettings
from mocks.sim.symbols import parse_occ

START = dt.datetime(2025, 3, 14, 9, 30, tzinfo=EASTERN)
STRIKES = range(500, 650)


async def test_a_stream_of_subscriptions_does_not_hold_the_market_still(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Each new watch wakes the actor (its contract may be due sooner). A watch every 10 ms,
    new contracts and already watched ones, must not push the next batch out each time: the
    soak's market published nothing for as long as its clients kept subscribing."""
    market = Market(MarketSettings(seed=1, start=START, total_rate=2_000.0))
    batch_times: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(market.run)
        batches = market.subscribe(buffer=1_000)
        market.watch(parse_occ("O:SPY250321C00575000"))

        async def subscribe_all_the_time() -> None:
            for strike in STRIKES:
                market.watch(parse_occ(f"O:SPY250321C00{strike}000"))
                market.watch(parse_occ("O:SPY250321C00575000"))  # already watched
                await trio.sleep(0.01)

        async def collect() -> None:
            async for _ in batches:
                batch_times.append(trio.current_time())

        nursery.start_soon(subscribe_all_the_time)
        nursery.start_soon(collect)
        await trio.sleep(len(STRIKES) * 0.01)
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(batch_times)]
    assert len(batch_times) >= 1.0 / market.resolution  # of 1.5 s of subscribing
    assert max(gaps) <= 2 * market.resolution


def test_served_market_time_zero_is_the_wall_clock_reading_it_started_from() -> None:
    """`serve` reads the wall clock once, then starts up (a TLS certificate, the GC's sweep)
    before the market runs: that time must not become a lag of every timestamp behind the wall
    clock. (Real clock; a start-up of five seconds is simulated by an earlier reading.)"""
    started = dt.datetime.now(UTC) - dt.timedelta(seconds=5)
    seen: list[float] = []

    async def main() -> None:
        market = Market(MarketSettings(seed=1, start=started), wall_clock=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(market.run)
            seen.append(market.now())
            seen.append((market.now_ns() - time.time_ns()) / 1e9)
            nursery.cancel_scope.cancel()

    trio.run(main)
    market_time, skew = seen
    assert 5.0 <= market_time < 65.0
    assert abs(skew) < 1.0  # the market's now is the wall clock's now
