"""The Massive (ex Polygon.io) options WebSocket mock: `ws://HOST:8765/options`, and the same
data 15 minutes late on `/delayed/options` (an invented place for the vendor's delayed host).

Inside: `wire` (what clients send, what the server renders), `session` (one connection, sans-I/O),
`server` (accounts, limits, faults), `aggregates` (A/AM bars from trades), `settings`, and
`invented` — every behaviour no source documents, in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mocks.hub import Hub
from mocks.massive.server import MassiveServer
from mocks.massive.session import MassiveSession
from mocks.massive.settings import Account, MassiveSettings
from mocks.sim.market import MarketSim

VENDOR = "massive"
DEFAULT_PORT = 8765
PATH = "/options"

__all__ = [
    "DEFAULT_PORT",
    "PATH",
    "VENDOR",
    "Account",
    "MassiveServer",
    "MassiveSession",
    "MassiveSettings",
    "create_server",
]


def create_server(
    hub: Hub, market: MarketSim, *, api_keys: Sequence[str] = (), **options: Any
) -> MassiveServer:
    """`options` are `MassiveSettings` fields; an unknown name raises TypeError."""
    return MassiveServer(hub, market, api_keys, MassiveSettings(**options))
