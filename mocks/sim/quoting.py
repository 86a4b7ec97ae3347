"""One watched contract's quotes and trades: the market's hot path.

A `ContractProcess` is a pair of Poisson processes (quote changes, trades) whose intensity the
market sets. Quotes sit around a Black-Scholes / Black-76 value on a skewed smile (revalued in
full now and then, delta-gamma stepped in between), with the exchanges' tick rules, sizes and
venues; trades print at the bid, the ask or between. Its stream is a pure function of its random
words, addressed by block number, and of the underlying's grid, so `run` can stop and resume at
any time and gives the same events as one uninterrupted run. The scheduler that calls it, merges
every instrument and handles market hours and rate changes is `mocks.sim.market`.
"""

from __future__ import annotations

import math
import random
import sys
from array import array
from collections.abc import Iterator
from itertools import islice

from mocks.sim import pricing
from mocks.sim.contracts import Kind, OptionContract
from mocks.sim.events import Event, OptionQuote, OptionTrade
from mocks.sim.exchanges import (
    DEFAULT_CRYPTO_EXCHANGE,
    SINGLE_LISTED,
    TRADE_CONDITIONS,
    US_OPTIONS_MICS,
    US_OPTIONS_WEIGHTS,
)
from mocks.sim.paths import NS, UnderlyingPath
from mocks.sim.rng import derive_seed

_YEAR_NS = 365.0 * 86_400 * NS
_MIN_YEARS = 900.0 / (365 * 86_400)  # a contract past expiry keeps a quarter hour of life
# Full valuations while the underlying barely moves: often enough that time decay since the last
# one stays below a rounding error (a thousandth of the remaining life), within these bounds.
_REVALUE_MIN_NS = 20.0 * NS
_REVALUE_MAX_NS = 300.0 * NS
_REVALUE_MOVE = 0.005  # ... or once it moved this fraction since the last one

QUOTE_BLOCK = 1024  # quotes per block of random words
TRADE_BLOCK = 64  # trades per block

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
SideTable = list[tuple[int, str, bool]]


def _side_table(salt: int, venue: str = "") -> SideTable:
    """(size, venue, ticks stepped away) for each value of one random byte: one side of a quote.

    The size is the byte's quantile of the size distribution; venue and step-away come from a
    hash of it. A side steps one tick away from the value-based price one time in eight."""
    table = []
    for b in range(256):
        h = (b * 2654435761 + salt) & 0xFFFFFFFF
        away = (h >> 20) & 7 == 0
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
SEQUENCE_STEPS = (1,) * 10 + (2,) * 3 + (3, 4, 6)  # indexed by 4 random bits
CONSECUTIVE_STEPS = (1,) * 16
SpreadTable = list[tuple[float, int]]


def spread_table(steps: tuple[int, ...]) -> SpreadTable:
    """(half-spread as a fraction of the value, sequence increment) for each random byte."""
    return [(0.012 + 0.02 * (b & 15) / 15.0, steps[b >> 4]) for b in range(256)]


# Unit exponential inter-arrival times by the top 12 of 16 random bits: 4096 quantiles; the tail
# is cut at 9 means. The hot loop looks them up by the high byte, then the next four bits
# (`_EXP_ROWS[hi][lo >> 4]`): the draws stay bytes (16-bit words made an int object per quote)
# and the tables stay small (a 65536-entry one fell out of the CPU cache).
_EXP_LEVELS = [-math.log(1.0 - (i + 0.5) / 4096) for i in range(4096)]
_EXP_ROWS = [_EXP_LEVELS[hi * 16 : hi * 16 + 16] for hi in range(256)]
_HIGH_NIBBLE = bytes(b >> 4 for b in range(256))  # a `bytes.translate` table
# Prices on a tick, already rounded (a lookup is cheaper than round()): index n -> n ticks.
# (n / 100 is the float nearest n cents, which is what round(n / 100, 2) gives, at a tenth of
# the cost: the table was most of the import time of every `feedlab` command.)
_CENTS = [n / 100 for n in range(200_001)]
_NICKELS = _CENTS[::5]
_CRYPTO_TICKS = [round(n * 0.0005, 4) for n in range(4_001)]  # Deribit, fractions of F below 2
_new = tuple.__new__


