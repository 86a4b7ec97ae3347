"""The market works ahead in chunks: chunking must never show in what it produces.

Each test runs the same market more than once, with chunks far apart and with chunks cut every
few milliseconds of market time (and small blocks of random words, so that streams cross many
block boundaries), chunks made at once and made contract by contract, and compares every event.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from bisect import bisect_left
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from mocks.serve import LIVE_CHUNK_BUDGET
from mocks.sim import market, quoting
from mocks.sim.clock import EASTERN, MarketClock
from mocks.sim.contracts import OptionContract
from mocks.sim.events import Event, OptionQuote, OptionTrade
from mocks.sim.market import MarketSettings, MarketSim
from mocks.sim.symbols import parse_deribit, parse_occ

START = dt.datetime(2025, 3, 14, 9, 30, tzinfo=EASTERN)
SPY = [parse_occ(f"O:SPY250321{r}00{k}000") for k in (565, 570, 575, 580, 585) for r in "CP"]
SPXW = parse_occ("O:SPXW250314C05600000")
BTC = parse_deribit("BTC-28MAR25-60000-C")


@contextmanager
def chunks(seconds: float, at_once: bool = False) -> Iterator[None]:
    """Chunks of `seconds` of market time, made at once or contract by contract, and small
    blocks of random words (so that streams cross many block boundaries)."""
    saved = (
        market._CHUNK_EVENTS_PER_INSTRUMENT,
        market._CHUNK_MIN_NS,
        market._CHUNK_MAX_NS,
        market._EAGER_EVENTS_PER_RUN,
        quoting.QUOTE_BLOCK,
        quoting.TRADE_BLOCK,
    )
    market._CHUNK_EVENTS_PER_INSTRUMENT = 0
    market._CHUNK_MIN_NS = market._CHUNK_MAX_NS = round(seconds * 1e9)
    market._EAGER_EVENTS_PER_RUN = 0 if at_once else 1_000_000_000
    quoting.QUOTE_BLOCK, quoting.TRADE_BLOCK = 7, 3
    try:
        yield
    finally:
        (
            market._CHUNK_EVENTS_PER_INSTRUMENT,
            market._CHUNK_MIN_NS,
            market._CHUNK_MAX_NS,
            market._EAGER_EVENTS_PER_RUN,
            quoting.QUOTE_BLOCK,
            quoting.TRADE_BLOCK,
        ) = saved


Plan = list[tuple[float, list[OptionContract]]]  # (time, contracts watched then)


def play(
    plan: Plan, until: float, window: float, start: dt.datetime = START, **settings: object
) -> list[Event]:
    """Watch as planned, advancing `window` seconds at a time (and to each watch's time)."""
    sim = MarketSim(MarketSettings(seed=7, start=start, **settings))  # type: ignore[arg-type]
    watches: dict[float, list[OptionContract]] = {}
    for t, contracts in plan:
        watches.setdefault(t, []).extend(contracts)
    steps = {i * window for i in range(1, int(until / window) + 1)}
    events: list[Event] = []
    for t in sorted({*watches, *steps, until}):
        events += sim.advance(t)
        for contract in watches.get(t, []):
            assert sim.watch(contract)
    return events


def digest(events: list[Event]) -> str:
    return hashlib.sha256(repr(events).encode()).hexdigest()


def both(
    plan: Plan,
    until: float,
    window: float,
    small: float = 0.02,
    start: dt.datetime = START,
    **settings: object,
) -> list[Event]:
    """The stream with one chunk for the whole run, sliced coarsely, and with `small` chunks
    (made at once, and contract by contract), sliced finely: they must be the same, event for
    event."""
    with chunks(until + 1.0, at_once=True):
        wide = play(plan, until, 10 * window, start, **settings)
    for at_once in (True, False):
        with chunks(small, at_once):
            narrow = play(plan, until, window, start, **settings)
        assert len(narrow) == len(wide)
        assert digest(narrow) == digest(wide)
    return wide


def test_chunk_and_block_boundaries_do_not_show() -> None:
    events = both([(0.0, [*SPY, SPXW, BTC])], 120.0, 0.37)
    kinds = {type(e) for e in events}
    assert kinds == {OptionQuote, OptionTrade}
    assert {e.contract for e in events if isinstance(e, OptionQuote)} == {*SPY, SPXW, BTC}


def test_contracts_watched_inside_a_generated_chunk() -> None:
    plan: Plan = [(0.0, SPY[:3]), (3.3, SPY[3:6]), (41.5, [SPXW]), (42.0, [BTC])]
    events = both(plan, 90.0, 0.5)
    first_btc = min(e.ts_ns for e in events if getattr(e, "contract", None) == BTC)
    assert first_btc >= MarketClock(START).unix_ns(42.0)
    # and a newcomer's stream depends only on (seed, contract, when it was first watched)
    with chunks(90.0):
        alone = play([(42.0, [BTC])], 90.0, 90.0)
    assert alone == [e for e in events if getattr(e, "contract", None) == BTC]


def test_total_rate_changes_on_the_rate_grid_whatever_the_chunks() -> None:
    """Under `total_rate` each watch changes every contract's rate at the next point of the
    rate grid (tests/test_rate_grid.py); watches on grid points and off them."""
    plan: Plan = [(0.0, SPY[:2]), (5.3, SPY[2:5]), (5.3, []), (17.0, SPY[5:]), (30.05, [SPXW])]
    events = both(plan, 60.0, 0.25, total_rate=40.0)
    late = [e for e in events if e.ts_ns >= MarketClock(START).unix_ns(31.0)]
    assert len(late) == pytest.approx(40 * 29, rel=0.3)


def test_a_watch_after_a_quiet_spell_changes_the_rates_of_runs_made_in_an_earlier_chunk() -> None:
    """Advanced 0.25 s at a time with 20 ms staggered chunks, each chunk's reach is shorter than
    the runs of the one before (made to the end of a long `advance`): a watch's rate change
    between the two must still send those runs back, not take effect at their ends."""
    plan: Plan = [(0.0, SPY[:3]), (5.02, [SPY[4]]), (16.02, [SPY[5]]), (21.27, [SPXW])]
    both(plan, 40.0, 0.25, total_rate=40.0)


@pytest.mark.parametrize(("small", "watch_at"), [(10.0, 130.08), (15.0, 135.26)])
def test_a_rate_change_just_after_the_path_lets_go_of_old_prices(
    small: float, watch_at: float
) -> None:
    """Runs seconds long (staggered chunks of 10-15 s), and the underlying path letting go of
    its old prices (past 128 s) at the start of the chunk in which a watch changes the rates:
    the runs begun in the chunk before go back to their start and need the prices from then.
    Found by `feedlab serve amberdata --rate 5000` under rolling subscriptions (IndexError
    after about two minutes)."""
    plan: Plan = [(0.0, SPY[:4]), (watch_at, [SPY[4]])]
    both(plan, 160.0, 0.25, small=small, total_rate=40.0)


def test_market_hours_across_closes_whatever_the_chunks() -> None:
    friday_close = dt.datetime(2025, 3, 14, 15, 58, tzinfo=EASTERN)
    plan: Plan = [(0.0, [SPY[0], SPY[5]]), (900.0, [SPY[1]])]
    until = 3 * 86_400.0 + 600.0  # to Monday 16:08
    events = both(plan, until, 97.0, small=7.0, start=friday_close, always_open=False)
    for e in events:
        local = dt.datetime.fromtimestamp(e.ts_ns / 1e9, EASTERN)
        assert local.weekday() < 5 and dt.time(9, 30) <= local.time() < dt.time(16, 0)
    friday = [e for e in events if e.ts_ns < MarketClock(friday_close).unix_ns(120.0)]
    assert friday  # two minutes of Friday ...
    # ... then Monday, including the contract watched on Friday after the close
    assert any(getattr(e, "contract", None) == SPY[1] for e in events)


@pytest.mark.parametrize("at_once", [True, False])
def test_last_quote_and_mark_follow_what_was_returned(at_once: bool) -> None:
    with chunks(5.0, at_once):
        sim = MarketSim(MarketSettings(seed=3, start=START))
        sim.watch(SPY[4])
        standing: OptionQuote | None = None
        years = []
        for i in range(1, 300):
            t = sim.next_time()
            assert t is not None
            batch = sim.advance(t if i % 2 else i * 3.7)
            for e in batch:
                if isinstance(e, OptionQuote):
                    standing = e
            assert sim.last_quote(SPY[4]) == standing
            mark = sim.mark(SPY[4])
            assert mark is not None and 0.0 < mark.value < 20.0
            years.append(mark.years)
        assert standing is not None
        assert years == sorted(years, reverse=True) and years[0] > years[-1]


def test_next_time_is_when_the_next_event_is() -> None:
    sim = MarketSim(MarketSettings(seed=5, start=START))
    assert sim.next_time() is None
    sim.watch(SPY[2])
    sim.watch_underlying("SPX")
    for _ in range(100):
        t = sim.next_time()
        assert t is not None
        batch = sim.advance(t)
        assert batch and batch[-1].ts_ns <= sim.clock.unix_ns(t) + 1


def test_a_burst_multiplies_the_rates_for_its_duration_whatever_the_slicing() -> None:
    def run(window: float) -> list[Event]:
        sim = MarketSim(MarketSettings(seed=4))
        for strike in (570, 575, 580):
            sim.watch(parse_occ(f"O:SPY250321C00{strike}000"))
        events: list[Event] = []
        t = 0.0
        while t < 120.0 - 1e-9:
            t = round(t + window, 6)
            events += sim.advance(t)
            if t == 30.0:
                sim.burst(8.0, 30.0)
        return events

    coarse, fine = run(10.0), run(0.05)
    assert coarse == fine
    base_ns = MarketSim(MarketSettings(seed=4)).clock.start_ns

    def count(lo: float, hi: float) -> int:
        return sum(1 for e in coarse if lo * 1e9 <= e.ts_ns - base_ns < hi * 1e9)

    before, during, after = count(0, 30), count(30, 60), count(60, 90)
    assert during > 4 * before and during > 4 * after


def test_a_burst_under_total_rate_outlasts_the_watches_during_it() -> None:
    """`serve --scenario ... --rate N`: a client subscribing during a burst changes the watched
    contracts' share of `--rate`, not the burst (it set the scale back to the share alone, and
    the burst's end restored the share of before the watch). Overlapping bursts multiply."""
    contracts = _many(12)

    def rate(plan: list[tuple[float, str, float]], lo: float, hi: float) -> float:
        sim = MarketSim(MarketSettings(seed=1, start=START, total_rate=500.0))
        for contract in contracts[:10]:
            assert sim.watch(contract, at=0.0)
        events: list[Event] = []
        t = 0.0
        for at, what, factor in [*plan, (40.0, "end", 0.0)]:
            events += sim.advance(at)
            t = at
            if what == "burst":
                sim.burst(factor, 10.0, at=t)
            elif what == "watch":
                assert sim.watch(contracts[int(factor)], at=t)
        start_ns = sim.clock.start_ns
        n = sum(1 for e in events if lo * 1e9 <= e.ts_ns - start_ns < hi * 1e9)
        return n / (hi - lo)

    assert 400 < rate([], 8.0, 14.0) < 600
    burst = rate([(5.0, "burst", 3.0), (7.0, "watch", 10), (8.0, "watch", 11)], 8.0, 14.0)
    assert 1_200 < burst < 1_800
    after = rate([(5.0, "burst", 3.0), (7.0, "watch", 10), (8.0, "watch", 11)], 16.0, 40.0)
    assert 400 < after < 600  # the share with the newcomers, not the one before them
    both = rate([(5.0, "burst", 3.0), (6.0, "burst", 2.0), (7.0, "watch", 10)], 8.0, 14.0)
    assert 2_400 < both < 3_600


def _many(n: int) -> list[OptionContract]:
    """n distinct SPY contracts: four expirations, calls and puts, strikes from 300 up."""
    expirations = ("250321", "250620", "250919", "251219")
    return [
        parse_occ(f"O:SPY{expirations[i % 4]}{'CP'[(i // 4) % 2]}{(300 + i // 8) * 1000:08d}")
        for i in range(n)
    ]


def _watch_one_by_one(n: int) -> MarketSim:
    """As `serve --rate` sees subscriptions arrive: each watch at its own instant (a rate change
    for every contract at the next grid point), 50 per message, the market advancing between
    messages."""
    sim = MarketSim(MarketSettings(seed=2, start=START, total_rate=20.0 * n))
    t = 0.0
    for i, contract in enumerate(_many(n)):
        if i % 50 == 0:
            t += 0.01
            sim.advance(t)
        assert sim.watch(contract, at=t + (i % 50) * 1e-6)
    sim.advance(t + 1.0)
    sim.advance(t + 2.0)
    return sim


def test_watching_contracts_one_by_one_costs_linear_work() -> None:
    """Every watch with `total_rate` changes every contract's rate; a contract must not step
    through every change (2,000 contracts x 2,000 changes, were they not on the rate grid) but
    only the ones that precede its own events."""
    small, large = _watch_one_by_one(500), _watch_one_by_one(2_000)
    for sim in (small, large):
        work = sim.work
        assert work.rate_change_steps <= 2 * work.events + work.runs
        # All in the past: only the one in force is kept, and any made since the earliest
        # run that a change could still send back began (staggered runs reach ahead).
        assert len(sim._rate_changes) <= 2
    # 4x the contracts (and 4x the events): about 4x the steps, where stepping every contract
    # through every change would be 16x (and 4,000,000 steps)
    per_event = [s.work.rate_change_steps / s.work.events for s in (small, large)]
    assert per_event[1] < 2 * per_event[0]
    assert large.work.rate_change_steps < 200_000


def test_a_storm_after_a_quiet_spell_sends_each_run_back_about_once() -> None:
    """`serve --rate`'s market (its chunk budget, advanced every 50 ms): 150 contracts for 30 s
    make long chunks and runs; then 50 watches, one per grid step, each a rate change for every
    contract. A run redone to its old end went back again at every one of them (7,842 runs
    redone; a `serve` whose clients came and went spent 76% of its time redoing runs): now it
    stops at the change and goes on in short runs while contracts are being watched."""
    sim = MarketSim(
        MarketSettings(seed=3, start=START, total_rate=2_000.0), chunk_budget=LIVE_CHUNK_BUDGET
    )
    contracts = _many(200)
    for contract in contracts[:150]:
        assert sim.watch(contract)
    t = 0.0
    while t < 30.0:
        t = round(t + 0.05, 2)
        sim.advance(t)
    assert sim._reach - sim._chunk_start > 2 * market.RATE_GRID_NS  # long, made in the quiet
    rollbacks = sim.work.rollbacks
    for contract in contracts[150:]:
        t = round(t + 0.05, 2)
        sim.advance(t)
        assert sim.watch(contract)
    sim.advance(t + 10.0)
    assert sim.work.rollbacks - rollbacks <= 2 * len(contracts)


def test_rate_changes_at_one_instant_or_in_one_grid_step_are_one_change() -> None:
    sim = MarketSim(MarketSettings(seed=2, start=START, total_rate=100.0))
    contracts = _many(600)
    for contract in contracts[:300]:
        sim.watch(contract, at=1.0)
    assert len(sim._rate_changes) == 1
    step = market.RATE_GRID_NS / 1e9
    for i, contract in enumerate(contracts[300:]):
        sim.watch(contract, at=1.0 + step * (0.01 + i / 400))  # inside the next grid step
    assert [t for t, _ in sim._rate_changes] == [round(1e9), round(1e9 + market.RATE_GRID_NS)]


def test_a_chunk_is_a_few_milliseconds_of_work() -> None:
    """On the real clock the market actor advances 0.05 s at a time; no advance may have to
    make more than its chunk budget's events beyond the events it returns."""
    sim = MarketSim(MarketSettings(seed=3, start=START, total_rate=5_000.0))
    for contract in _many(1_000):
        sim.watch(contract)
    made = 0
    for i in range(1, 61):
        out = sim.advance(i * 0.05)
        assert sim.work.events - made <= market.CHUNK_BUDGET + len(out)
        made = sim.work.events
    assert made >= 5_000 * 3 * 0.7


@pytest.mark.parametrize("always_open", [True, False])
def test_next_time_does_not_depend_on_the_chunks(always_open: bool) -> None:
    """The market actor sleeps until `next_time`: its wake-ups (and so the batches it sends)
    must be the same whatever the chunk boundaries, across a close too."""
    friday_close = dt.datetime(2025, 3, 14, 15, 59, 50, tzinfo=EASTERN)

    def wakes() -> list[tuple[float, int]]:
        sim = MarketSim(MarketSettings(seed=9, start=friday_close, always_open=always_open))
        sim.watch(SPY[1])
        sim.watch_underlying("SPX")
        out = []
        for _ in range(40):
            t = sim.next_time()
            assert t is not None
            batch = sim.advance(t)
            assert batch and 0 <= sim.clock.unix_ns(t) - batch[0].ts_ns <= 1
            out.append((t, len(batch)))
        return out

    with chunks(5_000.0, at_once=True):
        wide = wakes()
    for at_once in (True, False):
        with chunks(0.02, at_once):
            assert wakes() == wide


def test_rate_change_after_rate_change_inside_a_chunk_keeps_the_chunk_at_its_live_size() -> None:
    """A rate change inside the generated chunk (a burst, at its exact time) sends the chunk's
    contracts back to redo it. What they made before is dead and must not pile up (a chunk's
    worth per change: a soak, when every watch under `total_rate` was such a change, saw 45,000
    events held at once where 2,000 were live)."""
    sim = MarketSim(MarketSettings(seed=1, start=START, total_rate=2_000.0))
    contracts = _many(80)
    for contract in contracts[:40]:
        sim.watch(contract)
    sim.advance(0.5)
    for i, contract in enumerate(contracts[40:]):
        now = 0.5 + i * 0.001
        sim.watch(contract, at=now)
        sim.burst(1.5, 0.0005, at=now)
        sim.advance(now)
        # What is held to be returned is what the contracts' latest runs made after `now`,
        # once each, and nothing of the runs redone.
        assert len({id(s) for s in sim._ran}) == len(sim._ran)
        due = sim._consumed + 1.0
        live = sum(len(s.times) - bisect_left(s.times, due) for s in sim._ran)
        assert sim._pending.held() == live
        assert sum(map(len, sim._pending.events)) == sum(map(len, sim._pending.times))
    assert sim.work.chunks <= 3  # the changes did land inside one chunk ...
    assert sim.work.rollbacks >= 40 * 30  # ... and sent its contracts back


def test_a_burst_behind_a_chunk_made_ahead_applies_to_every_contract() -> None:
    """The market actor asks `next_time` after each batch: once the chunk's events are all out,
    that makes the next chunk ahead of `now`. A burst that starts now, before that chunk, must
    change the rates of the contracts generated ahead as it does when nothing was made ahead
    (where a chunk ends must not decide whether a contract sees a rate change)."""

    def run(look_ahead: bool) -> list[Event]:
        sim = MarketSim(MarketSettings(seed=6, start=START))
        for contract in SPY:
            sim.watch(contract)
        events = sim.advance(0.001)
        while True:  # the last event of the chunk, then a moment after it, still inside it
            sim._run_due(float(sim._frontier))  # every contract with something in the chunk
            last = max(s.times[-1] for s in sim._ran if s.times) // 1 / 1e9
            if sim._frontier / 1e9 - last > 0.01:
                break
            events += sim.advance(sim._frontier / 1e9)
        events += sim.advance(last + 0.005)
        if look_ahead:
            sim.next_time()  # the next chunk is made, starting at the old frontier
        sim.burst(6.0, 20.0)
        t = last + 0.005
        while t < last + 60.0:
            t += 0.05
            events += sim.advance(t)
        return events

    made_ahead, not_ahead = run(True), run(False)
    assert made_ahead == not_ahead


@pytest.mark.parametrize("at_once", [True, False])
def test_reports_at_the_same_instant_come_in_root_order_whenever_watched(at_once: bool) -> None:
    """Index levels are reported on the same one-second grid, so two indices' reports share
    their instants; those ties (like any) come out in instrument order, underlyings by root,
    not in the order the underlyings were watched or made."""
    with chunks(30.0, at_once):  # NDX is watched inside the chunk SPX's reports were made for
        sim = MarketSim(MarketSettings(seed=8, start=START))
        sim.watch_underlying("SPX")
        events = sim.advance(2.3)
        sim.watch_underlying("NDX")
        events += sim.advance(25.0)
    at: dict[int, list[str]] = {}
    for e in events:
        at.setdefault(e.ts_ns, []).append(e.root)  # type: ignore[union-attr]
    shared = [roots for roots in at.values() if len(roots) > 1]
    assert len(shared) > 10
    assert all(roots == ["NDX", "SPX"] for roots in shared)


def test_rate_changes_reach_the_runs_made_beyond_the_chunk() -> None:
    """Chunks made contract by contract run each contract up to a chunk length beyond the
    frontier. Rate changes there (bursts, and under `total_rate` a watch after a quiet spell)
    must send those runs back exactly as they do inside a chunk made at once: the streams are
    the same whatever the chunks, however the changes fall."""
    # (when asked, factor, duration, starting this much later)
    bursts = [(3.0, 4.0, 1.5, 0.0), (3.7, 2.0, 0.8, 0.0), (9.013, 6.0, 0.05, 0.0)]
    bursts += [(9.2, 0.5, 2.0, 0.0), (16.0, 2.5, 1.0, 0.55), (17.5, 3.0, 0.5, 0.045)]
    watches = {0.0: SPY[:6], 6.0: SPY[6:], 9.1: [SPXW], 14.02: [BTC]}

    def run(seconds: float, at_once: bool, window: float) -> list[Event]:
        with chunks(seconds, at_once):
            sim = MarketSim(MarketSettings(seed=11, start=START, total_rate=400.0))
            events: list[Event] = []
            instants = sorted({*(b[0] for b in bursts), *watches, 20.0})
            t = 0.0
            for instant in instants:
                while t < instant:
                    t = min(round(t + window, 6), instant)
                    events += sim.advance(t)
                for contract in watches.get(instant, []):
                    sim.watch(contract)
                for asked, factor, duration, later in bursts:
                    if asked == instant:
                        sim.burst(factor, duration, at=instant + later)
            return events

    wide = run(21.0, True, 1.0)
    assert digest(run(0.7, False, 0.05)) == digest(wide)
    assert digest(run(0.03, False, 0.01)) == digest(wide)


@pytest.mark.parametrize("at_once", [True, False])
def test_an_event_just_after_what_was_returned_survives_a_newcomer(at_once: bool) -> None:
    """An index report lands on a whole nanosecond, so `advance` can stop one nanosecond before
    it; a contract watched then puts its events in the bucket that report waits in. The report
    must still come out, once (the bucket drops only what was returned)."""

    def reports(stop: bool) -> list[Event]:
        with chunks(30.0, at_once):
            sim = MarketSim(MarketSettings(seed=8, start=START))
            sim.watch_underlying("SPX")
            sim.watch(SPY[0])
            events = sim.advance(1.0)
            if stop:
                events += sim.advance(2.0 - 1e-9)  # one nanosecond before the report at 2 s
                sim.watch(SPY[1])
            else:
                sim.watch(SPY[1], at=2.0 - 1e-9)
            events += sim.advance(5.0)
        return [e for e in events if not isinstance(e, OptionQuote | OptionTrade)]

    stopped = reports(True)
    assert MarketClock(START).unix_ns(2.0) in [e.ts_ns for e in stopped]
    assert stopped == reports(False)


def test_an_advance_far_ahead_keeps_the_buckets_few(monkeypatch: pytest.MonkeyPatch) -> None:
    """One `advance` far ahead makes one long chunk: a staggered one still has no more than
    `_MAX_BUCKETS` buckets for it (at 16 events each it would have hundreds here), and the
    events are the same."""
    with chunks(0.5):
        small_steps = play([(0.0, SPY)], 600.0, 5.0)
        monkeypatch.setattr(market, "_MAX_BUCKETS", 50)
        sim = MarketSim(MarketSettings(seed=7, start=START))
        for contract in SPY:
            sim.watch(contract)
        one_step = sim.advance(600.0)
        assert len(sim._pending.times) <= 2 * 50 + 2  # (the chunk, and runs reach as far again)
    assert digest(one_step) == digest(small_steps)
