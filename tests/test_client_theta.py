"""The Theta Terminal client on its own: parsers, event decoding from the documented samples,
timestamps across daylight saving, and its connection logic against a small scripted terminal
over in-memory WebSockets in virtual time (the real mock is exercised in test_client_theta_mock)."""

from __future__ import annotations

import datetime as dt
import io
import json
import random
import zoneinfo
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
import pytest
import trio
import trio.testing
import trio_websocket
from hypothesis import given

from clients.common import Backoff, ClientError, Dropped, GapNotice, Rejected, Status
from clients.theta import (
    BULK_TRADES,
    Contract,
    Event,
    IndexPrice,
    Ohlc,
    OptionMarketValue,
    OptionQuote,
    OptionTrade,
    StockQuote,
    StockTrade,
    ThetaClient,
    eastern_to_unix_ns,
    format_strike,
    parse_strike,
    parse_subscription,
    watch,
)

NY = zoneinfo.ZoneInfo("America/New_York")

# ---------------------------------------------------------------------------------------------
# Documented samples (protocols/theta.md and vendor-docs/theta-*.txt), verbatim

QUOTE_SAMPLE = """{"header":{"status":"CONNECTED","type":"QUOTE"},
 "contract":{"security_type":"OPTION","root":"SPXW","expiration":20240315,"strike":4800000,"right":"C"},
 "quote":{"ms_of_day":26622025,"bid_size":7,"bid_exchange":5,"bid":110.2,"bid_condition":50,
          "ask_size":7,"ask_exchange":5,"ask":110.5,"ask_condition":50,"date":20231219}}"""
TRADE_SAMPLE = """{"header":{"status":"CONNECTED","type":"TRADE"},
 "contract":{"security_type":"OPTION","root":"AAPL","expiration":20231222,"strike":200000,"right":"C"},
 "trade":{"ms_of_day":34389945,"sequence":772942264,"size":10,"condition":18,"price":0.31,"exchange":31,"date":20231219}}"""
INDEX_TRADE_SAMPLE = """{"header":{"type":"TRADE","status":"CONNECTED"},
 "contract":{"security_type":"INDEX","root":"SPX"},
 "trade":{"ms_of_day":51952000,"sequence":0,"size":0,"condition":0,"price":5333.39,"exchange":5,
          "date":20240809}}"""
OHLC_SAMPLE = """{"header":{"type":"OHLC","status":"CONNECTED"},
 "contract":{"security_type":"INDEX","root":"SPX"},
 "ohlc":{"ms_of_day":51952000,"open":5314.66,"high":5358.67,"low":5300.84,"close":5333.39,
         "volume":0,"count":1135013,"date":20240809}}"""
MARKET_VALUE_SAMPLE = """{
  "header": {"type": "MARKET_VALUE", "status": "CONNECTED"},
  "contract": {"security_type": "OPTION", "root": "SPXW", "expiration": 20240315,
               "strike": 4800000, "right": "C"},
  "market_value": {"ms_of_day": 26622025, "date": 20231219, "market_bid": 110.19,
                   "market_ask": 110.51, "market_price": 110.35}
}"""
SPXW_4800_C = "option:quote:SPXW:20240315:4800:C"


def ms(h: int, m: int, s: int = 0, milli: int = 0) -> int:
    return ((h * 60 + m) * 60 + s) * 1000 + milli


