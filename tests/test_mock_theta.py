"""The Theta Terminal mock's sans-I/O core, driven directly: one transcript per request, reply and
error of `shared/protocols/theta.md`, the rendering of every message against the documented
samples, the lenient request parser, plans, the one-client rule, upstream outages and the
resubscription trap, heartbeats, index price reports and Eastern time."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given

from mocks.hub import Hub
from mocks.session import Close, ConnectionInfo, Send
from mocks.sim.clock import EASTERN
from mocks.sim.contracts import OptionContract
from mocks.sim.events import Event, IndexPrice, OptionQuote, OptionTrade
from mocks.sim.market import MarketSettings, MarketSim
from mocks.theta import (
    DEFAULT_PORT,
    PATH,
    VENDOR,
    ThetaSession,
    ThetaTerminal,
    create_server,
    invented,
    lenient,
    wire,
)
from mocks.theta.invented import ResubscribeLog
from mocks.theta.settings import PLANS
from mocks.theta.universe import build_universe

SPXW_4800_C = OptionContract("SPXW", dt.date(2024, 3, 15), 4_800_000, "C")
SPXW_CONTRACT = {"root": "SPXW", "expiration": 20240315, "strike": 4800000, "right": "C"}


class Rig:
    """A terminal over a real `MarketSim` and `Hub`, with sessions driven by hand."""

    def __init__(self, market: MarketSettings | None = None, **options: Any) -> None:
        self.market = MarketSim(market or MarketSettings(seed=3))
        self.hub = Hub(self.market)
        self.terminal: ThetaTerminal = create_server(self.hub, self.market, **options)
        self.pokes: list[int] = []
        self.sessions: dict[int, ThetaSession] = {}
        self._next_id = 1

    def connect(self, now: float = 0.0) -> ThetaSession:
        conn_id = self._next_id
        self._next_id += 1
        self.hub.register(conn_id, lambda: self.pokes.append(conn_id))
        session = self.terminal.open(ConnectionInfo(conn_id, PATH, opened_at=now), now)
        self.sessions[conn_id] = session
        assert session.opened(now) == []
        return session

    def run(self, until: float) -> dict[int, list[Send]]:
        """Advance the market and publish each connection's share, as the runner does."""
        routed = self.hub.route(self.market.advance(until))
        out: dict[int, list[Send]] = {}
        for conn_id, session in self.sessions.items():
            actions = session.publish(routed.get(conn_id, []), until)
            out[conn_id] = sends(actions)
        return out


def sends(actions: list[Any]) -> list[Send]:
    assert all(isinstance(a, Send) for a in actions), actions
    return list(actions)


def request(session: ThetaSession, body: dict[str, Any] | str, now: float = 0.0) -> list[Any]:
    text = body if isinstance(body, str) else json.dumps(body)
    return [json.loads(a.data) for a in sends(session.received(text, now))]


def stream(
    sec_type: str, req_type: str, req_id: int, contract: dict[str, Any], add: bool = True
) -> dict[str, Any]:
    return {
        "msg_type": "STREAM",
        "sec_type": sec_type,
        "req_type": req_type,
        "add": add,
        "id": req_id,
        "contract": contract,
    }


def reply(response: str, req_id: int, status: str = "CONNECTED") -> dict[str, Any]:
    return {
        "header": {"type": "REQ_RESPONSE", "status": status, "response": response, "req_id": req_id}
    }


def messages(actions: list[Send]) -> list[dict[str, Any]]:
    return [json.loads(a.data) for a in actions]


def quote_event(ts: dt.datetime, contract: OptionContract, bid: float, ask: float) -> OptionQuote:
    ts_ns = int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1000
    return OptionQuote(ts_ns, contract, bid, ask, 7, 7, "XCBO", "XCBO", 1)


# -- package contract ----------------------------------------------------------------------------


def test_package_contract() -> None:
    assert (VENDOR, DEFAULT_PORT, PATH) == ("theta", 25520, "/v1/events")
    rig = Rig()
    assert rig.terminal.vendor == "theta"
    assert rig.terminal.accepts_path("/v1/events")
    assert not rig.terminal.accepts_path("/v1/events/")
    assert not rig.terminal.accepts_path("/")
    with pytest.raises(TypeError):
        create_server(rig.hub, rig.market, no_such_option=1)
    with pytest.raises(ValueError):
        create_server(rig.hub, rig.market, options_plan="platinum")


# -- requests and replies ------------------------------------------------------------------------


def test_option_quote_stream_is_subscribed_and_streams_documented_quotes() -> None:
    rig = Rig()
    session = rig.connect()
    contract = {"root": "SPY", "expiration": 20250321, "strike": 575000, "right": "C"}
    assert request(session, stream("OPTION", "QUOTE", 0, contract)) == [reply("SUBSCRIBED", 0)]
    out = messages(rig.run(5.0)[1])
    assert out, "a near-the-money SPY contract quotes within seconds"
    for message in out:
        assert list(message) == ["header", "contract", "quote"]
        assert message["header"] == {"status": "CONNECTED", "type": "QUOTE"}
        assert message["contract"] == {"security_type": "OPTION", **contract}
        quote = message["quote"]
        assert list(quote) == [
            "ms_of_day",
            "bid_size",
            "bid_exchange",
            "bid",
            "bid_condition",
            "ask_size",
            "ask_exchange",
            "ask",
            "ask_condition",
            "date",
        ]
        assert quote["date"] == 20250314
        # 09:30 Eastern (EDT on 2025-03-14) plus at most five seconds
        assert 34_200_000 <= quote["ms_of_day"] <= 34_205_000
        assert quote["bid_condition"] == quote["ask_condition"] == 50
        assert 0 <= quote["bid"] < quote["ask"]
        assert all(isinstance(quote[k], int) for k in ("bid_size", "ask_size", "bid_exchange"))


