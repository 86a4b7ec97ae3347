"""Theta Terminal wire format, the client's own reading of it (nothing shared with the mock):
feedlab's subscription syntax and the requests it becomes, `date` + `ms_of_day` in US Eastern time
to UTC, the reply schemas and the typed events the application gets."""

from __future__ import annotations

import datetime as dt
import functools
import re
import zoneinfo
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import orjson

from clients.common import Dropped, GapNotice, Rejected, Status

# ---------------------------------------------------------------------------------------------
# Contracts and subscriptions in feedlab's Theta syntax


@dataclass(frozen=True, slots=True)
class Contract:
    """A Theta contract. `strike_milli` is the wire's 1/10-cent unit ($4800 -> 4800000)."""

    security_type: str  # OPTION, STOCK, INDEX
    root: str
    expiration: dt.date | None = None
    strike_milli: int | None = None
    right: str | None = None  # C or P

    @property
    def strike(self) -> float | None:
        """The strike in dollars."""
        return None if self.strike_milli is None else self.strike_milli / 1000

    @property
    def symbol(self) -> str:
        """`SPXW:20240315:4800:C` for an option, the root for a stock or an index."""
        if self.expiration is None or self.strike_milli is None or self.right is None:
            return self.root
        strike = format_strike(self.strike_milli)
        return f"{self.root}:{self.expiration:%Y%m%d}:{strike}:{self.right}"

    def wire(self) -> dict[str, Any]:
        if self.expiration is None or self.strike_milli is None or self.right is None:
            return {"root": self.root}
        return {
            "root": self.root,
            "expiration": int(f"{self.expiration:%Y%m%d}"),
            "strike": self.strike_milli,
            "right": self.right,
        }


_STRIKE = re.compile(r"(\d{1,9})(?:\.(\d{1,3}))?")
_ROOT = re.compile(r"[A-Z0-9._/^-]{1,16}")


def parse_strike(text: str) -> int:
    """Dollars as written (`4800`, `412.5`) -> the wire's 1/10-cent integer, exactly."""
    match = _STRIKE.fullmatch(text)
    if match is None:
        raise ValueError(f"strike {text!r} is not dollars with at most 3 decimals")
    return int(match[1]) * 1000 + int((match[2] or "").ljust(3, "0"))


def format_strike(strike_milli: int) -> str:
    dollars, milli = divmod(strike_milli, 1000)
    return str(dollars) if milli == 0 else f"{dollars}.{milli:03d}".rstrip("0")


def _parse_date(text: str) -> dt.date:
    if not re.fullmatch(r"\d{8}", text):
        raise ValueError(f"expiration {text!r} is not YYYYMMDD")
    return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))


# (security type, kind as written) -> the wire's req_type
_KINDS: dict[tuple[str, str], str] = {
    ("option", "quote"): "QUOTE",
    ("option", "trade"): "TRADE",
    ("option", "market_value"): "MARKET_VALUE",
    ("stock", "quote"): "QUOTE",
    ("stock", "trade"): "TRADE",
    ("index", "price"): "TRADE",  # index price reports arrive as TRADE messages (plus OHLC)
}
BULK_TRADES = "option:trade:*"


@dataclass(frozen=True, slots=True)
class Subscription:
    """One stream request. `text` is canonical, so equal streams compare equal."""

    text: str
    req_type: str
    contract: Contract | None  # None: the full option trade stream (STREAM_BULK)

    @property
    def symbol(self) -> str:
        """What events of this stream carry as `symbol`; "*" for every option contract."""
        return "*" if self.contract is None else self.contract.symbol

    def request(self, req_id: int, add: bool) -> bytes:
        body: dict[str, Any]
        if self.contract is None:
            body = {"msg_type": "STREAM_BULK", "sec_type": "OPTION", "req_type": self.req_type}
        else:
            body = {
                "msg_type": "STREAM",
                "sec_type": self.contract.security_type,
                "req_type": self.req_type,
            }
        body["add"] = add
        body["id"] = req_id
        if self.contract is not None:
            body["contract"] = self.contract.wire()
        return orjson.dumps(body)


