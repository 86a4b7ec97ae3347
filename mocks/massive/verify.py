"""Massive's rules for `feedlab verify` (`mocks.verify`): every server frame a JSON array of event
objects matching `mocks.massive.wire` exactly; statuses from the known set; the conversation in
order (`connected` first, no data before `auth_success`, data only for what was subscribed); per
contract and channel, `q` strictly increasing and `t` never going back; aggregate windows one
second (`A`) or one minute (`AM`) long.
"""

from __future__ import annotations

from typing import Any

import msgspec

from mocks.massive import wire
from mocks.recording import Record
from mocks.verify import Problem, decode_json, plausible_ms, problems_at, struct_differences

KNOWN_STATUSES = frozenset(
    {
        "connected",
        "auth_success",
        "auth_failed",
        "auth_timeout",
        "success",
        "error",
        "max_connections",
        "slow_consumer",
        "force_disconnect",
    }
)
SCHEMAS: dict[str, type[msgspec.Struct]] = {
    "status": wire.StatusEvent,
    wire.QUOTES: wire.QuoteEvent,
    wire.TRADES: wire.TradeEvent,
    wire.SECOND_AGGREGATES: wire.AggregateEvent,
    wire.MINUTE_AGGREGATES: wire.AggregateEvent,
}
IN_FLIGHT = 1.0  # seconds after an unsubscribe during which its data may still arrive
WINDOW_MS = {wire.SECOND_AGGREGATES: 1_000, wire.MINUTE_AGGREGATES: 60_000}


class _Connection:
    def __init__(self) -> None:
        self.messages = 0
        self.authenticated = False
        self.subscribed: dict[str, set[str]] = {ch: set() for ch in wire.CHANNELS}
        self.last: dict[tuple[str, str], tuple[int, int]] = {}  # (ev, sym) -> (q, t)
        self.unsubscribed: dict[tuple[str, str], float] = {}  # (ev, sym) -> when
        self.now = 0.0


class Checker:
    def __init__(self) -> None:
        self.conns: dict[int, _Connection] = {}

    def opened(self, record: Record) -> list[Problem]:
        self.conns[record.conn] = _Connection()
        return []

    def closed(self, record: Record) -> list[Problem]:
        return []

    def client(self, record: Record) -> list[Problem]:
        conn = self.conns[record.conn]
        request, _ = decode_json(record.data)
        if not isinstance(request, dict) or request.get("action") not in (
            "subscribe",
            "unsubscribe",
        ):
            return []
        params = request.get("params")
        for token in str(params).split(","):
            channel, _, symbol = token.strip().partition(".")
            if channel in conn.subscribed and symbol:
                if request["action"] == "subscribe":
                    conn.subscribed[channel].add(symbol)
                else:
                    conn.subscribed[channel].discard(symbol)
                    conn.unsubscribed[channel, symbol] = record.t
        return []

    def server(self, record: Record) -> list[Problem]:
        conn = self.conns[record.conn]
        conn.messages += 1
        conn.now = record.t
        frame, error = decode_json(record.data)
        if error is not None:
            return problems_at(record, [error])
        if not isinstance(frame, list):
            return problems_at(
                record, [f"a frame must be a JSON array, got {type(frame).__name__}"]
            )
        out: list[str] = []
        for i, event in enumerate(frame):
            out += self._event(conn, i, event, first=conn.messages == 1 and i == 0)
        return problems_at(record, out)

    def _event(self, conn: _Connection, i: int, event: Any, *, first: bool) -> list[str]:
        where = f"[{i}]"
        if not isinstance(event, dict) or "ev" not in event:
            return [f"{where}: an event must be an object with 'ev'"]
        ev = event["ev"]
        schema = SCHEMAS.get(ev) if isinstance(ev, str) else None
        if schema is None:
            return [f"{where}: unknown event type ev={ev!r}"]
        out = struct_differences(event, schema, f"{where} {ev}")
        if ev == "status":
            status = event.get("status")
            if status not in KNOWN_STATUSES:
                out.append(f"{where}: unknown status {status!r}: {event.get('message')!r}")
            if first and status != "connected":
                out.append(f"{where}: the first message is {status!r}, not 'connected'")
            if status == "auth_success":
                conn.authenticated = True
            return out
        if first:
            out.append(f"{where}: data before the 'connected' status")
        if not conn.authenticated:
            out.append(f"{where}: {ev} data before auth_success")
        sym = event.get("sym")
        if not isinstance(sym, str):
            return out
        wanted = conn.subscribed.get(ev, set())
        stopped = conn.unsubscribed.get((ev, sym), conn.unsubscribed.get((ev, "*")))
        in_flight = stopped is not None and conn.now - stopped <= IN_FLIGHT
        if "*" not in wanted and sym not in wanted and not in_flight:
            out.append(f"{where}: {ev} data for {sym} without a subscription to {ev}.{sym}")
        if ev in WINDOW_MS:
            start, end = event.get("s"), event.get("e")
            if isinstance(start, int) and isinstance(end, int) and end - start != WINDOW_MS[ev]:
                out.append(f"{where}: {ev} window {start}..{end} is not {WINDOW_MS[ev]} ms long")
            return out
        q, t = event.get("q"), event.get("t")
        if not isinstance(q, int) or not isinstance(t, int):
            return out
        if not plausible_ms(t):
            out.append(f"{where}: {ev} {sym}: t={t} is not a plausible Unix time in ms")
        last = conn.last.get((ev, sym))
        if last is not None:
            if q <= last[0]:
                out.append(f"{where}: {ev} {sym}: sequence q went from {last[0]} to {q}")
            if t < last[1]:
                out.append(f"{where}: {ev} {sym}: timestamp t went back from {last[1]} to {t}")
        conn.last[ev, sym] = (q, t)
        return out