def test_vendor_sample_python_str_dict_is_read_leniently() -> None:
    rig = Rig()
    session = rig.connect()
    req: dict[str, Any] = {}
    req["msg_type"] = "STREAM"
    req["sec_type"] = "INDEX"
    req["req_type"] = "TRADE"
    req["add"] = True
    req["id"] = 0
    req["contract"] = {}
    req["contract"]["root"] = "SPX"
    text = req.__str__()
    assert "'" in text and "True" in text
    assert request(session, text) == [reply("SUBSCRIBED", 0)]
    assert wire.StreamKey("INDEX", "TRADE", "SPX") in rig.terminal.streams


def test_numbers_as_strings_and_lenient_forms_are_accepted() -> None:
    rig = Rig()
    session = rig.connect()
    text = (
        "{msg_type: STREAM; sec_type = 'OPTION', req_type => \"TRADE\", add: 'true', "
        "id: '7', /* a comment */ contract: {root: 'spxw', expiration: '20240315', "
        "strike: 4800000.0, right: 'C'}} // trailing comment"
    )
    assert request(session, text) == [reply("SUBSCRIBED", 7)]
    assert wire.StreamKey("OPTION", "TRADE", SPXW_4800_C) in rig.terminal.streams


@pytest.mark.parametrize(
    ("text", "req_id"),
    [
        ("not json at all {", invented.UNREADABLE_REQ_ID),
        ("[1, 2, 3]", invented.UNREADABLE_REQ_ID),
        ('{"msg_type":"STREAM","id":"seven"}', invented.UNREADABLE_REQ_ID),
        ('{"msg_type":"STREAM","id":1} trailing', invented.UNREADABLE_REQ_ID),
        (
            '{"msg_type":"stream","sec_type":"INDEX","req_type":"TRADE","add":true,"id":4,'
            '"contract":{"root":"SPX"}}',
            4,
        ),
        (
            '{"msg_type":"STREAM","sec_type":"OPTION","req_type":"OHLC","add":true,"id":5,'
            '"contract":{"root":"SPY"}}',
            5,
        ),
        (
            '{"msg_type":"STREAM","sec_type":"OPTION","req_type":"QUOTE","add":true,"id":6,'
            '"contract":{"root":"SPY","expiration":20250321,"strike":575000,"right":"X"}}',
            6,
        ),
        (
            '{"msg_type":"STREAM","sec_type":"OPTION","req_type":"QUOTE","add":true,"id":8,'
            '"contract":{"root":"SPY","expiration":20251341,"strike":575000,"right":"C"}}',
            8,
        ),
        (
            '{"msg_type":"STREAM","sec_type":"STOCK","req_type":"QUOTE","add":"maybe","id":9,'
            '"contract":{"root":"AAPL"}}',
            9,
        ),
        ('{"msg_type":"STREAM","sec_type":"STOCK","req_type":"QUOTE","add":true,"id":10}', 10),
        (
            '{"msg_type":"STREAM_BULK","sec_type":"OPTION","req_type":"QUOTE","add":true,"id":11}',
            11,
        ),
        ('{"msg_type":"SUBSCRIBE","id":12}', 12),
    ],
)
def test_requests_the_terminal_cannot_act_on_get_error(text: str, req_id: int) -> None:
    rig = Rig()
    session = rig.connect()
    assert request(session, text) == [reply("ERROR", req_id)]
    assert rig.terminal.streams == {}


def test_missing_add_and_id_take_java_defaults() -> None:
    rig = Rig()
    session = rig.connect()
    body = stream("STOCK", "QUOTE", 3, {"root": "AAPL"})
    request(session, body)
    del body["add"], body["id"]
    # no `add`: false, an unsubscription; no `id`: request 0
    assert request(session, body) == [reply("SUBSCRIBED", invented.DEFAULT_ID)]
    assert rig.terminal.streams == {}


def test_unsubscribe_is_acknowledged_and_stops_the_data() -> None:
    rig = Rig()
    session = rig.connect()
    request(session, stream("INDEX", "TRADE", 0, {"root": "SPX"}))
    assert messages(rig.run(3.0)[1])
    assert request(session, stream("INDEX", "TRADE", 1, {"root": "SPX"}, add=False)) == [
        reply("SUBSCRIBED", 1)
    ]
    assert rig.run(10.0)[1] == []
    assert rig.hub.route(rig.market.advance(12.0)) == {}
    # an unsubscription of a stream that never existed is acknowledged the same way
    assert request(session, stream("STOCK", "TRADE", 2, {"root": "MSFT"}, add=False)) == [
        reply("SUBSCRIBED", 2)
    ]


