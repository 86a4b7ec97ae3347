"""`feedlab watch amberdata STREAM:INSTRUMENT[@EXCHANGE]... [--url URL] [--api-key KEY]`:
print what the client delivers, one JSON line per event or an aligned table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from typing import Any, TextIO

import orjson

from clients.amberdata.client import LIVE_URL, AmberdataClient
from clients.amberdata.events import (
    Event,
    MarketEvent,
    Ohlcv,
    OpenInterest,
    OrderBookSnapshot,
    Ticker,
    Trade,
)
from clients.common import Connector, Dropped, GapNotice, Rejected, tcp_connector


def event_as_dict(event: Event) -> dict[str, Any]:
    return {"type": type(event).__name__, **dataclasses.asdict(event)}


def event_as_json(event: Event) -> str:
    return orjson.dumps(event_as_dict(event), default=str).decode()


_TABLE_HEADER = f"{'time (UTC)':<12} {'event':<9} {'symbol':<24} {'sequence':>12}  detail"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def event_as_row(event: Event) -> str:
    """One compact line: time, kind, instrument, sequence, the numbers a trader looks at."""
    if isinstance(event, MarketEvent):
        when = dt.datetime.fromtimestamp(event.timestamp_ns / 1e9, dt.UTC).strftime("%H:%M:%S.%f")
        sequence = "" if event.sequence is None else str(event.sequence)
        if isinstance(event, OrderBookSnapshot | Ticker):
            detail = (
                f"{_num(event.best_bid_amount)} x {_num(event.best_bid_price)} / "
                f"{_num(event.best_ask_price)} x {_num(event.best_ask_amount)}  "
                f"mark {_num(event.mark_price)} iv {_num(event.mark_iv)}"
            )
        elif isinstance(event, Trade):
            side = {True: "buy", False: "sell", None: "?"}[event.is_buy_side]
            detail = f"{side} {_num(event.size)} @ {_num(event.price)}  id {event.trade_id}"
        elif isinstance(event, Ohlcv):
            detail = (
                f"o {_num(event.open)} h {_num(event.high)} l {_num(event.low)} "
                f"c {_num(event.close)} v {_num(event.volume)}"
            )
        else:
            detail = f"open interest {_num(event.value)}"
        kind = {
            OrderBookSnapshot: "snapshot",
            Ticker: "ticker",
            Trade: "trade",
            Ohlcv: "ohlcv",
            OpenInterest: "oi",
        }[type(event)]
        return f"{when[:12]:<12} {kind:<9} {event.symbol:<24} {sequence:>12}  {detail}"
    if isinstance(event, GapNotice):
        detail = f"{event.start:.3f}..{event.end:.3f} {event.reason}: {' '.join(event.contracts)}"
        return f"{'':<12} {'gap':<9} {'':<24} {'':>12}  {detail}"
    if isinstance(event, Rejected):
        return f"{'':<12} {'rejected':<9} {event.subscription:<24} {'':>12}  {event.reason}"
    if isinstance(event, Dropped):
        return f"{'':<12} {'dropped':<9} {'':<24} {'':>12}  {event.reason}: {event.frame}"
    return f"{'':<12} {'status':<9} {'':<24} {'':>12}  {event.status} {event.message}"


async def watch(
    subscriptions: list[str],
    *,
    url: str = LIVE_URL,
    api_key: str | None = None,
    out: TextIO = sys.stdout,
    table: bool = False,
    connector: Connector = tcp_connector,
) -> None:
    """Print every event, one JSON line each (or an aligned table), until cancelled."""
    async with AmberdataClient(api_key, url, connector=connector) as client:
        await client.subscribe(*subscriptions)
        if table:
            print(_TABLE_HEADER, file=out, flush=True)
        async for event in client:
            print(event_as_row(event) if table else event_as_json(event), file=out, flush=True)
