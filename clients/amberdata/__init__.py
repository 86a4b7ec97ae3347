"""A Trio client for Amberdata's (web3api) options WebSocket: JSON-RPC 2.0 subscriptions to
Deribit-style order-book snapshots, tickers, trades, OHLCV bars and open interest.

Live by default (`wss://ws.amberdata.com/options`, key in the `x-api-key` header); tests pass
the mock's connector. Wire facts: `shared/protocols/amberdata.md`. This package parses and
builds the wire format on its own (DESIGN.md, principle 6).
"""

from clients.amberdata.client import API_KEY_ENV, LIVE_URL, VENDOR, AmberdataClient, ClientStats
from clients.amberdata.events import (
    DayStats,
    Event,
    Greeks,
    MarketEvent,
    Ohlcv,
    OpenInterest,
    OptionMarket,
    OrderBookSnapshot,
    PriceLevel,
    Ticker,
    Trade,
    decode_result,
)
from clients.amberdata.instruments import (
    DEFAULT_EXCHANGE,
    OHLCV,
    OPEN_INTERESTS,
    ORDER_SNAPSHOTS,
    STREAMS,
    TICKERS,
    TRADES,
    OptionContract,
    Subscription,
    format_instrument,
    parse_instrument,
    parse_subscription,
    plan_limits,
)
from clients.amberdata.invented import STALE_AFTER
from clients.amberdata.watch import event_as_dict, event_as_json, event_as_row, watch

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_EXCHANGE",
    "LIVE_URL",
    "OHLCV",
    "OPEN_INTERESTS",
    "ORDER_SNAPSHOTS",
    "STALE_AFTER",
    "STREAMS",
    "TICKERS",
    "TRADES",
    "VENDOR",
    "AmberdataClient",
    "ClientStats",
    "DayStats",
    "Event",
    "Greeks",
    "MarketEvent",
    "Ohlcv",
    "OpenInterest",
    "OptionContract",
    "OptionMarket",
    "OrderBookSnapshot",
    "PriceLevel",
    "Subscription",
    "Ticker",
    "Trade",
    "decode_result",
    "event_as_dict",
    "event_as_json",
    "event_as_row",
    "format_instrument",
    "parse_instrument",
    "parse_subscription",
    "plan_limits",
    "watch",
]