def test_stop_ends_every_stream_without_a_reply() -> None:
    rig = Rig(bulk_roots=("SPY",), bulk_expirations=1, bulk_strikes_each_side=1)
    session = rig.connect()
    request(session, stream("INDEX", "TRADE", 0, {"root": "SPX"}))
    request(session, stream("STOCK", "QUOTE", 1, {"root": "AAPL"}))
    request(session, stream("OPTION", "QUOTE", 2, SPXW_CONTRACT))
    request(
        session,
        {
            "msg_type": "STREAM_BULK",
            "sec_type": "OPTION",
            "req_type": "TRADE",
            "add": True,
            "id": 3,
        },
    )
    assert len(rig.terminal.streams) == 4
    assert rig.run(2.0)[1]
    assert request(session, '{"msg_type":"STOP"}') == []
    assert rig.terminal.streams == {}
    assert rig.run(10.0)[1] == []
    assert rig.hub.contracts_of(1) == set()


# -- rendering -----------------------------------------------------------------------------------


def test_option_trade_has_exactly_the_seven_documented_fields() -> None:
    rig = Rig()
    session = rig.connect()
    contract = OptionContract("AAPL", dt.date(2023, 12, 22), 200_000, "C")
    request(
        session,
        stream(
            "OPTION",
            "TRADE",
            0,
            {"root": "AAPL", "expiration": "20231222", "strike": "200000", "right": "C"},
        ),
    )
    ts = dt.datetime(2023, 12, 19, 9, 33, 9, 945000, tzinfo=EASTERN)
    ts_ns = int(ts.timestamp()) * 10**9 + 945 * 10**6
    trade = OptionTrade(ts_ns, contract, 0.31, 10, "GMNI", ("auto_execution",), 2**31 + 5)
    out = sends(session.publish([trade], 1.0))
    assert len(out) == 1 and out[0].events == (trade,)
    assert json.loads(out[0].data) == {
        "header": {"status": "CONNECTED", "type": "TRADE"},
        "contract": {
            "security_type": "OPTION",
            "root": "AAPL",
            "expiration": 20231222,
            "strike": 200000,
            "right": "C",
        },
        "trade": {
            "ms_of_day": 34389945,
            "sequence": -(2**31) + 5,
            "size": 10,
            "condition": 18,
            "price": 0.31,
            "exchange": 31,
            "date": 20231219,
        },
    }
    assert list(json.loads(out[0].data)["trade"]) == [
        "ms_of_day",
        "sequence",
        "size",
        "condition",
        "price",
        "exchange",
        "date",
    ]


def test_option_quote_renders_the_documented_sample() -> None:
    rig = Rig()
    session = rig.connect()
    request(session, stream("OPTION", "QUOTE", 0, SPXW_CONTRACT))
    # 2023-12-19 07:23:42.025 EST is ms_of_day 26622025 (the sample)
    quote = quote_event(
        dt.datetime(2023, 12, 19, 7, 23, 42, 25000, tzinfo=EASTERN), SPXW_4800_C, 110.2, 110.5
    )
    out = sends(session.publish([quote], 1.0))
    assert out[0].data == (
        '{"header":{"status":"CONNECTED","type":"QUOTE"},'
        '"contract":{"security_type":"OPTION","root":"SPXW","expiration":20240315,'
        '"strike":4800000,"right":"C"},'
        '"quote":{"ms_of_day":26622025,"bid_size":7,"bid_exchange":5,"bid":110.2,'
        '"bid_condition":50,"ask_size":7,"ask_exchange":5,"ask":110.5,"ask_condition":50,'
        '"date":20231219}}'
    )


def test_market_value_matches_the_documented_sample() -> None:
    rig = Rig()
    session = rig.connect()
    assert request(session, stream("OPTION", "MARKET_VALUE", 0, SPXW_CONTRACT)) == [
        reply("SUBSCRIBED", 0)
    ]
    quote = quote_event(
        dt.datetime(2023, 12, 19, 7, 23, 42, 25000, tzinfo=EASTERN), SPXW_4800_C, 110.2, 110.5
    )
    out = sends(session.publish([quote], 1.0))
    assert [a.data for a in out] == [
        '{"header":{"type":"MARKET_VALUE","status":"CONNECTED"},'
        '"contract":{"security_type":"OPTION","root":"SPXW","expiration":20240315,'
        '"strike":4800000,"right":"C"},'
        '"market_value":{"ms_of_day":26622025,"date":20231219,"market_bid":110.19,'
        '"market_ask":110.51,"market_price":110.35}}'
    ]


def test_index_price_report_is_a_trade_then_an_ohlc_like_the_samples() -> None:
    rig = Rig()
    session = rig.connect()
    request(session, stream("INDEX", "TRADE", 0, {"root": "SPX"}))
    request(session, stream("INDEX", "MARKET_VALUE", 1, {"root": "SPX"}))
    ts = dt.datetime(2024, 8, 9, 14, 25, 52, tzinfo=EASTERN)
    report = IndexPrice(int(ts.timestamp()) * 10**9, "SPX", 5333.39)
    trade, ohlc, value = messages(sends(session.publish([report], 1.0)))
    assert trade == {
        "header": {"type": "TRADE", "status": "CONNECTED"},
        "contract": {"security_type": "INDEX", "root": "SPX"},
        "trade": {
            "ms_of_day": 51952000,
            "sequence": 0,
            "size": 0,
            "condition": 0,
            "price": 5333.39,
            "exchange": 5,
            "date": 20240809,
        },
    }
    assert list(trade["header"]) == ["type", "status"]
    assert ohlc["header"] == {"type": "OHLC", "status": "CONNECTED"}
    assert list(ohlc["ohlc"]) == [
        "ms_of_day",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "count",
        "date",
    ]
    assert ohlc["ohlc"]["ms_of_day"] == 51952000 and ohlc["ohlc"]["close"] == 5333.39
    assert ohlc["ohlc"]["volume"] == 0
    assert value["market_value"] == {
        "ms_of_day": 51952000,
        "date": 20240809,
        "market_price": 5333.39,
    }


