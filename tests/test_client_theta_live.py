"""The Theta client against a real Theta Terminal on this machine (or anything that speaks its
protocol on 127.0.0.1:25520, such as `feedlab serve theta`). Skipped when nothing answers there.
Outside market hours no data arrives, so these check the protocol, not the data."""

from __future__ import annotations

import socket

import pytest
import trio

from clients.common import Rejected, Status
from clients.theta import LIVE_URL, Event, ThetaClient

pytestmark = pytest.mark.live


@pytest.fixture
def terminal() -> str:
    try:
        with socket.create_connection(("127.0.0.1", 25520), timeout=0.3):
            pass
    except OSError:
        pytest.skip("no Theta Terminal answers on 127.0.0.1:25520")
    return LIVE_URL


async def test_live_terminal_answers_our_request_and_keeps_the_socket_alive(
    terminal: str,
) -> None:
    events: list[Event] = []
    async with ThetaClient(url=terminal) as client:

        async def collect() -> None:
            async for event in client:
                events.append(event)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            await client.subscribe("index:price:SPX", "option:quote:SPXW:20240315:4800:C")
            with trio.fail_after(20):
                while client.stats.confirmed + client.stats.rejected < 2:
                    await trio.sleep(0.1)
            await trio.sleep(4)  # several heartbeats: no watchdog reconnect
            nursery.cancel_scope.cancel()
        stats = client.stats
    assert stats.reconnects == 0 and stats.heartbeat_timeouts == 0
    assert stats.unknown_replies == 0 and stats.frames_dropped_unparseable == 0
    assert isinstance(events[0], Status) and events[0].status == "connected"
    # A plan without index or option data refuses with a reason the application sees.
    for event in events:
        if isinstance(event, Rejected):
            assert event.reason in ("INVALID_PERMS", "MAX_STREAMS_REACHED", "ERROR")
