"""The Amberdata client's own parsing: Deribit instrument names, feedlab's subscription syntax,
plan limits, timestamps, and pushed results decoded from the exact JSON of the vendor's docs."""

from __future__ import annotations

import copy
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.amberdata import (
    OHLCV,
    OPEN_INTERESTS,
    ORDER_SNAPSHOTS,
    STREAMS,
    TICKERS,
    TRADES,
    Ohlcv,
    OpenInterest,
    OptionContract,
    OrderBookSnapshot,
    PriceLevel,
    Ticker,
    Trade,
    decode_result,
    event_as_json,
    event_as_row,
    format_instrument,
    parse_instrument,
    parse_subscription,
    plan_limits,
)
from clients.amberdata.invented import exchange_time_ns
from clients.common import GapNotice, Rejected, Status

VENDOR_DOC = Path("/work/shared/vendor-docs/amberdata-options-order-snapshots.txt")

# The documented snapshot, verbatim (vendor-docs/amberdata-options-order-snapshots.txt).
DOC_SNAPSHOT_JSON = """{
  "exchange": "deribit",
  "instrument": "BTC-24JUN22-15000-P",
  "timestamp": 1638355080000,
  "exchangeTimestamp": 1638355095066,
  "exchangeTimestampNanoseconds": 0,
  "underlyingPrice": 60041.9,
  "underlyingIndex": "BTC-24JUN22",
  "stats": {
    "volume": 1.1,
    "price_change": -27.2727,
    "low": 0.004,
    "high": 0.0055
  },
  "state": "open",
  "openInterest": 430.5,
  "minPrice": 0.0001,
  "maxPrice": 0.021,
  "markPrice": 0.0050063,
  "markIv": 102.15,
  "lastPrice": 0.004,
  "interestRate": 0.0,
  "indexPrice": 56942.12,
  "greeks": {
    "vega": 16.13665,
    "theta": -4.02251,
    "rho": -6.43421,
    "gamma": 0.0,
    "delta": -0.01408
  },
  "estimatedDeliveryPrice": 56942.12,
  "bids": [
    [0.0045, 34.5],
    [0.004, 15.0],
    [0.002, 10.0],
    [0.0005, 0.2]
  ],
  "bidIv": 100.21,
  "bestBidPrice": 0.0045,
  "bestBidAmount": 34.5,
  "bestAskPrice": 0.0055,
  "bestAskAmount": 3.2,
  "asks": [
    [0.0055, 3.2],
    [0.006, 1.0],
    [0.0065, 30.6],
    [0.007, 17.0],
    [0.0085, 10.0],
    [0.022, 0.1],
    [0.03, 0.1],
    [0.032, 0.5],
    [0.036, 0.1],
    [0.0405, 0.1],
    [0.041, 0.1],
    [0.05, 0.1],
    [0.06, 0.1],
    [0.075, 0.1],
    [0.085, 0.1],
    [0.1, 0.1],
    [0.125, 0.1],
    [0.15, 0.1],
    [0.175, 0.1],
    [0.2, 0.1],
    [0.225, 0.1],
    [0.25, 0.1],
    [0.5, 90.0]
  ],
  "askIv": 103.94,
  "sequence": 37544581750,
  "metadata": null
}"""


def doc_snapshot() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DOC_SNAPSHOT_JSON)
    return result


@pytest.mark.skipif(not VENDOR_DOC.exists(), reason="vendor docs not in this checkout")
def test_the_sample_is_the_one_in_the_vendor_docs() -> None:
    text = VENDOR_DOC.read_text()
    assert DOC_SNAPSHOT_JSON[1:-1].strip() in text


# -- Deribit instrument names -----------------------------------------------------------------


def test_parses_the_deribit_names_of_the_docs() -> None:
    assert parse_instrument("BTC-24JUN22-15000-P") == OptionContract(
        "BTC", dt.date(2022, 6, 24), Decimal(15000), "P"
    )
    old = parse_instrument("BTC-5JUL16-650-C")
    assert old.expiration == dt.date(2016, 7, 5) and old.is_call and old.strike == 650
    assert old.expiry == dt.datetime(2016, 7, 5, 8, 0, tzinfo=dt.UTC)
    linear = parse_instrument("XRP_USDC-28JUN24-0d625-C")
    assert linear.underlying == "XRP_USDC" and linear.strike == Decimal("0.625")


