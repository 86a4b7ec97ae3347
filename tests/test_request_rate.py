"""The per-connection request-rate bound (issue 10): every vendor mock refuses requests over a
token bucket in its own words, closes a connection that keeps flooding with 1008, leaves every
other connection alone, and takes requests again once the bucket has refilled.

The wire tests run each vendor over in-memory WebSockets in virtual time with a small bucket (the
settings a test or scenario may choose); the bucket itself is checked without I/O, with
Hypothesis for its two promises: never more than `burst + rate * t` requests accepted in any
stretch of `t` seconds, and never a refusal for a client that keeps to the rate.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import hypothesis.strategies as st
import pytest
import trio
import trio.testing
import trio_websocket
from hypothesis import given

from mocks import amberdata, massive, theta
from mocks.ratelimit import ACCEPT, CLOSE, REFUSE, RateLimit, RequestRate
from mocks.sim.market import MarketSettings
from mocks.testing import run_mock

WS = trio_websocket.WebSocketConnection
ACCEPTED, REFUSED, CLOSING = "accepted", "refused", "closing"
SPY_CALL = "O:SPY251219C00650000"
BUSY = MarketSettings(seed=11, activity=20.0)

# -- each vendor's conversation, as far as these tests need it -------------------------------------


@dataclass(frozen=True)
class Vendor:
    name: str
    headers: list[tuple[bytes, bytes]]
    setup_requests: int  # requests `setup` sends (they take tokens too)
    setup: Callable[[WS], Awaitable[None]]
    request: Callable[[int], str]  # a request answered at once, starting no data
    stream: list[str]  # requests that start data flowing
    verdicts: Callable[[Any], list[str]]  # one decoded message -> what it answers
    is_data: Callable[[Any], bool]


async def _massive_setup(ws: WS) -> None:
    assert json.loads(await ws.get_message())[0]["status"] == "connected"
    await ws.send_message(json.dumps({"action": "auth", "params": "key"}))
    assert json.loads(await ws.get_message())[0]["status"] == "auth_success"


async def _no_setup(ws: WS) -> None:
    return None


def _massive_verdicts(message: Any) -> list[str]:
    out = []
    for item in message:
        if item["ev"] != "status":
            continue
        if item["status"] == "success":
            out.append(ACCEPTED)
        elif item["status"] == "error" and item["message"].startswith("too many requests"):
            out.append(REFUSED)
        elif item["status"] == "force_disconnect" and "too many requests" in item["message"]:
            out.append(CLOSING)
        else:
            raise AssertionError(f"unexpected status {item}")
    return out


def _theta_request(n: int) -> str:
    """Ends a stream the terminal does not have: answered SUBSCRIBED, streams nothing."""
    return json.dumps(
        {"msg_type": "STREAM", "sec_type": "INDEX", "req_type": "TRADE", "add": False,
         "id": 1_000 + n, "contract": {"root": "NDX"}}
    )  # fmt: skip


def _theta_verdicts(message: Any) -> list[str]:
    header = message["header"]
    if header["type"] != "REQ_RESPONSE":
        return []
    assert header["req_id"] >= 1_000 or header["response"] == "SUBSCRIBED", message
    return {"SUBSCRIBED": [ACCEPTED], "ERROR": [REFUSED]}[header["response"]]


def _amber_request(n: int) -> str:
    """Unsubscribes an id the connection does not have: answered `false`."""
    return json.dumps({"jsonrpc": "2.0", "id": 1_000 + n, "method": "unsubscribe",
                       "params": [f"no-such-subscription-{n}"]})  # fmt: skip


def _amber_verdicts(message: Any) -> list[str]:
    if isinstance(message, dict) and message.get("method") == "subscription":
        return []
    if "result" in message:
        return [ACCEPTED]
    error = message["error"]
    assert error["code"] == 429 and error["description"].startswith("too many requests"), message
    return [REFUSED]


VENDORS = {
    "massive": Vendor(
        "massive", [], 1, _massive_setup,
        lambda n: json.dumps({"action": "unsubscribe", "params": f"Q.O:SPY251219C{n:08d}"}),
        [json.dumps({"action": "subscribe", "params": f"Q.{SPY_CALL},T.{SPY_CALL}"})],
        _massive_verdicts, lambda m: any(item["ev"] in ("Q", "T") for item in m),
    ),
    "theta": Vendor(
        "theta", [], 0, _no_setup, _theta_request,
        [json.dumps({"msg_type": "STREAM", "sec_type": "INDEX", "req_type": "TRADE",
                     "add": True, "id": 1, "contract": {"root": "SPX"}})],
        _theta_verdicts, lambda m: m["header"]["type"] in ("TRADE", "OHLC"),
    ),
    "amberdata": Vendor(
        "amberdata", [(b"x-api-key", b"UAK-rate")], 0, _no_setup, _amber_request,
        [json.dumps({"jsonrpc": "2.0", "id": 1, "method": "subscribe",
                     "params": ["market:options:order:snapshots",
                                {"instrument": "BTC-28MAR25-60000-C", "exchange": "deribit"}]})],
        _amber_verdicts, lambda m: isinstance(m, dict) and m.get("method") == "subscription",
    ),
}  # fmt: skip
ALL = pytest.mark.parametrize("vendor", list(VENDORS.values()), ids=list(VENDORS))


async def _verdicts(ws: WS, vendor: Vendor, count: int) -> list[str]:
    """The next `count` answers to requests, skipping data and heartbeats."""
    out: list[str] = []
    with trio.fail_after(60):
        while len(out) < count:
            out += vendor.verdicts(json.loads(await ws.get_message()))
    return out


async def _until_closed(ws: WS, vendor: Vendor) -> tuple[list[str], int]:
    """Every answer until the server closes; and the close code."""
    out: list[str] = []
    with pytest.raises(trio_websocket.ConnectionClosed) as closed, trio.fail_after(60):
        while True:
            out += vendor.verdicts(json.loads(await ws.get_message()))
    assert closed.value.reason is not None
    return out, closed.value.reason.code


# -- on the wire -----------------------------------------------------------------------------------


@ALL
async def test_a_flood_is_refused_then_closed_1008(
    vendor: Vendor, autojump_clock: trio.testing.MockClock
) -> None:
    burst, closing_after = 5, 10
    async with run_mock(
        vendor.name, request_rate=0.5, request_burst=burst, refusals_before_close=closing_after
    ) as mock:
        async with mock.connector(mock.url, vendor.headers) as ws:
            await vendor.setup(ws)
            accepted = burst - vendor.setup_requests
            for n in range(accepted + closing_after):
                await ws.send_message(vendor.request(n))
            answers, code = await _until_closed(ws, vendor)
        assert code == 1008
        assert mock.history[0].close_code == 1008
    refusals = [REFUSED] * closing_after
    if vendor.name == "massive":  # the last refusal is answered by the closing status alone
        refusals[-1] = CLOSING
    assert answers == [ACCEPTED] * accepted + refusals


@ALL
async def test_a_client_keeping_to_the_rate_is_never_refused(
    vendor: Vendor, autojump_clock: trio.testing.MockClock
) -> None:
    """Its whole burst at once, then 8 requests a second against a rate of 10, for 10 s."""
    burst, steady = 5, 80
    async with (
        run_mock(
            vendor.name, request_rate=10.0, request_burst=burst, refusals_before_close=1
        ) as mock,
        mock.connector(mock.url, vendor.headers) as ws,
    ):
        await vendor.setup(ws)
        for n in range(burst - vendor.setup_requests):
            await ws.send_message(vendor.request(n))
        assert await _verdicts(ws, vendor, burst - vendor.setup_requests) == [ACCEPTED] * (
            burst - vendor.setup_requests
        )
        started = trio.current_time()
        for n in range(steady):
            await trio.sleep(0.125)
            await ws.send_message(vendor.request(burst + n))
            assert await _verdicts(ws, vendor, 1) == [ACCEPTED]
        assert trio.current_time() - started >= steady * 0.125
        assert mock.history[0].open


@ALL
async def test_the_bucket_refills_in_virtual_time(
    vendor: Vendor, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        run_mock(vendor.name, request_rate=2.0, request_burst=4, refusals_before_close=100) as mock,
        mock.connector(mock.url, vendor.headers) as ws,
    ):
        await vendor.setup(ws)
        accepted = 4 - vendor.setup_requests
        for n in range(accepted + 2):
            await ws.send_message(vendor.request(n))
        assert await _verdicts(ws, vendor, accepted + 2) == [ACCEPTED] * accepted + [REFUSED] * 2
        await trio.sleep(1.0)  # two tokens back
        for n in range(3):
            await ws.send_message(vendor.request(10 + n))
        assert await _verdicts(ws, vendor, 3) == [ACCEPTED, ACCEPTED, REFUSED]
        await trio.sleep(2.0)  # full again
        for n in range(4):
            await ws.send_message(vendor.request(20 + n))
        assert await _verdicts(ws, vendor, 4) == [ACCEPTED] * 4
        assert mock.history[0].open


async def _flood(ws: WS, vendor: Vendor, refused: list[float]) -> int:
    """200 requests a second until the server closes; notes when each refusal came back."""

    async def read() -> None:
        with pytest.raises(trio_websocket.ConnectionClosed):
            while True:
                for verdict in vendor.verdicts(json.loads(await ws.get_message())):
                    if verdict != ACCEPTED:
                        refused.append(trio.current_time())

    with trio.fail_after(60):  # virtual seconds: the flood is closed after about 5
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            n = 0
            try:
                while True:
                    await ws.send_message(vendor.request(n))
                    n += 1
                    await trio.sleep(0.005)
            except trio_websocket.ConnectionClosed as closed:
                assert closed.reason is not None
                return closed.reason.code


async def _data_times(ws: WS, vendor: Vendor, times: list[float], answers: list[str]) -> None:
    """Notes when each data message arrives, and every answer to a request."""
    while True:
        message = json.loads(await ws.get_message())
        if vendor.is_data(message):
            times.append(trio.current_time())
        else:
            answers += vendor.verdicts(message)


@pytest.mark.parametrize("name", ["massive", "amberdata"])
async def test_other_connections_keep_streaming_during_a_flood(
    name: str, autojump_clock: trio.testing.MockClock
) -> None:
    vendor = VENDORS[name]
    # Massive: the flooder uses the streamer's key; one connection per key is the default.
    extra: dict[str, Any] = {"max_connections": 2} if name == "massive" else {}
    async with (
        run_mock(
            name,
            market=BUSY,
            request_rate=5.0,
            request_burst=10,
            refusals_before_close=1_000,
            **extra,
        ) as mock,
        mock.connector(mock.url, vendor.headers) as streamer,
    ):
        await vendor.setup(streamer)
        for request in vendor.stream:
            await streamer.send_message(request)
        data: list[float] = []
        answers: list[str] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_data_times, streamer, vendor, data, answers)
            with trio.fail_after(120):
                while len(data) < 3:
                    await trio.sleep(0.1)
            refused: list[float] = []
            codes: list[int] = []
            async with mock.connector(mock.url, vendor.headers) as flooder:
                await vendor.setup(flooder)

                async def flood() -> None:
                    codes.append(await _flood(flooder, vendor, refused))

                async with trio.open_nursery() as flooding:
                    flooding.start_soon(flood)
                    await trio.sleep(2.0)
                    assert refused, "the flood is being refused by now"
                    asked = len(answers)
                    await streamer.send_message(vendor.request(99_999))  # its own bucket
                    with trio.fail_after(5):
                        while len(answers) == asked:
                            await trio.sleep(0.01)
                    assert answers[asked:] == [ACCEPTED]
            assert codes == [1008]
            flood_span = (refused[0], refused[-1])
            assert flood_span[1] - flood_span[0] > 4.0  # 1,000 refusals at ~195 a second
            during = [t for t in data if flood_span[0] <= t <= flood_span[1]]
            assert len(during) >= int(flood_span[1] - flood_span[0]) - 1  # one a second or more
            settled = len(data)
            with trio.fail_after(30):
                while len(data) < settled + 3:
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        streamer_conn, flooder_conn = mock.history
        assert streamer_conn.open and flooder_conn.close_code == 1008


async def test_theta_keeps_streaming_to_a_flooding_client_and_to_the_next_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The terminal has one client at a time: the flooder's own data goes on while its requests
    are refused, and the streams, which belong to the terminal, reach the client after it."""
    vendor = VENDORS["theta"]
    async with run_mock(
        "theta", request_rate=5.0, request_burst=10, refusals_before_close=1_000
    ) as mock:
        async with mock.connector(mock.url) as flooder:
            await flooder.send_message(vendor.stream[0])
            data: list[float] = []
            with trio.fail_after(60):
                while len(data) < 2:
                    if vendor.is_data(json.loads(await flooder.get_message())):
                        data.append(trio.current_time())
            refused: list[float] = []
            code = await _flood(flooder, _theta_counting_data(data), refused)
        assert code == 1008
        flood = (refused[0], refused[-1])
        assert flood[1] - flood[0] > 4.0
        assert len([t for t in data if flood[0] <= t <= flood[1]]) >= 2
        async with mock.connector(mock.url) as after:
            data = []
            with trio.fail_after(30):
                while len(data) < 4:
                    if vendor.is_data(json.loads(await after.get_message())):
                        data.append(trio.current_time())
        assert mock.history[0].close_code == 1008


