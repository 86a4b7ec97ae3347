"""The served vendors by name: where each one's core lives, its default port and URL path.

One obvious place for "which vendors exist"; the CLI, the test harness and the pytest plugin all
ask here. A vendor package provides `VENDOR`, `DEFAULT_PORT`, `PATH` and `create_server`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mocks.hub import Hub
from mocks.session import VendorServer
from mocks.sim.market import MarketSim

VENDORS = ("massive", "theta", "amberdata")


class VendorFactory(Protocol):
    def __call__(
        self, hub: Hub, market: MarketSim, *, api_keys: Sequence[str] = (), **options: Any
    ) -> VendorServer: ...


@dataclass(frozen=True)
class VendorSpec:
    name: str
    default_port: int
    path: str
    create_server: VendorFactory


def vendor_spec(name: str) -> VendorSpec:
    if name not in VENDORS:
        raise ValueError(f"unknown vendor {name!r}; choose from {', '.join(VENDORS)}")
    module = importlib.import_module(f"mocks.{name}")
    return VendorSpec(name, module.DEFAULT_PORT, module.PATH, module.create_server)