def test_formats_without_zero_padding_the_day() -> None:
    contract = OptionContract("BTC", dt.date(2016, 7, 5), Decimal(650), "C")
    assert format_instrument(contract) == "BTC-5JUL16-650-C"
    assert format_instrument(parse_instrument("XRP_USDC-28JUN24-0d625-C")) == (
        "XRP_USDC-28JUN24-0d625-C"
    )


@pytest.mark.parametrize(
    "name",
    [
        "BTC-PERPETUAL",
        "BTC-24JUN22",
        "BTC-24JUN22-15000-X",
        "BTC-31FEB22-15000-P",
        "BTC-24JUX22-15000-P",
        "btc-24JUN22-15000-P",
        "BTC-USD-220624-15000-P",
        "BTC-24JUN22-15000-P ",
        "",
    ],
)
def test_refuses_what_is_not_a_deribit_option(name: str) -> None:
    with pytest.raises(ValueError):
        parse_instrument(name)


contracts = st.builds(
    OptionContract,
    underlying=st.from_regex(r"[A-Z]{2,5}(_USDC)?", fullmatch=True),
    expiration=st.dates(dt.date(2000, 1, 1), dt.date(2099, 12, 31)),
    strike=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(10**7), places=4),
    right=st.sampled_from(["C", "P"]),
)


@given(contracts)
def test_instrument_names_round_trip(contract: OptionContract) -> None:
    name = format_instrument(contract)
    assert parse_instrument(name) == contract
    assert format_instrument(parse_instrument(name)) == name
    assert "-0" not in name.split("-")[1][:2]  # the day is never zero-padded


# -- subscription syntax ----------------------------------------------------------------------


def test_subscription_syntax() -> None:
    sub = parse_subscription("market:options:trades:BTC-24JUN22-15000-P@deribit")
    assert (sub.stream, sub.instrument, sub.exchange) == (TRADES, "BTC-24JUN22-15000-P", "deribit")
    assert parse_subscription("market:options:trades:BTC-24JUN22-15000-P").key == sub.key
    assert parse_subscription(f"{ORDER_SNAPSHOTS}:ETH-1JAN25-3000-C@OKEX").exchange == "okex"
    assert sub.params() == [TRADES, {"instrument": "BTC-24JUN22-15000-P", "exchange": "deribit"}]


@pytest.mark.parametrize(
    "text",
    [
        "market:spot:tickers:BTC-24JUN22-15000-P",
        "market:options:order:snapshots",
        "market:options:trades:",
        "BTC-24JUN22-15000-P",
        "market:options:trades:BTC 24JUN22",
        "market:options:trades:BTC-24JUN22-15000-P@a@b",
    ],
)
def test_subscription_syntax_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_subscription(text)


@given(
    st.sampled_from(STREAMS),
    st.from_regex(r"[A-Z0-9_*.-]{1,30}", fullmatch=True),
    st.sampled_from(["deribit", "okex", "bybit"]),
)
def test_subscription_round_trip(stream: str, instrument: str, exchange: str) -> None:
    sub = parse_subscription(f"{stream}:{instrument}@{exchange}")
    assert (sub.stream, sub.instrument, sub.exchange) == (stream, instrument, exchange)
    assert parse_subscription(sub.key) == sub


def test_plan_limits_by_key_prefix() -> None:
    assert plan_limits("UAT0123") == (5, 100)
    assert plan_limits("UAO0123") == (20, 100)
    assert plan_limits("UAK0123") == (None, None)
    assert plan_limits("anything") == (None, None)
    assert plan_limits(None) == (None, None)


# -- timestamps -------------------------------------------------------------------------------


def test_exchange_time_adds_the_nanoseconds_below_the_millisecond() -> None:
    assert exchange_time_ns(1638355095066, 0) == 1638355095066_000000
    assert exchange_time_ns(1638355095066, 123456) == 1638355095066_123456
    assert exchange_time_ns(1638355095066, None) == 1638355095066_000000
    # nanoseconds of the second, agreeing with the timestamp's milliseconds
    assert exchange_time_ns(1638355095066, 66_123_456) == 1638355095_066123456


