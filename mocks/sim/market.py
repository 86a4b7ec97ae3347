"""The simulated options market: one discrete-event simulator over every watched instrument.

`MarketSim` is the sans-I/O core. `advance(until)` produces every event due up to `until`, in
time order. It never reads a clock, and every random number comes from generators derived from
(seed, instrument), so a contract's events depend neither on which other contracts are watched,
nor on how the caller slices time into `advance` calls, nor on Trio's scheduling.

The model, briefly: each underlying follows a seeded geometric Brownian motion with jumps on a
fixed time grid (`mocks.sim.paths`; index levels are reported once a grid step, only on change);
each contract is a pair of Poisson processes (quote changes, trades) whose intensity falls off
away from the money (`mocks.sim.quoting` makes its quotes and trades). Contracts are synthesised
on demand; one that has already expired in real life streams as if it had weeks left (a
"zombie"), unless `strict` reproduces the vendors (accepted, no data). Outside market hours (when
`always_open` is off) a contract's clock stops: its processes resume at the next open.

Speed (issue "Speed", bench/bench_market.py): the market works ahead in *chunks* of market time.
A chunk holds every instrument's events up to a frontier, merged once; `advance` only slices it,
so the market actor's 0.05 s wake-ups cost next to nothing. Each contract's stream is a pure
function of its random words, which are addressed by block number, and of the underlying's grid
(also pure), so generating in chunks gives exactly the stream that generating event by event
would, whatever the chunk boundaries (tests/test_market_chunks.py checks this). A watch inside
the generated chunk generates the newcomer up to the frontier and re-merges what is not yet
returned. Chunks hold a few dozen events per instrument: enough to make per-contract setup
negligible, small enough to stay in the CPU cache. The rest of the speed is in
`ContractProcess.run`, one loop per quote.

Rate changes: with `total_rate`, the watched contracts share `total_rate` events per second, so
each newly watched contract changes every contract's rate scale. It does so at the next point of
a fixed market-time grid (`RATE_GRID_NS`) after the watch, for every contract alike, and all the
watches between two grid points are one change (the last one made counts every contract watched
so far). The newcomer starts with the scale its own watch computes (its share at that moment)
and switches at the grid point with the others. Only the watches at the first one's instant
change the scale at once: contracts watched together at the start share `total_rate` from the
start.
Under `total_rate` a chunk never reaches past the next grid point after what `advance` was asked
for, so a watch's change never lands inside a generated chunk: a subscription storm costs one
rate change per grid step, not a regenerated chunk per watch. A burst (a fault) changes the rates
at its exact times instead: contracts generated past its start roll back to the chunk's start
and regenerate with the new rate from there on. What a contract makes depends only on the
watches (their times and order) and the bursts, never on the chunks or on how `advance` is
called.
"""

from __future__ import annotations

import datetime as dt
import gc
import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from heapq import heappop, heappush
from operator import attrgetter, itemgetter
from typing import NamedTuple

from mocks.sim.clock import (
    EASTERN,
    REGULAR_CLOSE,
    REGULAR_OPEN,
    UTC,
    MarketClock,
    MarketHours,
    is_trading_day,
    unix_ns,
)
from mocks.sim.contracts import Kind, OptionContract, Underlying, underlying
from mocks.sim.events import Event, IndexPrice, OptionQuote, OptionTrade, UnderlyingTick
from mocks.sim.paths import UnderlyingPath
from mocks.sim.quoting import CONSECUTIVE_STEPS, SEQUENCE_STEPS, ContractProcess, spread_table
from mocks.sim.rng import derive_rng, derive_seed

_NS = 1_000_000_000

