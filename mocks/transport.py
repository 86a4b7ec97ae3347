"""Byte streams under the mock WebSockets: TCP for external clients, memory for virtual time,
and the `Link` wrapper through which byte-level faults act (stall, cut, reset, latency,
bandwidth, slicing) — what Toxiproxy does, inside the process and seeded.

Everything a server connection reads or writes passes through its `Link`, so a fault applies the
same way whether the client is across TCP or in the same Trio run over memory streams.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import random
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable

import trio
import trio.testing

logger = logging.getLogger(__name__)


class Link(trio.abc.Stream):
    """A stream with switches. With every switch off it only counts bytes."""

    def __init__(
        self, stream: trio.abc.Stream, rng: Callable[[], random.Random] | None = None
    ) -> None:
        self._stream = stream
        self._socket = direct_socket(stream)
        # Made when a jitter first needs it: a `Random` is 2.5 KB, a tenth of an idle
        # connection, and most connections never see a fault.
        self._make_rng = rng or (lambda: random.Random(0))
        self._rng: random.Random | None = None
        self._flowing = trio.Event()
        self._flowing.set()
        self.latency = 0.0  # seconds added before each write
        self.jitter = 0.0  # up to this much more, uniformly
        self.bandwidth: float | None = None  # bytes per second
        self.slice_size: int | None = None  # write in pieces of this many bytes ...
        self.slice_delay = 0.0  # ... this far apart
        self.withhold_pong = False  # drop our pong frames: the client's pings go unanswered
        self.fragment_size: int | None = None  # re-frame messages into continuation frames
        self.bytes_sent = 0
        self.bytes_received = 0
        # Bytes `write_now` could not write at once: whatever is written next goes after them.
        self._held = b""
        # Awaited as the stream closes (shielded, at most a second): writes what is still owed
        # to the client, e.g. a close frame the WebSocket library decided on but never wrote.
        self.last_words: Callable[[], Awaitable[None]] | None = None
        self._closing = False
        self._closed = trio.Event()

    @property
    def plain(self) -> bool:
        """No byte- or frame-level switch is on: writes may carry several frames at once."""
        return not (
            self.latency
            or self.jitter
            or self.bandwidth
            or self.slice_size
            or self.withhold_pong
            or self.fragment_size
        )

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    @property
    def can_write_now(self) -> bool:
        """`write_now` may be used: a plain TCP socket, no switch on, nothing held back."""
        return (
            self._socket is not None
            and not self._held
            and not self._closing
            and self._flowing.is_set()
            and self.plain
        )

    def write_now(self, data: bytes) -> bool:
        """Write without waiting, from a task that must not wait (the feed, `mocks.server`):
        what the kernel takes now goes out, the rest is held and written before anything else
        this link writes. True if it all went out. Only while `can_write_now`, and under the
        WebSocket's write lock (it is free: the caller just checked), so no frame lands inside
        another. An error is met again, and raised, by the next write."""
        assert self._socket is not None
        sent = _write_some(self._socket, data)
        self.bytes_sent += sent
        if sent < len(data):
            self._held = data[sent:]
            return False
        return True

    @property
    def holding(self) -> bool:
        """Bytes `write_now` left are still to be written (`flush` writes them)."""
        return bool(self._held)

    async def flush(self) -> None:
        """Write what `write_now` held back, waiting as long as it takes."""
        if self._held:
            await self._write(b"")

    def stall(self) -> None:
        """Stop moving bytes both ways, keep the socket: the client sees a half-open connection
        (no data, no pong, no close)."""
        if self._flowing.is_set():
            self._flowing = trio.Event()

    def resume(self) -> None:
        self._flowing.set()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # trio-websocket writes one WebSocket frame per call (server frames are unmasked), which
        # is what lets the WebSocket-level faults below work on the bytes. (The server writes
        # several frames at once only while the link is `plain`.)
        if self.withhold_pong and len(data) >= 2 and data[0] & 0x0F == _PONG:
            return
        if self.fragment_size and len(data) >= 2 and data[0] & 0x0F in (_TEXT, _BINARY):
            data = fragment_frame(bytes(data), self.fragment_size)
        # With every switch off a write costs one check: `Event.wait()` would be a scheduler
        # round trip even on a set event, and this is the mock's hottest path.
        if not self._flowing.is_set():
            await self._flowing.wait()
        if self.latency or self.jitter:
            if self._rng is None:
                self._rng = self._make_rng()
            await trio.sleep(self.latency + self._rng.uniform(0.0, self.jitter))
        size, delay = self.slice_size, self.slice_delay  # a fault may end mid-write
        if size:
            view = memoryview(data)
            for i in range(0, len(view), size):
                await self._write(view[i : i + size])
                if delay:
                    await trio.sleep(delay)
        else:
            await self._write(data)

    async def _write(self, data: bytes | bytearray | memoryview) -> None:
        if self.bandwidth:
            await trio.sleep(len(data) / self.bandwidth)
        if not self._flowing.is_set():
            await self._flowing.wait()
        if self._held:  # taken before the first await of the write: written once
            data, self._held = self._held + data, b""
        await send_direct(self._stream, self._socket, data)
        self.bytes_sent += len(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if not self._flowing.is_set():
            await self._flowing.wait()
        data = await self._stream.receive_some(max_bytes)
        # Bytes that arrive during a stall are held back until it ends.
        if not self._flowing.is_set():
            await self._flowing.wait()
        self.bytes_received += len(data)
        return data

    async def aclose(self) -> None:
        self._flowing.set()
        if self._closing:  # another task is closing (and may be writing last words): wait
            await self._closed.wait()
            return
        self._closing = True
        try:
            # Said once; forgetting them also breaks the cycle link -> ws -> link.
            last_words, self.last_words = self.last_words, None
            if last_words is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await last_words()
        finally:
            try:
                await self._stream.aclose()
            finally:
                self._closed.set()

    async def say_last(self, data: bytes) -> None:
        """Write past every switch (the connection is ending); if the stream is gone already
        the client sees 1006, as it would have."""
        data, self._held = self._held + data, b""
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def cut(self) -> None:
        """Close the connection without a WebSocket close frame (the client sees 1006)."""
        self._flowing.set()  # writers blocked by a stall now fail on the closed stream
        await trio.aclose_forcefully(self._stream)

    async def reset(self) -> None:
        """Close with a TCP RST where there is a socket (SO_LINGER 0); memory streams just cut."""
        raw = getattr(self._stream, "transport_stream", self._stream)  # under TLS: the TCP stream
        sock = getattr(raw, "socket", None)
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        await self.cut()


def direct_socket(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    """The socket `send_direct` may write to: a plain TCP stream's (TLS and memory: None)."""
    return stream.socket if isinstance(stream, trio.SocketStream) else None


