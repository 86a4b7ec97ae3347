"""Our Theta client against the Theta mock, in virtual time, under the faults of issue 4: upstream
outage, heartbeat stop, a second client evicting ours, 1006 every few minutes, a reused request id,
MAX_STREAMS_REACHED / INVALID_PERMS, and a daylight-saving switch day.

Every run is checked against two ground truths: the frames the mock sent (nothing delivered
twice, nothing sent left undelivered outside a gap notice) and the option quotes and trades the
market generated for our contracts (each one delivered, or inside a gap notice's window).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec

import orjson
import trio
import trio_websocket

from clients.common import Backoff, GapNotice, Rejected, Status
from clients.theta import (
    Event,
    IndexPrice,
    MarketData,
    Ohlc,
    OptionMarketValue,
    Quote,
    ThetaClient,
    Trade,
)
from mocks.server import Connection
from mocks.session import Send
from mocks.sim import events as sim
from mocks.sim.clock import EASTERN
from mocks.sim.market import MarketSettings
from mocks.testing import MockService, run_mock
from mocks.theta import ThetaTerminal

P = ParamSpec("P")

CALL = "SPY:20250321:575:C"
PUT = "QQQ:20250321:495:P"
STREAMS = (
    f"option:quote:{CALL}",
    f"option:trade:{CALL}",
    f"option:market_value:{CALL}",
    f"option:quote:{PUT}",
    "index:price:SPX",
    "stock:quote:AAPL",
)

Identity = tuple[Any, ...]


def bounded(test: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
    """Fail instead of hanging when a wait never ends (an hour of virtual time passes fast)."""

    @functools.wraps(test)
    async def run(*args: P.args, **kwargs: P.kwargs) -> None:
        with trio.fail_after(3600):
            await test(*args, **kwargs)

    return run


def wire_symbol(contract: dict[str, Any]) -> str:
    """The test's own spelling of a wire contract in the client's symbol syntax."""
    if contract["security_type"] != "OPTION":
        return str(contract["root"])
    dollars, milli = divmod(int(contract["strike"]), 1000)
    strike = f"{dollars}" if milli == 0 else f"{dollars}.{milli:03d}".rstrip("0")
    return f"{contract['root']}:{contract['expiration']}:{strike}:{contract['right']}"


def wire_identity(message: dict[str, Any]) -> Identity:
    kind = message["header"]["type"]
    body = message[{"QUOTE": "quote", "TRADE": "trade", "OHLC": "ohlc"}.get(kind, "market_value")]
    head = (kind, wire_symbol(message["contract"]), body["date"], body["ms_of_day"])
    if kind == "QUOTE":
        return (*head, body["bid"], body["ask"], body["bid_size"], body["ask_size"])
    if kind == "TRADE":
        return (*head, body["price"], body["size"], body["sequence"])
    if kind == "OHLC":
        return (*head, body["open"], body["high"], body["low"], body["close"], body["count"])
    return (*head, body["market_price"], body.get("market_bid"), body.get("market_ask"))


def event_identity(event: MarketData) -> Identity:
    head = (event.symbol, event.date, event.ms_of_day)
    if isinstance(event, Quote):
        return ("QUOTE", *head, event.bid, event.ask, event.bid_size, event.ask_size)
    if isinstance(event, Trade):
        return ("TRADE", *head, event.price, event.size, event.sequence)
    if isinstance(event, IndexPrice):
        return ("TRADE", *head, event.price, 0, 0)
    if isinstance(event, Ohlc):
        return ("OHLC", *head, event.open, event.high, event.low, event.close, event.count)
    assert isinstance(event, OptionMarketValue)
    return ("MARKET_VALUE", *head, event.market_price, event.market_bid, event.market_ask)


@dataclass
class Run:
    mock: MockService
    client: ThetaClient
    sent: list[tuple[int, float, Identity]] = field(default_factory=list)  # conn, unix s, identity
    requests: list[dict[str, Any]] = field(default_factory=list)  # as the client sent them
    market: list[sim.OptionQuote | sim.OptionTrade] = field(default_factory=list)
    received: list[Event] = field(default_factory=list)

    @property
    def terminal(self) -> ThetaTerminal:
        terminal = self.mock.server
        assert isinstance(terminal, ThetaTerminal)
        return terminal

    def unix_now(self) -> float:
        return self.mock.market.now_ns() / 1e9

    def tap(self, conn: Connection, action: Send) -> None:
        message = orjson.loads(action.data)
        if message["header"]["type"] in ("QUOTE", "TRADE", "OHLC", "MARKET_VALUE"):
            self.sent.append((conn.conn_id, self.unix_now(), wire_identity(message)))

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.received if isinstance(e, kind)]

    def data(self) -> list[MarketData]:
        kinds = (Quote, Trade, OptionMarketValue, IndexPrice, Ohlc)
        return [e for e in self.received if isinstance(e, kinds)]

    def statuses(self) -> list[str]:
        return [e.status for e in self.of(Status)]

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await trio.sleep(0.1)

    async def consume(self) -> None:
        async for event in self.client:
            self.received.append(event)

    async def watch_market(self) -> None:
        async for batch in self.mock.market.subscribe(buffer=10_000):
            self.market.extend(e for e in batch if isinstance(e, sim.OptionQuote | sim.OptionTrade))

    def stream_ids(self) -> list[int]:
        return [r["id"] for r in self.requests if "id" in r]


@asynccontextmanager
async def running(
    *,
    market: MarketSettings | None = None,
    first_request_id: int | None = None,
    **mock_options: Any,
) -> AsyncIterator[Run]:
    async with run_mock("theta", market=market or MarketSettings(seed=9), **mock_options) as mock:
        requests: list[dict[str, Any]] = []

        @asynccontextmanager
        async def recording(
            url: str, headers: list[tuple[bytes, bytes]]
        ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
            """The mock's connector, recording what the client sends (strict JSON)."""
            async with mock.connector(url, headers) as ws:
                send = ws.send_message

                async def send_message(message: str | bytes) -> None:
                    requests.append(json.loads(message))
                    await send(message)

                ws.send_message = send_message  # type: ignore[method-assign]
                yield ws

        client = ThetaClient(
            url=mock.url,
            connector=recording,
            clock=lambda: mock.market.now_ns() / 1e9,
            backoff=Backoff(rng=random.Random(3)),
            first_request_id=first_request_id,
        )
        run = Run(mock, client, requests=requests)
        mock.mock_server.taps.append(run.tap)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run.watch_market)
            async with client:
                nursery.start_soon(run.consume)
                yield run
            nursery.cancel_scope.cancel()