# Chunk sizing: enough market time that each contract makes a few dozen events in it (the
# per-run setup is then small), but no more work than takes a few milliseconds: on the real
# clock a chunk is made in one go, between two of the market actor's 0.05 s wake-ups, and
# everything waits for it. A chunk's work is counted in events, a contract's run (setup, its
# state pulled into the CPU cache) as `_RUN_COST` of them: with 200 contracts a chunk is about
# 3,600 events, with 10,000 contracts (one event per run) about 1,300. At `--rate max` nothing
# waits on a schedule, and bigger chunks amortise the runs (`CHUNK_BUDGET_MAX_RATE`).
_CHUNK_EVENTS_PER_INSTRUMENT = 32
_RUN_COST = 2
CHUNK_BUDGET = 4_000
CHUNK_BUDGET_MAX_RATE = 16_000
_CHUNK_MIN_NS = _NS // 1000
_CHUNK_MAX_NS = 60 * _NS
# The rate grid of `total_rate`: a watch changes every contract's rate scale only from the next
# grid point on, and chunks never reach past it. A subscription storm (thousands of watches a
# second, each at its own instant) then costs one rate change per grid step, not one regeneration
# of the chunk per watch; and `--rate N` is reached within a grid step after subscriptions change.
# Why a twentieth of a second: until the grid point, the contracts watched early in a step run at
# the larger share their watch computed, and the first subscriber has all of `--rate`. 2,000
# watches over 1.5 s (tests/test_rate_grid.py) made the first second 2.4 times `--rate` with a
# 0.25 s grid and 1.3 times with this one, for the same contract runs; the extra rate-change
# steps (one per contract and grid step of the storm: 7,000 -> 25,000) cost little. Under
# `serve`, 200 clients subscribing at once saw the first one alone get 50,000 events/s for a
# quarter second, enough to close it as a slow consumer before it had read its first event.
RATE_GRID_NS = _NS // 20
# How far `next_time` works ahead looking for the next event before it settles for a lower bound.
_LOOKAHEAD_NS = 7 * 86_400 * _NS


@dataclass(frozen=True, slots=True)
class MarketSettings:
    seed: int = 0
    start: dt.datetime = dt.datetime(2025, 3, 14, 9, 30, tzinfo=EASTERN)
    always_open: bool = True  # False: US options and indices trade 09:30-16:00 ET only
    strict: bool = False  # expired contracts are accepted but never quote, as at the vendors
    consecutive_sequences: bool = False  # vendors document gaps (1, 2, 6, 9); this turns them off
    activity: float = 1.0  # multiplier on every quote and trade rate
    # Events/s over all watched contracts (`serve --rate N`): reached from the first point of the
    # market's rate grid (every 50 ms, `RATE_GRID_NS`) after the watched contracts last changed.
    total_rate: float | None = None
    underlying_step: float = 0.5  # seconds between moves of equities and crypto
    index_step: float = 1.0  # seconds between index price reports ("about once a second")


@dataclass(slots=True)
class MarketWork:
    """What the market has done so far, counted in steps rather than seconds (for tests and
    benchmarks: how the work grows with the number of contracts, whatever the machine)."""

    chunks: int = 0
    runs: int = 0  # contract generations, one per contract with something due in a chunk
    events: int = 0  # events made in fresh chunks (not counting redone ones)
    rate_change_steps: int = 0  # rate changes applied to a contract while generating it
    rollbacks: int = 0  # contracts sent back to the chunk's start to redo it (a rate change)


class Mark(NamedTuple):
    """The inputs and result of the last valuation of a contract (Amberdata's snapshot fields).

    A named tuple: Amberdata asks for one per snapshot, and a frozen dataclass cost three times
    as much to make."""

    underlying_price: float  # spot, index level or (crypto) forward
    vol: float  # annualised, as a fraction
    years: float  # time to expiry used for the valuation
    value: float  # theoretical premium in the quote unit (USD, or fraction of F for crypto)


_ts_ns = itemgetter(0)  # every event's first field
_key_order = attrgetter("key_order")