def _theta_counting_data(data: list[float]) -> Vendor:
    """Theta's conversation with data messages noted as they pass the flood's reader."""
    base = VENDORS["theta"]

    def verdicts(message: Any) -> list[str]:
        if base.is_data(message):
            data.append(trio.current_time())
        return base.verdicts(message)

    return Vendor(
        base.name, base.headers, 0, base.setup, base.request, base.stream, verdicts, base.is_data
    )


async def test_massive_refuses_before_auth_too(autojump_clock: trio.testing.MockClock) -> None:
    """The bucket counts every frame, whatever it says: garbage and unauthenticated requests."""
    async with (
        run_mock("massive", request_rate=1.0, request_burst=2, refusals_before_close=50) as mock,
        mock.connector(mock.url) as ws,
    ):
        assert json.loads(await ws.get_message())[0]["status"] == "connected"
        for frame in ("not json", b"\x00\xff", '{"action":"subscribe","params":"Q.*"}'):
            await ws.send_message(frame)
        statuses = [json.loads(await ws.get_message())[0] for _ in range(3)]
    assert [s["message"][:17] for s in statuses] == [
        "Invalid JSON",
        "Invalid JSON",
        "too many requests",
    ]


# -- settings --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [massive.MassiveSettings, theta.ThetaSettings, amberdata.server.AmberdataSettings],
    ids=["massive", "theta", "amberdata"],
)
def test_the_numbers_are_settings_with_generous_checked_defaults(settings: type[Any]) -> None:
    limit = settings().request_limit
    assert limit.rate >= 100 and limit.burst >= 2_000 and limit.refusals_before_close >= 1_000
    assert settings(request_rate=3.0, request_burst=7).request_limit == RateLimit(
        3.0, 7, limit.refusals_before_close
    )
    for bad in ({"request_rate": 0.0}, {"request_rate": float("inf")}, {"request_burst": 0}):
        with pytest.raises(ValueError, match="request_"):
            settings(**bad)
    with pytest.raises(ValueError, match="refusals_before_close"):
        settings(refusals_before_close=0)


