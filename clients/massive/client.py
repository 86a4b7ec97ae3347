"""The Massive options client: connections, reconnects, resubscription, gap notices, keepalive.

One connection ("slot") carries everything except quote contracts beyond 1,000, which need more
slots when the account allows more connections. Each slot reconnects on its own with backoff.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import orjson
import trio
import trio_websocket
from wsproto.utilities import LocalProtocolError

from clients.common import (
    GAP_MARGIN,
    AuthError,
    Backoff,
    ClientError,
    Connector,
    Dropped,
    GapNotice,
    LimitError,
    Rejected,
    SequenceTracker,
    Status,
    Verdict,
    excerpt,
    tcp_connector,
    wall_clock,
)
from clients.massive.invented import (
    CLOSING_STATUSES,
    SUBSCRIPTIONS_PER_MESSAGE,
    UNNAMED_ERROR_REFUSES_OLDEST_PENDING,
)
from clients.massive.wire import (
    API_KEY_ENV,
    DECODERS,
    LIVE_URL,
    QUOTE_CONTRACTS_PER_CONNECTION,
    SUBSCRIPTION,
    VENDOR,
    Aggregate,
    Event,
    MarketEvent,
    check_subscription,
    contracts_of,
    is_quote_contract,
)


def _sequence_key(channel: str, event: MarketEvent) -> tuple[str, int]:
    """What duplicate detection keys on: `q` per channel and contract; for bars (no `q`), the
    window start, since Massive sends one bar per window and contract."""
    if isinstance(event, Aggregate):
        return f"{channel}:{event.symbol}", event.start_ns // 1_000_000
    assert event.sequence is not None
    return f"{channel}:{event.symbol}", event.sequence


@dataclass(slots=True)
class MassiveStats:
    reconnects: int = 0
    duplicates_dropped: int = 0
    regressions: int = 0
    dropped: int = 0  # `Dropped` events delivered: the sum of the next three
    frames_dropped_unparseable: int = 0  # whole frames: not JSON, not an array
    events_dropped_unparseable: int = 0  # one event of a batch: not an object, a bad field
    events_ignored_unknown: int = 0  # well-formed events of a kind this client does not know
    evictions: int = 0  # max_connections
    slow_consumer_kills: int = 0
    rejected: int = 0
    gap_notices: int = 0


_CONNECTING, _AUTHENTICATING, _READY = "connecting", "authenticating", "ready"
_TRANSPORT_ERRORS = (
    trio_websocket.HandshakeError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
    # What trio-websocket lets out of wsproto for a frame it cannot send in the connection's
    # state (python-trio/trio-websocket#175): the connection is over.
    LocalProtocolError,
)


@dataclass(eq=False)
class _Slot:
    """One connection the client keeps open: quote contracts beyond 1,000 need another slot."""

    index: int
    backoff: Backoff
    eviction_backoff: Backoff
    subscriptions: dict[str, None] = field(default_factory=dict)  # ordered set
    session: _Session | None = None  # set once authenticated and resubscribed
    lock: trio.Lock = field(default_factory=trio.Lock)  # resubscription vs. the app's changes
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    started: bool = False
    gap_since: float | None = None  # Unix s; set when an established connection is lost
    gap_reason: str = ""

    def quote_count(self) -> int:
        return sum(1 for s in self.subscriptions if is_quote_contract(s))


@dataclass(eq=False)
class _Session:
    """One WebSocket connection of a slot, from upgrade to loss."""

    slot: _Slot
    scope: trio.CancelScope
    ws: trio_websocket.WebSocketConnection | None = None
    nursery: trio.Nursery | None = None
    state: str = _CONNECTING
    deadline: float = 0.0  # trio time: handshake step must be done by then
    ready_at: float | None = None  # trio time
    # Unix s (the client's clock) when it became ready: lost before its first event, the
    # session leaves a gap from then (not from the loss, which may be a ping timeout later).
    ready_time: float | None = None
    loss: str | None = None
    kind: str = "lost"  # "evicted" backs off longer
    fatal: ClientError | None = None
    closing_status: str | None = None  # the server announced it is dropping us
    close_deadline: float | None = None
    pending: dict[str, None] = field(default_factory=dict)  # sent, not yet acknowledged
    restoring: set[str] | None = None  # resubscriptions a gap notice waits for
    restore_deadline: float | None = None
    last_alive: float = 0.0  # trio time of the last frame or pong
    waiting_since: float = 0.0
    last_event_time: float | None = None  # Unix s of the newest market event received
    pings: int = 0

    def lose(self, reason: str, kind: str | None = None) -> None:
        if self.loss is None:
            if self.closing_status is not None:
                reason = f"{self.closing_status}; {reason}"
            self.loss = reason
            if kind is not None:
                self.kind = kind
        self.scope.cancel()


def _describe_close(reason: trio_websocket.CloseReason | None) -> str:
    if reason is None:
        return "connection closed"
    return f"closed {reason.code} {reason.name}" + (f" ({reason.reason})" if reason.reason else "")


class MassiveClient:
    """Massive options feed: `async with MassiveClient() as c: await c.subscribe(...)`, then
    `async for event in c`.

    Settings beyond the common ones (clients.md): `max_connections`, the account's connection
    allowance (Massive: one per cluster unless support raises it); quote subscriptions are split
    over connections only within it. `eviction_backoff` is used after a `max_connections` status
    (default 5 s up to 5 min), so two sessions with one key do not evict each other in a loop.
    `ping_interval`/`ping_timeout` as Massive's Python client (20 s / 20 s); `stale_after`: a
    connection with neither a frame nor a pong for this long is replaced (None: off).

    A frame it cannot read (not JSON, not an array of events) or one event of a batch it cannot
    read (a wrong type, a missing field, an unknown `ev`) is skipped and reported as a `Dropped`
    event; the rest of the batch and the frames after it are delivered. Only a refused key
    (`AuthError`), `max_reconnects` (`ClientError`) and, from `subscribe`, `LimitError` raise.
    """

    def __init__(
        self,
        api_key: str | None = None,
        url: str = LIVE_URL,
        *,
        connector: Connector = tcp_connector,
        clock: Callable[[], float] = wall_clock,
        backoff: Backoff | None = None,
        max_reconnects: int | None = None,
        max_connections: int = 1,
        eviction_backoff: Backoff | None = None,
        ping_interval: float = 20.0,
        ping_timeout: float = 20.0,
        stale_after: float | None = 60.0,
        handshake_timeout: float = 10.0,
        ack_timeout: float = 10.0,
        close_timeout: float = 5.0,
        event_buffer: int = 100_000,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if not key:
            raise AuthError(f"no Massive API key: pass api_key or set {API_KEY_ENV}")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._api_key = key
        self._url = url
        self._connector = connector
        self._clock = clock
        self._backoff = backoff or Backoff()
        self._eviction_backoff = eviction_backoff or Backoff(
            initial=5.0, cap=300.0, stable_after=600.0, rng=None
        )
        self._max_reconnects = max_reconnects
        self.max_connections = max_connections
        self._ping_interval, self._ping_timeout = ping_interval, ping_timeout
        self._stale_after = stale_after
        self._handshake_timeout, self._ack_timeout = handshake_timeout, ack_timeout
        self._close_timeout = close_timeout
        self.stats = MassiveStats()
        self._sequences = SequenceTracker(window=64)  # T.* touches many contracts
        self._send_channel, self._receive_channel = trio.open_memory_channel[Event](event_buffer)
        self._slots: list[_Slot] = []
        self._where: dict[str, _Slot] = {}  # subscription -> its slot
        self._change_lock = trio.Lock()
        self._nursery_manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._fatal: ClientError | None = None
        self._fatal_raised = False
        self._slot(0)

    # -- public surface ------------------------------------------------------------------------

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """What the client keeps subscribed (and restores after every reconnect)."""
        return tuple(s for slot in self._slots for s in slot.subscriptions)

    async def __aenter__(self) -> Self:
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        for slot in self._slots:
            self._start(slot)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._closing = True
        try:
            # Massive has no goodbye message: a close frame with 1000 is the orderly end. Sent
            # even when the application is being cancelled, within `close_timeout`.
            with trio.move_on_after(self._close_timeout) as orderly:
                orderly.shield = True
                for slot in self._slots:
                    session = slot.session
                    if session is not None and session.ws is not None:
                        try:
                            await session.ws.aclose(1000)
                        except (trio_websocket.ConnectionClosed, *_TRANSPORT_ERRORS):
                            pass
        finally:
            for slot in self._slots:
                slot.scope.cancel()
            self._send_channel.close()
            assert self._nursery_manager is not None
            # The body's exception is not handed to the nursery, which would wrap it in a group.
            await self._nursery_manager.__aexit__(None, None, None)
        if exc is None and self._fatal is not None and not self._fatal_raised:
            self._fatal_raised = True
            raise self._fatal
        return False

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def subscribe(self, *subscriptions: str) -> None:
        """Subscribe in Massive's syntax. Raises LimitError, before anything is sent, for `Q.*`
        or for more quote contracts than 1,000 x `max_connections`."""
        wanted = list(dict.fromkeys(check_subscription(s) for s in subscriptions))
        if self._fatal is not None:
            raise self._fatal
        async with self._change_lock:
            wanted = [s for s in wanted if s not in self._where]
            quotes = sum(1 for s in wanted if is_quote_contract(s))
            capacity = QUOTE_CONTRACTS_PER_CONNECTION * self.max_connections
            held = sum(slot.quote_count() for slot in self._slots)
            if held + quotes > capacity:
                raise LimitError(
                    f"{held + quotes:,} quote contracts do not fit {self.max_connections} "
                    f"connection(s) of {QUOTE_CONTRACTS_PER_CONNECTION:,}; raise max_connections "
                    "if the account allows more connections"
                )
            plan: dict[_Slot, list[str]] = {}
            for subscription in wanted:
                slot = self._place(subscription, plan)
                plan.setdefault(slot, []).append(subscription)
                self._where[subscription] = slot
            for slot, added in plan.items():
                async with slot.lock:
                    slot.subscriptions.update(dict.fromkeys(added))
                    if slot.session is not None:
                        await self._send_request(slot.session, "subscribe", added)
                self._start(slot)

    async def unsubscribe(self, *subscriptions: str) -> None:
        for subscription in subscriptions:
            if SUBSCRIPTION.fullmatch(subscription.strip()) is None:
                raise ValueError(f"not a Massive options subscription: {subscription!r}")
        async with self._change_lock:
            plan: dict[_Slot, list[str]] = {}
            for subscription in dict.fromkeys(s.strip() for s in subscriptions):
                slot = self._where.pop(subscription, None)
                if slot is not None:
                    plan.setdefault(slot, []).append(subscription)
            for slot, removed in plan.items():
                async with slot.lock:
                    for subscription in removed:
                        slot.subscriptions.pop(subscription, None)
                    session = slot.session
                    if session is not None:
                        for subscription in removed:
                            session.pending.pop(subscription, None)
                        await self._send_request(session, "unsubscribe", removed)

    # -- slots and connections -----------------------------------------------------------------

    def _slot(self, index: int) -> _Slot:
        while len(self._slots) <= index:
            n = len(self._slots)
            slot = _Slot(
                n, self._derived(self._backoff, n), self._derived(self._eviction_backoff, n)
            )
            self._slots.append(slot)
        return self._slots[index]

    @staticmethod
    def _derived(backoff: Backoff, index: int) -> Backoff:
        """Slot 0 uses the caller's backoff; others a copy advanced by `index` draws, so that
        connections jitter apart while a seeded run stays reproducible."""
        if index == 0:
            return backoff
        derived = copy.deepcopy(backoff)
        for _ in range(index):
            derived.next_delay()
        derived.reset()
        return derived

    def _place(self, subscription: str, plan: dict[_Slot, list[str]]) -> _Slot:
        """Non-quote subscriptions live on the first connection; quote contracts go to the first
        connection with room (the caller checked the total)."""
        if not is_quote_contract(subscription):
            return self._slots[0]
        for index in range(self.max_connections):
            slot = self._slot(index)
            planned = sum(1 for s in plan.get(slot, []) if is_quote_contract(s))
            if slot.quote_count() + planned < QUOTE_CONTRACTS_PER_CONNECTION:
                return slot
        raise LimitError("no connection has room for another quote contract")

    def _start(self, slot: _Slot) -> None:
        if self._nursery is not None and not slot.started and not self._closing:
            slot.started = True
            self._nursery.start_soon(self._run_slot, slot)

    def _fail(self, error: ClientError) -> None:
        if self._fatal is None:
            self._fatal = error
        for slot in self._slots:
            slot.scope.cancel()
        self._send_channel.close()

    async def _events(self) -> AsyncIterator[Event]:
        while True:
            try:
                item = await self._receive_channel.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                if self._fatal is not None:
                    self._fatal_raised = True
                    raise self._fatal from None
                return
            yield item

    async def _emit(self, item: Event) -> None:
        try:
            await self._send_channel.send(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # closing or failed: nobody will read it

    async def _run_slot(self, slot: _Slot) -> None:
        with slot.scope:
            attempts = 0  # reconnects since the last stable connection
            while True:
                session = await self._connect_once(slot)
                if session.fatal is not None:
                    self._fail(session.fatal)
                    return
                if self._closing:
                    return
                now = trio.current_time()
                stable = (
                    session.ready_at is not None
                    and now - session.ready_at >= slot.backoff.stable_after
                )
                slot.backoff.disconnected(now)
                slot.eviction_backoff.disconnected(now)
                if session.ready_at is not None and slot.gap_since is None and slot.subscriptions:
                    last = session.last_event_time
                    slot.gap_since = last - GAP_MARGIN if last is not None else session.ready_time
                    slot.gap_reason = session.loss or "connection lost"
                attempts = 1 if stable else attempts + 1
                if self._max_reconnects is not None and attempts > self._max_reconnects:
                    self._fail(
                        ClientError(
                            f"Massive connection {slot.index} lost {attempts} times in a row "
                            f"(max_reconnects={self._max_reconnects}); last: {session.loss}"
                        )
                    )
                    return
                evicted = session.kind == "evicted"
                delay = (slot.eviction_backoff if evicted else slot.backoff).next_delay()
                await self._emit(
                    Status(
                        VENDOR,
                        "reconnecting",
                        f"connection {slot.index}: {session.loss}; retrying in {delay:.2f} s",
                    )
                )
                await trio.sleep(delay)
                self.stats.reconnects += 1

    async def _connect_once(self, slot: _Slot) -> _Session:
        with trio.CancelScope() as scope:
            session = _Session(slot, scope)
            try:
                async with self._connector(self._url, []) as ws:
                    session.ws = ws
                    try:
                        async with trio.open_nursery() as nursery:
                            session.nursery = nursery
                            await self._guarded(session, self._read)
                    finally:
                        slot.session = None
                        # A dead socket never completes the close handshake: do not wait for it.
                        scope.deadline = min(
                            scope.deadline, trio.current_time() + self._close_timeout
                        )
            except trio_websocket.ConnectionClosed as exc:
                session.lose(_describe_close(exc.reason))
            except _TRANSPORT_ERRORS as exc:
                session.lose(f"connection failed: {exc!r}")
        if session.loss is None:
            session.loss = "connection ended"
        return session

    async def _guarded(
        self, session: _Session, task: Callable[[_Session], Awaitable[None]]
    ) -> None:
        """Turn a connection's end into a recorded loss instead of an exception group."""
        try:
            await task(session)
        except trio_websocket.ConnectionClosed as exc:
            if self._closing:
                # Our own close frame, sent by __aexit__, which waits for the server's answer
                # and then ends this session. Ending it now would stop trio-websocket's reader
                # before that answer came, and __aexit__ would wait out `close_timeout`.
                await trio.sleep_forever()
            session.lose(_describe_close(exc.reason))
        except _TRANSPORT_ERRORS as exc:
            session.lose(f"transport error: {exc!r}")

    async def _send(self, session: _Session, message: dict[str, str]) -> None:
        assert session.ws is not None
        with trio.move_on_after(self._handshake_timeout) as timer:
            await session.ws.send_message(orjson.dumps(message).decode())
        if timer.cancelled_caught:
            session.lose(f"could not send within {self._handshake_timeout} s")

    async def _send_request(self, session: _Session, action: str, subscriptions: list[str]) -> None:
        if action == "subscribe":
            session.pending.update(dict.fromkeys(subscriptions))
        try:
            for at in range(0, len(subscriptions), SUBSCRIPTIONS_PER_MESSAGE):
                chunk = subscriptions[at : at + SUBSCRIPTIONS_PER_MESSAGE]
                await self._send(session, {"action": action, "params": ",".join(chunk)})
        except trio_websocket.ConnectionClosed as exc:
            # Called from the application's task too: the slot restores the set on reconnect.
            session.lose(_describe_close(exc.reason))
        except _TRANSPORT_ERRORS as exc:
            session.lose(f"transport error: {exc!r}")

    # -- one connection's conversation ---------------------------------------------------------

    async def _read(self, session: _Session) -> None:
        assert session.ws is not None
        now = trio.current_time()
        session.deadline = now + self._handshake_timeout
        session.last_alive = now
        while True:
            session.waiting_since = trio.current_time()
            message: str | bytes | None = None
            with trio.move_on_at(self._wakeup(session)):
                message = await session.ws.get_message()
            if message is not None:
                session.last_alive = trio.current_time()
                await self._on_frame(session, message)
            await self._on_time(session)

    def _wakeup(self, session: _Session) -> float:
        times = [session.close_deadline, session.restore_deadline]
        if session.state != _READY:
            times.append(session.deadline)
        elif self._stale_after is not None:
            times.append(max(session.waiting_since, session.last_alive) + self._stale_after)
        return min((t for t in times if t is not None), default=float("inf"))

    async def _on_time(self, session: _Session) -> None:
        now = trio.current_time()
        if session.close_deadline is not None and now >= session.close_deadline:
            session.lose("the server did not close the connection")
        elif session.state == _CONNECTING and now >= session.deadline:
            # No "connected" greeting: Massive's Go and JS clients never wait for it anyway.
            await self._authenticate(session)
        elif session.state == _AUTHENTICATING and now >= session.deadline:
            session.lose(f"no reply to auth within {self._handshake_timeout} s")
        elif session.state == _READY:
            if session.restore_deadline is not None and now >= session.restore_deadline:
                await self._finish_restore(session)
            quiet = now - max(session.waiting_since, session.last_alive)
            if self._stale_after is not None and quiet >= self._stale_after:
                session.lose(f"stale: no frame and no pong for {quiet:.1f} s")

    async def _authenticate(self, session: _Session) -> None:
        session.state = _AUTHENTICATING
        session.deadline = trio.current_time() + self._handshake_timeout
        await self._send(session, {"action": "auth", "params": self._api_key})

    async def _become_ready(self, session: _Session) -> None:
        slot, now = session.slot, trio.current_time()
        session.state, session.ready_at = _READY, now
        session.ready_time = self._clock()
        slot.backoff.connected(now)
        slot.eviction_backoff.connected(now)
        assert session.nursery is not None
        session.nursery.start_soon(self._guarded, session, self._keepalive)
        await self._emit(Status(VENDOR, "connected", f"connection {slot.index} authenticated"))
        async with slot.lock:
            if session.loss is not None:
                return
            slot.session = session
            subscriptions = list(slot.subscriptions)
            if subscriptions and slot.gap_since is not None:
                session.restoring = set(subscriptions)
                session.restore_deadline = trio.current_time() + self._ack_timeout
            if subscriptions:
                await self._send_request(session, "subscribe", subscriptions)
        if not slot.subscriptions:
            slot.gap_since = None

    async def _keepalive(self, session: _Session) -> None:
        assert session.ws is not None
        while True:
            await trio.sleep(self._ping_interval)
            session.pings += 1
            with trio.move_on_after(self._ping_timeout) as timer:
                await session.ws.ping(b"feedlab-%d" % session.pings)
            if timer.cancelled_caught:
                session.lose(f"no pong within {self._ping_timeout} s")
                return
            session.last_alive = trio.current_time()

    async def _on_frame(self, session: _Session, message: str | bytes) -> None:
        try:
            items = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            self.stats.frames_dropped_unparseable += 1
            await self._drop(f"invalid JSON: {exc}", message)
            return
        if not isinstance(items, list):
            self.stats.frames_dropped_unparseable += 1
            await self._drop("not a JSON array of events", message)
            return
        for item in items:
            channel = item.get("ev") if isinstance(item, dict) else None
            if not isinstance(channel, str):
                self.stats.events_dropped_unparseable += 1
                await self._drop("not an event: no `ev` string", item)
            elif channel == "status":
                await self._on_status(session, item)
            elif (decode := DECODERS.get(channel)) is None:
                self.stats.events_ignored_unknown += 1
                await self._drop(f"unknown event type {excerpt(channel)!r}", item)
            else:
                try:
                    event = decode(item)
                except KeyError as exc:
                    self.stats.events_dropped_unparseable += 1
                    await self._drop(f"{channel} event without `{excerpt(exc.args[0])}`", item)
                except (ValueError, TypeError, ArithmeticError) as exc:
                    self.stats.events_dropped_unparseable += 1
                    await self._drop(f"unreadable {channel} event: {exc}", item)
                else:
                    await self._deliver(session, channel, event)

    async def _drop(self, reason: str, data: object) -> None:
        self.stats.dropped += 1
        await self._emit(Dropped(VENDOR, excerpt(reason), excerpt(data)))

    async def _deliver(self, session: _Session, channel: str, event: MarketEvent) -> None:
        key, sequence = _sequence_key(channel, event)
        verdict = self._sequences.observe(key, sequence, event.timestamp_ns)
        if verdict is Verdict.DUPLICATE:
            self.stats.duplicates_dropped += 1
            return
        if verdict is Verdict.REGRESSION:
            self.stats.regressions += 1
            event = dataclasses.replace(event, late=True)
        seconds = event.timestamp_ns / 1e9
        if session.last_event_time is None or seconds > session.last_event_time:
            session.last_event_time = seconds
        await self._emit(event)

    async def _on_status(self, session: _Session, item: dict[str, Any]) -> None:
        status, message = item.get("status"), item.get("message", "")
        if not isinstance(status, str):
            self.stats.events_dropped_unparseable += 1
            await self._drop("status without a `status` string", item)
            return
        message = message if isinstance(message, str) else excerpt(message)
        if status == "connected":
            if session.state == _CONNECTING:
                await self._authenticate(session)
        elif status == "auth_success":
            if session.state != _READY:
                await self._become_ready(session)
        elif status == "auth_failed":
            session.fatal = AuthError(f"Massive refused the API key: {message}")
            session.lose(f"auth_failed: {message}")
        elif status == "success":
            await self._on_ack(session, message)
        elif status == "error":
            await self._on_error(session, message)
        else:
            await self._emit(Status(VENDOR, status, message))
            if status in CLOSING_STATUSES:
                if status == "max_connections":
                    self.stats.evictions += 1
                    session.kind = "evicted"
                elif status == "slow_consumer":
                    self.stats.slow_consumer_kills += 1
                if session.closing_status is None:
                    session.closing_status = f"{status}: {message}"
                    session.close_deadline = trio.current_time() + self._close_timeout

    async def _on_ack(self, session: _Session, message: str) -> None:
        prefix = "subscribed to:"
        if message.startswith(prefix):
            subscription = message[len(prefix) :].strip()
            session.pending.pop(subscription, None)
            if session.restoring is not None:
                session.restoring.discard(subscription)
                if not session.restoring:
                    await self._finish_restore(session)

    async def _on_error(self, session: _Session, message: str) -> None:
        named = [s for s in session.pending if s in message]
        if not named:
            named = [s for s in session.pending if s.split(".", 1)[1] in message]
        if not named and session.pending and UNNAMED_ERROR_REFUSES_OLDEST_PENDING:
            named = [next(iter(session.pending))]
        if not named:
            await self._emit(Status(VENDOR, "error", message))
            return
        slot = session.slot
        for subscription in named:
            session.pending.pop(subscription, None)
            slot.subscriptions.pop(subscription, None)  # refused: not restored on reconnect
            self._where.pop(subscription, None)
            self.stats.rejected += 1
            await self._emit(Rejected(VENDOR, subscription, message))
            if session.restoring is not None:
                session.restoring.discard(subscription)
        if session.restoring is not None and not session.restoring:
            await self._finish_restore(session)

    async def _finish_restore(self, session: _Session) -> None:
        """The subscriptions are back (or `ack_timeout` passed): say what may be missing."""
        session.restoring = session.restore_deadline = None
        slot = session.slot
        if slot.gap_since is None:
            return
        notice = GapNotice(
            contracts_of(slot.subscriptions), slot.gap_since, self._clock(), slot.gap_reason
        )
        slot.gap_since = None
        self.stats.gap_notices += 1
        await self._emit(notice)
