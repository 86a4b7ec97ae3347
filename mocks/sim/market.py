"""The simulated options market: one discrete-event simulator over every watched instrument.

`MarketSim` is the sans-I/O core. `advance(until)` produces every event due up to `until`, in
time order. It never reads a clock, and every random number comes from generators derived from
(seed, instrument), so a contract's events depend neither on which other contracts are watched,
nor on how the caller slices time into `advance` calls, nor on Trio's scheduling.

The model, briefly: each underlying follows a seeded geometric Brownian motion with jumps on a
fixed time grid (index levels are reported once a grid step, only on change); each contract is a
pair of Poisson processes (quote changes, trades) whose intensity falls off away from the money.
Quotes sit around a Black-Scholes / Black-76 value on a skewed smile, with the exchanges' tick
rules, sizes and venues; trades print at the bid, the ask or between. Contracts are synthesised
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
returned; with `total_rate`, whose scaling changes every contract's rate at a watch, contracts
roll back to the chunk's start and regenerate with the new rate from the watch on. Chunks hold a
few dozen events per instrument: enough to make per-contract setup negligible, small enough to
stay in the CPU cache. The rest of the speed is in `_run`, the one loop per quote.
"""

from __future__ import annotations

import datetime as dt
import gc
import math
import random
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice
from operator import itemgetter

from mocks.sim import pricing
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
from mocks.sim.exchanges import (
    DEFAULT_CRYPTO_EXCHANGE,
    SINGLE_LISTED,
    TRADE_CONDITIONS,
    US_OPTIONS_MICS,
    US_OPTIONS_WEIGHTS,
)
from mocks.sim.rng import derive_rng, derive_seed

_NS = 1_000_000_000
_YEAR_NS = 365.0 * 86_400 * _NS
# Volatility is quoted per trading year for US underlyings, per calendar year for crypto.
_US_TRADING_YEAR_S = 252 * 6.5 * 3600
_CRYPTO_YEAR_S = 365 * 86_400
_MIN_YEARS = 900.0 / (365 * 86_400)  # a contract past expiry keeps a quarter hour of life
# Full valuations while the underlying barely moves: often enough that time decay since the last
# one stays below a rounding error (a thousandth of the remaining life), within these bounds.
_REVALUE_MIN_NS = 20.0 * _NS
_REVALUE_MAX_NS = 300.0 * _NS
_REVALUE_MOVE = 0.005  # ... or once it moved this fraction since the last one

# Chunk sizing: enough market time that each contract makes a few dozen events per chunk (the
# per-contract cost of a chunk is then small), bounded in time and in memory.
_CHUNK_EVENTS_PER_INSTRUMENT = 32
_CHUNK_MAX_EVENTS = 50_000
_CHUNK_MIN_NS = 1 * _NS
_CHUNK_MAX_NS = 60 * _NS

_QUOTE_BLOCK = 1024  # quotes per block of random words
_TRADE_BLOCK = 64  # trades per block


@dataclass(frozen=True, slots=True)
class MarketSettings:
    seed: int = 0
    start: dt.datetime = dt.datetime(2025, 3, 14, 9, 30, tzinfo=EASTERN)
    always_open: bool = True  # False: US options and indices trade 09:30-16:00 ET only
    strict: bool = False  # expired contracts are accepted but never quote, as at the vendors
    consecutive_sequences: bool = False  # vendors document gaps (1, 2, 6, 9); this turns them off
    activity: float = 1.0  # multiplier on every quote and trade rate
    total_rate: float | None = None  # events/s over all watched contracts (`serve --rate N`)
    underlying_step: float = 0.5  # seconds between moves of equities and crypto
    index_step: float = 1.0  # seconds between index price reports ("about once a second")


@dataclass(frozen=True, slots=True)
class Mark:
    """The inputs and result of the last valuation of a contract (Amberdata's snapshot fields)."""

    underlying_price: float  # spot, index level or (crypto) forward
    vol: float  # annualised, as a fraction
    years: float  # time to expiry used for the valuation
    value: float  # theoretical premium in the quote unit (USD, or fraction of F for crypto)


# -- lookup tables ---------------------------------------------------------------------------------
# The hot loop draws random *bytes* and looks them up in small tables: a byte is a cached small
# int (no allocation), and 256-entry tables stay in the CPU cache where 65536-entry ones did not.


def _weighted_table(names: tuple[str, ...], weights: tuple[float, ...], size: int) -> list[str]:
    total = sum(weights)
    table: list[str] = []
    for name, weight in zip(names, weights, strict=True):
        table.extend([name] * round(weight / total * size))
    while len(table) < size:
        table.append(names[0])
    return table[:size]


