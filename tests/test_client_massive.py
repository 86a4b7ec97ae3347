"""Massive client, no network: the OCC ticker parser, event decoding from the documented JSON,
subscription syntax and limits, corrupt frames, sequence handling and the watch output."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import orjson
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from clients.common import Dropped, GapNotice, LimitError, Rejected, Status
from clients.massive import (
    MassiveClient,
    MinuteAggregate,
    OptionContract,
    Quote,
    SecondAggregate,
    Trade,
    decode_quote,
    decode_trade,
    event_json,
    event_row,
    format_ticker,
    parse_ticker,
)

# The documented samples (shared/protocols/massive.md, vendor-docs/massive-options-*.txt).
QUOTE_SAMPLE = (
    b'{"ev":"Q","sym":"O:SPY241220P00720000","bx":302,"ax":302,"bp":9.71,"ap":9.81,'
    b'"bs":17,"as":24,"t":1644506128351,"q":844090872}'
)
TRADE_SAMPLE = (
    b'{"ev":"T","sym":"O:AMC210827C00037000","x":65,"p":1.54,"s":1,"c":[233],'
    b'"t":1629820676333,"q":651921857}'
)
AGGREGATE_SAMPLE = (  # Massive's options aggregate page sample, fields as in the protocol file
    b'{"ev":"AM","sym":"O:ONEM220121C00025000","v":2,"av":8,"op":2.2,"vw":2.05,"o":2.05,'
    b'"c":2.05,"h":2.05,"l":2.05,"a":2.1312,"z":1,"s":1632419640000,"e":1632419700000}'
)


def test_ticker_of_the_documentation_is_the_650_call_of_december_2025() -> None:
    contract = parse_ticker("O:SPY251219C00650000")
    assert contract == OptionContract("SPY", dt.date(2025, 12, 19), "C", Decimal("650"))
    assert contract.ticker == "O:SPY251219C00650000"


def test_adjusted_and_weekly_roots_and_fractional_strikes_parse_exactly() -> None:
    assert parse_ticker("O:AMC1210827C00037000").root == "AMC1"
    assert parse_ticker("O:SPXW251219P05800000").strike == Decimal("5800")
    put = parse_ticker("O:F260116P00012500")
    assert (put.root, put.right, put.strike) == ("F", "P", Decimal("12.5"))
    assert parse_ticker("O:XYZ260116C00000125").strike == Decimal("0.125")


@pytest.mark.parametrize(
    "ticker",
    [
        "SPY251219C00650000",  # no O: prefix
        "O:SPY251219X00650000",  # right
        "O:SPY251319C00650000",  # month 13
        "O:SPY251219C0065000",  # 7 strike digits
        "O:spy251219C00650000",  # lower case
        "O:1SPY251219C00650000",  # root starting with a digit
        "O:ABCDEFG251219C00650000",  # root of 7
        "O:251219C00650000",  # no root
        "X:BTCUSD",
    ],
)
def test_malformed_tickers_are_refused(ticker: str) -> None:
    with pytest.raises(ValueError):
        parse_ticker(ticker)


contracts = st.builds(
    OptionContract,
    root=st.from_regex(r"[A-Z]{1,5}[0-9]?", fullmatch=True),
    expiration=st.dates(dt.date(2000, 1, 1), dt.date(2099, 12, 31)),
    right=st.sampled_from(["C", "P"]),
    strike=st.integers(0, 10**8 - 1).map(lambda milli: Decimal(milli) / 1000),
)


@given(contracts)
def test_ticker_round_trip(contract: OptionContract) -> None:
    assert parse_ticker(format_ticker(contract)) == contract


@given(
    st.from_regex(
        r"O:[A-Z][A-Z0-9]{0,5}[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])[CP][0-9]{8}",
        fullmatch=True,
    )
)
def test_every_well_formed_ticker_formats_back_to_itself(ticker: str) -> None:
    assert format_ticker(parse_ticker(ticker)) == ticker


def test_strike_beyond_eight_digits_cannot_be_written() -> None:
    with pytest.raises(ValueError):
        format_ticker(OptionContract("SPY", dt.date(2025, 12, 19), "C", Decimal("100000")))
    with pytest.raises(ValueError):
        format_ticker(OptionContract("SPY", dt.date(2025, 12, 19), "C", Decimal("1.0005")))


def test_documented_quote_decodes_with_ms_to_ns() -> None:
    quote = decode_quote(orjson.loads(QUOTE_SAMPLE))
    assert quote == Quote(
        "O:SPY241220P00720000", 844090872, 1644506128351_000_000,
        OptionContract("SPY", dt.date(2024, 12, 20), "P", Decimal("720")),
        302, 302, 9.71, 9.81, 17, 24,
    )  # fmt: skip


def test_documented_trade_decodes() -> None:
    trade = decode_trade(orjson.loads(TRADE_SAMPLE))
    assert trade.symbol == "O:AMC210827C00037000"
    assert trade.contract.strike == Decimal("37")
    assert (trade.exchange, trade.price, trade.size, trade.conditions) == (65, 1.54, 1, (233,))
    assert (trade.sequence, trade.timestamp_ns) == (651921857, 1629820676333_000_000)


@pytest.mark.parametrize(
    "broken",
    [
        {"q": "844090872"},  # sequence as a string
        {"bp": None},
        {"bs": True},  # booleans are not sizes
        {"sym": "SPY"},
        {"t": 1.5},
    ],
)
def test_quote_with_wrong_types_is_refused(broken: dict[str, Any]) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        decode_quote({**orjson.loads(QUOTE_SAMPLE), **broken})


# ---------------------------------------------------------------------------------------------
# Frames through the client's decoder (no connection: `_on_frame` on a fake session)


async def _feed(client: MassiveClient, *frames: bytes | str) -> list[object]:
    """Run frames through the client's frame handler and collect what it would deliver."""
    from clients.massive.client import _Session, _Slot  # the internals under test

    slot: _Slot = client._slots[0]
    session = _Session(slot, scope=trio.CancelScope())
    session.state = "ready"
    for frame in frames:
        await client._on_frame(session, frame)
    delivered: list[object] = []
    while True:
        try:
            delivered.append(client._receive_channel.receive_nowait())
        except trio.WouldBlock:
            return delivered


