"""Ground truth: what the mock knows it did to each connection (DESIGN.md, principle 8).

Per connection: the market events routed to it (its subscriptions, from the moment it asked),
what left in frames, and what a message fault dropped, duplicated, held back or corrupted on
purpose. The scenario report compares this with what the client delivered. With
`keep_events=False` (a long-running `feedlab serve`) only the counts are kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from mocks.sim.events import Event

FATES = ("routed", "sent", "dropped", "duplicated", "reordered", "corrupted")


@dataclass
class ConnectionRecord:
    number: int  # 1-based, in the order the mock accepted connections
    opened_at: float
    closed_at: float | None = None
    close_code: int | None = None  # sent by the server (1006: dropped without a close frame)
    client_close_code: int | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FATES, 0))
    events: dict[str, list[Event]] = field(default_factory=lambda: {f: [] for f in FATES})


class Ledger:
    def __init__(self, keep_events: bool = True) -> None:
        self.keep_events = keep_events
        self.connections: dict[int, ConnectionRecord] = {}

    def opened(self, number: int, now: float) -> ConnectionRecord:
        record = ConnectionRecord(number, now)
        self.connections[number] = record
        return record

    def closed(self, number: int, now: float, code: int | None, client_code: int | None) -> None:
        record = self.connections[number]
        record.closed_at, record.close_code, record.client_close_code = now, code, client_code

    def note(self, number: int, fate: str, events: Iterable[Event]) -> None:
        record = self.connections.get(number)
        if record is None:
            return
        if self.keep_events:
            bucket = record.events[fate]
            before = len(bucket)
            bucket.extend(events)
            record.counts[fate] += len(bucket) - before
        else:
            record.counts[fate] += sum(1 for _ in events)

    def total(self, fate: str) -> int:
        return sum(r.counts[fate] for r in self.connections.values())
