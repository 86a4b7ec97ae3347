"""Vendor symbologies (mock side), Eastern time with daylight saving, option pricing."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mocks.sim import pricing
from mocks.sim.clock import (
    EASTERN,
    MarketClock,
    MarketHours,
    eastern_date_and_ms,
    from_unix_ns,
    unix_ns,
)
from mocks.sim.contracts import Kind, OptionContract, underlying_of
from mocks.sim.symbols import (
    SymbolError,
    format_deribit,
    format_occ,
    from_theta,
    parse_deribit,
    parse_occ,
    to_theta,
)

roots = st.from_regex(r"[A-Z]{1,4}[0-9]?", fullmatch=True)
expirations = st.dates(dt.date(2000, 1, 1), dt.date(2099, 12, 31))
rights = st.sampled_from("CP")


@given(roots, expirations, st.integers(1, 99_999_999), rights)
def test_occ_round_trips(root: str, expiration: dt.date, strike: int, right: str) -> None:
    contract = OptionContract(root, expiration, strike, right)
    assert parse_occ(format_occ(contract)) == contract


@given(roots, st.dates(dt.date(1990, 1, 1), dt.date(2099, 12, 31)), st.integers(1, 10**9), rights)
def test_contract_key_is_the_occ_layout(
    root: str, expiration: dt.date, strike: int, right: str
) -> None:
    # The market seeds each contract's generators by its key: the same seed, the same streams
    # only while the key keeps this layout (it is computed once, not by strftime).
    contract = OptionContract(root, expiration, strike, right)
    assert contract.key == f"{root}{expiration:%y%m%d}{right}{strike:08d}"


@given(roots, expirations, st.integers(1, 10**9), rights)
def test_theta_round_trips_including_strings(
    root: str, expiration: dt.date, strike: int, right: str
) -> None:
    contract = OptionContract(root, expiration, strike, right)
    fields = to_theta(contract)
    assert from_theta(*fields) == contract
    assert from_theta(*(str(f) for f in fields)) == contract


@given(
    st.sampled_from(["BTC", "ETH", "SOL", "XRP_USDC"]), expirations, st.integers(1, 10**8), rights
)
def test_deribit_round_trips(root: str, expiration: dt.date, strike: int, right: str) -> None:
    contract = OptionContract(root, expiration, strike, right)
    assert parse_deribit(format_deribit(contract)) == contract


def test_documented_names() -> None:
    c = parse_occ("O:SPY251219C00650000")
    assert (c.root, c.expiration, c.strike, c.right) == ("SPY", dt.date(2025, 12, 19), 650.0, "C")
    assert parse_occ("O:AMC1210827C00037000").underlying == "AMC"  # adjusted contract
    assert format_deribit(parse_deribit("BTC-5JUL16-650-C")) == "BTC-5JUL16-650-C"
    assert to_theta(parse_occ("O:SPXW240315C04800000")) == ("SPXW", 20240315, 4800000, "C")
    assert underlying_of("SPXW") == "SPX" and underlying_of("XRP_USDC") == "XRP"


@pytest.mark.parametrize(
    "bad",
    [
        "O:SPY251219X00650000",
        "SPY251219C00650000",
        "O:SPY251319C00650000",
        "O:SPY251219C00000000",
        "",
    ],
)
def test_bad_occ_is_refused(bad: str) -> None:
    with pytest.raises(SymbolError):
        parse_occ(bad)


@pytest.mark.parametrize(
    "bad", ["BTC-05JUL16-650-C", "BTC-5JLY16-650-C", "BTC-31FEB25-1-C", "BTC-5JUL16-650"]
)
def test_bad_deribit_is_refused(bad: str) -> None:
    with pytest.raises(SymbolError):
        parse_deribit(bad)


# -- Eastern time -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("utc", "date", "ms_of_day"),
    [
        # 2025-03-09: clocks spring forward at 02:00 EST -> 03:00 EDT
        ("2025-03-09T06:59:59+00:00", 20250309, (1 * 3600 + 59 * 60 + 59) * 1000),
        ("2025-03-09T07:00:00+00:00", 20250309, 3 * 3600 * 1000),
        ("2025-03-10T13:30:00+00:00", 20250310, (9 * 3600 + 30 * 60) * 1000),  # EDT open
        # 2025-11-02: clocks fall back at 02:00 EDT -> 01:00 EST
        ("2025-11-02T05:59:59+00:00", 20251102, (1 * 3600 + 59 * 60 + 59) * 1000),
        ("2025-11-02T06:00:00+00:00", 20251102, 1 * 3600 * 1000),
        ("2025-11-03T14:30:00+00:00", 20251103, (9 * 3600 + 30 * 60) * 1000),  # EST open
    ],
)
def test_eastern_time_across_both_2025_switches(utc: str, date: int, ms_of_day: int) -> None:
    ts_ns = unix_ns(dt.datetime.fromisoformat(utc))
    assert eastern_date_and_ms(ts_ns) == (date, ms_of_day)


def test_clock_maps_run_seconds_to_unix_time() -> None:
    clock = MarketClock(dt.datetime(2025, 3, 14, 9, 30, tzinfo=EASTERN), epoch=100.0)
    expected = dt.datetime(2025, 3, 14, 9, 31, 30, 500000, tzinfo=EASTERN)
    assert from_unix_ns(clock.unix_ns(90.5), EASTERN) == expected
    assert clock.trio_time(5.0) == 105.0 and clock.t_of(clock.unix_ns(42.0)) == 42.0


def test_regular_hours() -> None:
    hours = MarketHours(always_open=False)

    def at(text: str) -> int:
        return unix_ns(dt.datetime.fromisoformat(text).replace(tzinfo=EASTERN))

    assert not hours.is_open(Kind.EQUITY, at("2025-03-14T09:29:59"))
    assert hours.is_open(Kind.EQUITY, at("2025-03-14T09:30:00"))
    assert not hours.is_open(Kind.INDEX, at("2025-03-14T16:00:00"))
    assert not hours.is_open(Kind.EQUITY, at("2025-04-18T12:00:00"))  # Good Friday
    assert hours.is_open(Kind.CRYPTO, at("2025-03-15T03:00:00"))
    assert hours.next_open_ns(Kind.EQUITY, at("2025-03-14T17:00:00")) == at("2025-03-17T09:30:00")
    assert MarketHours().is_open(Kind.EQUITY, at("2025-03-16T03:00:00"))  # always open


# -- pricing --------------------------------------------------------------------------------------


@given(
    st.floats(50, 500),
    st.floats(20, 800),
    st.floats(0.01, 3.0),
    st.floats(0.05, 1.5),
    st.floats(0.0, 0.08),
)
def test_put_call_parity(spot: float, strike: float, years: float, vol: float, rate: float) -> None:
    call = pricing.black_scholes(spot, strike, years, vol, True, rate)
    put = pricing.black_scholes(spot, strike, years, vol, False, rate)
    assert call - put == pytest.approx(spot - strike * math.exp(-rate * years), abs=1e-7 * spot)


def test_value_delta_gamma_matches_finite_differences() -> None:
    f, k, t, v = 100.0, 105.0, 0.25, 0.3
    value, delta, gamma = pricing.black76_value_delta_gamma(f, k, t, v, True)
    h = 1e-3
    up = pricing.black76(f + h, k, t, v, True)
    down = pricing.black76(f - h, k, t, v, True)
    assert value == pytest.approx(pricing.black76(f, k, t, v, True))
    assert delta == pytest.approx((up - down) / (2 * h), rel=1e-5)
    assert gamma == pytest.approx((up - 2 * value + down) / h**2, rel=1e-3)


def test_implied_vol_inverts_black76() -> None:
    price = pricing.black76(60000.0, 65000.0, 0.2, 0.7, True)
    assert pricing.implied_vol(price, 60000.0, 65000.0, 0.2, True) == pytest.approx(0.7, abs=1e-6)


def test_amberdata_documented_greeks_are_reproduced() -> None:
    """The documented snapshot: BTC-24JUN22-15000-P, 2021-12-01 10:38 UTC, F 60041.9, IV 102.15."""
    expiry = dt.datetime(2022, 6, 24, 8, tzinfo=dt.UTC)
    now = dt.datetime.fromtimestamp(1638355080000 / 1000, dt.UTC)
    years = (expiry - now).total_seconds() / (365 * 86400)
    g = pricing.black76_greeks(60041.9, 15000.0, years, 1.0215, False)
    assert g.delta == pytest.approx(-0.01408, abs=1e-5)
    assert g.vega == pytest.approx(16.13665, rel=1e-4)
    assert g.theta == pytest.approx(-4.02251, rel=1e-4)
    assert g.rho == pytest.approx(-6.43421, rel=1e-4)
    mark = pricing.black76(60041.9, 15000.0, years, 1.0215, False) / 60041.9
    assert mark == pytest.approx(0.0050063, rel=1e-4)


def test_smile_is_skewed_towards_puts() -> None:
    atm = pricing.smile_vol(0.2, 100.0, 100.0, 0.1)
    assert pricing.smile_vol(0.2, 100.0, 90.0, 0.1) > atm
    assert pricing.smile_vol(0.2, 100.0, 90.0, 0.1) > pricing.smile_vol(0.2, 100.0, 110.0, 0.1)