def parse_subscription(text: str) -> Subscription:
    """`option:quote:SPXW:20240315:4800:C`, `option:trade:*`, `stock:trade:AAPL`, `index:price:SPX`.

    Raises ValueError naming what is wrong: a typo in a subscription is the caller's bug."""
    parts = text.strip().split(":")
    sec, kind = (parts[0].lower(), parts[1].lower()) if len(parts) >= 2 else ("", "")
    req_type = _KINDS.get((sec, kind))
    if req_type is None:
        raise ValueError(f"{text!r}: expected option|stock|index:KIND:..., kinds {sorted(_KINDS)}")
    if (sec, kind) == ("option", "trade") and parts[2:] == ["*"]:
        return Subscription(BULK_TRADES, "TRADE", None)
    root = parts[2].upper() if len(parts) > 2 else ""
    if not _ROOT.fullmatch(root):
        raise ValueError(f"{text!r}: bad root {root!r}")
    if sec == "option":
        if len(parts) != 6:
            raise ValueError(f"{text!r}: expected option:{kind}:ROOT:YYYYMMDD:STRIKE:C|P")
        right = parts[5].upper()
        if right not in ("C", "P"):
            raise ValueError(f"{text!r}: right must be C or P")
        contract = Contract("OPTION", root, _parse_date(parts[3]), parse_strike(parts[4]), right)
    else:
        if len(parts) != 3:
            raise ValueError(f"{text!r}: expected {sec}:{kind}:ROOT")
        contract = Contract(sec.upper(), root)
    return Subscription(f"{sec}:{kind}:{contract.symbol}", req_type, contract)


# ---------------------------------------------------------------------------------------------
# Time: `date` + `ms_of_day` are US Eastern wall-clock time, daylight saving included

EASTERN = zoneinfo.ZoneInfo("America/New_York")
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


