"""Transcript tests of the Massive mock's sans-I/O core: every control message, reply and error of
`shared/protocols/massive.md` and issue 3, driven through `MassiveSession` with no network."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from typing import Any

import orjson
import pytest

from mocks.hub import Hub
from mocks.massive import DEFAULT_PORT, PATH, VENDOR, Account, MassiveServer, create_server
from mocks.massive.session import MassiveSession
from mocks.session import Abort, Action, Close, ConnectionInfo, Send
from mocks.sim.clock import EASTERN
from mocks.sim.contracts import OptionContract
from mocks.sim.events import Event, OptionQuote, OptionTrade
from mocks.sim.market import MarketSettings, MarketSim
from mocks.sim.symbols import format_occ

SPY_CALL = "O:SPY251219C00650000"
START = dt.datetime(2025, 3, 14, 9, 30, tzinfo=EASTERN)


class Rig:
    """A server over a real simulated market, with sessions driven by hand."""

    def __init__(
        self, api_keys: tuple[str, ...] = (), market: MarketSettings | None = None, **options: Any
    ) -> None:
        self.market = MarketSim(market or MarketSettings(seed=3, start=START))
        self.hub = Hub(self.market)
        self.server: MassiveServer = create_server(
            self.hub, self.market, api_keys=api_keys, **options
        )
        self.poked: list[int] = []
        self._ids = 0

    def open(self, now: float = 0.0, path: str = "/options") -> tuple[MassiveSession, list[Action]]:
        self._ids += 1
        conn_id = self._ids
        self.hub.register(conn_id, lambda: self.poked.append(conn_id))
        session = self.server.open(ConnectionInfo(conn_id, path, opened_at=now), now)
        return session, session.opened(now)

    def authed(self, key: str = "k", now: float = 0.0, path: str = "/options") -> MassiveSession:
        session, _ = self.open(now, path)
        assert statuses(session.received(auth(key), now)) == [("auth_success", "authenticated")]
        return session

    def run(self, session: MassiveSession, until: float, step: float = 0.25) -> list[Action]:
        """Advance the market to `until`, publishing and ticking like the runner does."""
        out: list[Action] = []
        t = self.market.now
        while t < until:
            t = min(until, t + step)
            routed = self.hub.route(self.market.advance(t))
            out += session.publish(routed.get(session.conn_id, []), t)
            deadline = session.next_deadline()
            if deadline is not None and deadline <= t:
                out += session.tick(t)
        return out


def auth(key: str) -> str:
    return orjson.dumps({"action": "auth", "params": key}).decode()


def sub(params: str, action: str = "subscribe") -> str:
    return orjson.dumps({"action": action, "params": params}).decode()


def frames(actions: list[Action]) -> list[list[dict[str, Any]]]:
    out = []
    for action in actions:
        if isinstance(action, Send):
            assert isinstance(action.data, str), "the server sends text frames"
            decoded = orjson.loads(action.data)
            assert isinstance(decoded, list), "every server frame is a JSON array"
            out.append(decoded)
    return out


def messages(actions: list[Action]) -> list[dict[str, Any]]:
    return [m for f in frames(actions) for m in f]


def statuses(actions: list[Action]) -> list[tuple[str, str]]:
    return [(m["status"], m["message"]) for m in messages(actions) if m["ev"] == "status"]


def closes(actions: list[Action]) -> list[Action]:
    return [a for a in actions if isinstance(a, Close | Abort)]


# -- the package contract --------------------------------------------------------------------------


def test_package_names_its_vendor_port_and_path() -> None:
    assert (VENDOR, DEFAULT_PORT, PATH) == ("massive", 8765, "/options")


def test_unknown_option_raises_type_error() -> None:
    market = MarketSim()
    with pytest.raises(TypeError):
        create_server(Hub(market), market, no_such_option=1)


def test_frames_over_one_mebibyte_cannot_be_configured() -> None:
    market = MarketSim()
    with pytest.raises(ValueError):
        create_server(Hub(market), market, max_frame_bytes=1024 * 1024)


@pytest.mark.parametrize(
    "option", [{"eviction": "kick"}, {"slow_consumer": "ignore"}, {"max_connections": 0}]
)
def test_invalid_settings_are_refused(option: dict[str, Any]) -> None:
    market = MarketSim()
    with pytest.raises(ValueError):
        create_server(Hub(market), market, **option)


def test_serves_realtime_and_delayed_paths_only() -> None:
    server = Rig().server
    assert server.accepts_path("/options")
    assert server.accepts_path("/delayed/options")
    assert not server.accepts_path("/stocks")
    assert not server.accepts_path("/")


# -- connect and authenticate ----------------------------------------------------------------------


def test_server_speaks_first_with_connected() -> None:
    _, actions = Rig().open()
    assert [a.data for a in actions if isinstance(a, Send)] == [
        '[{"ev":"status","status":"connected","message":"Connected Successfully"}]'
    ]


def test_auth_success_exact_frame() -> None:
    session, _ = Rig(api_keys=("good",)).open()
    actions = session.received(auth("good"), 0.1)
    assert [a.data for a in actions if isinstance(a, Send)] == [
        '[{"ev":"status","status":"auth_success","message":"authenticated"}]'
    ]
    assert not closes(actions)


def test_bad_key_gets_auth_failed_then_the_socket_is_dropped() -> None:
    session, _ = Rig(api_keys=("good",)).open()
    actions = session.received(auth("bad"), 0.1)
    assert statuses(actions) == [("auth_failed", "authentication failed")]
    assert closes(actions) == [Close(1008)]
    assert session.received(sub("T." + SPY_CALL), 0.2) == []


def test_any_non_empty_key_works_when_no_keys_are_configured() -> None:
    rig = Rig()
    session, _ = rig.open()
    assert statuses(session.received(auth("anything"), 0.1))[0][0] == "auth_success"
    empty, _ = rig.open()
    assert statuses(empty.received(auth(""), 0.1))[0][0] == "auth_failed"


def test_plan_without_websocket_access_gets_the_plan_message() -> None:
    rig = Rig(accounts={"basic": Account(websocket_access=False)})
    session, _ = rig.open()
    actions = session.received(auth("basic"), 0.1)
    assert statuses(actions) == [
        (
            "auth_failed",
            "Your plan doesn't include websocket access. "
            "Visit https://massive.com/pricing to upgrade.",
        )
    ]
    assert closes(actions) == [Close(1008)]


def test_auth_timeout_after_the_configured_time() -> None:
    session, _ = Rig(auth_timeout=3.0).open(now=5.0)
    assert session.next_deadline() == 8.0
    assert session.tick(7.9) == []
    actions = session.tick(8.0)
    assert statuses(actions) == [("auth_timeout", "No authentication request received.")]
    assert closes(actions) == [Close(1008)]
    assert session.next_deadline() is None


def test_default_auth_timeout_is_ten_seconds() -> None:
    session, _ = Rig().open()
    assert session.next_deadline() == 10.0


def test_authenticated_session_has_no_auth_deadline() -> None:
    session = Rig().authed()
    assert session.next_deadline() is None
    assert session.tick(60.0) == []


def test_binary_client_frames_are_accepted() -> None:
    session, _ = Rig().open()
    actions = session.received(auth("k").encode(), 0.1)
    assert statuses(actions) == [("auth_success", "authenticated")]


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["{not json", b"\xff\xfe", "", "[1,"])
def test_invalid_json_gets_an_error_and_the_connection_stays(bad: str | bytes) -> None:
    session, _ = Rig().open()
    actions = session.received(bad, 0.1)
    assert [a.data for a in actions if isinstance(a, Send)] == [
        '[{"ev":"status","status":"error","message":"Invalid JSON"}]'
    ]
    assert not closes(actions)
    assert statuses(session.received(auth("k"), 0.2))[0][0] == "auth_success"


def test_json_that_is_not_a_request_gets_an_invented_error() -> None:
    session, _ = Rig().open()
    for message in ('["auth"]', '{"params":"k"}', '{"action":"auth","params":5}'):
        actions = session.received(message, 0.1)
        assert [s for s, _ in statuses(actions)] == ["error"]
        assert statuses(actions)[0][1].startswith("Invalid request")
        assert not closes(actions)


def test_second_auth_gets_an_invented_error_and_stays_open() -> None:
    session = Rig().authed()
    actions = session.received(auth("k"), 0.2)
    assert statuses(actions) == [("error", "already authenticated")]
    assert not closes(actions)
    assert session.authenticated


@pytest.mark.parametrize("action", ["subscribe", "unsubscribe"])
def test_subscribe_before_auth_gets_an_invented_error(action: str) -> None:
    session, _ = Rig().open()
    actions = session.received(sub("T." + SPY_CALL, action), 0.1)
    assert statuses(actions) == [("error", f"not authenticated: authenticate before {action}")]
    assert not closes(actions)


def test_unknown_action_gets_an_invented_error() -> None:
    session = Rig().authed()
    actions = session.received('{"action":"listen","params":"T.*"}', 0.1)
    assert statuses(actions) == [("error", "unknown action: listen")]
    assert not closes(actions)


# -- subscriptions ---------------------------------------------------------------------------------


def test_subscribe_one_success_per_channel_as_documented() -> None:
    session = Rig().authed()
    actions = session.received(sub(f"T.{SPY_CALL},Q.{SPY_CALL}"), 0.1)
    assert [a.data for a in actions if isinstance(a, Send)] == [
        '[{"ev":"status","status":"success","message":"subscribed to: T.O:SPY251219C00650000"},'
        '{"ev":"status","status":"success","message":"subscribed to: Q.O:SPY251219C00650000"}]'
    ]


def test_unsubscribe_one_success_per_channel_as_documented() -> None:
    session = Rig().authed()
    session.received(sub(f"T.{SPY_CALL},Q.{SPY_CALL}"), 0.1)
    actions = session.received(sub(f"T.{SPY_CALL}", "unsubscribe"), 0.2)
    assert [a.data for a in actions if isinstance(a, Send)] == [
        '[{"ev":"status","status":"success","message":"unsubscribed to: T.O:SPY251219C00650000"}]'
    ]
    assert set(session.subscriptions["T"]) == set()
    assert set(session.subscriptions["Q"]) == {SPY_CALL}


def test_unknown_prefixes_get_no_reply_at_all() -> None:
    session = Rig().authed()
    assert session.received(sub("ZZ.X,XQ.BTC-USD,nodot"), 0.1) == []
    actions = session.received(sub(f"ZZ.X, T.{SPY_CALL} ,FMV.{SPY_CALL}"), 0.1)
    assert statuses(actions) == [("success", f"subscribed to: T.{SPY_CALL}")]


def test_wildcards_allowed_for_trades_and_aggregates_but_not_quotes() -> None:
    session = Rig().authed()
    actions = session.received(sub("T.*,A.*,AM.*,Q.*"), 0.1)
    assert statuses(actions) == [
        ("success", "subscribed to: T.*"),
        ("success", "subscribed to: A.*"),
        ("success", "subscribed to: AM.*"),
        ("error", "not authorized"),
    ]
    assert session.wildcards == {"T", "A", "AM"}


def _contracts(n: int, right: str = "C") -> list[str]:
    return [f"O:SPY251219{right}{(100 + i) * 1000:08d}" for i in range(n)]


def test_quote_subscriptions_stop_at_one_thousand_per_connection() -> None:
    rig = Rig()
    session = rig.authed()
    names = _contracts(1001)
    actions = session.received(sub(",".join("Q." + n for n in names)), 0.1)
    replies = statuses(actions)
    assert replies[:1000] == [("success", f"subscribed to: Q.{n}") for n in names[:1000]]
    status, message = replies[1000]
    assert status == "error" and "1000" in message and f"Q.{names[1000]}" in message
    assert len(replies) == 1001
    assert session.quote_contracts() == 1000
    assert all(len(a.data) < 1024 * 1024 for a in actions if isinstance(a, Send))
    # the rest stays subscribed and streaming; a repeat of a subscribed contract is no excess
    assert len(rig.hub.contracts_of(session.conn_id)) == 1000
    again = statuses(session.received(sub(f"Q.{names[0]}"), 0.2))
    assert again == [("success", f"subscribed to: Q.{names[0]}")]
    # trades are not limited
    trades = statuses(session.received(sub(",".join("T." + n for n in names)), 0.3))
    assert all(s == "success" for s, _ in trades) and len(trades) == 1001


def test_quote_limit_is_a_server_setting_and_a_fault() -> None:
    rig = Rig(quote_limit=2)
    session = rig.authed()
    replies = statuses(session.received(sub(",".join("Q." + n for n in _contracts(3))), 0.1))
    assert [s for s, _ in replies] == ["success", "success", "error"]
    rig.server.set_quote_limit(3)
    replies = statuses(session.received(sub("Q." + _contracts(4)[3]), 0.2))
    assert [s for s, _ in replies] == ["success"]


def test_unknown_well_formed_contract_is_acknowledged_and_streams() -> None:
    rig = Rig()
    session = rig.authed()
    unknown = "O:ZZZQ260116C00042000"  # a root the catalogue does not know
    assert statuses(session.received(sub(f"Q.{unknown}"), 0.0)) == [
        ("success", f"subscribed to: Q.{unknown}")
    ]
    out = messages(rig.run(session, 60.0))
    assert any(m["ev"] == "Q" and m["sym"] == unknown for m in out)


def test_a_reconnected_client_gets_what_a_closed_connection_first_watched() -> None:
    # The market keeps the contract object of the first connection to watch it; the next one
    # names the same contract with an object of its own: routing and quotes go by contract,
    # not by object.
    rig = Rig()
    first = rig.authed("k")
    first.received(sub(f"Q.{SPY_CALL},T.{SPY_CALL}"), 0.0)
    assert any(m["ev"] == "Q" for m in messages(rig.run(first, 30.0)))
    rig.hub.forget(first.conn_id)
    first.closed(30.0)
    second = rig.authed("k", 30.0)
    second.received(sub(f"Q.{SPY_CALL}"), 30.0)
    watched = next(iter(rig.hub.contracts_of(second.conn_id)))
    routed = rig.hub.route(rig.market.advance(60.0))[second.conn_id]
    assert routed and all(e.contract == watched and e.contract is not watched for e in routed)
    out = messages(second.publish(routed, 60.0) + second.tick(61.0))
    assert {m["ev"] for m in out} == {"Q"} and {m["sym"] for m in out} == {SPY_CALL}
    assert len(out) == sum(type(e) is OptionQuote for e in routed)
    second.received(sub(f"Q.{SPY_CALL}", "unsubscribe"), 61.0)
    assert rig.hub.contracts_of(second.conn_id) == set()
    assert messages(rig.run(second, 90.0)) == []


def test_strict_market_acknowledges_an_expired_contract_and_sends_nothing() -> None:
    rig = Rig(market=MarketSettings(seed=3, start=START, strict=True))
    session = rig.authed()
    expired = "O:SPY240119C00450000"
    assert statuses(session.received(sub(f"Q.{expired},T.{expired}"), 0.0)) == [
        ("success", f"subscribed to: Q.{expired}"),
        ("success", f"subscribed to: T.{expired}"),
    ]
    assert messages(rig.run(session, 120.0)) == []


def test_malformed_ticker_is_acknowledged_and_never_streams() -> None:
    rig = Rig()
    session = rig.authed()
    assert statuses(session.received(sub("T.O:garbage"), 0.0)) == [
        ("success", "subscribed to: T.O:garbage")
    ]
    assert rig.hub.contracts_of(session.conn_id) == set()


# -- market data -----------------------------------------------------------------------------------

QUOTE_FIELDS = {
    "ev": str,
    "sym": str,
    "bx": int,
    "ax": int,
    "bp": float,
    "ap": float,
    "bs": int,
    "as": int,
    "t": int,
    "q": int,
}
TRADE_FIELDS = {
    "ev": str,
    "sym": str,
    "x": int,
    "p": float,
    "s": int,
    "c": list,
    "t": int,
    "q": int,
}
AGG_FIELDS = {
    "ev": str,
    "sym": str,
    "v": int,
    "av": int,
    "op": float,
    "vw": float,
    "o": float,
    "c": float,
    "h": float,
    "l": float,
    "a": float,
    "z": int,
    "s": int,
    "e": int,
}


def _typed(message: dict[str, Any], fields: dict[str, type]) -> bool:
    return list(message) == list(fields) and all(
        isinstance(message[k], t) and not isinstance(message[k], bool) for k, t in fields.items()
    )


def test_quotes_and_trades_carry_exactly_the_documented_fields() -> None:
    rig = Rig(market=MarketSettings(seed=3, start=START, activity=5.0))
    session = rig.authed()
    session.received(sub(f"Q.{SPY_CALL},T.{SPY_CALL}"), 0.0)
    actions = rig.run(session, 120.0)
    out = messages(actions)
    quotes = [m for m in out if m["ev"] == "Q"]
    trades = [m for m in out if m["ev"] == "T"]
    assert quotes and trades
    assert all(_typed(m, QUOTE_FIELDS) for m in quotes)
    assert all(_typed(m, TRADE_FIELDS) for m in trades)
    assert all(isinstance(c, int) for m in trades for c in m["c"])
    ledger = [e for a in actions if isinstance(a, Send) for e in a.events]
    start_ms = START.timestamp() * 1000
    for m, event in zip(
        quotes + trades,
        [e for e in ledger if isinstance(e, OptionQuote)]
        + [e for e in ledger if isinstance(e, OptionTrade)],
        strict=True,
    ):
        assert m["t"] == event.ts_ns // 1_000_000 and m["q"] == event.sequence
        assert start_ms <= m["t"] <= start_ms + 120_000
    exchanges = {m["bx"] for m in quotes} | {m["ax"] for m in quotes} | {m["x"] for m in trades}
    assert exchanges <= {
        300,
        301,
        302,
        303,
        304,
        307,
        308,
        309,
        312,
        313,
        315,
        316,
        318,
        319,
        320,
        322,
        323,
        325,
    }


def test_sequence_numbers_increase_per_contract_with_gaps() -> None:
    rig = Rig(market=MarketSettings(seed=3, start=START, activity=5.0))
    session = rig.authed()
    session.received(sub(f"Q.{SPY_CALL},T.{SPY_CALL}"), 0.0)
    qs = [m["q"] for m in messages(rig.run(session, 120.0)) if m["ev"] in ("Q", "T")]
    assert all(b > a for a, b in itertools.pairwise(qs))
    assert any(b - a > 1 for a, b in itertools.pairwise(qs))


def test_channels_filter_what_a_contract_sends() -> None:
    rig = Rig(market=MarketSettings(seed=3, start=START, activity=5.0))
    session = rig.authed()
    session.received(sub(f"Q.{SPY_CALL}"), 0.0)
    assert {m["ev"] for m in messages(rig.run(session, 60.0))} == {"Q"}
    session.received(sub(f"Q.{SPY_CALL}", "unsubscribe"), 60.0)
    session.received(sub(f"T.{SPY_CALL}"), 60.0)
    assert {m["ev"] for m in messages(rig.run(session, 240.0))} == {"T"}


def test_documented_quote_sample_renders_exactly() -> None:
    rig = Rig()
    session = rig.authed()
    contract = OptionContract("SPY", dt.date(2024, 12, 20), 720_000, "P")
    session.received(sub("Q.O:SPY241220P00720000"), 0.0)
    quote = OptionQuote(
        1644506128351_000_000, contract, 9.71, 9.81, 17, 24, "XCBO", "XCBO", 844090872
    )
    actions = session.publish([quote], 0.0) + session.tick(1.0)
    assert [a.data for a in actions if isinstance(a, Send)] == [
        '[{"ev":"Q","sym":"O:SPY241220P00720000","bx":302,"ax":302,"bp":9.71,"ap":9.81,"bs":17,'
        '"as":24,"t":1644506128351,"q":844090872}]'
    ]


def test_documented_trade_sample_renders_exactly_but_for_the_exchange_id() -> None:
    # The 2021 sample's `x: 65` predates the current ids; Cboe is 302 now.
    rig = Rig()
    session = rig.authed()
    contract = OptionContract("AMC", dt.date(2021, 8, 27), 37_000, "C")
    session.received(sub("T.O:AMC210827C00037000"), 0.0)
    trade = OptionTrade(
        1629820676333_000_000, contract, 1.54, 1, "XCBO", ("multi_leg_auction",), 651921857
    )
    actions = session.publish([trade], 0.0) + session.tick(1.0)
    assert [a.data for a in actions if isinstance(a, Send)] == [
        '[{"ev":"T","sym":"O:AMC210827C00037000","x":302,"p":1.54,"s":1,"c":[233],'
        '"t":1629820676333,"q":651921857}]'
    ]


def test_every_market_exchange_and_condition_has_a_massive_id() -> None:
    from mocks.massive import wire
    from mocks.sim.exchanges import TRADE_CONDITIONS, US_OPTIONS_MICS

    assert set(US_OPTIONS_MICS) <= set(wire.EXCHANGE_IDS)
    assert len(set(wire.EXCHANGE_IDS.values())) == len(wire.EXCHANGE_IDS)
    assert {n for n, _ in TRADE_CONDITIONS} - set(wire.CONDITION_IDS) == {"regular"}


# -- aggregates ------------------------------------------------------------------------------------

CONTRACT = OptionContract("SPY", dt.date(2025, 12, 19), 650_000, "C")
T0_NS = int(START.timestamp()) * 1_000_000_000  # 09:30:00.000 ET, market time 0


def _trade(ms: int, price: float, size: int, seq: int) -> OptionTrade:
    return OptionTrade(
        T0_NS + ms * 1_000_000, CONTRACT, price, size, "XCBO", ("auto_execution",), seq
    )


def test_second_aggregate_from_the_trades_of_its_window() -> None:
    rig = Rig()
    session = rig.authed()
    session.received(sub(f"A.{SPY_CALL}"), 0.0)
    trades = [_trade(100, 2.00, 3, 1), _trade(400, 2.10, 1, 2), _trade(900, 1.95, 4, 5)]
    assert messages(session.publish(trades, 0.95)) == []  # the window is still open
    due = session.next_deadline()
    assert due == pytest.approx(1.1)
    out = messages(session.tick(1.1) + session.tick(1.2))
    assert out == [
        {
            "ev": "A",
            "sym": SPY_CALL,
            "v": 8,
            "av": 8,
            "op": 2.0,
            "vw": round((2.0 * 3 + 2.1 + 1.95 * 4) / 8, 4),
            "o": 2.0,
            "c": 1.95,
            "h": 2.1,
            "l": 1.95,
            "a": round((2.0 * 3 + 2.1 + 1.95 * 4) / 8, 4),
            "z": 3,
            "s": T0_NS // 1_000_000,
            "e": T0_NS // 1_000_000 + 1000,
        }
    ]
    assert all(_typed(m, AGG_FIELDS) for m in out)


def test_no_bar_for_a_window_without_trades_and_day_totals_accumulate() -> None:
    rig = Rig()
    session = rig.authed()
    session.received(sub(f"A.{SPY_CALL},AM.{SPY_CALL}"), 0.0)
    out = messages(session.publish([_trade(100, 2.0, 2, 1)], 0.2))
    # a trade three seconds later finishes the first second's bar at once
    out += messages(session.publish([_trade(3_200, 3.0, 2, 2)], 3.3))
    out += messages(session.tick(4.2))
    seconds = [m for m in out if m["ev"] == "A"]
    assert [(m["s"] - T0_NS // 1_000_000, m["v"], m["av"]) for m in seconds] == [
        (0, 2, 2),
        (3000, 2, 4),
    ]
    assert seconds[1]["op"] == 2.0 and seconds[1]["a"] == 2.5
    out = messages(session.tick(60.2) + session.tick(60.3))  # due, then flushed
    assert [(m["ev"], m["v"], m["av"], m["o"], m["c"], m["e"] - m["s"]) for m in out] == [
        ("AM", 4, 4, 2.0, 3.0, 60_000)
    ]


def test_a_connection_held_for_days_keeps_nothing_of_the_contracts_it_rolled_past() -> None:
    """A feed handler keeps its one connection (one per key) for days, rolling through strikes:
    the day's totals go at the next day, a contract's symbol when it is no longer subscribed."""
    rig = Rig()
    session = rig.authed()
    day_ns = 86_400 * 1_000_000_000
    for day in range(3):
        strikes = [600_000 + 5_000 * (10 * day + k) for k in range(10)]
        contracts = [dataclasses.replace(CONTRACT, strike_milli=k) for k in strikes]
        symbols = ",".join(f"A.{format_occ(c)}" for c in contracts)
        now = day * 86_400.0
        session.received(sub(symbols), now)
        trades = [
            OptionTrade(T0_NS + day * day_ns + 1_000_000 * i, c, 2.0, 1, "XCBO", (), i + 1)
            for i, c in enumerate(contracts)
        ]
        assert messages(session.publish(trades, now + 0.5)) == []
        assert messages(session.tick(now + 1.2))  # their bars
        session.received(sub(symbols, "unsubscribe"), now + 2.0)
    assert set(session._day._days) == set(contracts)  # the last day's only
    assert session._symbols == {}


def test_aggregates_from_the_simulated_market_are_consistent() -> None:
    rig = Rig(market=MarketSettings(seed=5, start=START, activity=20.0))
    session = rig.authed()
    session.received(sub(f"T.{SPY_CALL},A.{SPY_CALL},AM.{SPY_CALL}"), 0.0)
    out = messages(rig.run(session, 300.0))
    trades = [m for m in out if m["ev"] == "T"]
    for ev, width in (("A", 1000), ("AM", 60_000)):
        bars = [m for m in out if m["ev"] == ev]
        assert bars and all(_typed(m, AGG_FIELDS) for m in bars)
        for bar in bars:
            inside = [t for t in trades if bar["s"] <= t["t"] < bar["e"]]
            assert bar["e"] - bar["s"] == width and bar["s"] % width == 0
            assert bar["v"] == sum(t["s"] for t in inside)
            assert (bar["o"], bar["c"]) == (inside[0]["p"], inside[-1]["p"])
            assert bar["h"] == max(t["p"] for t in inside)
            assert bar["l"] == min(t["p"] for t in inside)
        windows_with_trades = {t["t"] // width for t in trades if t["t"] < bars[-1]["e"]}
        assert {b["s"] // width for b in bars} == windows_with_trades


# -- batching --------------------------------------------------------------------------------------


def _quotes(n: int) -> list[Event]:
    return [
        OptionQuote(T0_NS + i * 1_000_000, CONTRACT, 1.0, 1.1, 1, 1, "XCBO", "ARCO", i + 1)
        for i in range(n)
    ]


def test_batch_flushes_when_full_or_after_the_interval() -> None:
    rig = Rig(max_batch_events=3, flush_interval=0.5)
    session = rig.authed()
    session.received(sub(f"Q.{SPY_CALL}"), 0.0)
    actions = session.publish(_quotes(7), 1.0)
    assert [len(f) for f in frames(actions)] == [3, 3]
    assert [len(a.events) for a in actions if isinstance(a, Send)] == [3, 3]
    assert session.next_deadline() == 1.5
    assert session.tick(1.4) == []
    rest = session.tick(1.5)
    assert [len(f) for f in frames(rest)] == [1]
    assert [m["q"] for m in messages(actions + rest)] == list(range(1, 8))


def test_frames_stay_under_the_byte_limit() -> None:
    rig = Rig(max_frame_bytes=1000, max_batch_events=10_000)
    session = rig.authed()
    session.received(sub(f"Q.{SPY_CALL}"), 0.0)
    actions = session.publish(_quotes(200), 1.0) + session.tick(2.0)
    sends = [a for a in actions if isinstance(a, Send)]
    assert len(sends) > 1 and all(len(a.data) <= 1000 for a in sends)
    assert [m["q"] for m in messages(actions)] == list(range(1, 201))


def test_replies_flush_batched_data_first() -> None:
    rig = Rig(flush_interval=1.0)
    session = rig.authed()
    session.received(sub(f"Q.{SPY_CALL}"), 0.0)
    assert session.publish(_quotes(2), 0.1) == []
    actions = session.received(sub(f"T.{SPY_CALL}"), 0.2)
    assert [[m["ev"] for m in f] for f in frames(actions)] == [["Q", "Q"], ["status"]]


# -- accounts and evictions ------------------------------------------------------------------------


def test_a_second_connection_with_the_key_evicts_the_older_one() -> None:
    rig = Rig(api_keys=("k",))
    older = rig.authed("k", 0.0)
    newer = rig.authed("k", 1.0)
    assert rig.poked == [older.conn_id]
    assert older.next_deadline() is not None
    actions = older.tick(1.0)
    assert statuses(actions) == [
        (
            "max_connections",
            "Maximum number of websocket connections exceeded. You have reached the connection "
            "limit for your account. Please contact support at https://polygon.io/contact to "
            "increase your limit.",
        )
    ]
    assert closes(actions) == [Close(1008)]
    older.closed(1.1)
    assert newer.authenticated and not newer.finished


def test_eviction_without_close_frame_variant() -> None:
    rig = Rig(eviction="evict_oldest_abort")
    older = rig.authed("k", 0.0)
    rig.authed("k", 1.0)
    actions = older.tick(1.0)
    assert [s for s, _ in statuses(actions)] == ["max_connections"]
    assert closes(actions) == [Abort()]


def test_refuse_the_newcomer_variant() -> None:
    rig = Rig(eviction="refuse_newcomer")
    older = rig.authed("k", 0.0)
    newer, _ = rig.open(1.0)
    actions = newer.received(auth("k"), 1.0)
    assert [s for s, _ in statuses(actions)] == ["max_connections"]
    assert closes(actions) == [Close(1008)]
    assert rig.poked == [] and not older.finished


def test_per_key_connection_allowance_and_other_keys() -> None:
    rig = Rig(api_keys=("other",), accounts={"big": Account(max_connections=2)})
    rig.authed("big", 0.0)
    rig.authed("big", 1.0)
    rig.authed("other", 1.5)
    assert rig.poked == []
    rig.authed("big", 2.0)
    assert rig.poked == [1]


def test_set_max_connections_fault_changes_a_key_limit() -> None:
    rig = Rig()
    rig.server.set_max_connections("k", 2)
    rig.authed("k")
    rig.authed("k")
    assert rig.poked == []


def test_a_closed_connection_frees_its_slot() -> None:
    rig = Rig()
    first = rig.authed("k")
    first.closed(0.5)
    rig.authed("k", 1.0)
    assert rig.poked == []


# -- slow consumers and other session faults -------------------------------------------------------


def test_overflow_sends_slow_consumer_and_closes() -> None:
    session = Rig().authed()
    actions = session.overflowed(5.0)
    assert [s for s, _ in statuses(actions)] == ["slow_consumer"]
    assert closes(actions) == [Close(1008)]


def test_overflow_policies_abort_and_drop() -> None:
    assert Rig(slow_consumer="abort").authed().overflowed(1.0) == [Abort()]
    dropping = Rig(slow_consumer="drop").authed()
    assert dropping.overflowed(1.0) == []
    assert not dropping.finished


def test_fault_methods_end_connections_at_their_next_tick() -> None:
    rig = Rig()
    a = rig.authed("a")
    b = rig.authed("b")
    rig.server.slow_consumer(a.conn_id)
    assert rig.poked == [a.conn_id]
    assert [s for s, _ in statuses(a.tick(1.0))] == ["slow_consumer"]
    rig.server.force_disconnect()
    acts = b.tick(1.0)
    assert [s for s, _ in statuses(acts)] == ["force_disconnect"] and closes(acts) == [Close(1008)]
    c = rig.authed("c", 2.0)
    rig.server.evict(c.conn_id)
    assert [s for s, _ in statuses(c.tick(2.0))] == ["max_connections"]


def test_auth_failure_fault_fails_the_next_attempts_whatever_the_key() -> None:
    rig = Rig()
    rig.server.auth_failure(2)
    for _ in range(2):
        session, _ = rig.open()
        assert statuses(session.received(auth("k"), 0.1))[0][0] == "auth_failed"
    session, _ = rig.open()
    assert statuses(session.received(auth("k"), 0.1))[0][0] == "auth_success"


# -- delayed feed and wildcards --------------------------------------------------------------------


def test_delayed_feed_refuses_quotes_and_sends_trades_fifteen_minutes_late() -> None:
    rig = Rig(market=MarketSettings(seed=3, start=START, activity=20.0))
    session = rig.authed(path="/delayed/options")
    assert statuses(session.received(sub(f"Q.{SPY_CALL},T.{SPY_CALL}"), 0.0)) == [
        ("error", "not authorized"),
        ("success", f"subscribed to: T.{SPY_CALL}"),
    ]
    assert messages(rig.run(session, 900.0, step=5.0)) == []
    late = messages(rig.run(session, 1000.0, step=5.0))
    assert late and {m["ev"] for m in late} == {"T"}
    start_ms = START.timestamp() * 1000
    assert all(start_ms <= m["t"] <= start_ms + 100_000 for m in late)


def test_trade_wildcard_streams_the_universe_and_other_connections_contracts() -> None:
    rig = Rig(market=MarketSettings(seed=3, start=START, activity=5.0))
    watcher = rig.authed("w")
    watcher.received(sub("T.*"), 0.0)
    universe = rig.hub.contracts_of(watcher.conn_id)
    assert {c.root for c in universe} == {"SPY", "QQQ"} and len(universe) == 40
    other = rig.authed("o")
    other.received(sub("Q.O:AAPL250321C00225000"), 0.0)
    assert OptionContract("AAPL", dt.date(2025, 3, 21), 225_000, "C") in rig.hub.contracts_of(
        watcher.conn_id
    )
    out = messages(rig.run(watcher, 120.0))
    assert out and {m["ev"] for m in out} == {"T"}
    watcher.received(sub("T.*", "unsubscribe"), 120.0)
    assert rig.hub.contracts_of(watcher.conn_id) == set()


def test_trade_wildcard_lets_go_of_what_nobody_subscribes_to_any_more() -> None:
    """`T.*` streams what other connections subscribe to while they do: held for days beside
    clients rolling through strikes, it must not keep the market working on all they named."""
    rig = Rig(market=MarketSettings(seed=3, start=START))
    watcher = rig.authed("w")
    watcher.received(sub("T.*"), 0.0)
    universe = rig.hub.contracts_of(watcher.conn_id)
    aapl = OptionContract("AAPL", dt.date(2025, 3, 21), 225_000, "C")
    first, second = rig.authed("a"), rig.authed("b")
    first.received(sub("Q.O:AAPL250321C00225000"), 1.0)
    second.received(sub("T.O:AAPL250321C00225000"), 1.0)
    assert aapl in rig.hub.contracts_of(watcher.conn_id)
    first.received(sub("Q.O:AAPL250321C00225000", "unsubscribe"), 2.0)
    assert aapl in rig.hub.contracts_of(watcher.conn_id)  # (the second still subscribes)
    second.closed(3.0)
    assert rig.hub.contracts_of(watcher.conn_id) == universe
    # nor does it hold on to its universe's contracts when another lets go of one
    spy = sorted(universe)[0]
    first.received(sub(f"T.{format_occ(spy)}"), 4.0)
    first.received(sub(f"T.{format_occ(spy)}", "unsubscribe"), 5.0)
    assert rig.hub.contracts_of(watcher.conn_id) == universe


def test_closing_releases_hub_interest() -> None:
    rig = Rig()
    session = rig.authed()
    session.received(sub(f"Q.{SPY_CALL}"), 0.0)
    assert rig.hub.contracts_of(session.conn_id)
    session.closed(1.0)
    assert rig.hub.contracts_of(session.conn_id) == set()
    assert session.conn_id not in rig.server.sessions
    assert format_occ(CONTRACT) == SPY_CALL
