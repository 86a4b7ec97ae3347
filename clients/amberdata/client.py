"""The Amberdata options client: JSON-RPC 2.0 over one or more WebSockets, kept subscribed.

Amberdata forgets every subscription when a socket drops and hands out new subscription ids on
the next one, and its plans cap connections and subscriptions per connection. The client keeps
the application's subscription set across reconnects, maps the new ids, spreads subscriptions
over connections within the plan, and tells the application what it may have missed.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import orjson
import trio
import trio_websocket
from wsproto.utilities import LocalProtocolError

from clients.amberdata.events import Event, OptionMarket, decode_result
from clients.amberdata.instruments import Subscription, parse_subscription, plan_limits
from clients.amberdata.invented import AUTH_FAILURE_PREFIX, STALE_AFTER
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

LIVE_URL = "wss://ws.amberdata.com/options"
VENDOR = "amberdata"
API_KEY_ENV = "AMBERDATA_API_KEY"


def _error_reason(error: object) -> tuple[int | None, str]:
    """Amberdata's `{description, code: 400}` or JSON-RPC's `{code: -32602, message}`."""
    if not isinstance(error, dict):
        return None, excerpt(error)
    code = error.get("code")
    text = error.get("description") or error.get("message") or error
    # `excerpt`, not str() or orjson: a hostile error object may be nested deeper than either.
    return (code if isinstance(code, int) else None), excerpt(text)


def _is_limit_error(description: str) -> bool:
    return "subscription limit" in description.lower()


def _request_id(value: object) -> int | None:
    """Our ids are ints; a server may echo them as strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    # Not str.isdigit alone: it takes "²", which int() refuses, and int() refuses 5,000 digits.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        return int(value)
    return None


@dataclass
class ClientStats:
    reconnects: int = 0
    gap_notices: int = 0
    duplicates_dropped: int = 0
    regressions: int = 0
    dropped: int = 0  # `Dropped` events: unparseable frames and pushes for unknown ids
    frames_dropped_unparseable: int = 0  # frames, or messages of a batch, we could not read
    unknown_subscription_dropped: int = 0  # pushes for ids this connection never had (Dropped)
    dropped_after_unsubscribe: int = 0  # pushes already in flight when we unsubscribed
    rejected: int = 0
    replies_unmatched: int = 0
    unsubscribe_unknown: int = 0  # the server answered `false`
    ping_timeouts: int = 0
    stale_replacements: int = 0
    request_timeouts: int = 0


@dataclass
class _Pending:
    method: Literal["subscribe", "unsubscribe"]
    key: str
    sent_at: float  # trio time


@dataclass
class _Session:
    """One WebSocket's worth of state; Amberdata keeps none of it across connections."""

    ws: trio_websocket.WebSocketConnection
    # Unix s (the client's clock) when it opened: on a connection that has had no event yet,
    # a loss leaves a gap from then (not from the loss, which may be a ping timeout later).
    opened: float
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    pending: dict[int, _Pending] = field(default_factory=dict)
    key_by_id: dict[str, str] = field(default_factory=dict)  # subscription id -> key
    id_by_key: dict[str, str] = field(default_factory=dict)
    subscribing: set[str] = field(default_factory=set)  # keys with a subscribe in flight
    retired: set[str] = field(default_factory=set)  # ids being unsubscribed
    restoring: set[str] = field(default_factory=set)
    restored: trio.Event = field(default_factory=trio.Event)
    gap_delivered: bool = False
    server_text: str | None = None  # a plain-text frame, which precedes a close
    done: bool = False
    loss: str | None = None  # None with done: closed on purpose
    fatal: ClientError | None = None


