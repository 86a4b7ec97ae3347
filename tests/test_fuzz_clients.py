"""Fuzzing the three built-in clients with hostile server frames (issue 10, client side).

A small scripted vendor of our own (no mock code: the frames must be free to be anything) serves
each client over in-memory streams in virtual time: it answers the handshake and the subscription
as the vendor does, then plays a script Hypothesis draws, valid market data interleaved with
hostile frames: malformed JSON, NaN and huge-number text, deep nesting, giant strings, binary
frames and invalid UTF-8, JSON of the wrong shape, unknown message types, and valid messages with
one field of the wrong type, out of range or missing. Batched vendors (Massive always, Amberdata
when a frame is an array) also get hostile messages inside otherwise valid batches.

The property, for every script: the client raises nothing, stays on its one connection, delivers
every valid event in order, and reports every hostile frame (or batched message) where it was,
as one `Dropped` event, with `stats.dropped` agreeing. Frames the client can read but has no use
for are the exceptions, each checked for what it must produce (see `Token`): the vendor's news
(Amberdata's plain-text close explanation, a Massive status) is a `Status`, an error reply
without an id a `Rejected`, a reply to no request of ours or data for a stream we do not hold
only a count in `stats`. One more test has the real mocks' `corrupt` fault do the damage.

Examples: `FUZZ_SCALE` (default 3) times the Hypothesis profile's count (`ci`: 60, `deep`: 5,000),
so CI feeds each client several thousand frames; `HYPOTHESIS_PROFILE=deep` runs a long campaign.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import hypothesis.strategies as st
import orjson
import pytest
import trio
import trio.testing
import trio_websocket
from hypothesis import given, settings

from clients.amberdata import AmberdataClient
from clients.common import Dropped, Rejected, Status
from clients.massive import MassiveClient, Quote
from clients.massive.invented import CLOSING_STATUSES
from clients.theta import OptionTrade, ThetaClient

SCALE = int(os.environ.get("FUZZ_SCALE", "3"))
EXAMPLES = (settings.default.max_examples if settings.default else 60) * SCALE
FRAMES: Counter[str] = Counter()  # frames played per vendor, for the README's figures
HOSTILE: Counter[str] = Counter()  # of which hostile frames, or hostile messages of a batch
T0_MS = 1_765_000_000_000

# -- hostile material shared by the vendors ---------------------------------------------------

Token = str
"""What one hostile frame (or batched message) must produce: "D" a `Dropped` event, "S" a
`Status` (the vendor's news, such as Amberdata's plain-text close explanation), "R" a `Rejected`,
"C" nothing but a count in the client's `stats` (a reply or data the client understood and has
no use for); "E" is the next valid market event."""

_TEXT = st.characters(blacklist_categories=["Cs"])  # a text frame is UTF-8: no lone surrogates
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(_TEXT, max_size=16)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(_TEXT, max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
"""JSON values orjson reads back: they may sit inside a batch without spoiling it."""


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def is_json(frame: str | bytes) -> bool:
    """Whether the client's JSON parser can read the frame at all (not its shape)."""
    try:
        orjson.loads(frame)
    except orjson.JSONDecodeError:
        return False
    return True


def deep(depth: int, opener: str = "[") -> str:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return opener * depth + "1" + closer * depth


