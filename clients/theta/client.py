"""The Theta Terminal client: one WebSocket at a time, the terminal's streams kept whole across
reconnects and upstream outages (see the package docstring for what it does and why)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

import msgspec
import trio
import trio_websocket
from wsproto.utilities import LocalProtocolError

from clients.common import (
    GAP_MARGIN,
    Backoff,
    ClientError,
    Connector,
    Dropped,
    GapNotice,
    Rejected,
    SequenceTracker,
    Status,
    Verdict,
    excerpt,
    tcp_connector,
    wall_clock,
)
from clients.theta.invented import (
    EVICTION_CLOSE_CODE,
    HEARTBEAT_TIMEOUT,
    LIVE_URL,
    REFUSALS,
    REPLY_TIMEOUT,
    RESUME_TIMEOUT,
    UPSTREAM_UP,
    VENDOR,
)
from clients.theta.wire import (
    BODIES,
    Contract,
    Envelope,
    Event,
    Header,
    Subscription,
    Trade,
    decode_market_data,
    envelope_decoder,
    parse_subscription,
    streams_for,
    wire_contract,
)

# Sequence-less messages remembered per stream to drop repeats: a duplicate held back behind a
# few later messages (by a proxy, or resent after a hiccup) is still caught. A few KB a stream.
REPEATS_REMEMBERED = 16


@dataclass(slots=True)
class ClientStats:
    reconnects: int = 0
    evictions: int = 0
    heartbeat_timeouts: int = 0
    ping_timeouts: int = 0
    upstream_outages: int = 0
    requests_sent: int = 0
    confirmed: int = 0  # REQ_RESPONSE SUBSCRIBED
    rejected: int = 0
    resubscribed_after_outage: int = 0
    duplicates_dropped: int = 0  # trades by sequence
    repeats_dropped: int = 0  # sequence-less messages identical to one of the last delivered
    regressions: int = 0
    dropped: int = 0  # `Dropped` events delivered
    frames_dropped_unparseable: int = 0  # not JSON, not the terminal's shape, an unknown type
    unsolicited_dropped: int = 0  # data for a stream we do not hold (e.g. left by another program)
    unknown_replies: int = 0  # REQ_RESPONSE for an id we are not waiting for
    gap_notices: int = 0


@dataclass(slots=True)
class _Batch:
    """Requests whose REQ_RESPONSEs a recovery waits for before it calls the stream restored."""

    waiting: set[int]
    done: trio.Event = dataclasses.field(default_factory=trio.Event)


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_connection_error(e) for e in exc.exceptions)
    return isinstance(
        exc,
        OSError
        | trio_websocket.HandshakeError
        | trio_websocket.ConnectionClosed
        | trio.BrokenResourceError
        | trio.ClosedResourceError
        | trio.TooSlowError
        # trio-websocket lets wsproto's refusal out when a frame comes in a state it cannot
        # answer (an oversize message while our close waits for the terminal's: it sends a
        # 1009 close, twice; python-trio/trio-websocket#175): the connection is over all the same.
        | LocalProtocolError,
    )


class ThetaClient:
    """The Theta Terminal's event stream as an async iterator of typed events.

    `api_key` is accepted for the shape every feedlab client has and ignored: the terminal is
    logged in already. `first_request_id` raises the process-wide request id counter, for a
    program that restarts against a terminal still holding streams from its previous run.
    `max_reconnects` counts reconnects in a row without a stable connection (see `Backoff`).

    A frame it cannot read (not JSON, nested too deep, a wrong type, a missing field, a message
    type it does not know) is skipped and reported as a `Dropped` event; reading goes on. Only
    `max_reconnects` raises (`ClientError`), from the iterator or from `async with`.
    """

    _next_request_id: ClassVar[int] = 0  # shared by every instance: ids never repeat

    def __init__(
        self,
        api_key: str | None = None,
        url: str = LIVE_URL,
        *,
        connector: Connector = tcp_connector,
        clock: Callable[[], float] = wall_clock,
        backoff: Backoff | None = None,
        max_reconnects: int | None = None,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
        resume_timeout: float = RESUME_TIMEOUT,
        reply_timeout: float = REPLY_TIMEOUT,
        ping_interval: float | None = 20.0,
        ping_timeout: float = 20.0,
        connect_timeout: float = 10.0,
        buffer: int = 10_000,
        first_request_id: int | None = None,
    ) -> None:
        del api_key
        self._url = url
        self._connector = connector
        self._clock = clock
        self._backoff = backoff or Backoff()
        self._max_reconnects = max_reconnects
        self._heartbeat_timeout = heartbeat_timeout
        self._resume_timeout = resume_timeout
        self._reply_timeout = reply_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._connect_timeout = connect_timeout
        if first_request_id is not None:
            ThetaClient._next_request_id = max(ThetaClient._next_request_id, first_request_id)
        self.stats = ClientStats()
        self._send_events, self._events = trio.open_memory_channel[Event](buffer)
        self._streams: dict[str, Subscription] = {}  # canonical text -> stream we hold
        self._as_subscribed: dict[str, str] = {}  # canonical text -> as the application wrote it
        self._unsubscribe_later: dict[str, Subscription] = {}
        self._pending: dict[int, tuple[Subscription, bool]] = {}  # req id -> (stream, add)
        self._batches: list[_Batch] = []
        self._sequences = SequenceTracker()
        # The last `REPEATS_REMEMBERED` sequence-less messages (quotes, OHLC, market values)
        # delivered per stream, oldest first: a repeat of one of them is dropped.
        self._recent_bodies: dict[tuple[str, str], dict[Any, None]] = {}
        self._newest_stamp: dict[tuple[str, str], tuple[int, int]] = {}  # (date, ms_of_day)
        self._contracts: dict[bytes, Contract] = {}
        self._send_lock = trio.Lock()
        self._ws: trio_websocket.WebSocketConnection | None = None
        self._conn_nursery: trio.Nursery | None = None
        self._recovery: trio.CancelScope | None = None
        self._awaiting_data: set[str] | None = None
        self._awaiting_done = trio.Event()
        self._upstream_up = True
        self._last_received: float | None = None  # Unix s of the last message, any kind
        self._connected_at: float | None = None  # Unix s the current connection opened
        self._last_good: float | None = None  # Unix s of the last message saying CONNECTED
        self._last_event_time: float | None = None  # Unix s: the newest data timestamp delivered
        self._gap_start: float | None = None  # a loss not yet covered by a GapNotice
        self._last_status_at = 0.0  # trio time
        self._blocked = 0.0  # trio s the reader waited for the application since the last STATUS
        self._blocked_total = 0.0  # the same, never reset: tells the pinger the reader was stuck
        self._fatal: BaseException | None = None
        self._fatal_raised = False
        self._closing = False
        self._drop_reason = ""
        self._nursery_manager: Any = None
        self._nursery: trio.Nursery | None = None

    # -- public surface ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        self._nursery.start_soon(self._run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._closing = True
        with trio.move_on_after(2.0) as scope:
            scope.shield = True
            await self._stop()
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        # The application's own exception goes on as it is, not wrapped in an ExceptionGroup.
        await self._nursery_manager.__aexit__(None, None, None)
        if exc_type is None and self._fatal is not None and not self._fatal_raised:
            self._fatal_raised = True
            raise self._fatal
        return False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._events.receive()
        except trio.EndOfChannel:
            if self._fatal is not None:
                self._fatal_raised = True
                raise self._fatal from None
            raise StopAsyncIteration from None

    @property
    def subscriptions(self) -> tuple[str, ...]:
        return tuple(self._as_subscribed[k] for k in self._streams)

    async def subscribe(self, *subscriptions: str) -> None:
        """Start streams (feedlab's Theta syntax). A bad string raises ValueError at once."""
        parsed = [(parse_subscription(s), s) for s in subscriptions]
        if self._closing:
            raise ClientError("the client is closed")
        async with self._send_lock:
            fresh = []
            for sub, text in parsed:
                self._unsubscribe_later.pop(sub.text, None)
                if sub.text not in self._streams:
                    self._streams[sub.text] = sub
                    self._as_subscribed[sub.text] = text.strip()
                    fresh.append(sub)
            await self._send_locked(fresh, add=True)

    async def unsubscribe(self, *subscriptions: str) -> None:
        parsed = [parse_subscription(s) for s in subscriptions]
        async with self._send_lock:
            gone = [self._streams.pop(sub.text) for sub in parsed if sub.text in self._streams]
            for sub in gone:
                del self._as_subscribed[sub.text]
                if self._ws is None:
                    self._unsubscribe_later[sub.text] = sub  # the terminal still holds it
            await self._send_locked(gone, add=False)

    # -- requests ---------------------------------------------------------------------------

    @staticmethod
    def peek_request_id() -> int:
        """The id the next request of this process will carry (every later one is higher)."""
        return ThetaClient._next_request_id

    @staticmethod
    def _take_request_id() -> int:
        req_id = ThetaClient._next_request_id
        ThetaClient._next_request_id += 1
        return req_id

    async def _send_locked(self, subs: Iterable[Subscription], *, add: bool) -> list[int]:
        """Send one request per stream with fresh ids. The caller holds `_send_lock`; a dead
        socket is left for the reader to notice (everything is sent again on reconnect)."""
        ids: list[int] = []
        ws = self._ws
        if ws is None:
            return ids
        subs = list(subs)
        for n, sub in enumerate(subs):
            req_id = self._take_request_id()
            self._pending[req_id] = (sub, add)
            ids.append(req_id)
            try:
                await ws.send_message(sub.request(req_id, add).decode())
            except trio_websocket.ConnectionClosed:
                if not add:  # the terminal still holds these streams: end them on reconnect
                    self._unsubscribe_later.update((s.text, s) for s in subs[n:])
                return ids
            self.stats.requests_sent += 1
        return ids

    async def _send(self, subs: Iterable[Subscription], *, add: bool) -> list[int]:
        async with self._send_lock:
            return await self._send_locked(subs, add=add)

    async def _stop(self) -> None:
        async with self._send_lock:
            ws, self._ws = self._ws, None
            if ws is None:
                return
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                await ws.send_message(json.dumps({"msg_type": "STOP"}))
                await ws.aclose(1000, "client closing")

    # -- connection loop --------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._connect_forever()
        except ClientError as exc:
            self._fatal = exc
        finally:
            self._send_events.close()

    async def _connect_forever(self) -> None:
        while True:
            reason = await self._connect_once()
            self._backoff.disconnected(self._clock())
            if self._closing:
                return
            if self._max_reconnects is not None and self._backoff.attempt >= self._max_reconnects:
                raise ClientError(f"gave up after {self._backoff.attempt} reconnects: {reason}")
            delay = self._backoff.next_delay()
            self.stats.reconnects += 1
            await self._emit(Status(VENDOR, "reconnecting", f"in {delay:.2f}s: {reason}"))
            await trio.sleep(delay)

    async def _connect_once(self) -> str:
        """One WebSocket connection from open to loss; returns why it ended."""
        try:
            # The deadline covers the handshake only; it is lifted once the socket is open.
            with trio.CancelScope(deadline=trio.current_time() + self._connect_timeout) as scope:
                async with self._connector(self._url, []) as ws:
                    scope.deadline = math.inf
                    return await self._session(ws)
            return f"no connection within {self._connect_timeout}s"
        except Exception as exc:
            if not _is_connection_error(exc):
                raise
            return f"{type(exc).__name__}: {exc}"
        finally:
            self._ws = None
            self._note_loss()

    def _note_loss(self) -> None:
        if self._gap_start is None and self._last_received is not None:
            self._gap_start = self._loss_start(self._last_received)

    def _loss_start(self, known_good: float) -> float:
        """Where a loss window starts: the last moment we know we had everything, or the newest
        data timestamp we delivered if that is earlier (a message stamped later may have been
        in flight), less `GAP_MARGIN` (one a little older may have been too). With no data
        timestamp yet, when this connection opened: `known_good` is when a message arrived, not
        when it was sent (under 1.6 s of latency the first quote at 09:30 was still on its way
        behind a heartbeat that arrived after it, and was lost without a word)."""
        if self._last_event_time is None:
            opened = self._connected_at
            return known_good if opened is None else min(known_good, opened)
        return min(known_good, self._last_event_time - GAP_MARGIN)

    async def _session(self, ws: trio_websocket.WebSocketConnection) -> str:
        self._connected_at = self._clock()
        self._backoff.connected(self._connected_at)
        self._last_status_at = trio.current_time()
        self._blocked = 0.0
        await self._emit(Status(VENDOR, "connected", self._url))
        self._awaiting_data = None
        self._drop_reason = "connection lost"
        async with trio.open_nursery() as nursery:
            self._conn_nursery = nursery
            async with self._send_lock:
                self._ws = ws
                self._pending.clear()
                self._batches.clear()
                await self._send_locked(list(self._unsubscribe_later.values()), add=False)
                self._unsubscribe_later.clear()
                ids = await self._send_locked(list(self._streams.values()), add=True)
            if self._gap_start is not None:
                self._start_recovery(functools.partial(self._restore_after_reconnect, ids))
            if self._ping_interval is not None:
                nursery.start_soon(self._pinger, ws, self._ping_interval, nursery.cancel_scope)
            self._drop_reason = await self._read(ws)
            nursery.cancel_scope.cancel()
        # A hung terminal never answers our close frame: do not wait for it (the connector's own
        # close may wait up to a minute).
        with trio.move_on_after(1.0):
            await ws.aclose(1001, "going away")
        self._conn_nursery = None
        self._recovery = None
        return self._drop_reason

    async def _pinger(
        self, ws: trio_websocket.WebSocketConnection, interval: float, session: trio.CancelScope
    ) -> None:
        """A ping the terminal does not answer means a dead socket, unless the pong was stuck
        behind messages we had not read because the application was busy."""
        count = 0
        while True:
            await trio.sleep(interval)
            count += 1
            blocked_before = self._blocked_total
            with trio.move_on_after(self._ping_timeout) as scope:
                try:
                    await ws.ping(b"feedlab-%d" % count)
                except trio_websocket.ConnectionClosed:
                    return
            if scope.cancelled_caught and self._blocked_total == blocked_before:
                self.stats.ping_timeouts += 1
                self._drop_reason = f"no pong within {self._ping_timeout}s"
                session.cancel()
                return

    async def _read(self, ws: trio_websocket.WebSocketConnection) -> str:
        while True:
            deadline = self._last_status_at + self._blocked + self._heartbeat_timeout
            frame: str | bytes | None = None
            with trio.move_on_at(deadline):
                try:
                    frame = await ws.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    return await self._closed(exc)
            if frame is None:
                self.stats.heartbeat_timeouts += 1
                return f"no heartbeat for {self._heartbeat_timeout}s"
            await self._handle(frame)

    async def _closed(self, exc: trio_websocket.ConnectionClosed) -> str:
        code = exc.reason.code if exc.reason is not None else 1006
        text = exc.reason.reason if exc.reason is not None else None
        if code == EVICTION_CLOSE_CODE and not self._closing:
            self.stats.evictions += 1
            await self._emit(Status(VENDOR, "evicted", "another client took the terminal"))
        return f"closed {code} {text or ''}".strip()

    # -- messages ---------------------------------------------------------------------------

    async def _handle(self, frame: str | bytes) -> None:
        try:
            envelope = envelope_decoder.decode(frame)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            # msgspec recurses into nested arrays and objects, even ones it only skips: a deep
            # enough frame ends in RecursionError, which is no more than another bad frame.
            await self._drop(f"unreadable frame: {exc}", frame)
            return
        header = envelope.header
        self._last_received = self._clock()
        if header.status is not None:
            await self._upstream(header.status)
        kind = header.type
        if kind == "STATUS":
            self._last_status_at = trio.current_time()
            self._blocked = 0.0
        elif kind == "REQ_RESPONSE":
            await self._reply(header)
        elif kind == "STATE":
            await self._emit(Status(VENDOR, f"state {header.state}", "upstream stream state"))
        elif kind in BODIES:
            await self._market_data(kind, envelope, frame)
        else:
            await self._drop(f"unknown message type {excerpt(kind)!r}", frame)

    async def _drop(self, reason: str, frame: str | bytes) -> None:
        self.stats.frames_dropped_unparseable += 1
        self.stats.dropped += 1
        await self._emit(Dropped(VENDOR, excerpt(reason), excerpt(frame)))

    async def _upstream(self, status: str) -> None:
        if status == UPSTREAM_UP:
            self._last_good = self._clock()
            if not self._upstream_up:
                self._upstream_up = True
                await self._emit(Status(VENDOR, "upstream_connected"))
                self._start_recovery(self._recover_after_outage)
        elif self._upstream_up:
            self._upstream_up = False
            self.stats.upstream_outages += 1
            if self._gap_start is None:
                self._gap_start = self._loss_start(
                    self._last_good if self._last_good is not None else self._clock()
                )
            if self._recovery is not None:
                self._recovery.cancel()
            await self._emit(Status(VENDOR, "upstream_disconnected", status))

    async def _reply(self, header: Header) -> None:
        req_id = header.req_id
        request = self._pending.pop(req_id, None) if req_id is not None else None
        if req_id is None or request is None:
            self.stats.unknown_replies += 1
            return
        for batch in self._batches:
            batch.waiting.discard(req_id)
            if not batch.waiting:
                batch.done.set()
        sub, add = request
        if header.response == "SUBSCRIBED":
            self.stats.confirmed += 1
        elif add or header.response in REFUSALS:  # an unknown answer to a subscribe is no yes
            self.stats.rejected += 1
            text = self._as_subscribed.get(sub.text, sub.text)
            if add and self._streams.get(sub.text) == sub:
                del self._streams[sub.text]
                del self._as_subscribed[sub.text]
            action = "" if add else " (unsubscribe)"
            await self._emit(Rejected(VENDOR, text, f"{header.response}{action}"))

    async def _market_data(self, kind: str, envelope: Envelope, frame: str | bytes) -> None:
        field, decoder = BODIES[kind]
        raw_body = getattr(envelope, field)
        try:
            contract = self._contracts.get(bytes(envelope.contract))
            if contract is None:
                contract = wire_contract(envelope.contract)
                if len(self._contracts) > 100_000:
                    self._contracts.clear()
                self._contracts[bytes(envelope.contract)] = contract
            body = decoder.decode(raw_body)
            event = decode_market_data(kind, contract, body)
        except (
            msgspec.DecodeError,
            msgspec.ValidationError,
            ValueError,
            ArithmeticError,
            RecursionError,
        ) as exc:
            await self._drop(f"unreadable {kind}: {exc}", frame)
            return
        streams = [s for s in streams_for(event) if s in self._streams]
        if not streams:
            self.stats.unsolicited_dropped += 1
            return
        if self._awaiting_data:
            self._awaiting_data.difference_update(streams)
            if not self._awaiting_data:
                self._awaiting_done.set()
        if isinstance(event, Trade):
            # Sequences are a 32-bit counter the terminal prints signed: compared unsigned, a
            # wrap from 2**31 - 1 to -2**31 is the next number, not a regression. The time is
            # the fingerprint: a new trade that meets an old number (after a reconnect, below
            # numbers that had jumped) is a regression to deliver, not a repeat to drop.
            verdict = self._sequences.observe(
                event.symbol, event.sequence & 0xFFFFFFFF, event.timestamp_ns
            )
            if verdict is Verdict.DUPLICATE:
                self.stats.duplicates_dropped += 1
                return
            if verdict is Verdict.REGRESSION:
                self.stats.regressions += 1
        else:
            # No sequence number: a repeat is the same message again, right after itself or
            # behind later ones (held back, or resent). The same value back within the newest
            # millisecond is a real change back (A, B, A), and the application's quote must
            # end at A: only a copy older than the newest delivered is a repeat there.
            key = (kind, event.symbol)
            recent = self._recent_bodies.setdefault(key, {})
            stamp = (body.date, body.ms_of_day)
            newest = self._newest_stamp.get(key, stamp)
            if body in recent:
                if body == next(reversed(recent)) or stamp < newest:
                    self.stats.repeats_dropped += 1
                    return
                del recent[body]  # (delivered again: the newest now)
            recent[body] = None
            if len(recent) > REPEATS_REMEMBERED:
                del recent[next(iter(recent))]
            self._newest_stamp[key] = max(stamp, newest)
        moment = event.timestamp_ns / 1e9
        if self._last_event_time is None or moment > self._last_event_time:
            self._last_event_time = moment
        await self._emit(event)

    async def _emit(self, event: Event) -> None:
        try:
            self._send_events.send_nowait(event)
        except trio.WouldBlock:
            started = trio.current_time()
            await self._send_events.send(event)
            waited = trio.current_time() - started
            self._blocked += waited
            self._blocked_total += waited

    # -- recovery ---------------------------------------------------------------------------

    def _start_recovery(self, recovery: Callable[[], Any]) -> None:
        """At most one recovery runs per connection; a new trigger replaces the old one."""
        if self._recovery is not None:
            self._recovery.cancel()
        scope = self._recovery = trio.CancelScope()

        async def run() -> None:
            with scope:
                await recovery()

        assert self._conn_nursery is not None
        self._conn_nursery.start_soon(run)

    async def _wait_replies(self, ids: Sequence[int]) -> None:
        batch = _Batch({i for i in ids if i in self._pending})
        if not batch.waiting:
            return
        self._batches.append(batch)
        with trio.move_on_after(self._reply_timeout):
            await batch.done.wait()
        self._batches.remove(batch)

    async def _restore_after_reconnect(self, ids: Sequence[int]) -> None:
        await self._wait_replies(ids)
        if self._upstream_up:  # otherwise the outage recovery reports the gap
            await self._emit_gap("reconnect")

    async def _recover_after_outage(self) -> None:
        """The terminal resubscribes by itself after an outage; check that it did."""
        self._awaiting_data = set(self._streams)
        self._awaiting_done = trio.Event()
        if self._awaiting_data:
            with trio.move_on_after(self._resume_timeout):
                await self._awaiting_done.wait()
        waiting = self._awaiting_data
        silent = [sub for key, sub in self._streams.items() if key in waiting]  # in a fixed order
        self._awaiting_data = None
        if silent:
            self.stats.resubscribed_after_outage += len(silent)
            await self._wait_replies(await self._send(silent, add=True))
        await self._emit_gap("upstream outage")

    async def _emit_gap(self, reason: str) -> None:
        start, self._gap_start = self._gap_start, None
        if start is None or not self._streams:
            return
        # Named as events name them (`symbol`), like the other clients; "*" is the bulk stream.
        contracts = tuple(dict.fromkeys(sub.symbol for sub in self._streams.values()))
        self.stats.gap_notices += 1
        await self._emit(GapNotice(contracts, start, self._clock(), reason))