def test_index_reports_about_once_a_second_only_on_change_none_at_0930_sharp() -> None:
    start = dt.datetime(2025, 3, 14, 9, 29, 50, tzinfo=EASTERN)
    rig = Rig(MarketSettings(seed=11, start=start, always_open=False))
    session = rig.connect()
    request(session, stream("INDEX", "TRADE", 0, {"root": "SPX"}))
    trades = [m["trade"] for m in messages(rig.run(300.0)[1]) if m["header"]["type"] == "TRADE"]
    times = [t["ms_of_day"] for t in trades]
    assert times and all(ms > 34_200_000 for ms in times), "nothing before or at 09:30:00"
    assert times[0] == 34_201_000, "the first report is 09:30:01"
    assert all(b - a >= 1000 and b % 1000 == 0 for a, b in itertools.pairwise(times))
    prices = [t["price"] for t in trades]
    assert all(a != b for a, b in itertools.pairwise(prices))
    assert len(trades) > 150, "roughly once a second"


def test_an_always_open_market_still_gets_no_0930_sharp_report() -> None:
    # the always-open market reports every second through the open, 09:30:00 included
    start = dt.datetime(2025, 3, 14, 9, 29, 55, tzinfo=EASTERN)
    rig = Rig(MarketSettings(seed=11, start=start, always_open=True))
    session = rig.connect()
    request(session, stream("INDEX", "TRADE", 0, {"root": "SPX"}))
    times = [m["trade"]["ms_of_day"] for m in messages(rig.run(10.0)[1]) if "trade" in m]
    assert 34_199_000 in times and 34_201_000 in times
    assert 34_200_000 not in times


def test_an_index_report_stamped_0930_sharp_is_dropped() -> None:
    rig = Rig()
    session = rig.connect()
    request(session, stream("INDEX", "TRADE", 0, {"root": "SPX"}))
    at_open = dt.datetime(2025, 3, 14, 9, 30, tzinfo=EASTERN)
    ns = int(at_open.timestamp()) * 10**9
    out = messages(
        sends(
            session.publish(
                [
                    IndexPrice(ns, "SPX", 5600.0),
                    IndexPrice(ns + 10**9, "SPX", 5600.5),
                    IndexPrice(ns + 2 * 10**9, "SPX", 5600.5),
                ],
                2.0,
            )
        )
    )
    assert [(m["header"]["type"], m[m["header"]["type"].lower()]["ms_of_day"]) for m in out] == [
        ("TRADE", 34_201_000),
        ("OHLC", 34_201_000),
    ]


def test_stock_quotes_and_trades_follow_the_underlying_deterministically() -> None:
    def transcript() -> list[dict[str, Any]]:
        rig = Rig(MarketSettings(seed=5))
        session = rig.connect()
        request(session, stream("STOCK", "QUOTE", 0, {"root": "AAPL"}))
        request(session, stream("STOCK", "TRADE", 1, {"root": "AAPL"}))
        return messages(rig.run(20.0)[1])

    out = transcript()
    assert out == transcript()
    quotes = [m for m in out if m["header"]["type"] == "QUOTE"]
    trades = [m for m in out if m["header"]["type"] == "TRADE"]
    assert len(quotes) == len(trades) > 10
    for quote, trade in zip(quotes, trades, strict=True):
        assert quote["contract"] == trade["contract"] == {"security_type": "STOCK", "root": "AAPL"}
        q, t = quote["quote"], trade["trade"]
        assert q["bid"] < t["price"] < q["ask"]
        assert q["bid_size"] % 100 == 0 and q["ask_size"] % 100 == 0
        assert list(t) == [
            "ms_of_day",
            "sequence",
            "size",
            "condition",
            "price",
            "exchange",
            "date",
        ]
        assert t["condition"] == (115 if t["size"] < 100 else 0)
    sequences = [m["trade"]["sequence"] for m in trades]
    assert all(b == wire.signed32(a + 1) for a, b in itertools.pairwise(sequences))


def test_the_terminal_keeps_the_day_ohlc_of_today_only() -> None:
    """The day's OHLC outlives the contract's life (a client back must not see the day's volume
    go down), not the day: a terminal left running keeps none from yesterday."""
    rig = Rig()
    session = rig.connect()
    first = dt.datetime(2025, 3, 14, 10, 0, tzinfo=EASTERN)
    for day in range(3):
        ns = int((first + dt.timedelta(days=day)).timestamp()) * 10**9
        contracts = [
            OptionContract("SPY", dt.date(2025, 6, 20), 500_000 + 1_000 * (10 * day + k), "C")
            for k in range(10)
        ]
        session.publish(
            [OptionTrade(ns + i, c, 2.0, 1, "CBOE", (), i + 1) for i, c in enumerate(contracts)],
            day * 86_400.0,
        )
    assert set(rig.terminal._option_ohlc) == set(contracts)


