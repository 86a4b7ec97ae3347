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
# Volatility is quoted per trading year for US underlyings, per calendar year for crypto.
_US_TRADING_YEAR_S = 252 * 6.5 * 3600
_CRYPTO_YEAR_S = 365 * 86_400


class UnderlyingPath:
    """An underlying's price on a fixed grid: `prices[i]` holds on [(base+i)·step, (base+i+1)·step).

    Grid point k's price depends only on (seed, root, k), so any contract, watched at any time,
    reads the same path. Draws happen even while the market is closed, so the path does not
    depend on the market-hours setting either; the price just does not move then.
    Watched underlyings also publish reports (`MarketSim._report`).
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
        "step_ns",
    )

    def __init__(
        self, info: Underlying, seed: int, step: float, is_open: Callable[[Kind, float], bool]
    ) -> None:
        self.info = info
        self.kind = info.kind
        self.rng = derive_rng(seed, f"underlying:{info.root}")
        self.step = step
        self.step_ns = step * NS
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

    def extend_to(self, rel_ns: float) -> None:
        """Make the grid reach time `rel_ns` (nanoseconds since the start), for the hot loop."""
        last = int(rel_ns / self.step_ns) + 1 - self.base
        while len(self.prices) <= last:
            self._extend()

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
