"""What can be subscribed on Amberdata's options WebSocket and how it is named: the streams,
Deribit instrument names (parsed by our own parser, not the mock's), feedlab's subscription
syntax STREAM:INSTRUMENT[@EXCHANGE], and the documented plan limits.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

DEFAULT_EXCHANGE = "deribit"

ORDER_SNAPSHOTS = "market:options:order:snapshots"
TICKERS = "market:options:tickers"
TRADES = "market:options:trades"
OHLCV = "market:options:ohlcv"
OPEN_INTERESTS = "market:options:open_interests"
STREAMS = (ORDER_SNAPSHOTS, TICKERS, TRADES, OHLCV, OPEN_INTERESTS)

# Documented plan limits by key prefix: (connections, subscriptions per connection). Any other
# key is Enterprise, whose limits are per contract: unlimited unless the caller configures them.
PLAN_LIMITS: dict[str, tuple[int, int]] = {"UAT": (5, 100), "UAO": (20, 100)}

# ---------------------------------------------------------------------------------------------
# Deribit instrument names: UNDERLYING-DMMMYY-STRIKE-C|P, day not zero-padded (BTC-5JUL16-650-C)

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DERIBIT = re.compile(
    r"(?P<underlying>[A-Z0-9]+(?:_[A-Z0-9]+)?)-(?P<day>\d{1,2})(?P<month>[A-Z]{3})(?P<year>\d{2})"
    r"-(?P<strike>\d+(?:[d.]\d+)?)-(?P<right>[CP])"
)
DERIBIT_EXPIRY_TIME = dt.time(8, 0, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class OptionContract:
    """A Deribit-style option: European, cash-settled, expiring at 08:00 UTC."""

    underlying: str  # BTC, ETH, or a linear one such as BTC_USDC
    expiration: dt.date
    strike: Decimal
    right: Literal["C", "P"]

    @property
    def expiry(self) -> dt.datetime:
        return dt.datetime.combine(self.expiration, DERIBIT_EXPIRY_TIME)

    @property
    def is_call(self) -> bool:
        return self.right == "C"


def parse_instrument(name: str) -> OptionContract:
    """Parse a Deribit option name; ValueError for anything else (futures, other naming)."""
    match = _DERIBIT.fullmatch(name)
    if match is None or match["month"] not in _MONTHS:
        raise ValueError(f"not a Deribit option name: {name!r}")
    try:
        expiration = dt.date(
            2000 + int(match["year"]), _MONTHS.index(match["month"]) + 1, int(match["day"])
        )
        strike = Decimal(match["strike"].replace("d", "."))
    except (ValueError, InvalidOperation) as exc:
        raise ValueError(f"not a Deribit option name: {name!r}") from exc
    right: Literal["C", "P"] = "C" if match["right"] == "C" else "P"
    return OptionContract(match["underlying"], expiration, strike, right)


def format_instrument(contract: OptionContract) -> str:
    """The Deribit name; fractional strikes use Deribit's `d` (XRP_USDC-28JUN24-0d625-C)."""
    expiration = contract.expiration
    if not 2000 <= expiration.year <= 2099:
        raise ValueError(f"Deribit names carry a two-digit year: {expiration}")
    strike = format(contract.strike.normalize(), "f").replace(".", "d")
    month = _MONTHS[expiration.month - 1]
    return (
        f"{contract.underlying}-{expiration.day}{month}{expiration.year % 100:02d}"
        f"-{strike}-{contract.right}"
    )


def contract_or_none(name: str) -> OptionContract | None:
    """The parsed contract, or None for names that are not Deribit-style (okex may differ)."""
    try:
        return parse_instrument(name)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Subscriptions in feedlab's syntax: STREAM:INSTRUMENT[@EXCHANGE]


@dataclass(frozen=True, slots=True)
class Subscription:
    stream: str
    instrument: str
    exchange: str

    @property
    def key(self) -> str:
        """Canonical form: the same subscription written with or without `@deribit`."""
        return f"{self.stream}:{self.instrument}@{self.exchange}"

    def params(self) -> list[object]:
        return [self.stream, {"instrument": self.instrument, "exchange": self.exchange}]


def parse_subscription(text: str) -> Subscription:
    """`market:options:trades:BTC-24JUN22-15000-P@deribit` (the exchange defaults to deribit)."""
    stream, sep, target = text.strip().rpartition(":")
    instrument, _, exchange = target.partition("@")
    exchange = exchange.lower() or DEFAULT_EXCHANGE
    if not sep or stream not in STREAMS:
        raise ValueError(f"unknown Amberdata options stream in {text!r}; one of {STREAMS}")
    if not instrument or any(c.isspace() for c in instrument) or "@" in exchange:
        raise ValueError(f"expected STREAM:INSTRUMENT[@EXCHANGE], got {text!r}")
    return Subscription(stream, instrument, exchange)


def plan_limits(api_key: str | None) -> tuple[int | None, int | None]:
    """(connections, subscriptions per connection) the key's plan allows; None: unlimited."""
    for prefix, limits in PLAN_LIMITS.items():
        if api_key is not None and api_key.startswith(prefix):
            return limits
    return None, None
