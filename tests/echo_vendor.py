"""A minimal vendor core for testing the vendor-neutral runner (`mocks.server`) on its own.

Protocol: the server greets with "hello"; the client sends an OCC ticker to subscribe; every
quote for it comes back as one JSON text frame; "close:<code>" makes the server close.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from mocks.hub import Hub
from mocks.session import Action, Close, ConnectionInfo, Send, Session
from mocks.sim.events import Event, OptionQuote
from mocks.sim.symbols import format_occ, parse_occ


class EchoSession:
    def __init__(self, hub: Hub, info: ConnectionInfo) -> None:
        self.hub, self.info = hub, info
        self.overflows = 0
        self.closed_at: float | None = None

    def opened(self, now: float) -> list[Action]:
        return [Send("hello")]

    def received(self, message: str | bytes, now: float) -> list[Action]:
        text = message.decode() if isinstance(message, bytes) else message
        if text.startswith("close:"):
            return [Close(int(text[6:]), "asked")]
        self.hub.want(self.info.conn_id, parse_occ(text))
        return [Send(f"subscribed {text}")]

    def publish(self, events: Sequence[Event], now: float) -> list[Action]:
        return [
            Send(
                orjson.dumps(
                    {
                        "sym": format_occ(e.contract),
                        "q": e.sequence,
                        "t": e.ts_ns,
                        "bp": e.bid,
                        "ap": e.ask,
                    }
                ).decode(),
                (e,),
            )
            for e in events
            if isinstance(e, OptionQuote)
        ]

    def tick(self, now: float) -> list[Action]:
        return []

    def next_deadline(self) -> float | None:
        return None

    def overflowed(self, now: float) -> list[Action]:
        self.overflows += 1
        return [Close(1008, "slow consumer")]

    def closed(self, now: float) -> None:
        self.closed_at = now


class EchoServer:
    vendor = "echo"

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.sessions: list[EchoSession] = []

    def accepts_path(self, path: str) -> bool:
        return path == "/echo"

    def open(self, info: ConnectionInfo, now: float) -> Session:
        session = EchoSession(self.hub, info)
        self.sessions.append(session)
        return session