def check_delivery(run: Run) -> None:
    """No duplicate delivered; no loss outside a gap notice, by the mock's frames and by the
    market's own quotes and trades for the option streams we hold."""
    delivered = [event_identity(e) for e in run.data()]
    assert len(delivered) == len(set(delivered)), "a duplicate was delivered"
    gaps = run.of(GapNotice)

    def covered(moment: float, symbol: str) -> bool:
        return any(
            g.start <= moment <= g.end and (symbol in g.contracts or "*" in g.contracts)
            for g in gaps
        )

    got = set(delivered)
    ours = {s.split(":", 2)[2] for s in run.client.subscriptions}
    for _, at, identity in run.sent:
        if identity[1] in ours:  # not what another program's streams brought it
            assert identity in got or covered(at, identity[1]), identity
    streams = {
        (kind, s.split(":", 2)[2])
        for s in run.client.subscriptions
        for kind in ("QUOTE", "TRADE")
        if s.startswith(f"option:{kind.lower()}:")
    }
    # The market's ground truth: every quote and trade of our contracts, by time and price.
    got_times = {(i[0], i[1], i[2], i[3]) for i in delivered}
    last_delivery = max(e.timestamp_ns for e in run.data()) / 1e9
    for event in run.market:
        symbol = f"{event.contract.root}:{event.contract.expiration:%Y%m%d}:"
        symbol += f"{event.contract.strike_milli // 1000}:{event.contract.right}"
        kind = "QUOTE" if isinstance(event, sim.OptionQuote) else "TRADE"
        if (kind, symbol) not in streams or event.ts_ns / 1e9 > last_delivery:
            continue
        seconds, ns = divmod(event.ts_ns, 1_000_000_000)  # exact: a float would round
        local = dt.datetime.fromtimestamp(seconds, EASTERN)
        date = local.year * 10000 + local.month * 100 + local.day
        ms = (local.hour * 3600 + local.minute * 60 + local.second) * 1000 + ns // 1_000_000
        assert (kind, symbol, date, ms) in got_times or covered(event.ts_ns / 1e9, symbol), event


