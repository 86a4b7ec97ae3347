"""Who wants which market events: the interest registry between the market and the connections.

Vendor sessions say what their client subscribed to (`want`, `want_root`); the connection runner
(`mocks.server`) asks `route` where each market batch goes and registers a waker so the server
core can poke a connection that has work outside its own traffic (an eviction, a status).
Vendor-neutral: Theta's quote-vs-trade or Massive's channel filtering stays in the sessions.

An interest starts at the market instant it was registered: an event reaches a connection only
if it happened after the subscription. That keeps what a client receives independent of whether
the market task or the connection task ran first at the same instant.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Protocol

from mocks.sim.contracts import OptionContract
from mocks.sim.events import Event, IndexPrice, OptionQuote, OptionTrade, UnderlyingTick


class Watchable(Protocol):
    def watch(self, contract: OptionContract) -> bool: ...

    def unwatch(self, contract: OptionContract) -> None: ...

    def watch_underlying(self, root: str) -> None: ...

    def now_ns(self) -> int: ...


class Hub:
    def __init__(self, market: Watchable) -> None:
        self.market = market
        # interest -> {connection id: Unix ns of the subscription}. Contracts by key: a string
        # hashes in C where a contract calls Python, and an event's contract is the market's
        # object, not necessarily the subscriber's (equal, but compared field by field).
        self._by_contract: dict[str, dict[int, int]] = {}
        self._contracts: dict[str, OptionContract] = {}
        # What the market answered when the contract was first wanted (False: never any data).
        self._producing: dict[str, bool] = {}
        self._by_root: dict[str, dict[int, int]] = defaultdict(dict)
        self._wakers: dict[int, Callable[[], None]] = {}

    def want(self, conn_id: int, contract: OptionContract) -> bool:
        """Route this contract's quotes and trades to the connection.

        Returns False when the market will never produce data for it (strict mode and an expired
        contract): the vendor still acknowledges, as the real ones do, but nothing arrives.
        The market watches a contract while some connection wants it, and no longer.
        """
        key = contract.key
        ids = self._by_contract.get(key)
        if ids is None:
            ids = self._by_contract[key] = {}
            self._contracts[key] = contract
            self._producing[key] = self.market.watch(contract)
        ids.setdefault(conn_id, self.market.now_ns())
        return self._producing[key]

    def unwant(self, conn_id: int, contract: OptionContract) -> None:
        key = contract.key
        ids = self._by_contract.get(key)
        if ids is not None:
            ids.pop(conn_id, None)
            if not ids:
                watched = self._contracts.pop(key)
                del self._by_contract[key], self._producing[key]
                self.market.unwatch(watched)

    def want_root(self, conn_id: int, root: str) -> None:
        """Route an underlying's ticks and an index's price reports to the connection."""
        self._by_root[root].setdefault(conn_id, self.market.now_ns())
        self.market.watch_underlying(root)

    def unwant_root(self, conn_id: int, root: str) -> None:
        ids = self._by_root.get(root)
        if ids is not None:
            ids.pop(conn_id, None)
            if not ids:
                del self._by_root[root]

    def forget(self, conn_id: int) -> None:
        """Drop every interest of a connection (it closed)."""
        for key in [k for k, ids in self._by_contract.items() if conn_id in ids]:
            self.unwant(conn_id, self._contracts[key])
        for root in [r for r, ids in self._by_root.items() if conn_id in ids]:
            self.unwant_root(conn_id, root)
        self._wakers.pop(conn_id, None)

    def has_interest(self) -> bool:
        """Does any connection want anything?"""
        return bool(self._by_contract or self._by_root)

    def contracts_of(self, conn_id: int) -> set[OptionContract]:
        return {self._contracts[k] for k, ids in self._by_contract.items() if conn_id in ids}

    def register(self, conn_id: int, waker: Callable[[], None]) -> None:
        self._wakers[conn_id] = waker

    def poke(self, conn_id: int) -> None:
        """Ask a connection's runner to call its session's `tick` soon."""
        waker = self._wakers.get(conn_id)
        if waker is not None:
            waker()

    def route(self, events: Iterable[Event]) -> dict[int, list[Event]]:
        """Split a market batch by connection, keeping time order within each."""
        out: dict[int, list[Event]] = {}
        by_contract, by_root = self._by_contract.get, self._by_root.get
        # Exact type tests (events are never subclassed): far cheaper than isinstance on a union.
        for event in events:
            if type(event) is OptionQuote or type(event) is OptionTrade:
                ids = by_contract(event.contract.key)
            elif type(event) is UnderlyingTick or type(event) is IndexPrice:
                ids = by_root(event.root)
            else:  # pragma: no cover - Event is a closed union
                continue
            if ids:
                ts_ns = event.ts_ns
                for conn_id, since in ids.items():
                    if ts_ns <= since:
                        continue
                    bucket = out.get(conn_id)
                    if bucket is None:
                        out[conn_id] = [event]
                    else:
                        bucket.append(event)
        return out
