"""An underlying's price path for the simulated market: a seeded walk on a fixed time grid.

Every contract on the underlying reads the same path, and the market publishes the watched ones
as price reports (`mocks.sim.market`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from mocks.sim.contracts import Kind, Underlying
from mocks.sim.rng import derive_rng

NS = 1_000_000_000
# The market hours at t seconds since the start, for an underlying of this kind: whether it
# trades, and when (ns since the start) that next changes (None: never).
Hours = Callable[[Kind, float], tuple[bool, int | None]]
# Volatility is quoted per trading year for US underlyings, per calendar year for crypto.
_US_TRADING_YEAR_S = 252 * 6.5 * 3600
_CRYPTO_YEAR_S = 365 * 86_400


class UnderlyingPath:
    """An underlying's price on a fixed grid: `prices[i]` holds on [(base+i)·step, (base+i+1)·step).

    Grid point k's price depends only on (seed, root, k) and the market hours, so any
    contract, watched at any time, reads the same path. While the market is closed the price
    does not move and nothing is drawn: a weekend is one stretch of equal prices, not 470,000
    steps (drawing them cost 3-4 s of CPU per underlying each time a path crossed a Friday
    close, and made a chaos search across the close five times slower).
    Watched underlyings also publish reports (`MarketSim._report`).
    """

    __slots__ = (
        "base",
        "drift_step",
        "hours",
        "info",
        "jump_p",
        "jump_sigma",
        "kind",
        "last_report",
        "prices",
        "reported_k",
        "rng",
        "sigma_step",
        "step",
        "step_ns",
    )

    def __init__(self, info: Underlying, seed: int, step: float, hours: Hours) -> None:
        self.info = info
        self.kind = info.kind
        self.rng = derive_rng(seed, f"underlying:{info.root}")
        self.step = step
        self.step_ns = step * NS
        self.hours = hours
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
        if i >= len(prices):
            self._extend(i)
        return prices[i] if i >= 0 else prices[0]

    def extend_to(self, rel_ns: float) -> None:
        """Make the grid reach time `rel_ns` (nanoseconds since the start), for the hot loop."""
        last = int(rel_ns / self.step_ns) + 1 - self.base
        if len(self.prices) <= last:
            self._extend(last)

    def _extend(self, last: int) -> None:
        """Grid points up to index `last` of `prices`, a stretch of open or closed market at a
        time."""
        prices, rng, step = self.prices, self.rng, self.step
        drift, sigma, jump_p, jump_sigma = (
            self.drift_step,
            self.sigma_step,
            self.jump_p,
            self.jump_sigma,
        )
        gauss, uniform, exp = rng.gauss, rng.random, math.exp
        while len(prices) <= last:
            k = self.base + len(prices)
            is_open, change_ns = self.hours(self.kind, k * step)
            n = last + 1 - len(prices)
            if change_ns is not None:  # only the points before the change share this state
                n = min(n, points_before(k, step, change_ns))
            price = prices[-1]
            if not is_open:
                prices.extend([price] * n)
                continue
            for _ in range(n):
                r = drift + sigma * gauss(0.0, 1.0)
                if uniform() < jump_p:
                    r += gauss(0.0, jump_sigma)
                price = max(round(price * exp(r), 2), 0.01)
                prices.append(price)

    def forget_before(self, t: float) -> None:
        """Drop grid points no event can ask for any more (everything before `t`)."""
        drop = min(int(t / self.step) - 1 - self.base, len(self.prices) - 1)
        if drop > 256:
            del self.prices[:drop]
            self.base += drop


def points_before(k: int, step: float, change_ns: int) -> int:
    """How many grid points from k on lie before `change_ns` (at least one: k itself), each
    placed as the market places it, `round(k * step * NS)`."""
    end = max(k + 1, math.ceil(change_ns / (step * NS)))
    while end - 1 > k and round((end - 1) * step * NS) >= change_ns:
        end -= 1
    while round(end * step * NS) < change_ns:
        end += 1
    return end - k