QuoteWords = Iterator[tuple[int, int, int, int, int]]


def _quote_words(seed: int, name: str, block: int) -> QuoteWords:
    """Block `block` of a contract's quote draws: (bid byte, ask byte, spread byte, gap), the gap
    a little-endian 16-bit word of which the top 12 bits count, as (high byte, next 4 bits).

    Blocks are addressed by number, from their own `random.Random` derived from (seed, contract,
    block), so generation can restart at any quote without having saved a generator's state.
    Every value is a byte, so iterating makes no objects (small ints are cached)."""
    rng = random.Random(derive_seed(seed, f"{name}:quotes:{block}"))
    raw = rng.randbytes(3 * QUOTE_BLOCK)
    gaps = rng.randbytes(2 * QUOTE_BLOCK)
    return zip(
        raw[0::3], raw[1::3], raw[2::3], gaps[1::2], gaps[0::2].translate(_HIGH_NIBBLE), strict=True
    )


def _trade_words(seed: int, name: str, block: int) -> list[int]:
    """Block `block` of a contract's trade draws, 64 random bits each."""
    words = array(
        "Q", random.Random(derive_seed(seed, f"{name}:trades:{block}")).randbytes(8 * TRADE_BLOCK)
    )
    if sys.byteorder == "big":
        words.byteswap()
    return words.tolist()


# Inputs and result of a valuation, as in `market.Mark`: underlying price, vol, years, value.
# (Plain tuples while generating; `MarketSim.mark` makes the `Mark` when asked.)
Valuation = tuple[float, float, float, float]
# A contract's generator state where its last run began: gen, tq, tt, qn, tn, sequence, valuation,
# delta, gamma, revalue_at, number of marks, standing quote, inv_q, inv_t, changes_seen.
_Saved = tuple[
    int,
    float,
    float,
    int,
    int,
    int,
    Valuation,
    float,
    float,
    float,
    int,
    OptionQuote | None,
    float,
    float,
    int,
]


