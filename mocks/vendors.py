"""The served vendors by name: where each one's core lives, its default port and URL path.

One obvious place for "which vendors exist"; the CLI, the test harness and the pytest plugin all
ask here. A vendor package provides `VENDOR`, `DEFAULT_PORT`, `PATH` and `create_server`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mocks.hub import Hub
from mocks.session import VendorServer
from mocks.sim.contracts import OptionContract
from mocks.sim.market import MarketSim
from mocks.sim.symbols import SymbolError, from_theta, parse_deribit, parse_occ

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
    parse_contract: Callable[[str], OptionContract]  # a contract in the vendor's own syntax


def vendor_spec(name: str) -> VendorSpec:
    if name not in VENDORS:
        raise ValueError(f"unknown vendor {name!r}; choose from {', '.join(VENDORS)}")
    module = importlib.import_module(f"mocks.{name}")
    return VendorSpec(
        name, module.DEFAULT_PORT, module.PATH, module.create_server, _CONTRACT_PARSERS[name]
    )


def _parse_theta(text: str) -> OptionContract:
    """feedlab's written form of a Theta contract: ROOT:YYYYMMDD:STRIKE:RIGHT (strike in
    dollars), optionally behind `option:quote:` as scenario subscriptions write it."""
    parts = text.split(":")
    if parts[0] == "option":
        parts = parts[2:]
    if len(parts) != 4:
        raise SymbolError(f"not a Theta contract (ROOT:YYYYMMDD:STRIKE:RIGHT): {text!r}")
    root, expiration, strike, right = parts
    try:
        milli = round(float(strike) * 1000)
    except ValueError:
        raise SymbolError(f"bad strike in {text!r}") from None
    return from_theta(root, expiration, milli, right)


def _parse_deribit(text: str) -> OptionContract:
    """A Deribit instrument, optionally as `STREAM:INSTRUMENT@EXCHANGE`."""
    name = text.rsplit(":", 1)[-1].split("@", 1)[0]
    return parse_deribit(name)


def _parse_massive(text: str) -> OptionContract:
    """An OCC ticker, optionally behind a channel: `Q.O:SPY251219C00650000`."""
    return parse_occ(
        text.split(".", 1)[1]
        if text[:3] in ("Q.O", "T.O", "A.O") or text.startswith("AM.O")
        else text
    )


_CONTRACT_PARSERS: dict[str, Callable[[str], OptionContract]] = {
    "massive": _parse_massive,
    "theta": _parse_theta,
    "amberdata": _parse_deribit,
}
