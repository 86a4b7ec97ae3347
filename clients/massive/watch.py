"""`feedlab watch massive SUBSCRIPTION...`: print Massive events as JSON lines or a table."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
from decimal import Decimal
from typing import TextIO

import orjson

from clients.common import Connector, Dropped, GapNotice, Rejected, tcp_connector
from clients.massive.client import MassiveClient
from clients.massive.wire import LIVE_URL, Aggregate, Event, MinuteAggregate, Quote, Trade


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def event_json(event: Event) -> bytes:
    """One JSON object per event, `type` first; contracts as {root, expiration, right, strike}."""
    body = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    return orjson.dumps({"type": type(event).__name__, **body}, default=_json_default)


_TABLE_HEADER = f"{'time (UTC)':<12}  {'ev':<6}  {'symbol':<22}  {'sequence':>12}  detail"


def event_row(event: Event) -> str:
    """One compact, aligned line per event for a terminal."""
    if isinstance(event, Quote | Trade | Aggregate):
        stamp = dt.datetime.fromtimestamp(event.timestamp_ns / 1e9, dt.UTC).strftime("%H:%M:%S.%f")
        sequence = "" if event.sequence is None else str(event.sequence)
        if isinstance(event, Quote):
            kind = "Q"
            detail = (
                f"{event.bid_size} x {event.bid_price:g}  /  {event.ask_price:g} x {event.ask_size}"
            )
        elif isinstance(event, Trade):
            kind = "T"
            detail = (
                f"{event.size} @ {event.price:g}  x{event.exchange}  c={list(event.conditions)}"
            )
        else:
            kind = "AM" if isinstance(event, MinuteAggregate) else "A"
            detail = (
                f"o {event.open:g} h {event.high:g} l {event.low:g} c {event.close:g} "
                f"v {event.volume:g}"
            )
        late = "  (late)" if event.late else ""
        return f"{stamp[:12]:<12}  {kind:<6}  {event.symbol:<22}  {sequence:>12}  {detail}{late}"
    if isinstance(event, GapNotice):
        detail = (
            f"{len(event.contracts)} contract(s) {event.start:.3f}..{event.end:.3f} {event.reason}"
        )
        return f"{'':<12}  {'gap':<6}  {'':<22}  {'':>12}  {detail}"
    if isinstance(event, Rejected):
        return f"{'':<12}  {'reject':<6}  {event.subscription:<22}  {'':>12}  {event.reason}"
    if isinstance(event, Dropped):
        return f"{'':<12}  {'drop':<6}  {'':<22}  {'':>12}  {event.reason}: {event.frame}"
    return f"{'':<12}  {'status':<6}  {event.status:<22}  {'':>12}  {event.message}"


async def watch(
    subscriptions: list[str],
    *,
    url: str = LIVE_URL,
    api_key: str | None = None,
    out: TextIO = sys.stdout,
    table: bool = False,
    connector: Connector = tcp_connector,
) -> None:
    """Print Massive events as they arrive until cancelled: JSON lines, or a table."""
    async with MassiveClient(api_key, url, connector=connector) as client:
        await client.subscribe(*subscriptions)
        if table:
            out.write(_TABLE_HEADER + "\n")
        async for event in client:
            out.write(event_row(event) + "\n" if table else event_json(event).decode() + "\n")
            out.flush()