class ContractProcess:
    """One watched contract: its generator state, and what its last run made.

    Times here are float nanoseconds since the run's start; an event's `ts_ns` is the start's
    Unix time (`start_ns`) plus that, truncated."""

    __slots__ = (
        "after",
        "always_open",
        "ask_side",
        "bid_side",
        "born",
        "changes_seen",
        "coarse",
        "contract",
        "crypto",
        "delta",
        "events",
        "exchange",
        "expiry_ns",
        "gamma",
        "gen",
        "inv_q",
        "inv_t",
        "key_order",
        "kind",
        "mark_times",
        "marks",
        "name",
        "parked",
        "path",
        "qblock",
        "qn",
        "quote_rate",
        "qwords",
        "regime",
        "revalue_at",
        "saved",
        "seed",
        "sequence",
        "serial",
        "spreads",
        "standing",
        "start_ns",
        "stop_at",
        "tblock",
        "tblock_no",
        "times",
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
        path: UnderlyingPath,
        expiry_ns: int,
        zombie_end_ns: int,
        always_open: bool,
        seed: int,
        start_ns: int,
        spreads: SpreadTable,
    ) -> None:
        self.contract = contract
        self.name = f"contract:{contract.key}"
        self.key_order = key_order
        self.serial = 0  # the market's count of contracts when it was watched (a tie-break)
        self.path = path
        self.kind = path.kind
        self.crypto = path.kind is Kind.CRYPTO
        self.always_open = always_open or self.crypto
        self.expiry_ns = expiry_ns
        self.zombie_end_ns = zombie_end_ns  # non-zero: expired in real life, streams anyway
        self.seed = seed
        self.start_ns = start_ns
        self.spreads = spreads
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
        self.valuation: Valuation = (path.info.spot, path.info.vol, 0.0, 0.0)
        self.delta = 0.0
        self.gamma = 0.0
        self.revalue_at = -math.inf  # the next timed full valuation
        self.marks: list[Valuation] = []
        self.mark_times: list[float] = []
        self.quote_rate = 1.0
        self.trade_rate = 1.0
        self.inv_q = float(NS)  # mean gaps in ns at the current rate scale
        self.inv_t = float(NS)
        self.changes_seen = 0  # the market's count of rate changes made when it last ran
        self.tq = math.inf  # time of the next quote ...
        self.tt = math.inf  # ... and of the next trade
        self.qn = 0  # quote words used so far
        self.qblock = 0
        self.qwords: QuoteWords | None = None
        self.tn = 0  # trade words used so far
        self.tblock_no = -1
        self.tblock: list[int] = []
        self.trades_made = 0
        self.standing: OptionQuote | None = None  # the last quote generated
        self.events: list[Event] = []  # what its last run made, in order ...
        self.times: list[float] = []  # ... and their float times
        self.gen = 0  # events before this time (ns since the start) have been generated
        self.saved: _Saved | None = None
        # Nobody wants it, and its life ends at this time (ns since the start) unless it is
        # watched again before (`MarketSim.unwatch`): nothing is made past it. `parked`: all is
        # made up to there, and it waits out of the queue.
        self.stop_at: int | None = None
        self.parked = False
        # The life before this one (until its last sequence number is final), and where this
        # one began: its first run numbers on from the last one's last event.
        self.after: ContractProcess | None = None
        self.born = 0

    def snapshot(self) -> None:
        """Remember the generator state where a run begins (for a rate-change rollback)."""
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
            self.changes_seen,
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
            self.changes_seen,
        ) = self.saved
        del self.marks[n_marks:], self.mark_times[n_marks:]
        self.qwords = None

    def set_scale(self, scale: float) -> None:
        self.inv_q = NS / self.quote_rate * scale
        self.inv_t = NS / self.trade_rate * scale

    def run(self, end: int, events: list[Event], times: list[float]) -> None:
        """All of the contract's quotes and trades before `end`, appended to `events`
        (`times`: each event's float time).

        This is the market's hot path, one loop per quote; it trades some elegance for speed:
        random bytes index small tables, the underlying's grid is read inline, the value is
        recomputed only when the grid price or the revaluation clock says so, and trades
        (a few percent of events) are checked with one comparison per quote."""
        s = self
        if end <= s.gen:
            return
        s.gen = end
        end_f = float(end)
        tq = s.tq
        seq = s.sequence
        if s.tt < end_f and s.tt < tq:  # trades before this call's first quote
            seq = s._trades(tq if tq < end_f else end_f, seq, s.standing, events, times)
        if tq >= end_f:
            s.sequence = seq
            return
        append, tappend = events.append, times.append
        made0 = len(events) - s.trades_made
        start_ns = s.start_ns
        contract = s.contract
        new, quote_type, exp_rows = _new, OptionQuote, _EXP_ROWS
        bids, asks, spreads = s.bid_side, s.ask_side, s.spreads
        floor, ceil = math.floor, math.ceil
        inv_q = s.inv_q
        crypto, coarse = s.crypto, s.coarse
        path = s.path
        path.extend_to(end_f)
        prices, base = path.prices, path.base
        inv_step = 1.0 / path.step_ns
        m_price, _, _, m_value = s.valuation
        m_usd = m_value * m_price if crypto else m_value
        delta, half_gamma = s.delta, 0.5 * s.gamma
        limit = _REVALUE_MOVE * m_price
        neg_limit = -limit
        revalue_at = s.revalue_at
        base_regime = s.regime
        ptab, _, tick, inv_tick, digits = base_regime
        # The value (in ticks, `vt`) is a function of the grid price until the next full
        # valuation, so it is recomputed only when the price or the revaluation clock says so.
        vt_price = math.nan  # the grid price `vt` was computed at
        vt = 0.0
        nxt = s.tt if s.tt < end_f else end_f  # the next stop: a trade or the end
        words = s.qwords
        if words is None:
            s.qblock, used = divmod(s.qn, QUOTE_BLOCK)
            words = _quote_words(s.seed, s.name, s.qblock)
            if used:
                words = islice(words, used, None)
        q = s.standing
        while True:
            for b_bid, b_ask, b_spread, gap_hi, gap_lo in words:
                price = prices[floor(tq * inv_step - base)]  # exact: base is a whole number
                if price != vt_price or tq >= revalue_at:
                    vt_price = price
                    move = price - m_price
                    if tq >= revalue_at or move > limit or move < neg_limit:
                        m_price, m_value, m_usd, delta, gamma, revalue_at = s.revalue(tq, price)
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
                            ptab, tick, inv_tick = _NICKELS, 0.05, 20.0
                        else:
                            ptab, _, tick, inv_tick, digits = base_regime
                    vt = value * inv_tick
                bid_size, bid_x, bid_away = bids[b_bid]
                ask_size, ask_x, ask_away = asks[b_ask]
                half, step_seq = spreads[b_spread]
                half *= vt
                if half < 1.0:
                    half = 1.0
                # vt >= 0 and half >= 1, so ask_n > vt > bid_n: the quote is never locked.
                bid_n = floor(vt - half)
                ask_n = ceil(vt + half)
                if bid_away:
                    bid_n -= 1
                if ask_away:
                    ask_n += 1
                if bid_n <= 0:
                    bid_n = bid_size = 0
                try:
                    bid, ask = ptab[bid_n], ptab[ask_n]
                except IndexError:  # beyond the table (a premium of thousands)
                    bid, ask = round(bid_n * tick, digits), round(ask_n * tick, digits)
                seq += step_seq
                q = new(
                    quote_type,
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
                tq += exp_rows[gap_hi][gap_lo] * inv_q
                if tq >= nxt:
                    if s.tt < end_f:
                        seq = s._trades(tq if tq < end_f else end_f, seq, q, events, times)
                    if tq >= end_f:
                        break
                    nxt = s.tt if s.tt < end_f else end_f
            else:  # the block is used up: on to the next
                s.qblock += 1
                words = _quote_words(s.seed, s.name, s.qblock)
                continue
            break
        s.qn += len(events) - s.trades_made - made0
        s.qwords = words
        s.tq = tq
        s.sequence = seq
        s.standing = q

    def _trades(
        self,
        limit: float,
        seq: int,
        quote: OptionQuote | None,
        events: list[Event],
        times: list[float],
    ) -> int:
        """The contract's trades before `limit`, against the standing quote; returns the sequence.

        A trade before the contract's first quote has nothing to print against and is skipped."""
        s = self
        tt = s.tt
        start_ns = s.start_ns
        steps = s.spreads
        while tt < limit:
            i = s.tn
            block = i // TRADE_BLOCK
            if block != s.tblock_no:
                s.tblock = _trade_words(s.seed, s.name, block)
                s.tblock_no = block
            bits = s.tblock[i - block * TRADE_BLOCK]
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
                events.append(trade)
                times.append(tt)
                s.trades_made += 1
            tt += _EXP_LEVELS[bits >> 52] * s.inv_t
        s.tt = tt
        return seq

    def revalue(self, t: float, price: float) -> tuple[float, float, float, float, float, float]:
        """Full valuation on the smile at time `t` (ns since the start); delta and gamma are kept
        for the cheap steps in between. Returns (price, value, value in USD, delta, gamma, time of
        the next timed valuation)."""
        c = self.contract
        left = (self.zombie_end_ns or self.expiry_ns) - self.start_ns - t
        years = max(left / _YEAR_NS, _MIN_YEARS)
        vol = pricing.smile_vol(self.path.info.vol, price, c.strike, years)
        value, delta, gamma = pricing.black76_value_delta_gamma(
            price, c.strike, years, vol, c.is_call
        )
        usd = value
        if self.crypto:  # Deribit quotes the premium as a fraction of the underlying
            value /= price
        self.valuation = (price, vol, years, value)
        self.marks.append(self.valuation)
        self.mark_times.append(t)
        self.delta, self.gamma = delta, gamma
        self.revalue_at = t + min(max(left / 1000.0, _REVALUE_MIN_NS), _REVALUE_MAX_NS)
        return price, value, usd, delta, gamma, self.revalue_at
