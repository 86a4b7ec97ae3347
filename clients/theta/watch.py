"""`feedlab watch theta REQUEST... [--url URL]`: the client's events as JSON lines or a table."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, TextIO

import orjson

from clients.common import Connector, Dropped, GapNotice, Status, tcp_connector
from clients.theta.client import ThetaClient
from clients.theta.wire import (
    Contract,
    Event,
    IndexPrice,
    Ohlc,
    OptionMarketValue,
    Quote,
    Trade,
)


def event_fields(event: Event) -> dict[str, Any]:
    """An event as flat JSON-ready fields; an option's contract as root, expiration (YYYYMMDD),
    strike (dollars) and right."""
    out: dict[str, Any] = {"type": type(event).__name__}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if isinstance(value, Contract):
            if value.expiration is not None:
                out["root"], out["right"] = value.root, value.right
                out["expiration"] = int(f"{value.expiration:%Y%m%d}")
                out["strike"] = value.strike
            continue
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _table_row(event: Event) -> str:
    if isinstance(event, Quote):
        what = f"{event.bid_size:>5} x {event.bid:<10g} {event.ask:>10g} x {event.ask_size:<5}"
    elif isinstance(event, Trade):
        what = f"{event.size:>5} @ {event.price:<10g} seq {event.sequence}"
    elif isinstance(event, IndexPrice):
        what = f"{event.price:g}"
    elif isinstance(event, OptionMarketValue):
        what = f"mv {event.market_price:g} ({event.market_bid} / {event.market_ask})"
    elif isinstance(event, Ohlc):
        what = f"o {event.open:g} h {event.high:g} l {event.low:g} c {event.close:g}"
    elif isinstance(event, GapNotice):
        what = f"gap {event.end - event.start:.3f}s ({event.reason}): {', '.join(event.contracts)}"
    elif isinstance(event, Status):
        what = f"{event.status} {event.message}"
    elif isinstance(event, Dropped):
        what = f"{event.reason}: {event.frame}"
    else:
        what = f"{event.subscription}: {event.reason}"
    ts = getattr(event, "timestamp_ns", None)
    when = "" if ts is None else dt.datetime.fromtimestamp(ts / 1e9, dt.UTC).strftime("%H:%M:%S.%f")
    return f"{when:<15} {type(event).__name__:<17} {getattr(event, 'symbol', ''):<26} {what}"


async def watch(
    subscriptions: list[str],
    *,
    url: str,
    api_key: str | None,
    out: TextIO,
    table: bool,
    connector: Connector = tcp_connector,
) -> None:
    """Print every event as one JSON line (or an aligned table row) until cancelled."""
    async with ThetaClient(api_key, url, connector=connector) as client:
        await client.subscribe(*subscriptions)
        async for event in client:
            if table:
                out.write(_table_row(event) + "\n")
            else:
                out.write(orjson.dumps(event_fields(event)).decode() + "\n")
            out.flush()