def test_a_scenario_file_sets_the_bucket() -> None:
    from scenarios.model import parse_scenario

    text = """
name = "tight-bucket"
vendor = "amberdata"
duration = "10s"
[client]
subscribe = ["market:options:order:snapshots:BTC-28MAR25-60000-C@deribit"]
[mock]
request_rate = 2
request_burst = 3
refusals_before_close = 4
"""
    scenario = parse_scenario(text)
    assert scenario.mock == {"request_rate": 2.0, "request_burst": 3, "refusals_before_close": 4}


# -- the bucket, without I/O -----------------------------------------------------------------------


def test_a_flood_ends_only_when_the_bucket_is_full_again() -> None:
    bucket = RequestRate(RateLimit(rate=1.0, burst=2, refusals_before_close=3), now=0.0)
    assert [bucket.admit(0.0) for _ in range(4)] == [ACCEPT, ACCEPT, REFUSE, REFUSE]
    assert bucket.admit(1.0) == ACCEPT  # one token back; the flood goes on
    assert bucket.admit(1.0) == CLOSE  # the third refusal of this flood
    fresh = RequestRate(RateLimit(rate=1.0, burst=2, refusals_before_close=3), now=0.0)
    assert [fresh.admit(0.0) for _ in range(4)] == [ACCEPT, ACCEPT, REFUSE, REFUSE]
    assert fresh.admit(2.0) == ACCEPT  # quiet until full: the flood is over
    assert [fresh.admit(2.0) for _ in range(3)] == [ACCEPT, REFUSE, REFUSE]
    assert fresh.refused == 4