_EXCHANGE_TABLE = _weighted_table(US_OPTIONS_MICS, US_OPTIONS_WEIGHTS, 128)
_CONDITION_TABLE = _weighted_table(
    tuple(n for n, _ in TRADE_CONDITIONS), tuple(w for _, w in TRADE_CONDITIONS), 128
)
# Displayed sizes: mostly small, a heavy tail (Pareto, alpha 1.3, scale 8), capped at 2000.
_SIZE_TABLE = [min(2000, int(8.0 * (1.0 - (i + 0.5) / 256) ** (-1 / 1.3))) + 1 for i in range(256)]
SideTable = list[tuple[int, str, int]]


def _side_table(salt: int, venue: str = "") -> SideTable:
    """(size, venue, ticks stepped away) for each value of one random byte: one side of a quote.

    The size is the byte's quantile of the size distribution; venue and step-away come from a
    hash of it. A side steps one tick away from the value-based price one time in eight."""
    table = []
    for b in range(256):
        h = (b * 2654435761 + salt) & 0xFFFFFFFF
        away = 1 if (h >> 20) & 7 == 0 else 0
        table.append((_SIZE_TABLE[b], venue or _EXCHANGE_TABLE[(h >> 8) & 127], away))
    return table


_SIDES: dict[str, tuple[SideTable, SideTable]] = {
    "": (_side_table(0x5BD1E995), _side_table(0x27D4EB2F))
}


def _sides(venue: str) -> tuple[SideTable, SideTable]:
    """Bid and ask side tables; single-venue products get their own copy with the venue fixed."""
    if venue not in _SIDES:
        _SIDES[venue] = (_side_table(0x5BD1E995, venue), _side_table(0x27D4EB2F, venue))
    return _SIDES[venue]


# Sequence increments: vendors document gaps ("1, 2, 6, 9"); mostly 1, sometimes more.
_SEQUENCE_STEPS = (1,) * 10 + (2,) * 3 + (3, 4, 6)  # indexed by 4 random bits
_CONSECUTIVE_STEPS = (1,) * 16


def _spread_table(steps: tuple[int, ...]) -> list[tuple[float, int]]:
    """(half-spread as a fraction of the value, sequence increment) for each random byte."""
    return [(0.012 + 0.02 * (b & 15) / 15.0, steps[b >> 4]) for b in range(256)]


# Unit exponential inter-arrival times by 16 random bits: 4096 quantiles, each repeated 16 times
# so the table holds only 4096 distinct floats (cache-friendly); the tail is cut at 9 means.
_EXP_LEVELS = [-math.log(1.0 - (i + 0.5) / 4096) for i in range(4096)]
_EXP = [_EXP_LEVELS[k >> 4] for k in range(65536)]
# Prices on a tick, already rounded (a lookup is cheaper than round()): index n -> n ticks.
_CENTS = [round(n / 100, 2) for n in range(200_001)]
_NICKELS = _CENTS[::5]
_CRYPTO_TICKS = [round(n * 0.0005, 4) for n in range(4_001)]  # Deribit, fractions of F below 2
_new = tuple.__new__
_by_time = itemgetter(0)


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


# -- the pieces of the market ------------------------------------------------------------------


class _UnderlyingPath:
    """An underlying's price on a fixed grid: `prices[i]` holds on [(base+i)·step, (base+i+1)·step).

    Grid point k's price depends only on (seed, root, k), so any contract, watched at any time,
    reads the same path. Draws happen even while the market is closed, so the path does not
    depend on the market-hours setting either; the price just does not move then.
    Watched underlyings also publish reports, like contracts into the chunk's lists.
    """

    __slots__ = (
        "base",
        "chunk",
        "drift_step",
        "hi",
        "info",
        "is_open",
        "jump_p",
        "jump_sigma",
        "kind",
        "last_report",
        "lo",
        "prices",
        "reported_k",
        "rng",
        "sigma_step",
        "step",
        "step_ns",
    )

    def __init__(
        self, info: Underlying, seed: int, step: float, is_open: Callable[[Kind, float], bool]
    ) -> None:
        self.info = info
        self.kind = info.kind
        self.rng = derive_rng(seed, f"underlying:{info.root}")
        self.step = step
        self.step_ns = step * _NS
        self.is_open = is_open
        year = _CRYPTO_YEAR_S if info.kind is Kind.CRYPTO else _US_TRADING_YEAR_S
        self.sigma_step = info.vol * math.sqrt(step / year)
        self.drift_step = -0.5 * self.sigma_step * self.sigma_step
        day = 86_400 if info.kind is Kind.CRYPTO else 6.5 * 3600
        self.jump_p = info.jump_rate * step / day
        self.jump_sigma = 3.0 * info.vol / math.sqrt(252)
        self.prices = [info.spot]
        self.base = 0
        self.last_report = math.nan
        self.reported_k = 0  # grid points up to here have been considered for reports
        self.chunk, self.lo, self.hi = -1, 0, 0  # its reports in the chunk: lists[lo:hi]

    def price_at(self, t: float) -> float:
        i = int(t / self.step) - self.base
        prices = self.prices
        while i >= len(prices):
            self._extend()
        return prices[i] if i >= 0 else prices[0]

    def extend_to(self, rel_ns: float) -> None:
        """Make the grid reach time `rel_ns` (nanoseconds since the start), for the hot loop."""
        last = int(rel_ns / self.step_ns) + 1 - self.base
        while len(self.prices) <= last:
            self._extend()

    def _extend(self) -> None:
        rng = self.rng
        r = self.drift_step + self.sigma_step * rng.gauss(0.0, 1.0)
        if rng.random() < self.jump_p:
            r += rng.gauss(0.0, self.jump_sigma)
        last = self.prices[-1]
        k = self.base + len(self.prices)
        if self.is_open(self.kind, k * self.step):
            last = max(round(last * math.exp(r), 2), 0.01)
        self.prices.append(last)

    def forget_before(self, t: float) -> None:
        """Drop grid points no event can ask for any more (everything before `t`)."""
        drop = min(int(t / self.step) - 1 - self.base, len(self.prices) - 1)
        if drop > 256:
            del self.prices[:drop]
            self.base += drop


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


