"""`Link` over real TCP: a plain socket is written directly while the kernel takes the bytes,
and whatever it does not take, or refuses, goes through Trio with Trio's waits and errors."""

from __future__ import annotations

import socket
import struct

import pytest
import trio
import trio.testing

from mocks.transport import Link


async def _tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """(server end, client end) of a loopback TCP connection."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    return server, client


BIG = b"".join(i.to_bytes(4, "big") for i in range(512 * 1024))  # 2 MiB, no repeats


async def _narrow_tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """`_tcp_pair` with small buffers: the kernel takes only part of a big write at once."""
    server, client = await _tcp_pair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    return server, client


async def _read_slowly(client: trio.SocketStream, size: int, into: bytearray) -> None:
    while len(into) < size:
        into.extend(await client.receive_some(7_000))
        await trio.sleep(0)


async def test_a_write_bigger_than_the_socket_buffer_arrives_whole_and_in_order() -> None:
    server, client = await _narrow_tcp_pair()  # Trio waits for room
    link = Link(server)
    data = BIG
    received = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read_slowly, client, len(data), received)
        with trio.fail_after(30):
            await link.send_all(data)
            await link.send_all(b"after")
    assert bytes(received) == data
    assert await client.receive_some(5) == b"after"
    assert link.bytes_sent == len(data) + 5
    await link.aclose()
    await client.aclose()


async def test_a_write_to_a_reset_connection_raises_trios_broken_resource_error() -> None:
    server, client = await _tcp_pair()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await client.aclose()  # an RST to the server's socket
    link = Link(server)
    with pytest.raises(trio.BrokenResourceError), trio.fail_after(10):
        for _ in range(100):  # the first write may still be taken before the RST is seen
            await link.send_all(b"x" * 1024)
            await trio.sleep(0.01)
    await link.aclose()


async def test_a_write_after_the_link_closed_raises_trios_closed_resource_error() -> None:
    server, client = await _tcp_pair()
    link = Link(server)
    await link.send_all(b"first")
    assert await client.receive_some(5) == b"first"
    await link.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await link.send_all(b"second")
    await client.aclose()


async def test_write_now_holds_what_the_kernel_does_not_take_and_writes_it_first() -> None:
    server, client = await _narrow_tcp_pair()
    link = Link(server)
    data = BIG
    assert link.can_write_now
    assert not link.write_now(data)  # far more than the buffers take at once
    assert link.holding and not link.can_write_now
    received = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read_slowly, client, len(data) + 5, received)
        with trio.fail_after(30):
            await link.send_all(b"after")  # goes out after every held byte
    assert bytes(received) == data + b"after"
    assert not link.holding and link.can_write_now
    assert link.bytes_sent == len(data) + 5
    await link.aclose()
    await client.aclose()


async def test_flush_writes_what_write_now_held() -> None:
    server, client = await _narrow_tcp_pair()
    link = Link(server)
    data = BIG
    assert not link.write_now(data)
    received = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read_slowly, client, len(data), received)
        with trio.fail_after(30):
            await link.flush()
    assert bytes(received) == data
    assert link.write_now(b"small") and await client.receive_some(5) == b"small"
    await link.aclose()
    await client.aclose()


async def test_nothing_writes_now_through_a_switch_or_without_a_socket() -> None:
    server, client = await _tcp_pair()
    link = Link(server)
    link.latency = 0.01
    assert not link.can_write_now
    link.latency = 0.0
    link.stall()
    assert not link.can_write_now
    link.resume()
    assert link.can_write_now
    memory, _ = trio.testing.memory_stream_pair()
    assert not Link(memory).can_write_now  # no socket: memory streams and TLS
    await link.aclose()
    await client.aclose()
