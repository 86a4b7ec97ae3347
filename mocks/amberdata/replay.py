"""Replaying Amberdata recordings (`mocks.replay`): subscription pushes are the data; JSON-RPC
replies come from the session core.

A recorded push names the recorded connection's subscription id. Its stream is known from the
recorded conversation (the `subscribe` request and the id its reply returned; failing that, from
the result's fields), so each push is keyed by (stream, instrument, exchange). A replay client
gets the push when it holds a subscription with the same key, with the recorded id replaced by
the id the core gave this client — the rest of the frame is byte for byte as recorded.
"""

from __future__ import annotations

from typing import Any

import msgspec

from mocks.amberdata.session import (
    OHLCV,
    OPEN_INTERESTS,
    SNAPSHOTS,
    TICKERS,
    TRADES,
    AmberdataSession,
)
from mocks.recording import Record
from mocks.replay import DataFrame
from mocks.session import Session


class _Params(msgspec.Struct):
    subscription: str = ""
    result: dict[str, Any] = msgspec.field(default_factory=dict)


class _Push(msgspec.Struct):
    method: str = ""
    params: _Params | None = None


class _MethodOnly(msgspec.Struct):
    method: str = ""


_push = msgspec.json.Decoder(_Push)
_method = msgspec.json.Decoder(_MethodOnly)
_json = msgspec.json.Decoder()


def stream_of_result(result: dict[str, Any]) -> str:
    """The stream a result object belongs to, from its fields (when no conversation says)."""
    if "bids" in result or "asks" in result:
        return SNAPSHOTS
    if "tradeId" in result or "tradeSequence" in result:
        return TRADES
    if "mid" in result or "bidVolume" in result:
        return TICKERS
    if "open" in result and "close" in result:
        return OHLCV
    if "value" in result:
        return OPEN_INTERESTS
    return ""


def _calls(message: str | bytes) -> list[dict[str, Any]]:
    """The JSON objects of a message (a JSON-RPC batch is a list of them)."""
    try:
        obj = _json.decode(message)
    except msgspec.DecodeError:
        return []
    items = obj if isinstance(obj, list) else [obj]
    return [item for item in items if isinstance(item, dict)]


class Conversation:
    """Subscription ids -> streams, from the requests and replies of each recorded connection
    (shared by replay and verify)."""

    def __init__(self) -> None:
        self._asked: dict[tuple[int, str], str] = {}  # (conn, request id as JSON) -> stream
        self.streams: dict[tuple[int, str], str] = {}  # (conn, subscription id) -> stream

    def client(self, conn: int, message: str | bytes) -> None:
        for call in _calls(message):
            params = call.get("params")
            if (
                call.get("method") == "subscribe"
                and "id" in call
                and isinstance(params, list)
                and params
                and isinstance(params[0], str)
            ):
                self._asked[conn, repr(call["id"])] = params[0]

    def server(self, conn: int, message: str | bytes) -> None:
        for reply in _calls(message):
            if "id" in reply and isinstance(reply.get("result"), str):
                stream = self._asked.pop((conn, repr(reply["id"])), None)
                if stream is not None:
                    self.streams[conn, reply["result"]] = stream

    def stream(self, conn: int, subscription: str, result: dict[str, Any]) -> str:
        return self.streams.get((conn, subscription)) or stream_of_result(result)


def push_of(message: str | bytes) -> _Params | None:
    try:
        push = _push.decode(message)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if push.method != "subscription" or push.params is None:
        return None
    return push.params


class _Indexer:
    def __init__(self) -> None:
        self.conversation = Conversation()

    def client(self, record: Record) -> None:
        self.conversation.client(record.conn, record.data)

    def server(self, record: Record) -> DataFrame | None:
        params = push_of(record.data)
        if params is None:
            self.conversation.server(record.conn, record.data)
            return None
        result = params.result
        stream = self.conversation.stream(record.conn, params.subscription, result)
        key = (stream, str(result.get("instrument", "")), str(result.get("exchange", "")).lower())
        events = 1 if stream == TRADES else 0
        return DataFrame(
            record.t, record.conn, record.line, record.data, (key,), events, params.subscription
        )


class AmberdataReplay:
    def indexer(self) -> _Indexer:
        return _Indexer()

    def is_subscribe(self, message: str | bytes) -> bool:
        return any(call.get("method") == "subscribe" for call in _calls(message))

    def is_data(self, message: str | bytes) -> bool:
        try:
            return _method.decode(message).method == "subscription"
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False

    def subscribed(self, session: Session) -> bool:
        assert isinstance(session, AmberdataSession)
        return bool(session.subscriptions)

    def identity(self, session: Session) -> str:
        assert isinstance(session, AmberdataSession)
        return session.key

    def select(self, session: Session, frame: DataFrame) -> str | bytes | None:
        assert isinstance(session, AmberdataSession)
        key = frame.keys[0]
        for sub in session.subscriptions.values():
            if (sub.stream, sub.instrument, sub.exchange) == key:
                old = frame.subscription
                if not old or old == sub.id:
                    return frame.data
                if isinstance(frame.data, str):
                    return frame.data.replace(old, sub.id, 1)
                return frame.data.replace(old.encode(), sub.id.encode(), 1)
        return None


RULES = AmberdataReplay()
