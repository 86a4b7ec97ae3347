"""The simulated market: determinism, sane quotes, sequences, hours, synthesised contracts."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mocks.sim.chains import chain, expirations, third_friday
from mocks.sim.clock import EASTERN, from_unix_ns
from mocks.sim.events import Event, IndexPrice, OptionQuote, OptionTrade
from mocks.sim.market import MarketSettings, MarketSim
from mocks.sim.symbols import parse_deribit, parse_occ

START = dt.datetime(2025, 3, 14, 9, 30, tzinfo=EASTERN)
SPY = [parse_occ(f"O:SPY250321{r}00{k}000") for k in range(560, 591, 5) for r in "CP"]


def run(seed: int, seconds: float = 600.0, *, window: float = 1.0, **kw: object) -> list[Event]:
    sim = MarketSim(MarketSettings(seed=seed, start=START, **kw))  # type: ignore[arg-type]
    for contract in SPY:
        sim.watch(contract)
    sim.watch_underlying("SPX")
    events: list[Event] = []
    steps = round(seconds / window)
    for i in range(1, steps + 1):
        events += sim.advance(i * window)
    return events


def digest(events: list[Event]) -> str:
    return hashlib.sha256(repr(events).encode()).hexdigest()


def test_same_seed_same_stream_other_seed_different() -> None:
    assert digest(run(11)) == digest(run(11))
    assert digest(run(11)) != digest(run(12))


def test_stream_does_not_depend_on_how_time_is_sliced() -> None:
    assert digest(run(5, 120.0, window=0.05)) == digest(run(5, 120.0, window=120.0))


def test_a_contract_does_not_depend_on_what_else_is_watched() -> None:
    alone = MarketSim(MarketSettings(seed=3, start=START))
    alone.watch(SPY[0])
    crowded = MarketSim(MarketSettings(seed=3, start=START))
    for contract in reversed(SPY):
        crowded.watch(contract)
    mine = [e for e in crowded.advance(300.0) if getattr(e, "contract", None) == SPY[0]]
    assert alone.advance(300.0) == mine


def test_quotes_are_never_crossed_nor_negative_and_on_tick() -> None:
    quotes = [e for e in run(1, 900.0) if isinstance(e, OptionQuote)]
    assert len(quotes) > 1000
    for q in quotes:
        assert 0 <= q.bid < q.ask
        assert q.bid_size >= 0 and q.ask_size > 0
        assert (q.bid == 0) == (q.bid_size == 0)
        # SPY is a penny-pilot name: cents throughout
        assert round(q.bid * 100, 6) == round(q.bid * 100)
        assert round(q.ask * 100, 6) == round(q.ask * 100)


def test_non_penny_names_quote_in_nickels_from_three_dollars() -> None:
    sim = MarketSim(MarketSettings(seed=2, start=START))
    contract = parse_occ("O:JPM250418C00200000")  # deep in the money: far above $3
    sim.watch(contract)
    quotes = [e for e in sim.advance(600.0) if isinstance(e, OptionQuote)]
    assert quotes and all(q.bid >= 3.0 for q in quotes)
    assert all(round(q.ask * 20, 6) == round(q.ask * 20) for q in quotes)


def test_sequences_increase_per_contract_and_have_gaps_by_default() -> None:
    events = run(4, 900.0)
    last: dict[object, int] = {}
    gaps = 0
    for e in events:
        if isinstance(e, OptionQuote | OptionTrade):
            previous = last.get(e.contract)
            if previous is not None:
                assert e.sequence > previous
                gaps += e.sequence > previous + 1
            last[e.contract] = e.sequence
    assert gaps > 0  # "1, 2, 6, 9": not consecutive


def test_consecutive_mode() -> None:
    last: dict[object, int] = {}
    for e in run(4, 300.0, consecutive_sequences=True):
        if isinstance(e, OptionQuote | OptionTrade):
            if e.contract in last:
                assert e.sequence == last[e.contract] + 1
            last[e.contract] = e.sequence


def test_timestamps_are_monotone_and_trades_sit_on_the_quotes() -> None:
    events = run(6, 900.0)
    times = [e.ts_ns for e in events]
    assert times == sorted(times)
    standing: dict[object, OptionQuote] = {}
    trades = 0
    for e in events:
        if isinstance(e, OptionQuote):
            standing[e.contract] = e
        elif isinstance(e, OptionTrade):
            quote = standing[e.contract]
            assert quote.bid <= e.price <= quote.ask
            trades += 1
    assert trades > 10


def test_index_price_reports_once_a_second_only_on_change() -> None:
    reports = [e for e in run(8, 300.0) if isinstance(e, IndexPrice)]
    assert 100 < len(reports) <= 300
    seconds = [(e.ts_ns - reports[0].ts_ns) / 1e9 for e in reports]
    assert all(s == int(s) for s in seconds)
    assert all(a.price != b.price for a, b in itertools.pairwise(reports))


def test_real_market_hours_no_data_outside_and_no_print_at_the_open() -> None:
    before_open = dt.datetime(2025, 3, 14, 9, 0, tzinfo=EASTERN)
    sim = MarketSim(MarketSettings(seed=1, start=before_open, always_open=False))
    sim.watch(SPY[0])
    sim.watch_underlying("SPX")
    events = sim.advance(3600.0)
    assert events
    for e in events:
        local = from_unix_ns(e.ts_ns, EASTERN)
        assert local.time() >= dt.time(9, 30)
    first_index = next(e for e in events if isinstance(e, IndexPrice))
    assert from_unix_ns(first_index.ts_ns, EASTERN).time() >= dt.time(9, 30, 1)


def test_weekend_is_closed_in_real_hours_and_open_by_default() -> None:
    saturday = dt.datetime(2025, 3, 15, 12, 0, tzinfo=EASTERN)
    real = MarketSim(MarketSettings(seed=1, start=saturday, always_open=False))
    real.watch(SPY[0])
    assert real.advance(3600.0) == []
    always = MarketSim(MarketSettings(seed=1, start=saturday))
    always.watch(SPY[0])
    assert always.advance(3600.0)
    crypto = MarketSim(MarketSettings(seed=1, start=saturday, always_open=False))
    crypto.watch(parse_deribit("BTC-28MAR25-90000-C"))
    assert crypto.advance(600.0)  # crypto trades around the clock


class _CountingRandom(random.Random):
    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.draws = 0

    def random(self) -> float:
        self.draws += 1
        return super().random()


def test_a_path_across_a_weekend_draws_only_while_the_market_is_open() -> None:
    """From Friday 15:59 to Monday 09:31 in real hours: two minutes of moves and the weekend as
    one stretch of the closing price (a draw per half-second step of it cost 3-4 s of CPU per
    underlying). Prices still move at the open, and only while open."""
    friday = dt.datetime(2025, 3, 14, 15, 59, tzinfo=EASTERN)
    sim = MarketSim(MarketSettings(seed=1, start=friday, always_open=False))
    path = sim._path("SPY")
    path.rng = counting = _CountingRandom(7)  # gauss() draws through random()
    monday_0931 = (dt.datetime(2025, 3, 17, 9, 31, tzinfo=EASTERN) - friday).total_seconds()
    path.price_at(monday_0931)
    steps_open = round(120 / path.step)  # 15:59-16:00 and 09:30-09:31
    assert steps_open <= counting.draws <= 4 * steps_open
    close = path.price_at(60.0)
    assert path.price_at(monday_0931 - 60.0 - path.step) == close  # 09:29:59.5: still closed
    assert path.price_at(monday_0931) != close


def test_documentation_examples_stream_by_default_and_not_in_strict_mode() -> None:
    examples = [
        parse_occ("O:SPY251219C00650000"),
        parse_deribit("BTC-24JUN22-15000-P"),
        parse_occ("O:SPXW240315C04800000"),
    ]
    late = dt.datetime(2026, 11, 22, 3, 0, tzinfo=dt.UTC)  # all three long expired
    sim = MarketSim(MarketSettings(seed=1, start=late))
    for contract in examples:
        assert sim.watch(contract)
    seen = {e.contract for e in sim.advance(600.0) if isinstance(e, OptionQuote)}
    assert seen == set(examples)
    strict = MarketSim(MarketSettings(seed=1, start=late, strict=True))
    assert not any(strict.watch(contract) for contract in examples)
    assert strict.advance(600.0) == []


def test_unknown_roots_are_synthesised_with_a_plausible_spot() -> None:
    sim = MarketSim(MarketSettings(seed=9, start=START))
    spot = sim.underlying_price("ZZZQ")
    assert 10 <= spot <= 510
    sim.watch(parse_occ(f"O:ZZZQ250321C{round(spot) * 1000:08d}"))
    assert any(isinstance(e, OptionQuote) for e in sim.advance(120.0))


def test_crypto_quotes_are_fractions_of_the_underlying_on_deribit_ticks() -> None:
    sim = MarketSim(MarketSettings(seed=1, start=START))
    contract = parse_deribit("BTC-28MAR25-60000-C")
    sim.watch(contract)
    quotes = [e for e in sim.advance(600.0) if isinstance(e, OptionQuote)]
    assert quotes
    for q in quotes:
        assert 0 <= q.bid < q.ask < 1
        assert abs(q.ask / 0.0005 - round(q.ask / 0.0005)) < 1e-6
        assert q.bid_exchange == q.ask_exchange == "deribit"


def test_total_rate_setting_scales_the_offered_load() -> None:
    slow = run(1, 120.0, total_rate=20.0)
    fast = run(1, 120.0, total_rate=200.0)
    options = [e for e in fast if isinstance(e, OptionQuote | OptionTrade)]
    assert len(options) == pytest.approx(200 * 120, rel=0.15)
    assert len([e for e in slow if isinstance(e, OptionQuote | OptionTrade)]) < len(options) / 5


def test_chains_have_realistic_expirations_and_strikes() -> None:
    today = dt.date(2025, 3, 14)  # a Friday
    assert expirations("SPY", today, 3) == [today, dt.date(2025, 3, 17), dt.date(2025, 3, 18)]
    assert expirations("AAPL", today, 2) == [today, dt.date(2025, 3, 21)]
    assert expirations("SPX", today, 1) == [third_friday(2025, 3)] == [dt.date(2025, 3, 21)]
    spxw = chain("SPXW", today, 5612.0, expirations_count=1, strikes_each_side=2)
    assert {c.strike for c in spxw} == {5600.0, 5605.0, 5610.0, 5615.0, 5620.0}
    assert {c.expiration for c in spxw} == {today}  # same-day SPXW


@given(seed=st.integers(0, 2**32), minutes=st.integers(1, 5))
def test_any_seed_gives_sane_quotes(seed: int, minutes: int) -> None:
    sim = MarketSim(MarketSettings(seed=seed, start=START))
    sim.watch(SPY[seed % len(SPY)])
    for e in sim.advance(60.0 * minutes):
        if isinstance(e, OptionQuote):
            assert 0 <= e.bid < e.ask


def test_cboe_proprietary_index_options_quote_on_cboe_only() -> None:
    sim = MarketSim(MarketSettings(seed=1, start=START))
    sim.watch(parse_occ("O:SPXW250314C05600000"))
    sim.watch(SPY[0])
    venues: dict[str, set[str]] = {"SPXW": set(), "SPY": set()}
    for e in sim.advance(900.0):
        if isinstance(e, OptionQuote):
            venues[e.contract.root] |= {e.bid_exchange, e.ask_exchange}
        elif isinstance(e, OptionTrade):
            venues[e.contract.root].add(e.exchange)
    assert venues["SPXW"] == {"XCBO"}
    assert len(venues["SPY"]) > 5