def test_full_trade_stream_brackets_each_trade_with_quote_ohlc_and_two_quotes() -> None:
    rig = Rig(
        MarketSettings(seed=9, activity=20.0),
        bulk_roots=("SPY",),
        bulk_expirations=1,
        bulk_strikes_each_side=1,
    )
    session = rig.connect()
    bulk = {
        "msg_type": "STREAM_BULK",
        "sec_type": "OPTION",
        "req_type": "TRADE",
        "add": True,
        "id": 0,
    }
    assert request(session, bulk) == [reply("SUBSCRIBED", 0)]
    assert len(rig.terminal.universe()) == 6
    out = messages(rig.run(60.0)[1])
    kinds = [m["header"]["type"] for m in out]
    trades = [i for i, kind in enumerate(kinds) if kind == "TRADE"]
    assert len(trades) > 5
    volume: dict[str, int] = {}
    for i in trades:
        contract = out[i]["contract"]
        key = json.dumps(contract, sort_keys=True)
        assert kinds[i - 2 : i] == ["QUOTE", "OHLC"]
        assert out[i - 2]["contract"] == out[i - 1]["contract"] == contract
        ohlc = out[i - 1]["ohlc"]
        volume[key] = volume.get(key, 0) + out[i]["trade"]["size"]
        assert ohlc["close"] == out[i]["trade"]["price"] and ohlc["volume"] == volume[key]
        assert ohlc["low"] <= ohlc["close"] <= ohlc["high"]
    # after each trade, that contract's next two quotes (and no other quotes: nothing else is
    # subscribed)
    owed: dict[str, int] = {}
    for i, message in enumerate(out):
        key = json.dumps(message["contract"], sort_keys=True)
        if message["header"]["type"] == "QUOTE" and not (
            i + 2 < len(out) and kinds[i + 2] == "TRADE"
        ):
            assert owed.get(key, 0) > 0, "a quote that is neither before nor after a trade"
            owed[key] -= 1
        elif message["header"]["type"] == "TRADE":
            owed[key] = 2


def test_default_universe_is_near_the_money_chains_of_liquid_roots() -> None:
    market = MarketSim(MarketSettings(seed=1))
    universe = build_universe(market, 0.0, ("SPXW", "SPY", "QQQ", "AAPL", "TSLA", "NVDA"), 2, 10)
    assert len(universe) == 6 * 2 * 21 * 2
    assert len(set(universe)) == len(universe)
    for contract in universe:
        spot = market.underlying_price(contract.root)
        assert abs(contract.strike - spot) / spot < 0.15
        assert dt.date(2025, 3, 14) <= contract.expiration <= dt.date(2025, 3, 31)
    spy = sorted({c.expiration for c in universe if c.root == "SPY"})
    aapl = sorted({c.expiration for c in universe if c.root == "AAPL"})
    assert spy == [dt.date(2025, 3, 14), dt.date(2025, 3, 17)]  # dailies
    assert aapl == [dt.date(2025, 3, 14), dt.date(2025, 3, 21)]  # Fridays


# -- plans ---------------------------------------------------------------------------------------


def test_documented_plan_limits() -> None:
    assert (PLANS["standard"].quote_streams, PLANS["standard"].trade_streams) == (10_000, 20_000)
    assert PLANS["pro"].quote_streams == 20_000 and PLANS["pro"].full_trade_stream
    assert not PLANS["standard"].full_trade_stream
    assert not PLANS["value"].streaming and not PLANS["free"].streaming


def test_max_streams_reached_past_the_limit_and_a_slot_frees_on_unsubscribe() -> None:
    rig = Rig(quote_stream_limit=2, trade_stream_limit=1)
    session = rig.connect()

    def option(strike: int) -> dict[str, Any]:
        return {"root": "SPY", "expiration": 20250321, "strike": strike, "right": "P"}

    assert request(session, stream("OPTION", "QUOTE", 1, option(570000)))[0] == reply(
        "SUBSCRIBED", 1
    )
    assert request(session, stream("OPTION", "MARKET_VALUE", 2, option(571000)))[0] == reply(
        "SUBSCRIBED", 2
    )
    assert request(session, stream("OPTION", "QUOTE", 3, option(572000))) == [
        reply("MAX_STREAMS_REACHED", 3)
    ]
    # the same stream again is no new stream
    assert request(session, stream("OPTION", "QUOTE", 4, option(570000))) == [
        reply("SUBSCRIBED", 4)
    ]
    assert request(session, stream("OPTION", "TRADE", 5, option(570000))) == [
        reply("SUBSCRIBED", 5)
    ]
    assert request(session, stream("OPTION", "TRADE", 6, option(571000))) == [
        reply("MAX_STREAMS_REACHED", 6)
    ]
    # limits are per security type
    assert request(session, stream("STOCK", "QUOTE", 7, {"root": "AAPL"})) == [
        reply("SUBSCRIBED", 7)
    ]
    request(session, stream("OPTION", "QUOTE", 8, option(570000), add=False))
    assert request(session, stream("OPTION", "QUOTE", 9, option(572000))) == [
        reply("SUBSCRIBED", 9)
    ]
    # the limit set later, as a scenario does
    rig.terminal.set_stream_limits(quote=None, trade=None)
    assert request(session, stream("OPTION", "TRADE", 10, option(571000))) == [
        reply("SUBSCRIBED", 10)
    ]


