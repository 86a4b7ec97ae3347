"""The seam between a vendor's sans-I/O protocol core and the I/O that runs it.

A vendor mock is two plain objects, no sockets and no awaits (DESIGN.md, principle 1):

* a `VendorServer`, one per served vendor: accounts, plans, the connections it knows, state that
  outlives one connection (Theta's terminal-wide streams, Massive's per-key connection count);
* a `Session`, one per WebSocket connection, made by `VendorServer.open`: frames in, actions out.

`mocks.server` runs them over TCP or in-memory streams; tests drive them directly.
All times (`now`) are seconds of market time since the run started (`MarketClock`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mocks.sim.events import Event


@dataclass(slots=True)
class Send:
    """Send one WebSocket message. `events` are the market events rendered into it (the ledger).

    Not frozen, though nothing changes one once made: a frozen dataclass's `__init__` costs
    three times as much, and Theta makes one per message."""

    data: str | bytes
    events: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class Close:
    """Close the WebSocket with a close frame, then drop the connection."""

    code: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Abort:
    """Drop the TCP connection without a close frame: the client sees 1006."""


Action = Send | Close | Abort


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What the server knows of a connection when the WebSocket upgrade arrives."""

    conn_id: int
    path: str  # without the query string
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased
    remote: str = ""
    opened_at: float = 0.0


class Session(Protocol):
    """One client connection's protocol state. It never blocks and never reads a clock."""

    def opened(self, now: float) -> list[Action]:
        """Right after the WebSocket upgrade (Massive speaks first here)."""

    def received(self, message: str | bytes, now: float) -> list[Action]:
        """One message from the client."""

    def publish(self, events: Sequence[Event], now: float) -> list[Action]:
        """Market events for this connection's subscriptions, in time order."""

    def tick(self, now: float) -> list[Action]:
        """Timers are due, or the server has work for this connection (an eviction, a flush)."""

    def next_deadline(self) -> float | None:
        """When `tick` wants to be called next; None for never."""

    def overflowed(self, now: float) -> list[Action]:
        """The outbound buffer is full: the client reads slower than the feed (slow consumer)."""

    def closed(self, now: float) -> None:
        """The connection is gone, whoever closed it. Release subscriptions and accounts here."""


class VendorServer(Protocol):
    """A vendor's server-wide state. Makes one `Session` per accepted connection."""

    vendor: str

    def accepts_path(self, path: str) -> bool:
        """False answers the upgrade with HTTP 404, as a wrong URL does on the real service."""

    def open(self, info: ConnectionInfo, now: float) -> Session:
        """A client connected; the WebSocket is accepted."""