@given(st.integers(0, 4_000_000_000_000), st.integers(0, 999_999))
def test_exchange_time_is_exact(ms: int, nanos: int) -> None:
    assert exchange_time_ns(ms, nanos) == ms * 1_000_000 + nanos


# -- decoding pushed results ------------------------------------------------------------------


def test_decodes_the_documented_snapshot() -> None:
    event = decode_result(ORDER_SNAPSHOTS, doc_snapshot())
    assert isinstance(event, OrderBookSnapshot)
    assert event.symbol == "BTC-24JUN22-15000-P"
    assert event.sequence == 37544581750
    assert event.timestamp_ns == 1638355095066_000000
    assert event.snapshot_ns == 1638355080000_000000
    assert event.contract == parse_instrument("BTC-24JUN22-15000-P")
    assert event.exchange == "deribit" and event.state == "open"
    assert event.bids[0] == PriceLevel(0.0045, 34.5) and len(event.bids) == 4
    assert event.asks[-1] == PriceLevel(0.5, 90.0) and len(event.asks) == 23
    assert (event.best_bid_price, event.best_bid_amount) == (0.0045, 34.5)
    assert (event.best_ask_price, event.best_ask_amount) == (0.0055, 3.2)
    assert (event.bid_iv, event.mark_iv, event.ask_iv) == (100.21, 102.15, 103.94)
    assert event.greeks is not None and event.greeks.delta == -0.01408
    assert event.greeks.vega == 16.13665 and event.greeks.gamma == 0.0
    assert event.stats is not None and event.stats.price_change == -27.2727
    assert event.stats.volume_usd is None
    assert event.underlying_price == 60041.9 and event.underlying_index == "BTC-24JUN22"
    assert event.open_interest == 430.5 and event.mark_price == 0.0050063
    assert event.metadata is None


def test_nulls_where_the_docs_allow_them() -> None:
    result: dict[str, Any] = {
        key: None for key in doc_snapshot() if key not in ("instrument", "exchange", "timestamp")
    }
    result |= {"instrument": "BTC-24JUN22-15000-P", "timestamp": 1638355080000}
    event = decode_result(ORDER_SNAPSHOTS, result)
    assert isinstance(event, OrderBookSnapshot)
    assert event.sequence is None and event.bids == () and event.greeks is None
    assert event.timestamp_ns == 1638355080000_000000  # no exchange time: Amberdata's timestamp
    assert event.exchange == "deribit"  # from the subscription when the result omits it


def test_unknown_fields_are_tolerated() -> None:
    result = doc_snapshot() | {"newField": [1, 2], "stats": doc_snapshot()["stats"] | {"x": 1}}
    assert isinstance(decode_result(ORDER_SNAPSHOTS, result), OrderBookSnapshot)


@pytest.mark.parametrize(
    "change",
    [
        {"sequence": "37544581750"},
        {"bids": [[0.0045]]},
        {"bids": "none"},
        {"markPrice": "0.005"},
        {"greeks": [1, 2]},
        {"instrument": None},
        {"timestamp": None, "exchangeTimestamp": None},
        {"exchangeTimestamp": True},
    ],
)
def test_results_contradicting_the_docs_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        decode_result(ORDER_SNAPSHOTS, doc_snapshot() | change)


def test_refuses_non_objects() -> None:
    results: list[object] = [None, [], "x", 5]
    for result in results:
        with pytest.raises(ValueError):
            decode_result(TRADES, result)


def test_decodes_a_ticker() -> None:
    result = {k: v for k, v in doc_snapshot().items() if k not in ("bids", "asks")}
    result |= {"bid": 0.0045, "ask": 0.0055, "mid": 0.005, "last": 0.004, "bidVolume": 34.5}
    result |= {"askVolume": 3.2, "baseVolume": 1.1, "quoteVolume": 6000.0, "settlementPrice": 0.01}
    event = decode_result(TICKERS, result)
    assert isinstance(event, Ticker)
    assert (event.bid, event.ask, event.mid, event.last) == (0.0045, 0.0055, 0.005, 0.004)
    assert event.bid_volume == 34.5 and event.quote_volume == 6000.0
    assert event.settlement_price == 0.01 and event.sequence == 37544581750


