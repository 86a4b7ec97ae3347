"""The Amberdata (web3api) options WebSocket mock: JSON-RPC 2.0 over `ws://HOST:8766/` (or
`/options`), Deribit-style order-book snapshots, tickers, trades, one-minute bars and open interest.

Layout: `wire` (what clients send, what the server writes), `session` (one connection, sans-I/O),
`streams` (what each stream says about an instrument), `server` (keys, plans, faults), and
`invented` (every behaviour Amberdata does not document, in one place).
"""

from __future__ import annotations

from mocks.amberdata.server import (
    AmberdataServer,
    AmberdataSettings,
    create_server,
)
from mocks.amberdata.session import AmberdataSession

VENDOR = "amberdata"
DEFAULT_PORT = 8766
PATH = "/"

__all__ = [
    "DEFAULT_PORT",
    "PATH",
    "VENDOR",
    "AmberdataServer",
    "AmberdataSession",
    "AmberdataSettings",
    "create_server",
]
