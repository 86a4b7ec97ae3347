"""The Theta mock on the wire: over in-memory WebSockets in virtual time (the runner, eviction,
outages), and over TCP on 127.0.0.1 with the vendor's own Python samples, run unchanged apart
from the port, on `websockets` in a thread, bounded in time."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket

from mocks.sim.clock import EASTERN
from mocks.sim.market import MarketSettings
from mocks.testing import MockService, run_mock
from mocks.theta import ThetaTerminal

VENDOR_DOCS = Path("/work/shared/vendor-docs")
DOCUMENTED_URL = "ws://127.0.0.1:25520/v1/events"
INDEX_REQUEST = {
    "msg_type": "STREAM",
    "sec_type": "INDEX",
    "req_type": "TRADE",
    "add": True,
    "id": 0,
    "contract": {"root": "SPX"},
}


def terminal(mock: MockService) -> ThetaTerminal:
    core = mock.server
    assert isinstance(core, ThetaTerminal)
    return core


async def receive(ws: trio_websocket.WebSocketConnection, seconds: float) -> list[dict[str, Any]]:
    """Every message for `seconds` (virtual time), one JSON object per frame."""
    out: list[dict[str, Any]] = []
    with trio.move_on_after(seconds):
        while True:
            message = await ws.get_message()
            assert isinstance(message, str)
            out.append(json.loads(message))
    return out


def types(messages: list[dict[str, Any]]) -> list[str]:
    return [m["header"]["type"] for m in messages]


async def test_index_stream_over_a_websocket(autojump_clock: trio.abc.Clock) -> None:
    async with run_mock("theta", seed=1) as mock, mock.connector(mock.url) as ws:
        await ws.send_message(str(INDEX_REQUEST))
        out = await receive(ws, 5.5)
    assert out[0] == {
        "header": {
            "type": "REQ_RESPONSE",
            "status": "CONNECTED",
            "response": "SUBSCRIBED",
            "req_id": 0,
        }
    }
    assert types(out).count("STATUS") == 5
    trades = [m for m in out if m["header"]["type"] == "TRADE"]
    assert len(trades) >= 3
    for i, message in enumerate(out):
        if message["header"]["type"] == "TRADE":
            assert out[i + 1]["header"]["type"] == "OHLC"
            assert out[i + 1]["ohlc"]["ms_of_day"] == message["trade"]["ms_of_day"]


async def test_wrong_path_is_refused(autojump_clock: trio.abc.Clock) -> None:
    async with run_mock("theta") as mock:
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with mock.connector("ws://theta.mock/v2/events"):
                pass
    assert rejected.value.status_code == 404


async def test_a_second_client_drops_the_first_and_gets_its_streams(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with run_mock("theta", seed=2) as mock, mock.connector(mock.url) as first:
        await first.send_message(json.dumps(INDEX_REQUEST))
        await receive(first, 2.5)
        async with mock.connector(mock.url) as second:
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    await first.get_message()
            reason = closed.value.reason
            assert reason is not None
            assert (reason.code, reason.reason) == (1000, "replaced by a new client connection")
            # no request on the new socket: the terminal's stream comes to it
            out = await receive(second, 3.5)
            assert "TRADE" in types(out) and "STATUS" in types(out)
            await second.send_message('{"msg_type":"STOP"}')
            await receive(second, 0.5)
            later = await receive(second, 3.0)
            assert set(types(later)) == {"STATUS"}
        assert terminal(mock).streams == {}


async def test_streams_survive_a_websocket_reconnect(autojump_clock: trio.abc.Clock) -> None:
    async with run_mock("theta", seed=3) as mock:
        async with mock.connector(mock.url) as ws:
            await ws.send_message(json.dumps(INDEX_REQUEST))
            await receive(ws, 1.5)
        await trio.sleep(10.0)
        async with mock.connector(mock.url) as ws:
            out = await receive(ws, 3.5)
        assert "TRADE" in types(out) and "REQ_RESPONSE" not in types(out)


async def test_upstream_outage_over_a_websocket(autojump_clock: trio.abc.Clock) -> None:
    async with run_mock("theta", seed=4) as mock, mock.connector(mock.url) as ws:
        await ws.send_message(json.dumps(INDEX_REQUEST))
        await receive(ws, 2.2)
        terminal(mock).upstream_outage(5.0)
        out = await receive(ws, 8.0)
        start = out.index({"header": {"type": "STATE", "status": "CONNECTED", "state": "START"}})
        down, up = out[:start], out[start + 1 :]
        assert down[0] == {"header": {"type": "STATE", "status": "DISCONNECTED", "state": "STOP"}}
        # outage from t=2.2 to t=7.2: the heartbeats at 3, 4, 5, 6 and 7 say DISCONNECTED
        assert down[1:] == [{"header": {"status": "DISCONNECTED", "type": "STATUS"}}] * 5
        assert "TRADE" in types(up)
        assert all(m["header"]["status"] == "CONNECTED" for m in up)
        assert mock.connections, "the socket stayed open throughout"


async def test_reused_ids_are_not_resubscribed_over_a_websocket(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with run_mock("theta", seed=5) as mock, mock.connector(mock.url) as ws:
        await ws.send_message(str(INDEX_REQUEST))
        await ws.send_message(str({**INDEX_REQUEST, "contract": {"root": "NDX"}}))  # id 0 again
        await ws.send_message(str({**INDEX_REQUEST, "id": 1, "contract": {"root": "RUT"}}))
        before = await receive(ws, 3.0)
        assert {m["contract"]["root"] for m in before if "contract" in m} == {"SPX", "NDX", "RUT"}
        terminal(mock).upstream_outage(2.0)
        await receive(ws, 2.5)
        after = await receive(ws, 4.0)
        assert {m["contract"]["root"] for m in after if "contract" in m} == {"RUT"}


async def test_max_streams_reached_over_a_websocket(autojump_clock: trio.abc.Clock) -> None:
    async with (
        run_mock("theta", seed=6, index_plan="standard", trade_stream_limit=1) as mock,
        mock.connector(mock.url) as ws,
    ):
        await ws.send_message(json.dumps(INDEX_REQUEST))
        await ws.send_message(json.dumps({**INDEX_REQUEST, "id": 1, "contract": {"root": "NDX"}}))
        out = await receive(ws, 0.5)
    assert [(m["header"]["response"], m["header"]["req_id"]) for m in out] == [
        ("SUBSCRIBED", 0),
        ("MAX_STREAMS_REACHED", 1),
    ]


async def test_dst_switch_day_over_a_websocket(autojump_clock: trio.abc.Clock) -> None:
    # 2025-03-09 01:59:58 EST; two seconds later the wall clock jumps to 03:00 EDT
    start = dt.datetime(2025, 3, 9, 6, 59, 58, tzinfo=dt.UTC)
    assert start.astimezone(EASTERN).hour == 1
    async with (
        run_mock("theta", market=MarketSettings(seed=7, start=start)) as mock,
        mock.connector(mock.url) as ws,
    ):
        await ws.send_message(json.dumps(INDEX_REQUEST))
        out = await receive(ws, 6.0)
    times = [m["trade"]["ms_of_day"] for m in out if m["header"]["type"] == "TRADE"]
    assert times[0] < 2 * 3_600_000 and times[-1] >= 3 * 3_600_000
    assert {m["trade"]["date"] for m in out if "trade" in m} == {20250309}


# -- TCP, the vendor's own samples --------------------------------------------------------------


def vendor_sample(name: str) -> str:
    """The Python sample of a vendor doc page, verbatim."""
    text = (VENDOR_DOCS / name).read_text()
    pattern = r"^import asyncio\n.*?^asyncio\.get_event_loop\(\)\.run_until_complete\(.*?\)$"
    match = re.search(pattern, text, re.S | re.M)
    assert match is not None, f"no Python sample in {name}"
    code = match.group(0)
    assert DOCUMENTED_URL in code
    return code


class _Enough(Exception):
    pass


def run_sample(code: str, url: str, messages: int, timeout: float) -> list[str]:
    """Run a sample as its page says (asyncio, `websockets`) on this thread's own event loop,
    until it has printed `messages` lines or `timeout` seconds have passed."""
    printed: list[str] = []

    def collect(*args: object) -> None:
        printed.append(" ".join(str(a) for a in args))
        if len(printed) >= messages:
            raise _Enough

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.call_later(timeout, loop.stop)
    try:
        exec(
            compile(code.replace(DOCUMENTED_URL, url), "vendor-sample", "exec"),
            {"__name__": "vendor_sample", "print": collect},
        )
    except _Enough:
        pass
    except RuntimeError as exc:  # the loop stopped at the timeout
        raise AssertionError(f"sample timed out after {printed!r}") from exc
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return printed


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("theta-index-price-stream.txt", {"TRADE", "OHLC"}),
        ("theta-option-market-value-stream.txt", {"MARKET_VALUE"}),
    ],
)
async def test_vendor_python_sample_runs_unchanged_over_tcp(page: str, expected: set[str]) -> None:
    code = vendor_sample(page)
    async with run_mock("theta", seed=8) as mock:
        await mock.serve_tcp()
        with trio.fail_after(30):
            printed = await trio.to_thread.run_sync(run_sample, code, mock.tcp_url(), 6, 20.0)
    out = [json.loads(line) for line in printed]
    assert out[0] == {
        "header": {
            "type": "REQ_RESPONSE",
            "status": "CONNECTED",
            "response": "SUBSCRIBED",
            "req_id": 0,
        }
    }
    assert expected <= set(types(out))
