"""The Massive mock's server-wide state: accounts and their connection limits, the live sessions,
the wildcard universe, and the vendor-session faults a scenario can order.

Faults take effect through the sessions' `tick` (`Hub.poke`), never by touching sockets.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Literal

from mocks.hub import Hub
from mocks.massive import invented, wire
from mocks.massive.session import MassiveSession
from mocks.massive.settings import Account, MassiveSettings
from mocks.session import ConnectionInfo
from mocks.sim.clock import EASTERN, from_unix_ns
from mocks.sim.contracts import OptionContract
from mocks.sim.market import MarketSim
from mocks.sim.symbols import SymbolError, parse_occ

REALTIME_PATH = "/options"
PATHS = {REALTIME_PATH: False, invented.DELAYED_PATH: True}  # path -> delayed

Verdict = Literal["ok", "failed", "no_access", "refused"]


class MassiveServer:
    vendor = "massive"

    def __init__(
        self,
        hub: Hub,
        market: MarketSim,
        api_keys: Sequence[str] = (),
        settings: MassiveSettings | None = None,
    ) -> None:
        self.hub = hub
        self.market = market
        self.settings = settings or MassiveSettings()
        self.accounts: dict[str, Account] = {key: Account() for key in api_keys}
        self.accounts.update(self.settings.accounts)
        self.open_any_key = not self.accounts  # no keys configured: any non-empty key works
        self.sessions: dict[int, MassiveSession] = {}
        self.quote_limit = self.settings.quote_limit
        self._auth_failures = 0  # the next this many `auth` requests fail (a fault)
        self._max_connections: dict[str, int] = {}  # fault-time overrides per key

    # -- VendorServer ------------------------------------------------------------------------------

    def accepts_path(self, path: str) -> bool:
        return path in PATHS

    def open(self, info: ConnectionInfo, now: float) -> MassiveSession:
        session = MassiveSession(self, info, delayed=PATHS.get(info.path, False))
        self.sessions[info.conn_id] = session
        return session

    # -- called by sessions ------------------------------------------------------------------------

    def authenticate(self, session: MassiveSession, key: str, now: float) -> Verdict:
        """Check a key and make room for the connection under the key's limit."""
        if self._auth_failures > 0:
            self._auth_failures -= 1
            return "failed"
        if not key:
            return "failed"
        account = self.accounts.get(key)
        if account is None:
            if not self.open_any_key:
                return "failed"
            account = Account()
        if not account.websocket_access:
            return "no_access"
        limit = self.max_connections(key)
        others = sorted(
            (
                s
                for s in self.sessions.values()
                if s is not session and s.key == key and s.authenticated and not s.finished
            ),
            key=lambda s: (s.opened_at, s.conn_id),
        )
        excess = len(others) + 1 - limit
        if excess > 0:
            if self.settings.eviction == "refuse_newcomer":
                return "refused"
            how: Literal["close", "abort"] = (
                "abort" if self.settings.eviction == "evict_oldest_abort" else "close"
            )
            for older in others[:excess]:
                older.end_with(wire.MAX_CONNECTIONS, how)
        return "ok"

    def max_connections(self, key: str) -> int:
        if key in self._max_connections:
            return self._max_connections[key]
        account = self.accounts.get(key)
        if account is not None and account.max_connections is not None:
            return account.max_connections
        return self.settings.max_connections

    def forget(self, session: MassiveSession) -> None:
        self.sessions.pop(session.conn_id, None)

    def contracts_wanted(self, by: MassiveSession, contracts: Iterable[OptionContract]) -> None:
        """A wildcard streams every contract any connection here subscribes to."""
        contracts = list(contracts)
        if not contracts:
            return
        for session in self.sessions.values():
            if session is not by and session.wildcards:
                for contract in contracts:
                    session.add_wildcard_contract(contract)

    def contracts_unwanted(self, by: MassiveSession, contracts: set[OptionContract]) -> None:
        """`by` let go of these: a wildcard stops streaming those no connection here subscribes
        to any more, outside its universe. (Kept, a `T.*` held for days beside clients rolling
        through strikes kept the market working on every contract they ever named.)"""
        wildcards = [s for s in self.sessions.values() if s is not by and s.wildcards]
        if not wildcards:
            return
        gone = contracts - self._subscribed(but=by) - set(self._universe())
        for session in wildcards:
            session.drop_wildcard_contracts(gone)

    def wildcard_contracts(self) -> list[OptionContract]:
        """What a new `T.*` starts with: the configured universe plus everything subscribed here."""
        return sorted(self._subscribed() | set(self._universe()))

    def _subscribed(self, but: MassiveSession | None = None) -> set[OptionContract]:
        out: set[OptionContract] = set()
        for session in self.sessions.values():
            if session is not but:
                for symbols in session.subscriptions.values():
                    out.update(c for c in symbols.values() if c is not None)
        return out

    def _universe(self) -> list[OptionContract]:
        """What a wildcard streams whoever subscribes: `wildcard_contracts`, or by default
        the near-the-money contracts of the next expirations."""
        configured = self.settings.wildcard_contracts
        if configured is None:
            return self._default_universe()
        out = []
        for symbol in configured:
            try:
                out.append(parse_occ(symbol))
            except SymbolError:
                continue
        return out

    def _default_universe(self) -> list[OptionContract]:
        """[inv] Near-the-money contracts of the next Friday expirations (`invented.WILDCARD_*`)."""
        today = from_unix_ns(self.unix_ns(self.market.now), EASTERN).date()
        friday = today + dt.timedelta(days=(4 - today.weekday()) % 7 or 7)
        out = []
        for root in invented.WILDCARD_ROOTS:
            spot = self.market.underlying_price(root)
            step = 5.0 if spot >= 200 else 1.0
            atm = round(spot / step) * step
            for week in range(invented.WILDCARD_EXPIRATIONS):
                expiration = friday + dt.timedelta(weeks=week)
                n = invented.WILDCARD_STRIKES_EACH_SIDE
                for i in range(-n, n + 1):
                    strike_milli = round((atm + i * step) * 1000)
                    for right in ("C", "P"):
                        out.append(OptionContract(root, expiration, strike_milli, right))
        return out

    # -- time --------------------------------------------------------------------------------------

    def market_time(self, ts_ns: int) -> float:
        """Seconds since the run started, for an event's Unix ns timestamp."""
        return self.market.clock.t_of(ts_ns)

    def unix_ns(self, t: float) -> int:
        return self.market.clock.unix_ns(t)

    # -- vendor-session faults (scenario kinds) ----------------------------------------------------

    def _targets(self, conn_id: int | None) -> list[MassiveSession]:
        if conn_id is not None:
            session = self.sessions.get(conn_id)
            return [session] if session is not None else []
        return [s for s in self.sessions.values() if not s.finished]

    def auth_failure(self, count: int = 1) -> None:
        """The next `count` auth requests fail with `auth_failed`, whatever the key."""
        self._auth_failures += count

    def evict(self, conn_id: int | None = None) -> None:
        """`max_connections` to one connection (None: all), then close 1008 or abort (the
        `eviction` setting)."""
        how: Literal["close", "abort"] = (
            "abort" if self.settings.eviction == "evict_oldest_abort" else "close"
        )
        for session in self._targets(conn_id):
            session.end_with(wire.MAX_CONNECTIONS, how)

    def slow_consumer(self, conn_id: int | None = None) -> None:
        """Kill as the server does when its buffer for the client fills (`slow_consumer`)."""
        for session in self._targets(conn_id):
            if self.settings.slow_consumer == "abort":
                session.end_with(None, "abort")
            else:
                session.end_with(invented.slow_consumer(), "close")

    def force_disconnect(self, conn_id: int | None = None) -> None:
        """The `force_disconnect` status, then close 1008."""
        for session in self._targets(conn_id):
            session.end_with(invented.force_disconnect(), "close")

    def set_max_connections(self, key: str, limit: int) -> None:
        """A plan change: from now on `key` may hold `limit` connections (existing ones stay)."""
        self._max_connections[key] = limit

    def set_quote_limit(self, limit: int) -> None:
        """Quote contracts per connection for subscriptions from now on (existing ones stay)."""
        self.quote_limit = limit