# Inputs and result of a valuation, as in `Mark`: underlying price, vol, years, value. (Plain
# tuples while generating; `MarketSim.mark` makes the `Mark` when asked.)
_Valuation = tuple[float, float, float, float]
# A contract's generator state at its chunk's start: gen, tq, tt, qn, tn, sequence, valuation,
# delta, gamma, revalue_at, number of marks, standing quote, inv_q, inv_t.
_Saved = tuple[
    int,
    float,
    float,
    int,
    int,
    int,
    _Valuation,
    float,
    float,
    float,
    int,
    OptionQuote | None,
    float,
    float,
]


class _ContractState:
    """One watched contract: its generator state, and where its events are in the chunk's lists.

    Times here are float nanoseconds since the run's start; an event's `ts_ns` is the start's
    Unix time plus that, truncated."""

    __slots__ = (
        "always_open",
        "ask_side",
        "bid_side",
        "chunk",
        "coarse",
        "contract",
        "crypto",
        "delta",
        "exchange",
        "expiry_ns",
        "gamma",
        "gen",
        "hi",
        "inv_q",
        "inv_t",
        "key_order",
        "kind",
        "lo",
        "mark_times",
        "marks",
        "name",
        "path",
        "prev_quote",
        "qblock",
        "qn",
        "quote_rate",
        "qwords",
        "regime",
        "revalue_at",
        "saved",
        "sequence",
        "standing",
        "tblock",
        "tblock_no",
        "tn",
        "tq",
        "trade_rate",
        "trades_made",
        "tt",
        "valuation",
        "zombie_end_ns",
    )

    def __init__(
        self,
        contract: OptionContract,
        key_order: int,
        path: _UnderlyingPath,
        expiry_ns: int,
        zombie_end_ns: int,
        always_open: bool,
    ) -> None:
        self.contract = contract
        self.name = f"contract:{contract.key}"
        self.key_order = key_order
        self.path = path
        self.kind = path.kind
        self.crypto = path.kind is Kind.CRYPTO
        self.always_open = always_open or self.crypto
        self.expiry_ns = expiry_ns
        self.zombie_end_ns = zombie_end_ns  # non-zero: expired in real life, streams anyway
        self.coarse = not (self.crypto or path.info.penny_pilot)  # 0.05 ticks from $3 up
        # (price table, its length, tick, ticks per unit, digits) below $3 / for every value.
        if self.crypto:
            self.regime = (_CRYPTO_TICKS, len(_CRYPTO_TICKS), 0.0005, 2000.0, 4)
        else:
            self.regime = (_CENTS, len(_CENTS), 0.01, 100.0, 2)
        # One venue for crypto and for Cboe's proprietary products; "" means all 18 US venues.
        self.exchange = (
            DEFAULT_CRYPTO_EXCHANGE if self.crypto else SINGLE_LISTED.get(contract.root, "")
        )
        self.bid_side, self.ask_side = _sides(self.exchange)
        self.sequence = 0
        self.valuation: _Valuation = (path.info.spot, path.info.vol, 0.0, 0.0)
        self.delta = 0.0
        self.gamma = 0.0
        self.revalue_at = -math.inf  # the next timed full valuation
        self.marks: list[_Valuation] = []
        self.mark_times: list[float] = []
        self.quote_rate = 1.0
        self.trade_rate = 1.0
        self.inv_q = float(_NS)  # mean gaps in ns at the current rate scale
        self.inv_t = float(_NS)
        self.tq = math.inf  # time of the next quote ...
        self.tt = math.inf  # ... and of the next trade
        self.qn = 0  # quote words used so far
        self.qblock = 0
        self.qwords: Iterator[tuple[int, int, int, int]] | None = None
        self.tn = 0  # trade words used so far
        self.tblock_no = -1
        self.tblock: list[int] = []
        self.trades_made = 0
        self.standing: OptionQuote | None = None  # the last quote generated
        self.prev_quote: OptionQuote | None = None  # the last quote before the current chunk
        self.chunk, self.lo, self.hi = -1, 0, 0  # its events in chunk `chunk`: lists[lo:hi]
        self.gen = 0  # events before this time (ns since the start) have been generated
        self.saved: _Saved | None = None

    def snapshot(self) -> None:
        """Remember the generator state at the chunk's start (for a `total_rate` rollback)."""
        self.saved = (
            self.gen,
            self.tq,
            self.tt,
            self.qn,
            self.tn,
            self.sequence,
            self.valuation,
            self.delta,
            self.gamma,
            self.revalue_at,
            len(self.marks),
            self.standing,
            self.inv_q,
            self.inv_t,
        )

    def restore(self) -> None:
        assert self.saved is not None
        (
            self.gen,
            self.tq,
            self.tt,
            self.qn,
            self.tn,
            self.sequence,
            self.valuation,
            self.delta,
            self.gamma,
            self.revalue_at,
            n_marks,
            self.standing,
            self.inv_q,
            self.inv_t,
        ) = self.saved
        del self.marks[n_marks:], self.mark_times[n_marks:]
        self.qwords = None
        self.chunk = -1  # its events in the chunk are regenerated elsewhere in the lists

    def set_scale(self, scale: float) -> None:
        self.inv_q = _NS / self.quote_rate * scale
        self.inv_t = _NS / self.trade_rate * scale


