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

Speed (issue "Speed", bench/bench_market.py): the market works ahead in *chunks* of market time,
each contract in *runs* of many events at a time (a run's setup, and its state coming into the
CPU cache, cost about as much as two events). Each contract's stream is a pure function of its
random words, which are addressed by block number, and of the underlying's grid (also pure), so
generating in runs gives exactly the stream that generating event by event would, wherever runs
and chunks begin and end (tests/test_market_chunks.py checks this). What is made and not yet
returned waits in buckets of time (`mocks.sim.pending`), and `advance` takes it out in order.
A chunk is made in one of two ways (`_chunk_plan`):
- at once (a few hundred contracts or fewer): when it starts, every contract with something in
  it runs to its end, into one bucket, sorted once; `advance` only slices it, so the market
  actor's frequent wake-ups cost next to nothing;
- staggered (thousands of contracts, where a chunk made at once would give each contract a
  single event): each contract runs when its first event comes due, up to a point of its own
  at most a chunk length beyond the frontier (`_horizon`), so runs of many events spread evenly
  over time, and the buckets hold about 16 events each (200 connections x 50 contracts at
  50,000 events/s: 30,000 -> 19,000 instructions an event, p99 to the client 110 -> 47 ms).
A watch inside a chunk queues the newcomer like any other contract. The rest of the speed is in
`ContractProcess.run`, one loop per quote.

Rate changes: with `total_rate`, the watched contracts share `total_rate` events per second, so
each newly watched contract changes every contract's rate scale. It does so at the next point of
a fixed market-time grid (`RATE_GRID_NS`) after the watch, for every contract alike, and all the
watches between two grid points are one change (the last one made counts every contract watched
so far). The newcomer starts with the scale its own watch computes (its share at that moment)
and switches at the grid point with the others. Only the watches at the first one's instant
change the scale at once: contracts watched together at the start share `total_rate` from the
start.
Under `total_rate`, while contracts are being watched (`_watched_lately`), neither a chunk nor a
run reaches past the next grid point after what `advance` was asked for, so a watch's change
never lands on anything made: a subscription storm costs one rate change per grid step, not a
regenerated chunk per watch. A burst (a fault), or a watch after a quiet spell, changes the
rates where runs may have gone past it: the contracts run past it go back to where their run
began and run again up to the change (`_rebuild`), and on from there with the new rate. Runs
that a chunk made in the quiet spell left to make stop at the grid point after their first
event while contracts are being watched (`_horizon`), so the storm's next change finds none past
it (a run redone to its old end went back at every grid step). What a contract makes depends
only on the watches (their times and order) and the bursts, never on the chunks, the runs or on
how `advance` is called.

