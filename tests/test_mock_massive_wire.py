"""The Massive mock on the wire: trio-websocket clients over in-memory streams in virtual time,
and the plain `websockets` library over TCP on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
import trio.testing
import trio_websocket
from websockets.sync.client import connect as sync_connect

from mocks.sim.market import MarketSettings
from mocks.testing import run_mock

SPY_CALL = "O:SPY251219C00650000"
BUSY = MarketSettings(seed=11, activity=20.0)


async def _recv(ws: trio_websocket.WebSocketConnection) -> list[dict[str, Any]]:
    message = await ws.get_message()
    assert isinstance(message, str)
    decoded = orjson.loads(message)
    assert isinstance(decoded, list)
    return decoded


async def _auth(ws: trio_websocket.WebSocketConnection, key: str = "k") -> list[dict[str, Any]]:
    assert (await _recv(ws))[0]["status"] == "connected"
    await ws.send_message(orjson.dumps({"action": "auth", "params": key}).decode())
    return await _recv(ws)


async def test_the_whole_conversation_in_virtual_time(autojump_clock: trio.abc.Clock) -> None:
    async with run_mock("massive", market=BUSY) as mock, mock.connector(mock.url) as ws:
        assert mock.url.endswith("/options")
        assert (await _auth(ws))[0]["status"] == "auth_success"
        await ws.send_message(
            orjson.dumps(
                {"action": "subscribe", "params": f"Q.{SPY_CALL},T.{SPY_CALL},A.{SPY_CALL}"}
            )
        )  # binary frame, as the official client sends with custom_json=orjson
        replies = await _recv(ws)
        assert [r["message"] for r in replies] == [
            f"subscribed to: {ch}.{SPY_CALL}" for ch in ("Q", "T", "A")
        ]
        seen: dict[str, int] = {}
        frames = 0
        with trio.move_on_after(120):
            while True:
                frame = await _recv(ws)
                frames += 1
                for m in frame:
                    seen[m["ev"]] = seen.get(m["ev"], 0) + 1
        assert set(seen) == {"Q", "T", "A"}
        assert frames < sum(seen.values())  # batched: frames carry several events
        await ws.send_message(orjson.dumps({"action": "unsubscribe", "params": f"Q.{SPY_CALL}"}))
        while True:
            frame = await _recv(ws)
            if frame[0]["ev"] == "status":
                break
        assert frame == [
            {"ev": "status", "status": "success", "message": f"unsubscribed to: Q.{SPY_CALL}"}
        ]


def test_same_seed_same_bytes_on_the_wire() -> None:
    """Two runs, each in its own Trio run on a fresh virtual clock, send the same frames."""

    async def record() -> list[str | bytes]:
        async with run_mock("massive", market=BUSY) as mock, mock.connector(mock.url) as ws:
            await _auth(ws)
            params = f"Q.{SPY_CALL},T.{SPY_CALL},A.{SPY_CALL},AM.{SPY_CALL}"
            await ws.send_message(orjson.dumps({"action": "subscribe", "params": params}))
            out = []
            with trio.move_on_after(90):
                while True:
                    out.append(await ws.get_message())
            return out

    def run() -> list[str | bytes]:
        return trio.run(record, clock=trio.testing.MockClock(autojump_threshold=0))

    first = run()
    assert len(first) > 100 and any('"ev":"AM"' in str(m) for m in first)
    assert run() == first


async def test_delayed_path_serves_the_same_trades_fifteen_minutes_late(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with run_mock("massive", market=BUSY) as mock:
        url = mock.url.replace("/options", "/delayed/options")
        async with mock.connector(url) as ws:
            await _auth(ws)
            await ws.send_message(orjson.dumps({"action": "subscribe", "params": f"T.{SPY_CALL}"}))
            await _recv(ws)
            started = trio.current_time()
            first = await _recv(ws)
            assert trio.current_time() - started >= 900
            assert first[0]["ev"] == "T"
            lag_ms = mock.market.now_ns() // 1_000_000 - first[0]["t"]
            assert 900_000 <= lag_ms < 901_000


async def test_auth_timeout_then_close_1008(autojump_clock: trio.abc.Clock) -> None:
    async with run_mock("massive", auth_timeout=5.0) as mock, mock.connector(mock.url) as ws:
        await _recv(ws)
        started = trio.current_time()
        assert (await _recv(ws))[0]["status"] == "auth_timeout"
        assert trio.current_time() - started == pytest.approx(5.0)
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason is not None and closed.value.reason.code == 1008


async def test_bad_key_is_refused_and_closed(autojump_clock: trio.abc.Clock) -> None:
    async with run_mock("massive", api_keys=("good",)) as mock, mock.connector(mock.url) as ws:
        assert await _auth(ws, "bad") == [
            {"ev": "status", "status": "auth_failed", "message": "authentication failed"}
        ]
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()


async def test_a_second_connection_evicts_the_first(autojump_clock: trio.abc.Clock) -> None:
    async with run_mock("massive") as mock, mock.connector(mock.url) as first:
        await _auth(first, "k")
        async with mock.connector(mock.url) as second:
            assert (await _auth(second, "k"))[0]["status"] == "auth_success"
            assert (await _recv(first))[0]["status"] == "max_connections"
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await first.get_message()
            assert closed.value.reason is not None and closed.value.reason.code == 1008
            await second.send_message(orjson.dumps({"action": "subscribe", "params": "T.*"}))
            assert (await _recv(second))[0]["status"] == "success"


async def test_slow_consumer_is_killed_with_a_status(autojump_clock: trio.abc.Clock) -> None:
    async with (
        run_mock("massive", market=BUSY, max_buffer=50) as mock,
        mock.connector(mock.url) as ws,
    ):
        await _auth(ws)
        names = ",".join(f"Q.O:SPY250321{r}{k * 1000:08d}" for k in range(570, 580) for r in "CP")
        await ws.send_message(orjson.dumps({"action": "subscribe", "params": names}))
        await trio.sleep(30)  # the feed outruns the 50-event buffer: the server gives up on us
        last: list[dict[str, Any]] = []
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            while True:
                last = await _recv(ws)
        assert last == [{"ev": "status", "status": "slow_consumer", "message": last[0]["message"]}]
        assert closed.value.reason is not None and closed.value.reason.code == 1008
        assert mock.history[0].stats.overflows >= 1


async def test_plain_websockets_client_over_tcp() -> None:
    """A third-party asyncio-free client (websockets' sync API, offering permessage-deflate)."""
    async with run_mock("massive", market=BUSY) as mock:
        port = await mock.serve_tcp()
        result: dict[str, Any] = {}

        def client() -> None:
            with sync_connect(f"ws://127.0.0.1:{port}/options", open_timeout=5) as ws:
                result["connected"] = orjson.loads(ws.recv(timeout=5))
                ws.send('{"action":"auth","params":"k"}')
                result["auth"] = orjson.loads(ws.recv(timeout=5))
                ws.send(f'{{"action":"subscribe","params":"Q.{SPY_CALL}"}}')
                result["subscribed"] = orjson.loads(ws.recv(timeout=5))
                result["data"] = orjson.loads(ws.recv(timeout=5))
                result["extensions"] = [e.name for e in ws.protocol.extensions]

        with trio.fail_after(10):
            await trio.to_thread.run_sync(client)
        assert result["connected"][0]["status"] == "connected"
        assert result["auth"][0]["status"] == "auth_success"
        assert result["subscribed"][0]["message"] == f"subscribed to: Q.{SPY_CALL}"
        assert result["data"][0]["ev"] == "Q" and result["data"][0]["sym"] == SPY_CALL
        # trio-websocket never passes extensions to wsproto's AcceptConnection: no compression
        assert result["extensions"] == []
