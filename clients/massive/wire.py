"""Massive's options wire format as the client reads it: the OCC-style ticker, the typed events
(quote, trade, per-second and per-minute aggregates) and the subscription syntax.

Built from shared/protocols/massive.md and the vendor's pages; shares no code with the mock
(DESIGN.md, principle 6).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from clients.common import Dropped, GapNotice, LimitError, Rejected, Status, excerpt

VENDOR = "massive"
LIVE_URL = "wss://socket.massive.com/options"
DELAYED_URL = "wss://delayed.massive.com/options"  # T, A, AM 15 minutes late; no Q [doc]
API_KEY_ENV = "MASSIVE_API_KEY"
QUOTE_CONTRACTS_PER_CONNECTION = 1000  # [doc] "a maximum of 1,000 option contracts per connection"

# ---------------------------------------------------------------------------------------------
# Contracts: Massive's ticker is "O:" + the OCC symbol without padding,
# e.g. O:SPY251219C00650000 = SPY 2025-12-19 650 call; adjusted contracts carry a digit (AMC1).

Right = Literal["C", "P"]
_ROOT = re.compile(r"[A-Z][A-Z0-9]{0,5}")
_OCC_TAIL = re.compile(r"(\d{6})([CP])(\d{8})")


@dataclass(frozen=True, slots=True)
class OptionContract:
    root: str  # the trading class as Massive prints it: SPY, SPXW, AMC1
    expiration: dt.date
    right: Right
    strike: Decimal  # exact: OCC's 8 digits are the strike in thousandths

    @property
    def ticker(self) -> str:
        return format_ticker(self)


@functools.lru_cache(maxsize=65536)
def parse_ticker(ticker: str) -> OptionContract:
    """Parse `O:ROOTYYMMDDC00650000`; raises ValueError for anything else."""
    if not ticker.startswith("O:") or len(ticker) < 2 + 1 + 15:
        raise ValueError(f"not a Massive option ticker: {excerpt(ticker)!r}")
    root, tail = ticker[2:-15], ticker[-15:]
    occ = _OCC_TAIL.fullmatch(tail)
    if _ROOT.fullmatch(root) is None or occ is None:
        raise ValueError(f"not a Massive option ticker: {excerpt(ticker)!r}")
    date, right, strike = occ.groups()
    expiration = dt.date(2000 + int(date[:2]), int(date[2:4]), int(date[4:]))
    return OptionContract(root, expiration, "C" if right == "C" else "P", Decimal(strike) / 1000)


def format_ticker(contract: OptionContract) -> str:
    milli = contract.strike * 1000
    if milli != milli.to_integral_value() or not 0 <= milli < 10**8:
        raise ValueError(f"strike {contract.strike} does not fit OCC's 8 digits of thousandths")
    if _ROOT.fullmatch(contract.root) is None or not 2000 <= contract.expiration.year < 2100:
        raise ValueError(f"cannot write {contract} as a Massive ticker")
    return f"O:{contract.root}{contract.expiration:%y%m%d}{contract.right}{int(milli):08d}"


# ---------------------------------------------------------------------------------------------
# Market-data events


@dataclass(frozen=True, slots=True)
class Quote:
    """`Q`: the national best bid and offer of one contract."""

    symbol: str  # the wire's `sym`, e.g. O:SPY251219C00650000
    sequence: int | None  # `q`: increasing per contract, not consecutive
    timestamp_ns: int  # `t` (Unix ms) in ns
    contract: OptionContract
    bid_exchange: int
    ask_exchange: int
    bid_price: float
    ask_price: float
    bid_size: int
    ask_size: int
    late: bool = False  # arrived after a higher sequence number of the same contract


@dataclass(frozen=True, slots=True)
class Trade:
    """`T`: one trade of one contract."""

    symbol: str
    sequence: int | None
    timestamp_ns: int
    contract: OptionContract
    exchange: int
    price: float
    size: int
    conditions: tuple[int, ...]
    late: bool = False


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A bar of one contract's trades; Massive sends none for a window without trades."""

    symbol: str
    sequence: int | None  # always None: aggregates carry no sequence number
    timestamp_ns: int  # window start (`s`)
    contract: OptionContract
    volume: float  # `v`, in this window
    accumulated_volume: float  # `av`, today so far
    official_open: float  # `op`, today's official open
    vwap: float  # `vw`, this window
    open: float
    close: float
    high: float
    low: float
    day_vwap: float  # `a`, today's volume-weighted average price
    average_size: float  # `z`, average trade size in this window
    start_ns: int  # `s`
    end_ns: int  # `e`
    late: bool = False  # a window that starts before one already delivered