def test_invalid_perms_for_what_the_plan_lacks() -> None:
    rig = Rig(options_plan="standard", stock_plan="value", index_plan="free")
    session = rig.connect()
    bulk = {
        "msg_type": "STREAM_BULK",
        "sec_type": "OPTION",
        "req_type": "TRADE",
        "add": True,
        "id": 1,
    }
    assert request(session, bulk) == [reply("INVALID_PERMS", 1)]
    assert request(session, stream("STOCK", "QUOTE", 2, {"root": "AAPL"})) == [
        reply("INVALID_PERMS", 2)
    ]
    assert request(session, stream("INDEX", "TRADE", 3, {"root": "SPX"})) == [
        reply("INVALID_PERMS", 3)
    ]
    assert request(session, stream("OPTION", "MARKET_VALUE", 4, SPXW_CONTRACT)) == [
        reply("SUBSCRIBED", 4)
    ]
    rig.terminal.set_plan(options="pro", index="standard")
    bulk["id"] = 5
    assert request(session, bulk) == [reply("SUBSCRIBED", 5)]
    assert request(session, stream("INDEX", "TRADE", 6, {"root": "SPX"})) == [
        reply("SUBSCRIBED", 6)
    ]


# -- heartbeats ----------------------------------------------------------------------------------


def test_status_heartbeat_once_a_second() -> None:
    rig = Rig()
    session = rig.connect(now=0.0)
    assert session.next_deadline() == 1.0
    assert session.tick(0.5) == []
    beats = []
    for now in (1.0, 2.0, 3.0):
        assert session.next_deadline() == now
        beats += [a.data for a in sends(session.tick(now))]
    assert beats == ['{"header":{"status":"CONNECTED","type":"STATUS"}}'] * 3
    # woken late: one heartbeat, the phase kept
    assert len(session.tick(6.5)) == 1 and session.next_deadline() == 7.0


def test_heartbeat_stop_silences_status_for_its_duration() -> None:
    rig = Rig()
    session = rig.connect()
    request(session, stream("INDEX", "TRADE", 0, {"root": "SPX"}))
    rig.terminal.heartbeat_stop(3.0)
    assert rig.pokes == [1]
    assert session.next_deadline() == float("-inf")
    assert session.tick(0.2) == []
    silent = [a for now in (1.0, 2.0, 3.0) for a in session.tick(now)]
    assert silent == []
    assert rig.run(3.0)[1], "data goes on"
    assert [json.loads(a.data)["header"]["type"] for a in sends(session.tick(4.0))] == ["STATUS"]


def test_a_heartbeat_stop_or_outage_with_no_client_connected_runs_from_its_own_time() -> None:
    """Found by `feedlab chaos --vendor theta --seed 17`: a restart and a heartbeat stop at the
    same second; the stop waited for the next client's first step (49 s) and ran from there,
    and that client, then the next, took the silence for a dead socket."""
    rig = Rig()
    first = rig.connect()
    rig.terminal.closed(first)  # (the restart took it)
    rig.terminal.heartbeat_stop(21.0, at=1.0)
    rig.terminal.upstream_outage(10.0, at=1.0)
    assert rig.terminal.heartbeats_stopped_until == 22.0  # from 1 s, not the next client's step
    assert rig.terminal.upstream_down


def test_an_outage_at_a_given_time_tells_the_connected_client_at_its_next_step() -> None:
    rig = Rig()
    session = rig.connect()
    session.tick(1.0)
    rig.terminal.upstream_outage(5.0, at=1.5)
    assert rig.pokes == [1] and rig.terminal.upstream_down
    told = [json.loads(a.data)["header"] for a in sends(session.tick(2.0))]
    assert told[0] == {"type": "STATE", "status": "DISCONNECTED", "state": "STOP"}


# -- upstream outages and the resubscription trap -------------------------------------------------


def test_upstream_outage_keeps_the_socket_reports_disconnected_and_resumes() -> None:
    rig = Rig()
    session = rig.connect()
    request(session, stream("INDEX", "TRADE", 0, {"root": "SPX"}))
    rig.run(1.5)
    session.tick(1.0)
    rig.terminal.upstream_outage(5.0)
    assert rig.pokes == [1]
    down = messages(sends(session.tick(1.5)))
    assert down == [{"header": {"type": "STATE", "status": "DISCONNECTED", "state": "STOP"}}]
    assert session.next_deadline() == 2.0
    assert messages(sends(session.tick(2.0))) == [
        {"header": {"status": "DISCONNECTED", "type": "STATUS"}}
    ]
    assert rig.run(6.0)[1] == [], "no data while the upstream is down"
    # requests are still answered, with the link's state in the header
    assert request(session, stream("STOCK", "QUOTE", 1, {"root": "AAPL"}), now=6.0) == [
        reply("SUBSCRIBED", 1, status="DISCONNECTED")
    ]
    beats = [m for now in (3.0, 4.0, 5.0, 6.0) for m in messages(sends(session.tick(now)))]
    assert beats == [{"header": {"status": "DISCONNECTED", "type": "STATUS"}}] * 4
    assert session.next_deadline() == 6.5
    up = messages(sends(session.tick(6.5)))
    assert up == [{"header": {"type": "STATE", "status": "CONNECTED", "state": "START"}}]
    after = messages(rig.run(12.0)[1])
    assert {m["contract"]["security_type"] for m in after} == {"INDEX", "STOCK"}
    assert all(m["trade"]["ms_of_day"] >= 34_206_500 for m in after if "trade" in m)
    assert all(m["header"]["status"] == "CONNECTED" for m in after)
    assert rig.terminal.lost_streams == []


