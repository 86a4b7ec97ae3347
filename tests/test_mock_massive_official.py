"""The official `massive` Python client, unchanged, against the mock over TCP on 127.0.0.1.

The client is asyncio (`websockets`); it runs in a worker thread (or, for the vendor's documented
sample, a subprocess) while the mock runs in this Trio test on the real clock, every wait bounded.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from typing import Any

import trio
from massive import WebSocketClient
from massive.exceptions import AuthError
from massive.websocket.models import EquityAgg, EquityQuote, EquityTrade

from mocks.sim.market import MarketSettings
from mocks.testing import run_mock

SPY_CALL = "O:SPY251219C00650000"
BUSY = MarketSettings(seed=5, activity=60.0)  # trades every fraction of a second, on the real clock
TIMEOUT = 10.0


class Enough(Exception):
    """Raised by the message handler to end the official client's `connect()` loop."""


def run_official(
    port: int,
    subscriptions: list[str],
    done: Callable[[list[Any]], bool],
    *,
    key: str = "k",
    feed_path: str = "",
) -> tuple[list[Any], BaseException | None]:
    """Run `WebSocketClient.connect` until `done(messages)`; returns (messages, what it raised)."""
    seen: list[Any] = []

    async def main() -> None:
        client = WebSocketClient(
            api_key=key,
            feed=f"127.0.0.1:{port}{feed_path}",
            market="options",
            secure=False,
            subscriptions=subscriptions,
        )

        async def handler(messages: list[Any]) -> None:
            seen.extend(messages)
            if done(seen):
                raise Enough

        await asyncio.wait_for(client.connect(handler), TIMEOUT)

    try:
        asyncio.run(main())
    except Enough:
        return seen, None
    except BaseException as exc:  # handed back to the test to assert on
        return seen, exc
    return seen, None


async def in_thread(fn: Callable[[], Any]) -> Any:
    with trio.fail_after(TIMEOUT + 5):
        return await trio.to_thread.run_sync(fn)


async def test_official_client_receives_quotes_trades_and_aggregates() -> None:
    async with run_mock("massive", market=BUSY) as mock:
        port = await mock.serve_tcp()
        subs = [f"Q.{SPY_CALL}", f"T.{SPY_CALL}", f"A.{SPY_CALL}"]

        def all_kinds(seen: list[Any]) -> bool:
            return {type(m) for m in seen} >= {EquityQuote, EquityTrade, EquityAgg}

        seen, error = await in_thread(lambda: run_official(port, subs, all_kinds))
        assert error is None
        quote = next(m for m in seen if isinstance(m, EquityQuote))
        trade = next(m for m in seen if isinstance(m, EquityTrade))
        agg = next(m for m in seen if isinstance(m, EquityAgg))
        assert quote.symbol == trade.symbol == agg.symbol == SPY_CALL
        assert quote.bid_price is not None and quote.ask_price is not None
        assert quote.bid_exchange_id is not None and quote.sequence_number is not None
        assert trade.price is not None and trade.size is not None and trade.conditions is not None
        assert agg.event_type == "A" and agg.end_timestamp - agg.start_timestamp == 1000
        assert agg.volume is not None and agg.vwap is not None and agg.accumulated_volume
        session = mock.history[0].session
        assert {ch: set(s) for ch, s in session.subscriptions.items() if s} == {  # type: ignore[attr-defined]
            "Q": {SPY_CALL},
            "T": {SPY_CALL},
            "A": {SPY_CALL},
        }


async def test_official_client_raises_auth_error_on_a_bad_key() -> None:
    async with run_mock("massive", api_keys=("good",)) as mock:
        port = await mock.serve_tcp()
        seen, error = await in_thread(
            lambda: run_official(port, [f"Q.{SPY_CALL}"], lambda _: False, key="bad")
        )
        assert isinstance(error, AuthError)
        assert str(error) == "authentication failed"
        assert seen == [] and len(mock.history) == 1


