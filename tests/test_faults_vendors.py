"""The vendor-session faults that the vendor suites do not already drive through the fault
list, observed by a plain WebSocket client on the wire: force_disconnect, heartbeat_stop,
limits."""

from __future__ import annotations

import orjson
import pytest
import trio
import trio_websocket

from mocks.testing import run_mock


async def test_force_disconnect_status_then_close(autojump_clock: trio.abc.Clock) -> None:
    async with run_mock("massive") as mock, mock.connector(mock.url, []) as ws:
        await ws.get_message()
        await ws.send_message('{"action":"auth","params":"key"}')
        await ws.get_message()
        await mock.inject("force_disconnect")
        got = []
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            while True:
                got += orjson.loads(await ws.get_message())
        assert got[-1]["status"] == "force_disconnect"
        assert closed.value.reason.code == 1008


async def test_massive_limits_lower_the_quote_contracts(autojump_clock: trio.abc.Clock) -> None:
    async with run_mock("massive") as mock, mock.connector(mock.url, []) as ws:
        await ws.get_message()
        await ws.send_message('{"action":"auth","params":"key"}')
        await ws.get_message()
        await mock.inject("limits", contracts=2)
        tickers = [f"Q.O:SPY250321C00{k}000" for k in (570, 575, 580)]
        await ws.send_message(orjson.dumps({"action": "subscribe", "params": ",".join(tickers)}))
        replies = []
        with trio.move_on_after(1):
            while len(replies) < 3:
                replies += [r for r in orjson.loads(await ws.get_message()) if r["ev"] == "status"]
        assert [r["status"] for r in replies] == ["success", "success", "error"]
        assert "580" in replies[2]["message"]


async def test_heartbeat_stop_silences_status_then_resumes(autojump_clock: trio.abc.Clock) -> None:
    async with run_mock("theta") as mock, mock.connector(mock.url, []) as ws:

        async def heartbeats(seconds: float) -> int:
            count = 0
            with trio.move_on_after(seconds):
                while True:
                    message = orjson.loads(await ws.get_message())
                    count += message["header"]["type"] == "STATUS"
            return count

        assert await heartbeats(5) >= 4
        await mock.inject("heartbeat_stop", duration="20s")
        await heartbeats(1)  # one may already be on its way
        assert await heartbeats(14) == 0
        await trio.sleep(6)
        assert await heartbeats(5) >= 4


async def test_theta_limits_give_max_streams_reached(autojump_clock: trio.abc.Clock) -> None:
    async with run_mock("theta") as mock, mock.connector(mock.url, []) as ws:
        await mock.inject("limits", quote_streams=1)
        responses = []
        for i, strike in enumerate((4800000, 4805000)):
            await ws.send_message(
                orjson.dumps(
                    {
                        "msg_type": "STREAM",
                        "sec_type": "OPTION",
                        "req_type": "QUOTE",
                        "add": True,
                        "id": i,
                        "contract": {
                            "root": "SPXW",
                            "expiration": 20240315,
                            "strike": strike,
                            "right": "C",
                        },
                    }
                )
            )
        with trio.move_on_after(2):
            while len(responses) < 2:
                header = orjson.loads(await ws.get_message())["header"]
                if header["type"] == "REQ_RESPONSE":
                    responses.append((header["req_id"], header["response"]))
        assert responses == [(0, "SUBSCRIBED"), (1, "MAX_STREAMS_REACHED")]


async def test_amberdata_limits_give_the_documented_error(autojump_clock: trio.abc.Clock) -> None:
    async with (
        run_mock("amberdata") as mock,
        mock.connector(mock.url, [(b"x-api-key", b"UAK-test")]) as ws,
    ):
        await mock.inject("limits", subscriptions=1)
        for i, strike in enumerate((60000, 61000), start=1):
            await ws.send_message(
                orjson.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": i,
                        "method": "subscribe",
                        "params": [
                            "market:options:trades",
                            {"instrument": f"BTC-28MAR25-{strike}-C", "exchange": "deribit"},
                        ],
                    }
                )
            )
        replies = {}
        with trio.move_on_after(2):
            while len(replies) < 2:
                message = orjson.loads(await ws.get_message())
                if "id" in message:
                    replies[message["id"]] = message
        assert isinstance(replies[1]["result"], str)
        assert replies[2]["error"]["code"] == 400
        assert "Max subscription limit" in replies[2]["error"]["description"]