def _sorted_by(items: list[Event], keys: list[float]) -> list[Event]:
    """`items` in the (stable) order of `keys`, its parallel list of sort keys.

    The sort asks for each item's key once, in list order, before it sorts, so the key function
    can simply hand out the next of `keys`. Sorting the events themselves (not their indices)
    leaves `advance` a plain slice to return."""
    return sorted(items, key=partial(next, iter(keys)))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a chunk's events are made.

    A chunk is thousands of tuples that all live until they are returned; with the collector on,
    young collections keep finding them alive and promote them, which then triggers full
    collections of the whole heap. None of them can be part of a reference cycle."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Sessions:
    """US regular sessions as (open, close) in nanoseconds since the run's start, in order."""

    def __init__(self, start_ns: int, start: dt.datetime) -> None:
        self.start_ns = start_ns
        self.day = start.astimezone(EASTERN).date() - dt.timedelta(days=1)
        self.closes: list[int] = []
        self.sessions: list[tuple[int, int]] = []

    def after(self, rel: float) -> tuple[int, int]:
        """The session in progress at `rel`, or the next one."""
        i = bisect_right(self.closes, rel)
        while i == len(self.closes):
            self._add_day()
            i = bisect_right(self.closes, rel)
        return self.sessions[i]

    def _add_day(self) -> None:
        day = self.day
        while not is_trading_day(day):
            day += dt.timedelta(days=1)
        opened = unix_ns(dt.datetime.combine(day, REGULAR_OPEN, tzinfo=EASTERN)) - self.start_ns
        closed = unix_ns(dt.datetime.combine(day, REGULAR_CLOSE, tzinfo=EASTERN)) - self.start_ns
        self.sessions.append((opened, closed))
        self.closes.append(closed)
        self.day = day + dt.timedelta(days=1)