@dataclass(frozen=True, slots=True)
class SecondAggregate(Aggregate):
    """`A`: one-second bar."""


@dataclass(frozen=True, slots=True)
class MinuteAggregate(Aggregate):
    """`AM`: one-minute bar."""


MarketEvent = Quote | Trade | Aggregate
Event = Quote | Trade | Aggregate | GapNotice | Status | Rejected | Dropped


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj[key]
    if type(value) is not int:
        raise ValueError(f"{key} is not an integer: {excerpt(value)}")
    return value


def _num(obj: dict[str, Any], key: str) -> float:
    value = obj[key]
    if type(value) is not int and type(value) is not float:
        raise ValueError(f"{key} is not a number: {excerpt(value)}")
    return float(value)


def _sym(obj: dict[str, Any]) -> tuple[str, OptionContract]:
    symbol = obj["sym"]
    if not isinstance(symbol, str):
        raise ValueError(f"sym is not a string: {excerpt(symbol)}")
    return symbol, parse_ticker(symbol)


def decode_quote(obj: dict[str, Any]) -> Quote:
    symbol, contract = _sym(obj)
    return Quote(
        symbol, _int(obj, "q"), _int(obj, "t") * 1_000_000, contract,
        _int(obj, "bx"), _int(obj, "ax"), _num(obj, "bp"), _num(obj, "ap"),
        _int(obj, "bs"), _int(obj, "as"),
    )  # fmt: skip


def decode_trade(obj: dict[str, Any]) -> Trade:
    symbol, contract = _sym(obj)
    conditions = obj.get("c", [])  # trades without conditions may omit `c` [obs, other clients]
    if not isinstance(conditions, list) or any(type(c) is not int for c in conditions):
        raise ValueError(f"c is not a list of integers: {excerpt(conditions)}")
    return Trade(
        symbol, _int(obj, "q"), _int(obj, "t") * 1_000_000, contract,
        _int(obj, "x"), _num(obj, "p"), _int(obj, "s"), tuple(conditions),
    )  # fmt: skip


def _decode_aggregate(cls: type[Aggregate], obj: dict[str, Any]) -> Aggregate:
    symbol, contract = _sym(obj)
    start, end = _int(obj, "s") * 1_000_000, _int(obj, "e") * 1_000_000
    return cls(
        symbol, None, start, contract,
        _num(obj, "v"), _num(obj, "av"), _num(obj, "op"), _num(obj, "vw"),
        _num(obj, "o"), _num(obj, "c"), _num(obj, "h"), _num(obj, "l"),
        _num(obj, "a"), _num(obj, "z"), start, end,
    )  # fmt: skip


DECODERS: dict[str, Callable[[dict[str, Any]], MarketEvent]] = {
    "Q": decode_quote,
    "T": decode_trade,
    "A": functools.partial(_decode_aggregate, SecondAggregate),
    "AM": functools.partial(_decode_aggregate, MinuteAggregate),
}


# ---------------------------------------------------------------------------------------------
# Subscriptions, in Massive's own syntax: Q.O:SPY251219C00650000, T.*, AM.O:...

SUBSCRIPTION = re.compile(r"(Q|T|A|AM)\.(\*|O:[A-Z0-9]+)")


def check_subscription(subscription: str) -> str:
    subscription = subscription.strip()
    match = SUBSCRIPTION.fullmatch(subscription)
    if match is None:
        raise ValueError(
            f"not a Massive options subscription: {subscription!r} "
            "(expected Q.O:<ticker>, T.O:<ticker>, A.O:<ticker>, AM.O:<ticker>, T.*, A.*, AM.*)"
        )
    channel, target = match.groups()
    if target == "*":
        if channel == "Q":
            raise LimitError(
                "Massive does not offer Q.* for options: subscribe to at most "
                f"{QUOTE_CONTRACTS_PER_CONNECTION:,} quote contracts per connection"
            )
    else:
        parse_ticker(target)
    return subscription


def is_quote_contract(subscription: str) -> bool:
    return subscription.startswith("Q.")


def contracts_of(subscriptions: Iterable[str]) -> tuple[str, ...]:
    """The contracts a gap notice names: tickers as in `sym`, and "*" for a wildcard."""
    return tuple(dict.fromkeys(s.split(".", 1)[1] for s in subscriptions))