async def send_direct(
    stream: trio.abc.Stream,
    sock: trio.socket.SocketType | None,
    data: bytes | bytearray | memoryview,
) -> None:
    """`stream.send_all(data)`, writing straight to the non-blocking socket while the kernel
    takes the bytes. Trio's `send_all` spends about 11 us a call on two scheduler round trips
    around a 4 us system call: at a live feed's thousands of frames a second, the largest cost
    per frame. (The server's connection loop checkpoints at every wake-up anyway.) What the
    kernel does not take now, or an error, goes to Trio, which waits and raises as usual: an
    error leaves `sent` at 0, and Trio meets it again on the same bytes."""
    sent = 0 if sock is None else _write_some(sock, data)
    if sent < len(data):
        await stream.send_all(memoryview(data)[sent:] if sent else data)


def _write_some(sock: trio.socket.SocketType, data: bytes | bytearray | memoryview) -> int:
    """What the kernel takes of `data` now, without waiting; 0 on an error, which the next
    write through Trio meets again (and raises)."""
    try:
        return os.write(sock.fileno(), data)
    except OSError:
        return 0


_TEXT, _BINARY, _PONG = 0x1, 0x2, 0xA


def _frame_header(fin: bool, opcode: int, length: int) -> bytes:
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return bytes((first, 126)) + length.to_bytes(2, "big")
    return bytes((first, 127)) + length.to_bytes(8, "big")


_pack_medium = struct.Struct("!BBH").pack  # a header with a 16-bit length