async def subscribed(run: Run, *streams: str) -> None:
    await run.client.subscribe(*streams)
    await run.until(lambda: run.client.stats.confirmed >= len(streams))


async def resumed(run: Run, after: float, symbols: tuple[str, ...] = (CALL, PUT, "SPX")) -> None:
    """Until every symbol has delivered data stamped after `after` (Unix s)."""
    await run.until(
        lambda: all(
            any(e.symbol == s and e.timestamp_ns / 1e9 > after for e in run.data()) for s in symbols
        )
    )


# ---------------------------------------------------------------------------------------------


@bounded
async def test_every_stream_kind_is_delivered_once_with_exact_timestamps(
    autojump_clock: Any,
) -> None:
    async with running() as run:
        await subscribed(run, *STREAMS)
        await trio.sleep(60)
        sent_at = {identity: at for _, at, identity in run.sent}
    kinds = {type(e).__name__ for e in run.data()}
    assert kinds == {"OptionQuote", "OptionTrade", "OptionMarketValue", "IndexPrice", "Ohlc",
                     "StockQuote"}  # fmt: skip
    for event in run.data():  # stamped when the market made it; sent within the batch interval
        at = sent_at[event_identity(event)]
        assert 0 <= at - event.timestamp_ns / 1e9 <= 1.0, event
    check_delivery(run)
    assert run.client.stats.frames_dropped_unparseable == 0
    assert run.client.stats.rejected == 0 and not run.of(GapNotice)
    assert run.requests[-1] == {"msg_type": "STOP"}
    assert run.terminal.streams == {}  # orderly close: nothing left at the terminal


@bounded
async def test_dst_switch_day_timestamps_follow_eastern_daylight_time(
    autojump_clock: Any,
) -> None:
    """Sunday 2025-03-09: at 02:00 EST clocks jump to 03:00 EDT. A client that hard-codes an
    offset is an hour off on one side of the switch; ours stays within the batch interval."""
    start = dt.datetime(2025, 3, 9, 1, 59, 30, tzinfo=EASTERN)
    async with running(market=MarketSettings(seed=4, start=start)) as run:
        await subscribed(run, f"option:quote:{CALL}", "index:price:SPX")
        await trio.sleep(60)
        sent_at = {identity: at for _, at, identity in run.sent}
    before = [e for e in run.data() if e.ms_of_day < 2 * 3_600_000]
    after = [e for e in run.data() if e.ms_of_day >= 3 * 3_600_000]
    assert before and after and len(before) + len(after) == len(run.data())
    for event in run.data():
        assert 0 <= sent_at[event_identity(event)] - event.timestamp_ns / 1e9 <= 1.0, event
    stamps = [e.timestamp_ns for e in run.data() if isinstance(e, IndexPrice)]
    assert stamps == sorted(stamps)
    switch = dt.datetime(2025, 3, 9, 7, 0, tzinfo=dt.UTC).timestamp() * 1e9
    assert max(e.timestamp_ns for e in before) < switch <= min(e.timestamp_ns for e in after)


