"""Ground truth: what the mock knows it did to each connection (DESIGN.md, principle 8).

Per connection: the market events routed to it (its subscriptions, from the moment it asked),
what left in frames, and what a message fault dropped, duplicated, held back or corrupted on
purpose. The scenario report compares this with what the client delivered. With
`keep_events=False` (a long-running `feedlab serve`) only the counts are kept, and with
`keep_closed` only that many finished connections' records (the totals still count them all).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
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
    def __init__(self, keep_events: bool = True, keep_closed: int | None = None) -> None:
        self.keep_events = keep_events
        self.keep_closed = keep_closed
        self.connections: dict[int, ConnectionRecord] = {}
        self._closed: deque[int] = deque()  # finished connections, oldest first
        self._forgotten = dict.fromkeys(FATES, 0)  # the counts of records no longer kept

    def opened(self, number: int, now: float) -> ConnectionRecord:
        # Counts only: no empty event lists per connection.
        record = (
            ConnectionRecord(number, now)
            if self.keep_events
            else ConnectionRecord(number, now, events={})
        )
        self.connections[number] = record
        return record

    def closed(self, number: int, now: float, code: int | None, client_code: int | None) -> None:
        record = self.connections[number]
        record.closed_at, record.close_code, record.client_close_code = now, code, client_code
        if self.keep_closed is None:
            return
        self._closed.append(number)
        while len(self._closed) > self.keep_closed:
            old = self.connections.pop(self._closed.popleft())
            for fate, count in old.counts.items():
                self._forgotten[fate] += count

    def note(self, number: int, fate: str, events: Sequence[Event]) -> None:
        record = self.connections.get(number)
        if record is None:
            return
        if self.keep_events:
            bucket = record.events.setdefault(fate, [])
            before = len(bucket)
            bucket.extend(events)
            record.counts[fate] += len(bucket) - before
        else:
            record.counts[fate] += len(events)

    def total(self, fate: str) -> int:
        return self._forgotten[fate] + sum(r.counts[fate] for r in self.connections.values())