class MarketSim:
    """The sans-I/O market. Times are seconds since the run's start (`MarketClock`)."""

    def __init__(
        self, settings: MarketSettings | None = None, *, chunk_budget: int = CHUNK_BUDGET
    ) -> None:
        self.settings = settings or MarketSettings()
        self.chunk_budget = chunk_budget  # work per chunk, in events; the output ignores it
        self.clock = MarketClock(self.settings.start)
        self.hours = MarketHours(always_open=self.settings.always_open)
        self.now = 0.0
        self.work = MarketWork()
        self._start_ns = self.clock.start_ns
        self._sessions = _Sessions(self._start_ns, self.settings.start)
        self._contracts: dict[OptionContract, ContractProcess] = {}
        self._paths: dict[str, UnderlyingPath] = {}
        self._watched_paths: list[UnderlyingPath] = []
        self._spreads = spread_table(
            CONSECUTIVE_STEPS if self.settings.consecutive_sequences else SEQUENCE_STEPS
        )
        # Inter-arrival times are multiplied by the rate scale: 1/activity, or what makes the
        # watched contracts add up to `total_rate` events per second. With `total_rate`, each
        # watch changes it from the next rate grid point on; bursts change it for a while. The
        # changes in time order, one per instant (the last one made at an instant is the one in
        # force), and their times; `_rollback_at`: the earliest change since the chunk was last
        # rebuilt. `_rate_scale`: the scale that the latest watch computed; `_first_watch`: the
        # instant of the first one (ns since the start). `_changes_made` counts the changes made
        # so far, and `_change_serials` has that count for each change when it was last made: a
        # contract that ran after a change was made has taken it (`ContractProcess.changes_seen`).
        self._natural_rate = 0.0
        self._first_watch: int | None = None
        self._rate_scale = 1.0 / max(self.settings.activity, 1e-9)
        self._rate_changes: list[tuple[int, float]] = []
        self._change_times: list[int] = []
        self._change_serials: list[int] = []
        self._changes_made = 0
        self._rollback_at: int | None = None
        # Contracts with nothing in the current chunk wait in `_queue` by the time before which
        # they have nothing to say (a lower bound of their next event), so a chunk costs what is
        # due in it, not one step per watched contract. `_ran`: the chunk's contracts, by key
        # order; they go back into the queue when the next chunk starts.
        self._queue: list[tuple[float, int, int, ContractProcess]] = []
        self._ran: list[ContractProcess] = []
        # What every instrument made in the current chunk, instrument after instrument (each
        # one's events are a contiguous range), with float times (ns since the start).
        self._chunk_no = 0
        self._chunk_events: list[Event] = []
        self._chunk_times: list[float] = []
        # The chunk's events before `_frontier` (ns since the start) and after what was returned
        # when they were merged, in time order; `_merged[:_pos]` has been returned, up to
        # `_consumed` (inclusive).
        self._merged: list[Event] = []
        self._pos = 0
        self._frontier = 0
        self._consumed = -1
        self._dirty = False  # a watch or a rate change inside the chunk: redo it and re-merge

    # -- what the feeds ask for -------------------------------------------------------------------

    def watch(self, contract: OptionContract, at: float | None = None) -> bool:
        """Start producing quotes and trades for a contract from time `at` (default: now).

        Idempotent. False when the market will never produce data for it: `strict` and expired.
        """
        if contract in self._contracts:
            return True
        start = self.now if at is None else max(at, self.now)
        rel = round(start * _NS)
        start_ns = self._start_ns + rel
        expiry_ns = expiry_instant_ns(contract)
        if expiry_ns <= start_ns and self.settings.strict:
            return False
        rng = derive_rng(self.settings.seed, f"contract:{contract.key}")
        zombie_end_ns = 0
        if expiry_ns <= start_ns:
            zombie_end_ns = start_ns + int(rng.uniform(14, 90) * 86_400 * _NS)
        path = self._path(contract.underlying)
        order = derive_seed(self.settings.seed, contract.key)
        state = ContractProcess(
            contract,
            order,
            path,
            expiry_ns,
            zombie_end_ns,
            self.settings.always_open,
            self.settings.seed,
            self._start_ns,
            self._spreads,
        )
        state.sequence = rng.randrange(1_000_000, 900_000_000)
        state.serial = len(self._contracts)
        state.gen = rel
        state.revalue(float(rel), path.price_at(start))
        self._set_rates(state, rel)
        state.set_scale(self._rate_scale)
        state.changes_seen = self._changes_made  # the changes before `rel` are not for it
        # A contract watched while its market is closed starts at the next open.
        opened = rel if state.always_open else max(rel, self._sessions.after(rel)[0])
        state.tq = opened + rng.expovariate(1.0) * state.inv_q * 0.25  # the first quote, soon
        state.tt = opened + rng.expovariate(1.0) * state.inv_t
        state.snapshot()
        self._contracts[contract] = state
        if rel < self._frontier:  # inside the generated chunk: generate it with the others
            insort(self._ran, state, key=_key_order)
            self._dirty = True
        else:
            self._enqueue(state)
        return True

    def burst(self, factor: float, duration: float, at: float | None = None) -> None:
        """The market gets `factor` times busier for `duration` seconds from `at` (default now):
        every watched contract's quote and trade rates, as on a news spike. Contracts already
        generated past `at` go back to the chunk's start and redo it (their streams up to `at`
        come out the same). A contract first watched during the burst starts at its usual rate."""
        start = self.now if at is None else max(at, self.now)
        rel = round(start * _NS)
        base = self._rate_scale
        self._change_rate(rel, base / factor)
        self._change_rate(round((start + duration) * _NS), base)

    def watch_underlying(self, root: str, at: float | None = None) -> None:
        """Publish an underlying's moves (indices: price reports about once a second)."""
        path = self._path(underlying(root, self.settings.seed).root)
        if path in self._watched_paths:
            return
        start = self.now if at is None else max(at, self.now)
        path.reported_k = int(start / path.step)
        path.last_report = path.price_at(start)
        self._watched_paths.append(path)
        self._watched_paths.sort(key=lambda p: p.info.root)
        if round(start * _NS) < self._frontier:
            self._dirty = True

    def is_watched(self, contract: OptionContract) -> bool:
        return contract in self._contracts

    def last_quote(self, contract: OptionContract) -> OptionQuote | None:
        """The contract's quote standing at `now` (the last one `advance` returned)."""
        state = self._contracts.get(contract)
        if state is None:
            return None
        # (A rate change pending since `now` changes nothing up to `now`: what was made stands.)
        if state.chunk != self._chunk_no:  # everything it made is in the past
            return state.standing
        events = self._chunk_events
        i = bisect_left(self._chunk_times, self._consumed + 1.0, state.lo, state.hi)
        for j in range(i - 1, state.lo - 1, -1):
            event = events[j]
            if type(event) is OptionQuote:
                return event
        assert state.saved is not None
        return state.saved[11]  # the quote standing when the chunk began

    def mark(self, contract: OptionContract) -> Mark | None:
        """The contract's last valuation at or before `now`."""
        state = self._contracts.get(contract)
        if state is None:
            return None
        i = bisect_left(state.mark_times, self._consumed + 1.0)
        return Mark._make(state.marks[max(i - 1, 0)])

    def underlying_price(self, root: str) -> float:
        return self._path(underlying(root, self.settings.seed).root).price_at(self.now)

    def underlying_info(self, root: str) -> Underlying:
        return self._path(underlying(root, self.settings.seed).root).info

    def now_ns(self) -> int:
        return self._start_ns + round(self.now * _NS)

    def next_time(self) -> float | None:
        """When the next event is due (None: nothing watched).

        Exact, whatever the chunk boundaries: when the chunk is used up, the market works ahead
        until it has an event (the market actor sleeps until then, so a time that depended on
        where a chunk happened to end would move its wake-ups and the batches it sends). Only
        when nothing at all happens for `_LOOKAHEAD_NS` does it answer with a lower bound."""
        if not self._contracts and not self._watched_paths:
            return None
        if self._dirty:
            self._rebuild()
        horizon = self._frontier + _LOOKAHEAD_NS
        while self._pos == len(self._merged):
            bound = self._lower_bound()
            if bound >= horizon:
                return bound / _NS
            # The next chunk reaches at least the earliest instrument that may have something.
            self._next_chunk(max(self._frontier, math.floor(bound)))
        return self._time_of(self._merged[self._pos]) / _NS

    def _lower_bound(self) -> float:
        """No instrument has an event before this time (ns since the start), beyond the chunk."""
        bound = math.inf
        for path in self._watched_paths:
            rel = round((path.reported_k + 1) * path.step * _NS)
            if not self._is_open(path.kind, rel / _NS):  # no report before the next open
                rel = max(rel, self._sessions.after(rel)[0])
            bound = min(bound, rel)
        if self._queue:
            bound = min(bound, self._queue[0][0])
        for state in self._ran:
            bound = min(bound, state.tq, state.tt)
        return bound

    # -- the simulation ---------------------------------------------------------------------------

    def advance(self, until: float) -> list[Event]:
        """Every event due after the previous call and at or before `until`, in time order."""
        until_rel = round(until * _NS)
        if self._dirty:
            self._rebuild()
        # An event at float time t (ns since the start) has ts_ns start + floor(t): it is due
        # when t < until_rel + 1, that is when its ts_ns <= start + until_rel.
        last_ns = self._start_ns + until_rel
        pos = self._pos
        end = bisect_right(self._merged, last_ns, pos, key=_ts_ns)
        out = self._merged[pos:end]
        self._pos = end
        while until_rel >= self._frontier:  # past the chunk: make the next one
            self._next_chunk(until_rel)
            end = bisect_right(self._merged, last_ns, key=_ts_ns)
            out += self._merged[:end]
            self._pos = end
        if until_rel > self._consumed:
            self._consumed = until_rel
        if until > self.now:
            self.now = until
        return out

    def _time_of(self, event: Event) -> float:
        """An event's float time (ns since the start): looked up in its instrument's range of
        the chunk's lists, where it is the event itself at or after its whole nanosecond."""
        source: UnderlyingPath | ContractProcess
        if type(event) is OptionQuote or type(event) is OptionTrade:
            source = self._contracts[event.contract]
        else:
            assert type(event) is IndexPrice or type(event) is UnderlyingTick
            source = self._paths[event.root]
        events, times = self._chunk_events, self._chunk_times
        i = bisect_left(times, float(event.ts_ns - self._start_ns), source.lo, source.hi)
        while events[i] is not event:
            i += 1
        return times[i]

    def _enqueue(self, state: ContractProcess) -> None:
        heappush(self._queue, (min(state.tq, state.tt), state.key_order, state.serial, state))

    def _next_chunk(self, until_rel: int) -> None:
        """Generate every instrument from the frontier to the next one and merge the events.

        Only the contracts with something due before the chunk's end are run; the others keep
        their place in the queue (their generator state stays where it was: nothing happens
        to it in between but rate changes, which `_generate` catches up on)."""
        start = self._frontier
        end = max(start + self._chunk_ns(), until_rel + 1)
        if self.settings.total_rate:
            # Not past the rate grid point after what is asked for: the watches to come (at or
            # after it) change the rates from the grid point after them, outside this chunk.
            end = min(end, _grid_after(max(start, until_rel)))
        end_f = float(end)
        self._forget_rate_changes(start)
        last_change = self._change_times[-1] if self._change_times else -1
        previous = self._chunk_events
        self._chunk_no += 1
        no = self._chunk_no
        events: list[Event] = []
        times: list[float] = []
        self._chunk_events, self._chunk_times = events, times
        self._merged = []
        queue = self._queue
        # The last chunk's contracts that have something before this chunk's end run again
        # without a trip through the queue (at 10,000 contracts a chunk has runs, not events).
        due: list[ContractProcess] = []
        for state in self._ran:
            if state.tq < end_f or state.tt < end_f:
                due.append(state)
            else:
                self._enqueue(state)
        while queue and queue[0][0] < end_f:
            due.append(heappop(queue)[3])
        due.sort(key=_key_order)
        self._ran = due
        self.work.chunks += 1
        self.work.runs += len(due)
        with _gc_paused():
            for path in self._watched_paths:
                self._fill(path, end)
            for state in due:
                if len(state.marks) > 16:
                    keep = bisect_left(state.mark_times, float(start)) - 1
                    if keep > 0:
                        del state.marks[:keep], state.mark_times[:keep]
                state.snapshot()  # a rate change inside the chunk rolls it back to here
                state.chunk, state.lo = no, len(events)
                if last_change >= state.gen or state.changes_seen < self._changes_made:
                    self._generate(state, end)
                elif state.always_open:
                    state.run(end, events, times)
                else:
                    self._run_sessions(state, end)
                state.hi = len(events)
            self._frontier = end
            self._merge(None)
            # Drop the previous chunk's events while the collector is paused: their frees
            # balance the new chunk's allocations, so it does not wake up to trace the new ones.
            del previous
        self.work.events += len(events)
        for path in self._paths.values():
            path.forget_before(start / _NS)

    def _fill(self, source: UnderlyingPath | ContractProcess, end: int) -> None:
        """Generate one instrument up to `end` into the chunk's lists (one contiguous range)."""
        source.chunk, source.lo = self._chunk_no, len(self._chunk_events)
        if isinstance(source, UnderlyingPath):
            self._report(source, end)
        else:
            self._generate(source, end)
        source.hi = len(self._chunk_events)

    def _rebuild(self) -> None:
        """After watches or rate changes inside the chunk: roll back the chunk's contracts that
        went past the earliest change, bring everything up to the frontier and re-merge."""
        self._dirty = False
        end = self._frontier
        with _gc_paused():
            rolled_back = False
            for state in self._ran:
                rolled_back |= self._roll_back(state)
            self._rollback_at = None
            if rolled_back:
                self._compact()
            for path in self._watched_paths:
                if round((path.reported_k + 1) * path.step * _NS) < end:
                    self._fill(path, end)
            for state in self._ran:
                if state.gen < end:
                    self._fill(state, end)
            self._merge(self._consumed)

    def _roll_back(self, state: ContractProcess) -> bool:
        """Back to the chunk's start if the contract was generated past a rate change made since
        (the same as restoring every such contract when the change is made, done when needed)."""
        if (
            self._rollback_at is not None
            and state.gen > self._rollback_at
            and state.chunk == self._chunk_no
        ):
            state.restore()
            self.work.rollbacks += 1
            return True
        return False

    def _compact(self) -> None:
        """Keep only the live ranges in the chunk's lists: what rolled-back contracts made is
        dead, and with rate change after rate change inside one chunk (bursts; under
        `total_rate`, before `RATE_GRID_NS`, every watch) it would pile up a chunk's worth of
        events per change: a soak once held 45,000 events where 2,000 were live."""
        no = self._chunk_no
        events, times = self._chunk_events, self._chunk_times
        kept: list[Event] = []
        kept_times: list[float] = []
        sources: list[UnderlyingPath | ContractProcess] = [*self._watched_paths, *self._ran]
        for source in sources:
            if source.chunk == no:
                lo = len(kept)
                kept += events[source.lo : source.hi]
                kept_times += times[source.lo : source.hi]
                source.lo, source.hi = lo, len(kept)
        self._chunk_events, self._chunk_times = kept, kept_times

    def _merge(self, after: int | None) -> None:
        """The chunk's events after time `after` (None: all, a fresh chunk), merged in time
        order; ties keep instrument order (underlyings by root, then contracts by key order),
        which does not depend on when the instruments were watched or generated.

        The sort is a stable one on the events' float times (ns since the start): comparing
        floats is far cheaper than comparing the events' int `ts_ns`."""
        events, times = self._chunk_events, self._chunk_times
        if after is not None:  # redone: only what is left of each instrument's range
            bound = after + 1.0  # an event at float time t has ts_ns start + int(t)
            no = self._chunk_no
            left: list[Event] = []
            left_times: list[float] = []
            sources: list[UnderlyingPath | ContractProcess] = [*self._watched_paths, *self._ran]
            for source in sources:
                if source.chunk == no:
                    lo = bisect_left(times, bound, source.lo, source.hi)
                    left += events[lo : source.hi]
                    left_times += times[lo : source.hi]
            events, times = left, left_times
        self._merged = _sorted_by(events, times)
        self._pos = 0

    def _chunk_ns(self) -> int:
        """A chunk long enough that each instrument makes a few dozen events in it, short enough
        to cost a few milliseconds (`chunk_budget`)."""
        count = len(self._contracts) + len(self._watched_paths)
        rate = (
            self.settings.total_rate
            if self.settings.total_rate
            else self._natural_rate * max(self.settings.activity, 1e-9)
        )
        rate += sum(1.0 / p.step for p in self._watched_paths)
        if rate <= 0.0:
            return _CHUNK_MAX_NS
        # events + _RUN_COST * runs <= budget, where a chunk of E events runs about
        # min(count, E) instruments.
        budget = self.chunk_budget
        events = max(budget - _RUN_COST * count, budget / (1 + _RUN_COST))
        seconds = min(_CHUNK_EVENTS_PER_INSTRUMENT * count, events) / rate
        return max(_CHUNK_MIN_NS, min(_CHUNK_MAX_NS, round(seconds * _NS)))

    # -- rate changes -----------------------------------------------------------------------------

    def _change_rate(self, rel: int, scale: float) -> None:
        """Every contract's rate scale is `scale` from `rel` on. Contracts generated past `rel`
        redo the chunk (`_rebuild`).

        What `advance` has returned stands: a change made now takes effect after it (events in
        `now`'s own nanosecond are out already), so that whether a chunk happens to begin right
        after `now` cannot decide whether a contract sees the change."""
        rel = max(rel, self._consumed + 1)
        times = self._change_times
        self._changes_made += 1
        i = bisect_right(times, rel)
        if i and times[i - 1] == rel:  # one change per instant: the last one made wins
            self._rate_changes[i - 1] = (rel, scale)
            self._change_serials[i - 1] = self._changes_made
        else:
            times.insert(i, rel)
            self._rate_changes.insert(i, (rel, scale))
            self._change_serials.insert(i, self._changes_made)
        if rel < self._frontier:
            if self._rollback_at is None or rel < self._rollback_at:
                self._rollback_at = rel
            self._dirty = True

    def _forget_rate_changes(self, start: int) -> None:
        """Drop the changes before `start` but the last one: a contract that has not been run
        since before it has had no event since, so of all those changes only the last one
        matters to it."""
        drop = bisect_left(self._change_times, start) - 1
        if drop > 0:
            del self._rate_changes[:drop], self._change_times[:drop], self._change_serials[:drop]

    def _generate(self, state: ContractProcess, end: int) -> None:
        """Run a contract up to `end`, switching its rates at each rate change.

        A change only matters from the contract's next event on, so of the changes before its
        next event only the last is applied: a contract visits about as many changes as it has
        events, however many contracts were watched (each one a change with `total_rate`)."""
        times, changes = self._change_times, self._rate_changes
        i = bisect_left(times, state.gen)
        work = self.work
        if i and self._change_serials[i - 1] > state.changes_seen:
            # The change in force at `gen` was made after the contract was generated past its
            # time: a burst that starts behind a chunk `next_time` made ahead. No contract has
            # had an event since that time (everything before the chunk is out), so taking it
            # from `gen` on is taking it from its time on.
            state.set_scale(changes[i - 1][1])
            work.rate_change_steps += 1
        stop = bisect_left(times, end, i)
        while i < stop:
            skip = bisect_right(times, min(state.tq, state.tt), i, stop) - 1
            if skip > i:
                i = skip
            at, scale = changes[i]
            self._run_sessions(state, at)
            state.set_scale(scale)
            i += 1
            work.rate_change_steps += 1
        self._run_sessions(state, end)
        state.changes_seen = self._changes_made

    def _run_sessions(self, state: ContractProcess, end: int) -> None:
        """Run a contract up to `end`; outside market hours its clock stops (processes resume at
        the next open with what was left of their waiting time)."""
        if state.always_open:
            state.run(end, self._chunk_events, self._chunk_times)
            return
        sessions = self._sessions
        while state.gen < end:
            close = sessions.after(state.gen)[1]
            stop = min(end, close)
            state.run(stop, self._chunk_events, self._chunk_times)
            if stop == close:
                state.tq = self._resume(state.tq, close)
                state.tt = self._resume(state.tt, close)

    def _resume(self, t: float, close: int) -> float:
        while t >= close:
            opened, next_close = self._sessions.after(close)
            t = opened + (t - close)
            close = next_close
        return t

    # -- pieces -----------------------------------------------------------------------------------

    def _report(self, path: UnderlyingPath, end: int) -> None:
        """Grid points before `end` where the price changed become reports; none on the first
        point after a close (indices print 09:30:01, not 09:30:00)."""
        step = path.step
        k = path.reported_k + 1
        while True:
            t = k * step
            rel = round(t * _NS)
            if rel >= end:
                break
            price = path.price_at(t)
            if price != path.last_report:
                if self._is_open(path.kind, t) and self._is_open(path.kind, t - step):
                    ts_ns = self._start_ns + rel
                    if path.kind is Kind.INDEX:
                        self._chunk_events.append(IndexPrice(ts_ns, path.info.root, price))
                    else:
                        self._chunk_events.append(UnderlyingTick(ts_ns, path.info.root, price))
                    self._chunk_times.append(float(rel))
                path.last_report = price
            path.reported_k = k
            k += 1

    def _path(self, root: str) -> UnderlyingPath:
        path = self._paths.get(root)
        if path is None:
            info = underlying(root, self.settings.seed)
            step = (
                self.settings.index_step
                if info.kind is Kind.INDEX
                else self.settings.underlying_step
            )
            path = UnderlyingPath(info, self.settings.seed, step, self._is_open)
            self._paths[root] = path
        return path

    def _is_open(self, kind: Kind, t: float) -> bool:
        if self.settings.always_open or kind is Kind.CRYPTO:
            return True
        rel = round(t * _NS)
        return self._sessions.after(rel)[0] <= rel

    def _set_rates(self, state: ContractProcess, rel: int) -> None:
        """Quote and trade intensity: near-the-money contracts are far busier than the wings.

        With `total_rate`, the new contract changes every contract's rate scale from the rate
        grid point after `rel` on, the newcomer's included (which starts with the scale its watch
        computes). The watches at the first one's instant change it at once: the contracts
        watched together at the start share `total_rate` from the start."""
        price, vol, years, _ = state.valuation
        sd = max(vol * math.sqrt(max(years, 1.0 / 365)), 1e-3)
        x = math.log(state.contract.strike / price) / sd
        near = math.exp(-0.5 * x * x)
        state.quote_rate, state.trade_rate = 0.1 + 1.4 * near, 0.004 + 0.06 * near
        self._natural_rate += state.quote_rate + state.trade_rate
        if not self.settings.total_rate:
            return
        self._rate_scale = self._natural_rate / self.settings.total_rate
        if self._first_watch is None:
            self._first_watch = rel
        at_once = rel == self._first_watch
        self._change_rate(rel if at_once else _grid_after(rel), self._rate_scale)


def _grid_after(rel: int) -> int:
    """The first point of the rate grid strictly after `rel` (ns since the start)."""
    return (rel // RATE_GRID_NS + 1) * RATE_GRID_NS


def expiry_instant_ns(contract: OptionContract) -> int:
    """When a contract stops trading: 16:00 ET for US options, 08:00 UTC for Deribit-style ones."""
    if underlying(contract.root).kind is Kind.CRYPTO:
        moment = dt.datetime.combine(contract.expiration, dt.time(8, 0), tzinfo=UTC)
    else:
        moment = dt.datetime.combine(contract.expiration, dt.time(16, 0), tzinfo=EASTERN)
    return unix_ns(moment)
