"""Runs a vendor's sans-I/O core over real WebSockets: TCP for external clients, memory streams
for clients in the same Trio run (virtual time).

Per served vendor there is one `MockServer`: the feed (an actor that splits each market batch by
connection through the `Hub`) and the connections. Per connection one driver task owns the
`Session` and feeds it, in a fixed order at each wake-up, the client's messages, the market
events, an overflow notice and the due timers; a reader task only moves client messages into the
driver's queue. While a driver is parked with nothing to do, the feed publishes and writes its
market events itself, over plain TCP with nothing watching (`Connection._send_now`). The
outbound buffer is bounded in events: when the client reads slower than the feed,
`Session.overflowed` decides (Massive: `slow_consumer`, then close).
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol, cast
from urllib.parse import parse_qsl, urlsplit

import trio
import trio_websocket
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection
from wsproto.utilities import LocalProtocolError

from mocks.hub import Hub
from mocks.ledger import Ledger
from mocks.session import Abort, Action, Close, ConnectionInfo, Send, Session, VendorServer
from mocks.sim.actor import Market
from mocks.sim.events import Event
from mocks.sim.rng import derive_rng
from mocks.transport import Link, TcpPort, data_frame, memory_pair


class MessageFilter(Protocol):
    """Where message-level faults act: on market events before the session renders them, and
    on each rendered frame before it is sent. `mocks.director.MessageFaults` is the real one."""

    @property
    def quiet(self) -> bool:
        """True while no fault is on: `on_events` and `on_frame` would change nothing."""

    def on_events(self, conn: Connection, events: list[Event], now: float) -> list[Event]: ...

    def on_frame(self, conn: Connection, frame: Send) -> Send: ...

    def next_release(self, conn: Connection) -> float | None:
        """When (market time) an event held back for this connection is due out anyway."""

    def released(self, conn: Connection, now: float) -> list[Event]:
        """Events held back for this connection that are due out by `now`."""


class WireObserver(Protocol):
    """Sees every connection's wire traffic as it happens: the recorder is one."""

    def opened(self, conn: Connection, now: float) -> None: ...

    def received(self, conn: Connection, message: str | bytes, now: float) -> None: ...

    def sent(self, conn: Connection, message: str | bytes, now: float) -> None: ...

    def closed(self, conn: Connection, now: float) -> None:
        """`conn.close_code` (server) / `conn.client_close_code` say who closed, and how."""


MAX_MESSAGE_SIZE = 1 << 20  # what the vendors' own clients accept; the mocks read the same
logger = logging.getLogger("feedlab.server")


async def _until_closed(stream: trio.abc.Stream) -> None:
    """Read and ignore until the peer closes its end (or breaks it)."""
    try:
        while await stream.receive_some():
            pass
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


def _benign(exc: BaseException) -> bool:
    """Endings a network connection may have at any moment: not bugs of the mock. (A client's
    ping racing the server's close makes wsproto refuse to send the pong, for instance.)"""
    if isinstance(exc, BaseExceptionGroup):
        return all(_benign(e) for e in exc.exceptions)
    return isinstance(
        exc,
        trio.BrokenResourceError
        | trio.ClosedResourceError
        | trio_websocket.ConnectionClosed
        | LocalProtocolError
        | OSError,
    )


# Codes of a connection wsproto failed for a frame it could not parse (ParseFailed): invalid
# UTF-8 (1007), a protocol error (1002). trio-websocket then closes the stream without the close
# frame wsproto decided on; the link writes it just before the stream closes.
_PARSE_FAILURE_CODES = frozenset({1002, 1007})


def _owed_close_frame(ws: trio_websocket.WebSocketConnection) -> bytes | None:
    reason = ws.closed
    wsproto = ws._wsproto  # private: trio-websocket 0.12 (pinned in pyproject.toml)
    if reason is None or reason.code not in _PARSE_FAILURE_CODES:
        return None
    if wsproto.state is not ConnectionState.OPEN:
        return None  # a close frame went out already
    text = (reason.reason or "")[:100]  # a close reason has room for 123 bytes
    data: bytes = wsproto.send(CloseConnection(code=reason.code, reason=text))
    return data


async def _say_owed_close(ws: trio_websocket.WebSocketConnection, link: Link) -> None:
    data = _owed_close_frame(ws)
    if data is not None:
        async with ws._stream_lock:  # after any frame being written: frames never interleave
            await link.say_last(data)


