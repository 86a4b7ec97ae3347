"""Contract names in each vendor's syntax, for the mocks (clients have their own parsers).

* OCC / Massive: `O:SPY251219C00650000` — root, YYMMDD, C|P, strike x 1000 in 8 digits.
* Theta: root, expiration YYYYMMDD (int), strike in 1/10 cent (int), right C|P.
* Deribit (Amberdata): `BTC-5JUL16-650-C` — day not zero-padded, month in capitals, strike in
  the quote currency (decimals written with `d`, as Deribit does for small strikes: `0d5`).
"""

from __future__ import annotations

import datetime as dt
import re

from mocks.sim.contracts import OptionContract


class SymbolError(ValueError):
    """Not a well-formed contract name in that vendor's syntax."""


MAX_STRIKE_MILLI = 10**12  # a billion dollars: anything above is garbage, not a strike


_OCC = re.compile(r"O:([A-Z][A-Z0-9]{0,5})(\d{2})(\d{2})(\d{2})([CP])(\d{8})")


def parse_occ(symbol: str) -> OptionContract:
    m = _OCC.fullmatch(symbol)
    if m is None:
        raise SymbolError(f"not an OCC option ticker: {symbol!r}")
    root, yy, mm, dd, right, strike = m.groups()
    try:
        expiration = dt.date(2000 + int(yy), int(mm), int(dd))
    except ValueError as exc:
        raise SymbolError(f"bad expiration in {symbol!r}: {exc}") from None
    if int(strike) == 0:
        raise SymbolError(f"zero strike in {symbol!r}")
    return OptionContract(root, expiration, int(strike), right)


def format_occ(contract: OptionContract) -> str:
    if not 0 < contract.strike_milli < 100_000_000:
        raise SymbolError(f"strike {contract.strike} does not fit OCC's 8 digits")
    return (
        f"O:{contract.root}{contract.expiration:%y%m%d}{contract.right}{contract.strike_milli:08d}"
    )


def from_theta(root: object, expiration: object, strike: object, right: object) -> OptionContract:
    """Theta's contract fields, leniently: numbers may come as strings, right as C/P/CALL/PUT."""
    try:
        root_s = str(root).strip().upper()
        exp = int(str(expiration).strip())
        strike_i = int(str(strike).strip())
        right_s = str(right).strip().upper()[:1]
        expiration_date = dt.date(exp // 10000, exp // 100 % 100, exp % 100)
    except (TypeError, ValueError, OverflowError) as exc:  # fuzzing found 40-digit dates
        raise SymbolError(f"bad Theta contract: {exc}") from None
    if not re.fullmatch(r"[A-Z][A-Z0-9.]{0,9}", root_s) or right_s not in ("C", "P"):
        raise SymbolError(f"bad Theta contract root/right: {root!r} {right!r}")
    if not 0 < strike_i < MAX_STRIKE_MILLI:
        raise SymbolError(f"bad Theta strike: {strike!r}")
    return OptionContract(root_s, expiration_date, strike_i, right_s)


def to_theta(contract: OptionContract) -> tuple[str, int, int, str]:
    """(root, expiration YYYYMMDD, strike in 1/10 cent, right)."""
    exp = contract.expiration
    return (
        contract.root,
        exp.year * 10000 + exp.month * 100 + exp.day,
        contract.strike_milli,
        contract.right,
    )


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DERIBIT = re.compile(
    r"([A-Z][A-Z0-9_]{1,15})-(\d{1,2})([A-Z]{3})(\d{2})-(\d{1,9}(?:d\d{1,3})?)-([CP])"
)


def parse_deribit(name: str) -> OptionContract:
    m = _DERIBIT.fullmatch(name)
    if m is None:
        raise SymbolError(f"not a Deribit option instrument: {name!r}")
    root, day, month, yy, strike, right = m.groups()
    if month not in _MONTHS or (len(day) == 2 and day.startswith("0")):
        raise SymbolError(f"bad expiry in {name!r}")
    try:
        expiration = dt.date(2000 + int(yy), _MONTHS.index(month) + 1, int(day))
    except ValueError as exc:
        raise SymbolError(f"bad expiry in {name!r}: {exc}") from None
    whole, _, frac = strike.partition("d")
    if len(frac) > 3:
        raise SymbolError(f"strike has more than 3 decimals in {name!r}")
    strike_milli = int(whole) * 1000 + (int(frac.ljust(3, "0")) if frac else 0)
    if strike_milli == 0:
        raise SymbolError(f"zero strike in {name!r}")
    return OptionContract(root, expiration, strike_milli, right)


def format_deribit(contract: OptionContract) -> str:
    exp = contract.expiration
    whole, frac = divmod(contract.strike_milli, 1000)
    strike = f"{whole}d{str(frac).rjust(3, '0').rstrip('0')}" if frac else str(whole)
    return f"{contract.root}-{exp.day}{_MONTHS[exp.month - 1]}{exp:%y}-{strike}-{contract.right}"