def test_reused_request_ids_lose_their_streams_at_upstream_recovery() -> None:
    rig = Rig()
    session = rig.connect()
    # the vendor's samples always send id 0: two of them in a row reuse it
    request(session, stream("INDEX", "TRADE", 0, {"root": "SPX"}))
    request(session, stream("OPTION", "MARKET_VALUE", 0, SPXW_CONTRACT))
    request(session, stream("STOCK", "QUOTE", 5, {"root": "AAPL"}))  # unique, increasing
    request(session, stream("STOCK", "TRADE", 3, {"root": "MSFT"}))  # unique, not increasing
    request(session, stream("INDEX", "TRADE", 6, {"root": "NDX"}))  # unique, increasing
    assert len(rig.terminal.streams) == 5
    rig.terminal.upstream_outage(2.0)
    session.tick(0.0)
    session.tick(2.0)
    assert set(rig.terminal.streams) == {
        wire.StreamKey("STOCK", "QUOTE", "AAPL"),
        wire.StreamKey("INDEX", "TRADE", "NDX"),
    }
    assert set(rig.terminal.lost_streams) == {
        wire.StreamKey("INDEX", "TRADE", "SPX"),
        wire.StreamKey("OPTION", "MARKET_VALUE", SPXW_4800_C),
        wire.StreamKey("STOCK", "TRADE", "MSFT"),
    }
    out = messages(rig.run(10.0)[1])
    assert {m["contract"]["root"] for m in out} == {"AAPL", "NDX"}
    # a lost stream can be asked for again with a new id
    assert request(session, stream("INDEX", "TRADE", 7, {"root": "SPX"}), now=10.0) == [
        reply("SUBSCRIBED", 7)
    ]


def test_strictly_increasing_ids_survive_any_number_of_outages() -> None:
    rig = Rig()
    session = rig.connect()
    for req_id, root in enumerate(("SPX", "NDX", "RUT")):
        request(session, stream("INDEX", "TRADE", req_id, {"root": root}))
    for start in (1.0, 10.0, 20.0):
        rig.terminal.upstream_outage(2.0)
        session.tick(start)
        session.tick(start + 2.0)
    assert len(rig.terminal.streams) == 3 and rig.terminal.lost_streams == []


class _Model:
    """The resubscription rule of invented.py, written as plainly as possible."""

    def __init__(self) -> None:
        self.requests: list[tuple[str | None, int]] = []  # (stream or None for others, id)

    def restored(self, key: str) -> bool:
        last_fresh = None
        for i, (k, req_id) in enumerate(self.requests):
            earlier = [r for _, r in self.requests[:i]]
            if k == key and all(req_id > r for r in earlier):
                last_fresh = i
        if last_fresh is None:
            return False
        req_id = self.requests[last_fresh][1]
        return all(r != req_id for _, r in self.requests[last_fresh + 1 :])


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", None]), st.integers(0, 8)), max_size=12))
def test_resubscribe_log_follows_the_unique_and_increasing_rule(
    requests: list[tuple[str | None, int]],
) -> None:
    log: ResubscribeLog[str] = ResubscribeLog()
    model = _Model()
    for key, req_id in requests:
        fresh = log.request(req_id)
        if key is not None and fresh:
            log.subscribed(key, req_id)
        model.requests.append((key, req_id))
    for key in "abc":
        assert log.restores(key) == model.restored(key)


# -- one client at a time; streams belong to the terminal ---------------------------------------


def test_a_second_client_drops_the_first_and_inherits_its_streams() -> None:
    rig = Rig()
    first = rig.connect()
    request(first, stream("OPTION", "QUOTE", 0, SPXW_CONTRACT))
    request(first, stream("INDEX", "TRADE", 1, {"root": "SPX"}))
    assert rig.hub.contracts_of(1) == {SPXW_4800_C}
    second = rig.connect(now=1.0)
    assert rig.pokes == [1]
    assert first.next_deadline() == float("-inf")
    assert first.tick(1.0) == [Close(1000, "replaced by a new client connection")]
    assert first.received('{"msg_type":"STOP"}', 1.0) == []
    assert rig.hub.contracts_of(1) == set() and rig.hub.contracts_of(2) == {SPXW_4800_C}
    out = rig.run(6.0)
    assert out[1] == [] and {m["contract"]["root"] for m in messages(out[2])} == {"SPXW", "SPX"}
    first.closed(6.0)  # the old socket finishing does not touch the terminal's streams
    assert len(rig.terminal.streams) == 2 and rig.terminal.current is second


def test_streams_survive_a_client_leaving_and_go_to_the_next_one() -> None:
    rig = Rig()
    first = rig.connect()
    request(first, stream("INDEX", "TRADE", 0, {"root": "SPX"}))
    first.closed(1.0)
    del rig.sessions[1]
    assert rig.terminal.current is None and len(rig.terminal.streams) == 1
    rig.run(30.0)  # nobody to deliver to
    second = rig.connect(now=30.0)
    out = messages(rig.run(33.0)[2])
    assert out and all(m["contract"] == {"security_type": "INDEX", "root": "SPX"} for m in out)
    assert second.tick(31.0)  # the new client's heartbeat


