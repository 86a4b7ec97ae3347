"""Theta Terminal rules for `feedlab verify` (`mocks.verify`): each message one JSON object whose
`header.type` is known and whose shape matches `mocks.theta.wire` exactly; header statuses,
REQ_RESPONSE answers and STATE values from the known sets; every REQ_RESPONSE answering an id the
client used; data only for requested streams (streams are the terminal's, so they outlive a
connection); per contract, trade `sequence` increasing (a signed 32-bit value that wraps) and
(date, ms_of_day) never going back.
"""

from __future__ import annotations

from typing import Any

import msgspec

from mocks.recording import Record
from mocks.theta import wire
from mocks.verify import Problem, decode_json, problems_at, struct_differences

SCHEMAS: dict[str, type[msgspec.Struct]] = {
    "STATUS": wire.StatusMessage,
    "REQ_RESPONSE": wire.ReqResponseMessage,
    "STATE": wire.StateMessage,
    "QUOTE": wire.QuoteMessage,
    "TRADE": wire.TradeMessage,
    "OHLC": wire.OhlcMessage,
    "MARKET_VALUE": wire.MarketValueMessage,
}
UPSTREAM_STATES = frozenset({"CONNECTED", "DISCONNECTED", "UNVERIFIED", "ERROR"})  # [doc/re]
RESPONSES = frozenset({"SUBSCRIBED", "ERROR", "MAX_STREAMS_REACHED", "INVALID_PERMS"})  # [doc]
STATES = frozenset({"START", "STOP"})  # [re]
DAY_MS = 86_400_000
IN_FLIGHT = 1.0  # seconds after a stream stops during which its data may still arrive
BODY = {"QUOTE": "quote", "TRADE": "trade", "OHLC": "ohlc", "MARKET_VALUE": "market_value"}


def _contract_key(contract: Any) -> tuple[Any, ...] | None:
    if not isinstance(contract, dict):
        return None
    if contract.get("security_type") == wire.OPTION:
        return (
            wire.OPTION,
            contract.get("root"),
            contract.get("expiration"),
            contract.get("strike"),
            contract.get("right"),
        )
    return (contract.get("security_type"), contract.get("root"))


def _request_key(request: dict[str, Any]) -> tuple[str, tuple[Any, ...] | None] | None:
    """(req_type, contract key; None for the full trade stream) of a STREAM request."""
    if request.get("msg_type") == "STREAM_BULK":
        return ("TRADE", None)
    contract = request.get("contract")
    if not isinstance(contract, dict):
        return None
    sec_type = request.get("sec_type")
    key = _contract_key({"security_type": sec_type, **contract})
    return (str(request.get("req_type")), key)


class Checker:
    def __init__(self) -> None:
        self.request_ids: set[int] = set()
        self.streams: set[tuple[str, tuple[Any, ...] | None]] = set()
        self.stopped: dict[tuple[str, tuple[Any, ...] | None], float] = {}  # key -> when
        self.now = 0.0
        self.last_sequence: dict[tuple[Any, ...], int] = {}
        self.last_time: dict[tuple[Any, ...], tuple[int, int]] = {}

    def opened(self, record: Record) -> list[Problem]:
        return []

    def closed(self, record: Record) -> list[Problem]:
        return []

    def client(self, record: Record) -> list[Problem]:
        request, _ = decode_json(record.data)
        if not isinstance(request, dict):
            return []
        req_id = wire.as_int(request.get("id"))
        if req_id is not None:
            self.request_ids.add(req_id)
        if request.get("msg_type") == "STOP":
            for stream in self.streams:
                self.stopped[stream] = record.t
            self.streams.clear()
            return []
        key = _request_key(request)
        if key is not None:
            if wire.as_bool(request.get("add", True)) is False:
                self.streams.discard(key)
                self.stopped[key] = record.t
            else:
                self.streams.add(key)
        return []

    def server(self, record: Record) -> list[Problem]:
        self.now = record.t
        message, error = decode_json(record.data)
        if error is not None:
            return problems_at(record, [error])
        if not isinstance(message, dict):
            return problems_at(record, ["a message must be a JSON object"])
        header = message.get("header")
        kind = header.get("type") if isinstance(header, dict) else None
        schema = SCHEMAS.get(kind) if isinstance(kind, str) else None
        if schema is None:
            return problems_at(record, [f"unknown message type header.type={kind!r}"])
        assert isinstance(header, dict)
        out = struct_differences(message, schema, kind or "")
        status = header.get("status")
        if status not in UPSTREAM_STATES:
            out.append(f"{kind}: unknown header.status {status!r}")
        if kind == "REQ_RESPONSE":
            if header.get("response") not in RESPONSES:
                out.append(f"REQ_RESPONSE: unknown response {header.get('response')!r}")
            req_id = header.get("req_id")
            if isinstance(req_id, int) and req_id not in self.request_ids and req_id != -1:
                out.append(f"REQ_RESPONSE for req_id {req_id}, which the client never sent")
        elif kind == "STATE":
            if header.get("state") not in STATES:
                out.append(f"STATE: unknown state {header.get('state')!r}")
        elif kind in BODY:
            out += self._data(kind, message)
        return problems_at(record, out)

    def _data(self, kind: str, message: dict[str, Any]) -> list[str]:
        out: list[str] = []
        key = _contract_key(message.get("contract"))
        body = message.get(BODY[kind])
        if key is None or not isinstance(body, dict):
            return out
        if not self._requested(kind, key):
            out.append(f"{kind} for {key} without a stream that asked for it")
        date, ms = body.get("date"), body.get("ms_of_day")
        if isinstance(date, int) and isinstance(ms, int):
            if not 0 <= ms < DAY_MS:
                out.append(f"{kind}: ms_of_day {ms} is outside the day")
            if not (19_900_101 <= date <= 21_001_231 and 1 <= date // 100 % 100 <= 12):
                out.append(f"{kind}: date {date} is not a YYYYMMDD date")
            last = self.last_time.get((kind, *key))
            if last is not None and (date, ms) < last:
                out.append(f"{kind} {key}: time went back from {last} to {(date, ms)}")
            self.last_time[(kind, *key)] = (date, ms)
        sequence = body.get("sequence")
        if kind == "TRADE" and key[0] != wire.INDEX and isinstance(sequence, int):
            last_seq = self.last_sequence.get(key)
            if last_seq is not None and not 0 < (sequence - last_seq) % 2**32 < 2**31:
                out.append(f"TRADE {key}: sequence went from {last_seq} to {sequence}")
            self.last_sequence[key] = sequence
        return out

    def _requested(self, kind: str, key: tuple[Any, ...]) -> bool:
        """Is a stream open (or just stopped: its data may be in flight) that sends this?"""
        candidates: list[tuple[str, tuple[Any, ...] | None]] = []
        if key[0] == wire.OPTION and kind in ("QUOTE", "TRADE", "OHLC"):
            candidates.append(("TRADE", None))
        candidates.append(("TRADE", key) if kind == "OHLC" else (kind, key))
        for candidate in candidates:
            if candidate in self.streams:
                return True
            stopped = self.stopped.get(candidate)
            if stopped is not None and self.now - stopped <= IN_FLIGHT:
                return True
        return False