def data_frame(message: str | bytes) -> bytes:
    """One unmasked, unfragmented WebSocket data frame, as a server sends it (RFC 6455 5.2):
    a text frame for str, a binary frame for bytes. The same bytes wsproto makes."""
    if isinstance(message, str):
        payload, first = message.encode(), 0x80 | _TEXT
    else:
        payload, first = message, 0x80 | _BINARY
    length = len(payload)
    if length < 126:
        return bytes((first, length)) + payload
    if length < 1 << 16:  # every frame of a fast feed: one C call for the header
        return _pack_medium(first, 126, length) + payload
    return bytes((first, 127)) + length.to_bytes(8, "big") + payload


def fragment_frame(frame: bytes, size: int) -> bytes:
    """Split one unmasked, unfragmented data frame into a first frame and continuation frames."""
    opcode = frame[0] & 0x0F
    if not frame[0] & 0x80 or frame[1] & 0x80:
        return frame  # already a fragment, or masked: leave it alone
    length = frame[1] & 0x7F
    offset = 2
    if length == 126:
        length, offset = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, offset = int.from_bytes(frame[2:10], "big"), 10
    payload = frame[offset : offset + length]
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    out = bytearray()
    for i, piece in enumerate(pieces):
        out += _frame_header(i == len(pieces) - 1, opcode if i == 0 else 0, len(piece)) + piece
    return bytes(out)


StreamHandler = Callable[[trio.abc.Stream, str], Awaitable[None]]


class TcpPort:
    """A listening TCP port that a `restart` closes for a while and opens again on the same
    number. While it is closed nobody listens, so the kernel refuses a connect at once, as it
    does for a crashed server: a port that accepted and then reset instead would keep a
    trio-websocket client waiting out its whole connect timeout on every attempt.

    `serve` listens on (host, port) (port 0 picks one; `task_status.started` gets the bound
    port). With `ssl_context` every connection is TLS (wss://); the TLS handshake happens on
    the handler's first read, so it falls under the WebSocket handshake's timeout. Connections
    already accepted live on while the port is closed: whoever closes it ends them.
    """

    REOPEN_RETRY = 0.1  # seconds between tries when the port number is taken meanwhile

    def __init__(
        self, handler: StreamHandler, host: str, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.handler, self.host, self.ssl_context = handler, host, ssl_context
        self.port: int | None = None
        self.closed = False
        self._changed = trio.Event()

    def close(self) -> None:
        self.closed = True
        self._changed.set()

    def open(self) -> None:
        self.closed = False
        self._changed.set()

    async def _until(self, closed: bool) -> None:
        while self.closed != closed:
            await self._changed.wait()
            self._changed = trio.Event()

    async def serve(self, port: int, *, task_status: trio.TaskStatus[int]) -> None:
        listeners = await trio.open_tcp_listeners(port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as connections:
            task_status.started(self.port)
            while True:
                async with trio.open_nursery() as listening:
                    listening.start_soon(
                        functools.partial(
                            trio.serve_listeners,
                            self._on_stream,
                            listeners,
                            handler_nursery=connections,
                        )
                    )
                    await self._until(closed=True)
                    listening.cancel_scope.cancel()  # the listeners close as their tasks end
                await self._until(closed=False)
                listeners = await self._listen_again(self.port)

    async def _listen_again(self, port: int) -> list[trio.SocketListener]:
        while True:
            try:
                return await trio.open_tcp_listeners(port, host=self.host)
            except OSError as exc:  # another socket took the number meanwhile: wait it out
                if exc.errno != errno.EADDRINUSE:
                    raise
                logger.warning("port %d is taken; listening again when it is free", port)
                await trio.sleep(self.REOPEN_RETRY)

    async def _on_stream(self, stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
        except OSError:  # reset before we looked (ENOTCONN): nothing to serve, keep listening
            await stream.aclose()
            return
        served: trio.abc.Stream = stream
        if self.ssl_context is not None:
            # https_compatible: a client may drop TCP after the close frame without TLS's
            # close_notify; that is an ordinary end, not a broken stream.
            served = trio.SSLStream(
                stream, self.ssl_context, server_side=True, https_compatible=True
            )
        await self.handler(served, f"{peer[0]}:{peer[1]}")


def memory_pair() -> tuple[trio.abc.Stream, trio.abc.Stream]:
    """(client end, server end) of an in-memory, in-order byte pipe."""
    client, server = trio.testing.memory_stream_pair()
    return client, server
