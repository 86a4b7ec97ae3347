"""What the three vendor clients share, none of it protocol code (DESIGN.md, principle 6):
reconnect backoff, per-contract sequence tracking, gap notices, status events and the connector
that opens a WebSocket (live TCP/TLS by default, in-memory streams under test).

What every client does with a frame it cannot read (the same in all three): it skips the frame,
or the one message of a batched frame, keeps reading, counts it in `stats.dropped` and delivers
a `Dropped` event saying why. Only the documented terminal conditions (a refused key, the limits,
`max_reconnects`) ever raise from a client's iterator or `async with`; a frame never does.
"""

from __future__ import annotations

import enum
import math
import random
import reprlib
import time
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import trio
import trio_websocket

# ---------------------------------------------------------------------------------------------
# Events every client delivers besides market data


# A gap notice that starts at the newest event received starts this much earlier (seconds):
# events do not always arrive in time order (exchanges' clocks, merged feeds, a held-back
# message), so one a little older may still have been on its way. Backfilling a second more
# costs little; a window that starts a millisecond late loses silently.
GAP_MARGIN = 1.0


@dataclass(frozen=True, slots=True)
class GapNotice:
    """Data for these contracts may be missing between `start` and `end` (Unix seconds).

    Emitted after every reconnect (and after a vendor-side outage) once the subscriptions are
    restored, so the application can backfill the window from a REST endpoint.
    """

    contracts: tuple[str, ...]  # in the vendor's own syntax, as the application subscribed
    start: float
    end: float
    reason: str


@dataclass(frozen=True, slots=True)
class Status:
    """Connection-level news the application may want to log or show: connected, reconnecting,
    an upstream outage. Never carries data and never needs an answer."""

    vendor: str
    status: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class Rejected:
    """The vendor refused part of what we asked for (a limit, a permission, a bad symbol)."""

    vendor: str
    subscription: str
    reason: str


@dataclass(frozen=True, slots=True)
class Dropped:
    """A frame from the server, or one message of a batched frame, that the client could not
    read and skipped: not JSON, not the vendor's shape, a field of the wrong type, a kind of
    message it does not know. Reading goes on with the next frame.

    It is delivered, not only counted, because the frame may have carried market data: the
    application decides whether to log it, alert or backfill, but the client never hides it.
    Data the client read and discarded on purpose (a duplicate, a push for a stream it no longer
    holds) is not `Dropped`; that is only counted in the client's `stats`.
    """

    vendor: str
    reason: str  # why it could not be read, e.g. "invalid JSON", "unknown event type 'XQ'"
    frame: str  # the start of what was dropped, printable: see `excerpt`


EXCERPT_CHARS = 200
_EXCERPT_REPR = reprlib.Repr()
_EXCERPT_REPR.maxlevel = 6
_EXCERPT_REPR.maxdict = _EXCERPT_REPR.maxlist = 20
_EXCERPT_REPR.maxstring = _EXCERPT_REPR.maxother = EXCERPT_CHARS
_EXCERPT_REPR.maxlong = 40


def excerpt(data: object) -> str:
    """The start of a dropped frame or message, safe to print and log: at most `EXCERPT_CHARS`
    characters; bytes and parsed JSON as Python writes them."""
    if isinstance(data, str):
        text = data[:EXCERPT_CHARS]
    elif isinstance(data, bytes | bytearray | memoryview):
        text = repr(bytes(data[:EXCERPT_CHARS]))
    else:  # parsed JSON: bounded in depth and length whatever the server sent
        text = _EXCERPT_REPR.repr(data)
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 3] + "..."


class ClientError(Exception):
    """A condition the client will not retry on its own."""


class AuthError(ClientError):
    """The vendor refused the API key: reconnecting with the same key cannot help."""


class LimitError(ClientError):
    """The request cannot fit the account's limits (contracts per connection, connections)."""


# ---------------------------------------------------------------------------------------------
# Reconnect backoff