async def test_a_batch_mixing_channels_and_contracts_is_delivered_in_order() -> None:
    client = MassiveClient("key")
    frame = b"[" + QUOTE_SAMPLE + b"," + TRADE_SAMPLE + b"," + AGGREGATE_SAMPLE + b"]"
    got = await _feed(client, frame)
    assert [type(e) for e in got] == [Quote, Trade, MinuteAggregate]
    bar = got[2]
    assert isinstance(bar, MinuteAggregate)
    assert bar.sequence is None
    assert bar.timestamp_ns == bar.start_ns == 1632419640000_000_000
    assert bar.end_ns == 1632419700000_000_000
    assert (bar.volume, bar.accumulated_volume, bar.day_vwap, bar.average_size) == (2, 8, 2.1312, 1)
    assert bar.contract.root == "ONEM"


async def test_second_aggregates_are_their_own_type() -> None:
    client = MassiveClient("key")
    got = await _feed(client, b"[" + AGGREGATE_SAMPLE.replace(b'"AM"', b'"A"') + b"]")
    assert [type(e) for e in got] == [SecondAggregate]


async def test_corrupt_frames_and_events_are_counted_and_skipped() -> None:
    client = MassiveClient("key")
    got = await _feed(
        client,
        b"not json",
        b'{"ev":"Q"}',  # an object, not an array
        b"\xff\xfe",  # not UTF-8
        b'[1, {"no_ev": true}, {"ev": 7}]',
        b'[{"ev":"Q","sym":"O:SPY241220P00720000"}]',  # missing fields
        b'[{"ev":"XQ","pair":"BTC-USD"}]',  # a channel this client does not know
        b"[" + QUOTE_SAMPLE + b"]",
    )
    # Each frame or event skipped is reported, in order, before the quote that follows.
    assert [type(e) for e in got] == [Dropped] * 8 + [Quote]
    assert client.stats.frames_dropped_unparseable == 3
    assert client.stats.events_dropped_unparseable == 4
    assert client.stats.events_ignored_unknown == 1
    assert client.stats.dropped == 8
    drops = [e for e in got if isinstance(e, Dropped)]
    assert drops[0].reason.startswith("invalid JSON") and drops[0].frame == "b'not json'"
    assert drops[1].reason == "not a JSON array of events"
    assert [d.reason for d in drops[3:6]] == ["not an event: no `ev` string"] * 3
    assert drops[6].reason == "Q event without `q`"
    assert drops[7] == Dropped(
        "massive", "unknown event type 'XQ'", "{'ev': 'XQ', 'pair': 'BTC-USD'}"
    )


def _quote(sequence: int, ms: int = 1_765_000_000_000) -> bytes:
    return orjson.dumps(
        {"ev": "Q", "sym": "O:SPY251219C00650000", "bx": 1, "ax": 1, "bp": 1.0, "ap": 1.1,
         "bs": 1, "as": 1, "t": ms, "q": sequence}
    )  # fmt: skip


async def test_duplicates_dropped_gaps_in_q_are_not_loss_and_regressions_flagged() -> None:
    client = MassiveClient("key")
    frames = [b"[" + b",".join(_quote(q) for q in (1, 2, 6, 9, 6, 4, 10)) + b"]"]
    got = await _feed(client, *frames)
    assert [(e.sequence, e.late) for e in got if isinstance(e, Quote)] == [
        (1, False), (2, False), (6, False), (9, False), (4, True), (10, False),
    ]  # fmt: skip
    assert client.stats.duplicates_dropped == 1
    assert client.stats.regressions == 1