COALESCE_BYTES = 64 * 1024  # frames written together up to about this many bytes per write
# Connections a long-running `feedlab serve` remembers after they end (history and ledger): a
# finished connection keeps its WebSocket, link and session, some 20-30 KiB.
SERVE_HISTORY = 100
CLOSE_TIMEOUT = 5.0  # seconds a close frame may take to get out before the server drops TCP
HANDSHAKE_TIMEOUT = 10.0


@dataclass
class ConnectionStats:
    frames_sent: int = 0
    events_sent: int = 0
    frames_received: int = 0
    overflows: int = 0


@dataclass
class Connection:
    """A live (or finished) server-side connection, with the controls faults use."""

    info: ConnectionInfo
    session: Session
    link: Link
    ws: trio_websocket.WebSocketConnection
    server: MockServer
    max_buffer: int
    stats: ConnectionStats = field(default_factory=ConnectionStats)
    close_code: int | None = None  # what the server sent, if it closed first
    client_close_code: int | None = None  # what the client sent (1006: it just vanished)
    closed_at: float | None = None
    done: trio.Event = field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        self._messages: deque[str | bytes] = deque()
        self._events: list[Event] = []
        self._overflowed = False
        self._poked = False
        self._wake = trio.Event()
        self._drained = trio.Event()
        self._injected: list[Action] = []
        self._ending: Action | None = None  # a close or abort ordered from outside
        self._client_gone = False
        self._parked = False  # the driver waits for a wake-up or its timer (`_send_now`)
        self._armed: float | None = None  # the timer it waits for, if any
        self._unflushed: list[Send] = []  # sent by `_send_now`, partly still held by the link
        self._failed: Exception | None = None  # what `_send_now` met, for the driver to raise

    @property
    def conn_id(self) -> int:
        return self.info.conn_id

    @property
    def open(self) -> bool:
        return not self.done.is_set()

    # -- inputs (called from other tasks; never block) ---------------------------------------------

    def deliver(self, events: list[Event], now: float) -> None:
        """Market events for this connection (`now`: the market's time). Past `max_buffer`
        unsent events: overflow."""
        self.server.ledger.note(self.conn_id, "routed", events)
        if self._parked and not self._wake.is_set() and self._send_now(events, now):
            return
        if len(self._events) + len(events) > self.max_buffer:
            if not self._overflowed:
                self.stats.overflows += 1
            self._overflowed = True
        else:
            self._events.extend(events)
        self._wake.set()

    def _send_now(self, events: list[Event], now: float) -> bool:
        """Publish and write these events here, in the feed's task, when the driver is parked
        (waiting for a wake-up or its timer) with nothing else to do and nothing sees the
        frames one by one: the frames its next wake-up would send, sent without the wake-up
        (the scheduler round trip, the checks of a step). With hundreds of connections each
        woken for an event or two, the wake-ups were about a sixth of the mock's CPU. False:
        the driver's way instead (a fault on, a tap or observer, TLS or memory streams, a
        write under way).

        What the kernel does not take at once the link holds and the driver writes next
        (`Link.write_now`, `flush`); anything but frames (a close) goes to the driver too."""
        server, link = self.server, self.link
        faults = server.faults
        if (
            server.taps
            or server.observers
            or (faults is not None and not faults.quiet)
            or not link.can_write_now
            or self.ws._stream_lock.locked()
            or self.ws.closed is not None
        ):
            return False
        session = self.session
        try:
            actions = session.publish(events, now)
        except Exception as exc:  # a bug: the driver raises it, and this connection ends
            self._failed = exc
            self._wake.set()
            return True
        if any(type(action) is not Send for action in actions):
            self._injected.extend(actions)
            self._wake.set()
            return True
        sends = cast(list[Send], actions)  # only frames: checked above
        if sends:
            data = b"".join([data_frame(send.data) for send in sends])
            if link.write_now(data):
                self._sent_all(sends)
            else:
                self._unflushed = sends
                self._wake.set()
        # A timer (a batch waiting, a bar, a heartbeat) earlier than the driver's, or due
        # already: wake the driver to re-arm or to tick. (Under `--rate max` market time runs
        # ahead of the clock the driver's timer is on: deliveries are what tell it.)
        deadline = session.next_deadline()
        armed = self._armed
        if deadline is not None and (armed is None or deadline < armed or deadline <= now):
            self._wake.set()
        return True

    async def wait_for_room(self, count: int) -> None:
        while self.open and len(self._events) + count > self.max_buffer and self._events:
            self._drained = trio.Event()
            await self._drained.wait()

    def poke(self) -> None:
        self._poked = True
        self._wake.set()

    # -- fault controls ----------------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with a close frame, as the server would. A close frame that cannot get out
        (a stalled link, a client that stopped reading) is given up after a while and the
        connection dropped, as a real server does."""
        self._end(Close(code, reason))
        with trio.move_on_after(CLOSE_TIMEOUT):
            await self.done.wait()
            return
        await self.abort()

    async def abort(self) -> None:
        """Drop the connection without a close frame, whatever the driver is doing."""
        if self.close_code is None:
            self.close_code = 1006
        self._end(Abort())
        await self.link.cut()
        await self.done.wait()

    async def reset(self) -> None:
        """Drop the connection with a TCP reset."""
        self.close_code = 1006
        await self.link.reset()
        await self.done.wait()

    def inject(self, action: Action) -> None:
        """Send something the session did not decide to send (an oversize frame, a status)."""
        self._injected.append(action)
        self._wake.set()

    def stall(self) -> None:
        self.link.stall()

    def resume(self) -> None:
        self.link.resume()

    def _end(self, action: Action) -> None:
        if self._ending is None:
            self._ending = action
        self._wake.set()

    # -- the driver --------------------------------------------------------------------------------

    async def run(self) -> None:
        market, session = self.server.market, self.session
        hub = self.server.hub
        hub.register(self.conn_id, self.poke)
        self.server.ledger.opened(self.conn_id, market.now())
        for observer in self.server.observers:
            observer.opened(self, market.now())
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read)
                if not await self._perform(session.opened(market.now())):
                    return
                while True:
                    deadline = self._next_deadline()
                    # Meanwhile the feed may send for this connection (`_send_now`); it wakes
                    # the driver only for a timer earlier than this one, or one already due.
                    self._parked, self._armed = True, deadline
                    try:
                        if deadline is None:  # no timer: no cancel scope (5-8 us a wake-up)
                            await self._wake.wait()
                            timed_out = False
                        else:
                            with trio.move_on_at(market.trio_time(deadline)) as timer:
                                await self._wake.wait()
                            timed_out = timer.cancelled_caught
                    finally:
                        self._parked = False
                    self._wake = trio.Event()
                    now = market.now()
                    if timed_out and deadline is not None:
                        # Woken by the deadline: it is due, whatever float rounding says.
                        now = max(now, deadline)
                    if not await self._step(session, now):
                        break
                nursery.cancel_scope.cancel()
        finally:
            self.closed_at = market.now()
            self.server.ledger.closed(
                self.conn_id, self.closed_at, self.close_code, self.client_close_code
            )
            for observer in self.server.observers:
                observer.closed(self, self.closed_at)
            for hook in self.server.on_close:
                hook(self)
            hub.forget(self.conn_id)
            session.closed(market.now())
            self.done.set()
            self._drained.set()
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.link)

    def _next_deadline(self) -> float | None:
        """The session's next timer, or an event a fault holds back that is due out sooner."""
        deadline = self.session.next_deadline()
        faults = self.server.faults
        if faults is not None and not faults.quiet:
            release = faults.next_release(self)
            if release is not None and (deadline is None or release < deadline):
                return release
        return deadline

    async def _step(self, session: Session, now: float) -> bool:
        if self._failed is not None:
            raise self._failed
        if self._unflushed and not await self._flush_link():
            return False
        if self._client_gone:
            return False
        if self._ending is not None:
            await self._perform([self._ending])
            return False
        if self._injected:
            injected, self._injected = self._injected, []
            if not await self._perform(injected):
                return False
        while self._messages:
            if not await self._perform(session.received(self._messages.popleft(), now)):
                return False
        if self._overflowed:
            self._overflowed = False
            self._events.clear()
            if not await self._perform(session.overflowed(now)):
                return False
        if self._events:
            events, self._events = self._events, []
            self._drained.set()
            faults = self.server.faults
            if faults is not None and not faults.quiet:
                events = faults.on_events(self, events, now)
            if events and not await self._perform(session.publish(events, now)):
                return False
        faults = self.server.faults
        if faults is not None and not faults.quiet:
            released = faults.released(self, now)
            if released and not await self._perform(session.publish(released, now)):
                return False
        deadline = session.next_deadline()
        if self._poked or (deadline is not None and deadline <= now):
            self._poked = False
            if not await self._perform(session.tick(now)):
                return False
        return True

    async def _perform(self, actions: list[Action]) -> bool:
        """Carry out a session's actions; False once the connection is finished.

        Consecutive frames go out in one write when the link has no byte-level fault switched
        on (`Link.plain`): the same frames on the wire in fewer, larger TCP writes, which is
        what keeps a fast feed (Theta's one message per frame) from costing a system call per
        message. Under a byte fault every frame is its own write, as the fault expects."""
        faults = self.server.faults
        link = self.link
        plain = link.plain  # read again after every await: a fault may switch on meanwhile
        batch: list[Send] = []
        for action in actions:
            if isinstance(action, Send):
                if faults is not None and not faults.quiet:
                    action = faults.on_frame(self, action)
                if plain:
                    batch.append(action)
                    continue
                if batch and not await self._send_batch(batch):
                    return False
                batch = []
                try:
                    await self.ws.send_message(action.data)
                except trio_websocket.ConnectionClosed:
                    return False
                self._sent(action)
                plain = link.plain
                continue
            if batch:
                if not await self._send_batch(batch):
                    return False
                batch = []
                plain = link.plain
            if isinstance(action, Close):
                self.close_code = action.code
                with trio.move_on_after(2.0):
                    await self.ws.aclose(action.code, action.reason or None)
                await trio.aclose_forcefully(self.link)
                return False
            elif isinstance(action, Abort):
                self.close_code = 1006
                await self.link.cut()
                return False
        return not batch or await self._send_batch(batch)

    async def _send_batch(self, sends: list[Send]) -> bool:
        """Write these frames in as few writes as `COALESCE_BYTES` allows, then account for them.

        The frames are built here, as trio-websocket would build them (a server's data frames
        are unmasked and unfragmented, and no extension is ever negotiated), and written under
        trio-websocket's own write lock, so a pong its reader sends never lands inside them."""
        ws = self.ws
        frames = [data_frame(send.data) for send in sends]
        start = 0
        while start < len(frames):
            if ws.closed is not None:  # closing or closed: trio-websocket would refuse to send
                return False
            size = len(frames[start])
            end = start + 1
            while end < len(frames) and size < COALESCE_BYTES:
                size += len(frames[end])
                end += 1
            data = frames[start] if end == start + 1 else b"".join(frames[start:end])
            try:
                await self._write_locked(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await ws._abort_web_socket()
                return False
            self._sent_all(sends[start:end])
            start = end
        return True

    async def _flush_link(self) -> bool:
        """Write what `_send_now` left with the link, then account for its frames."""
        sends, self._unflushed = self._unflushed, []
        lock = self.ws._stream_lock
        try:
            async with lock:
                await self.link.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self.ws._abort_web_socket()
            return False
        self._sent_all(sends)
        return True

    async def _write_locked(self, data: bytes) -> None:
        """Write under trio-websocket's write lock. Taken without a checkpoint when it is free
        (nearly always): the write itself is one, and a second one per frame is another trip
        through Trio's scheduler (about 5 us) for nothing."""
        lock = self.ws._stream_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            await self.link.send_all(data)
        finally:
            lock.release()

    def _sent_all(self, sends: list[Send]) -> None:
        """`_sent` for frames that went out together: with no tap or observer to tell frame by
        frame, the ledger and the counters take them in one go."""
        server = self.server
        if server.taps or server.observers:
            for send in sends:
                self._sent(send)
            return
        events = sends[0].events if len(sends) == 1 else [e for send in sends for e in send.events]
        self.stats.frames_sent += len(sends)
        self.stats.events_sent += len(events)
        server.ledger.note(self.conn_id, "sent", events)

    def _sent(self, action: Send) -> None:
        server = self.server
        self.stats.frames_sent += 1
        self.stats.events_sent += len(action.events)
        server.ledger.note(self.conn_id, "sent", action.events)
        server.on_sent(self, action)
        if server.observers:
            now = server.market.now()
            for observer in server.observers:
                observer.sent(self, action.data, now)

    async def _read(self) -> None:
        try:
            while True:
                message = await self.ws.get_message()
                self.stats.frames_received += 1
                for observer in self.server.observers:
                    observer.received(self, message, self.server.market.now())
                self._messages.append(message)
                self._wake.set()
        except trio_websocket.ConnectionClosed as closed:
            if self.close_code is None and closed.reason is not None:
                self.client_close_code = closed.reason.code
            self._client_gone = True
            self._wake.set()


class MockServer:
    """One vendor served: its core, the feed from the market, and every connection."""

    def __init__(
        self,
        vendor: VendorServer,
        hub: Hub,
        market: Market,
        *,
        seed: int = 0,
        max_buffer: int = 50_000,
        backpressure: bool = False,
        keep_events: bool = True,
        history_limit: int | None = None,
    ) -> None:
        self.vendor = vendor
        self.hub = hub
        self.market = market
        self.seed = seed
        self.max_buffer = max_buffer
        # With a market running flat out (`--rate max`) the feed waits for slow connections
        # instead of declaring them slow consumers.
        self.backpressure = backpressure
        self.connections: dict[int, Connection] = {}
        # Every connection ever accepted, oldest first; a long-running `feedlab serve` keeps
        # only the last `history_limit`, and its ledger the last `history_limit` finished ones.
        self.history: list[Connection] = []
        self.history_limit = history_limit
        self._ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self.taps: list[Callable[[Connection, Send], None]] = []  # each Send with its events
        self.observers: list[WireObserver] = []  # the wire as it happens (the recorder)
        self.ports: list[TcpPort] = []  # where it listens on TCP
        # When a `restart` that answers ("none", "503") turned a connection away: how hard
        # clients knocked while it was down (a long-running `feedlab serve` keeps the last
        # `history_limit`). A closed port's refusals never reach the server.
        self.turned_away: deque[float] = deque(maxlen=history_limit)
        # The `restart` faults under way, oldest first, each as its answer to a connect: the
        # latest one's answer holds until it ends (a restart within a restart).
        self._restarts: list[list[str]] = []
        self.ledger = Ledger(keep_events, keep_closed=history_limit)
        self.errors: list[BaseException] = []  # what broke single connections (bugs, not faults)
        # Called with every newly accepted connection: network conditions (latency, bandwidth,
        # ...) that a fault set for a while apply to reconnections too.
        self.on_accept: list[Callable[[Connection], None]] = []
        # Called as each connection ends, while its session still holds what it had (its
        # authentication, its subscriptions): `serve --scenario`'s view of short connections.
        self.on_close: list[Callable[[Connection], None]] = []
        self.faults: MessageFilter | None = None  # message-level faults (mocks.director)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The feed actor: split every market batch by connection. Connections run in here too."""
        batches = self.market.subscribe(interested=self.hub.has_interest)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            async for batch in batches:
                now = self.market.now()
                for conn_id, events in self.hub.route(batch).items():
                    conn = self.connections.get(conn_id)
                    if conn is None:
                        continue
                    if self.backpressure:
                        await conn.wait_for_room(len(events))
                        now = self.market.now()
                    conn.deliver(events, now)

    def on_sent(self, conn: Connection, action: Send) -> None:
        for tap in self.taps:
            tap(conn, action)

    # -- accepting connections ---------------------------------------------------------------------

    async def handle_stream(self, stream: trio.abc.Stream, remote: str) -> None:
        """Serve one client's byte stream. Whatever goes wrong on one connection ends that
        connection only: the server keeps serving the others (and records the error)."""
        try:
            await self._serve_stream(stream, remote)
        except BaseException as exc:  # sorted below: cancellation, benign endings, bugs
            if isinstance(exc, trio.Cancelled | KeyboardInterrupt) or (
                isinstance(exc, BaseExceptionGroup)
                and exc.subgroup(lambda e: isinstance(e, trio.Cancelled | KeyboardInterrupt))
                is not None
            ):
                raise
            bugs = (
                exc.subgroup(lambda e: not _benign(e))
                if isinstance(exc, BaseExceptionGroup)
                else (None if _benign(exc) else exc)
            )
            if bugs is not None:
                self.errors.append(bugs)
                logger.error("connection from %s failed", remote, exc_info=bugs)

    async def _serve_stream(self, stream: trio.abc.Stream, remote: str) -> None:
        """Handshake, then the connection until it ends."""
        link = Link(stream, functools.partial(derive_rng, self.seed, f"link:{remote}"))
        if self.refusing:  # accepted in the instant before a `restart` closed the port
            await trio.aclose_forcefully(link)
            return
        if self.down == "none":  # a proxy before a dead server: held until the client lets go
            self.turned_away.append(self.market.now())
            await _until_closed(link)
            await trio.aclose_forcefully(link)
            return
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(HANDSHAKE_TIMEOUT):
                    request = await trio_websocket.wrap_server_stream(
                        nursery, link, max_message_size=MAX_MESSAGE_SIZE
                    )
            except (trio.TooSlowError, trio_websocket.ConnectionClosed, trio.BrokenResourceError):
                nursery.cancel_scope.cancel()
                await trio.aclose_forcefully(link)
                return
            if self.down == "503":
                self.turned_away.append(self.market.now())
                await request.reject(503, body=b"Service Unavailable")
                nursery.cancel_scope.cancel()
                return
            target = urlsplit(request.path)
            if not self.vendor.accepts_path(target.path):
                await request.reject(404, body=b"Not Found")
                nursery.cancel_scope.cancel()
                return
            ws = await request.accept()
            link.last_words = functools.partial(_say_owed_close, ws, link)
            now = self.market.now()
            info = ConnectionInfo(
                conn_id=next(self._ids),
                path=target.path,
                query=dict(parse_qsl(target.query)),
                headers={
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers
                },
                remote=remote,
                opened_at=now,
            )
            session = self.vendor.open(info, now)
            conn = Connection(info, session, link, ws, self, self.max_buffer)
            self.connections[info.conn_id] = conn
            self.history.append(conn)
            if self.history_limit is not None and len(self.history) > self.history_limit:
                del self.history[: len(self.history) - self.history_limit]
            for hook in self.on_accept:
                hook(conn)
            try:
                await conn.run()
            finally:
                del self.connections[info.conn_id]
                nursery.cancel_scope.cancel()

    @property
    def down(self) -> str | None:
        """While a `restart` is under way, what a connect meets (`RESTART_ANSWERS`)."""
        return self._restarts[-1][0] if self._restarts else None

    @property
    def refusing(self) -> bool:
        """Down for a `restart` with nobody listening: connections are refused."""
        return self.down == "refused"

    async def restart(self, downtime: float, answer: str = "refused") -> None:
        """Every connection drops without a close frame, new connections fail for `downtime`
        seconds, then the server serves again (a deploy, a crash and restart). How they fail
        is `answer`: "refused" closes the TCP port, so the kernel refuses at once, as for a
        dead server; "none" accepts and never answers the upgrade, and keeps the connection so
        until the client lets go, after the restart too (a proxy in front of a dead server:
        only the client's own handshake timeout ends the wait); "503" answers the upgrade with
        HTTP 503, as a load balancer with no backend does."""
        entry = [answer]  # its identity tells nested restarts with the same answer apart
        self._restarts.append(entry)
        self._ports_follow()
        try:
            async with trio.open_nursery() as nursery:
                for conn in list(self.connections.values()):
                    nursery.start_soon(conn.abort)
            await trio.sleep(downtime)
        finally:
            self._restarts = [e for e in self._restarts if e is not entry]
            self._ports_follow()

    def _ports_follow(self) -> None:
        for port in self.ports:
            if self.refusing:
                port.close()
            else:
                port.open()

    async def serve_tcp(
        self, host: str = "127.0.0.1", port: int = 0, *, ssl_context: ssl.SSLContext | None = None
    ) -> int:
        """Also listen on TCP (with `ssl_context`: TLS, for wss://); returns the bound port."""
        assert self._nursery is not None, "MockServer.run must be started first"
        tcp = TcpPort(self.handle_stream, host, ssl_context=ssl_context)
        bound: int = await self._nursery.start(tcp.serve, port)
        self.ports.append(tcp)
        if self.refusing:
            tcp.close()
        return bound

    @asynccontextmanager
    async def connect(
        self, url: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        """An in-memory WebSocket to this server (the `Connector` clients take under test)."""
        assert self._nursery is not None, "MockServer.run must be started first"
        if self.refusing:  # what a TCP client sees from a port nobody listens on
            refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
            raise trio_websocket.HandshakeError() from refused
        client_end, server_end = memory_pair()
        self._nursery.start_soon(self.handle_stream, server_end, "memory")
        parts = urlsplit(url)
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            async with trio.open_nursery() as nursery:
                try:
                    with trio.fail_after(HANDSHAKE_TIMEOUT):
                        ws = await trio_websocket.wrap_client_stream(
                            nursery,
                            client_end,  # type: ignore[arg-type]  # any Stream; typed narrowly
                            parts.hostname or "localhost",
                            resource,
                            extra_headers=list(headers or []),
                            max_message_size=MAX_MESSAGE_SIZE,
                        )
                except trio.TooSlowError:
                    await trio.aclose_forcefully(client_end)  # the server sees us give up
                    raise trio_websocket.ConnectionTimeout() from None
                try:
                    yield ws
                finally:
                    with trio.move_on_after(2.0):
                        await ws.aclose()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # A rejected handshake or the caller's own error, raised through the reader's nursery.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