class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog's "full jitter"), capped.

    The attempt counter resets once a connection has stayed up for `stable_after` seconds, so a
    feed that drops once a day reconnects fast, while a flapping one backs off.
    """

    def __init__(
        self,
        initial: float = 0.5,
        cap: float = 30.0,
        multiplier: float = 2.0,
        stable_after: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.initial, self.cap, self.multiplier = initial, cap, multiplier
        self.stable_after = stable_after
        self.attempt = 0
        self._rng = rng or random.Random()
        self._connected_at: float | None = None

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.initial * self.multiplier**self.attempt)
        self.attempt += 1
        return self._rng.uniform(0.0, ceiling)

    def connected(self, now: float) -> None:
        self._connected_at = now

    def disconnected(self, now: float) -> None:
        if self._connected_at is not None and now - self._connected_at >= self.stable_after:
            self.attempt = 0
        self._connected_at = None

    def reset(self) -> None:
        self.attempt = 0


# ---------------------------------------------------------------------------------------------
# Sequence tracking


class Verdict(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"  # seen before: drop it
    REGRESSION = "regression"  # lower than the highest seen and not seen: deliver, but flag
    GAP = "gap"  # consecutive mode only: numbers were skipped


class SequenceTracker:
    """Per-contract sequence numbers.

    Vendors document sequences as increasing and unique but not consecutive (Massive: "1, 2, 6,
    9"), so by default a jump is not loss. Duplicates are recognised by remembering a window of
    recent numbers per contract, which also tells a late (regressed) event from a repeat. Live
    feeds have reused numbers for different events, so a caller may pass a fingerprint (the
    event's timestamp, say): the same number with another fingerprint is a regression to
    deliver, not a duplicate to drop.
    """

    def __init__(self, consecutive: bool = False, window: int = 256) -> None:
        self.consecutive = consecutive
        self.window = window
        self._highest: dict[str, int] = {}
        self._recent: dict[str, dict[int, Hashable]] = {}
        self._order: dict[str, list[int]] = {}

    def observe(self, key: str, sequence: int, fingerprint: Hashable = None) -> Verdict:
        recent = self._recent.setdefault(key, {})
        if sequence in recent:
            if recent[sequence] == fingerprint:
                return Verdict.DUPLICATE
            recent[sequence] = fingerprint
            return Verdict.REGRESSION  # a reused number on another event: deliver, flag
        order = self._order.setdefault(key, [])
        recent[sequence] = fingerprint
        order.append(sequence)
        if len(order) > self.window:
            recent.pop(order.pop(0), None)
        highest = self._highest.get(key)
        if highest is None or sequence > highest:
            self._highest[key] = sequence
            if self.consecutive and highest is not None and sequence > highest + 1:
                return Verdict.GAP
            return Verdict.NEW
        return Verdict.REGRESSION

    def highest(self, key: str) -> int | None:
        return self._highest.get(key)


# ---------------------------------------------------------------------------------------------
# Opening WebSockets

Connector = Callable[
    [str, list[tuple[bytes, bytes]]],
    AbstractAsyncContextManager[trio_websocket.WebSocketConnection],
]
"""Opens a WebSocket to a URL with extra handshake headers. Tests pass an in-memory one."""


@asynccontextmanager
async def tcp_connector(
    url: str, headers: list[tuple[bytes, bytes]], *, connect_timeout: float = 10.0
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """The live connector: TCP, TLS for wss://, 1 MiB message limit like the vendors' clients.

    The deadline is ours, not only trio-websocket's: its `connect_timeout` (0.12) raises only
    once the server lets go of the socket, so a proxy that accepts for a dead server and never
    answers the upgrade would hold the client for as long as the proxy likes."""
    with trio.CancelScope(deadline=trio.current_time() + connect_timeout) as opening:
        async with trio_websocket.open_websocket_url(
            url, extra_headers=headers, max_message_size=1 << 20, connect_timeout=connect_timeout
        ) as ws:
            opening.deadline = math.inf
            yield ws
    if opening.cancelled_caught:
        raise trio_websocket.ConnectionTimeout()


def wall_clock() -> float:
    """Unix seconds. Clients take the clock as a parameter so virtual-time runs stay exact."""
    return time.time()