Unwatching (`unwatch`, with `forget_after` set: `serve`): a contract nobody has wanted for
`forget_after` seconds ends its life at that instant, which depends only on when it was let go.
From the unwatch on, its runs stop there (`stop_at`; runs already past it go back, as for a rate
change), and once it has made everything before it, it leaves the queue (`parked`). Watched again
within the grace, it simply goes on. At its end its share of `total_rate` goes back at the next
grid point, as a watch's would; watched after it, it is a new process from that instant, with
words of its own, whose first run numbers on from where the last life stopped (which has made
everything before its end by then: its events come due first). Whoever keeps state per
contract beside the market (the vendors' servers) hears of each end (`on_forget`) and lets go too.
A day after its last life ended, the market forgets the contract too (`RETIRED_FOR`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import gc
import math
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from heapq import heapify, heappop, heappush
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
from mocks.sim.paths import UnderlyingPath, points_before
from mocks.sim.pending import Pending
from mocks.sim.quoting import CONSECUTIVE_STEPS, SEQUENCE_STEPS, ContractProcess, spread_table
from mocks.sim.rng import derive_rng, derive_seed

_NS = 1_000_000_000
# How long the market remembers a contract after its last life ended (ns): its lives and last
# sequence number, so that a new life draws words of its own and numbers on. After it, a new
# life starts as the first one did (sequence numbers reset, as the vendors' do every day).
RETIRED_FOR = 86_400 * _NS

# Chunk sizing: enough market time that each contract makes a few dozen events in it (a run's
# setup, and its state coming into the CPU cache, cost about as much as two events).
# A chunk is made in one of two ways (`_chunk_plan`):
# - At once, when it starts: every contract with something in it runs, and one sort merges
#   them. Cheapest per event, but on the real clock everything waits for it, so it holds no
#   more work than takes a few milliseconds (`chunk_budget`, a contract's run counted as
#   `_RUN_COST` events): 200 contracts make about 3,600 events, 18 a run. At `--rate max`
#   nothing waits on a schedule, and bigger chunks amortise the runs (`CHUNK_BUDGET_MAX_RATE`).
# - Staggered, when a chunk made at once would give each contract fewer than
#   `_EAGER_EVENTS_PER_RUN` events (10,000 contracts: 1,300 events, one a run): each contract
#   runs when its first event comes due, up to its own point in the next chunk, so the chunk can
#   be long (up to `_STAGGERED_CHUNK_EVENTS` events), each run makes several events, and what a
#   call to `advance` makes stays about what it returns. Its finer buckets cost more per event
#   than the one sort (at 200 contracts, 1-3% more instructions), so it is not used for few.
_CHUNK_EVENTS_PER_INSTRUMENT = 32
_RUN_COST = 2
_EAGER_EVENTS_PER_RUN = 8
_STAGGERED_CHUNK_EVENTS = 65_536
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
# Under `total_rate`, chunks stop at the rate grid while contracts were watched in the last
# second (a subscription storm); after that they take their full length.
_QUIET_NS = _NS
# A staggered chunk's events wait in buckets of about 16 (`mocks.sim.pending`); at most this many
# (an `advance` far ahead makes one long chunk).
_MAX_BUCKETS = 1 << 16
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
    # Seconds of market time a contract nobody wants goes on before its life ends (`unwatch`;
    # `serve`: a minute). None: for ever, as at the vendors (a scenario's ground truth).
    forget_after: float | None = None
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


class _Retired(NamedTuple):
    """What the market keeps of a contract let go (`unwatch`), for a day (`RETIRED_FOR`)."""

    lives: int  # lives ended so far
    last: ContractProcess | int  # the last life's last sequence number (the life until final)
    zombie_end_ns: int  # an expired contract's: when its data stops, whatever its lives
    ended: int  # when the last life ended (ns since the start)


_NEVER_RETIRED = _Retired(0, 0, 0, 0)
_key_order = attrgetter("key_order")


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
        self.chunk_budget = chunk_budget  # work per chunk made at once; the output ignores it
        self.clock = MarketClock(self.settings.start)
        self.hours = MarketHours(always_open=self.settings.always_open)
        self.now = 0.0
        self.work = MarketWork()
        self._start_ns = self.clock.start_ns
        self._sessions = _Sessions(self._start_ns, self.settings.start)
        self._contracts: dict[OptionContract, ContractProcess] = {}
        # Unwatched contracts (`unwatch`), so that one watched again draws words of its own and
        # numbers its events on; for a day (`RETIRED_FOR`, in `_retired_order` by when their
        # last life ended), then it is as if never named. `_retiring`: by key,
        # the ended lives whose events may still wait to be returned (`_time_of` finds them
        # there), until they have made all and are forgotten (`_dropped`, once returned).
        # `_releases`: when each unwanted contract's life ends (ns since the start), and
        # `_release_order` the same in time order (an entry not in `_releases`: watched again).
        self._releases: dict[OptionContract, int] = {}
        self._release_order: deque[tuple[int, OptionContract]] = deque()
        self._retired: dict[OptionContract, _Retired] = {}
        self._retired_order: deque[tuple[int, OptionContract]] = deque()
        self._retiring: dict[str, list[ContractProcess]] = {}
        self._dropped: list[ContractProcess] = []
        self._forget_listeners: list[Callable[[OptionContract], None]] = []
        self._watches = 0  # every watch so far (a contract's serial: a tie-break)
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
        # instant of the first one (ns since the start); `_last_watch`: the latest watch or
        # unwatch (either changes the rates).
        # `_changes_made` counts the changes made so far, and `_change_serials` has that count
        # for each change when it was last made: a contract that ran after a change was made has
        # taken it (`ContractProcess.changes_seen`).
        self._natural_rate = 0.0
        self._first_watch: int | None = None
        self._last_watch: int | None = None
        self._rate_scale = 1.0 / max(self.settings.activity, 1e-9)
        # Bursts (start, end, factor) not yet over: a change within one keeps its factor.
        self._bursts: list[tuple[int, int, float]] = []
        self._rate_changes: list[tuple[int, float]] = []
        self._change_times: list[int] = []
        self._change_serials: list[int] = []
        self._changes_made = 0
        self._rollback_at: int | None = None
        # Every watched contract waits in `_queue` by a lower bound of its next event not yet
        # made; it runs through to the chunk's end (`_frontier`) when the chunk starts (made at
        # once) or when `advance` or `next_time` reaches that time, and goes back in. `_ran`:
        # the contracts run in the current chunk (each holds what it made in its own lists);
        # `_path_events`: the chunk's underlying reports, made when the chunk starts.
        self._queue: list[tuple[float, int, int, ContractProcess]] = []
        self._ran: dict[ContractProcess, None] = {}
        self._chunk_start = 0
        self._frontier = 0
        # Staggered chunks (many contracts; `_next_chunk`): runs reach up to `_reach`, a chunk
        # length (`_span`) beyond the frontier; `_longest_span` is the longest so far.
        self._staggered = False
        self._span = 0
        self._reach = 0
        self._longest_span = 0
        # How far runs have gone (ns): a chunk's reach can be shorter than the last one's (an
        # `advance` far ahead makes a long chunk), so a change before this may need runs redone.
        self._made_to = 0
        self._path_events: list[Event] = []
        self._path_times: list[float] = []
        # What is made and not yet returned (`mocks.sim.pending`); `_consumed`: the last
        # nanosecond returned.
        self._pending = Pending(self._rank, self._time_of)
        self._consumed = -1
        self._dirty = False  # a rate change inside the chunk: redo the contracts run past it

    # -- what the feeds ask for -------------------------------------------------------------------

    def watch(self, contract: OptionContract, at: float | None = None) -> bool:
        """Start producing quotes and trades for a contract from time `at` (default: now).

        Idempotent. False when the market will never produce data for it: `strict` and expired.
        Watched again after `unwatch`, a contract begins a new life: from the market of that
        moment, with random words of its own, its sequence numbers going on from its last ones.
        """
        start = self.now if at is None else max(at, self.now)
        rel = round(start * _NS)
        self._end_lives(rel)
        state = self._contracts.get(contract)
        if state is not None:
            ends = self._releases.pop(contract, None)
            if ends is None:
                return True
            if ends > max(rel, self._consumed + 1):  # wanted again within the grace: it goes on
                state.stop_at = None
                if state.parked:
                    state.parked = False
                    self._enqueue(state)
                elif state.gen == ends and state in self._ran and not self._staggered:
                    # Stopped short of a chunk made at once: it runs again, to the chunk's end.
                    self._roll_back(ends - 1)
                return True
            # Its life ended before now, and `advance` has not got there yet.
            self._end_life(contract, ends)
        start_ns = self._start_ns + rel
        expiry_ns = expiry_instant_ns(contract)
        if expiry_ns <= start_ns and self.settings.strict:
            return False
        name = f"contract:{contract.key}"
        rng = derive_rng(self.settings.seed, name)
        zombie_end_ns = 0
        if expiry_ns <= start_ns:
            zombie_end_ns = start_ns + int(rng.uniform(14, 90) * 86_400 * _NS)
        lives, last, last_zombie_end_ns, _ = self._retired.get(contract, _NEVER_RETIRED)
        if lives:
            name = f"{name}#{lives}"
            rng = derive_rng(self.settings.seed, name)
            zombie_end_ns = last_zombie_end_ns or zombie_end_ns
            # An object of this life's own: its events tell from the last life's, which may
            # still be on their way out (`_retiring`).
            contract = dataclasses.replace(contract)
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
        state.name = name
        state.sequence = rng.randrange(1_000_000, 900_000_000)
        if lives:  # its first run numbers on from the last life (final by then)
            if isinstance(last, int):
                state.sequence = last
            else:
                state.sequence, state.after = last.sequence, last
        state.born = rel
        state.serial = self._watches
        self._watches += 1
        state.gen = rel
        state.revalue(float(rel), path.price_at(start))
        self._set_rates(state, rel)
        state.set_scale(self._rate_scale)
        state.changes_seen = self._changes_made  # the changes before `rel` are not for it
        # A contract watched while its market is closed starts at the next open.
        opened = rel if state.always_open else max(rel, self._sessions.after(rel)[0])
        state.tq = opened + rng.expovariate(1.0) * state.inv_q * 0.25  # the first quote, soon
        state.tt = opened + rng.expovariate(1.0) * state.inv_t
        self._contracts[contract] = state
        self._enqueue(state)  # inside the chunk too: it runs when its first event is due
        return True

    def burst(self, factor: float, duration: float, at: float | None = None) -> None:
        """The market gets `factor` times busier for `duration` seconds from `at` (default now):
        every watched contract's quote and trade rates, as on a news spike. Contracts already
        generated past `at` go back to the chunk's start and redo it (their streams up to `at`
        come out the same). A contract first watched during the burst starts at its usual rate
        (under `total_rate`, until the next rate grid point). Bursts that overlap multiply."""
        start = self.now if at is None else max(at, self.now)
        rel = round(start * _NS)
        self._end_lives(rel)
        ends = round((start + duration) * _NS)
        self._bursts = [b for b in self._bursts if b[1] > self._consumed]
        self._bursts.append((rel, ends, factor))
        self._change_rate(rel, self._rate_scale / self._burst_factor(rel))
        self._change_rate(ends, self._rate_scale / self._burst_factor(ends))

    def _burst_factor(self, rel: int) -> float:
        factor = 1.0
        for start, ends, f in self._bursts:
            if start <= rel < ends:
                factor *= f
        return factor

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
        if round(start * _NS) < self._frontier:  # inside the chunk: its reports up to the end
            self._report(path, self._frontier)

    def unwatch(self, contract: OptionContract, at: float | None = None) -> None:
        """Nobody wants the contract from time `at` (default: now) on.

        With `forget_after` unset nothing changes: the market goes on, as the vendors' does
        (and a scenario counts what was published while its client was away). Otherwise the
        contract's life ends `forget_after` seconds later unless it is watched again before:
        `advance` returns none of its events from then on (whatever its runs had made ahead),
        its share of `total_rate` goes back to the others, and the market stops working on it,
        so a market that every client has left does nothing. Where a life ends depends only on
        `at`, never on how far ahead the contract had been made."""
        forget_after = self.settings.forget_after
        state = self._contracts.get(contract)
        if forget_after is None or state is None or contract in self._releases:
            return
        start = self.now if at is None else max(at, self.now)
        # (What `advance` has returned stands: the life ends after it.)
        ends = max(round(start * _NS), self._consumed + 1) + round(forget_after * _NS)
        state.stop_at = ends
        releases, order = self._releases, self._release_order
        releases[contract] = ends
        order.append((ends, contract))
        if len(order) > 2 * len(releases) + 64:
            # Every watch again leaves a stale entry behind, until its time comes: under a
            # pool of clients coming and going (the soak: thousands of unwatches a second) that
            # was a minute of them, 100,000-400,000 entries. Compacted when half are stale.
            self._release_order = deque(e for e in order if releases.get(e[1]) == e[0])
        if ends < self._made_to:  # runs have gone past it: they go back and stop there
            self._roll_back(ends)

    def on_forget(self, listener: Callable[[OptionContract], None]) -> None:
        """Call `listener(contract)` when a contract's life ends (`unwatch`): nobody has wanted
        it for `forget_after` seconds, so what a vendor keeps of it (its last quote, its trade
        history) can go; watched again, it is a new life here and first seen there. Called before
        the `watch` that starts the new life returns, so a listener never drops state that the
        new life has already made."""
        self._forget_listeners.append(listener)

    def _end_lives(self, until_rel: int) -> None:
        """End the lives due to end by `until_rel` (`unwatch`), in order, and forget the
        contracts let go a day before: in `advance`, and before a watch or a burst, which may
        come ahead of `advance` (the market actor's now) and must find the rates as they are at
        its time (the scale counts who is watched then)."""
        order, releases = self._release_order, self._releases
        while order and order[0][0] <= until_rel:
            ends, contract = order.popleft()
            if releases.get(contract) == ends:  # (not watched again since)
                del releases[contract]
                self._end_life(contract, ends)
        # A day after its last life ended, a contract is as if never named: a server left
        # running while clients roll through strikes for weeks keeps nothing of each one.
        retired, retired_order = self._retired, self._retired_order
        while retired_order and retired_order[0][0] <= until_rel - RETIRED_FOR:
            ended, contract = retired_order.popleft()
            record = retired.get(contract)
            if (
                record is not None
                and record.ended == ended  # (no life since)
                and type(record.last) is int  # (its events all returned: surely, a day on)
                and contract not in self._contracts
            ):
                del retired[contract]

    def _end_life(self, contract: OptionContract, rel: int) -> None:
        """The contract's life ends at `rel` (not yet returned by `advance`): it runs up to
        there and no further."""
        state = self._contracts.pop(contract)
        self._count_rates(state, rel, -1.0)
        lives = self._retired.get(contract, _NEVER_RETIRED).lives + 1
        self._retired[contract] = _Retired(lives, state, state.zombie_end_ns, rel)
        self._retired_order.append((rel, contract))
        self._retiring.setdefault(contract.key, []).append(state)
        if state.parked:
            self._dropped.append(state)
        for listener in self._forget_listeners:
            listener(contract)

    def _parked(self, state: ContractProcess) -> bool:
        """A contract that has made everything before its stop (`unwatch`) leaves the queue:
        until it is watched again within its grace (`watch`), or for good once its life has
        ended. True if it did."""
        stop = state.stop_at
        if stop is None or min(state.tq, state.tt) < stop:
            return False
        self._ran.pop(state, None)
        if self._contracts.get(state.contract) is state:
            state.parked = True
        else:
            self._dropped.append(state)
        return True

    def _forget_dropped(self) -> None:
        """Ended lives whose events have all been returned are let go: out of `_retiring`,
        and only their last sequence number kept."""
        kept: list[ContractProcess] = []
        for state in self._dropped:
            if state.stop_at is not None and self._consumed + 1 < state.stop_at:
                kept.append(state)  # (ended by a watch, ahead of `advance`)
                continue
            contract = state.contract
            lives = self._retiring.get(contract.key, [])
            if state in lives:
                lives.remove(state)
                if not lives:
                    del self._retiring[contract.key]
            record = self._retired.get(contract)
            if record is not None and record.last is state:
                self._retired[contract] = record._replace(last=_last_sequence(state))
        self._dropped = kept

    def is_watched(self, contract: OptionContract) -> bool:
        return contract in self._contracts

    def last_quote(self, contract: OptionContract) -> OptionQuote | None:
        """The contract's quote standing at `now` (the last one `advance` returned)."""
        state = self._contracts.get(contract)
        if state is None:
            return None
        # (A rate change pending since `now` changes nothing up to `now`: what was made stands.)
        events = state.events
        i = bisect_left(state.times, self._consumed + 1.0)
        for j in range(i - 1, -1, -1):
            event = events[j]
            if type(event) is OptionQuote:
                return event
        if state.saved is None:  # never run
            return None
        return state.saved[11]  # the quote standing when its last run began

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
        """When the next event is due (None: nothing watched), or a life ends (`unwatch`)."""
        t = self._next_event_time()
        if self._release_order:
            ends = self._release_order[0][0] / _NS
            return ends if t is None else min(t, ends)
        return t

    def _next_event_time(self) -> float | None:
        """When the next event is due (None: nothing watched).

        Exact, whatever the chunk boundaries: the contracts that may have something before the
        earliest event made so far run first, and when the chunk is used up the market works
        ahead until it has an event (the market actor sleeps until then, so a time that
        depended on where a chunk happened to end would move its wake-ups and the batches it
        sends). Only when nothing at all happens for `_LOOKAHEAD_NS` does it answer with a lower
        bound."""
        if self._dirty:
            self._rebuild()
        horizon = self._frontier + _LOOKAHEAD_NS
        queue = self._queue
        while True:
            if not self._contracts and not self._watched_paths:  # (or all dropped by now)
                return None
            pending = self._pending.first_time()
            if queue and queue[0][0] <= pending and queue[0][0] < self._frontier:
                self._run_due(math.nextafter(queue[0][0], math.inf))
                continue
            if pending < self._frontier:
                return pending / _NS
            # Nothing more in this chunk (what runs made beyond it waits for the contracts
            # that have something before it in the next one).
            bound = min(pending, self._lower_bound())
            if bound >= horizon:
                return bound / _NS
            self._next_chunk(max(self._frontier, math.floor(bound)))

    def _time_of(self, event: Event) -> float:
        """An event's float time (ns since the start), from its instrument's lists, where it
        is the event itself at or after its whole nanosecond."""
        if type(event) is OptionQuote or type(event) is OptionTrade:
            state = self._contracts.get(event.contract)
            if state is None or state.contract is not event.contract:  # an ended life's
                state = next(
                    life
                    for life in self._retiring[event.contract.key]
                    if life.contract is event.contract
                )
            events, times = state.events, state.times
            i = bisect_left(times, float(event.ts_ns - self._start_ns))
            while events[i] is not event:
                i += 1
            return times[i]
        for report, t in zip(self._path_events, self._path_times, strict=True):
            if report is event:
                return t
        raise LookupError(event)

    def _lower_bound(self) -> float:
        """No instrument has an event before this time (ns since the start), beyond what is
        made."""
        bound = math.inf
        for path in self._watched_paths:
            rel = round((path.reported_k + 1) * path.step * _NS)
            if not self._is_open(path.kind, rel / _NS):  # no report before the next open
                rel = max(rel, self._sessions.after(rel)[0])
            bound = min(bound, rel)
        if self._queue:
            bound = min(bound, self._queue[0][0])
        if not self._staggered:  # the last chunk's contracts wait in `_ran`
            for state in self._ran:
                bound = min(bound, state.tq, state.tt)
        return bound

    # -- the simulation ---------------------------------------------------------------------------

    def advance(self, until: float) -> list[Event]:
        """Every event due after the previous call and at or before `until`, in time order."""
        until_rel = round(until * _NS)
        self._end_lives(until_rel)
        if self._dirty:
            self._rebuild()
        # An event at float time t (ns since the start) has ts_ns start + floor(t): it is due
        # when t < until_rel + 1, that is when its ts_ns <= start + until_rel. Runs may have
        # made events beyond the chunk: they wait until the chunk after has run its contracts.
        queue = self._queue
        bound = until_rel + 1.0
        p = self._pending
        if (  # the common case, inlined: on in the sorted bucket, with nothing to run
            until_rel < self._frontier
            and p.next == p.sorted
            and int((bound - p.origin) * p.scale) - p.base <= p.next
            and not (queue and queue[0][0] < bound)
        ):
            out = p.take_sorted(self._start_ns + until_rel, bound)
        else:
            out = []
            while True:
                limit = min(bound, float(self._frontier))
                if queue and queue[0][0] < limit:
                    self._run_due(limit)
                out += p.take(min(until_rel, self._frontier - 1), self._start_ns)
                if until_rel < self._frontier:
                    break
                self._next_chunk(until_rel)  # past the chunk: on to the next one
        if until_rel > self._consumed:
            self._consumed = until_rel
        if until > self.now:
            self.now = until
        if self._dropped:
            self._forget_dropped()
        return out

    def _enqueue(self, state: ContractProcess) -> None:
        heappush(self._queue, (min(state.tq, state.tt), state.key_order, state.serial, state))

    def _next_chunk(self, until_rel: int) -> None:
        """Start the next chunk, from the frontier to a new one.

        Made at once: every contract with something in it runs to its end now. Made contract
        by contract (`_staggered`): each one runs when its first event in the chunk comes due,
        to a point of its own at most a chunk length beyond (`_horizon`), so that runs spread
        evenly over time instead of all coming due when a chunk starts."""
        start = self._frontier
        length, at_once = self._chunk_plan()
        was_staggered = self._staggered
        # Once staggered, always: runs may have made events past the frontier, which buckets
        # cut for a chunk made at once would lose.
        self._staggered = self._staggered or not at_once
        end = max(start + length, until_rel + 1)
        on_grid = bool(self.settings.total_rate) and self._watched_lately(start)
        if on_grid:
            # Not past the rate grid point after what is asked for (runs neither): the watches
            # to come (at or after it) change the rates from the grid point after them, after
            # everything made.
            end = min(end, _grid_after(max(start, until_rel)))
        # A run that may still be rolled back began no more than a run's span before where
        # it can be rolled back to: the rate changes and underlying prices it may need again
        # are kept. (Prices kept only from the chunk's start sent a redone run before the
        # path's first point: an IndexError that stopped `serve`, or a price from the list's
        # other end.)
        keep_from = min(start, self._consumed + 1) - self._longest_span
        self._forget_rate_changes(keep_from)
        self._chunk_start, self._frontier = start, end
        self._span = end - start
        self._reach = end + self._span if self._staggered and not on_grid else end
        self._longest_span = max(self._longest_span, self._reach - start)
        previous, self._ran = self._ran, {}
        self._path_events, self._path_times = [], []
        self._place_buckets(start)
        self.work.chunks += 1
        for path in self._watched_paths:
            self._report(path, end)
        for path in self._paths.values():
            path.forget_before(keep_from / _NS)
        if not self._staggered:
            self._run_at_once(previous, end)
        elif not was_staggered:  # the first staggered chunk: every contract waits its turn
            for state in previous:
                self._enqueue(state)
        else:  # the runs that reach into this chunk (they are in the queue already)
            self._ran = {state: None for state in previous if state.gen > start}

    def _run_at_once(self, previous: dict[ContractProcess, None], end: int) -> None:
        """A chunk made at once: every contract with something before `end` runs to it, in
        key order, so that the bucket holds every instrument's events in instrument order.
        The last chunk's contracts that have something in this one run again without a trip
        through the queue (with few contracts, that is nearly all of them)."""
        end_f = float(end)
        due: list[ContractProcess] = []
        for state in previous:
            if self._parked(state):
                continue
            if state.tq < end_f or state.tt < end_f:
                due.append(state)
            else:
                self._enqueue(state)
        queue = self._queue
        while queue and queue[0][0] < end_f:
            state = heappop(queue)[3]
            if not self._parked(state):
                due.append(state)
        due.sort(key=_key_order)
        ran = self._ran
        run = self._run
        events: list[Event] = []
        times: list[float] = []
        with _gc_paused():
            for state in due:
                run(state, end)
                ran[state] = None
                events += state.events
                times += state.times
            self._pending.put_in_order(events, times)
        self.work.runs += len(due)
        self.work.events += len(events)

    def _place_buckets(self, start: int) -> None:
        """Buckets up to `_reach`: one for a chunk made at once, about 16 events each for a
        staggered chunk, kept from one chunk to the next with what runs made beyond it."""
        span = self._frontier - start
        if self._staggered:
            buckets = min(_MAX_BUCKETS, max(1.0, self._event_rate() * span / _NS / 16))
            scale = buckets / span
        else:  # (+ 1: every time before the frontier in bucket 0, whatever the rounding)
            scale = 1.0 / (span + 1)
        self._pending.place(start, self._reach, scale, keep=self._staggered)

    def _watched_lately(self, start: int) -> bool:
        """Whether contracts were watched in the last `_QUIET_NS` before `start`: then, under
        `total_rate`, more watches (and rate changes) are likely, and chunks stop at the rate
        grid so that they land outside the chunk."""
        return self._last_watch is not None and start - self._last_watch < _QUIET_NS

    def _run_due(self, limit: float) -> None:
        """Run the contracts whose next event may come before `limit` (float ns, at most the
        frontier), and put what they make in the buckets."""
        queue = self._queue
        if not queue or queue[0][0] >= limit:
            return
        work = self.work
        ran = self._ran
        with _gc_paused():
            while queue and queue[0][0] < limit:
                state = heappop(queue)[3]
                if self._parked(state):
                    continue
                self._run(state, self._horizon(state))
                ran[state] = None
                work.runs += 1
                work.events += len(state.events)
                self._pending.put(state.events, state.times)
                if self._staggered:  # (else it waits in `_ran` for the next chunk)
                    self._enqueue(state)

    def _horizon(self, state: ContractProcess) -> int:
        """Where a staggered run stops: the first point after its first event on the
        contract's own grid, spaced a chunk length apart with a phase of its own (so at most a
        chunk length beyond the frontier)."""
        if self._reach == self._frontier:  # made at once, or on the rate grid
            return self._frontier
        span = self._span
        phase = state.key_order % span
        first = min(state.tq, state.tt)
        horizon = phase + (math.floor((first - phase) / span) + 1) * span
        last_watch = self._last_watch
        if self.settings.total_rate and last_watch is not None and first - last_watch < _QUIET_NS:
            # Contracts are being watched: the next rate change may come at any grid point,
            # and a run past it would go back (a chunk made in a quiet spell is long).
            return min(horizon, _grid_after(math.floor(first)))
        return horizon

    def _run(self, state: ContractProcess, end: int) -> None:
        """A contract from where it is to `end` (or its life's end), into new lists of its own."""
        if state.stop_at is not None and end > state.stop_at:
            end = state.stop_at
        after = state.after
        if after is not None:
            # Made from its start: number on from the last life, which has made everything
            # before its end (its events come due before this life's first) and is final once
            # no rate change can come before its end.
            if state.gen == state.born:
                state.sequence = _last_sequence(after)
            if after.stop_at is None or self._consumed + 1 >= after.stop_at:
                state.after = None
        if len(state.marks) > 16:
            keep = bisect_left(state.mark_times, float(min(self._chunk_start, state.gen))) - 1
            if keep > 0:
                del state.marks[:keep], state.mark_times[:keep]
        state.snapshot()  # a rate change before `end` rolls it back to here
        if end > self._made_to:
            self._made_to = end
        # (The buckets have copies of what the lists held.)
        state.events.clear()
        state.times.clear()
        last_change = self._change_times[-1] if self._change_times else -1
        if last_change >= state.gen or state.changes_seen < self._changes_made:
            self._generate(state, end)
        elif state.always_open:
            state.run(end, state.events, state.times)
        else:
            self._run_sessions(state, end)

    def _rank(self, event: Event) -> tuple[int, int | str]:
        if type(event) is OptionQuote or type(event) is OptionTrade:
            state = self._contracts.get(event.contract)
            if state is None:  # an ended life's (a tie: seldom); every life's order is this
                return (1, derive_seed(self.settings.seed, event.contract.key))
            return (1, state.key_order)
        assert type(event) is IndexPrice or type(event) is UnderlyingTick
        return (0, event.root)

    def _rebuild(self) -> None:
        """After a rate change before where runs reached: the contracts run past it go back to
        where their run began and run again (their streams up to the change come out the
        same), and what is not yet returned goes back into the buckets."""
        self._dirty = False
        at = self._rollback_at
        self._rollback_at = None
        if at is None:
            return
        redo = [s for s in self._ran if s.gen > at]
        redo.sort(key=lambda s: s.after is not None)  # a life's last run before the next's first
        if not redo:
            return
        again = set(redo)
        self._queue = [entry for entry in self._queue if entry[3] not in again]
        heapify(self._queue)
        with _gc_paused():
            for state in redo:
                # Made at once, every run goes to the frontier (but one that stopped short).
                # Staggered, a run goes back to its end only if its life has ended (the next
                # life numbers on from there); the others stop at the change and go on from
                # the queue (`_horizon`): while contracts are being watched, rate changes come
                # every grid step, and a run redone to its old end, seconds past them when made
                # in a quiet spell, went back again at every one.
                end = self._frontier
                if self._staggered:
                    ended = self._contracts.get(state.contract) is not state
                    end = state.gen if ended else min(state.gen, at)
                state.restore()
                self.work.rollbacks += 1
                self._run(state, end)
                if self._staggered:
                    self._enqueue(state)
            self._rebucket()

    def _rebucket(self) -> None:
        """Every event made and not yet returned, back into empty buckets."""
        self._pending.clear()
        bound = self._consumed + 1.0
        reports = zip(self._path_events, self._path_times, strict=True)
        kept = sorted(((e, t) for e, t in reports if t >= bound), key=itemgetter(1))
        self._pending.put([e for e, _ in kept], [t for _, t in kept])
        for state in self._ran:
            k = bisect_left(state.times, bound)
            self._pending.put(state.events[k:], state.times[k:])

    def _event_rate(self) -> float:
        """About how many events a second the watched instruments make."""
        rate = (
            self.settings.total_rate
            if self.settings.total_rate
            else self._natural_rate * max(self.settings.activity, 1e-9)
        )
        return rate + sum(1.0 / p.step for p in self._watched_paths)

    def _chunk_plan(self) -> tuple[int, bool]:
        """How long the next chunk is (ns), and whether it is made at once: a chunk long enough
        that each instrument makes a few dozen events in it, made at once if that is little
        enough work (`chunk_budget`) for runs of `_EAGER_EVENTS_PER_RUN` events or more."""
        count = len(self._contracts) + len(self._watched_paths)
        rate = self._event_rate()
        if rate <= 0.0:
            return _CHUNK_MAX_NS, True
        # events + _RUN_COST * runs <= budget, where a chunk of E events runs about
        # min(count, E) instruments.
        budget = self.chunk_budget
        wanted = _CHUNK_EVENTS_PER_INSTRUMENT * count
        at_once = min(wanted, max(budget - _RUN_COST * count, budget / (1 + _RUN_COST)))
        eager = at_once >= _EAGER_EVENTS_PER_RUN * count
        events = at_once if eager else min(wanted, _STAGGERED_CHUNK_EVENTS)
        length = max(_CHUNK_MIN_NS, min(_CHUNK_MAX_NS, round(events / rate * _NS)))
        return length, eager

    # -- rate changes -----------------------------------------------------------------------------

    def _change_rate(self, rel: int, scale: float) -> None:
        """Every contract's rate scale is `scale` from `rel` on. Contracts generated past `rel`
        run again from where their run began (`_rebuild`).

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
        if rel < self._made_to:  # some runs have gone past it
            self._roll_back(rel)

    def _roll_back(self, rel: int) -> None:
        """Runs that went past `rel` go back to where they began and run again (`_rebuild`)."""
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
            state.run(end, state.events, state.times)
            return
        sessions = self._sessions
        while state.gen < end:
            close = sessions.after(state.gen)[1]
            stop = min(end, close)
            state.run(stop, state.events, state.times)
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
        events: list[Event] = []
        times: list[float] = []
        path.extend_to(end)  # the grid in stretches, not a point at a time
        open_until = -1  # ns since the start: the market is open at least until then
        while True:
            t = k * step
            rel = round(t * _NS)
            if rel >= end:
                break
            if rel >= open_until:
                is_open, change = self._hours(path.kind, t)
                if not is_open:  # nothing moves till the open: no report before it
                    assert change is not None  # a closed market opens again
                    k += points_before(k, step, change)
                    path.reported_k = k - 1
                    continue
                open_until = change if change is not None else end
            price = path.price_at(t)
            if price != path.last_report:
                if self._is_open(path.kind, t - step):
                    ts_ns = self._start_ns + rel
                    if path.kind is Kind.INDEX:
                        events.append(IndexPrice(ts_ns, path.info.root, price))
                    else:
                        events.append(UnderlyingTick(ts_ns, path.info.root, price))
                    times.append(float(rel))
                path.last_report = price
            path.reported_k = k
            k += 1
        self._path_events += events
        self._path_times += times
        self.work.events += len(events)
        self._pending.put(events, times)

    def _path(self, root: str) -> UnderlyingPath:
        path = self._paths.get(root)
        if path is None:
            info = underlying(root, self.settings.seed)
            step = (
                self.settings.index_step
                if info.kind is Kind.INDEX
                else self.settings.underlying_step
            )
            path = UnderlyingPath(info, self.settings.seed, step, self._hours)
            self._paths[root] = path
        return path

    def _is_open(self, kind: Kind, t: float) -> bool:
        return self._hours(kind, t)[0]

    def _hours(self, kind: Kind, t: float) -> tuple[bool, int | None]:
        """Whether `kind` trades at t, and when (ns since the start) that changes."""
        if self.settings.always_open or kind is Kind.CRYPTO:
            return True, None
        rel = round(t * _NS)
        opened, closed = self._sessions.after(rel)
        return (True, closed) if opened <= rel else (False, opened)

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
        self._count_rates(state, rel, +1.0)

    def _count_rates(self, state: ContractProcess, rel: int, sign: float) -> None:
        """A contract's rates join (+1) or leave (-1) the watched ones' at `rel`."""
        self._natural_rate += sign * (state.quote_rate + state.trade_rate)
        self._last_watch = rel
        if not self.settings.total_rate or self._natural_rate <= 1e-9:
            return  # (with nothing watched, the scale waits for the next watch)
        self._rate_scale = self._natural_rate / self.settings.total_rate
        if self._first_watch is None:
            self._first_watch = rel
        at_once = rel == self._first_watch
        point = rel if at_once else _grid_after(rel)
        self._change_rate(point, self._rate_scale / self._burst_factor(point))
        # The changes after it (a burst's end, made when the burst began) set the scale of their
        # time: the watched contracts' share from now on, with the bursts then.
        times, changes = self._change_times, self._rate_changes
        for i in range(bisect_right(times, point), len(times)):
            changes[i] = (times[i], self._rate_scale / self._burst_factor(times[i]))


def _last_sequence(state: ContractProcess) -> int:
    """A life's last sequence number, once it has made all: a life that never ran has the one
    before it (numbering on from it)."""
    while state.after is not None and state.gen == state.born:
        state = state.after
    return state.sequence


def _grid_after(rel: int) -> int:
    """The first point of the rate grid strictly after `rel` (ns since the start)."""
    return (rel // RATE_GRID_NS + 1) * RATE_GRID_NS


def expiry_instant_ns(contract: OptionContract) -> int:
    """When a contract stops trading: 16:00 ET for US options, 08:00 UTC for Deribit-style ones."""
    return _expiry_instant_ns(contract.expiration, underlying(contract.root).kind is Kind.CRYPTO)


@functools.lru_cache(maxsize=4096)  # a chain has a few dozen expirations; a watch asks for one
def _expiry_instant_ns(expiration: dt.date, crypto: bool) -> int:
    if crypto:
        return unix_ns(dt.datetime.combine(expiration, dt.time(8, 0), tzinfo=UTC))
    return unix_ns(dt.datetime.combine(expiration, dt.time(16, 0), tzinfo=EASTERN))
