"""What the five options streams say about an instrument, Deribit-style, built from the simulated
market: the order book (the market's best bid and offer plus seeded deeper levels), the mark and
its Black-76 greeks, 24-hour stats, open interest, trades and one-minute bars.

`Instrument` is server-wide (one per contract, shared by every connection) so two connections
asking about the same instrument at the same instant read the same numbers; the market's events
reach it through each subscribed session and are applied once, by their per-contract sequence.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from mocks.amberdata import invented
from mocks.amberdata.wire import (
    Greeks,
    Level,
    Ohlcv,
    OpenInterest,
    OrderSnapshot,
    Stats,
    Ticker,
    Trade,
)
from mocks.sim import pricing
from mocks.sim.contracts import OptionContract
from mocks.sim.events import OptionQuote, OptionTrade
from mocks.sim.market import Mark, expiry_instant_ns
from mocks.sim.rng import derive_rng, derive_seed

TICK = 0.0005  # premium step, in BTC (fraction of the underlying)
_NS = 1_000_000_000
_MS = 1_000_000
_YEAR_NS = 365.0 * 86_400 * _NS
_RECENT_TRADES = 256  # trade facts kept for sessions that see a trade after another one did


def ticks(price: float) -> int:
    return round(price / TICK)


# round(x, n) of a float is a correctly rounded decimal conversion, among the dearest steps of a
# book level: the prices and amounts a book draws are looked up, computed once at import.
_PRICES = tuple(round(n * TICK, 4) for n in range(4096))
_AMOUNTS = tuple(round(tenths / 10.0, 1) for tenths in range(1024))


def price_of(n: int) -> float:
    return _PRICES[n] if 0 <= n < 4096 else round(n * TICK, 4)


def amount_of(tenths: int) -> float:
    """Deribit amounts are in 0.1 contract; the market counts crypto sizes in tenths."""
    return _AMOUNTS[tenths] if 0 <= tenths < 1024 else round(tenths / 10.0, 1)


class Valuation(msgspec.Struct, frozen=True):
    """The snapshot's pricing fields, computed from the values as printed, so that a client can
    reproduce the greeks from `underlyingPrice`, `markIv`, the strike and the time to expiry.
    (A msgspec Struct for its cheap constructor: every snapshot and ticker makes one.)"""

    underlying_price: float
    mark_iv: float  # percent
    years: float
    mark_price: float
    greeks: Greeks
    index_price: float


def valuation(contract: OptionContract, mark: Mark, ts_ns: int, expiry_ns: int) -> Valuation:
    """`expiry_ns`: `expiry_instant_ns(contract)` (the instrument keeps it)."""
    forward = round(mark.underlying_price, 2)
    mark_iv = round(mark.vol * 100.0, 2)
    sigma = mark_iv / 100.0
    until_expiry = (expiry_ns - ts_ns) / _YEAR_NS
    # A contract the market keeps alive past its real expiry (a "zombie") has the market's own T.
    years = until_expiry if until_expiry > 0 else mark.years
    value, delta, gamma, vega, theta, rho = pricing.black76_value_greeks(
        forward, contract.strike, years, sigma, contract.is_call
    )
    greeks = Greeks(
        vega=round(vega, 5),
        theta=round(theta, 5),
        rho=round(rho, 5),
        gamma=round(gamma, 5),
        delta=round(delta, 5),
    )
    index = round(invented.index_price(forward, years), 2)
    return Valuation(forward, mark_iv, years, round(value / forward, 7), greeks, index)


def implied_vol_percent(
    price: float | None, contract: OptionContract, v: Valuation
) -> float | None:
    if price is None or price <= 0.0:
        return None
    f = v.underlying_price
    sigma = pricing.implied_vol(price * f, f, contract.strike, v.years, contract.is_call)
    return round(sigma * 100.0, 2)


def quote_ivs(
    bid: float | None, ask: float | None, contract: OptionContract, v: Valuation
) -> tuple[float | None, float | None]:
    """`implied_vol_percent` of the bid and of the ask, the same numbers, in one pass
    (`pricing.implied_vol_percents`: the work they share is done once, and Newton starts from the
    mark's volatility, which the market quotes them around)."""
    f = v.underlying_price
    has_bid = bid is not None and not bid <= 0.0  # implied_vol_percent's None cases
    has_ask = ask is not None and not ask <= 0.0
    prices = []
    if bid is not None and has_bid:
        prices.append(bid * f)
    if ask is not None and has_ask:
        prices.append(ask * f)
    if not prices:
        return None, None
    vols = pricing.implied_vol_percents(
        prices, f, contract.strike, v.years, contract.is_call, v.mark_iv / 100.0
    )
    return (vols[0] if has_bid else None), (vols[-1] if has_ask else None)


class Pricing(msgspec.Struct, frozen=True):
    """What a snapshot or ticker prices from the mark, the instant and the best bid and ask, with
    the exchange's IV scale applied; kept by the instrument for the next render of the same inputs
    (the snapshot and the ticker of one instant, every connection subscribed to it)."""

    v: Valuation
    bid_iv: float | None
    ask_iv: float | None
    min_price: float
    max_price: float


PricingKey = tuple[int, float, float, float, float | None, float | None, float]


def price_snapshot(
    contract: OptionContract,
    mark: Mark,
    ts_ns: int,
    expiry_ns: int,
    bid: float | None,
    ask: float | None,
    scale: float,
) -> Pricing:
    v = valuation(contract, mark, ts_ns, expiry_ns)
    bid_iv, ask_iv = quote_ivs(bid, ask, contract, v)
    low, high = invented.price_band(v.mark_price, TICK)
    if scale != 1.0:  # (at 1.0, rounding a hundredth to four places gives it back unchanged)
        v = Valuation(
            v.underlying_price,
            round(v.mark_iv * scale, 4),
            v.years,
            v.mark_price,
            v.greeks,
            v.index_price,
        )
        bid_iv = None if bid_iv is None else round(bid_iv * scale, 4)
        ask_iv = None if ask_iv is None else round(ask_iv * scale, 4)
    return Pricing(v=v, bid_iv=bid_iv, ask_iv=ask_iv, min_price=low, max_price=high)


@dataclass(frozen=True, slots=True)
class TradeFacts:
    """What a trade message says beyond the market's event, fixed once for every connection."""

    is_buy_side: bool
    tick_direction: int
    trade_id: str


@dataclass(slots=True)
class Bar:
    """One minute of trades, for `market:options:ohlcv`."""

    start_ns: int
    open: float
    high: float
    low: float
    close: float
    volume_tenths: int

    def add(self, price: float, size: int) -> None:
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.volume_tenths += size


def minute_of(ts_ns: int) -> int:
    step = invented.OHLCV_BAR_SECONDS * _NS
    return ts_ns - ts_ns % step


class Instrument:
    """One contract's exchange-side state: what it has traded, its open interest, its book."""

    def __init__(self, contract: OptionContract, seed: int, created_ns: int) -> None:
        self.contract = contract
        self.seed = seed
        key = contract.key  # formatted once: it names every generator the instrument draws from
        # Fixed for the contract's life; every snapshot prints or uses them.
        self.expiry_ns = expiry_instant_ns(contract)
        self.underlying_index = invented.underlying_index(contract)
        self._rng = derive_rng(seed, f"amberdata:instrument:{key}")
        self.trade_id_base = derive_seed(seed, f"amberdata:trade-id:{key}") % (
            invented.TRADE_ID_SPAN
        )
        self._book_name = f"amberdata:book:{key}:"
        self._oi_name = f"amberdata:oi:{key}:"
        self._book_rng = random.Random()  # reseeded per quote: derive_rng without the allocation
        self.last_quote: OptionQuote | None = None
        self.last_event_sequence = 0
        self.last_event_ns = created_ns
        self.primed = False
        # The 24 hours before the run, drawn when the first mark is known (`prime`).
        self.open_24h = 0.0
        self.high = 0.0
        self.low = 0.0
        self.last_price: float | None = None
        self.volume_tenths = 0
        self.volume_usd = 0.0
        self.settlement_price = 0.0
        self.open_interest_tenths = 0
        self._last_tick_direction = invented.ZERO_PLUS
        self._facts: dict[int, TradeFacts] = {}
        self._book: tuple[int, list[Level], list[Level]] | None = None
        self._stats: Stats | None = None  # until the day's stats move (prime, a trade)
        self._pricing: tuple[PricingKey, Pricing] | None = None  # the last one rendered

    def prime(self, mark: Mark) -> None:
        """Seed the day before the run from the first valuation; idempotent."""
        if self.primed:
            return
        self.primed = True
        self._stats = None
        rng = self._rng
        value = max(mark.value, TICK)
        self.open_24h = price_of(max(1, ticks(value * math.exp(rng.gauss(0.0, 0.25)))))
        self.last_price = price_of(max(1, ticks(value * math.exp(rng.gauss(0.0, 0.05)))))
        self.high = max(self.open_24h, self.last_price) + TICK * rng.randrange(0, 4)
        self.low = max(TICK, min(self.open_24h, self.last_price) - TICK * rng.randrange(0, 4))
        self.high, self.low = round(self.high, 4), round(self.low, 4)
        self.volume_tenths = int(rng.expovariate(1.0 / 150.0))
        self.volume_usd = round(self.volume_tenths / 10.0 * value * mark.underlying_price, 2)
        self.settlement_price = round(value * math.exp(rng.gauss(0.0, 0.08)), 7)
        self.open_interest_tenths = int(rng.expovariate(1.0 / 2500.0))

    # -- the market's events, applied once whichever session brings them -------------------------

    def apply_quote(self, quote: OptionQuote) -> None:
        if quote.sequence <= self.last_event_sequence:
            return
        self.last_event_sequence = quote.sequence
        self.last_event_ns = quote.ts_ns
        self.last_quote = quote

    def apply_trade(self, trade: OptionTrade, mark: Mark | None) -> TradeFacts:
        known = self._facts.get(trade.sequence)
        if known is not None:
            return known
        if trade.sequence <= self.last_event_sequence:
            # Older than anything kept: a late, unseen trade; describe it without changing state.
            return TradeFacts(True, invented.ZERO_PLUS, str(self.trade_id_base + trade.sequence))
        if mark is not None:
            self.prime(mark)
        self.last_event_sequence = trade.sequence
        self.last_event_ns = trade.ts_ns
        quote = self.last_quote
        if quote is None or trade.price >= quote.ask:
            buy = True
        elif trade.price <= quote.bid:
            buy = False
        else:
            buy = trade.price >= (quote.bid + quote.ask) / 2.0
        last = self.last_price
        if last is None or trade.price == last:
            direction = (
                invented.ZERO_PLUS
                if self._last_tick_direction in (invented.PLUS, invented.ZERO_PLUS)
                else invented.ZERO_MINUS
            )
        else:
            direction = invented.PLUS if trade.price > last else invented.MINUS
        self._last_tick_direction = direction
        facts = TradeFacts(buy, direction, str(self.trade_id_base + trade.sequence))
        self._facts[trade.sequence] = facts
        if len(self._facts) > _RECENT_TRADES:
            del self._facts[next(iter(self._facts))]
        # The day's stats and open interest move with the trade.
        self._stats = None
        self.last_price = trade.price
        self.high = max(self.high, trade.price)
        self.low = min(self.low, trade.price) if self.low > 0 else trade.price
        self.volume_tenths += trade.size
        forward = mark.underlying_price if mark is not None else 0.0
        self.volume_usd = round(self.volume_usd + trade.size / 10.0 * trade.price * forward, 2)
        oi_rng = derive_rng(self.seed, f"{self._oi_name}{trade.sequence}")
        if oi_rng.random() < 0.55:
            self.open_interest_tenths += trade.size
        else:
            self.open_interest_tenths = max(0, self.open_interest_tenths - trade.size)
        return facts

    # -- derived fields --------------------------------------------------------------------------

    def sequence(self, ts_ns: int) -> int:
        """Moves with every book change or trade, and by one per millisecond in between."""
        since_ms = max(0, (ts_ns - self.last_event_ns) // _MS)
        per_event = invented.SEQUENCE_PER_EVENT
        return (
            invented.SEQUENCE_BASE
            + self.last_event_sequence * per_event
            + min(since_ms, per_event - 1)
        )

    def stats(self) -> Stats:
        stats = self._stats
        if stats is None:
            stats = self._stats = self._day_stats()
        return stats

    def pricing(
        self,
        mark: Mark,
        ts_ns: int,
        bid: float | None,
        ask: float | None,
        scale: float,
    ) -> Pricing:
        """`price_snapshot` of these inputs, or the last one again when they are the same."""
        key = (ts_ns, mark.underlying_price, mark.vol, mark.years, bid, ask, scale)
        cached = self._pricing
        if cached is not None and cached[0] == key:
            return cached[1]
        priced = price_snapshot(self.contract, mark, ts_ns, self.expiry_ns, bid, ask, scale)
        self._pricing = (key, priced)
        return priced

    def _day_stats(self) -> Stats:
        price_change = (
            round((self.last_price / self.open_24h - 1.0) * 100.0, 4)
            if self.last_price is not None and self.open_24h > 0
            else None
        )
        return Stats(
            volume_usd=self.volume_usd,
            volume=amount_of(self.volume_tenths),
            price_change=price_change,
            low=self.low or None,
            high=self.high or None,
        )

    def book(self) -> tuple[list[Level], list[Level]]:
        """Bids and asks: the market's best levels, then deeper ones drawn from a generator seeded
        by the quote, so every snapshot of the same quote shows the same book."""
        quote = self.last_quote
        if quote is None:
            return [], []
        cached = self._book
        if cached is not None and cached[0] == quote.sequence:
            return cached[1], cached[2]
        # derive_rng(seed, name), reusing one generator: seeding is what makes a Random.
        rng = self._book_rng
        rng.seed(derive_seed(self.seed, f"{self._book_name}{quote.sequence}"))
        bits, uniform = rng.getrandbits, rng.random
        bids: list[Level] = []
        if quote.bid > 0 and quote.bid_size > 0:
            bids.append((quote.bid, amount_of(quote.bid_size)))
            n = ticks(quote.bid)
            for depth in range(_below(bits, invented.BOOK_DEPTH)):  # randrange(0, BOOK_DEPTH)
                n -= _step(bits) * (1 + depth // 3)
                if n < 1:
                    break
                bids.append((price_of(n), _level_amount(bits, uniform)))
        asks: list[Level] = [(quote.ask, amount_of(max(1, quote.ask_size)))]
        n = ticks(quote.ask)
        for depth in range(1 + _below(bits, invented.BOOK_DEPTH - 1)):  # randrange(1, BOOK_DEPTH)
            n += _step(bits) * (1 + depth // 2)
            asks.append((price_of(n), _level_amount(bits, uniform)))
        self._book = (quote.sequence, bids, asks)
        return bids, asks


# The book's draws, written on `getrandbits` and `random` the way `random.Random` makes them
# (Python 3.11's `_randbelow_with_getrandbits`, `choice`, `randrange`, `paretovariate`), so the
# books are the ones those methods drew, at a third of the cost of their Python-level layers.
Bits = Callable[[int], int]
_STEPS = (1, 1, 2, 3, 4)  # ticks between levels, before the depth's widening
_PARETO_EXPONENT = -1.0 / 1.1  # paretovariate(1.1)


def _below(bits: Bits, n: int) -> int:
    """randrange(n): a uniform integer in [0, n), by rejection."""
    k = n.bit_length()
    r = bits(k)
    while r >= n:
        r = bits(k)
    return r


def _step(bits: Bits) -> int:
    """choice(_STEPS)."""
    r = bits(3)
    while r >= 5:
        r = bits(3)
    return _STEPS[r]


def _level_amount(bits: Bits, uniform: Callable[[], float]) -> float:
    """A deeper level's amount: mostly a few tenths, now and then a wall of tens of contracts (as
    in the vendor's sample). Always under 1,000 tenths, so `_AMOUNTS` has it."""
    if uniform() < 0.08:
        return _AMOUNTS[100 + _below(bits, 900)]  # randrange(100, 1000)
    return _AMOUNTS[1 + int((1.0 - uniform()) ** _PARETO_EXPONENT) % 400]


# -- rendering -------------------------------------------------------------------------------------


def ms_and_ns(ts_ns: int) -> tuple[int, int]:
    """Amberdata splits a timestamp into milliseconds and the nanoseconds below them."""
    return ts_ns // _MS, ts_ns % _MS


class MarketFields(msgspec.Struct, frozen=True):
    """The fields snapshots and tickers share, computed once per render."""

    exchange: str
    instrument: str
    timestamp: int
    exchange_timestamp: int
    exchange_timestamp_ns: int
    v: Valuation
    stats: Stats
    state: str
    open_interest: float
    min_price: float
    max_price: float
    last_price: float | None
    underlying_index: str
    bid: Level | None
    ask: Level | None
    bid_iv: float | None
    ask_iv: float | None
    sequence: int


def market_fields(
    inst: Instrument, mark: Mark, exchange: str, instrument: str, ts_ns: int, sequence: int
) -> MarketFields:
    inst.prime(mark)
    quote = inst.last_quote
    bid: Level | None = None
    ask: Level | None = None
    if quote is not None:
        if quote.bid > 0 and quote.bid_size > 0:
            bid = (quote.bid, amount_of(quote.bid_size))
        ask = (quote.ask, amount_of(max(1, quote.ask_size)))
    scale = invented.IV_SCALE[exchange] / 100.0
    p = inst.pricing(mark, ts_ns, bid[0] if bid else None, ask[0] if ask else None, scale)
    exchange_ms, exchange_ns = ms_and_ns(min(inst.last_event_ns, ts_ns))
    return MarketFields(
        exchange=exchange,
        instrument=instrument,
        timestamp=ts_ns // _MS,
        exchange_timestamp=exchange_ms,
        exchange_timestamp_ns=exchange_ns,
        v=p.v,
        stats=inst.stats(),
        state="open",
        open_interest=amount_of(inst.open_interest_tenths),
        min_price=p.min_price,
        max_price=p.max_price,
        last_price=inst.last_price,
        underlying_index=inst.underlying_index,
        bid=bid,
        ask=ask,
        bid_iv=p.bid_iv,
        ask_iv=p.ask_iv,
        sequence=sequence,
    )


def order_snapshot(inst: Instrument, m: MarketFields) -> OrderSnapshot:
    bids, asks = inst.book()
    return OrderSnapshot(
        exchange=m.exchange,
        instrument=m.instrument,
        timestamp=m.timestamp,
        exchangeTimestamp=m.exchange_timestamp,
        exchangeTimestampNanoseconds=m.exchange_timestamp_ns,
        underlyingPrice=m.v.underlying_price,
        underlyingIndex=m.underlying_index,
        stats=m.stats,
        state=m.state,
        openInterest=m.open_interest,
        minPrice=m.min_price,
        maxPrice=m.max_price,
        markPrice=m.v.mark_price,
        markIv=m.v.mark_iv,
        lastPrice=m.last_price,
        interestRate=invented.INTEREST_RATE,
        indexPrice=m.v.index_price,
        greeks=m.v.greeks,
        estimatedDeliveryPrice=m.v.index_price,
        bids=bids,
        bidIv=m.bid_iv,
        bestBidPrice=m.bid[0] if m.bid else None,
        bestBidAmount=m.bid[1] if m.bid else None,
        bestAskPrice=m.ask[0] if m.ask else None,
        bestAskAmount=m.ask[1] if m.ask else None,
        asks=asks,
        askIv=m.ask_iv,
        sequence=m.sequence,
        metadata=None,
    )


def ticker(inst: Instrument, m: MarketFields) -> Ticker:
    bid = m.bid[0] if m.bid else None
    ask = m.ask[0] if m.ask else None
    mid = round((bid + ask) / 2.0, 5) if bid is not None and ask is not None else None
    # Quote volume: the day's premium turnover in the premium currency (BTC).
    quote_volume = (
        round(m.stats.volume * (m.last_price or 0.0), 6) if m.stats.volume is not None else None
    )
    return Ticker(
        exchange=m.exchange,
        instrument=m.instrument,
        timestamp=m.timestamp,
        exchangeTimestamp=m.exchange_timestamp,
        exchangeTimestampNanoseconds=m.exchange_timestamp_ns,
        bid=bid,
        ask=ask,
        mid=mid,
        last=m.last_price,
        bidVolume=m.bid[1] if m.bid else None,
        askVolume=m.ask[1] if m.ask else None,
        baseVolume=m.stats.volume,
        quoteVolume=quote_volume,
        settlementPrice=inst.settlement_price,
        underlyingPrice=m.v.underlying_price,
        underlyingIndex=m.underlying_index,
        stats=m.stats,
        state=m.state,
        openInterest=m.open_interest,
        minPrice=m.min_price,
        maxPrice=m.max_price,
        markPrice=m.v.mark_price,
        markIv=m.v.mark_iv,
        lastPrice=m.last_price,
        interestRate=invented.INTEREST_RATE,
        indexPrice=m.v.index_price,
        greeks=m.v.greeks,
        estimatedDeliveryPrice=m.v.index_price,
        bidIv=m.bid_iv,
        bestBidPrice=bid,
        bestBidAmount=m.bid[1] if m.bid else None,
        bestAskPrice=ask,
        bestAskAmount=m.ask[1] if m.ask else None,
        askIv=m.ask_iv,
        sequence=m.sequence,
        metadata=None,
    )


def trade(
    inst: Instrument,
    event: OptionTrade,
    facts: TradeFacts,
    mark: Mark | None,
    exchange: str,
    instrument: str,
) -> Trade:
    ms, ns = ms_and_ns(event.ts_ns)
    mark_price: float | None = None
    iv: float | None = None
    index: float | None = None
    if mark is not None:
        v = valuation(inst.contract, mark, event.ts_ns, inst.expiry_ns)
        mark_price, index = v.mark_price, v.index_price
        trade_iv = implied_vol_percent(event.price, inst.contract, v)
        if trade_iv is not None:
            iv = round(trade_iv * invented.IV_SCALE[exchange] / 100.0, 4)
    return Trade(
        instrument=instrument,
        exchange=exchange,
        exchangeTimestamp=ms,
        exchangeTimestampNanoseconds=ns,
        isBuySide=facts.is_buy_side,
        price=event.price,
        size=amount_of(event.size),
        tradeId=facts.trade_id,
        tradeSequence=event.sequence,
        tickDirection=facts.tick_direction,
        markPrice=mark_price,
        iv=iv,
        indexPrice=index,
    )


def ohlcv(bar: Bar, exchange: str, instrument: str) -> Ohlcv:
    return Ohlcv(
        exchange=exchange,
        instrument=instrument,
        timestamp=bar.start_ns // _MS,
        open=bar.open,
        high=bar.high,
        low=bar.low,
        close=bar.close,
        volume=amount_of(bar.volume_tenths),
    )


def open_interest(inst: Instrument, exchange: str, instrument: str, ts_ns: int) -> OpenInterest:
    return OpenInterest(
        instrument=instrument,
        exchange=exchange,
        timestamp=ts_ns // _MS,
        value=amount_of(inst.open_interest_tenths),
    )
