"""The Amberdata mock on the wire: trio-websocket over in-memory streams in virtual time, and the
plain `websockets` package over TCP on 127.0.0.1 sending the exact JSON of Amberdata's docs, the
way the vendor's Node sample (`ws`, key in the `x-api-key` header) talks to it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from mocks.amberdata import invented
from mocks.testing import run_mock

KEY = "UAK-wire-test"
# The documented request, verbatim (vendor-docs/amberdata-options-order-snapshots.txt).
DOC_REQUEST = """{
  "jsonrpc" : "2.0",
  "id"      : 1,
  "method"  : "subscribe",
  "params"  : [ "market:options:order:snapshots", { "instrument": "BTC-24JUN22-15000-P", "exchange": "deribit" } ]
}"""  # noqa: E501
# What the documented Node sample sends: JSON.stringify keeps the object's member order.
NODE_SAMPLE = (
    '{"jsonrpc":"2.0","method":"subscribe","params":["market:options:order:snapshots"],"id":1}'
)
ATM = "BTC-28MAR25-60000-C"


async def test_in_memory_subscribe_then_first_snapshot_within_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        run_mock("amberdata", seed=3) as mock,
        mock.connector(mock.url, [(b"x-api-key", KEY.encode())]) as ws,
    ):
        await ws.send_message(DOC_REQUEST)
        reply = json.loads(await ws.get_message())
        assert reply["id"] == 1 and isinstance(reply["result"], str)
        subscribed = trio.current_time()
        with trio.fail_after(1.0):
            push = json.loads(await ws.get_message())
        assert trio.current_time() - subscribed <= 1.0
        assert push["jsonrpc"] == "2.0" and push["method"] == "subscription"
        assert push["params"]["subscription"] == reply["result"]
        snapshot = push["params"]["result"]
        assert snapshot["instrument"] == "BTC-24JUN22-15000-P"
        assert snapshot["exchange"] == "deribit"
        # Periodic after that, one a second by default.
        with trio.fail_after(1.01):
            second = json.loads(await ws.get_message())
        assert second["params"]["result"]["timestamp"] - snapshot["timestamp"] <= 1000
        unsubscribe = {"jsonrpc": "2.0", "id": 2, "method": "unsubscribe",
                       "params": [reply["result"]]}  # fmt: skip
        await ws.send_message(json.dumps(unsubscribe))
        while (message := json.loads(await ws.get_message())).get("id") != 2:
            assert message["method"] == "subscription"  # pushes already under way
        assert message == {"jsonrpc": "2.0", "id": 2, "result": True}


async def test_in_memory_bad_key_gets_the_text_then_close_1008(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        run_mock("amberdata", api_keys=("UAK-good",)) as mock,
        mock.connector(mock.url, [(b"x-api-key", b"UAK-bad")]) as ws,
    ):
        assert await ws.get_message() == "invalid api key 'UAK-bad'"
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason is not None and closed.value.reason.code == 1008


async def test_in_memory_key_in_the_query_on_the_options_path(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        run_mock("amberdata", api_keys=("UAO-sdk",), snapshot_interval=5.0) as mock,
        mock.connector("ws://amberdata.mock/options?x-api-key=UAO-sdk") as ws,
    ):
        await ws.send_message(json.dumps({"method": "subscribe", "id": 1,
                                          "params": ["market:options:tickers",
                                                     {"instrument": ATM}]}))  # fmt: skip
        reply = json.loads(await ws.get_message())
        assert "result" in reply
        [conn] = mock.connections.values()
        assert conn.info.path == "/options"
        assert conn.session.plan.name == "on-demand"  # type: ignore[attr-defined]
        ticker = json.loads(await ws.get_message())["params"]["result"]
        assert ticker["instrument"] == ATM and "bids" not in ticker


async def test_in_memory_trial_connection_limit_and_subscription_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with run_mock("amberdata", trial_connections=1, trial_subscriptions=1) as mock:
        headers = [(b"x-api-key", b"UAT-trial")]
        async with mock.connector(mock.url, headers) as first:
            request = {"jsonrpc": "2.0", "id": 1, "method": "subscribe",
                       "params": ["market:options:trades", {"instrument": ATM,
                                                            "exchange": "deribit"}]}  # fmt: skip
            await first.send_message(json.dumps(request))
            assert "result" in json.loads(await first.get_message())
            request["params"] = ["market:options:ohlcv", {"instrument": ATM}]
            await first.send_message(json.dumps(request))
            error = json.loads(await first.get_message())["error"]
            assert error["code"] == 400 and error["description"].startswith("Max subscription")
            async with mock.connector(mock.url, headers) as second:
                assert await second.get_message() == invented.CONNECTION_LIMIT_TEXT
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await second.get_message()
                assert closed.value.reason is not None and closed.value.reason.code == 1008


# -- an external client over TCP (real clock, 127.0.0.1, port 0) -----------------------------------


def _node_sample_session(url: str, key: str) -> list[Any]:
    """What Amberdata's Node sample does, with the `websockets` package: key in the header,
    send on open, print every message. Plus the documented request and an unsubscribe."""
    seen: list[Any] = []
    with connect(url, additional_headers={"x-api-key": key}, open_timeout=5) as ws:
        ws.send(NODE_SAMPLE)
        seen.append(json.loads(ws.recv(timeout=5)))
        ws.send(DOC_REQUEST)
        reply = json.loads(ws.recv(timeout=5))
        seen.append(reply)
        push = json.loads(ws.recv(timeout=5))
        seen.append(push)
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "unsubscribe",
                            "params": [reply["result"]]}))  # fmt: skip
        while (message := json.loads(ws.recv(timeout=5))).get("id") != 2:
            pass
        seen.append(message)
    return seen


async def test_websockets_client_over_tcp_with_the_vendor_docs_json() -> None:
    async with run_mock("amberdata", seed=9) as mock:
        port = await mock.serve_tcp()
        url = f"ws://127.0.0.1:{port}/"
        error, reply, push, unsubscribed = await trio.to_thread.run_sync(
            _node_sample_session, url, KEY
        )
    # The Node sample has no instrument: the documented error shape, an HTTP-like code.
    assert error["jsonrpc"] == "2.0" and error["id"] == 1
    assert list(error["error"]) == ["description", "code"] and error["error"]["code"] == 400
    assert reply["id"] == 1 and len(reply["result"]) == 36
    assert push["method"] == "subscription"
    assert push["params"]["subscription"] == reply["result"]
    assert push["params"]["result"]["instrument"] == "BTC-24JUN22-15000-P"
    assert unsubscribed == {"jsonrpc": "2.0", "id": 2, "result": True}


def _refused(url: str, headers: dict[str, str]) -> tuple[str, int | None]:
    with connect(url, additional_headers=headers, open_timeout=5) as ws:
        text = ws.recv(timeout=5)
        assert isinstance(text, str)
        try:
            ws.recv(timeout=5)
        except ConnectionClosed as closed:
            return text, closed.rcvd.code if closed.rcvd else None
    raise AssertionError("the server kept the connection open")


async def test_websockets_client_over_tcp_bad_and_missing_key() -> None:
    async with run_mock("amberdata", api_keys=("UAK-good",)) as mock:
        port = await mock.serve_tcp()
        url = f"ws://127.0.0.1:{port}/options"
        bad = await trio.to_thread.run_sync(_refused, url, {"x-api-key": "UAK-nope"})
        missing = await trio.to_thread.run_sync(_refused, url, {})
    assert bad == ("invalid api key 'UAK-nope'", 1008)
    assert missing == ("invalid api key ''", 1008)


def _wrong_path(url: str) -> int:
    try:
        with connect(url, additional_headers={"x-api-key": KEY}, open_timeout=5):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


async def test_websockets_client_over_tcp_wrong_path_is_404() -> None:
    async with run_mock("amberdata") as mock:
        port = await mock.serve_tcp()
        status = await trio.to_thread.run_sync(_wrong_path, f"ws://127.0.0.1:{port}/v1/events")
    assert status == 404