@dataclass
class _Connection:
    index: int
    keys: dict[str, Subscription] = field(default_factory=dict)  # what should be subscribed
    session: _Session | None = None
    scope: trio.CancelScope | None = None
    learned_cap: int | None = None  # the server's per-connection limit, once it told us
    # When a connection drops, the gap starts at the last thing we saw (Unix seconds): the
    # publication time of the newest event, and for snapshots and tickers also the exchange
    # time of each one's last event, which lags the snapshot instant on a quiet book.
    last_published: float | None = None
    last_exchange_time: dict[str, float] = field(default_factory=dict)
    failures: int = 0  # consecutive losses without a stable connection
    dialed: trio.Event = field(default_factory=trio.Event)  # its first connect has begun


@dataclass
class _Gap:
    keys: set[str]
    start: float
    reason: str


class AmberdataClient:
    """Options market data from Amberdata over one or more JSON-RPC WebSockets.

    Plan limits: `max_connections` and `max_subscriptions_per_connection` default ("plan") to
    the key's plan (UAT trial 5/100, UAO on-demand 20/100, anything else enterprise: unlimited);
    None means unlimited. Subscriptions fill connection 0 first and spill onto further ones;
    `subscribe` raises LimitError, sending nothing, when they cannot fit. If the server refuses a
    subscription for its per-connection limit, the client learns that limit and moves the
    subscription to another connection where the plan allows, else it reports `Rejected`.

    Keepalive: a WebSocket ping every `ping_interval` s must be answered within `ping_timeout`;
    a connection silent for `stale_after[stream]` s (see STALE_AFTER) is replaced; a request
    unanswered for `request_timeout` s also counts as a dead connection.

    Reconnects back off with full jitter (one `Backoff` shared by all connections, as the
    vendor sees one key reconnecting); `max_reconnects` counts losses of one connection in a
    row without a stable connection (`Backoff.stable_after`). After each reconnect the exact
    subscription set is restored under the new ids, then one `GapNotice` is delivered.

    Events are buffered up to `max_buffered_events`; an application slower than the feed for
    longer stalls the socket, and the ping timeout then replaces the connection.

    A frame it cannot read (not JSON, not a JSON-RPC message, a push whose result does not fit
    its stream, a push for a subscription id the connection never had) is skipped and reported
    as a `Dropped` event; reading goes on. Plain words, not JSON, are how Amberdata explains a
    close: a `Status` ("server_message"). Only a refused key (`AuthError`), `max_reconnects`
    (`ClientError`) and, from `subscribe`, `LimitError` raise.
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
        max_connections: int | Literal["plan"] | None = "plan",
        max_subscriptions_per_connection: int | Literal["plan"] | None = "plan",
        ping_interval: float = 15.0,
        ping_timeout: float = 10.0,
        request_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        close_timeout: float = 5.0,
        stale_after: Mapping[str, float | None] | None = None,
        max_buffered_events: int = 10_000,
    ) -> None:
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._url = url
        self._connector = connector
        self._clock = clock
        self._backoff = backoff or Backoff()
        self._max_reconnects = max_reconnects
        plan_connections, plan_subscriptions = plan_limits(self._api_key)
        self.max_connections = plan_connections if max_connections == "plan" else max_connections
        self.max_subscriptions_per_connection = (
            plan_subscriptions
            if max_subscriptions_per_connection == "plan"
            else max_subscriptions_per_connection
        )
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._request_timeout = request_timeout
        self._connect_timeout = connect_timeout
        self._close_timeout = close_timeout
        self._stale_after = {**STALE_AFTER, **(stale_after or {})}
        self.stats = ClientStats()
        self._headers = [] if self._api_key is None else [(b"x-api-key", self._api_key.encode())]
        self._send_events, self._receive_events = trio.open_memory_channel[Event](
            max_buffered_events
        )
        self._connections: list[_Connection] = []
        self._placed: dict[str, _Connection] = {}  # key -> its connection
        self._texts: dict[str, str] = {}  # key -> as the application wrote it
        self._sequences = SequenceTracker()
        self._next_id = 0
        self._next_ping = 0
        self._stop = trio.Event()
        self._fatal: ClientError | None = None
        self._fatal_raised = False
        self._nursery_manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._nursery: trio.Nursery | None = None

    # -- public surface ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._nursery_manager is not None:
            raise RuntimeError("an AmberdataClient can be entered once")
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        self._add_connection()  # connect now, so a refused key shows up at once
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._nursery_manager is not None, "not entered"
        self._stop.set()
        for connection in self._connections:
            if connection.session is None and connection.scope is not None:
                connection.scope.cancel()  # still connecting: nothing to close politely
        try:
            await self._nursery_manager.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            _, rest = group.split(trio.Cancelled)
            if exc is not None and rest is None:
                return  # the application's own exception or cancellation goes on
            raise
        finally:
            self._send_events.close()
        if exc_type is None and self._fatal is not None and not self._fatal_raised:
            self._fatal_raised = True
            raise self._fatal

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._receive_events.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self._fatal is not None:
                self._fatal_raised = True
                raise self._fatal from None
            raise StopAsyncIteration from None

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """Canonical keys of what the client keeps subscribed."""
        return tuple(self._placed)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def subscribe(self, *subscriptions: str) -> None:
        """Subscribe (STREAM:INSTRUMENT[@EXCHANGE]); returns once the requests are sent.

        The server's answer arrives through the iterator: data, or `Rejected`. Raises LimitError,
        sending nothing, when the plan's limits cannot hold them all.
        """
        self._check_running()
        wanted: dict[str, tuple[Subscription, str]] = {}
        for text in subscriptions:
            sub = parse_subscription(text)
            if sub.key not in self._placed:
                wanted.setdefault(sub.key, (sub, text))
        placement = self._place(list(wanted))
        for key, connection in placement:
            sub, text = wanted[key]
            connection.keys[key] = sub
            self._placed[key] = connection
            self._texts[key] = text
        for key, connection in placement:
            await self._request_subscribe(connection, key)

    async def unsubscribe(self, *subscriptions: str) -> None:
        self._check_running()
        for text in subscriptions:
            key = parse_subscription(text).key
            connection = self._placed.pop(key, None)
            if connection is None:
                continue
            del connection.keys[key]
            self._texts.pop(key, None)
            session = connection.session
            if session is None:
                continue
            self._done_restoring(session, key)
            sub_id = session.id_by_key.pop(key, None)
            if sub_id is not None:
                del session.key_by_id[sub_id]
                await self._request_unsubscribe(session, key, sub_id)
            # A subscribe still in flight is undone when its id arrives (_on_reply).

    # -- placement over connections ------------------------------------------------------------

    def _capacity(self, connection: _Connection) -> float:
        caps = [self.max_subscriptions_per_connection, connection.learned_cap]
        known = [cap for cap in caps if cap is not None]
        return min(known) if known else math.inf

    def _may_open(self, extra: int = 0) -> bool:
        limit = self.max_connections
        return limit is None or len(self._connections) + extra < limit

    def _place(self, keys: list[str]) -> list[tuple[str, _Connection]]:
        """Decide, without changing anything, where each new subscription goes."""
        counts = {c.index: len(c.keys) for c in self._connections}
        placement: list[tuple[str, _Connection]] = []
        opened: list[_Connection] = []
        for key in keys:
            target = next(
                (c for c in self._connections + opened if counts[c.index] < self._capacity(c)),
                None,
            )
            if target is None:
                if not self._may_open(len(opened)):
                    raise LimitError(
                        f"{len(self._placed) + len(keys)} subscriptions do not fit "
                        f"{self.max_connections} connection(s) of "
                        f"{self.max_subscriptions_per_connection} subscriptions"
                    )
                target = _Connection(len(self._connections) + len(opened))
                opened.append(target)
                counts[target.index] = 0
            counts[target.index] += 1
            placement.append((key, target))
        for connection in opened:
            self._add_connection(connection)
        return placement

    def _add_connection(self, connection: _Connection | None = None) -> _Connection:
        assert self._nursery is not None
        connection = connection or _Connection(len(self._connections))
        self._connections.append(connection)
        self._nursery.start_soon(self._connection_task, connection)
        return connection

    def _check_running(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._nursery is None or self._stop.is_set():
            raise RuntimeError("use the client inside `async with`")

    # -- requests ------------------------------------------------------------------------------

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def _send(self, session: _Session, request: dict[str, object]) -> None:
        try:
            await session.ws.send_message(orjson.dumps(request).decode())
        except trio_websocket.ConnectionClosed:
            pass  # the reader reports the loss; the subscription set is restored on reconnect

    async def _request_subscribe(self, connection: _Connection, key: str) -> None:
        session = connection.session
        sub = connection.keys.get(key)
        if session is None or session.done or sub is None:
            return  # sent when the connection is (re)established
        if key in session.id_by_key or key in session.subscribing:
            return
        request_id = self._new_id()
        session.pending[request_id] = _Pending("subscribe", key, trio.current_time())
        session.subscribing.add(key)
        request = {"jsonrpc": "2.0", "id": request_id, "method": "subscribe"}
        await self._send(session, {**request, "params": sub.params()})

    async def _request_unsubscribe(self, session: _Session, key: str, sub_id: str) -> None:
        session.retired.add(sub_id)
        request_id = self._new_id()
        session.pending[request_id] = _Pending("unsubscribe", key, trio.current_time())
        request = {"jsonrpc": "2.0", "id": request_id, "method": "unsubscribe"}
        await self._send(session, {**request, "params": [sub_id]})

    # -- delivery ------------------------------------------------------------------------------

    async def _emit(self, event: Event) -> None:
        try:
            await self._send_events.send(event)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the application stopped listening, or the client failed

    def _fail(self, exc: ClientError) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._stop.set()
        self._send_events.close()

    # -- connections ---------------------------------------------------------------------------

    async def _connection_task(self, connection: _Connection) -> None:
        try:
            await self._keep_connected(connection)
        except ClientError as exc:
            self._fail(exc)
        finally:
            connection.dialed.set()  # never keep the next connection waiting

    async def _keep_connected(self, connection: _Connection) -> None:
        if connection.index > 0:
            # Dial in index order, so the server numbers our connections the same way every
            # run, whatever order Trio happens to start these tasks in.
            await self._connections[connection.index - 1].dialed.wait()
        gap: _Gap | None = None
        while not self._stop.is_set():
            connected_at, session, loss = await self._connect_once(connection, gap)
            if self._stop.is_set():
                return
            if session is not None and session.gap_delivered:
                gap = None
            now = self._clock()
            if connected_at is not None:
                if trio.current_time() - connected_at >= self._backoff.stable_after:
                    connection.failures = 0
                self._backoff.disconnected(trio.current_time())
            if connection.last_published is not None:
                seen = connection.last_published - GAP_MARGIN  # (a little older may be late)
            else:
                seen = session.opened if session is not None else now
            start = min(
                now,
                seen,
                *(t for k, t in connection.last_exchange_time.items() if k in connection.keys),
            )
            if gap is None:
                gap = _Gap(set(connection.keys), start, loss)
            else:
                gap.keys |= set(connection.keys)
                gap.start = min(gap.start, start)
            connection.failures += 1
            if self._max_reconnects is not None and connection.failures > self._max_reconnects:
                raise ClientError(
                    f"connection {connection.index} lost {connection.failures} times in a row "
                    f"(max_reconnects={self._max_reconnects}); last: {loss}"
                )
            delay = self._backoff.next_delay()
            await self._emit(
                Status(
                    VENDOR,
                    "reconnecting",
                    f"connection {connection.index}: {loss}; retrying in {delay:.2f} s",
                )
            )
            with trio.move_on_after(delay):
                await self._stop.wait()
            if self._stop.is_set():
                return
            self.stats.reconnects += 1

    async def _connect_once(
        self, connection: _Connection, gap: _Gap | None
    ) -> tuple[float | None, _Session | None, str]:
        """One connection's life: (when it opened, its session, why it ended).

        Nothing is raised through the connector: one with a nursery inside (the mock's, ours
        in tests) would wrap it in an exception group. A refused key is raised afterwards.
        """
        loss = f"no connection within {self._connect_timeout} s"
        connected_at: float | None = None
        session: _Session | None = None
        refused: AuthError | None = None
        with trio.CancelScope(deadline=trio.current_time() + self._connect_timeout) as scope:
            connection.scope = scope
            connection.dialed.set()
            try:
                async with self._connector(self._url, self._headers) as ws:
                    scope.deadline = math.inf
                    connected_at = trio.current_time()
                    self._backoff.connected(connected_at)
                    session = _Session(ws, self._clock())
                    try:
                        loss = await self._converse(connection, session, gap) or "closed"
                    finally:
                        # A stalled peer never answers our close frame: give up on it in time.
                        scope.deadline = trio.current_time() + self._close_timeout
            except* trio_websocket.ConnectionRejected as group:
                status = getattr(group.exceptions[0], "status_code", None)
                loss = f"handshake refused with HTTP {status}"
                if self._refuses_the_key(status):
                    refused = AuthError(loss)
            except* (
                trio_websocket.HandshakeError,
                trio_websocket.ConnectionClosed,
                OSError,
                trio.BrokenResourceError,
                trio.ClosedResourceError,
                LocalProtocolError,  # let out by trio-websocket (python-trio/trio-websocket#175)
            ) as group:
                if session is None:
                    loss = f"cannot connect: {group.exceptions[0]!r}"
            finally:
                connection.scope = None
        if refused is not None:
            raise refused
        if session is not None and session.fatal is not None:
            raise session.fatal
        return connected_at, session, loss

    @staticmethod
    def _refuses_the_key(status: int | None) -> bool:
        """Whether an HTTP answer to the upgrade refuses the key (no reconnect can help), as
        401 and 403 do; anything else (a 503 from a load balancer, a 502) is worth a retry."""
        return status in (401, 403)

    async def _converse(
        self, connection: _Connection, session: _Session, gap: _Gap | None
    ) -> str | None:
        connection.session = session
        try:
            async with trio.open_nursery() as nursery:
                session.scope = nursery.cancel_scope
                nursery.start_soon(self._read, connection, session)
                nursery.start_soon(self._keepalive, session)
                nursery.start_soon(self._stop_on_request, session)
                await self._restore(connection, session, gap)
        finally:
            connection.session = None
        return session.loss

    def _finish(
        self, session: _Session, loss: str | None, fatal: ClientError | None = None
    ) -> None:
        if not session.done:
            session.done, session.loss, session.fatal = True, loss, fatal
            session.scope.cancel()

    async def _stop_on_request(self, session: _Session) -> None:
        await self._stop.wait()
        self._finish(session, None)

    async def _restore(self, connection: _Connection, session: _Session, gap: _Gap | None) -> None:
        """Subscribe everything assigned to this connection, then report what may be missing."""
        await self._emit(Status(VENDOR, "connected", f"connection {connection.index}"))
        session.restoring = set(connection.keys)
        for key in list(connection.keys):
            await self._request_subscribe(connection, key)
        if session.restoring:
            with trio.move_on_after(self._request_timeout):
                await session.restored.wait()
            if not session.restored.is_set():
                self.stats.request_timeouts += 1
                self._finish(session, "subscriptions not confirmed in time")
                return
        if gap is not None:
            contracts = sorted(
                {connection.keys[k].instrument for k in gap.keys if k in session.id_by_key}
            )
            if contracts:
                await self._emit(GapNotice(tuple(contracts), gap.start, self._clock(), gap.reason))
                self.stats.gap_notices += 1
        session.gap_delivered = True

    def _done_restoring(self, session: _Session, key: str) -> None:
        session.restoring.discard(key)
        if not session.restoring:
            session.restored.set()

    async def _keepalive(self, session: _Session) -> None:
        while True:
            await trio.sleep(self._ping_interval)
            self._next_ping += 1
            with trio.move_on_after(self._ping_timeout) as waited:
                try:
                    await session.ws.ping(struct.pack("!I", self._next_ping % 2**32))
                except trio_websocket.ConnectionClosed:
                    return  # the reader reports it
            if waited.cancelled_caught:
                self.stats.ping_timeouts += 1
                self._finish(session, f"no pong within {self._ping_timeout} s")
                return
            now = trio.current_time()
            if any(now - p.sent_at > self._request_timeout for p in session.pending.values()):
                self.stats.request_timeouts += 1
                self._finish(session, f"no reply within {self._request_timeout} s")
                return

    def _stale_bound(self, session: _Session) -> float:
        bounds = [self._stale_after.get(_stream_of(key)) for key in session.id_by_key]
        known = [b for b in bounds if b is not None]
        return min(known) if known else math.inf

    async def _read(self, connection: _Connection, session: _Session) -> None:
        while True:
            bound = self._stale_bound(session)
            with trio.move_on_after(bound) as waited:
                try:
                    message = await session.ws.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    reason = exc.reason
                    code = None if reason is None else reason.code
                    text = "" if reason is None or not reason.reason else f" {reason.reason}"
                    said = "" if session.server_text is None else f": {session.server_text}"
                    self._finish(session, f"closed with {code}{text}{said}")
                    return
            if waited.cancelled_caught:
                self.stats.stale_replacements += 1
                self._finish(session, f"no data for {bound} s")
                return
            try:
                await self._on_message(connection, session, message)
            except AuthError as exc:
                self._finish(session, None, exc)
                return

    # -- incoming frames -----------------------------------------------------------------------

    async def _on_message(
        self, connection: _Connection, session: _Session, message: str | bytes
    ) -> None:
        if isinstance(message, str) and message.startswith(AUTH_FAILURE_PREFIX):
            # Amberdata's refusal quotes the key back (`invalid api key '<key>'`): keep it out of
            # the exception, which ends up in logs and reports.
            raise AuthError(f"Amberdata refused the API key ({AUTH_FAILURE_PREFIX})")
        try:
            frame = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            if isinstance(message, str) and message[:1].isalpha():
                # Plain words, not JSON: how Amberdata explains a close it is about to make.
                session.server_text = message[:200]
                await self._emit(Status(VENDOR, "server_message", session.server_text))
            else:
                await self._drop(f"invalid JSON: {exc}", message)
            return
        for item in frame if isinstance(frame, list) else [frame]:
            if not isinstance(item, dict):
                await self._drop("not a JSON-RPC message: not an object", item)
            elif item.get("method") == "subscription":
                await self._on_push(connection, session, item)
            elif "id" in item and ("result" in item or "error" in item):
                await self._on_reply(connection, session, item)
            else:
                await self._drop("not a JSON-RPC reply or subscription push", item)

    async def _drop(self, reason: str, data: object, unreadable: bool = True) -> None:
        if unreadable:
            self.stats.frames_dropped_unparseable += 1
        self.stats.dropped += 1
        await self._emit(Dropped(VENDOR, excerpt(reason), excerpt(data)))

    async def _on_push(
        self, connection: _Connection, session: _Session, push: dict[str, Any]
    ) -> None:
        params = push.get("params")
        if not isinstance(params, dict) or not isinstance(params.get("subscription"), str):
            await self._drop("subscription push without a `subscription` id string", push)
            return
        key = session.key_by_id.get(params["subscription"])
        sub = None if key is None else connection.keys.get(key)
        if key is None or sub is None:
            if params["subscription"] in session.retired:
                self.stats.dropped_after_unsubscribe += 1  # in flight as we unsubscribed
            else:
                # Ids live as long as their connection: an id it never gave us is its mistake
                # or ours, and may be data the application wanted.
                self.stats.unknown_subscription_dropped += 1
                await self._drop(
                    "push for a subscription id this connection never had", push, False
                )
            return
        try:
            event = decode_result(sub.stream, params.get("result"), sub.exchange)
        except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
            await self._drop(f"unreadable {sub.stream} result: {exc}", push)
            return
        if event.sequence is not None:
            # The number alone is not the event: after a reconnect the numbers may go on from
            # below where the last connection's had jumped to, and a new event that meets an old
            # number is a regression to deliver, not a repeat to drop (so its time comes too).
            verdict = self._sequences.observe(
                f"{sub.stream}|{event.exchange}|{event.symbol}", event.sequence, event.timestamp_ns
            )
            if verdict is Verdict.DUPLICATE:
                self.stats.duplicates_dropped += 1
                return
            if verdict is Verdict.REGRESSION:
                self.stats.regressions += 1
        if isinstance(event, OptionMarket) and event.snapshot_ns is not None:
            connection.last_exchange_time[key] = event.timestamp_ns / 1e9
            published = event.snapshot_ns / 1e9
        else:
            published = event.timestamp_ns / 1e9
        connection.last_published = max(published, connection.last_published or published)
        await self._emit(event)

    async def _on_reply(
        self, connection: _Connection, session: _Session, reply: dict[str, Any]
    ) -> None:
        request_id = _request_id(reply.get("id"))
        pending = None if request_id is None else session.pending.pop(request_id, None)
        error = reply.get("error")
        if pending is None:
            if error is not None and reply.get("id") is None:
                code, text = _error_reason(error)  # e.g. -32700: cannot tell which request
                self.stats.rejected += 1
                await self._emit(Rejected(VENDOR, "", f"{code}: {text}"))
            else:
                self.stats.replies_unmatched += 1
            return
        key = pending.key
        if pending.method == "unsubscribe":
            if error is not None:
                code, text = _error_reason(error)
                self.stats.rejected += 1
                await self._emit(Rejected(VENDOR, key, f"unsubscribe: {code}: {text}"))
            elif reply.get("result") is not True:
                self.stats.unsubscribe_unknown += 1
            return
        session.subscribing.discard(key)
        result = reply.get("result")
        if error is None and not isinstance(result, str):
            error = {"description": f"unexpected subscribe result {result!r}"}
        if error is not None or not isinstance(result, str):
            await self._on_subscribe_error(connection, session, key, error)
        elif key in connection.keys:
            session.key_by_id[result] = key
            session.id_by_key[key] = result
        else:  # unsubscribed while the subscribe was in flight
            await self._request_unsubscribe(session, key, result)
        self._done_restoring(session, key)

    async def _on_subscribe_error(
        self, connection: _Connection, session: _Session, key: str, error: object
    ) -> None:
        code, text = _error_reason(error)
        sub = connection.keys.get(key)
        if sub is None:
            return  # no longer wanted
        if _is_limit_error(text) and await self._move(connection, session, key):
            return
        del connection.keys[key]
        del self._placed[key]
        self.stats.rejected += 1
        await self._emit(Rejected(VENDOR, self._texts.pop(key, key), f"{code}: {text}"))

    async def _move(self, connection: _Connection, session: _Session, key: str) -> bool:
        """The server's per-connection limit is lower than we knew: spill onto another one."""
        confirmed = len(session.id_by_key)
        if confirmed == 0:
            return False
        connection.learned_cap = min(confirmed, connection.learned_cap or confirmed)
        target = next(
            (
                c
                for c in self._connections
                if c is not connection and len(c.keys) < self._capacity(c)
            ),
            None,
        )
        if target is None:
            if not self._may_open():
                return False
            target = self._add_connection()
        sub = connection.keys.pop(key)
        target.keys[key] = sub
        self._placed[key] = target
        await self._emit(
            Status(
                VENDOR,
                "rebalanced",
                f"connection {connection.index} holds {confirmed} subscriptions at most; "
                f"{key} moves to connection {target.index}",
            )
        )
        await self._request_subscribe(target, key)
        return True


def _stream_of(key: str) -> str:
    return key.rpartition(":")[0]
