"""Vendor-neutral market events: what the simulator publishes and every vendor mock renders.

Events are named tuples: immutable, cheap to make (the market makes millions), and
`event._replace(...)` is how a fault changes one. `ts_ns` is Unix time in nanoseconds; vendors
format it their own way (Massive ms, Theta `ms_of_day` in US Eastern time, Amberdata ms plus
nanoseconds). `exchange` fields are MIC-like
short names from `mocks.sim.exchanges`; each vendor maps them to its own numeric ids.
"""

from __future__ import annotations

from typing import NamedTuple

from mocks.sim.contracts import OptionContract


class OptionQuote(NamedTuple):
    """A change of the national best bid and offer of one contract."""

    ts_ns: int
    contract: OptionContract
    bid: float
    ask: float
    bid_size: int  # contracts; for crypto options, tenths of a contract (Deribit's 0.1 step)
    ask_size: int
    bid_exchange: str
    ask_exchange: str
    sequence: int  # per contract, shared with trades; increasing and unique


class OptionTrade(NamedTuple):
    ts_ns: int
    contract: OptionContract
    price: float
    size: int
    exchange: str
    conditions: tuple[str, ...]  # neutral names from mocks.sim.exchanges.TRADE_CONDITIONS
    sequence: int


class UnderlyingTick(NamedTuple):
    """The underlying's price: spot for equities, index level for indices, forward for crypto."""

    ts_ns: int
    root: str
    price: float


class IndexPrice(NamedTuple):
    """An index price report: about once a second, only when the level changed."""

    ts_ns: int
    root: str
    price: float


Event = OptionQuote | OptionTrade | UnderlyingTick | IndexPrice
