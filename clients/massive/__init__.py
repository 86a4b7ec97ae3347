"""Massive (ex Polygon.io) options WebSocket client on Trio.

Typed quotes, trades and per-second / per-minute aggregates with the contract parsed from Massive's
OCC-style ticker, kept alive through closes, aborts, half-open sockets, evictions and slow-consumer
kills, with exact resubscription and a gap notice after every reconnect so the application can
backfill. `wire` reads the format, `client` runs the connections, `watch` prints, and `invented`
holds what no source documents.

    async with MassiveClient() as client:          # key from MASSIVE_API_KEY
        await client.subscribe("Q.O:SPY251219C00650000", "T.*")
        async for event in client:
            ...
"""

from clients.massive.client import MassiveClient, MassiveStats
from clients.massive.watch import event_json, event_row, watch
from clients.massive.wire import (
    API_KEY_ENV,
    DELAYED_URL,
    LIVE_URL,
    QUOTE_CONTRACTS_PER_CONNECTION,
    Aggregate,
    Event,
    MarketEvent,
    MinuteAggregate,
    OptionContract,
    Quote,
    SecondAggregate,
    Trade,
    decode_quote,
    decode_trade,
    format_ticker,
    parse_ticker,
)

__all__ = [
    "API_KEY_ENV",
    "DELAYED_URL",
    "LIVE_URL",
    "QUOTE_CONTRACTS_PER_CONNECTION",
    "Aggregate",
    "Event",
    "MarketEvent",
    "MassiveClient",
    "MassiveStats",
    "MinuteAggregate",
    "OptionContract",
    "Quote",
    "SecondAggregate",
    "Trade",
    "decode_quote",
    "decode_trade",
    "event_json",
    "event_row",
    "format_ticker",
    "parse_ticker",
    "watch",
]
