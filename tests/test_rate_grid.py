"""`total_rate` (`serve --rate N`) changes the contracts' rates on a market-time grid.

Every watch of a new contract changes every contract's share of `total_rate`, but only from the
next point of `market.RATE_GRID_NS` after the watch; and chunks never reach past it. A storm of
subscriptions, each at its own instant, must cost about what the same contracts watched at once
cost (it used to regenerate the market's chunk at almost every 2 ms tick), and a contract's
events must still depend only on the watches, not on how time is sliced.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from mocks.sim import market
from mocks.sim.contracts import OptionContract
from mocks.sim.events import Event
from mocks.sim.market import MarketSettings, MarketSim, MarketWork
from tests.test_market_chunks import SPY, START, _many, chunks

GRID = market.RATE_GRID_NS / 1e9  # seconds

Plan = list[tuple[float, OptionContract]]  # (when, contract), in time order


def spread(contracts: list[OptionContract], first: float, over: float) -> Plan:
    """Each contract watched at its own instant, evenly over `over` seconds from `first`."""
    n = len(contracts)
    return [(round(first + over * i / n, 9), c) for i, c in enumerate(contracts)]


@dataclass
class Run:
    events: list[Event]
    work: MarketWork

    def count(self, lo: float, hi: float) -> int:
        base = MarketSim(MarketSettings(start=START)).clock.start_ns
        return sum(1 for e in self.events if lo * 1e9 <= e.ts_ns - base < hi * 1e9)

    def of(self, contract: OptionContract) -> list[Event]:
        return [e for e in self.events if getattr(e, "contract", None) == contract]


def drive(
    plan: Plan, until: float, window: float, total_rate: float, *, wake_at_events: bool = False
) -> Run:
    """Advance `window` seconds at a time (and to each watch's time), watching as planned; with
    `wake_at_events`, also wake at each `next_time` in between, as the market actor does."""
    sim = MarketSim(MarketSettings(seed=7, start=START, total_rate=total_rate))
    watches: dict[float, list[OptionContract]] = {}
    for t, contract in plan:
        watches.setdefault(t, []).append(contract)
    steps = {round(i * window, 9) for i in range(1, int(until / window + 1e-9) + 1)}
    events: list[Event] = []
    for t in sorted({*watches, *steps, until}):
        if wake_at_events:
            while (due := sim.next_time()) is not None and due < t:
                events += sim.advance(due)
        events += sim.advance(t)
        for contract in watches.get(t, []):
            assert sim.watch(contract)
    return Run(events, sim.work)


def digest(events: list[Event]) -> str:
    return hashlib.sha256(repr(events).encode()).hexdigest()


def test_same_events_whatever_the_slicing_with_watches_over_many_grid_steps() -> None:
    contracts = _many(120)
    plan = spread(contracts[:115], 0.013, 9 * GRID)
    plan += [(round(4.5 * GRID, 9), c) for c in contracts[115:]]  # five at one instant
    plan.sort(key=lambda p: p[0])
    until = 16 * GRID
    reference = drive(plan, until, 0.002, 3_000.0)
    assert {getattr(e, "contract", None) for e in reference.events} == set(contracts)
    for window in (0.05, 0.25, until):
        assert digest(drive(plan, until, window, 3_000.0).events) == digest(reference.events)
    assert digest(drive(plan, until, 0.05, 3_000.0, wake_at_events=True).events) == digest(
        reference.events
    )
    # Chunks of 3 ms against chunks as long as the run (cut at the grid points), both with small
    # blocks of random words (which make other streams: the same for both).
    with chunks(0.003):
        narrow = drive(plan, until, 0.002, 3_000.0)
    with chunks(until + 1.0, at_once=True):
        wide = drive(plan, until, until, 3_000.0)
    assert digest(narrow.events) == digest(wide.events)


RATE = 50_000.0
STORM_CONTRACTS = 2_000
STORM_UNTIL = 4.0


def test_a_subscription_storm_costs_about_what_watching_at_once_costs() -> None:
    """2,000 watches at distinct instants over 1.5 s, the market advancing every 2 ms, against
    the same 2,000 contracts watched at time 0. Before the rate grid the storm rolled the chunk
    back at almost every tick: 497,407 contract rollbacks and 2,104,360 rate-change steps
    (against 2,000), 28 times the CPU time."""
    contracts = _many(STORM_CONTRACTS)
    at_once = drive([(0.0, c) for c in contracts], STORM_UNTIL, 0.002, RATE)
    storm = drive(spread(contracts, 0.0, 1.5), STORM_UNTIL, 0.002, RATE)
    assert at_once.work.rollbacks == 0
    assert storm.work.rollbacks == 0  # no watch's change lands inside a generated chunk
    # (Chunks stop at the grid for a second after the last watch; then contracts run further
    # ahead, many events a run: the storm's second and a half of watches costs more runs.)
    assert storm.work.runs <= 2 * at_once.work.runs
    assert storm.work.events <= 2 * at_once.work.events
    # one rate change per grid step of the storm, one step for each contract it touches
    assert storm.work.rate_change_steps <= (1.5 / GRID + 1) * STORM_CONTRACTS
    assert storm.work.rate_change_steps <= 0.15 * storm.work.events

    # What is delivered: `total_rate` from the grid point after the last watch on (and from the
    # start when the contracts are watched together at the start).
    last_switch = (1.5 // GRID + 1) * GRID
    assert last_switch <= 2.0
    for run in (storm, at_once):
        assert abs(run.count(2.0, STORM_UNTIL) / (STORM_UNTIL - 2.0) / RATE - 1) < 0.15
    assert abs(at_once.count(0.0, 1.0) / RATE - 1) < 0.15
    # The storm's first second overshoots (each step's early watches keep their larger share
    # until the next grid point) but by less than half: 2.4 times `total_rate` with a 0.25 s grid.
    assert storm.count(0.0, 1.0) < 1.5 * RATE


def test_a_watch_changes_the_others_rates_only_at_the_next_grid_point() -> None:
    """A call watched alone has all of `total_rate`; a put about as busy (same strike) watched
    later halves it, but only from the grid point after the put's watch: up to it, the call's
    events are those of the call alone, wherever in the grid step the put was watched."""
    call, put = SPY[0], SPY[1]
    assert (call.strike_milli, call.right, put.right) == (put.strike_milli, "C", "P")
    switch = 22 * GRID
    until = switch + 40 * GRID
    alone = drive([(0.0, call)], until, 0.05, 200.0)
    early = drive([(0.0, call), (switch - 0.8 * GRID, put)], until, 0.05, 200.0)
    late = drive([(0.0, call), (switch - 0.05 * GRID, put)], until, 0.05, 200.0)
    base = MarketSim(MarketSettings(start=START)).clock.start_ns

    def before(events: list[Event], t: float) -> list[Event]:
        return [e for e in events if e.ts_ns - base < t * 1e9]

    for shared in (early, late):
        assert before(shared.of(call), switch) == before(alone.of(call), switch)
        assert before(shared.of(call), switch + GRID) != before(alone.of(call), switch + GRID)
    # the call alone: 200 events/s; sharing with the put: 100 each
    seconds = until - switch - 4 * GRID
    call_alone = len(alone.of(call)) - len(before(alone.of(call), switch + 4 * GRID))
    call_shared = len(early.of(call)) - len(before(early.of(call), switch + 4 * GRID))
    assert abs(call_alone / seconds / 200.0 - 1) < 0.15
    assert abs(call_shared / seconds / 100.0 - 1) < 0.15


def test_a_newcomer_switches_at_the_grid_point_like_everyone_else() -> None:
    """The newcomer starts with the share its own watch computes; the contracts watched after
    it in the same grid step change its rate, like everyone's, at the grid point."""
    contracts = _many(41)
    first, newcomer, rest = contracts[0], contracts[1], contracts[2:]
    switch = 10 * GRID
    t = switch - 0.9 * GRID
    crowd = spread(rest, t + 0.1 * GRID, 0.7 * GRID)
    alone = drive([(0.0, first), (t, newcomer)], switch + 20 * GRID, 0.05, 400.0)
    crowded = drive([(0.0, first), (t, newcomer), *crowd], switch + 20 * GRID, 0.05, 400.0)
    base = MarketSim(MarketSettings(start=START)).clock.start_ns

    def times(run: Run, lo: float, hi: float) -> list[int]:
        return [e.ts_ns for e in run.of(newcomer) if lo * 1e9 <= e.ts_ns - base < hi * 1e9]

    assert times(alone, 0, switch) == times(crowded, 0, switch)
    later = (switch + GRID, switch + 20 * GRID)
    assert len(times(crowded, *later)) < len(times(alone, *later)) / 5
