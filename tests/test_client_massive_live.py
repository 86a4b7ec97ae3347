"""The Massive client against the live service (wss://socket.massive.com/options). Skipped unless
MASSIVE_API_KEY is set. Outside market hours no trades arrive, so the check is the conversation:
authenticated, the subscription acknowledged (not rejected), and any events well-formed."""

from __future__ import annotations

import os

import pytest
import trio

from clients.common import Rejected, Status
from clients.massive import LIVE_URL, Event, MassiveClient, Trade

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not os.environ.get("MASSIVE_API_KEY"), reason="MASSIVE_API_KEY not set"),
]


async def test_live_trades_wildcard_authenticates_and_streams_typed_trades() -> None:
    events: list[Event] = []
    async with MassiveClient(url=LIVE_URL, max_reconnects=0) as client:
        await client.subscribe("T.*")  # about 300 trades/s in market hours: cheap, never empty
        with trio.move_on_after(30):
            async for event in client:
                events.append(event)
                if sum(isinstance(e, Trade) for e in events) >= 5:
                    break
    assert Status("massive", "connected", "connection 0 authenticated") in events
    assert not [e for e in events if isinstance(e, Rejected)]
    for trade in (e for e in events if isinstance(e, Trade)):
        assert trade.symbol.startswith("O:") and trade.contract.ticker == trade.symbol
        assert trade.sequence is not None and trade.timestamp_ns > 1_600_000_000 * 10**9
    assert client.stats.events_dropped_unparseable == 0