def test_sending_a_little_over_the_rate_for_long_is_closed() -> None:
    bucket = RequestRate(RateLimit(rate=10.0, burst=20, refusals_before_close=50), now=0.0)
    verdicts = [bucket.admit(n / 11.0) for n in range(2_000)]  # 11 a second against 10
    assert REFUSE in verdicts
    closed_at = verdicts.index(CLOSE)
    assert 500 < closed_at < 1_000  # about 1 refusal a second beyond the burst's 20


arrivals = st.lists(st.floats(0.0, 0.5, allow_nan=False), min_size=1, max_size=300)


@given(
    gaps=arrivals,
    rate=st.floats(0.5, 50.0),
    burst=st.integers(1, 20),
)
def test_never_more_than_the_burst_plus_the_rate(
    gaps: list[float], rate: float, burst: int
) -> None:
    bucket = RequestRate(RateLimit(rate, burst, refusals_before_close=10**9), now=0.0)
    now, accepted = 0.0, []
    for gap in gaps:
        now += gap
        if bucket.admit(now) == ACCEPT:
            accepted.append(now)
    for i, start in enumerate(accepted):
        for j in range(i, len(accepted)):
            assert j - i + 1 <= burst + rate * (accepted[j] - start) + 1e-6


@given(gaps=arrivals, rate=st.floats(0.5, 50.0), burst=st.integers(1, 20))
def test_a_client_keeping_to_the_rate_is_never_refused_in_any_pattern(
    gaps: list[float], rate: float, burst: int
) -> None:
    bucket = RequestRate(RateLimit(rate, burst, refusals_before_close=1), now=0.0)
    now = 0.0
    for gap in gaps:
        now += max(gap, 1.0 / rate)
        assert bucket.admit(now) == ACCEPT


