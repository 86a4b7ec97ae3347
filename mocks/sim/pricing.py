"""Option pricing: Black-Scholes for US equity and index options, Black-76 on the forward for
Deribit-style crypto options (r = 0, premium as a fraction of the underlying), the greeks
Amberdata publishes, and the volatility smile the market quotes around.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
MIN_T = 1e-6  # years; keeps formulas finite at the moment of expiry


def norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / _SQRT2)


def norm_pdf(x: float) -> float:
    return _INV_SQRT_2PI * math.exp(-0.5 * x * x)


def _d1_d2(forward: float, strike: float, t: float, sigma: float) -> tuple[float, float]:
    sd = sigma * math.sqrt(t)
    d1 = (math.log(forward / strike) + 0.5 * sd * sd) / sd
    return d1, d1 - sd


def black76(
    forward: float, strike: float, t: float, sigma: float, is_call: bool, rate: float = 0.0
) -> float:
    """Value of a European option on a forward, discounted at `rate`."""
    t = max(t, MIN_T)
    d1, d2 = _d1_d2(forward, strike, t, sigma)
    disc = math.exp(-rate * t)
    if is_call:
        return disc * (forward * norm_cdf(d1) - strike * norm_cdf(d2))
    return disc * (strike * norm_cdf(-d2) - forward * norm_cdf(-d1))


def black_scholes(
    spot: float,
    strike: float,
    t: float,
    sigma: float,
    is_call: bool,
    rate: float = 0.0,
    dividend: float = 0.0,
) -> float:
    """Black-Scholes-Merton: Black-76 on the forward S·e^((r-q)T), discounted."""
    t = max(t, MIN_T)
    forward = spot * math.exp((rate - dividend) * t)
    return black76(forward, strike, t, sigma, is_call, rate)


def black76_value_delta_gamma(
    forward: float, strike: float, t: float, sigma: float, is_call: bool
) -> tuple[float, float, float]:
    """Undiscounted value, delta and gamma in one pass (the market's hot path)."""
    t = max(t, MIN_T)
    sd = sigma * math.sqrt(t)
    d1 = (math.log(forward / strike) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    n1 = norm_cdf(d1)
    gamma = norm_pdf(d1) / (forward * sd)
    if is_call:
        return forward * n1 - strike * norm_cdf(d2), n1, gamma
    return strike * norm_cdf(-d2) - forward * (1.0 - n1), n1 - 1.0, gamma


@dataclass(frozen=True, slots=True)
class Greeks:
    delta: float
    gamma: float
    vega: float  # per volatility point (1%)
    theta: float  # per calendar day
    rho: float  # per 1% of rate


def black76_greeks(forward: float, strike: float, t: float, sigma: float, is_call: bool) -> Greeks:
    """Greeks as Deribit (and so Amberdata) publish them: r = 0, T in years of 365 days, vega and
    theta in USD, rho per 1%. Reproduces Amberdata's documented snapshot sample."""
    t = max(t, MIN_T)
    d1, d2 = _d1_d2(forward, strike, t, sigma)
    sqrt_t = math.sqrt(t)
    pdf = norm_pdf(d1)
    delta = norm_cdf(d1) if is_call else norm_cdf(d1) - 1.0
    gamma = pdf / (forward * sigma * sqrt_t)
    vega = forward * pdf * sqrt_t / 100.0
    theta = -forward * pdf * sigma / (2.0 * sqrt_t) / 365.0
    rho = strike * t * norm_cdf(d2) / 100.0 if is_call else -strike * t * norm_cdf(-d2) / 100.0
    return Greeks(delta, gamma, vega, theta, rho)


def black76_value_greeks(
    forward: float, strike: float, t: float, sigma: float, is_call: bool
) -> tuple[float, float, float, float, float, float]:
    """(value, delta, gamma, vega, theta, rho): `black76(...)` (rate 0) and `black76_greeks(...)`
    in one pass, bit for bit the same floats: the same operations in the same order, with d1,
    d2 and the normal's values computed once instead of twice, and no `Greeks` (a frozen
    dataclass costs a microsecond to make; an Amberdata snapshot prints them all)."""
    t = max(t, MIN_T)
    sqrt_t = math.sqrt(t)
    sd = sigma * sqrt_t
    d1 = (math.log(forward / strike) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    n_d1 = norm_cdf(d1)
    pdf = norm_pdf(d1)
    # black76 multiplies by exp(-rate * t), exactly 1.0 at rate 0.
    if is_call:
        n_d2 = norm_cdf(d2)
        value = forward * n_d1 - strike * n_d2
        delta = n_d1
        rho = strike * t * n_d2 / 100.0
    else:
        n_minus_d2 = norm_cdf(-d2)
        value = strike * n_minus_d2 - forward * norm_cdf(-d1)
        delta = n_d1 - 1.0
        rho = -strike * t * n_minus_d2 / 100.0
    gamma = pdf / (forward * sigma * sqrt_t)
    vega = forward * pdf * sqrt_t / 100.0
    theta = -forward * pdf * sigma / (2.0 * sqrt_t) / 365.0
    return value, delta, gamma, vega, theta, rho


IV_LOW, IV_HIGH = 1e-4, 5.0  # the implied volatilities `implied_vol` answers within
_IV_TOLERANCE = 1e-13  # relative: as close as the float arithmetic of black76 resolves anyway
_SQRT_2PI = math.sqrt(2.0 * math.pi)


def implied_vol(price: float, forward: float, strike: float, t: float, is_call: bool) -> float:
    """Black-76 implied volatility, clamped to [IV_LOW, IV_HIGH]. Returns 0.0 for a price at or
    below intrinsic value.

    Newton's method, started where it converges fast and surely: the Brenner-Subrahmanyam
    at-the-money estimate, or the inflection point of the price in sigma when that is larger
    (Manaster-Koehler: from there Newton's iterates move monotonically to the root). Each step
    also narrows a bracket, and a step that would leave the bracket bisects instead, so it
    cannot diverge at the wings. About five valuations where bisection took sixty (Amberdata
    snapshots value the bid and the ask of every contract)."""
    intrinsic = max(0.0, forward - strike) if is_call else max(0.0, strike - forward)
    if price <= intrinsic + 1e-12:
        return 0.0
    t = max(t, MIN_T)
    lo, hi = IV_LOW, IV_HIGH
    if price >= black76(forward, strike, t, hi, is_call):
        return hi
    if price <= black76(forward, strike, t, lo, is_call):
        return lo
    sqrt_t = math.sqrt(t)
    log_moneyness = math.log(forward / strike)
    sigma = max(_SQRT_2PI * price / (forward * sqrt_t), math.sqrt(2.0 * abs(log_moneyness) / t))
    if not lo < sigma < hi:
        sigma = 0.5 * (lo + hi)
    for _ in range(100):
        sd = sigma * sqrt_t
        d1 = log_moneyness / sd + 0.5 * sd
        d2 = d1 - sd
        if is_call:
            value = forward * norm_cdf(d1) - strike * norm_cdf(d2)
        else:
            value = strike * norm_cdf(-d2) - forward * norm_cdf(-d1)
        diff = value - price
        if diff == 0.0:  # on the root: a step of zero would fall back to bisecting away from it
            return sigma
        if diff < 0.0:
            lo = sigma
        else:
            hi = sigma
        vega = forward * norm_pdf(d1) * sqrt_t
        step = diff / vega if vega > 0.0 else math.inf
        new = sigma - step
        if not lo < new < hi:  # Newton would leave the bracket: bisect
            new = 0.5 * (lo + hi)
        if abs(new - sigma) <= _IV_TOLERANCE * sigma or hi - lo <= _IV_TOLERANCE * hi:
            return new
        sigma = new
    return sigma


# Where `implied_vol_percents` stops: a Newton step this small (relative) leaves an error of
# about its square, a bisection one of at most twice it: under 1e-9 in sigma either way.
_PERCENTS_TOLERANCE = 1e-10


def implied_vol_percents(
    prices: Sequence[float],
    forward: float,
    strike: float,
    t: float,
    is_call: bool,
    guess: float | None = None,
) -> list[float]:
    """`round(implied_vol(price, forward, strike, t, is_call) * 100.0, 2)` of each price (the
    percent Amberdata prints): the same numbers, in less than half the time.

    `implied_vol` brackets the price between two valuations before its Newton iteration, iterates
    to 1e-13, and when Newton lands exactly on the root it bisects up from the bracket's low end
    again (about 25 more valuations: an exact hit sets hi = sigma, so Newton's zero step counts
    as leaving the bracket). Here Newton runs alone, with norm_cdf and norm_pdf written out, to
    1e-9 in sigma, stopping at an exact root; with a `guess` (the mark's volatility: the market
    quotes the bid and the ask around it) its first step is shared by all the prices. Both
    answers are that close to the root of one monotone function, give or take its float noise
    (about (forward + strike) * 1e-15 in value, so that over vega in sigma), so they round to the
    same hundredth of a percent unless sigma is within 1e-8 of a half-hundredth. `implied_vol`
    itself answers those, and any sigma not clearly inside its clamps or where the price is too
    flat in sigma to pin it to 1e-9."""
    intrinsic = max(0.0, forward - strike) if is_call else max(0.0, strike - forward)
    t = max(t, MIN_T)
    sqrt_t = math.sqrt(t)
    log_moneyness = math.log(forward / strike)
    flat = (forward + strike) * 1e-6  # a vega below this: float noise could move sigma 1e-9
    first: tuple[float, float, float] | None = None  # (sigma, value, vega) at the guess
    if guess is not None and IV_LOW < guess < IV_HIGH:
        first = (guess, *_value_vega(guess, forward, strike, sqrt_t, log_moneyness, is_call))
    out: list[float] = []
    for price in prices:
        if price <= intrinsic + 1e-12:
            out.append(0.0)
            continue
        sigma, vega = _newton_vol(price, forward, strike, t, sqrt_t, log_moneyness, is_call, first)
        hundredths = sigma * 10_000.0
        if (
            not 2.0 * IV_LOW < sigma < IV_HIGH - 0.01
            or vega < flat
            or abs(hundredths - math.floor(hundredths) - 0.5) < 1e-4
        ):
            sigma = implied_vol(price, forward, strike, t, is_call)
        out.append(round(sigma * 100.0, 2))
    return out


def _value_vega(
    sigma: float,
    forward: float,
    strike: float,
    sqrt_t: float,
    log_moneyness: float,
    is_call: bool,
) -> tuple[float, float]:
    """Undiscounted Black-76 value and vega (per unit of sigma), as `implied_vol` computes them."""
    sd = sigma * sqrt_t
    d1 = log_moneyness / sd + 0.5 * sd
    d2 = d1 - sd
    erfc = math.erfc
    if is_call:
        value = forward * (0.5 * erfc(-d1 / _SQRT2)) - strike * (0.5 * erfc(-d2 / _SQRT2))
    else:
        value = strike * (0.5 * erfc(d2 / _SQRT2)) - forward * (0.5 * erfc(d1 / _SQRT2))
    return value, forward * (_INV_SQRT_2PI * math.exp(-0.5 * d1 * d1)) * sqrt_t


def _newton_vol(
    price: float,
    forward: float,
    strike: float,
    t: float,
    sqrt_t: float,
    log_moneyness: float,
    is_call: bool,
    first: tuple[float, float, float] | None,
) -> tuple[float, float]:
    """`implied_vol`'s safeguarded Newton iteration, to `_PERCENTS_TOLERANCE`, stopping at an
    exact root; `first`: its first point already valued. The answer and the last vega. Any start
    converges: a step that would leave the bracket bisects instead."""
    lo, hi = IV_LOW, IV_HIGH
    if first is not None:
        sigma, value, vega = first
    else:
        sigma = max(_SQRT_2PI * price / (forward * sqrt_t), math.sqrt(2.0 * abs(log_moneyness) / t))
        if not lo < sigma < hi:
            sigma = 0.5 * (lo + hi)
        value, vega = _value_vega(sigma, forward, strike, sqrt_t, log_moneyness, is_call)
    for _ in range(100):
        diff = value - price
        if diff == 0.0:
            return sigma, vega
        if diff < 0.0:
            lo = sigma
        else:
            hi = sigma
        step = diff / vega if vega > 0.0 else math.inf
        new = sigma - step
        if not lo < new < hi:
            new = 0.5 * (lo + hi)
        if abs(new - sigma) <= _PERCENTS_TOLERANCE * sigma or hi - lo <= _PERCENTS_TOLERANCE * hi:
            return new, vega
        sigma = new
        value, vega = _value_vega(sigma, forward, strike, sqrt_t, log_moneyness, is_call)
    return sigma, vega


def smile_vol(atm_vol: float, forward: float, strike: float, t: float) -> float:
    """A skewed smile: puts richer than calls, wings richer than the money, flatter with time.

    x is log-moneyness in standard deviations; the shape is the usual equity-index one and is
    applied to crypto too (a mild put skew is what Deribit shows most days).
    """
    t = max(t, 1.0 / 365.0)
    x = math.log(strike / forward) / (atm_vol * math.sqrt(t))
    x = max(-4.0, min(4.0, x))
    vol = atm_vol * (1.0 - 0.06 * x + 0.025 * x * x)
    return max(0.05, min(4.0, vol))
