"""The Amberdata snapshot's fast paths give the numbers of the plain ones: the one-pass Black-76
value and greeks bit for bit, the implied vols to the hundredth of a percent they are printed at,
and the book's draws the ones `random.Random`'s methods make."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mocks.amberdata import streams
from mocks.sim import pricing

forwards = st.floats(100.0, 200_000.0).map(lambda f: round(f, 2))
moneyness = st.floats(-1.5, 1.5)
years = st.floats(1e-7, 3.0)
vols = st.floats(0.01, 4.5)


@settings(max_examples=500, deadline=None)
@given(forwards, moneyness, years, vols, st.booleans())
def test_black76_value_greeks_is_black76_and_its_greeks_bit_for_bit(
    f: float, m: float, t: float, sigma: float, is_call: bool
) -> None:
    k = round(f * math.exp(m), 0) or 1.0
    value, delta, gamma, vega, theta, rho = pricing.black76_value_greeks(f, k, t, sigma, is_call)
    g = pricing.black76_greeks(f, k, t, sigma, is_call)
    assert value == pricing.black76(f, k, t, sigma, is_call)
    assert (delta, gamma, vega, theta, rho) == (g.delta, g.gamma, g.vega, g.theta, g.rho)


@settings(max_examples=1000, deadline=None)
@given(
    forwards,
    moneyness,
    years,
    vols,
    st.booleans(),
    st.lists(st.floats(-0.5, 0.5), min_size=1, max_size=3),
    st.one_of(st.none(), st.floats(0.0, 6.0)),
)
def test_implied_vol_percents_are_implied_vol_to_the_hundredth(
    f: float,
    m: float,
    t: float,
    sigma: float,
    is_call: bool,
    offsets: list[float],
    guess: float | None,
) -> None:
    """Prices as the market quotes them: whole ticks of 0.0005 of the forward near the value."""
    k = round(f * math.exp(m), 0) or 1.0
    value = pricing.black76(f, k, t, sigma, is_call) / f
    prices = [round(max(1, round(value * math.exp(o) / 0.0005)) * 0.0005, 4) * f for o in offsets]
    got = pricing.implied_vol_percents(prices, f, k, t, is_call, guess)
    assert got == [round(pricing.implied_vol(p, f, k, t, is_call) * 100.0, 2) for p in prices]


@given(st.integers(0, 2**64 - 1))
def test_book_draws_are_random_randoms(seed: int) -> None:
    mine, theirs = random.Random(seed), random.Random(seed)
    for _ in range(50):
        assert streams._below(mine.getrandbits, 12) == theirs.randrange(0, 12)
        assert 1 + streams._below(mine.getrandbits, 11) == theirs.randrange(1, 12)
        assert streams._step(mine.getrandbits) == theirs.choice((1, 1, 2, 3, 4))
        if theirs.random() < 0.08:
            tenths = theirs.randrange(100, 1000)
        else:
            tenths = 1 + int(theirs.paretovariate(1.1)) % 400
        assert streams._level_amount(mine.getrandbits, mine.random) == streams.amount_of(tenths)