@bounded
async def test_upstream_outage_status_gap_and_resumed_streams(autojump_clock: Any) -> None:
    async with running() as run:
        await subscribed(run, *STREAMS)
        await trio.sleep(30)
        lost_at = run.unix_now()
        run.terminal.upstream_outage(20.0)
        await run.until(lambda: "upstream_disconnected" in run.statuses())
        await run.until(lambda: bool(run.of(GapNotice)))
        back_at = lost_at + 20.0
        await resumed(run, back_at)
        await trio.sleep(10)
    (gap,) = run.of(GapNotice)
    assert gap.start <= lost_at and gap.end >= back_at and gap.reason == "upstream outage"
    assert set(gap.contracts) == {CALL, PUT, "SPX", "AAPL"}
    assert run.statuses().count("upstream_connected") == 1
    assert len(run.mock.history) == 1  # the WebSocket stayed open
    assert run.terminal.lost_streams == []  # our ids were unique and increasing
    check_delivery(run)


@bounded
async def test_reused_request_id_loses_the_stream_at_the_terminal_but_not_for_us(
    autojump_clock: Any,
) -> None:
    """Another program used ids up to 10**6 on this terminal: our ids (lower) are not fresh, so
    the terminal does not restore our streams after an outage. The client notices that data does
    not resume and subscribes again with new ids; the loss stays inside the gap notice."""
    async with running() as run:
        await run.mock.wait_connections(1)
        high = ThetaClient.peek_request_id() + 10**6
        async with run.mock.connector(run.mock.url, []) as other:  # evicts ours for a moment
            for req_id in (high - 1, high):
                request = {"msg_type": "STREAM", "sec_type": "INDEX", "req_type": "TRADE",
                           "add": True, "id": req_id, "contract": {"root": "VIX"}}  # fmt: skip
                await other.send_message(json.dumps(request))
            await other.send_message(json.dumps({"msg_type": "STOP"}))
            await other.get_message()
        await run.until(lambda: len(run.mock.history) == 3)  # ours is back
        await subscribed(run, f"option:quote:{CALL}", f"option:quote:{PUT}")
        await trio.sleep(20)
        lost_at = run.unix_now()
        run.terminal.upstream_outage(10.0)
        await run.until(lambda: bool(run.of(GapNotice)))
        await resumed(run, lost_at + 10.0, (CALL, PUT))
        await trio.sleep(10)
    assert len(run.terminal.lost_streams) == 2  # the terminal's trap, as documented
    assert run.client.stats.resubscribed_after_outage == 2
    ids = run.stream_ids()
    assert ids == sorted(set(ids)) and max(ids) < high  # never reused, never decreasing
    (gap,) = run.of(GapNotice)
    assert gap.start <= lost_at and gap.end >= lost_at + 10.0
    check_delivery(run)


@bounded
async def test_first_request_id_above_a_previous_run_keeps_the_terminal_restoring(
    autojump_clock: Any,
) -> None:
    previous_run = ThetaClient.peek_request_id() + 10**6
    async with running(first_request_id=previous_run + 1) as run:
        await run.mock.wait_connections(1)
        async with run.mock.connector(run.mock.url, []) as other:
            await other.send_message(f'{{"msg_type":"STOP","id":{previous_run}}}')
        await run.until(lambda: len(run.mock.history) == 3)
        await subscribed(run, f"option:quote:{CALL}")
        run.terminal.upstream_outage(5.0)
        await run.until(lambda: bool(run.of(GapNotice)))
    assert run.terminal.lost_streams == []
    assert run.client.stats.resubscribed_after_outage == 0
    assert min(run.stream_ids()) > previous_run