NOT_JSON = [
    "", " ", "{", "[1,", '{"a":}', "'single'", "nul", "tru", "[1,2,,3]", '{"a":1,}', "{}{}",
    "NaN", "-Infinity", "[NaN]", '{"t": Infinity}', "1e999999", "[1e400]", "0x10", "+1", "01",
    '"\\ud800"', "\ufeff[]", "//", "\x00",
]  # fmt: skip
not_json_text = (
    st.sampled_from(NOT_JSON)
    | st.text(_TEXT, max_size=40)
    | st.integers(1025, 4000).map(deep)  # deeper than orjson reads
    | st.integers(1, 300).map(lambda n: "{" * n)
).filter(lambda t: not is_json(t))
INVALID_UTF8 = [b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80"]
binary_garbage = (
    st.binary(max_size=48)
    | st.tuples(st.binary(max_size=16), st.sampled_from(INVALID_UTF8), st.binary(max_size=16)).map(
        b"".join
    )
    | not_json_text.map(str.encode)
).filter(lambda b: not is_json(b))

wrong_for_number = (
    st.text(_TEXT, max_size=12).map(dumps)
    | st.sampled_from(["null", "true", "[]", "{}", '"1.5"', "[1]", '{"v":1}'])
    | st.integers(1, 900).map(deep)  # nested as deep as a batch may hold
    | st.integers(1, 300).map(lambda n: dumps("9" * (n * 1_000)))  # a giant string
)
"""JSON text that is no number (nor an integer): for a numeric field."""
wrong_for_int = wrong_for_number | st.sampled_from(["1.5", "-0.25", "1e3", "1.0"])
wrong_for_string = st.sampled_from(
    ["null", "7", "1.5", "true", "[]", "{}", '["O:SPY"]']
) | st.integers(1, 900).map(deep)


def obj(fields: dict[str, str]) -> str:
    """A JSON object from JSON text per field (so a field can hold text json.dumps cannot make)."""
    return "{" + ",".join(f"{dumps(k)}:{v}" for k, v in fields.items()) + "}"


def broken(
    fields: dict[str, Any], ints: set[str], numbers: set[str], strings: set[str]
) -> st.SearchStrategy[str]:
    """A valid message with one required field of a wrong type or missing."""
    names = sorted(ints | numbers | strings)

    def build(name: str, wrong: str | None) -> str:
        text = {k: dumps(v) for k, v in fields.items()}
        if wrong is None:
            del text[name]
        else:
            text[name] = wrong
        return obj(text)

    def one(name: str) -> st.SearchStrategy[str]:
        kind = wrong_for_int if name in ints else wrong_for_number if name in numbers else None
        wrong = kind if kind is not None else wrong_for_string
        return st.builds(build, st.just(name), st.none() | wrong)

    return st.sampled_from(names).flatmap(one)


@dataclass(frozen=True)
class Frame:
    data: str | bytes | None  # None: a batch, from `parts`
    tokens: tuple[Token, ...]
    parts: tuple[str | None, ...] = ()  # JSON text, None for the next valid message


def whole(data: str | bytes, token: Token = "D") -> Frame:
    return Frame(data, (token,))


def batch(parts: list[tuple[str | None, Token]]) -> Frame:
    return Frame(None, tuple(t for _, t in parts), tuple(p for p, _ in parts))


VALID = (None, "E")


VALID_FRAME = batch([VALID])


def render(frame: Frame, valid: Iterator[str], batched: bool = True) -> str | bytes:
    """The frame's bytes on the wire; valid messages numbered in the order they are played."""
    if frame.data is not None:
        return frame.data
    if not batched:
        assert frame.parts == (None,)
        return next(valid)
    return "[" + ",".join(next(valid) if p is None else p for p in frame.parts) + "]"


def scripts(frames: st.SearchStrategy[Frame]) -> st.SearchStrategy[list[Frame]]:
    """The vendor plays one more valid event after the script: once the client delivered it,
    it must have read everything before it."""
    return st.lists(frames, min_size=12, max_size=80)


# -- the scripted vendor ---------------------------------------------------------------------

Serve = Callable[[trio_websocket.WebSocketConnection], Awaitable[None]]


class Vendor:
    """One in-memory WebSocket server per connection the client opens; `serve` plays it."""

    def __init__(self, serve: Serve, host: str, path: str) -> None:
        self.serve, self.host, self.path = serve, host, path
        self.connections = 0

    @asynccontextmanager
    async def connector(
        self, url: str, headers: list[tuple[bytes, bytes]]
    ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        self.connections += 1
        client_stream: Any
        client_stream, server_stream = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._accept, server_stream)
            ws = await trio_websocket.wrap_client_stream(
                nursery, client_stream, self.host, self.path, extra_headers=headers
            )
            try:
                yield ws
            finally:
                await ws.aclose()
                nursery.cancel_scope.cancel()

    async def _accept(self, stream: Any) -> None:
        async with trio.open_nursery() as nursery:
            request = await trio_websocket.wrap_server_stream(nursery, stream)
            ws = await request.accept()
            try:
                await self.serve(ws)
                while True:  # read whatever the client still says until it closes
                    await ws.get_message()
            except trio_websocket.ConnectionClosed:
                pass
            nursery.cancel_scope.cancel()


async def play(ws: trio_websocket.WebSocketConnection, frames: list[str | bytes]) -> None:
    for frame in frames:
        await ws.send_message(frame)


def expected_tokens(script: list[Frame]) -> list[Token]:
    return [t for frame in script for t in frame.tokens] + ["E"]


def token_of(event: object, data: type | tuple[type, ...]) -> Token | None:
    if isinstance(event, Dropped):
        return "D"
    if isinstance(event, Status):  # the connection's own news is not the script's
        return None if event.status in ("connected", "reconnecting") else "S"
    if isinstance(event, Rejected):
        return "R"
    if isinstance(event, data):
        return "E"
    return None


async def consume(
    client: Any, wanted: int, data: type | tuple[type, ...]
) -> tuple[list[Token], list[Any]]:
    """Read events until `wanted` market events came; (the tokens seen, the market events)."""
    tokens: list[Token] = []
    market: list[Any] = []
    with trio.fail_after(120):  # virtual seconds: a stuck client fails instead of hanging
        async for event in client:
            token = token_of(event, data)
            if token is not None:
                tokens.append(token)
            if token == "E":
                market.append(event)
                if len(market) == wanted:
                    break
    return tokens, market


def run(main: Callable[[], Awaitable[None]]) -> None:
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def check(
    script: list[Frame], tokens: list[Token], sequences: list[int], stats: Any, counted: int = 0
) -> None:
    """The events seen are the script's, in its order; `counted`: the stats that count "C"."""
    expected = expected_tokens(script)
    assert tokens == [t for t in expected if t != "C"]
    assert sequences == list(range(1, expected.count("E") + 1))  # every valid event, in order
    assert stats.dropped == expected.count("D")
    assert counted == expected.count("C")
    assert stats.reconnects == 0


# -- Massive ----------------------------------------------------------------------------------

MASSIVE_SUB = "Q.O:SPY251219C00650000"
QUOTE = {
    "ev": "Q", "sym": "O:SPY251219C00650000", "bx": 1, "ax": 1, "bp": 1.0, "ap": 1.1,
    "bs": 1, "as": 1, "t": T0_MS, "q": 0,
}  # fmt: skip


def massive_quote(n: int) -> str:
    return dumps({**QUOTE, "t": T0_MS + n, "q": n})


MASSIVE_KNOWN = {"Q", "T", "A", "AM", "status"}
massive_bad_message = st.one_of(
    json_values.filter(lambda v: not isinstance(v, dict)).map(dumps),  # not an object
    st.integers(1, 900).map(deep),
    st.builds(lambda d, ev: obj({**{k: dumps(v) for k, v in d.items()}, "ev": ev}),
              st.dictionaries(st.text(_TEXT, max_size=6), json_values, max_size=3),
              wrong_for_string),  # `ev` not a string
    st.text(_TEXT, max_size=8).filter(lambda t: t not in MASSIVE_KNOWN).map(
        lambda ev: dumps({**QUOTE, "ev": ev})
    ),  # unknown event type
    broken(QUOTE, {"bx", "ax", "bs", "as", "t", "q"}, {"bp", "ap"}, {"sym"}),
    st.sampled_from(["O:SPY", "SPY251219C00650000", "O:SPY251319C00650000", "x" * 300_000]).map(
        lambda sym: dumps({**QUOTE, "sym": sym})
    ),  # not an option ticker
    wrong_for_string.map(lambda s: obj({"ev": '"status"', "status": s})),
)  # fmt: skip
MASSIVE_SESSION_STATUSES = {"connected", "auth_success", "auth_failed", "success"} | set(
    CLOSING_STATUSES
)
massive_news = st.builds(
    lambda status, message: obj({"ev": '"status"', "status": dumps(status), "message": message}),
    st.just("error")
    | st.text(_TEXT, max_size=12).filter(lambda t: t not in MASSIVE_SESSION_STATUSES),
    json_values.map(dumps) | st.integers(1, 1000).map(deep),
)
"""Statuses that change nothing (an unnamed error, news): each becomes a `Status`."""
massive_frames = st.one_of(
    not_json_text.map(whole),
    binary_garbage.map(whole),
    json_values.filter(lambda v: not isinstance(v, list)).map(lambda v: whole(dumps(v))),
    st.just(VALID_FRAME),
    st.integers(1, 500).map(lambda n: whole(dumps("x" * (n * 1_000)))),  # a giant string
    st.lists(
        st.just(VALID)
        | massive_bad_message.map(lambda m: (m, "D"))
        | massive_news.map(lambda m: (m, "S")),
        max_size=6,
    ).map(batch),
)


async def serve_massive(script: list[Frame], ws: trio_websocket.WebSocketConnection) -> None:
    status = '[{{"ev":"status","status":"{}","message":"{}"}}]'
    await ws.send_message(status.format("connected", "Connected Successfully"))
    assert orjson.loads(await ws.get_message())["action"] == "auth"
    await ws.send_message(status.format("auth_success", "authenticated"))
    request = orjson.loads(await ws.get_message())
    assert request == {"action": "subscribe", "params": MASSIVE_SUB}
    await ws.send_message(status.format("success", f"subscribed to: {MASSIVE_SUB}"))
    valid = (massive_quote(n) for n in itertools.count(1))
    frames = [render(f, valid) for f in script] + ["[" + next(valid) + "]"]
    FRAMES["massive"] += len(frames)
    HOSTILE["massive"] += sum(t != "E" for f in script for t in f.tokens)
    await play(ws, frames)


@settings(max_examples=EXAMPLES)
@given(scripts(massive_frames))
def test_massive_client_survives_hostile_frames_and_reports_each_drop(script: list[Frame]) -> None:
    async def main() -> None:
        vendor = Vendor(lambda ws: serve_massive(script, ws), "socket.massive.com", "/options")
        async with MassiveClient("fuzz-key", connector=vendor.connector) as client:
            await client.subscribe(MASSIVE_SUB)
            tokens, market = await consume(client, expected_tokens(script).count("E"), Quote)
        check(script, tokens, [q.sequence for q in market], client.stats)
        assert vendor.connections == 1

    run(main)


# -- Theta ------------------------------------------------------------------------------------

THETA_SUB = "option:trade:SPY:20250321:575:C"
CONTRACT = {
    "security_type": "OPTION", "root": "SPY", "expiration": 20250321, "strike": 575000,
    "right": "C",
}  # fmt: skip
TRADE = {
    "ms_of_day": 34_200_000, "sequence": 0, "size": 1, "condition": 0, "price": 1.5,
    "exchange": 1, "date": 20250321,
}  # fmt: skip
HEADER = {"type": "TRADE", "status": "CONNECTED"}


def theta_trade(n: int) -> str:
    trade = {**TRADE, "ms_of_day": TRADE["ms_of_day"] + n, "sequence": n}
    return dumps({"header": HEADER, "contract": CONTRACT, "trade": trade})


THETA_KNOWN = {"STATUS", "REQ_RESPONSE", "STATE", "QUOTE", "TRADE", "OHLC", "MARKET_VALUE"}


def theta_with(part: str, text: str) -> str:
    fields = {"header": dumps(HEADER), "contract": dumps(CONTRACT), "trade": dumps(TRADE)}
    return obj({**fields, part: text})


BAD_CONTRACTS: list[dict[str, Any]] = [
    {"root": 7}, {"root": ""}, {"expiration": "20250321"}, {"strike": -5}, {"strike": 1.5},
    {"right": "X"}, {"right": None}, {"security_type": 3}, {"expiration": 20251399},
]  # fmt: skip
theta_frames = st.one_of(
    not_json_text,
    binary_garbage,
    # msgspec recurses even into what it skips: deep enough, that is RecursionError.
    st.integers(1, 6000).map(lambda n: theta_with("trade", deep(n))),
    json_values.filter(lambda v: not isinstance(v, dict)).map(dumps),  # not an object
    st.dictionaries(st.text(_TEXT, max_size=8).filter(lambda k: k != "header"), json_values,
                    max_size=4).map(dumps),  # no header
    json_values.filter(lambda v: not isinstance(v, dict)).map(lambda h: dumps({"header": h})),
    wrong_for_string.map(lambda t: obj({"header": obj({"type": t})})),  # type not a string
    wrong_for_string.filter(lambda s: s != "null").map(  # status is optional: null is fine
        lambda s: theta_with("header", obj({"type": '"TRADE"', "status": s}))
    ),
    st.text(_TEXT, max_size=12).filter(lambda t: t not in THETA_KNOWN).map(
        lambda t: theta_with("header", dumps({"type": t, "status": "CONNECTED"}))
    ),  # unknown message type
    broken(TRADE, {"ms_of_day", "sequence", "size", "condition", "exchange", "date"}, {"price"},
           set()).map(lambda body: theta_with("trade", body)),
    st.sampled_from([
        {"ms_of_day": -1}, {"ms_of_day": 86_400_000}, {"sequence": 2**31}, {"date": 20241399},
        {"date": 18991231}, {"date": 20250230},
    ]).map(lambda bad: dumps({"header": HEADER, "contract": CONTRACT, "trade": TRADE | bad})),
    json_values.filter(lambda v: not isinstance(v, dict)).map(
        lambda b: theta_with("trade", dumps(b))
    ),
    st.sampled_from(BAD_CONTRACTS).map(lambda bad: theta_with("contract", dumps(CONTRACT | bad))),
    st.just(theta_with("contract", '"SPY"')),
).map(whole)  # fmt: skip
theta_understood = st.one_of(
    st.builds(  # a reply to no request of ours
        lambda response, req_id: whole(dumps({"header": {
            "type": "REQ_RESPONSE", "status": "CONNECTED", "response": response, "req_id": req_id,
        }}), "C"),
        st.none() | st.sampled_from(["SUBSCRIBED", "ERROR"]) | st.text(_TEXT, max_size=8),
        st.none() | st.integers(-(2**63), 2**63 - 1),
    ),
    st.builds(  # data for a stream we do not hold
        lambda root: whole(theta_with("contract", dumps({**CONTRACT, "root": root})), "C"),
        st.sampled_from(["QQQ", "SPXW", "AAPL"]),
    ),
    st.builds(  # the upstream's stream state: news
        lambda state: whole(dumps({"header": {"type": "STATE", "status": "CONNECTED",
                                              "state": state}}), "S"),
        st.none() | st.sampled_from(["START", "STOP"]) | st.text(_TEXT, max_size=8),
    ),
)  # fmt: skip


async def serve_theta(script: list[Frame], ws: trio_websocket.WebSocketConnection) -> None:
    request = orjson.loads(await ws.get_message())
    wanted = {k: v for k, v in CONTRACT.items() if k != "security_type"}
    assert (request["msg_type"], request["add"], request["contract"]) == ("STREAM", True, wanted)
    reply = {"type": "REQ_RESPONSE", "status": "CONNECTED", "response": "SUBSCRIBED"}
    await ws.send_message(dumps({"header": {**reply, "req_id": request["id"]}}))
    valid = (theta_trade(n) for n in itertools.count(1))
    frames = [render(f, valid, batched=False) for f in script] + [next(valid)]
    FRAMES["theta"] += len(frames)
    HOSTILE["theta"] += sum(t != "E" for f in script for t in f.tokens)
    await play(ws, frames)


@settings(max_examples=EXAMPLES)
@given(scripts(theta_frames | theta_understood | st.just(VALID_FRAME)))
def test_theta_client_survives_hostile_frames_and_reports_each_drop(script: list[Frame]) -> None:
    async def main() -> None:
        vendor = Vendor(lambda ws: serve_theta(script, ws), "127.0.0.1", "/v1/events")
        async with ThetaClient(connector=vendor.connector, ping_interval=None) as client:
            await client.subscribe(THETA_SUB)
            tokens, market = await consume(client, expected_tokens(script).count("E"), OptionTrade)
        stats = client.stats
        counted = stats.unknown_replies + stats.unsolicited_dropped
        check(script, tokens, [t.sequence for t in market], stats, counted)
        assert vendor.connections == 1

    run(main)


# -- Amberdata --------------------------------------------------------------------------------

BTC_CALL = "BTC-28MAR25-60000-C"
AMBERDATA_SUB = f"market:options:trades:{BTC_CALL}@deribit"
SUBSCRIPTION_ID = "fuzz-1"
RESULT = {
    "instrument": BTC_CALL, "exchange": "deribit", "price": 0.05, "size": 1.0,
    "timestamp": T0_MS, "tradeSequence": 0,
}  # fmt: skip


def push(result: str, subscription: str = dumps(SUBSCRIPTION_ID)) -> str:
    return obj(
        {
            "jsonrpc": '"2.0"',
            "method": '"subscription"',
            "params": obj({"subscription": subscription, "result": result}),
        }
    )


def amberdata_trade(n: int) -> str:
    return push(dumps({**RESULT, "timestamp": T0_MS + n, "tradeSequence": n}))


def not_rpc(value: Any) -> bool:
    """Neither a push nor a reply, however it is read."""
    if not isinstance(value, dict):
        return True
    return value.get("method") != "subscription" and not (
        "id" in value and ("result" in value or "error" in value)
    )


amberdata_bad_message = st.one_of(
    json_values.filter(lambda v: not isinstance(v, dict | list)).map(dumps),
    st.integers(1, 900).map(deep),
    json_values.filter(not_rpc).map(dumps),  # not JSON-RPC
    st.dictionaries(st.sampled_from(["jsonrpc", "method", "params", "id"]), json_values,
                    max_size=4).filter(not_rpc).map(dumps),
    wrong_for_string.map(lambda p: obj({"method": '"subscription"', "params": p})),
    wrong_for_string.map(lambda sub: push(dumps(RESULT), sub)),  # id not a string
    broken(RESULT, set(), {"price", "size"}, {"instrument"}).map(push),
    wrong_for_int.filter(lambda w: w != "null").map(  # optional, but an integer if present
        lambda w: push(obj({**{k: dumps(v) for k, v in RESULT.items()}, "tradeSequence": w}))
    ),
    st.just(push(dumps({k: v for k, v in RESULT.items() if k != "timestamp"}))),  # no time
    json_values.filter(lambda v: not isinstance(v, dict)).map(lambda r: push(dumps(r))),
    st.integers(1, 900).map(lambda n: push(deep(n, '{"a":'))),
)  # fmt: skip
reply_ids = (
    st.none()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(_TEXT, max_size=8)
    | st.sampled_from(["\u00b2", "1" * 5000, "0", "-1", 1.5])
    | json_values
)
reply_errors = (
    json_values.map(dumps)
    | st.integers(1, 1000).map(deep)
    | st.integers(1, 1000).map(lambda n: obj({"description": deep(n)}))
    | st.integers(1, 1000).map(lambda n: obj({"code": "-32602", "a": deep(n)}))
)


def reply(request_id: Any, field: str, value: str) -> tuple[str, Token]:
    """A reply to no request of ours: an error without an id says something was refused (a
    `Rejected`); anything else is only counted."""
    token = "R" if request_id is None and field == "error" and value != "null" else "C"
    return obj({"jsonrpc": '"2.0"', "id": dumps(request_id), field: value}), token


amberdata_replies = st.builds(
    reply, reply_ids, st.just("result"), json_values.map(dumps)
) | st.builds(reply, reply_ids, st.just("error"), reply_errors)
amberdata_frames = st.one_of(
    not_json_text.filter(lambda t: not t[:1].isalpha()).map(whole),
    binary_garbage.map(whole),
    # Plain words are how Amberdata explains a close: a Status, not a drop (and no close here).
    st.text(_TEXT, min_size=1, max_size=40)
    .filter(lambda t: t[:1].isalpha() and not is_json(t) and not t.startswith("invalid api key"))
    .map(lambda t: whole(t, "S")),
    amberdata_bad_message.filter(lambda m: not m.startswith("[")).map(whole),  # [] is a batch
    st.just(VALID_FRAME),
    amberdata_replies.map(lambda r: whole(r[0], r[1])),
    st.just(push(dumps(RESULT), dumps("never-given"))).map(whole),  # an id we never had
    # A batch: JSON-RPC allows an array of messages, and the client reads each on its own.
    st.lists(st.just(VALID) | amberdata_bad_message.map(lambda m: (m, "D")), min_size=1,
             max_size=6).map(batch),
)  # fmt: skip


async def serve_amberdata(script: list[Frame], ws: trio_websocket.WebSocketConnection) -> None:
    request = orjson.loads(await ws.get_message())
    assert request["method"] == "subscribe"
    assert request["params"] == ["market:options:trades", {"instrument": BTC_CALL,
                                                           "exchange": "deribit"}]  # fmt: skip
    await ws.send_message(dumps({"jsonrpc": "2.0", "id": request["id"], "result": SUBSCRIPTION_ID}))
    valid = (amberdata_trade(n) for n in itertools.count(1))
    frames = [render(f, valid) if f.parts != (None,) else next(valid) for f in script]
    frames.append(next(valid))
    FRAMES["amberdata"] += len(frames)
    HOSTILE["amberdata"] += sum(t != "E" for f in script for t in f.tokens)
    await play(ws, frames)


@settings(max_examples=EXAMPLES)
@given(scripts(amberdata_frames))
def test_amberdata_client_survives_hostile_frames_and_reports_each_drop(
    script: list[Frame],
) -> None:
    from clients.amberdata import Trade

    async def main() -> None:
        vendor = Vendor(lambda ws: serve_amberdata(script, ws), "ws.amberdata.com", "/options")
        async with AmberdataClient("fuzz-key", connector=vendor.connector) as client:
            await client.subscribe(AMBERDATA_SUB)
            tokens, market = await consume(client, expected_tokens(script).count("E"), Trade)
        stats = client.stats
        check(script, tokens, [t.sequence for t in market], stats, stats.replies_unmatched)
        assert vendor.connections == 1

    run(main)


# -- the same, from the vendor mock's `corrupt` fault ------------------------------------------

CLIENTS: dict[str, Callable[..., Any]] = {
    "massive": MassiveClient,
    "theta": ThetaClient,
    "amberdata": AmberdataClient,
}
KEYS = {"massive": "FEEDLAB", "theta": None, "amberdata": "UAK-feedlab"}


@pytest.mark.parametrize("mode", ["invalid_json", "wrong_type", "missing_field"])
@pytest.mark.parametrize("vendor", ["massive", "theta", "amberdata"])
async def test_frames_the_mock_corrupts_are_reported_and_the_feed_goes_on(
    vendor: str, mode: str, autojump_clock: trio.testing.MockClock
) -> None:
    """The real mock damages every data frame for 30 s: each frame the client cannot read is a
    `Dropped` (a damaged frame may still be readable: a field removed may be an optional one),
    the connection stays, and data flows again once the fault is over."""
    from mocks.testing import run_mock
    from scenarios.chaos import SUBSCRIPTIONS

    events: list[Any] = []
    async with run_mock(vendor) as mock:
        client = CLIENTS[vendor](
            KEYS[vendor],
            mock.url,
            connector=mock.connector,
            clock=lambda: mock.market.now_ns() / 1e9,
        )
        async with client, trio.open_nursery() as nursery:

            async def collect() -> None:
                async for event in client:
                    events.append(event)

            nursery.start_soon(collect)
            await client.subscribe(*SUBSCRIPTIONS[vendor])
            await trio.sleep(10)
            before = len(events)
            await mock.inject("corrupt", mode=mode, duration="30s", probability=1.0)
            await trio.sleep(30)
            during = len(events)
            await trio.sleep(20)
            nursery.cancel_scope.cancel()
    corrupted = mock.ledger.total("corrupted")
    drops = [e for e in events if isinstance(e, Dropped)]
    assert corrupted > 0
    assert len(drops) == client.stats.dropped <= corrupted
    if mode == "invalid_json":
        assert drops  # a cut frame is never readable
    assert all(d.vendor == vendor and d.frame for d in drops)
    after = [e for e in events[during:] if hasattr(e, "timestamp_ns")]
    assert after, "data flows again after the fault"
    assert before > 0 and client.stats.reconnects == 0


@pytest.fixture(scope="module", autouse=True)
def report_frames() -> Iterator[None]:
    """Prints the frames played per client (`pytest -s`): the figures the README quotes."""
    yield
    if FRAMES:
        print(
            "\nframes fuzzed per client:",
            dict(FRAMES),
            "hostile frames or messages:",
            dict(HOSTILE),
        )
