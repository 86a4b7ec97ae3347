"""The simulated options market: one discrete-event simulator over every watched instrument.

`MarketSim` is the sans-I/O core. `advance(until)` produces every event due up to `until`, in
time order. It never reads a clock, and every random number comes from a generator derived from
(seed, instrument), so a contract's events depend neither on which other contracts are watched,
nor on how the caller slices time into `advance` calls, nor on Trio's scheduling.

The model, briefly: each underlying follows a seeded geometric Brownian motion with jumps on a
fixed time grid (index levels are reported once a grid step, only on change); each contract is a
pair of Poisson processes (quote changes, trades) whose intensity falls off away from the money.
Quotes sit around a Black-Scholes / Black-76 value on a skewed smile, with the exchanges' tick
rules, sizes and venues; trades print at the bid, the ask or between. Contracts are synthesised
on demand; one that has already expired in real life streams as if it had weeks left (a
"zombie"), unless `strict` reproduces the vendors (accepted, no data).

Speed: each `advance` runs one tight loop per due contract over the window and merges the
results with one stable sort, instead of a heap operation per event (see bench/bench_market.py).
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter

from mocks.sim import pricing
from mocks.sim.clock import EASTERN, UTC, MarketClock, MarketHours, unix_ns
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
_REVALUE_AFTER = 20.0  # seconds between full valuations while the underlying barely moves
_REVALUE_MOVE = 0.005  # ... or once it moved this fraction since the last one


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


class _UnderlyingPath:
    """An underlying's price on a fixed grid: `prices[i]` holds on [(base+i)·step, (base+i+1)·step).

    Grid point k's price depends only on (seed, root, k), so any contract, watched at any time,
    reads the same path. Draws happen even while the market is closed, so the path does not
    depend on the market-hours setting either; the price just does not move then.
    """

    __slots__ = (
        "base",
        "drift_step",
        "info",
        "is_open",
        "jump_p",
        "jump_sigma",
        "kind",
        "last_report",
        "prices",
        "reported_k",
        "rng",
        "sigma_step",
        "step",
    )

    def __init__(
        self, info: Underlying, seed: int, step: float, is_open: Callable[[Kind, float], bool]
    ) -> None:
        self.info = info
        self.kind = info.kind
        self.rng = derive_rng(seed, f"underlying:{info.root}")
        self.step = step
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

    def price_at(self, t: float) -> float:
        i = int(t / self.step) - self.base
        prices = self.prices
        while i >= len(prices):
            self._extend()
        return prices[i] if i >= 0 else prices[0]

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


# Lookup tables indexed by random bits: one `getrandbits(64)` per event instead of ten draws.
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


def _quote_extras() -> list[tuple[int, int, str, str, int]]:
    """(bid size, ask size, bid venue, ask venue, which side steps away: 0 none, 1 bid, 2 ask),
    for every 16-bit pattern: one table lookup per quote instead of five draws."""
    table = []
    for b in range(1 << 16):
        jitter = 0 if (b >> 12) & 3 else 1 + ((b >> 14) & 1)
        table.append(
            (
                _SIZE_TABLE[(b * 40503) >> 8 & 255],
                _SIZE_TABLE[b & 255],
                _EXCHANGE_TABLE[(b >> 4) & 127],
                _EXCHANGE_TABLE[((b * 2654435761) >> 16) & 127],
                jitter,
            )
        )
    return table


_QUOTE_EXTRAS = _quote_extras()
# Prices on a tick, already rounded: cent n -> n / 100 (a lookup is cheaper than round()).
_CENTS = [round(n / 100, 2) for n in range(200_001)]
_HALF_SPREAD = [0.012 + 0.02 * i / 255.0 for i in range(256)]
# Sequence increments: vendors document gaps ("1, 2, 6, 9"); mostly 1, sometimes more.
_SEQUENCE_STEPS = [1] * 10 + [2] * 3 + [3, 4, 6]  # indexed by 4 random bits
_new = tuple.__new__
_by_time = itemgetter(0)


class _ContractState:
    __slots__ = (
        "contract",
        "crypto",
        "delta",
        "digits",
        "exchange",
        "expiry_ns",
        "gamma",
        "inv_quote_rate",
        "inv_trade_rate",
        "key_order",
        "last_quote",
        "mark",
        "next_quote_t",
        "next_trade_t",
        "path",
        "penny",
        "rng",
        "sequence",
        "tick",
        "value_t",
        "zombie_end_ns",
    )

    def __init__(
        self,
        contract: OptionContract,
        rng: random.Random,
        key_order: int,
        path: _UnderlyingPath,
        expiry_ns: int,
        zombie_end_ns: int,
    ) -> None:
        self.contract = contract
        self.rng = rng
        self.key_order = key_order
        self.path = path
        self.crypto = path.kind is Kind.CRYPTO
        self.expiry_ns = expiry_ns
        self.zombie_end_ns = zombie_end_ns  # non-zero: expired in real life, streams anyway
        self.penny = path.info.penny_pilot
        self.tick = 0.0005 if self.crypto else 0.01
        self.digits = 4 if self.crypto else 2
        # One venue for crypto and for Cboe's proprietary products; "" means all 18 US venues.
        self.exchange = (
            DEFAULT_CRYPTO_EXCHANGE if self.crypto else SINGLE_LISTED.get(contract.root, "")
        )
        self.sequence = rng.randrange(1_000_000, 900_000_000)
        self.last_quote: OptionQuote | None = None
        self.mark = Mark(path.info.spot, path.info.vol, 0.0, 0.0)
        self.delta = 0.0
        self.gamma = 0.0
        self.value_t = -math.inf
        self.inv_quote_rate = 1.0
        self.inv_trade_rate = 1.0
        self.next_quote_t = math.inf
        self.next_trade_t = math.inf


class MarketSim:
    """The sans-I/O market. Times are seconds since the run's start (`MarketClock`)."""

    def __init__(self, settings: MarketSettings | None = None) -> None:
        self.settings = settings or MarketSettings()
        self.clock = MarketClock(self.settings.start)
        self.hours = MarketHours(always_open=self.settings.always_open)
        self.now = 0.0
        self._start_ns = self.clock.start_ns
        self._contracts: dict[OptionContract, _ContractState] = {}
        self._ordered: list[_ContractState] = []  # by key_order: a fixed tie-break order
        self._paths: dict[str, _UnderlyingPath] = {}
        self._watched_paths: list[_UnderlyingPath] = []
        self._open_cache: dict[Kind, tuple[float, float]] = {}
        # Inter-arrival times are multiplied by this: 1/activity, or what makes the watched
        # contracts add up to `total_rate` events per second.
        self._natural_rate = 0.0
        self._rate_scale = 1.0 / max(self.settings.activity, 1e-9)

    # -- what the feeds ask for -------------------------------------------------------------------

    def watch(self, contract: OptionContract, at: float | None = None) -> bool:
        """Start producing quotes and trades for a contract from time `at` (default: now).

        Idempotent. False when the market will never produce data for it: `strict` and expired.
        """
        if contract in self._contracts:
            return True
        start = self.now if at is None else max(at, self.now)
        start_ns = self._start_ns + round(start * _NS)
        expiry_ns = expiry_instant_ns(contract)
        if expiry_ns <= start_ns and self.settings.strict:
            return False
        rng = derive_rng(self.settings.seed, f"contract:{contract.key}")
        zombie_end_ns = 0
        if expiry_ns <= start_ns:
            zombie_end_ns = start_ns + int(rng.uniform(14, 90) * 86_400 * _NS)
        path = self._path(contract.underlying)
        order = derive_seed(self.settings.seed, contract.key)
        state = _ContractState(contract, rng, order, path, expiry_ns, zombie_end_ns)
        self._revalue(state, start, start_ns, path.price_at(start))
        self._set_rates(state)
        scale = self._rate_scale
        state.next_quote_t = start + rng.expovariate(1.0) * state.inv_quote_rate * scale * 0.25
        state.next_trade_t = start + rng.expovariate(1.0) * state.inv_trade_rate * scale
        self._contracts[contract] = state
        self._ordered.append(state)
        self._ordered.sort(key=lambda s: s.key_order)
        return True

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

    def is_watched(self, contract: OptionContract) -> bool:
        return contract in self._contracts

    def last_quote(self, contract: OptionContract) -> OptionQuote | None:
        state = self._contracts.get(contract)
        return state.last_quote if state else None

    def mark(self, contract: OptionContract) -> Mark | None:
        state = self._contracts.get(contract)
        return state.mark if state else None

    def underlying_price(self, root: str) -> float:
        return self._path(underlying(root, self.settings.seed).root).price_at(self.now)

    def underlying_info(self, root: str) -> Underlying:
        return self._path(underlying(root, self.settings.seed).root).info

    def now_ns(self) -> int:
        return self._start_ns + round(self.now * _NS)

    def next_time(self) -> float | None:
        """When the next event is due (None: nothing watched)."""
        times = [min(s.next_quote_t, s.next_trade_t) for s in self._ordered]
        times += [(p.reported_k + 1) * p.step for p in self._watched_paths]
        return min(times) if times else None

    # -- the simulation ---------------------------------------------------------------------------

    def advance(self, until: float) -> list[Event]:
        """Every event due after the previous call and at or before `until`, in time order."""
        out: list[Event] = []
        for path in self._watched_paths:
            self._report(path, until, out)
        for state in self._ordered:
            if state.next_quote_t <= until or state.next_trade_t <= until:
                self._run_contract(state, until, out)
        out.sort(key=_by_time)  # stable: equal times keep the fixed instrument order
        self.now = max(self.now, until)
        for path in self._paths.values():
            path.forget_before(self.now)
        return out

    def _run_contract(self, state: _ContractState, until: float, out: list[Event]) -> None:
        """All of one contract's quotes and trades up to `until`, in one local-variable loop.

        This is the market's hot path; it trades some elegance for speed (table lookups instead
        of draws, the underlying's grid read inline)."""
        append = out.append
        rng = state.rng
        random_ = rng.random
        getrandbits = rng.getrandbits
        log = math.log
        floor, ceil = math.floor, math.ceil
        path = state.path
        price_at, prices, inv_step = path.price_at, path.prices, 1.0 / path.step
        base = path.base
        start_ns = self._start_ns
        scale = self._rate_scale
        inv_q, inv_t = state.inv_quote_rate * scale, state.inv_trade_rate * scale
        tq, tt = state.next_quote_t, state.next_trade_t
        always_open = self.settings.always_open or state.crypto
        contract, crypto, digits = state.contract, state.crypto, state.digits
        base_tick = state.tick
        cents_per_tick = 0 if crypto else round(base_tick * 100)
        coarse = not (crypto or state.penny)  # 0.05 ticks from $3 up
        consecutive = self.settings.consecutive_sequences
        sequence = state.sequence
        last_quote = state.last_quote
        extras, cents, half_spread = _QUOTE_EXTRAS, _CENTS, _HALF_SPREAD
        while True:
            t = tq if tq <= tt else tt
            if t > until:
                break
            if not always_open and not self._is_open(path.kind, t):
                resume = self._next_open(path.kind, t)
                tq = resume + random_() * inv_q
                tt = resume + random_() * inv_t
                continue
            ts_ns = start_ns + int(t * _NS + 0.5)
            bits = getrandbits(32)
            sequence += 1 if consecutive else _SEQUENCE_STEPS[bits >> 28]
            if tq <= tt:
                # -- a quote change ---------------------------------------------------------
                i = int(t * inv_step) - base
                price = prices[i] if i < len(prices) else price_at(t)
                mark = state.mark
                move = price - mark.underlying_price
                if move == 0.0 and t - state.value_t < _REVALUE_AFTER:
                    value = mark.value
                elif (
                    t - state.value_t > _REVALUE_AFTER
                    or abs(move) > _REVALUE_MOVE * mark.underlying_price
                ):
                    value = self._revalue(state, t, ts_ns, price)
                else:  # delta-gamma step from the last full valuation
                    usd = mark.value * mark.underlying_price if crypto else mark.value
                    usd += state.delta * move + 0.5 * state.gamma * move * move
                    value = usd / price if crypto else usd
                    if value < 0.0:
                        value = 0.0
                bid_size, ask_size, bid_x, ask_x, jitter = extras[bits & 0xFFFF]
                if coarse and value >= 3.0:
                    tick, step_cents = 0.05, 5
                else:
                    tick, step_cents = base_tick, cents_per_tick
                half = value * half_spread[(bits >> 16) & 255]
                if half < tick:
                    half = tick
                bid_n = floor((value - half) / tick)
                ask_n = ceil((value + half) / tick)
                if jitter:  # one side steps away for a moment
                    if jitter == 1:
                        bid_n -= 1
                    else:
                        ask_n += 1
                if bid_n <= 0:
                    bid_n = 0
                    bid_size = 0
                if ask_n <= bid_n:
                    ask_n = bid_n + 1
                if state.exchange:
                    bid_x = ask_x = state.exchange
                if crypto:
                    bid, ask = round(bid_n * tick, digits), round(ask_n * tick, digits)
                elif ask_n * step_cents <= 200_000:
                    bid, ask = cents[bid_n * step_cents], cents[ask_n * step_cents]
                else:
                    bid, ask = round(bid_n * tick, 2), round(ask_n * tick, 2)
                last_quote = _new(
                    OptionQuote,
                    (ts_ns, contract, bid, ask, bid_size, ask_size, bid_x, ask_x, sequence),
                )
                append(last_quote)
                tq = t - log(1.0 - random_()) * inv_q
            else:
                # -- a trade, against the standing quote -------------------------------------
                tt = t - log(1.0 - random_()) * inv_t
                if last_quote is None:
                    continue
                bid, ask = last_quote[2], last_quote[3]
                side = bits & 255
                if side < 108 and bid > 0:
                    trade_price = bid
                elif side < 216 or bid <= 0:
                    trade_price = ask
                else:  # between the quotes, on a tick
                    tick = 0.05 if coarse and ask >= 3.0 else base_tick
                    steps = round((ask - bid) / tick) - 1
                    trade_price = (
                        round(bid + tick * (1 + ((bits >> 8) & 0xFF) % steps), digits)
                        if steps > 0
                        else ask
                    )
                size = _SIZE_TABLE[(bits >> 16) & 255] // 4 + 1
                if (bits >> 24) & 15 == 0 and side & 1:
                    size *= 50  # a block
                exchange = state.exchange or _EXCHANGE_TABLE[(bits >> 9) & 127]
                append(
                    _new(
                        OptionTrade,
                        (
                            ts_ns,
                            contract,
                            trade_price,
                            size,
                            exchange,
                            (_CONDITION_TABLE[(bits >> 1) & 127],),
                            sequence,
                        ),
                    )
                )
        state.next_quote_t, state.next_trade_t = tq, tt
        state.sequence = sequence
        state.last_quote = last_quote

    # -- pieces -----------------------------------------------------------------------------------

    def _report(self, path: _UnderlyingPath, until: float, out: list[Event]) -> None:
        """Grid points up to `until` where the price changed become reports; none on the first
        point after a close (indices print 09:30:01, not 09:30:00)."""
        step = path.step
        last_k = int(until / step)
        for k in range(path.reported_k + 1, last_k + 1):
            t = k * step
            price = path.price_at(t)
            if price == path.last_report:
                continue
            if not self._is_open(path.kind, t) or not self._is_open(path.kind, t - step):
                path.last_report = price
                continue
            ts_ns = self._start_ns + round(t * _NS)
            if path.kind is Kind.INDEX:
                out.append(IndexPrice(ts_ns, path.info.root, price))
            else:
                out.append(UnderlyingTick(ts_ns, path.info.root, price))
            path.last_report = price
        path.reported_k = max(path.reported_k, last_k)

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
        window = self._open_cache.get(kind)
        if window is not None and window[0] <= t < window[1]:
            return True
        ts_ns = self._start_ns + round(t * _NS)
        if not self.hours.is_open(kind, ts_ns):
            return False
        local = dt.datetime.fromtimestamp(ts_ns / _NS, EASTERN)
        opened = local.replace(hour=9, minute=30, second=0, microsecond=0)
        close = local.replace(hour=16, minute=0, second=0, microsecond=0)
        self._open_cache[kind] = (self.clock.t_of(unix_ns(opened)), self.clock.t_of(unix_ns(close)))
        return True

    def _next_open(self, kind: Kind, t: float) -> float:
        ts_ns = self._start_ns + round(t * _NS)
        return self.clock.t_of(self.hours.next_open_ns(kind, ts_ns))

    def _revalue(self, state: _ContractState, t: float, ts_ns: int, price: float) -> float:
        """Full valuation on the smile; delta and gamma kept for the cheap steps in between."""
        c = state.contract
        end = state.zombie_end_ns or state.expiry_ns
        years = max((end - ts_ns) / _YEAR_NS, _MIN_YEARS)
        vol = pricing.smile_vol(state.path.info.vol, price, c.strike, years)
        value, delta, gamma = pricing.black76_value_delta_gamma(
            price, c.strike, years, vol, c.is_call
        )
        if state.crypto:  # Deribit quotes the premium as a fraction of the underlying
            value /= price
        state.mark = Mark(price, vol, years, value)
        state.delta, state.gamma = delta, gamma
        state.value_t = t
        return value

    def _set_rates(self, state: _ContractState) -> None:
        """Quote and trade intensity: near-the-money contracts are far busier than the wings."""
        mark = state.mark
        sd = max(mark.vol * math.sqrt(max(mark.years, 1.0 / 365)), 1e-3)
        x = math.log(state.contract.strike / mark.underlying_price) / sd
        near = math.exp(-0.5 * x * x)
        quote_rate, trade_rate = 0.1 + 1.4 * near, 0.004 + 0.06 * near
        state.inv_quote_rate = 1.0 / quote_rate
        state.inv_trade_rate = 1.0 / trade_rate
        self._natural_rate += quote_rate + trade_rate
        if self.settings.total_rate:
            self._rate_scale = self._natural_rate / self.settings.total_rate


def expiry_instant_ns(contract: OptionContract) -> int:
    """When a contract stops trading: 16:00 ET for US options, 08:00 UTC for Deribit-style ones."""
    if underlying(contract.root).kind is Kind.CRYPTO:
        moment = dt.datetime.combine(contract.expiration, dt.time(8, 0), tzinfo=UTC)
    else:
        moment = dt.datetime.combine(contract.expiration, dt.time(16, 0), tzinfo=EASTERN)
    return unix_ns(moment)
