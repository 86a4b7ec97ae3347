"""Amberdata rules for `feedlab verify` (`mocks.verify`): JSON-RPC 2.0 throughout; every reply
answering a request id the client sent, in one of the two known error shapes; every push naming a
subscription id the server gave this connection, its result matching the stream's Struct in
`mocks.amberdata.wire` exactly; per subscription, `sequence` / `tradeSequence` strictly increasing
and timestamps never going back. The refusal of a bad key is a plain text frame [doc].
"""

from __future__ import annotations

from typing import Any

import msgspec

from mocks.amberdata import wire
from mocks.amberdata.replay import Conversation
from mocks.amberdata.session import OHLCV, OPEN_INTERESTS, SNAPSHOTS, TICKERS, TRADES
from mocks.recording import Record
from mocks.verify import Problem, decode_json, plausible_ms, problems_at, struct_differences

RESULTS: dict[str, type[msgspec.Struct]] = {
    SNAPSHOTS: wire.OrderSnapshot,
    TICKERS: wire.Ticker,
    TRADES: wire.Trade,
    OHLCV: wire.Ohlcv,
    OPEN_INTERESTS: wire.OpenInterest,
}
REFUSAL_PREFIX = "invalid api key '"  # [doc]


class _Push(msgspec.Struct):
    """A push's envelope; the result is checked against its stream's Struct separately."""

    jsonrpc: str
    method: str
    params: dict[str, Any]


class _PushParams(msgspec.Struct):
    subscription: str
    result: dict[str, Any]


class _Connection:
    def __init__(self) -> None:
        self.pending: set[str] = set()  # request ids (as JSON) awaiting a reply
        self.last: dict[str, tuple[int | None, int | None]] = {}  # sub id -> (sequence, time)


def _ids(message: Any) -> list[Any]:
    items = message if isinstance(message, list) else [message]
    return [item["id"] for item in items if isinstance(item, dict) and "id" in item]


class Checker:
    def __init__(self) -> None:
        self.conns: dict[int, _Connection] = {}
        self.conversation = Conversation()

    def opened(self, record: Record) -> list[Problem]:
        self.conns[record.conn] = _Connection()
        return []

    def closed(self, record: Record) -> list[Problem]:
        return []

    def client(self, record: Record) -> list[Problem]:
        self.conversation.client(record.conn, record.data)
        message, _ = decode_json(record.data)
        self.conns[record.conn].pending.update(repr(i) for i in _ids(message))
        return []

    def server(self, record: Record) -> list[Problem]:
        conn = self.conns[record.conn]
        message, error = decode_json(record.data)
        if error is not None:
            text = record.data if isinstance(record.data, str) else ""
            if text.startswith(REFUSAL_PREFIX):
                return []
            return problems_at(record, [error])
        self.conversation.server(record.conn, record.data)
        if isinstance(message, list):
            out: list[str] = []
            for i, reply in enumerate(message):
                out += self._reply(conn, reply, f"[{i}]")
            return problems_at(record, out)
        if isinstance(message, dict) and "method" in message and "id" not in message:
            return problems_at(record, self._push(record, conn, message))
        return problems_at(record, self._reply(conn, message, "reply"))

    def _reply(self, conn: _Connection, reply: Any, where: str) -> list[str]:
        if not isinstance(reply, dict):
            return [f"{where}: expected a JSON-RPC object"]
        schema: type[msgspec.Struct] = wire.ErrorReply if "error" in reply else wire.ResultReply
        out = struct_differences(reply, schema, where)
        if reply.get("jsonrpc") != "2.0":
            out.append(f"{where}: jsonrpc is {reply.get('jsonrpc')!r}, not '2.0'")
        key = repr(reply.get("id"))
        if reply.get("id") is not None:
            if key not in conn.pending:
                out.append(f"{where}: reply to id {reply.get('id')!r}, which no request used")
            conn.pending.discard(key)
        return out

    def _push(self, record: Record, conn: _Connection, push: dict[str, Any]) -> list[str]:
        out = struct_differences(push, _Push, "push")
        if push.get("jsonrpc") != "2.0":
            out.append(f"push: jsonrpc is {push.get('jsonrpc')!r}, not '2.0'")
        if push.get("method") != "subscription":
            out.append(f"push: unknown method {push.get('method')!r}")
            return out
        params = push.get("params")
        out += struct_differences(params, _PushParams, "push.params")
        if not isinstance(params, dict) or not isinstance(params.get("result"), dict):
            return out
        sub_id, result = str(params.get("subscription")), params["result"]
        stream = self.conversation.streams.get((record.conn, sub_id))
        if stream is None:
            out.append(f"push for subscription {sub_id!r}, which the server never returned")
            stream = self.conversation.stream(record.conn, sub_id, result)
        schema = RESULTS.get(stream)
        if schema is None:
            out.append("push: a result of no known stream")
            return out
        out += struct_differences(result, schema, f"{stream} result")
        sequence = result.get("tradeSequence" if stream == TRADES else "sequence")
        moment = result.get("exchangeTimestamp" if stream == TRADES else "timestamp")
        if moment is not None and not plausible_ms(moment):
            out.append(f"{stream}: timestamp {moment!r} is not a plausible Unix time in ms")
        last_sequence, last_time = conn.last.get(sub_id, (None, None))
        if (
            isinstance(sequence, int)
            and isinstance(last_sequence, int)
            and sequence <= last_sequence
        ):
            out.append(f"{stream} {sub_id}: sequence went from {last_sequence} to {sequence}")
        if isinstance(moment, int) and isinstance(last_time, int) and moment < last_time:
            out.append(f"{stream} {sub_id}: timestamp went back from {last_time} to {moment}")
        conn.last[sub_id] = (
            sequence if isinstance(sequence, int) else last_sequence,
            moment if isinstance(moment, int) else last_time,
        )
        return out
