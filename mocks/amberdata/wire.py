"""Amberdata's wire format as the mock reads and writes it: JSON-RPC 2.0 requests, replies in both
error shapes (Amberdata's documented `{"description", "code"}` and JSON-RPC's standard
`{"code", "message"}`), subscription pushes, and the five options streams' result objects with
their fields in the documented order.

Clients have their own parser (DESIGN.md, principle 6); nothing here is shared with them.
"""

from __future__ import annotations

from typing import Any

import msgspec

# -- what clients send -----------------------------------------------------------------------------

RequestId = int | float | str | None


class Request(msgspec.Struct):
    """One JSON-RPC call. `jsonrpc` may be missing (some production clients omit it); an absent
    `id` makes it a notification. Unknown members are ignored."""

    method: str
    id: RequestId | msgspec.UnsetType = msgspec.UNSET
    jsonrpc: str | msgspec.UnsetType = msgspec.UNSET
    params: list[Any] | dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


def decode_json(message: str | bytes) -> Any:
    """The message as plain JSON values; raises msgspec.DecodeError when it is not JSON,
    including invalid UTF-8 and nesting too deep to decode (both found by fuzzing)."""
    try:
        return msgspec.json.decode(message)
    except (UnicodeDecodeError, RecursionError) as exc:
        raise msgspec.DecodeError(f"not JSON: {type(exc).__name__}") from None


def to_request(obj: Any) -> Request:
    """Raises msgspec.ValidationError when `obj` is not a JSON-RPC request object."""
    return msgspec.convert(obj, Request)


def usable_id(obj: Any) -> RequestId:
    """The id to echo in an error about a malformed request: its own when it is a valid id."""
    if isinstance(obj, dict):
        value = obj.get("id")
        if value is None or (isinstance(value, int | float | str) and not isinstance(value, bool)):
            return value
    return None


# -- replies ---------------------------------------------------------------------------------------


class VendorError(msgspec.Struct):
    """Amberdata's documented error object: `description` instead of `message`, HTTP-like codes."""

    description: str
    code: int


class StandardError(msgspec.Struct):
    """JSON-RPC 2.0's error object, used where Amberdata documents nothing."""

    code: int
    message: str


class ResultReply(msgspec.Struct):
    jsonrpc: str
    id: RequestId
    result: str | bool


class ErrorReply(msgspec.Struct):
    jsonrpc: str
    id: RequestId
    error: VendorError | StandardError


Reply = ResultReply | ErrorReply


def result_reply(request_id: RequestId, result: str | bool) -> ResultReply:
    return ResultReply("2.0", request_id, result)


def vendor_error(request_id: RequestId, description: str, code: int = 400) -> ErrorReply:
    return ErrorReply("2.0", request_id, VendorError(description, code))


def standard_error(request_id: RequestId, error: tuple[int, str]) -> ErrorReply:
    return ErrorReply("2.0", request_id, StandardError(*error))


# -- stream results --------------------------------------------------------------------------------


class Stats(msgspec.Struct):
    volume_usd: float | None
    volume: float | None
    price_change: float | None
    low: float | None
    high: float | None


class Greeks(msgspec.Struct):
    """In the documented sample's order."""

    vega: float | None
    theta: float | None
    rho: float | None
    gamma: float | None
    delta: float | None


Level = tuple[float, float]  # [price, amount]


class OrderSnapshot(msgspec.Struct):
    """`market:options:order:snapshots`, fields in the vendor doc's sample order."""

    exchange: str
    instrument: str
    timestamp: int
    exchangeTimestamp: int | None
    exchangeTimestampNanoseconds: int | None
    underlyingPrice: float | None
    underlyingIndex: str | None
    stats: Stats | None
    state: str | None
    openInterest: float | None
    minPrice: float | None
    maxPrice: float | None
    markPrice: float | None
    markIv: float | None
    lastPrice: float | None
    interestRate: float | None
    indexPrice: float | None
    greeks: Greeks | None
    estimatedDeliveryPrice: float | None
    bids: list[Level]
    bidIv: float | None
    bestBidPrice: float | None
    bestBidAmount: float | None
    bestAskPrice: float | None
    bestAskAmount: float | None
    asks: list[Level]
    askIv: float | None
    sequence: int | None
    metadata: None


class Ticker(msgspec.Struct):
    """`market:options:tickers`: the snapshot's market fields without the book arrays, plus the
    ticker's own (bid, ask, mid, last, volumes, settlementPrice)."""

    exchange: str
    instrument: str
    timestamp: int
    exchangeTimestamp: int | None
    exchangeTimestampNanoseconds: int | None
    bid: float | None
    ask: float | None
    mid: float | None
    last: float | None
    bidVolume: float | None
    askVolume: float | None
    baseVolume: float | None
    quoteVolume: float | None
    settlementPrice: float | None
    underlyingPrice: float | None
    underlyingIndex: str | None
    stats: Stats | None
    state: str | None
    openInterest: float | None
    minPrice: float | None
    maxPrice: float | None
    markPrice: float | None
    markIv: float | None
    lastPrice: float | None
    interestRate: float | None
    indexPrice: float | None
    greeks: Greeks | None
    estimatedDeliveryPrice: float | None
    bidIv: float | None
    bestBidPrice: float | None
    bestBidAmount: float | None
    bestAskPrice: float | None
    bestAskAmount: float | None
    askIv: float | None
    sequence: int | None
    metadata: None


class Trade(msgspec.Struct):
    """`market:options:trades`."""

    instrument: str
    exchange: str
    exchangeTimestamp: int
    exchangeTimestampNanoseconds: int
    isBuySide: bool
    price: float
    size: float
    tradeId: str
    tradeSequence: int
    tickDirection: int
    markPrice: float | None
    iv: float | None
    indexPrice: float | None


class Ohlcv(msgspec.Struct):
    """`market:options:ohlcv`: one bar per minute."""

    exchange: str
    instrument: str
    timestamp: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class OpenInterest(msgspec.Struct):
    """`market:options:open_interests`."""

    instrument: str
    exchange: str
    timestamp: int
    value: float


StreamResult = OrderSnapshot | Ticker | Trade | Ohlcv | OpenInterest


class PushParams(msgspec.Struct):
    subscription: str
    result: StreamResult


class Push(msgspec.Struct):
    """A subscription's data: a JSON-RPC notification from the server, no `id`."""

    jsonrpc: str
    method: str
    params: PushParams


def push(subscription: str, result: StreamResult) -> Push:
    return Push("2.0", "subscription", PushParams(subscription, result))


_encoder = msgspec.json.Encoder()


def encode(message: Reply | Push | list[Reply]) -> str:
    return _encoder.encode(message).decode()