# -- Eastern time ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "date", "ms_of_day"),
    [
        (dt.datetime(2025, 3, 7, 14, 30, tzinfo=dt.UTC), 20250307, 34_200_000),  # EST, UTC-5
        (dt.datetime(2025, 3, 10, 13, 30, tzinfo=dt.UTC), 20250310, 34_200_000),  # EDT, UTC-4
        # the switch day (always-open market): 03:30 EDT, wall clock, not elapsed time
        (dt.datetime(2025, 3, 9, 7, 30, tzinfo=dt.UTC), 20250309, 12_600_000),
        (dt.datetime(2025, 11, 2, 5, 30, tzinfo=dt.UTC), 20251102, 5_400_000),  # 01:30 EDT
        (dt.datetime(2025, 11, 2, 6, 30, tzinfo=dt.UTC), 20251102, 5_400_000),  # 01:30 EST
        (dt.datetime(2025, 3, 15, 3, 30, tzinfo=dt.UTC), 20250314, 84_600_000),  # 23:30 EDT
    ],
)
def test_ms_of_day_and_date_are_us_eastern_with_daylight_saving(
    start: dt.datetime, date: int, ms_of_day: int
) -> None:
    rig = Rig(MarketSettings(seed=2, start=start))
    session = rig.connect()
    request(session, stream("INDEX", "TRADE", 0, {"root": "SPX"}))
    first = messages(rig.run(3.0)[1])[0]["trade"]
    assert first["date"] == date
    assert ms_of_day < first["ms_of_day"] <= ms_of_day + 3000


def test_every_message_is_one_json_object_per_frame() -> None:
    rig = Rig(
        MarketSettings(seed=4, activity=5.0),
        bulk_roots=("QQQ",),
        bulk_expirations=1,
        bulk_strikes_each_side=2,
    )
    session = rig.connect()
    request(
        session,
        {
            "msg_type": "STREAM_BULK",
            "sec_type": "OPTION",
            "req_type": "TRADE",
            "add": True,
            "id": 0,
        },
    )
    request(session, stream("STOCK", "QUOTE", 1, {"root": "QQQ"}))
    out = rig.run(20.0)[1]
    assert out
    for action in out:
        assert isinstance(action.data, str) and "\n" not in action.data
        assert isinstance(json.loads(action.data), dict)


# -- codecs ------------------------------------------------------------------------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8"))
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(_json_values)
def test_lenient_reads_every_strict_json_document(value: Any) -> None:
    assert lenient.loads(json.dumps(value)) == value
    assert lenient.loads(json.dumps(value, indent=2).encode()) == value


_printable = st.text(
    st.characters(
        codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp", "Cf", "Co", "Cn", "Zs")
    )
)
_python_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | _printable
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_printable, inner, max_size=4),
    max_leaves=12,
)


@given(_python_values)
def test_lenient_reads_python_str_of_a_dict(value: Any) -> None:
    # `None` is not a JSON keyword: Gson reads it as the string "None"
    def expected(v: Any) -> Any:
        if v is None:
            return "None"
        if isinstance(v, list):
            return [expected(x) for x in v]
        if isinstance(v, dict):
            return {k: expected(x) for k, x in v.items()}
        return v

    assert lenient.loads(str({"v": value})) == {"v": expected(value)}


@given(
    st.builds(
        OptionContract,
        st.sampled_from(["SPXW", "SPY", "AAPL", "AMC1", "BRK.B"]),
        st.dates(dt.date(2000, 1, 1), dt.date(2099, 12, 31)),
        st.integers(1, 99_999_999),
        st.sampled_from(["C", "P"]),
    ),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_option_requests_read_back_their_contract(
    contract: OptionContract, as_strings: bool, req_id: int
) -> None:
    expiration = int(contract.expiration.strftime("%Y%m%d"))
    fields: dict[str, Any] = {
        "root": contract.root,
        "expiration": expiration,
        "strike": contract.strike_milli,
        "right": contract.right,
    }
    if as_strings:
        fields = {k: str(v) for k, v in fields.items()}
    body = {
        "msg_type": "STREAM",
        "sec_type": "OPTION",
        "req_type": "QUOTE",
        "add": True,
        "id": req_id,
        "contract": fields,
    }
    for text in (json.dumps(body), str(body)):
        parsed = wire.parse_request(text)
        assert parsed == wire.StreamRequest(
            req_id, wire.StreamKey("OPTION", "QUOTE", contract), True
        )
    assert wire.option_contract(contract) == wire.OptionContractBody(
        "OPTION", contract.root, expiration, contract.strike_milli, contract.right
    )


@given(st.integers(-(2**70), 2**70))
def test_signed32_wraps_like_a_java_int(sequence: int) -> None:
    wrapped = wire.signed32(sequence)
    assert -(2**31) <= wrapped < 2**31
    assert (wrapped - sequence) % 2**32 == 0


def test_ledger_names_the_events_behind_data_messages() -> None:
    rig = Rig()
    session = rig.connect()
    request(session, stream("INDEX", "TRADE", 0, {"root": "SPX"}))
    out = rig.run(3.0)[1]
    by_type: dict[str, list[tuple[Event, ...]]] = {}
    for action in sends(out):
        by_type.setdefault(json.loads(action.data)["header"]["type"], []).append(action.events)
    assert all(len(e) == 1 and isinstance(e[0], IndexPrice) for e in by_type["TRADE"])
    assert all(e == () for e in by_type["OHLC"])
