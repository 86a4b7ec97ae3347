"""Theta Data's Theta Terminal, mocked: the local streaming WebSocket at
`ws://127.0.0.1:25520/v1/events` (protocol: `shared/protocols/theta.md`).

`wire` reads requests (leniently, as the terminal's Gson does) and renders replies; `terminal`
holds the sans-I/O core (`ThetaTerminal`, `ThetaSession`); `settings` the plans and limits;
`universe` the contracts behind the full trade stream; `codes` Theta's exchange and condition
numbers; `invented` every behaviour no source documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mocks.hub import Hub
from mocks.sim.market import MarketSim
from mocks.theta.settings import ThetaSettings
from mocks.theta.terminal import PATH, VENDOR, ThetaSession, ThetaTerminal

DEFAULT_PORT = 25520

__all__ = [
    "DEFAULT_PORT",
    "PATH",
    "VENDOR",
    "ThetaSession",
    "ThetaSettings",
    "ThetaTerminal",
    "create_server",
]


def create_server(
    hub: Hub, market: MarketSim, *, api_keys: Sequence[str] = (), **options: Any
) -> ThetaTerminal:
    """The terminal. `api_keys` is accepted for symmetry and unused: the real terminal logs in
    upstream with the user's credentials; its local WebSocket asks for none."""
    del api_keys
    return ThetaTerminal(hub, market, ThetaSettings(**options))
