"""The Amberdata mock's sans-I/O core, driven directly: every documented reply and error of
protocols/amberdata.md, the JSON-RPC 2.0 rules where Amberdata documents nothing, plans and
limits, the five streams' exact fields, Deribit conventions, and the documented sample's greeks.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import random
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mocks.amberdata import (
    DEFAULT_PORT,
    PATH,
    VENDOR,
    AmberdataServer,
    AmberdataSession,
    create_server,
    invented,
)
from mocks.hub import Hub
from mocks.session import Close, ConnectionInfo, Send
from mocks.sim import pricing
from mocks.sim.events import OptionTrade
from mocks.sim.market import MarketSettings, MarketSim
from mocks.sim.symbols import parse_deribit

SNAPSHOTS = "market:options:order:snapshots"
TICKERS = "market:options:tickers"
TRADES = "market:options:trades"
OHLCV = "market:options:ohlcv"
OPEN_INTERESTS = "market:options:open_interests"
# The market starts 2025-03-14 09:30 ET; 28MAR25 is a Deribit quarterly two weeks out.
ATM = "BTC-28MAR25-60000-C"
OTM_PUT = "BTC-28MAR25-50000-P"
KEY = "UAK-enterprise-key"

# The documented snapshot (vendor-docs/amberdata-options-order-snapshots.txt), field order kept.
DOC_SNAPSHOT_FIELDS = [
    "exchange", "instrument", "timestamp", "exchangeTimestamp", "exchangeTimestampNanoseconds",
    "underlyingPrice", "underlyingIndex", "stats", "state", "openInterest", "minPrice", "maxPrice",
    "markPrice", "markIv", "lastPrice", "interestRate", "indexPrice", "greeks",
    "estimatedDeliveryPrice", "bids", "bidIv", "bestBidPrice", "bestBidAmount", "bestAskPrice",
    "bestAskAmount", "asks", "askIv", "sequence", "metadata",
]  # fmt: skip
# The documented sample's pricing inputs and outputs.
DOC_INSTRUMENT = "BTC-24JUN22-15000-P"
DOC_TIMESTAMP = 1638355080000
DOC_UNDERLYING_PRICE = 60041.9
DOC_MARK_PRICE = 0.0050063
DOC_MARK_IV = 102.15
DOC_GREEKS = {"vega": 16.13665, "theta": -4.02251, "rho": -6.43421, "gamma": 0.0, "delta": -0.01408}


class Harness:
    """A market, a hub and the Amberdata core, stepped by hand the way the runner steps them."""

    def __init__(self, seed: int = 7, api_keys: tuple[str, ...] = (), **options: Any) -> None:
        self.market = MarketSim(MarketSettings(seed=seed))
        self.hub = Hub(self.market)
        self.server = create_server(self.hub, self.market, api_keys=api_keys, **options)
        assert isinstance(self.server, AmberdataServer)
        self.now = 0.0
        self.sessions: dict[int, AmberdataSession] = {}
        self.out: dict[int, list[tuple[float, Send | Close]]] = {}
        self._next_id = 1

    def connect(
        self, key: str | None = KEY, *, query_key: str | None = None, path: str = "/"
    ) -> tuple[AmberdataSession, list[Any]]:
        conn_id = self._next_id
        self._next_id += 1
        headers = {} if key is None else {"x-api-key": key}
        query = {} if query_key is None else {"x-api-key": query_key}
        info = ConnectionInfo(conn_id, path, query=query, headers=headers, opened_at=self.now)
        session = self.server.open(info, self.now)
        self.sessions[conn_id] = session
        return session, session.opened(self.now)

    def send(self, session: AmberdataSession, message: Any) -> list[Any]:
        """The decoded replies to one client message (`message` as JSON text or a value)."""
        text = message if isinstance(message, str | bytes) else json.dumps(message)
        actions = session.received(text, self.now)
        assert all(isinstance(a, Send) for a in actions)
        return [json.loads(a.data) for a in actions if isinstance(a, Send)]

    def subscribe(
        self, session: AmberdataSession, stream: str, instrument: str, exchange: str = "deribit"
    ) -> str:
        [reply] = self.send(
            session,
            {"jsonrpc": "2.0", "id": 1, "method": "subscribe",
             "params": [stream, {"instrument": instrument, "exchange": exchange}]},
        )  # fmt: skip
        result: str = reply["result"]
        return result

    def run(self, until: float, step: float = 0.05) -> None:
        """Advance the market to `until`, routing batches and calling timers as the runner does."""
        while self.now < until - 1e-9:
            self.now = min(until, self.now + step)
            routed = self.hub.route(self.market.advance(self.now))
            for conn_id, session in list(self.sessions.items()):
                actions = list(session.publish(routed.get(conn_id, []), self.now))
                deadline = session.next_deadline()
                if deadline is not None and deadline <= self.now:
                    actions.extend(session.tick(self.now))
                for a in actions:
                    assert isinstance(a, Send | Close)
                    self.out.setdefault(conn_id, []).append((self.now, a))

    def pushes(self, session: AmberdataSession, sub_id: str | None = None) -> list[dict[str, Any]]:
        """Pushed results of one connection (optionally one subscription), in order."""
        results = []
        for _, action in self.out.get(session.info.conn_id, []):
            if isinstance(action, Send):
                msg = json.loads(action.data)
                if sub_id is None or msg["params"]["subscription"] == sub_id:
                    results.append(msg["params"]["result"])
        return results


def sub_request(params: list[Any], request_id: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "subscribe", "params": params}


# -- package contract ------------------------------------------------------------------------------


def test_package_names_its_vendor_port_and_path() -> None:
    assert (VENDOR, DEFAULT_PORT, PATH) == ("amberdata", 8766, "/")


def test_unknown_option_raises_type_error() -> None:
    market = MarketSim()
    with pytest.raises(TypeError):
        create_server(Hub(market), market, snapshot_intervall=2.0)


def test_settings_are_validated() -> None:
    market = MarketSim()
    with pytest.raises(ValueError):
        create_server(Hub(market), market, snapshot_interval=0.0)
    with pytest.raises(ValueError):
        create_server(Hub(market), market, first_push_delay=1.0)


def test_serves_root_and_options_paths() -> None:
    server = Harness().server
    assert server.accepts_path("/")
    assert server.accepts_path("/options")
    assert not server.accepts_path("/v1/events")


# -- keys and plans --------------------------------------------------------------------------------


def test_bad_key_gets_the_documented_text_then_close_1008() -> None:
    h = Harness(api_keys=("UAK-good",))
    _, actions = h.connect("UAK-bad")
    assert actions == [Send("invalid api key 'UAK-bad'"), Close(1008, "invalid api key")]


def test_missing_key_is_refused_the_same_way() -> None:
    h = Harness()
    session, actions = h.connect(None)
    assert actions[0] == Send("invalid api key ''")
    assert isinstance(actions[1], Close) and actions[1].code == 1008
    # Whatever it sends afterwards is ignored.
    assert h.send(session, sub_request([SNAPSHOTS, {"instrument": ATM}])) == []


def test_key_from_the_query_parameter_is_accepted() -> None:
    h = Harness(api_keys=("UAO-query",))
    session, actions = h.connect(None, query_key="UAO-query")
    assert actions == []
    assert session.plan is not None and session.plan.name == "on-demand"


def test_any_non_empty_key_works_without_configured_keys_and_is_enterprise() -> None:
    h = Harness()
    session, actions = h.connect("whatever")
    assert actions == []
    assert session.plan is not None and session.plan.name == "enterprise"


def test_trial_keys_get_five_connections_and_a_closed_one_frees_its_slot() -> None:
    h = Harness()
    sessions = [h.connect("UAT-trial")[0] for _ in range(5)]
    assert all(s.plan is not None for s in sessions)
    sixth, actions = h.connect("UAT-trial")
    assert actions[0] == Send(invented.CONNECTION_LIMIT_TEXT)
    assert isinstance(actions[1], Close) and actions[1].code == 1008
    sixth.closed(h.now)
    assert h.connect("UAT-other")[1] == []  # another key has its own allowance
    sessions[0].closed(h.now)
    assert h.connect("UAT-trial")[1] == []


def test_on_demand_keys_get_twenty_connections() -> None:
    h = Harness()
    for _ in range(20):
        assert h.connect("UAO-x")[1] == []
    assert h.connect("UAO-x")[1][0] == Send(invented.CONNECTION_LIMIT_TEXT)


def test_subscription_limit_per_connection_gives_the_documented_error() -> None:
    h = Harness()
    session, _ = h.connect("UAT-trial")
    for strike in range(100):
        h.subscribe(session, TRADES, f"BTC-28MAR25-{40000 + 500 * strike}-C")
    put = {"instrument": "BTC-28MAR25-60000-P", "exchange": "deribit"}
    [reply] = h.send(session, sub_request([TRADES, put], 9))
    assert reply == {
        "jsonrpc": "2.0",
        "id": 9,
        "error": {
            "description": "Max subscription limit reached on this connection. "
            "Please open additional connections to subscribe to more instruments.",
            "code": 400,
        },
    }
    other, _ = h.connect("UAT-trial")  # the limit is per connection
    h.subscribe(other, TRADES, ATM)


def test_plan_limits_are_settings_and_a_fault() -> None:
    h = Harness(enterprise_subscriptions=2)
    session, _ = h.connect(KEY)
    h.subscribe(session, TRADES, ATM)
    h.subscribe(session, TRADES, OTM_PUT)
    [reply] = h.send(session, sub_request([SNAPSHOTS, {"instrument": ATM}]))
    assert reply["error"]["code"] == 400
    h.server.set_plan_limits("enterprise", subscriptions=3, connections=1)
    assert "result" in h.send(session, sub_request([SNAPSHOTS, {"instrument": ATM}]))[0]
    assert h.connect(KEY)[1][0] == Send(invented.CONNECTION_LIMIT_TEXT)


def test_auth_failure_fault_refuses_the_next_connections_whatever_the_key() -> None:
    h = Harness()
    h.server.auth_failure(2)
    assert h.connect(KEY)[1][0] == Send(f"invalid api key '{KEY}'")
    assert h.connect(KEY)[1][0] == Send(f"invalid api key '{KEY}'")
    assert h.connect(KEY)[1] == []


# -- JSON-RPC conversation -------------------------------------------------------------------------


def test_subscribe_answers_a_uuid_and_unsubscribe_true_then_false() -> None:
    h = Harness()
    session, _ = h.connect()
    [reply] = h.send(
        session,
        '{"jsonrpc":"2.0","id":1,"method":"subscribe","params":["market:options:order:snapshots",'
        '{"instrument":"BTC-24JUN22-15000-P","exchange":"deribit"}]}',
    )
    assert list(reply) == ["jsonrpc", "id", "result"]
    assert reply["jsonrpc"] == "2.0" and reply["id"] == 1
    assert str(uuid.UUID(reply["result"])) == reply["result"]
    unsubscribe = {"jsonrpc": "2.0", "id": 2, "method": "unsubscribe", "params": [reply["result"]]}
    assert h.send(session, unsubscribe) == [{"jsonrpc": "2.0", "id": 2, "result": True}]
    assert h.send(session, unsubscribe) == [{"jsonrpc": "2.0", "id": 2, "result": False}]


def test_subscription_ids_are_seeded_not_random() -> None:
    def ids(seed: int) -> list[str]:
        h = Harness(seed=seed)
        session, _ = h.connect()
        return [h.subscribe(session, s, ATM) for s in (SNAPSHOTS, TICKERS, TRADES)]

    assert ids(3) == ids(3)
    assert ids(3) != ids(4)
    assert len(set(ids(3))) == 3


def test_string_ids_are_echoed_and_reused_ids_and_missing_jsonrpc_are_tolerated() -> None:
    h = Harness()
    session, _ = h.connect()
    [a] = h.send(session, {"id": 1, "method": "subscribe", "params": [TRADES, {"instrument": ATM}]})
    [b] = h.send(session, {"id": 1, "method": "subscribe", "params": [OHLCV, {"instrument": ATM}]})
    [c] = h.send(session, sub_request([TICKERS, {"instrument": ATM}], "abc-1"))
    assert a["id"] == b["id"] == 1 and a["result"] != b["result"]
    assert c["id"] == "abc-1" and "result" in c


def test_duplicate_subscribe_returns_the_existing_id() -> None:
    h = Harness()
    session, _ = h.connect()
    assert h.subscribe(session, TRADES, ATM) == h.subscribe(session, TRADES, ATM)
    assert h.subscribe(session, TRADES, ATM, "okex") != h.subscribe(session, TRADES, ATM)


def test_unsupported_stream_gets_the_documented_error() -> None:
    h = Harness()
    session, _ = h.connect()
    message = sub_request(["market:spot:tickers:snapsh000ts", {"instrument": ATM}])
    assert h.send(session, message) == [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "error": {
                "description": "subscription 'market:spot:tickers:snapsh000ts' is not supported",
                "code": 400,
            },
        }
    ]


def test_the_vendor_js_sample_without_an_instrument_gets_an_error() -> None:
    h = Harness()
    session, _ = h.connect()
    # JSON.stringify of the documented Node sample's object, member order kept.
    sample = (
        '{"jsonrpc":"2.0","method":"subscribe","params":["market:options:order:snapshots"],"id":1}'
    )
    [reply] = h.send(session, sample)
    assert list(reply) == ["jsonrpc", "id", "error"] and reply["id"] == 1
    assert list(reply["error"]) == ["description", "code"]
    assert reply["error"]["code"] == 400
    assert reply["error"]["description"] == invented.missing_instrument_description(SNAPSHOTS)
    assert session.subscriptions == {}


def test_wildcard_gets_the_documented_error() -> None:
    h = Harness()
    session, _ = h.connect()
    [reply] = h.send(session, sub_request([SNAPSHOTS, {"instrument": "*", "exchange": "deribit"}]))
    assert reply["error"] == {
        "description": "Wildcard subscription is not allowed for instruments. "
        "Please subscribe with each instrument name explicitly.",
        "code": 400,
    }
    [reply] = h.send(session, sub_request([TRADES, {"instrument": "BTC-*", "exchange": "okex"}]))
    assert reply["error"]["code"] == 400


def test_missing_exchange_defaults_to_deribit_unless_required() -> None:
    h = Harness()
    session, _ = h.connect()
    sub_id = h.subscribe(session, TRADES, ATM)
    assert session.subscriptions[sub_id].exchange == "deribit"
    [reply] = h.send(session, sub_request([OHLCV, {"instrument": ATM}]))
    assert session.subscriptions[reply["result"]].exchange == "deribit"

    strict = Harness(require_exchange=True)
    session, _ = strict.connect()
    [reply] = strict.send(session, sub_request([OHLCV, {"instrument": ATM}]))
    assert reply["error"] == {
        "description": invented.missing_exchange_description(OHLCV),
        "code": 400,
    }


@pytest.mark.parametrize(
    ("options", "description"),
    [
        ({"instrument": ATM, "exchange": "binance"}, "exchange 'binance' is not supported"),
        (
            {"instrument": "BTC-28MAR2025-60000-C", "exchange": "deribit"},
            "instrument 'BTC-28MAR2025-60000-C' is not supported on exchange 'deribit'",
        ),
        (
            {"instrument": "SPY-28MAR25-500-C", "exchange": "deribit"},
            "instrument 'SPY-28MAR25-500-C' is not supported on exchange 'deribit'",
        ),
    ],
)
def test_unknown_exchange_or_instrument_gets_a_vendor_shaped_error(
    options: dict[str, str], description: str
) -> None:
    h = Harness()
    session, _ = h.connect()
    [reply] = h.send(session, sub_request([SNAPSHOTS, options], 5))
    assert reply == {"jsonrpc": "2.0", "id": 5, "error": {"description": description, "code": 400}}


def test_every_exchange_is_served_under_its_own_name() -> None:
    h = Harness()
    session, _ = h.connect()
    subs = {x: h.subscribe(session, SNAPSHOTS, ATM, x) for x in ("deribit", "OKEX", "bybit")}
    h.run(1.5)
    for exchange, sub_id in subs.items():
        [first, *_] = h.pushes(session, sub_id)
        assert first["exchange"] == exchange.lower() and first["instrument"] == ATM


def test_invalid_json_gets_parse_error_with_null_id() -> None:
    h = Harness()
    session, _ = h.connect()
    for bad in ('{"jsonrpc":"2.0",', b"\xff\xfe", ""):
        assert h.send(session, bad) == [
            {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}
        ]


@pytest.mark.parametrize(
    ("message", "reply_id"),
    [
        ("42", None),
        ('"subscribe"', None),
        ('{"jsonrpc":"2.0","id":3}', 3),  # no method
        ('{"jsonrpc":"2.0","id":4,"method":7}', 4),
        ('{"jsonrpc":"2.0","id":true,"method":"subscribe"}', None),
        ('{"jsonrpc":"1.0","id":5,"method":"subscribe","params":[]}', 5),
        ('{"jsonrpc":"2.0","id":6,"method":"subscribe","params":"x"}', 6),
    ],
)
def test_invalid_requests_get_minus_32600(message: str, reply_id: Any) -> None:
    h = Harness()
    session, _ = h.connect()
    assert h.send(session, message) == [
        {"jsonrpc": "2.0", "id": reply_id, "error": {"code": -32600, "message": "Invalid Request"}}
    ]


def test_unknown_method_gets_minus_32601() -> None:
    h = Harness()
    session, _ = h.connect()
    assert h.send(session, {"jsonrpc": "2.0", "id": 8, "method": "subscribe_all"}) == [
        {"jsonrpc": "2.0", "id": 8, "error": {"code": -32601, "message": "Method not found"}}
    ]


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("subscribe", None),
        ("subscribe", []),
        ("subscribe", [17]),
        ("subscribe", {"stream": SNAPSHOTS}),
        ("subscribe", [SNAPSHOTS, "BTC-28MAR25-60000-C"]),
        ("subscribe", [SNAPSHOTS, {"instrument": 60000}]),
        ("subscribe", [SNAPSHOTS, {"instrument": ATM, "exchange": 1}]),
        ("unsubscribe", []),
        ("unsubscribe", [None]),
        ("unsubscribe", None),
    ],
)
def test_malformed_params_get_minus_32602(method: str, params: Any) -> None:
    h = Harness()
    session, _ = h.connect()
    request: dict[str, Any] = {"jsonrpc": "2.0", "id": 2, "method": method}
    if params is not None:
        request["params"] = params
    assert h.send(session, request) == [
        {"jsonrpc": "2.0", "id": 2, "error": {"code": -32602, "message": "Invalid params"}}
    ]


def test_notifications_get_no_reply_but_are_carried_out() -> None:
    h = Harness()
    session, _ = h.connect()
    assert h.send(session, {"jsonrpc": "2.0", "method": "subscribe",
                            "params": [TRADES, {"instrument": ATM}]}) == []  # fmt: skip
    assert h.send(session, {"jsonrpc": "2.0", "method": "no_such_method"}) == []
    assert len(session.subscriptions) == 1


def test_batch_gets_an_array_of_replies_in_order_without_notifications() -> None:
    h = Harness()
    session, _ = h.connect()
    batch = [
        sub_request([TRADES, {"instrument": ATM}], 1),
        {"jsonrpc": "2.0", "method": "subscribe", "params": [OHLCV, {"instrument": ATM}]},
        {"jsonrpc": "2.0", "id": 2, "method": "nope"},
        7,
        sub_request(["market:spot:trades", {"instrument": ATM}], 3),
    ]
    [replies] = h.send(session, batch)
    assert [r["id"] for r in replies] == [1, 2, None, 3]
    assert "result" in replies[0]
    assert replies[1]["error"]["code"] == -32601
    assert replies[2]["error"]["code"] == -32600
    assert replies[3]["error"]["code"] == 400
    assert len(session.subscriptions) == 2


def test_empty_batch_gets_one_invalid_request_and_notification_batch_nothing() -> None:
    h = Harness()
    session, _ = h.connect()
    assert h.send(session, "[]") == [
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Invalid Request"}}
    ]
    assert h.send(session, [{"method": "unsubscribe", "params": ["x"]}]) == []


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
requests = st.fixed_dictionaries(
    {"method": st.sampled_from(["subscribe", "unsubscribe", "x"])},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0"]),
        "id": st.none() | st.integers() | st.text(max_size=6),
        "params": st.lists(
            st.sampled_from([SNAPSHOTS, TRADES, "market:x"])
            | st.fixed_dictionaries(
                {},
                optional={
                    "instrument": st.sampled_from([ATM, "*", "BTC-1JAN25-1-P", "nonsense"])
                    | json_values,
                    "exchange": st.sampled_from(["deribit", "okex", "kraken"]) | json_values,
                },
            )
            | json_values,
            max_size=3,
        )
        | json_values,
    },
)


def is_notification(m: Any) -> bool:
    """A well-formed request without an id: the only kind that gets no reply."""
    return (
        isinstance(m, dict)
        and "id" not in m
        and isinstance(m.get("method"), str)
        and isinstance(m.get("params", []), list | dict)
        and isinstance(m.get("jsonrpc", ""), str)
    )


@settings(max_examples=150)
@given(st.one_of(requests, json_values, st.lists(requests | json_values, max_size=4)))
def test_any_message_gets_well_formed_json_rpc_replies(message: Any) -> None:
    h = Harness()
    session, _ = h.connect()
    replies = h.send(session, message)
    flat = replies[0] if replies and isinstance(replies[0], list) else replies
    for reply in flat:
        assert reply["jsonrpc"] == "2.0" and "id" in reply
        assert ("result" in reply) != ("error" in reply)
        if "error" in reply:
            assert set(reply["error"]) in ({"code", "message"}, {"description", "code"})
    if isinstance(message, dict) and "id" in message and isinstance(message.get("method"), str):
        assert [r["id"] for r in flat] == [message["id"]]
    if isinstance(message, list) and message:
        assert len(flat) == sum(1 for m in message if not is_notification(m))
    assert len(session.subscriptions) <= 2  # at most SNAPSHOTS and TRADES on ATM


# -- streams ---------------------------------------------------------------------------------------


def test_first_snapshot_within_a_second_then_on_the_interval_grid() -> None:
    h = Harness(snapshot_interval=2.0)
    h.run(0.3)
    session, _ = h.connect()
    sub_id = h.subscribe(session, SNAPSHOTS, ATM)
    h.run(10.0)
    times = [t for t, a in h.out[session.info.conn_id] if isinstance(a, Send)]
    assert times[0] - 0.3 <= 1.0
    stamps = [p["timestamp"] for p in h.pushes(session, sub_id)]
    start_ms = h.market.clock.start_ns // 1_000_000
    assert stamps[0] - start_ms == 550  # subscribed at 0.3 s, first push 0.25 s later
    assert [s - start_ms for s in stamps[1:]] == [2000, 4000, 6000, 8000, 10000]


def test_snapshot_has_every_documented_field_in_order_with_documented_types() -> None:
    h = Harness()
    session, _ = h.connect()
    sub_id = h.subscribe(session, SNAPSHOTS, ATM)
    h.run(3.0)
    snapshots = h.pushes(session, sub_id)
    assert len(snapshots) >= 3
    for snap in snapshots:
        assert list(snap) == DOC_SNAPSHOT_FIELDS
        assert list(snap["stats"]) == ["volume_usd", "volume", "price_change", "low", "high"]
        assert list(snap["greeks"]) == ["vega", "theta", "rho", "gamma", "delta"]
        assert snap["exchange"] == "deribit" and snap["instrument"] == ATM
        assert snap["state"] == "open" and snap["metadata"] is None
        assert snap["interestRate"] == 0.0
        assert snap["underlyingIndex"] == "BTC-28MAR25"  # a quarterly: the future itself
        assert isinstance(snap["timestamp"], int) and isinstance(snap["sequence"], int)
        assert 0 <= snap["exchangeTimestampNanoseconds"] < 1_000_000
        assert snap["exchangeTimestamp"] <= snap["timestamp"]
        assert snap["estimatedDeliveryPrice"] == snap["indexPrice"]
        assert snap["indexPrice"] < snap["underlyingPrice"]
        assert snap["minPrice"] <= snap["markPrice"] <= snap["maxPrice"]
        assert 20.0 < snap["markIv"] < 200.0  # percent, not a fraction
    last = snapshots[-1]
    assert last["bids"] and last["asks"]
    assert 20.0 < last["bidIv"] < last["askIv"] < 200.0


def book_is_deribit_like(snap: dict[str, Any]) -> None:
    bids, asks = snap["bids"], snap["asks"]
    for price, amount in bids + asks:
        assert price > 0 and math.isclose(price / 0.0005, round(price / 0.0005), abs_tol=1e-6)
        assert amount > 0 and math.isclose(amount * 10, round(amount * 10), abs_tol=1e-6)
    assert [p for p, _ in bids] == sorted({p for p, _ in bids}, reverse=True)
    assert [p for p, _ in asks] == sorted({p for p, _ in asks})
    if bids:
        assert [snap["bestBidPrice"], snap["bestBidAmount"]] == bids[0]
    else:
        assert snap["bestBidPrice"] is None and snap["bidIv"] is None
    if asks:
        assert [snap["bestAskPrice"], snap["bestAskAmount"]] == asks[0]
    if bids and asks:
        assert bids[0][0] < asks[0][0]


@settings(max_examples=15)
@given(
    seed=st.integers(0, 2**32),
    strike=st.sampled_from([30000, 45000, 55000, 60000, 65000, 80000, 120000]),
    right=st.sampled_from("CP"),
    expiry=st.sampled_from(["21MAR25", "28MAR25", "27JUN25"]),
)
def test_books_step_in_half_ticks_and_tenths_and_greeks_reproduce_from_printed_fields(
    seed: int, strike: int, right: str, expiry: str
) -> None:
    h = Harness(seed=seed)
    session, _ = h.connect()
    instrument = f"BTC-{expiry}-{strike}-{right}"
    sub_id = h.subscribe(session, SNAPSHOTS, instrument)
    h.run(4.0)
    contract = parse_deribit(instrument)
    expiry_ms = dt.datetime.combine(contract.expiration, dt.time(8), tzinfo=dt.UTC).timestamp()
    snapshots = h.pushes(session, sub_id)
    assert snapshots
    for snap in snapshots:
        book_is_deribit_like(snap)
        years = (expiry_ms * 1000 - snap["timestamp"]) / (365 * 86_400_000)
        f, sigma = snap["underlyingPrice"], snap["markIv"] / 100
        g = pricing.black76_greeks(f, contract.strike, years, sigma, contract.is_call)
        assert snap["greeks"] == {
            "vega": round(g.vega, 5), "theta": round(g.theta, 5), "rho": round(g.rho, 5),
            "gamma": round(g.gamma, 5), "delta": round(g.delta, 5),
        }  # fmt: skip
        value = pricing.black76(f, contract.strike, years, sigma, contract.is_call)
        assert snap["markPrice"] == round(value / f, 7)
        quarterly = expiry in ("28MAR25", "27JUN25")
        assert snap["underlyingIndex"] == ("" if quarterly else "SYN.") + f"BTC-{expiry}"


def test_the_documented_samples_greeks_reproduce_from_its_inputs() -> None:
    """Black-76, r = 0, T from `timestamp` to the 08:00 UTC expiry in years of 365 days, on
    F = underlyingPrice and sigma = markIv: delta and gamma to the printed digits, vega, theta,
    rho and markPrice to 1e-4 relative (no single T reproduces all of them to the last digit)."""
    contract = parse_deribit(DOC_INSTRUMENT)
    expiry = dt.datetime.combine(contract.expiration, dt.time(8), tzinfo=dt.UTC)
    now = dt.datetime.fromtimestamp(DOC_TIMESTAMP / 1000, dt.UTC)
    years = (expiry - now).total_seconds() / (365 * 86_400)
    f, sigma = DOC_UNDERLYING_PRICE, DOC_MARK_IV / 100
    g = pricing.black76_greeks(f, contract.strike, years, sigma, contract.is_call)
    assert round(g.delta, 5) == DOC_GREEKS["delta"]
    assert round(g.gamma, 5) == DOC_GREEKS["gamma"]
    assert g.vega == pytest.approx(DOC_GREEKS["vega"], rel=1e-4)
    assert g.theta == pytest.approx(DOC_GREEKS["theta"], rel=1e-4)
    assert g.rho == pytest.approx(DOC_GREEKS["rho"], rel=1e-4)
    mark = pricing.black76(f, contract.strike, years, sigma, contract.is_call) / f
    assert mark == pytest.approx(DOC_MARK_PRICE, rel=1e-4)
    # A quarterly expiry: the snapshot names the future itself as its underlying index.
    assert invented.underlying_index(contract) == "BTC-24JUN22"


def test_ticker_has_the_market_fields_and_its_own_without_the_book() -> None:
    h = Harness()
    session, _ = h.connect()
    snap_id = h.subscribe(session, SNAPSHOTS, ATM)
    ticker_id = h.subscribe(session, TICKERS, ATM)
    h.run(3.0)
    tickers = h.pushes(session, ticker_id)
    snapshots = h.pushes(session, snap_id)
    assert len(tickers) == len(snapshots) >= 3
    own = ["bid", "ask", "mid", "last", "bidVolume", "askVolume", "baseVolume", "quoteVolume",
           "settlementPrice"]  # fmt: skip
    shared = [f for f in DOC_SNAPSHOT_FIELDS if f not in ("bids", "asks")]
    for ticker, snap in zip(tickers, snapshots, strict=True):
        assert set(ticker) == set(own) | set(shared)
        assert {k: ticker[k] for k in shared} == {k: snap[k] for k in shared}
        assert ticker["bid"] == snap["bestBidPrice"] and ticker["ask"] == snap["bestAskPrice"]
        assert ticker["last"] == snap["lastPrice"]
        assert ticker["baseVolume"] == snap["stats"]["volume"]
        if ticker["bid"] is not None and ticker["ask"] is not None:
            assert ticker["mid"] == pytest.approx((ticker["bid"] + ticker["ask"]) / 2)


def test_trades_one_message_per_market_trade_with_every_documented_field() -> None:
    h = Harness(seed=11)
    session, _ = h.connect()
    sub_id = h.subscribe(session, TRADES, ATM, "bybit")
    h.run(240.0)
    sent = [a for _, a in h.out[session.info.conn_id] if isinstance(a, Send)]
    assert len(sent) >= 5
    for action in sent:
        [event] = action.events
        assert isinstance(event, OptionTrade)
        trade = json.loads(action.data)["params"]["result"]
        assert list(trade) == [
            "instrument", "exchange", "exchangeTimestamp", "exchangeTimestampNanoseconds",
            "isBuySide", "price", "size", "tradeId", "tradeSequence", "tickDirection",
            "markPrice", "iv", "indexPrice",
        ]  # fmt: skip
        assert trade["instrument"] == ATM and trade["exchange"] == "bybit"
        assert trade["exchangeTimestamp"] * 1_000_000 + trade["exchangeTimestampNanoseconds"] == (
            event.ts_ns
        )
        assert trade["price"] == event.price and trade["size"] == round(event.size / 10, 1)
        assert trade["tradeSequence"] == event.sequence
        assert isinstance(trade["tradeId"], str) and isinstance(trade["isBuySide"], bool)
        assert trade["tickDirection"] in (0, 1, 2, 3)
        assert 20.0 < trade["iv"] < 200.0 or trade["iv"] == 0.0
    sequences = [t["tradeSequence"] for t in h.pushes(session, sub_id)]
    assert sequences == sorted(set(sequences))


def test_ohlcv_bars_per_minute_from_the_trades() -> None:
    h = Harness(seed=11)
    session, _ = h.connect()
    trades_id = h.subscribe(session, TRADES, ATM)
    bars_id = h.subscribe(session, OHLCV, ATM)
    h.run(400.0)
    trades = h.pushes(session, trades_id)
    bars = h.pushes(session, bars_id)
    assert len(bars) >= 3
    for bar in bars:
        assert list(bar) == ["exchange", "instrument", "timestamp", "open", "high", "low",
                             "close", "volume"]  # fmt: skip
        assert bar["timestamp"] % 60_000 == 0
        inside = [t for t in trades if 0 <= t["exchangeTimestamp"] - bar["timestamp"] < 60_000]
        prices = [t["price"] for t in inside]
        assert bar["open"] == prices[0] and bar["close"] == prices[-1]
        assert bar["high"] == max(prices) and bar["low"] == min(prices)
        assert bar["volume"] == pytest.approx(sum(t["size"] for t in inside))


def test_open_interest_is_periodic_and_moves_with_trades() -> None:
    h = Harness(seed=11, open_interest_interval=30.0)
    session, _ = h.connect()
    sub_id = h.subscribe(session, OPEN_INTERESTS, ATM, "okex")
    h.run(300.0)
    values = h.pushes(session, sub_id)
    assert len(values) == 11  # 0.25 s, then 30 s .. 300 s
    assert all(list(v) == ["instrument", "exchange", "timestamp", "value"] for v in values)
    assert all(v["exchange"] == "okex" for v in values)
    assert len({v["value"] for v in values}) > 1


def test_sequence_strictly_increases_and_agrees_across_connections() -> None:
    h = Harness()
    first, _ = h.connect()
    second, _ = h.connect()
    a = h.subscribe(first, SNAPSHOTS, ATM)
    b = h.subscribe(second, SNAPSHOTS, ATM)
    h.run(20.0)
    seq_a = [(s["timestamp"], s["sequence"]) for s in h.pushes(first, a)]
    seq_b = [(s["timestamp"], s["sequence"]) for s in h.pushes(second, b)]
    assert seq_a == seq_b
    numbers = [s for _, s in seq_a]
    assert all(x < y for x, y in itertools.pairwise(numbers))
    assert h.pushes(first, a)[5]["bids"] == h.pushes(second, b)[5]["bids"]


def test_same_seed_same_bytes() -> None:
    def transcript() -> list[str]:
        h = Harness(seed=5)
        session, _ = h.connect()
        for stream in (SNAPSHOTS, TICKERS, TRADES, OHLCV, OPEN_INTERESTS):
            h.subscribe(session, stream, ATM)
        h.run(90.0)
        return [a.data for _, a in h.out[1] if isinstance(a, Send)]  # type: ignore[misc]

    assert transcript() == transcript()


def test_unsubscribe_stops_the_stream_and_releases_hub_interest() -> None:
    h = Harness()
    session, _ = h.connect()
    sub_id = h.subscribe(session, SNAPSHOTS, ATM)
    h.run(2.0)
    count = len(h.pushes(session, sub_id))
    assert h.hub.contracts_of(session.info.conn_id) == {parse_deribit(ATM)}
    h.send(session, {"jsonrpc": "2.0", "id": 2, "method": "unsubscribe", "params": [sub_id]})
    assert h.hub.contracts_of(session.info.conn_id) == set()
    h.run(5.0)
    assert len(h.pushes(session, sub_id)) == count
    assert session.next_deadline() is None


def test_strict_market_acknowledges_an_expired_contract_and_sends_nothing() -> None:
    h = Harness()
    h.market = MarketSim(MarketSettings(seed=1, strict=True))
    h.hub = Hub(h.market)
    h.server = create_server(h.hub, h.market)
    session, _ = h.connect()
    h.subscribe(session, SNAPSHOTS, "BTC-24JUN22-15000-P")
    h.subscribe(session, TRADES, "BTC-24JUN22-15000-P")
    h.run(5.0)
    assert h.pushes(session) == []
    # Nor does the exchange side keep an instrument for it (10-50 KB, never forgotten: the
    # market never watches it, so never ends its life).
    assert h.server.instruments == {}


def test_the_next_deadline_follows_every_subscribe_push_bar_and_unsubscribe() -> None:
    """`next_deadline` is worked out again only when something may have moved it: whatever a
    client does, it is what a look at every subscription says."""

    def every_subscription(session: AmberdataSession) -> float | None:
        ends = [
            sub.due if sub.due is not None else session._bar_end(sub.bar)
            for sub in session.subscriptions.values()
            if sub.due is not None or sub.bar is not None
        ]
        return min(ends, default=None)

    rng = random.Random(5)
    h = Harness()
    session, _ = h.connect()
    strikes = [f"BTC-28MAR25-{k}-C" for k in range(50_000, 70_000, 2_500)]
    bars_only, _ = h.connect()  # nothing periodic: only a trade opens a deadline
    for strike in strikes:
        h.subscribe(bars_only, OHLCV, strike)
    streams = [SNAPSHOTS, TICKERS, TRADES, OHLCV, OPEN_INTERESTS]
    bars = 0
    for _ in range(600):
        action, client = rng.random(), rng.choice([session, bars_only])
        if action < 0.3:
            stream = rng.choice(streams) if client is session else OHLCV
            h.subscribe(client, stream, rng.choice(strikes))
        elif action < 0.5 and client.subscriptions:
            sub_id = rng.choice(list(client.subscriptions))
            h.send(client, {"jsonrpc": "2.0", "id": 2, "method": "unsubscribe", "params": [sub_id]})
        else:  # (long steps: a trade of the next minute closes a bar before its tick does)
            h.run(h.now + rng.choice([0.05, 0.5, 3.0, 20.0, 90.0]), rng.choice([0.05, 5.0, 30.0]))
        bars += any(sub.bar is not None for sub in session.subscriptions.values())
        assert session.next_deadline() == every_subscription(session)
        assert bars_only.next_deadline() == every_subscription(bars_only)
    assert bars and h.pushes(session) and h.pushes(bars_only)


def test_slow_consumer_is_closed() -> None:
    h = Harness()
    session, _ = h.connect()
    assert session.overflowed(h.now) == [Close(1011, "slow consumer")]
    assert session.tick(h.now) == [] and session.next_deadline() is None


def test_closing_releases_interest_and_the_connection_slot() -> None:
    h = Harness(trial_connections=1)
    session, _ = h.connect("UAT-1")
    h.subscribe(session, TRADES, ATM)
    session.closed(h.now)
    assert h.hub.contracts_of(session.info.conn_id) == set()
    assert h.server.sessions.get(session.info.conn_id) is None
    assert h.connect("UAT-1")[1] == []


def test_forbidden_stream_fault_gets_the_documented_403() -> None:
    h = Harness()
    session, _ = h.connect()
    h.server.forbid_stream(TICKERS)
    assert h.send(session, sub_request([TICKERS, {"instrument": ATM}], 4)) == [
        {
            "jsonrpc": "2.0",
            "id": 4,
            "error": {"description": "not authorized to access this resource", "code": 403},
        }
    ]
    h.server.forbid_stream(TICKERS, forbidden=False)
    assert "result" in h.send(session, sub_request([TICKERS, {"instrument": ATM}]))[0]
