"""Listed option chains: which expirations and strikes exist for a root on a given day.

Used where the mock must pick contracts itself (Theta's full trade stream, the demo, benchmarks);
a client naming any other well-formed contract still gets it synthesised on demand.
"""

from __future__ import annotations

import datetime as dt
import math

from mocks.sim.clock import is_trading_day
from mocks.sim.contracts import Kind, OptionContract, underlying

# Roots with options expiring every trading day (and SPXW/NDXP/XSP the same-day "0DTE" series).
DAILY_ROOTS = frozenset({"SPY", "QQQ", "IWM", "SPXW", "NDXP", "XSP", "RUTW"})


def third_friday(year: int, month: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)


def last_friday(year: int, month: int) -> dt.date:
    nxt = dt.date(year + month // 12, month % 12 + 1, 1)
    last = nxt - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - 4) % 7)


def expirations(root: str, today: dt.date, count: int) -> list[dt.date]:
    """The next `count` expirations on or after `today`: dailies for the busiest roots, weekly
    Fridays and monthly third Fridays for US names; daily, Friday and last-Friday for crypto."""
    kind = underlying(root).kind
    found: list[dt.date] = []
    day = today
    while len(found) < count:
        if kind is Kind.CRYPTO:
            listed = True  # Deribit lists dailies, weeklies (Fri) and monthlies (last Fri)
        elif not is_trading_day(day):
            listed = False
        elif root in DAILY_ROOTS:
            listed = True
        elif root in ("SPX", "NDX", "RUT"):
            listed = day == third_friday(day.year, day.month)  # AM-settled monthlies
        else:
            listed = day.weekday() == 4  # weeklies and monthlies fall on Fridays
        if listed:
            found.append(day)
        day += dt.timedelta(days=1)
    return found


def strike_increment(root: str, spot: float) -> float:
    kind = underlying(root).kind
    if kind is Kind.CRYPTO:
        return 1000.0 if spot > 20_000 else 50.0 if spot > 1_000 else 5.0
    if kind is Kind.INDEX:
        return 25.0 if spot > 10_000 else 5.0 if spot > 1_000 else 1.0 if spot > 50 else 0.5
    if spot < 25:
        return 0.5
    if spot < 200 or root in DAILY_ROOTS:
        return 1.0
    return 2.5 if spot < 500 else 5.0


def chain(
    root: str,
    today: dt.date,
    spot: float,
    *,
    expirations_count: int = 3,
    strikes_each_side: int = 5,
) -> list[OptionContract]:
    """Calls and puts around the money for the next few expirations."""
    step = strike_increment(root, spot)
    atm = round(spot / step) * step
    strikes = [atm + i * step for i in range(-strikes_each_side, strikes_each_side + 1)]
    out: list[OptionContract] = []
    for expiration in expirations(root, today, expirations_count):
        for strike in strikes:
            if strike <= 0:
                continue
            milli = math.floor(strike * 1000 + 0.5)
            out.append(OptionContract(root, expiration, milli, "C"))
            out.append(OptionContract(root, expiration, milli, "P"))
    return out