async def test_official_client_reconnects_and_resubscribes_after_close_1011() -> None:
    async with run_mock("massive", market=BUSY) as mock:
        port = await mock.serve_tcp()
        closed = threading.Event()
        after: list[Any] = []

        def done(seen: list[Any]) -> bool:
            if closed.is_set():
                after.append(seen[-1])
            return len(after) >= 3

        async def close_first_connection() -> None:
            while not (mock.history and mock.history[0].stats.events_sent > 0):
                await trio.sleep(0.01)
            await mock.history[0].close(1011, "going away for a test")
            closed.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_first_connection)
            _, error = await in_thread(
                lambda: run_official(port, [f"Q.{SPY_CALL}", f"T.{SPY_CALL}"], done)
            )
        assert error is None
        assert len(mock.history) == 2
        assert mock.history[0].close_code == 1011
        second = mock.history[1].session
        assert set(second.subscriptions["Q"]) == {SPY_CALL}  # type: ignore[attr-defined]
        assert set(second.subscriptions["T"]) == {SPY_CALL}  # type: ignore[attr-defined]
        assert all(isinstance(m, EquityQuote | EquityTrade) for m in after)


async def test_official_client_stops_without_reconnecting_after_close_1000() -> None:
    async with run_mock("massive", market=BUSY) as mock:
        port = await mock.serve_tcp()

        async def close_normally() -> None:
            while not (mock.history and mock.history[0].stats.events_sent > 0):
                await trio.sleep(0.01)
            await mock.history[0].close(1000)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(close_normally)
            _, error = await in_thread(
                lambda: run_official(port, [f"Q.{SPY_CALL}"], lambda _: False)
            )
        assert error is None  # connect() returned by itself
        assert len(mock.history) == 1


SAMPLE = """
from massive import WebSocketClient
from massive.websocket.models import WebSocketMessage, Feed, Market
from typing import List

client = WebSocketClient(
	api_key="qRzMAhv3j6qfOvMNJ7LhO4qklEqRc0Rx",
	feed="127.0.0.1:{port}", secure=False,
	market=Market.Options
	)

# quotes (1,000 option contracts per connection)
client.subscribe("Q.O:SPY251219C00650000")
# client.subscribe("Q.O:SPY241220P00720000", "Q.O:SPY251219C00650000")

def handle_msg(msgs: List[WebSocketMessage]):
    for m in msgs:
        print(m, flush=True)

# print messages
client.run(handle_msg)
"""


async def test_vendor_documented_sample_prints_quotes() -> None:
    """The sample of the vendor's options quotes page, with only `feed` (and `secure`) changed."""
    async with run_mock("massive", market=BUSY) as mock:
        port = await mock.serve_tcp()
        code = SAMPLE.replace("{port}", str(port))
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", code], stdout=-1, stderr=-1
        )
        output = b""
        try:
            assert process.stdout is not None
            with trio.fail_after(TIMEOUT):
                while output.count(b"EquityQuote(") < 3:
                    chunk = await process.stdout.receive_some()
                    if not chunk:
                        break
                    output += chunk
        finally:
            process.kill()
            await process.wait()
        assert output.count(b"EquityQuote(") >= 3
        assert f"symbol='{SPY_CALL}'".encode() in output
        if process.stdout is not None:
            await process.stdout.aclose()
        if process.stderr is not None:
            await process.stderr.aclose()


async def test_official_client_on_the_delayed_feed_path() -> None:
    """`feed="127.0.0.1:PORT/delayed"` reaches `/delayed/options`; a quote subscription there is
    refused with a status (logged by the client), and the connection stays up."""
    async with run_mock("massive", market=BUSY) as mock:
        port = await mock.serve_tcp()

        async def wait_then_close() -> None:
            while not mock.history or not mock.history[0].stats.frames_sent >= 3:
                await trio.sleep(0.01)
            await mock.history[0].close(1000)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_then_close)
            _, error = await in_thread(
                lambda: run_official(port, [f"Q.{SPY_CALL}"], lambda _: False, feed_path="/delayed")
            )
        assert error is None
        assert mock.history[0].info.path == "/delayed/options"
        assert mock.history[0].session.subscriptions["Q"] == {}  # type: ignore[attr-defined]