@functools.lru_cache(maxsize=64)
def _eastern_day(date: int) -> tuple[dt.date, int, int | None]:
    """(the day, its midnight as if UTC in ms, its UTC offset in ms if constant all day)."""
    day = dt.date(date // 10000, date // 100 % 100, date % 100)
    first = dt.datetime.combine(day, dt.time(0), EASTERN).utcoffset()
    last = dt.datetime.combine(day, dt.time(23, 59, 59), EASTERN).utcoffset()
    assert first is not None and last is not None
    constant = first // dt.timedelta(milliseconds=1) if first == last else None
    return day, (day.toordinal() - _EPOCH_ORDINAL) * 86_400_000, constant


def eastern_to_unix_ns(date: int, ms_of_day: int) -> int:
    """Unix ns for Theta's (`date` YYYYMMDD, `ms_of_day`), both US Eastern wall-clock time.

    On a switch day the offset changes at 02:00; a wall time that does not exist (spring) or
    exists twice (autumn) resolves like `zoneinfo` with fold=0. Markets are closed then anyway.
    """
    day, midnight_ms, offset_ms = _eastern_day(date)
    if offset_ms is None:
        wall = dt.datetime.combine(day, dt.time(0), EASTERN) + dt.timedelta(milliseconds=ms_of_day)
        offset = wall.utcoffset()
        assert offset is not None
        offset_ms = offset // dt.timedelta(milliseconds=1)
    return (midnight_ms + ms_of_day - offset_ms) * 1_000_000


# ---------------------------------------------------------------------------------------------
# Typed events


class _ContractFields:
    """What every market-data event says about its contract, in the traders' words."""

    __slots__ = ()
    contract: Contract

    @property
    def root(self) -> str:
        return self.contract.root

    @property
    def expiration(self) -> dt.date | None:
        return self.contract.expiration

    @property
    def strike(self) -> float | None:
        """In dollars (the wire's 1/10 cent divided by 1000)."""
        return self.contract.strike

    @property
    def right(self) -> str | None:
        return self.contract.right


@dataclass(frozen=True, slots=True)
class Quote(_ContractFields):
    """A national best bid and offer. Theta quotes carry no sequence number."""

    symbol: str
    contract: Contract
    timestamp_ns: int
    date: int
    ms_of_day: int
    bid: float
    bid_size: int
    bid_exchange: int
    bid_condition: int
    ask: float
    ask_size: int
    ask_exchange: int
    ask_condition: int
    sequence: int | None = None


@dataclass(frozen=True, slots=True)
class OptionQuote(Quote):
    pass


@dataclass(frozen=True, slots=True)
class StockQuote(Quote):
    pass


@dataclass(frozen=True, slots=True)
class Trade(_ContractFields):
    """A trade: exactly the terminal's 7 fields. `sequence` is signed 32-bit, may be negative."""

    symbol: str
    contract: Contract
    timestamp_ns: int
    ms_of_day: int
    sequence: int
    size: int
    condition: int
    price: float
    exchange: int
    date: int


@dataclass(frozen=True, slots=True)
class OptionTrade(Trade):
    pass


@dataclass(frozen=True, slots=True)
class StockTrade(Trade):
    pass


@dataclass(frozen=True, slots=True)
class OptionMarketValue(_ContractFields):
    """Theta's theoretical value from the live bid and ask."""

    symbol: str
    contract: Contract
    timestamp_ns: int
    date: int
    ms_of_day: int
    market_bid: float | None
    market_ask: float | None
    market_price: float
    sequence: int | None = None


@dataclass(frozen=True, slots=True)
class IndexPrice(_ContractFields):
    """An index price report (a TRADE message where only `price` means anything)."""

    symbol: str
    contract: Contract
    timestamp_ns: int
    date: int
    ms_of_day: int
    price: float
    sequence: int | None = None  # the wire's is always 0


@dataclass(frozen=True, slots=True)
class Ohlc(_ContractFields):
    """The day's open/high/low/close so far (index price stream; before each bulk trade)."""

    symbol: str
    contract: Contract
    timestamp_ns: int
    date: int
    ms_of_day: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    count: int
    sequence: int | None = None


MarketData = Quote | Trade | OptionMarketValue | IndexPrice | Ohlc
Event = MarketData | GapNotice | Status | Rejected | Dropped

# ---------------------------------------------------------------------------------------------
# Wire schemas (our own; nothing shared with the mock)

_Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
_MsOfDay = Annotated[int, msgspec.Meta(ge=0, lt=86_400_000)]
_Date = Annotated[int, msgspec.Meta(ge=19000101, le=99991231)]


class Header(msgspec.Struct):
    type: str
    status: str | None = None
    response: str | None = None
    req_id: int | None = None
    state: str | None = None


class Envelope(msgspec.Struct):
    header: Header
    contract: msgspec.Raw = msgspec.Raw()
    quote: msgspec.Raw = msgspec.Raw()
    trade: msgspec.Raw = msgspec.Raw()
    ohlc: msgspec.Raw = msgspec.Raw()
    market_value: msgspec.Raw = msgspec.Raw()


class _WireContract(msgspec.Struct):
    security_type: str
    root: Annotated[str, msgspec.Meta(min_length=1)]
    expiration: _Date | None = None
    strike: Annotated[int, msgspec.Meta(ge=0)] | None = None
    right: str | None = None


# Frozen, so hashable: the client remembers the last few sequence-less bodies of each stream
# to drop repeats (`REPEATS_REMEMBERED`; an index price comes as a TRADE body).
class _WireQuote(msgspec.Struct, frozen=True):
    ms_of_day: _MsOfDay
    bid_size: int
    bid_exchange: int
    bid: float
    bid_condition: int
    ask_size: int
    ask_exchange: int
    ask: float
    ask_condition: int
    date: _Date


class _WireTrade(msgspec.Struct, frozen=True):
    ms_of_day: _MsOfDay
    sequence: _Int32
    size: int
    condition: int
    price: float
    exchange: int
    date: _Date


class _WireOhlc(msgspec.Struct, frozen=True):
    ms_of_day: _MsOfDay
    open: float
    high: float
    low: float
    close: float
    volume: int
    count: int
    date: _Date


class _WireMarketValue(msgspec.Struct, frozen=True):
    ms_of_day: _MsOfDay
    date: _Date
    market_price: float
    market_bid: float | None = None
    market_ask: float | None = None


envelope_decoder = msgspec.json.Decoder(Envelope)
_contract_decoder = msgspec.json.Decoder(_WireContract)
BODIES: dict[str, tuple[str, msgspec.json.Decoder[Any]]] = {
    "QUOTE": ("quote", msgspec.json.Decoder(_WireQuote)),
    "TRADE": ("trade", msgspec.json.Decoder(_WireTrade)),
    "OHLC": ("ohlc", msgspec.json.Decoder(_WireOhlc)),
    "MARKET_VALUE": ("market_value", msgspec.json.Decoder(_WireMarketValue)),
}


class _Unparseable(ValueError):
    pass


def wire_contract(raw: msgspec.Raw) -> Contract:
    wire = _contract_decoder.decode(raw)
    if wire.security_type == "OPTION":
        if wire.expiration is None or wire.strike is None or wire.right not in ("C", "P"):
            raise _Unparseable("option contract without expiration, strike or right")
        expiration = _eastern_day(wire.expiration)[0]
        return Contract("OPTION", wire.root, expiration, wire.strike, wire.right)
    return Contract(wire.security_type, wire.root)


def decode_market_data(kind: str, contract: Contract, body: Any) -> MarketData:
    """A decoded body -> the typed event. `kind` is the header type."""
    ts = eastern_to_unix_ns(body.date, body.ms_of_day)
    sec, sym = contract.security_type, contract.symbol
    common = (sym, contract, ts)
    if kind == "QUOTE" and sec in ("OPTION", "STOCK"):
        cls = OptionQuote if sec == "OPTION" else StockQuote
        b: Any = body
        return cls(*common, b.date, b.ms_of_day, b.bid, b.bid_size, b.bid_exchange,
                   b.bid_condition, b.ask, b.ask_size, b.ask_exchange, b.ask_condition)  # fmt: skip
    if kind == "TRADE" and sec == "INDEX":
        return IndexPrice(*common, body.date, body.ms_of_day, body.price)
    if kind == "TRADE" and sec in ("OPTION", "STOCK"):
        tcls = OptionTrade if sec == "OPTION" else StockTrade
        b = body
        return tcls(*common, b.ms_of_day, b.sequence, b.size, b.condition, b.price, b.exchange,
                    b.date)  # fmt: skip
    if kind == "OHLC":
        b = body
        return Ohlc(*common, b.date, b.ms_of_day, b.open, b.high, b.low, b.close, b.volume,
                    b.count)  # fmt: skip
    if kind == "MARKET_VALUE" and sec == "OPTION":
        b = body
        return OptionMarketValue(*common, b.date, b.ms_of_day, b.market_bid, b.market_ask,
                                 b.market_price)  # fmt: skip
    raise _Unparseable(f"{kind} for {sec} is not a message this client knows")


def streams_for(event: MarketData) -> tuple[str, ...]:
    """The subscriptions (canonical text) that can have produced this event."""
    c = event.contract
    sec, sym = c.security_type.lower(), event.symbol
    if isinstance(event, Quote):
        own: tuple[str, ...] = (f"{sec}:quote:{sym}",)
    elif isinstance(event, IndexPrice):
        own = (f"index:price:{sym}",)
    elif isinstance(event, Trade):
        own = (f"{sec}:trade:{sym}",)
    elif isinstance(event, OptionMarketValue):
        own = (f"option:market_value:{sym}",)
    else:  # OHLC rides along with the price stream, or with trades
        own = tuple(f"{s}:{k}:{sym}" for (s, k) in _KINDS if s == sec)
    if sec == "option" and not isinstance(event, OptionMarketValue):
        return (*own, BULK_TRADES)  # the bulk stream brings quotes and OHLC around each trade
    return own
