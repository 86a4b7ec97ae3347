"""The contracts behind the full trade stream: a few liquid roots' near-the-money chains.

The real full trade stream carries every option trade in the market; the simulator only makes
data for contracts someone watches, so `STREAM_BULK` watches a realistic default set built here
from the contract model: listed-looking expirations and strikes around the current underlying.
"""

from __future__ import annotations

import datetime as dt

from mocks.sim.clock import EASTERN, REGULAR_CLOSE, from_unix_ns, is_trading_day
from mocks.sim.contracts import Kind, OptionContract
from mocks.sim.market import MarketSim

# Trading classes with an expiration every trading day (the rest: Fridays).
DAILY_EXPIRATIONS = frozenset({"SPY", "QQQ", "IWM", "SPXW", "XSP", "NDXP"})
# Strike spacing near the money for the classes whose spacing is not a matter of price level.
STRIKE_STEPS = {
    "SPY": 1.0,
    "QQQ": 1.0,
    "IWM": 1.0,
    "DIA": 1.0,
    "XSP": 1.0,
    "SPXW": 5.0,
    "SPX": 5.0,
    "NDXP": 10.0,
    "NDX": 10.0,
    "RUTW": 5.0,
    "RUT": 5.0,
    "VIX": 1.0,
    "VIXW": 1.0,
}


def strike_step(root: str, spot: float) -> float:
    if root in STRIKE_STEPS:
        return STRIKE_STEPS[root]
    if spot < 25:
        return 0.5
    if spot < 200:
        return 1.0
    if spot < 500:
        return 2.5
    return 5.0


def expirations(root: str, today: dt.date, count: int) -> list[dt.date]:
    """The next `count` expirations from `today` (included) on: every trading day, or Fridays
    (the Thursday before when the Friday is a holiday)."""
    out: list[dt.date] = []
    day = today
    while len(out) < count:
        if root in DAILY_EXPIRATIONS:
            if is_trading_day(day):
                out.append(day)
        elif day.weekday() == 4:
            expiry = day if is_trading_day(day) else day - dt.timedelta(days=1)
            if expiry >= today:
                out.append(expiry)
        day += dt.timedelta(days=1)
    return out


def build_universe(
    market: MarketSim, now: float, roots: tuple[str, ...], expiration_count: int, each_side: int
) -> tuple[OptionContract, ...]:
    local = from_unix_ns(market.clock.unix_ns(now), EASTERN)
    today = local.date()
    if local.time() >= REGULAR_CLOSE:  # today's contracts have expired
        today += dt.timedelta(days=1)
    contracts: list[OptionContract] = []
    for root in roots:
        if market.underlying_info(root).kind is Kind.CRYPTO:
            continue
        spot = market.underlying_price(root)
        step = strike_step(root, spot)
        atm = round(spot / step)
        strikes = [k * step for k in range(atm - each_side, atm + each_side + 1) if k > 0]
        for expiration in expirations(root, today, expiration_count):
            for strike in strikes:
                for right in ("C", "P"):
                    contracts.append(OptionContract(root, expiration, round(strike * 1000), right))
    return tuple(contracts)