async def test_amberdata_answers_a_refused_batch_call_by_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each call with an id gets its 429 in the batch's reply; a notification gets nothing."""
    vendor = VENDORS["amberdata"]
    async with (
        run_mock("amberdata", request_rate=0.01, request_burst=1) as mock,
        mock.connector(mock.url, vendor.headers) as ws,
    ):
        await ws.send_message(_amber_request(0))
        assert await _verdicts(ws, vendor, 1) == [ACCEPTED]
        call, notification = json.loads(_amber_request(7)), {"jsonrpc": "2.0", "method": "x"}
        await ws.send_message(json.dumps([call, notification]))
        [refusal] = json.loads(await ws.get_message())
        assert (refusal["id"], refusal["error"]["code"]) == (1_007, 429)
        await ws.send_message(json.dumps(notification))
        await ws.send_message("not json")
        last = json.loads(await ws.get_message())
        assert (last["id"], last["error"]["code"]) == (None, 429)


async def test_theta_refusals_carry_the_request_id_and_change_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with run_mock("theta", request_rate=0.01, request_burst=1) as mock:
        core = mock.server
        assert isinstance(core, theta.ThetaTerminal)
        async with mock.connector(mock.url) as ws:
            await ws.send_message(_theta_request(0))
            refused = [
                VENDORS["theta"].stream[0],  # a fresh stream, id 1
                json.dumps({"msg_type": "STOP"}),
                json.dumps({"msg_type": "STREAM", "id": 2, "pad": "x" * 5_000}),  # too long to read
            ]
            for frame in refused:
                await ws.send_message(frame)
            replies: list[tuple[str, int]] = []
            with trio.fail_after(30):
                while len(replies) < 4:
                    header = json.loads(await ws.get_message())["header"]
                    if header["type"] == "REQ_RESPONSE":
                        replies.append((header["response"], header["req_id"]))
        assert replies == [("SUBSCRIBED", 1_000), ("ERROR", 1), ("ERROR", -1), ("ERROR", -1)]
        assert core.streams == {} and core.log.highest == 1_000