def test_decodes_a_trade_with_its_trade_sequence() -> None:
    result: dict[str, Any] = {
        "instrument": "BTC-24JUN22-15000-P",
        "exchange": "deribit",
        "exchangeTimestamp": 1638355095066,
        "exchangeTimestampNanoseconds": 250,
        "isBuySide": False,
        "price": 0.004,
        "size": 1.5,
        "tradeId": "170936045",
        "tradeSequence": 1001,
        "tickDirection": 2,
        "markPrice": 0.0050063,
        "iv": 98.5,
        "indexPrice": 56942.12,
    }
    event = decode_result(TRADES, result)
    assert isinstance(event, Trade)
    assert event.sequence == 1001 and event.timestamp_ns == 1638355095066_000250
    assert (event.price, event.size, event.is_buy_side) == (0.004, 1.5, False)
    assert event.trade_id == "170936045" and event.tick_direction == 2 and event.iv == 98.5
    assert decode_result(TRADES, result | {"tradeId": 170936045}).trade_id == "170936045"  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        decode_result(TRADES, {k: v for k, v in result.items() if k != "price"})


def test_decodes_ohlcv_and_open_interest() -> None:
    bar = decode_result(
        OHLCV,
        {
            "exchange": "deribit",
            "instrument": "ETH-5JUL24-3000-C",
            "timestamp": 1720000020000,
            "open": 0.01,
            "high": 0.012,
            "low": 0.009,
            "close": 0.011,
            "volume": 42.0,
        },
    )
    assert isinstance(bar, Ohlcv)
    assert bar.sequence is None and bar.timestamp_ns == 1720000020000_000000
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (0.01, 0.012, 0.009, 0.011, 42)
    assert bar.contract is not None and bar.contract.underlying == "ETH"
    oi = decode_result(
        OPEN_INTERESTS,
        {"instrument": "ETH-5JUL24-3000-C", "exchange": "okex", "timestamp": 1, "value": 9.5},
    )
    assert isinstance(oi, OpenInterest) and oi.value == 9.5 and oi.exchange == "okex"


def test_names_that_are_not_deribit_style_have_no_contract() -> None:
    result = copy.deepcopy(doc_snapshot()) | {"instrument": "BTC-USD-220624-15000-P"}
    event = decode_result(ORDER_SNAPSHOTS, result, "okex")
    assert event.symbol == "BTC-USD-220624-15000-P" and event.contract is None


# -- what `watch` prints ----------------------------------------------------------------------


def test_json_lines_carry_the_type_and_every_field() -> None:
    event = decode_result(ORDER_SNAPSHOTS, doc_snapshot())
    line = json.loads(event_as_json(event))
    assert line["type"] == "OrderBookSnapshot"
    assert line["symbol"] == "BTC-24JUN22-15000-P" and line["sequence"] == 37544581750
    assert line["contract"] == {
        "underlying": "BTC",
        "expiration": "2022-06-24",
        "strike": "15000",
        "right": "P",
    }
    assert line["bids"][0] == {"price": 0.0045, "amount": 34.5}
    gap = json.loads(event_as_json(GapNotice(("BTC-24JUN22-15000-P",), 1.0, 2.0, "reconnected")))
    assert gap == {
        "type": "GapNotice",
        "contracts": ["BTC-24JUN22-15000-P"],
        "start": 1.0,
        "end": 2.0,
        "reason": "reconnected",
    }


def test_table_rows_are_aligned() -> None:
    snapshot = event_as_row(decode_result(ORDER_SNAPSHOTS, doc_snapshot()))
    assert snapshot.startswith("10:38:15.066 snapshot  BTC-24JUN22-15000-P")
    assert "34.5 x 0.0045 / 0.0055 x 3.2" in snapshot
    others = [
        event_as_row(Status("amberdata", "connected", "connection 0")),
        event_as_row(Rejected("amberdata", "x", "400: nope")),
        event_as_row(GapNotice(("A",), 1.0, 2.0, "reconnected")),
    ]
    detail_column = snapshot.index("34.5")
    assert all(len(row) > detail_column for row in others)
    assert [row[detail_column - 2 : detail_column] for row in others] == ["  "] * 3