def utc_ns(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> int:
    moment = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    return int(moment.timestamp()) * 1_000_000_000


# ---------------------------------------------------------------------------------------------
# Subscriptions and strikes


def test_subscription_syntax_maps_to_the_documented_requests() -> None:
    quote = parse_subscription("option:quote:SPXW:20240315:4800:C")
    assert json.loads(quote.request(0, True)) == {
        "msg_type": "STREAM",
        "sec_type": "OPTION",
        "req_type": "QUOTE",
        "add": True,
        "id": 0,
        "contract": {"root": "SPXW", "expiration": 20240315, "strike": 4800000, "right": "C"},
    }
    index = parse_subscription("index:price:SPX")
    assert json.loads(index.request(1, False)) == {
        "msg_type": "STREAM",
        "sec_type": "INDEX",
        "req_type": "TRADE",
        "add": False,
        "id": 1,
        "contract": {"root": "SPX"},
    }
    bulk = parse_subscription("option:trade:*")
    assert json.loads(bulk.request(7, True)) == {
        "msg_type": "STREAM_BULK",
        "sec_type": "OPTION",
        "req_type": "TRADE",
        "add": True,
        "id": 7,
    }
    mv = parse_subscription("option:market_value:SPY:20250321:412.5:p")
    assert mv.text == "option:market_value:SPY:20250321:412.5:P"
    assert json.loads(mv.request(2, True))["contract"]["strike"] == 412500
    stock = parse_subscription("stock:trade:aapl")
    assert stock.text == "stock:trade:AAPL"
    assert json.loads(stock.request(3, True))["sec_type"] == "STOCK"
    # Real JSON: double quotes, lowercase booleans, not Python's str(dict).
    assert b"'" not in quote.request(0, True) and b"true" in quote.request(0, True)


@pytest.mark.parametrize(
    "bad",
    [
        "option:quote:SPXW:20240315:4800",
        "option:quote:SPXW:2024031:4800:C",
        "option:quote:SPXW:20241315:4800:C",
        "option:quote:SPXW:20240315:48.0001:C",
        "option:quote:SPXW:20240315:4800:X",
        "option:bbo:SPXW:20240315:4800:C",
        "index:quote:SPX",
        "stock:trade:",
        "stock:trade:AAPL:1",
        "option:quote:*",
        "SPXW",
    ],
)
def test_bad_subscriptions_are_refused_at_once(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_subscription(bad)


@given(st.integers(min_value=0, max_value=999_999_999_999))
def test_strike_round_trips_exactly(strike_milli: int) -> None:
    assert parse_strike(format_strike(strike_milli)) == strike_milli


def test_strike_in_dollars_and_tenths_of_a_cent() -> None:
    assert parse_strike("4800") == 4_800_000
    assert parse_strike("412.5") == 412_500
    assert parse_strike("0.001") == 1
    assert format_strike(4_800_000) == "4800"
    assert format_strike(412_500) == "412.5"


roots = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=6)
option_subscriptions = st.builds(
    lambda kind, root, day, strike, right: (
        f"option:{kind}:{root}:{day:%Y%m%d}:{format_strike(strike)}:{right}"
    ),
    st.sampled_from(["quote", "trade", "market_value"]),
    roots,
    st.dates(dt.date(2000, 1, 1), dt.date(2099, 12, 31)),
    st.integers(min_value=1, max_value=99_999_999),
    st.sampled_from("CP"),
)
other_subscriptions = st.builds(
    lambda kind, root: f"{kind}:{root}",
    st.sampled_from(["stock:quote", "stock:trade", "index:price"]),
    roots,
)


@given(st.one_of(option_subscriptions, other_subscriptions, st.just(BULK_TRADES)))
def test_canonical_subscriptions_round_trip(text: str) -> None:
    sub = parse_subscription(text)
    assert sub.text == text
    assert parse_subscription(sub.text) == sub
    request = json.loads(sub.request(5, True))
    if sub.contract is not None and sub.contract.security_type == "OPTION":
        c = request["contract"]
        again = f"option:{text.split(':')[1]}:{c['root']}:{c['expiration']}:"
        again += f"{format_strike(c['strike'])}:{c['right']}"
        assert again == text


# ---------------------------------------------------------------------------------------------
# Time


@pytest.mark.parametrize(
    ("date", "ms_of_day", "expected"),
    [
        (20240308, ms(9, 30), utc_ns(2024, 3, 8, 14, 30)),  # EST, the Friday before
        (20240310, ms(9, 30), utc_ns(2024, 3, 10, 13, 30)),  # spring forward: EDT by 09:30
        (20240310, ms(1, 30), utc_ns(2024, 3, 10, 6, 30)),  # still EST before 02:00
        (20240311, ms(9, 30), utc_ns(2024, 3, 11, 13, 30)),
        (20241101, ms(16, 0), utc_ns(2024, 11, 1, 20, 0)),  # EDT
        (20241103, ms(9, 30), utc_ns(2024, 11, 3, 14, 30)),  # fall back: EST by 09:30
        (20241104, ms(9, 30), utc_ns(2024, 11, 4, 14, 30)),
        (20231219, 26622025, utc_ns(2023, 12, 19, 12, 23, 42) + 25_000_000),  # quote sample
        (20240809, 51952000, utc_ns(2024, 8, 9, 18, 25, 52)),  # index sample, EDT
    ],
)
def test_eastern_wall_clock_to_utc(date: int, ms_of_day: int, expected: int) -> None:
    assert eastern_to_unix_ns(date, ms_of_day) == expected


@given(st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2037, 12, 31)))
def test_eastern_time_round_trips_through_zoneinfo(moment: dt.datetime) -> None:
    """An independent conversion (aware datetime arithmetic) agrees, except in the repeated
    hour of an autumn switch, which `date` + `ms_of_day` cannot tell apart."""
    utc = moment.replace(microsecond=moment.microsecond // 1000 * 1000, tzinfo=dt.UTC)
    local = utc.astimezone(NY)
    if local.fold == 1 or local.replace(fold=1).utcoffset() != local.utcoffset():
        return
    date = local.year * 10000 + local.month * 100 + local.day
    wall = ms(local.hour, local.minute, local.second, local.microsecond // 1000)
    seconds = (utc - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)
    assert eastern_to_unix_ns(date, wall) == seconds * 1_000_000


# ---------------------------------------------------------------------------------------------
# A scripted terminal


@dataclass
class Conn:
    ws: trio_websocket.WebSocketConnection
    stream: Any  # the terminal's end of a memory stream pair: closing it is a 1006 for us
    requests: list[dict[str, Any]] = field(default_factory=list)
    heartbeat: bool = True


class Terminal:
    """Just enough terminal to drive the client: heartbeats once a second with `self.status`,
    REQ_RESPONSE from `self.answer`, every request recorded as parsed by a strict JSON parser."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.conns: list[Conn] = []
        self.requests: list[dict[str, Any]] = []
        self.status = "CONNECTED"
        self.answer: Callable[[dict[str, Any]], str | None] = lambda req: "SUBSCRIBED"

    @asynccontextmanager
    async def connector(
        self, url: str, headers: list[tuple[bytes, bytes]]
    ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        assert url == "ws://127.0.0.1:25520/v1/events"
        client_stream, server_stream = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self._serve, server_stream)
        async with trio.open_nursery() as nursery:
            stream: Any = client_stream
            ws = await trio_websocket.wrap_client_stream(nursery, stream, "127.0.0.1", "/v1/events")
            try:
                yield ws
            finally:
                with trio.move_on_after(1) as scope:
                    scope.shield = True
                    await ws.aclose()
                nursery.cancel_scope.cancel()

    async def _serve(self, stream: Any) -> None:
        request = await trio_websocket.wrap_server_stream(self.nursery, stream)
        ws = await request.accept()
        conn = Conn(ws, stream)
        self.conns.append(conn)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeats, conn)
            try:
                while True:
                    req = json.loads(await ws.get_message())
                    conn.requests.append(req)
                    self.requests.append(req)
                    answer = self.answer(req) if "id" in req else None
                    if answer is not None:
                        await self.reply(conn, req["id"], answer)
            except trio_websocket.ConnectionClosed:
                pass
            nursery.cancel_scope.cancel()

    async def _heartbeats(self, conn: Conn) -> None:
        while conn.heartbeat:
            await self.send(conn, {"header": {"status": self.status, "type": "STATUS"}})
            await trio.sleep(1)

    async def reply(self, conn: Conn, req_id: int, answer: str) -> None:
        header = {"type": "REQ_RESPONSE", "status": self.status, "response": answer}
        await self.send(conn, {"header": {**header, "req_id": req_id}})

    async def send(self, conn: Conn, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        try:
            await conn.ws.send_message(text)
        except trio_websocket.ConnectionClosed:
            pass

    @property
    def conn(self) -> Conn:
        return self.conns[-1]

    def stream_requests(self, conn: Conn | None = None) -> list[dict[str, Any]]:
        reqs = self.requests if conn is None else conn.requests
        return [r for r in reqs if r.get("msg_type") in ("STREAM", "STREAM_BULK")]


def quote(root: str = "SPXW", strike: int = 4800000, bid: float = 110.2, at: int = 0) -> str:
    return json.dumps(
        {
            "header": {"status": "CONNECTED", "type": "QUOTE"},
            "contract": {
                "security_type": "OPTION",
                "root": root,
                "expiration": 20240315,
                "strike": strike,
                "right": "C",
            },
            "quote": {
                "ms_of_day": 34200000 + at,
                "bid_size": 7,
                "bid_exchange": 5,
                "bid": bid,
                "bid_condition": 50,
                "ask_size": 7,
                "ask_exchange": 5,
                "ask": bid + 0.3,
                "ask_condition": 50,
                "date": 20240314,
            },
        }
    )


def trade(sequence: int, root: str = "SPXW", strike: int = 4800000, at: int = 0) -> str:
    return json.dumps(
        {
            "header": {"status": "CONNECTED", "type": "TRADE"},
            "contract": {
                "security_type": "OPTION",
                "root": root,
                "expiration": 20240315,
                "strike": strike,
                "right": "C",
            },
            "trade": {
                "ms_of_day": 34200000 + at,
                "sequence": sequence,
                "size": 1,
                "condition": 18,
                "price": 110.3,
                "exchange": 31,
                "date": 20240314,
            },
        }
    )


async def until(predicate: Callable[[], bool], timeout: float = 60) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


@dataclass
class Run:
    term: Terminal
    client: ThetaClient
    events: list[Event]
    error: list[BaseException]

    def market(self) -> list[Event]:
        return [e for e in self.events if hasattr(e, "timestamp_ns")]

    def of(self, cls: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


@asynccontextmanager
async def running(**kwargs: Any) -> AsyncIterator[Run]:
    async with trio.open_nursery() as nursery:
        term = Terminal(nursery)
        kwargs.setdefault("backoff", Backoff(rng=random.Random(4)))
        client = ThetaClient(connector=term.connector, clock=trio.current_time, **kwargs)
        run = Run(term, client, [], [])

        async def collect() -> None:
            try:
                async for event in client:
                    run.events.append(event)
            except ClientError as exc:
                run.error.append(exc)

        async with client:
            nursery.start_soon(collect)
            await until(lambda: bool(term.conns))
            yield run
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------------
# Decoding


async def test_documented_samples_become_typed_events(autojump_clock: Any) -> None:
    async with running() as run:
        await run.client.subscribe(
            SPXW_4800_C,
            "option:trade:AAPL:20231222:200:C",
            "index:price:SPX",
            "option:market_value:SPXW:20240315:4800:C",
        )
        await until(lambda: len(run.term.stream_requests()) == 4)
        for sample in (
            QUOTE_SAMPLE,
            TRADE_SAMPLE,
            INDEX_TRADE_SAMPLE,
            OHLC_SAMPLE,
            MARKET_VALUE_SAMPLE,
        ):
            await run.term.send(run.term.conn, sample)
        await until(lambda: len(run.market()) == 5)
    q, t, i, o, mv = run.market()
    spxw = Contract("OPTION", "SPXW", dt.date(2024, 3, 15), 4_800_000, "C")
    assert q == OptionQuote(
        "SPXW:20240315:4800:C",
        spxw,
        eastern_to_unix_ns(20231219, 26622025),
        20231219,
        26622025,
        110.2,
        7,
        5,
        50,
        110.5,
        7,
        5,
        50,
    )
    assert q.sequence is None and (q.root, q.strike, q.right) == ("SPXW", 4800.0, "C")
    assert q.expiration == dt.date(2024, 3, 15)
    assert isinstance(t, OptionTrade)
    assert (t.symbol, t.sequence, t.size, t.condition, t.price, t.exchange) == (
        "AAPL:20231222:200:C",
        772942264,
        10,
        18,
        0.31,
        31,
    )
    assert t.timestamp_ns == utc_ns(2023, 12, 19, 14, 33, 9) + 945_000_000
    assert (t.root, t.strike, t.right) == ("AAPL", 200.0, "C")
    assert i == IndexPrice(
        "SPX",
        Contract("INDEX", "SPX"),
        utc_ns(2024, 8, 9, 18, 25, 52),
        20240809,
        51952000,
        5333.39,
    )
    assert isinstance(o, Ohlc) and (o.open, o.high, o.low, o.close, o.count) == (
        5314.66,
        5358.67,
        5300.84,
        5333.39,
        1135013,
    )
    assert isinstance(mv, OptionMarketValue)
    assert (mv.market_bid, mv.market_ask, mv.market_price) == (110.19, 110.51, 110.35)
    assert run.client.stats.frames_dropped_unparseable == 0


@given(st.randoms(use_true_random=False))
def test_replies_do_not_depend_on_key_order(rnd: random.Random) -> None:
    def shuffled(value: Any) -> Any:
        if isinstance(value, dict):
            items = list(value.items())
            rnd.shuffle(items)
            return {k: shuffled(v) for k, v in items}
        return value

    async def main() -> list[Event]:
        async with running() as run:
            await run.client.subscribe(SPXW_4800_C, "option:trade:AAPL:20231222:200:C")
            await until(lambda: run.client.stats.confirmed == 2)
            await run.term.send(run.term.conn, shuffled(json.loads(QUOTE_SAMPLE)))
            await run.term.send(run.term.conn, shuffled(json.loads(TRADE_SAMPLE)))
            await until(lambda: len(run.market()) == 2)
        return run.market()

    events = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    quote_event, trade_event = events
    assert isinstance(quote_event, OptionQuote) and isinstance(trade_event, OptionTrade)
    assert trade_event.sequence == 772942264


async def test_stock_streams_and_negative_trade_sequence(autojump_clock: Any) -> None:
    async with running() as run:
        await run.client.subscribe("stock:quote:AAPL", "stock:trade:AAPL")
        await until(lambda: run.client.stats.confirmed == 2)
        contract = {"security_type": "STOCK", "root": "AAPL"}
        body = {
            "ms_of_day": 36000000,
            "sequence": -2147483648,
            "size": 100,
            "condition": 0,
            "price": 225.5,
            "exchange": 3,
            "date": 20240705,
        }
        await run.term.send(
            run.term.conn,
            {
                "header": {"type": "TRADE", "status": "CONNECTED"},
                "contract": contract,
                "trade": body,
            },
        )
        quote_body = json.loads(QUOTE_SAMPLE)["quote"]
        await run.term.send(
            run.term.conn,
            {
                "header": {"type": "QUOTE", "status": "CONNECTED"},
                "contract": contract,
                "quote": quote_body,
            },
        )
        await until(lambda: len(run.market()) == 2)
    t, q = run.market()
    assert isinstance(t, StockTrade) and t.sequence == -(2**31) and t.symbol == "AAPL"
    assert t.timestamp_ns == utc_ns(2024, 7, 5, 14, 0)
    assert isinstance(q, StockQuote) and q.symbol == "AAPL"


async def test_corrupt_frames_are_counted_and_skipped(autojump_clock: Any) -> None:
    good = json.loads(TRADE_SAMPLE)
    corrupt: list[Any] = [
        "{not json",
        "[]",
        json.dumps({"header": {"status": "CONNECTED"}}),  # no type
        json.dumps({**good, "trade": {**good["trade"], "price": "cheap"}}),
        json.dumps({**good, "trade": {**good["trade"], "sequence": 2**31}}),  # not 32-bit
        json.dumps({**good, "trade": {k: v for k, v in good["trade"].items() if k != "size"}}),
        json.dumps({**good, "trade": {**good["trade"], "date": 20231332}}),
        json.dumps({**good, "trade": {**good["trade"], "ms_of_day": -5}}),
        json.dumps({**good, "contract": {"security_type": "OPTION", "root": "AAPL"}}),
        json.dumps({**good, "header": {"type": "GREEKS", "status": "CONNECTED"}}),
        json.dumps({"header": {"type": "TRADE", "status": "CONNECTED"}}),
        b"\xff\xfe binary",
    ]
    async with running() as run:
        await run.client.subscribe("option:trade:AAPL:20231222:200:C")
        await until(lambda: run.client.stats.confirmed == 1)
        for frame in corrupt:
            if isinstance(frame, bytes):
                await run.term.conn.ws.send_message(frame)
            else:
                await run.term.send(run.term.conn, frame)
        await run.term.send(run.term.conn, TRADE_SAMPLE)
        await until(lambda: len(run.market()) == 1)
    assert run.client.stats.frames_dropped_unparseable == len(corrupt)
    assert run.client.stats.reconnects == 0
    # Each one is reported, in the order received, with the start of the frame.
    drops = run.of(Dropped)
    assert len(drops) == run.client.stats.dropped == len(corrupt)
    assert drops[0].reason.startswith("unreadable frame") and drops[0].frame == "{not json"
    assert drops[3].reason.startswith("unreadable TRADE")
    assert drops[9].reason == "unknown message type 'GREEKS'"
    assert drops[11].frame == repr(b"\xff\xfe binary")
    assert run.events.index(drops[-1]) < run.events.index(run.market()[0])


async def test_duplicates_are_dropped_and_regressions_flagged(autojump_clock: Any) -> None:
    async with running() as run:
        await run.client.subscribe(SPXW_4800_C, "option:trade:SPXW:20240315:4800:C")
        await until(lambda: run.client.stats.confirmed == 2)
        frames = [
            quote(bid=1.0, at=1),
            quote(bid=1.0, at=1),  # exact repeat: dropped
            quote(bid=1.1, at=1),
            quote(bid=1.0, at=1),  # A, B, A: a real change back
            trade(2147483647),
            trade(2147483647),  # repeat by sequence: dropped
            trade(-2147483648),  # the signed counter wrapping: new, not a regression
            trade(2147483000),  # late: delivered, flagged
        ]
        for frame in frames:
            await run.term.send(run.term.conn, frame)
        await until(lambda: len(run.market()) == 6)
        await trio.sleep(1)
    assert [getattr(e, "bid", None) for e in run.of(OptionQuote)] == [1.0, 1.1, 1.0]
    assert [e.sequence for e in run.of(OptionTrade)] == [2147483647, -2147483648, 2147483000]
    stats = run.client.stats
    assert (stats.repeats_dropped, stats.duplicates_dropped, stats.regressions) == (1, 1, 1)


async def test_a_repeat_behind_later_quotes_is_dropped(autojump_clock: Any) -> None:
    """Found by `feedlab chaos --vendor theta --seed 2`: a duplicate held back behind five later
    messages was delivered again, and the old quote replaced the newer ones."""
    async with running() as run:
        await run.client.subscribe(SPXW_4800_C)
        await until(lambda: run.client.stats.confirmed == 1)
        frames = [
            quote(bid=1.0, at=1),
            quote(bid=1.1, at=2),
            quote(bid=1.2, at=3),
            quote(bid=1.0, at=1),  # the first one again, behind later ones: dropped
            quote(bid=1.0, at=3),  # a new quote back at an old price: delivered
        ]
        for frame in frames:
            await run.term.send(run.term.conn, frame)
        await until(lambda: len(run.market()) == 4)
        await trio.sleep(1)
    assert [e.bid for e in run.of(OptionQuote)] == [1.0, 1.1, 1.2, 1.0]
    assert run.of(OptionQuote)[-1].ms_of_day == 34200003
    assert run.client.stats.repeats_dropped == 1


async def test_a_new_trade_that_meets_an_old_number_is_delivered(autojump_clock: Any) -> None:
    """A sequence jump, then a reconnect: the numbers go on from below the jumped ones, and a
    new trade may meet a number seen before (found against the Amberdata client by
    `feedlab chaos --vendor amberdata --seed 7`; the same schedule with seed 8 here). The number
    and the time are the trade; the number alone was taken for a repeat and dropped."""
    async with running() as run:
        await run.client.subscribe("option:trade:SPXW:20240315:4800:C")
        await until(lambda: run.client.stats.confirmed == 1)
        for frame in (trade(10, at=1), trade(20, at=2), trade(10, at=3), trade(10, at=3)):
            await run.term.send(run.term.conn, frame)
        await until(lambda: len(run.market()) == 3)
        await trio.sleep(1)
    assert [(e.sequence, e.ms_of_day) for e in run.of(OptionTrade)] == [
        (10, 34200001),
        (20, 34200002),
        (10, 34200003),
    ]
    assert (run.client.stats.regressions, run.client.stats.duplicates_dropped) == (1, 1)


async def test_data_for_streams_we_do_not_hold_is_not_delivered(autojump_clock: Any) -> None:
    async with running() as run:
        await run.client.subscribe(SPXW_4800_C)
        await until(lambda: run.client.stats.confirmed == 1)
        await run.term.send(run.term.conn, trade(5))  # a trade stream left by another program
        await run.term.send(run.term.conn, quote(strike=4805000))
        await run.term.send(run.term.conn, quote())
        await until(lambda: len(run.market()) == 1)
    assert run.client.stats.unsolicited_dropped == 2


async def test_bulk_trade_stream_brings_quote_ohlc_and_trade(autojump_clock: Any) -> None:
    async with running() as run:
        await run.client.subscribe(BULK_TRADES)
        await until(lambda: run.client.stats.confirmed == 1)
        ohlc = {
            "header": {"type": "OHLC", "status": "CONNECTED"},
            "contract": json.loads(trade(1, root="QQQ"))["contract"],
            "ohlc": {
                "ms_of_day": 34200000,
                "open": 1,
                "high": 2,
                "low": 0.5,
                "close": 1.5,
                "volume": 10,
                "count": 3,
                "date": 20240314,
            },
        }
        for frame in (quote(root="QQQ"), ohlc, trade(1, root="QQQ"), quote(root="QQQ", bid=2)):
            await run.term.send(run.term.conn, frame)
        await until(lambda: len(run.market()) == 4)
    assert [type(e) for e in run.market()] == [OptionQuote, Ohlc, OptionTrade, OptionQuote]
    assert run.term.stream_requests()[0]["msg_type"] == "STREAM_BULK"


# ---------------------------------------------------------------------------------------------
# Requests and replies


async def test_request_ids_strictly_increase_across_clients_and_reconnects(
    autojump_clock: Any,
) -> None:
    async with running() as run:
        await run.client.subscribe(SPXW_4800_C, "index:price:SPX")
        await run.client.unsubscribe("index:price:SPX")
        await until(lambda: len(run.term.stream_requests()) == 3)
        await run.term.conn.ws.aclose(1011)
        await until(lambda: len(run.term.conns) == 2 and len(run.term.stream_requests()) == 4)
    async with running(first_request_id=0) as second:  # cannot lower the counter
        await second.client.subscribe(SPXW_4800_C)
        await until(lambda: len(second.term.stream_requests()) == 1)
    ids = [r["id"] for r in run.term.stream_requests() + second.term.stream_requests()]
    assert ids == sorted(set(ids)), ids
    adds = [r["add"] for r in run.term.stream_requests()]
    assert adds == [True, True, False, True]


async def test_refusals_become_rejected_events_and_drop_the_stream(autojump_clock: Any) -> None:
    answers = {"SPY": "MAX_STREAMS_REACHED", "QQQ": "INVALID_PERMS", "XYZ": "ERROR"}
    async with running() as run:
        run.term.answer = lambda req: answers.get(req["contract"]["root"], "SUBSCRIBED")
        await run.client.subscribe(
            "option:quote:SPY:20240315:500:C", "index:price:QQQ", "stock:quote:XYZ", SPXW_4800_C
        )
        await until(lambda: len(run.of(Rejected)) == 3)
        assert run.client.subscriptions == (SPXW_4800_C,)
        await run.term.conn.ws.aclose(1011)  # only the accepted stream is restored
        await until(lambda: len(run.term.conns) == 2 and run.client.stats.confirmed == 2)
    assert {(r.subscription, r.reason) for r in run.of(Rejected)} == {
        ("option:quote:SPY:20240315:500:C", "MAX_STREAMS_REACHED"),
        ("index:price:QQQ", "INVALID_PERMS"),
        ("stock:quote:XYZ", "ERROR"),
    }
    assert [r["contract"]["root"] for r in run.term.stream_requests(run.term.conn)] == ["SPXW"]


async def test_orderly_close_sends_stop(autojump_clock: Any) -> None:
    async with running() as run:
        await run.client.subscribe("index:price:SPX")
        await until(lambda: run.client.stats.confirmed == 1)
    assert run.term.requests[-1] == {"msg_type": "STOP"}
    assert not run.error


async def test_unsubscribe_while_disconnected_is_sent_on_reconnect(autojump_clock: Any) -> None:
    async with running(backoff=Backoff(initial=5, rng=random.Random(1))) as run:
        await run.client.subscribe(SPXW_4800_C, "index:price:SPX")
        await until(lambda: run.client.stats.confirmed == 2)
        await run.term.conn.stream.aclose()  # 1006
        await until(
            lambda: any(isinstance(e, Status) and e.status == "reconnecting" for e in run.events)
        )
        await run.client.unsubscribe("index:price:SPX")
        await until(lambda: len(run.term.conns) == 2 and len(run.term.conn.requests) == 2)
    first, second = run.term.stream_requests(run.term.conn)
    assert (first["add"], first["contract"]["root"]) == (False, "SPX")
    assert (second["add"], second["contract"]["root"]) == (True, "SPXW")


# ---------------------------------------------------------------------------------------------
# Connection faults


async def test_heartbeat_stop_replaces_the_socket_within_three_seconds(
    autojump_clock: Any,
) -> None:
    async with running() as run:
        await run.client.subscribe(SPXW_4800_C)
        await until(lambda: run.client.stats.confirmed == 1)
        await run.term.send(run.term.conn, quote())
        await until(lambda: len(run.market()) == 1)
        run.term.conn.heartbeat = False
        stopped = trio.current_time()
        await until(lambda: len(run.term.conns) == 2)
        assert trio.current_time() - stopped <= 3.0 + 30.0  # watchdog + first backoff ceiling
        await until(lambda: bool(run.of(GapNotice)))
        await run.term.send(run.term.conn, quote(bid=2.0, at=5000))
        await until(lambda: len(run.market()) == 2)
    assert run.client.stats.heartbeat_timeouts == 1
    assert [r["add"] for r in run.term.stream_requests(run.term.conn)] == [True]
    (gap,) = run.of(GapNotice)
    assert (
        gap.contracts == ("SPXW:20240315:4800:C",)
        and gap.start <= stopped + 1
        and gap.reason == "reconnect"
    )


async def test_heartbeat_watchdog_fires_at_three_seconds(autojump_clock: Any) -> None:
    async with running(ping_interval=None) as run:
        await run.client.subscribe(SPXW_4800_C)
        await until(lambda: run.client.stats.confirmed == 1)
        run.term.conn.heartbeat = False
        await trio.sleep(1.5)  # the last heartbeat was up to a second ago
        started = trio.current_time()
        await until(lambda: run.client.stats.heartbeat_timeouts == 1)
        assert 0.4 <= trio.current_time() - started <= 1.6


async def test_data_without_heartbeats_still_counts_as_a_dead_terminal(
    autojump_clock: Any,
) -> None:
    async with running(ping_interval=None) as run:
        await run.client.subscribe(SPXW_4800_C)
        await until(lambda: run.client.stats.confirmed == 1)
        run.term.conn.heartbeat = False
        for n in range(50):
            await run.term.send(run.term.conn, quote(bid=1 + n / 100, at=n))
            await trio.sleep(0.1)
        assert run.client.stats.heartbeat_timeouts == 1


async def test_eviction_by_a_second_client_reconnects(autojump_clock: Any) -> None:
    async with running() as run:
        await run.client.subscribe(SPXW_4800_C)
        await until(lambda: run.client.stats.confirmed == 1)
        await run.term.conn.ws.aclose(1000)
        await until(lambda: bool(run.of(GapNotice)))
    statuses = [e.status for e in run.of(Status)]
    assert statuses[:4] == ["connected", "evicted", "reconnecting", "connected"]
    assert run.client.stats.evictions == 1 and len(run.term.conns) == 2


async def test_1006_every_few_minutes_loses_no_stream_and_delivers_no_duplicate(
    autojump_clock: Any,
) -> None:
    """The terminal keeps its streams across our reconnects and may even deliver a stream twice
    after we subscribe it again: the application still sees every trade once."""
    async with running() as run:
        await run.client.subscribe("option:trade:SPXW:20240315:4800:C")
        sequence = 0
        for cycle in range(4):
            await until(lambda c=cycle: len(run.term.conns) == c + 1)  # type: ignore[misc]
            await until(lambda: bool(run.term.stream_requests(run.term.conn)))
            for _ in range(30):
                sequence += 1
                frame = trade(sequence, at=sequence)
                for _copy in range(1 if cycle == 0 else 2):  # one copy per request it holds
                    await run.term.send(run.term.conn, frame)
                await trio.sleep(6)
            await run.term.conn.stream.aclose()
        await until(lambda: len(run.of(GapNotice)) == 4)
    assert [e.sequence for e in run.of(OptionTrade)] == list(range(1, sequence + 1))
    assert run.client.stats.reconnects == 4
    assert run.client.stats.duplicates_dropped == 90


async def test_upstream_outage_reports_gap_and_resubscribes_silent_streams(
    autojump_clock: Any,
) -> None:
    async with running() as run:
        await run.client.subscribe(SPXW_4800_C, "option:trade:SPXW:20240315:4800:C")
        await until(lambda: run.client.stats.confirmed == 2)
        await run.term.send(run.term.conn, quote(bid=1.0))
        await until(lambda: len(run.market()) == 1)
        before = len(run.term.requests)
        await trio.sleep(0.5)
        run.term.status = "DISCONNECTED"
        lost_at = trio.current_time()
        await until(lambda: any(e.status == "upstream_disconnected" for e in run.of(Status)))
        await trio.sleep(10)
        assert not run.of(GapNotice) and len(run.term.requests) == before  # socket stays
        run.term.status = "CONNECTED"
        back_at = trio.current_time()
        await until(lambda: any(e.status == "upstream_connected" for e in run.of(Status)))
        # The terminal resubscribed the quote stream itself; the trade stream stays silent.
        await run.term.send(run.term.conn, quote(bid=1.1, at=60_000))
        await until(lambda: bool(run.of(GapNotice)))
    (gap,) = run.of(GapNotice)
    assert gap.contracts == ("SPXW:20240315:4800:C",)
    assert lost_at - 1.0 <= gap.start <= lost_at and gap.end >= back_at + 5.0
    again = [r for r in run.term.requests[before:] if r.get("msg_type") == "STREAM"]
    assert [(r["req_type"], r["add"]) for r in again] == [("TRADE", True)]
    assert again[0]["id"] > max(r["id"] for r in run.term.requests[:before])
    assert run.client.stats.resubscribed_after_outage == 1
    assert len(run.term.conns) == 1


async def test_max_reconnects_raises_from_the_iterator(autojump_clock: Any) -> None:
    async with trio.open_nursery() as nursery:
        term = Terminal(nursery)

        @asynccontextmanager
        async def refusing(
            url: str, headers: list[tuple[bytes, bytes]]
        ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
            raise OSError("connection refused")
            yield  # pragma: no cover

        del term
        client = ThetaClient(
            connector=refusing,
            clock=trio.current_time,
            max_reconnects=3,
            backoff=Backoff(rng=random.Random(2)),
        )
        seen: list[Event] = []
        with pytest.raises(ClientError, match="gave up after 3"):
            async with client:
                async for event in client:
                    seen.append(event)
        assert [e.status for e in seen if isinstance(e, Status)] == ["reconnecting"] * 3
        nursery.cancel_scope.cancel()


async def test_watch_prints_one_json_line_per_event(autojump_clock: Any) -> None:
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        term = Terminal(nursery)

        async def feed() -> None:
            await until(lambda: bool(term.conns) and bool(term.stream_requests()))
            await term.send(term.conn, QUOTE_SAMPLE)
            await until(lambda: "OptionQuote" in out.getvalue())
            nursery.cancel_scope.cancel()

        nursery.start_soon(feed)
        await watch(
            [SPXW_4800_C],
            url="ws://127.0.0.1:25520/v1/events",
            api_key=None,
            out=out,
            table=False,
            connector=term.connector,
        )
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0] == {
        "type": "Status",
        "vendor": "theta",
        "status": "connected",
        "message": "ws://127.0.0.1:25520/v1/events",
    }
    assert lines[-1]["type"] == "OptionQuote" and lines[-1]["symbol"] == "SPXW:20240315:4800:C"
    assert lines[-1]["bid"] == 110.2 and "contract" not in lines[-1]
    assert (lines[-1]["strike"], lines[-1]["right"], lines[-1]["expiration"]) == (
        4800,
        "C",
        20240315,
    )


async def test_watch_table_mode_prints_aligned_rows(autojump_clock: Any) -> None:
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        term = Terminal(nursery)

        async def feed() -> None:
            await until(lambda: bool(term.conns) and len(term.stream_requests()) == 2)
            await term.send(term.conn, TRADE_SAMPLE)
            await term.send(term.conn, INDEX_TRADE_SAMPLE)
            await until(lambda: "IndexPrice" in out.getvalue())
            nursery.cancel_scope.cancel()

        nursery.start_soon(feed)
        await watch(
            ["option:trade:AAPL:20231222:200:C", "index:price:SPX"],
            url="ws://127.0.0.1:25520/v1/events",
            api_key=None,
            out=out,
            table=True,
            connector=term.connector,
        )
    rows = out.getvalue().splitlines()
    assert rows[1].startswith("14:33:09.945000 OptionTrade       AAPL:20231222:200:C")
    assert rows[1].endswith("10 @ 0.31       seq 772942264")
    assert rows[2].startswith("18:25:52.000000 IndexPrice        SPX") and "5333.39" in rows[2]