async def test_quote_and_trade_sequences_of_one_contract_are_separate() -> None:
    client = MassiveClient("key")
    trade = orjson.dumps(
        {"ev": "T", "sym": "O:SPY251219C00650000", "x": 1, "p": 1.0, "s": 1, "c": [],
         "t": 1, "q": 5}
    )  # fmt: skip
    got = await _feed(client, b"[" + _quote(5) + b"," + trade + b"]")
    assert [type(e) for e in got] == [Quote, Trade]


async def test_a_repeated_bar_is_a_duplicate() -> None:
    client = MassiveClient("key")
    got = await _feed(client, b"[" + AGGREGATE_SAMPLE + b"]", b"[" + AGGREGATE_SAMPLE + b"]")
    assert len(got) == 1
    assert client.stats.duplicates_dropped == 1


async def test_unnamed_error_outside_a_request_is_a_status() -> None:
    client = MassiveClient("key")
    got = await _feed(client, b'[{"ev":"status","status":"error","message":"Invalid JSON"}]')
    assert got == [Status("massive", "error", "Invalid JSON")]


# ---------------------------------------------------------------------------------------------
# Subscriptions


async def test_quote_wildcard_is_refused_before_anything_is_sent() -> None:
    client = MassiveClient("key")
    with pytest.raises(LimitError, match=r"Q\.\*"):
        await client.subscribe("T.*", "Q.*")
    assert client.subscriptions == ()


@pytest.mark.parametrize("bad", ["Q.SPY", "X.O:SPY251219C00650000", "T.O:SPY", "T", "AM.O:*"])
async def test_malformed_subscriptions_are_refused(bad: str) -> None:
    client = MassiveClient("key")
    with pytest.raises(ValueError):
        await client.subscribe(bad)


def _contract(n: int) -> str:
    return f"O:SPY251219C{n * 1000:08d}"


async def test_1001_quote_contracts_on_a_one_connection_account_raise_limit_error() -> None:
    client = MassiveClient("key")
    await client.subscribe("T.*")
    with pytest.raises(LimitError, match="1,001"):
        await client.subscribe(*(f"Q.{_contract(n)}" for n in range(1, 1002)))
    assert client.subscriptions == ("T.*",)


async def test_quote_contracts_split_at_1000_when_the_account_allows_two_connections() -> None:
    client = MassiveClient("key", max_connections=2)
    await client.subscribe("T.*", *(f"Q.{_contract(n)}" for n in range(1, 1002)))
    slots = client._slots
    assert [slot.quote_count() for slot in slots] == [1000, 1]
    assert "T.*" in slots[0].subscriptions
    with pytest.raises(LimitError):
        await client.subscribe(*(f"Q.{_contract(n)}" for n in range(2000, 3000)))
    await client.unsubscribe(f"Q.{_contract(1)}")
    await client.subscribe(f"Q.{_contract(5000)}")  # fills the freed place on the first connection
    assert [slot.quote_count() for slot in slots] == [1000, 1]


async def test_trades_aggregates_and_wildcards_have_no_per_connection_limit() -> None:
    client = MassiveClient("key")
    await client.subscribe("T.*", "A.*", "AM.*", *(f"T.{_contract(n)}" for n in range(1, 3000)))
    assert len(client.subscriptions) == 3002


def test_the_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from clients.common import AuthError

    monkeypatch.delenv("MASSIVE_API_KEY", raising=False)
    with pytest.raises(AuthError):
        MassiveClient()
    monkeypatch.setenv("MASSIVE_API_KEY", "from-env")
    assert MassiveClient()._api_key == "from-env"


# ---------------------------------------------------------------------------------------------
# watch output


def test_watch_json_lines_carry_the_type_and_the_parsed_contract() -> None:
    quote = decode_quote(orjson.loads(QUOTE_SAMPLE))
    line = orjson.loads(event_json(quote))
    assert line["type"] == "Quote"
    assert line["contract"] == {
        "root": "SPY", "expiration": "2024-12-20", "right": "P", "strike": "720",
    }  # fmt: skip
    assert line["sequence"] == 844090872
    gap = orjson.loads(event_json(GapNotice(("O:SPY251219C00650000",), 1.0, 2.0, "closed 1011")))
    assert gap == {
        "type": "GapNotice", "contracts": ["O:SPY251219C00650000"], "start": 1.0, "end": 2.0,
        "reason": "closed 1011",
    }  # fmt: skip


def test_watch_table_rows_are_aligned() -> None:
    quote = decode_quote(orjson.loads(QUOTE_SAMPLE))
    trade = decode_trade(orjson.loads(TRADE_SAMPLE))
    rows = [event_row(quote), event_row(trade), event_row(Rejected("massive", "Q.O:X", "no"))]
    assert rows[0].startswith("15:15:28.351  Q ")
    assert "17 x 9.71" in rows[0] and "9.81 x 24" in rows[0]
    assert "1 @ 1.54" in rows[1]
    assert len({row.index("O:") for row in rows[:2]}) == 1
    assert rows[2].split()[:2] == ["reject", "Q.O:X"]