@bounded
async def test_heartbeat_stop_reconnects_and_restores_every_stream(autojump_clock: Any) -> None:
    async with running() as run:
        await subscribed(run, *STREAMS)
        await trio.sleep(30)
        stopped_at = run.unix_now()
        run.terminal.heartbeat_stop(5.0)
        await run.until(lambda: len(run.mock.history) == 2)
        assert run.unix_now() - stopped_at <= 3.0 + 1.0 + 0.5  # watchdog + heartbeat + backoff
        await run.until(lambda: bool(run.of(GapNotice)))
        await resumed(run, run.unix_now())
        await trio.sleep(10)
        # Streams survived at the terminal; we subscribed each again with new ids once per socket.
        assert len(run.terminal.streams) == len(STREAMS)
    assert run.client.stats.heartbeat_timeouts >= 1
    (gap, *_) = run.of(GapNotice)
    # Data kept coming without heartbeats, so the window starts late: at the last data we got.
    assert stopped_at <= gap.start < gap.end and gap.reason == "reconnect"
    adds = [r for r in run.requests if r.get("add") is True]
    assert len(adds) == len(STREAMS) * len(run.mock.history)
    check_delivery(run)


@bounded
async def test_second_client_evicts_ours_and_we_come_back(autojump_clock: Any) -> None:
    async with running() as run:
        await subscribed(run, *STREAMS)
        await trio.sleep(20)
        evicted_at = run.unix_now()
        async with run.mock.connector(run.mock.url, []) as other:
            # The terminal is theirs now, until our client reconnects and takes it back (which
            # may come before their first heartbeat).
            with trio.move_on_after(2), contextlib.suppress(trio_websocket.ConnectionClosed):
                await other.get_message()
        await run.until(lambda: bool(run.of(GapNotice)))
        await resumed(run, run.unix_now())
        await trio.sleep(10)
    assert run.mock.history[0].close_code == 1000
    assert "evicted" in run.statuses() and run.client.stats.evictions == 1
    (gap,) = run.of(GapNotice)
    assert gap.start <= evicted_at
    check_delivery(run)


@bounded
async def test_1006_every_few_minutes(autojump_clock: Any) -> None:
    async with running() as run:
        await subscribed(run, *STREAMS)
        for n in range(1, 4):
            await trio.sleep(random.Random(n).uniform(300, 900))  # the field report: 5-15 min
            await run.mock.history[-1].abort()
            await run.until(lambda n=n: len(run.of(GapNotice)) == n)  # type: ignore[misc]
            await resumed(run, run.unix_now())
        await trio.sleep(10)
        assert len(run.terminal.streams) == len(STREAMS)
    assert run.client.stats.reconnects == 3 and len(run.mock.history) == 4
    ids = run.stream_ids()
    assert ids == sorted(set(ids))
    check_delivery(run)


@bounded
async def test_max_streams_reached_and_invalid_perms_are_rejected_events(
    autojump_clock: Any,
) -> None:
    async with running(quote_stream_limit=2, index_plan="free") as run:
        await run.client.subscribe(
            f"option:quote:{CALL}", f"option:quote:{PUT}", "option:quote:SPY:20250321:580:C",
            "index:price:SPX",
        )  # fmt: skip
        await run.until(lambda: len(run.of(Rejected)) == 2)
        await trio.sleep(10)
        assert run.client.subscriptions == (f"option:quote:{CALL}", f"option:quote:{PUT}")
        await run.mock.history[-1].abort()  # the refused ones are not asked for again
        await run.until(lambda: bool(run.of(GapNotice)))
    assert {(r.subscription, r.reason) for r in run.of(Rejected)} == {
        ("option:quote:SPY:20250321:580:C", "MAX_STREAMS_REACHED"),
        ("index:price:SPX", "INVALID_PERMS"),
    }
    assert len(run.of(Rejected)) == 2
    assert {e.symbol for e in run.data()} == {CALL, PUT}
    check_delivery(run)