def _quote_words(seed: int, name: str, block: int) -> Iterator[tuple[int, int, int, int]]:
    """Block `block` of a contract's quote draws: (bid byte, ask byte, spread byte, 16-bit gap).

    Blocks are addressed by number, from their own `random.Random` derived from (seed, contract,
    block), so generation can restart at any quote without having saved a generator's state."""
    rng = random.Random(derive_seed(seed, f"{name}:quotes:{block}"))
    raw = rng.randbytes(3 * _QUOTE_BLOCK)
    gaps = array("H", rng.randbytes(2 * _QUOTE_BLOCK))
    if sys.byteorder == "big":
        gaps.byteswap()  # the same stream on every machine
    return zip(raw[0::3], raw[1::3], raw[2::3], gaps, strict=True)


def _trade_words(seed: int, name: str, block: int) -> list[int]:
    """Block `block` of a contract's trade draws, 64 random bits each."""
    words = array(
        "Q", random.Random(derive_seed(seed, f"{name}:trades:{block}")).randbytes(8 * _TRADE_BLOCK)
    )
    if sys.byteorder == "big":
        words.byteswap()
    return words.tolist()


class MarketSim:
    """The sans-I/O market. Times are seconds since the run's start (`MarketClock`)."""

    def __init__(self, settings: MarketSettings | None = None) -> None:
        self.settings = settings or MarketSettings()
        self.clock = MarketClock(self.settings.start)
        self.hours = MarketHours(always_open=self.settings.always_open)
        self.now = 0.0
        self._start_ns = self.clock.start_ns
        self._sessions = _Sessions(self._start_ns, self.settings.start)
        self._contracts: dict[OptionContract, _ContractState] = {}
        self._ordered: list[_ContractState] = []  # by key_order: a fixed tie-break order
        self._paths: dict[str, _UnderlyingPath] = {}
        self._watched_paths: list[_UnderlyingPath] = []
        self._spreads = _spread_table(
            _CONSECUTIVE_STEPS if self.settings.consecutive_sequences else _SEQUENCE_STEPS
        )
        # Inter-arrival times are multiplied by the rate scale: 1/activity, or what makes the
        # watched contracts add up to `total_rate` events per second. With `total_rate`, each
        # watch changes it from the watch's time on: (time, scale), in time order.
        self._natural_rate = 0.0
        self._rate_scale = 1.0 / max(self.settings.activity, 1e-9)
        self._rate_changes: list[tuple[int, float]] = []
        # The current chunk: every event before `_frontier` (ns since the start), merged in time
        # order; `_pending[:_pos]` has been returned, up to `_consumed` (inclusive).
        self._order: list[int] = []  # the chunk's events in time order (indices in its lists)
        self._pos = 0
        # What every instrument made in the chunk, instrument after instrument (each one's
        # events are a contiguous range), with float times: the merge sorts these.
        self._chunk_no = 0
        self._chunk_events: list[Event] = []
        self._chunk_times: list[float] = []
        self._time_of = self._chunk_times.__getitem__
        self._frontier = 0
        self._consumed = -1
        self._dirty = False  # a watch inside the chunk: generate the newcomers and re-merge

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
        state = _ContractState(
            contract, order, path, expiry_ns, zombie_end_ns, self.settings.always_open
        )
        state.sequence = rng.randrange(1_000_000, 900_000_000)
        state.gen = rel
        self._revalue(state, float(rel), path.price_at(start))
        self._set_rates(state, rel)
        state.set_scale(self._rate_scale)
        # A contract watched while its market is closed starts at the next open.
        opened = rel if state.always_open else max(rel, self._sessions.after(rel)[0])
        state.tq = opened + rng.expovariate(1.0) * state.inv_q * 0.25  # the first quote, soon
        state.tt = opened + rng.expovariate(1.0) * state.inv_t
        state.snapshot()
        self._contracts[contract] = state
        self._ordered.append(state)
        self._ordered.sort(key=lambda s: s.key_order)
        if rel < self._frontier:
            self._dirty = True
        return True

    def burst(self, factor: float, duration: float, at: float | None = None) -> None:
        """The market gets `factor` times busier for `duration` seconds from `at` (default now):
        every watched contract's quote and trade rates, as on a news spike. Contracts already
        generated past `at` go back to the chunk's start and redo it (their streams up to `at`
        come out the same). A contract first watched during the burst starts at its usual rate."""
        start = self.now if at is None else max(at, self.now)
        rel = round(start * _NS)
        base = self._rate_scale
        self._rate_changes += [(rel, base / factor), (round((start + duration) * _NS), base)]
        self._rate_changes.sort(key=_by_time)
        for state in self._ordered:
            if state.gen > rel:
                state.restore()
                self._dirty = True

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
        if state.chunk == self._chunk_no:
            events = self._chunk_events
            i = bisect_left(self._chunk_times, self._consumed + 1.0, state.lo, state.hi)
            for j in range(i - 1, state.lo - 1, -1):
                event = events[j]
                if type(event) is OptionQuote:
                    return event
        return state.prev_quote

    def mark(self, contract: OptionContract) -> Mark | None:
        """The contract's last valuation at or before `now`."""
        state = self._contracts.get(contract)
        if state is None:
            return None
        i = bisect_left(state.mark_times, self._consumed + 1.0)
        return Mark(*state.marks[max(i - 1, 0)])

    def underlying_price(self, root: str) -> float:
        return self._path(underlying(root, self.settings.seed).root).price_at(self.now)

    def underlying_info(self, root: str) -> Underlying:
        return self._path(underlying(root, self.settings.seed).root).info

    def now_ns(self) -> int:
        return self._start_ns + round(self.now * _NS)

    def next_time(self) -> float | None:
        """When the next event is due (None: nothing watched)."""
        if not self._ordered and not self._watched_paths:
            return None
        if self._dirty:
            self._rebuild()
        if self._pos < len(self._order):
            return self._chunk_times[self._order[self._pos]] / _NS
        # Nothing left in the chunk: every process's next event lies beyond its frontier.
        times = [min(s.tq, s.tt) / _NS for s in self._ordered]
        times += [(p.reported_k + 1) * p.step for p in self._watched_paths]
        return min(times)

    # -- the simulation ---------------------------------------------------------------------------

    def advance(self, until: float) -> list[Event]:
        """Every event due after the previous call and at or before `until`, in time order."""
        until_rel = round(until * _NS)
        if self._dirty:
            self._rebuild()
        bound = until_rel + 1.0  # an event at float time t has ts_ns start + int(t)
        # The merged order is kept as indices: an event is touched when it is returned, not once
        # more beforehand (at this rate, memory traffic is what costs).
        pos = self._pos
        end = bisect_left(self._order, bound, pos, key=self._time_of)
        out = list(map(self._chunk_events.__getitem__, self._order[pos:end]))
        self._pos = end
        while until_rel >= self._frontier:  # past the chunk: make the next one
            self._next_chunk(until_rel)
            end = bisect_left(self._order, bound, key=self._time_of)
            out += map(self._chunk_events.__getitem__, self._order[:end])
            self._pos = end
        if until_rel > self._consumed:
            self._consumed = until_rel
        if until > self.now:
            self.now = until
        return out

    def _next_chunk(self, until_rel: int) -> None:
        """Generate every instrument from the frontier to the next one and merge the events."""
        start = self._frontier
        end = max(start + self._chunk_ns(), until_rel + 1)
        end_f = float(end)
        self._rate_changes = [c for c in self._rate_changes if c[0] >= start]
        direct = not self._rate_changes  # no rate switch inside this chunk
        snapshots = True  # a rate change (total_rate, a burst) may roll a contract back
        previous, last_chunk = self._chunk_events, self._chunk_no
        self._chunk_no += 1
        self._chunk_events, self._chunk_times = [], []
        self._time_of = self._chunk_times.__getitem__
        with _gc_paused():
            for path in self._watched_paths:
                self._fill(path, end)
            for state in self._ordered:
                if state.chunk == last_chunk and state.hi > state.lo:
                    self._carry_over(state, previous)
                if snapshots:
                    state.snapshot()
                if state.tq >= end_f and state.tt >= end_f and state.always_open and direct:
                    state.gen = max(state.gen, end)  # nothing due in this chunk (quiet)
                elif direct and state.always_open:
                    state.chunk, state.lo = self._chunk_no, len(self._chunk_events)
                    self._run(state, end)
                    state.hi = len(self._chunk_events)
                else:
                    self._fill(state, end)
            self._frontier = end
            self._merge(-1)
            # Drop the previous chunk's events while the collector is paused: their frees
            # balance the new chunk's allocations, so it does not wake up to trace the new ones.
            del previous
        for path in self._paths.values():
            path.forget_before(start / _NS)

    def _carry_over(self, state: _ContractState, events: list[Event]) -> None:
        """At a new chunk: what the API needs from the previous one (the last quote), and the
        valuations from the last one before the chunk on."""
        for i in range(state.hi - 1, state.lo - 1, -1):
            event = events[i]
            if type(event) is OptionQuote:
                state.prev_quote = event
                break
        if len(state.marks) > 16:
            keep = bisect_left(state.mark_times, float(self._frontier)) - 1
            if keep > 0:
                del state.marks[:keep], state.mark_times[:keep]

    def _fill(self, source: _UnderlyingPath | _ContractState, end: int) -> None:
        """Generate one instrument up to `end` into the chunk's lists (one contiguous range)."""
        source.chunk, source.lo = self._chunk_no, len(self._chunk_events)
        if isinstance(source, _UnderlyingPath):
            self._report(source, end)
        else:
            self._generate(source, end)
        source.hi = len(self._chunk_events)

    def _rebuild(self) -> None:
        """After watches inside the chunk: bring everything up to the frontier and re-merge."""
        self._dirty = False
        end = self._frontier
        with _gc_paused():
            for path in self._watched_paths:
                if round((path.reported_k + 1) * path.step * _NS) < end:
                    self._fill(path, end)
            for state in self._ordered:
                if state.gen < end:
                    self._fill(state, end)
            self._merge(self._consumed)

    def _merge(self, after: int) -> None:
        """The chunk's events after time `after`, merged in time order; ties keep instrument order
        (underlyings by root, then contracts by key order), which does not depend on when the
        instruments were watched or generated.

        The sort is a stable one on the events' float times (ns since the start): comparing
        floats is far cheaper than comparing the events' int `ts_ns`."""
        times = self._chunk_times
        if after < 0:  # a fresh chunk: the lists hold every instrument in order, once
            indices: Iterable[int] = range(len(times))
        else:
            bound = after + 1.0  # an event at float time t has ts_ns start + int(t)
            ranges = []
            no = self._chunk_no
            sources: list[_UnderlyingPath | _ContractState] = [
                *self._watched_paths,
                *self._ordered,
            ]
            for source in sources:
                if source.chunk == no:
                    lo = bisect_left(times, bound, source.lo, source.hi)
                    ranges.append(range(lo, source.hi))
            indices = chain.from_iterable(ranges)
        self._order = sorted(indices, key=times.__getitem__)
        self._pos = 0

    def _chunk_ns(self) -> int:
        """A chunk long enough that each instrument makes a few dozen events in it."""
        count = len(self._ordered) + len(self._watched_paths)
        rate = (
            self.settings.total_rate
            if self.settings.total_rate
            else self._natural_rate * max(self.settings.activity, 1e-9)
        )
        rate += sum(1.0 / p.step for p in self._watched_paths)
        if rate <= 0.0:
            return _CHUNK_MAX_NS
        seconds = min(_CHUNK_EVENTS_PER_INSTRUMENT * count, _CHUNK_MAX_EVENTS) / rate
        return max(_CHUNK_MIN_NS, min(_CHUNK_MAX_NS, round(seconds * _NS)))

    def _generate(self, state: _ContractState, end: int) -> None:
        """Run a contract up to `end`, switching its rates at each `total_rate` change."""
        for at, scale in self._rate_changes:
            if at < state.gen:
                continue  # already in effect
            if at >= end:
                break
            self._run_sessions(state, at)
            state.set_scale(scale)
        self._run_sessions(state, end)

    def _run_sessions(self, state: _ContractState, end: int) -> None:
        """Run a contract up to `end`; outside market hours its clock stops (processes resume at
        the next open with what was left of their waiting time)."""
        if state.always_open:
            self._run(state, end)
            return
        sessions = self._sessions
        while state.gen < end:
            close = sessions.after(state.gen)[1]
            stop = min(end, close)
            self._run(state, stop)
            if stop == close:
                state.tq = self._resume(state.tq, close)
                state.tt = self._resume(state.tt, close)

    def _resume(self, t: float, close: int) -> float:
        while t >= close:
            opened, next_close = self._sessions.after(close)
            t = opened + (t - close)
            close = next_close
        return t

    def _run(self, s: _ContractState, end: int) -> None:
        """All of one contract's quotes and trades before `end`, appended to its chunk lists.

        This is the market's hot path, one loop per quote; it trades some elegance for speed:
        random bytes index small tables, the underlying's grid is read inline, the value is
        recomputed only when the grid price or the revaluation clock says so, and trades
        (a few percent of events) are checked with one comparison per quote."""
        if end <= s.gen:
            return
        s.gen = end
        end_f = float(end)
        tq = s.tq
        seq = s.sequence
        if s.tt < end_f and s.tt < tq:  # trades before this call's first quote
            seq = self._trades(s, tq if tq < end_f else end_f, seq, s.standing)
        if tq >= end_f:
            s.sequence = seq
            return
        events = self._chunk_events
        append, tappend = events.append, self._chunk_times.append
        made0 = len(events) - s.trades_made
        start_ns = self._start_ns
        contract = s.contract
        exp = _EXP
        bids, asks, spreads = s.bid_side, s.ask_side, self._spreads
        floor, ceil = math.floor, math.ceil
        inv_q = s.inv_q
        crypto, coarse = s.crypto, s.coarse
        path = s.path
        path.extend_to(end_f)
        prices, base, step = path.prices, path.base, path.step_ns
        inv_step = 1.0 / step
        m_price, _, _, m_value = s.valuation
        m_usd = m_value * m_price if crypto else m_value
        delta, half_gamma = s.delta, 0.5 * s.gamma
        limit = _REVALUE_MOVE * m_price
        neg_limit = -limit
        revalue_at = s.revalue_at
        base_regime = s.regime
        ptab, plim, tick, inv_tick, digits = base_regime
        check = -math.inf  # recompute the value at the first quote
        vt = 0.0
        nxt = s.tt if s.tt < end_f else end_f  # the next stop: a trade or the end
        words = s.qwords
        if words is None:
            s.qblock = s.qn // _QUOTE_BLOCK
            words = islice(
                _quote_words(self.settings.seed, s.name, s.qblock), s.qn % _QUOTE_BLOCK, None
            )
        q = s.standing
        while True:
            for b_bid, b_ask, b_spread, gap in words:
                if tq >= check:  # a new grid price, or time for a full valuation
                    k = floor(tq * inv_step)
                    price = prices[k - base]
                    grid_next = (k + 1) * step
                    move = price - m_price
                    if tq >= revalue_at or move > limit or move < neg_limit:
                        m_price, m_value, m_usd, delta, gamma, revalue_at = self._revalue(
                            s, tq, price
                        )
                        half_gamma = 0.5 * gamma
                        value = m_value
                        limit = _REVALUE_MOVE * m_price
                        neg_limit = -limit
                    elif move == 0.0:
                        value = m_value
                    else:  # delta-gamma step from the last full valuation
                        value = m_usd + move * (delta + half_gamma * move)
                        if crypto:
                            value /= price
                        if value < 0.0:
                            value = 0.0
                    if coarse:  # nickels from $3 up
                        if value >= 3.0:
                            ptab, plim, tick, inv_tick = _NICKELS, len(_NICKELS), 0.05, 20.0
                        else:
                            ptab, plim, tick, inv_tick, digits = base_regime
                    vt = value * inv_tick  # the value in ticks
                    check = grid_next if grid_next < revalue_at else revalue_at
                bid_size, bid_x, bid_away = bids[b_bid]
                ask_size, ask_x, ask_away = asks[b_ask]
                half, step_seq = spreads[b_spread]
                half *= vt
                if half < 1.0:
                    half = 1.0
                bid_n = floor(vt - half)
                ask_n = ceil(vt + half)
                if bid_away:
                    bid_n -= 1
                if ask_away:
                    ask_n += 1
                if bid_n <= 0:
                    bid_n = 0
                    bid_size = 0
                if ask_n <= bid_n:
                    ask_n = bid_n + 1
                if ask_n < plim:
                    bid, ask = ptab[bid_n], ptab[ask_n]
                else:
                    bid, ask = round(bid_n * tick, digits), round(ask_n * tick, digits)
                seq += step_seq
                q = _new(
                    OptionQuote,
                    (
                        start_ns + floor(tq),
                        contract,
                        bid,
                        ask,
                        bid_size,
                        ask_size,
                        bid_x,
                        ask_x,
                        seq,
                    ),
                )
                append(q)
                tappend(tq)
                tq += exp[gap] * inv_q
                if tq >= nxt:
                    if s.tt < end_f:
                        seq = self._trades(s, tq if tq < end_f else end_f, seq, q)
                    if tq >= end_f:
                        break
                    nxt = s.tt if s.tt < end_f else end_f
            else:  # the block is used up: on to the next
                s.qblock += 1
                words = _quote_words(self.settings.seed, s.name, s.qblock)
                continue
            break
        s.qn += len(events) - s.trades_made - made0
        s.qwords = words
        s.tq = tq
        s.sequence = seq
        s.standing = q

    def _trades(self, s: _ContractState, limit: float, seq: int, quote: OptionQuote | None) -> int:
        """The contract's trades before `limit`, against the standing quote; returns the sequence.

        A trade before the contract's first quote has nothing to print against and is skipped."""
        tt = s.tt
        start_ns = self._start_ns
        steps = self._spreads
        while tt < limit:
            i = s.tn
            block = i // _TRADE_BLOCK
            if block != s.tblock_no:
                s.tblock = _trade_words(self.settings.seed, s.name, block)
                s.tblock_no = block
            bits = s.tblock[i - block * _TRADE_BLOCK]
            s.tn = i + 1
            if quote is not None:
                bid, ask = quote[2], quote[3]
                side = bits & 255
                if side < 108 and bid > 0:
                    trade_price = bid
                elif side < 216 or bid <= 0:
                    trade_price = ask
                else:  # between the quotes, on a tick
                    tick = 0.05 if s.coarse and ask >= 3.0 else s.regime[2]
                    gaps = round((ask - bid) / tick) - 1
                    trade_price = (
                        round(bid + tick * (1 + ((bits >> 8) & 0xFF) % gaps), s.regime[4])
                        if gaps > 0
                        else ask
                    )
                size = _SIZE_TABLE[(bits >> 16) & 255] // 4 + 1
                if (bits >> 24) & 15 == 0 and side & 1:
                    size *= 50  # a block
                seq += steps[(bits >> 32) & 255][1]
                trade = _new(
                    OptionTrade,
                    (
                        start_ns + int(tt),
                        s.contract,
                        trade_price,
                        size,
                        s.exchange or _EXCHANGE_TABLE[(bits >> 9) & 127],
                        (_CONDITION_TABLE[(bits >> 1) & 127],),
                        seq,
                    ),
                )
                self._chunk_events.append(trade)
                self._chunk_times.append(tt)
                s.trades_made += 1
            tt += _EXP[bits >> 48] * s.inv_t
        s.tt = tt
        return seq

    # -- pieces -----------------------------------------------------------------------------------

    def _report(self, path: _UnderlyingPath, end: int) -> None:
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

    def _path(self, root: str) -> _UnderlyingPath:
        path = self._paths.get(root)
        if path is None:
            info = underlying(root, self.settings.seed)
            step = (
                self.settings.index_step
                if info.kind is Kind.INDEX
                else self.settings.underlying_step
            )
            path = _UnderlyingPath(info, self.settings.seed, step, self._is_open)
            self._paths[root] = path
        return path

    def _is_open(self, kind: Kind, t: float) -> bool:
        if self.settings.always_open or kind is Kind.CRYPTO:
            return True
        rel = round(t * _NS)
        return self._sessions.after(rel)[0] <= rel

    def _revalue(
        self, state: _ContractState, t: float, price: float
    ) -> tuple[float, float, float, float, float, float]:
        """Full valuation on the smile at time `t` (ns since the start); delta and gamma are kept
        for the cheap steps in between. Returns (price, value, value in USD, delta, gamma, time of
        the next timed valuation)."""
        c = state.contract
        left = (state.zombie_end_ns or state.expiry_ns) - self._start_ns - t
        years = max(left / _YEAR_NS, _MIN_YEARS)
        vol = pricing.smile_vol(state.path.info.vol, price, c.strike, years)
        value, delta, gamma = pricing.black76_value_delta_gamma(
            price, c.strike, years, vol, c.is_call
        )
        usd = value
        if state.crypto:  # Deribit quotes the premium as a fraction of the underlying
            value /= price
        state.valuation = (price, vol, years, value)
        state.marks.append(state.valuation)
        state.mark_times.append(t)
        state.delta, state.gamma = delta, gamma
        state.revalue_at = t + min(max(left / 1000.0, _REVALUE_MIN_NS), _REVALUE_MAX_NS)
        return price, value, usd, delta, gamma, state.revalue_at

    def _set_rates(self, state: _ContractState, rel: int) -> None:
        """Quote and trade intensity: near-the-money contracts are far busier than the wings.

        With `total_rate`, the new contract changes every contract's rate scale from `rel` on:
        contracts already generated past it go back to the chunk's start to redo it."""
        price, vol, years, _ = state.valuation
        sd = max(vol * math.sqrt(max(years, 1.0 / 365)), 1e-3)
        x = math.log(state.contract.strike / price) / sd
        near = math.exp(-0.5 * x * x)
        state.quote_rate, state.trade_rate = 0.1 + 1.4 * near, 0.004 + 0.06 * near
        self._natural_rate += state.quote_rate + state.trade_rate
        if not self.settings.total_rate:
            return
        self._rate_scale = self._natural_rate / self.settings.total_rate
        self._rate_changes.append((rel, self._rate_scale))
        self._rate_changes.sort(key=_by_time)
        for other in self._ordered:
            if other.gen > rel:
                other.restore()
                self._dirty = True


def expiry_instant_ns(contract: OptionContract) -> int:
    """When a contract stops trading: 16:00 ET for US options, 08:00 UTC for Deribit-style ones."""
    if underlying(contract.root).kind is Kind.CRYPTO:
        moment = dt.datetime.combine(contract.expiration, dt.time(8, 0), tzinfo=UTC)
    else:
        moment = dt.datetime.combine(contract.expiration, dt.time(16, 0), tzinfo=EASTERN)
    return unix_ns(moment)
