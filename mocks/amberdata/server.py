"""Amberdata's server-wide state: settings, API keys and their plans, connections per key, the
instruments every connection shares, and the session-level faults scenarios drive.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from mocks.amberdata import invented
from mocks.amberdata.session import AmberdataSession, Refusal
from mocks.amberdata.streams import Instrument
from mocks.hub import Hub
from mocks.ratelimit import RateLimit
from mocks.session import ConnectionInfo
from mocks.sim.contracts import OptionContract
from mocks.sim.market import MarketSim

VENDOR = "amberdata"
PATHS = ("/", "/options")


@dataclass(frozen=True, slots=True)
class AmberdataSettings:
    """How the mock behaves where a live account would decide (all invented defaults aside from
    the documented trial and on-demand limits)."""

    snapshot_interval: float = invented.SNAPSHOT_INTERVAL  # seconds between order-book snapshots
    ticker_interval: float = invented.TICKER_INTERVAL
    open_interest_interval: float = invented.OPEN_INTEREST_INTERVAL
    first_push_delay: float = invented.FIRST_PUSH_DELAY  # the first periodic message; < 1 s
    require_exchange: bool = False  # True: a subscribe without `exchange` is refused
    trial_connections: int = 5  # `UAT...` keys [doc]
    trial_subscriptions: int = 100
    on_demand_connections: int = 20  # `UAO...` keys [doc]
    on_demand_subscriptions: int = 100
    enterprise_connections: int = invented.ENTERPRISE_CONNECTIONS  # `UAK...` and any other key
    enterprise_subscriptions: int = invented.ENTERPRISE_SUBSCRIPTIONS
    # Client requests per connection (`mocks.ratelimit`): sustained rate, burst, and the refusals
    # in one flood after which the connection is closed.
    request_rate: float = invented.REQUEST_RATE
    request_burst: int = invented.REQUEST_BURST
    refusals_before_close: int = invented.REFUSALS_BEFORE_CLOSE

    def __post_init__(self) -> None:
        for name in ("snapshot_interval", "ticker_interval", "open_interest_interval"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.001):
                raise ValueError(f"{name} must be at least 0.001 s, not {value!r}")
        if not 0.0 <= self.first_push_delay < 1.0:
            raise ValueError(
                "first_push_delay must be in [0, 1) s: the first push comes within 1 s"
            )
        for f in fields(self):
            if f.name.endswith(("_connections", "_subscriptions")) and getattr(self, f.name) < 0:
                raise ValueError(f"{f.name} must not be negative")
        _ = self.request_limit  # RateLimit checks its numbers

    @property
    def request_limit(self) -> RateLimit:
        return RateLimit(self.request_rate, self.request_burst, self.refusals_before_close)


@dataclass(slots=True)
class Plan:
    name: str
    connections: int
    subscriptions: int  # per connection


TRIAL, ON_DEMAND, ENTERPRISE = "trial", "on-demand", "enterprise"
_PREFIXES = (("UAT", TRIAL), ("UAO", ON_DEMAND), ("UAK", ENTERPRISE))


def plan_of(key: str) -> str:
    """Amberdata's key prefixes name the plan; any other key is treated as enterprise."""
    for prefix, plan in _PREFIXES:
        if key.startswith(prefix):
            return plan
    return ENTERPRISE


@dataclass(slots=True)
class _Faults:
    auth_failures: int = 0  # the next N connections are refused whatever their key
    forbidden_streams: set[str] = field(default_factory=set)  # answered with the documented 403


@dataclass(slots=True)
class AmberdataServer:
    hub: Hub
    market: MarketSim
    settings: AmberdataSettings = field(default_factory=AmberdataSettings)
    api_keys: frozenset[str] = frozenset()
    vendor: str = VENDOR
    plans: dict[str, Plan] = field(default_factory=dict)
    sessions: dict[int, AmberdataSession] = field(default_factory=dict)
    instruments: dict[OptionContract, Instrument] = field(default_factory=dict)
    connections_per_key: Counter[str] = field(default_factory=Counter)
    faults: _Faults = field(default_factory=_Faults)

    def __post_init__(self) -> None:
        s = self.settings
        self.plans = {
            TRIAL: Plan(TRIAL, s.trial_connections, s.trial_subscriptions),
            ON_DEMAND: Plan(ON_DEMAND, s.on_demand_connections, s.on_demand_subscriptions),
            ENTERPRISE: Plan(ENTERPRISE, s.enterprise_connections, s.enterprise_subscriptions),
        }
        self.market.on_forget(self._forget_instrument)

    @property
    def seed(self) -> int:
        return self.market.settings.seed

    # -- VendorServer ----------------------------------------------------------------------------

    def accepts_path(self, path: str) -> bool:
        return path in PATHS or path == ""

    def open(self, info: ConnectionInfo, now: float) -> AmberdataSession:
        key = api_key(info)
        if key is None or not self.key_is_valid(key) or self.faults.auth_failures > 0:
            if self.faults.auth_failures > 0:
                self.faults.auth_failures -= 1
            shown = invented.MISSING_KEY if key is None else key
            refusal = Refusal(
                f"invalid api key '{shown}'", invented.AUTH_CLOSE_CODE, invented.AUTH_CLOSE_REASON
            )
            session = AmberdataSession(self, info, key or "", None, refusal=refusal)
        else:
            plan = self.plans[plan_of(key)]
            if self.connections_per_key[key] >= plan.connections:
                refusal = Refusal(
                    invented.CONNECTION_LIMIT_TEXT,
                    invented.CONNECTION_LIMIT_CLOSE_CODE,
                    invented.CONNECTION_LIMIT_CLOSE_REASON,
                )
                session = AmberdataSession(self, info, key, None, refusal=refusal)
            else:
                self.connections_per_key[key] += 1
                session = AmberdataSession(self, info, key, plan)
        self.sessions[info.conn_id] = session
        return session

    # -- accounts --------------------------------------------------------------------------------

    def key_is_valid(self, key: str) -> bool:
        if not key:
            return False
        return not self.api_keys or key in self.api_keys

    def release(self, session: AmberdataSession) -> None:
        """A session closed: its connection no longer counts against its key."""
        if self.sessions.get(session.info.conn_id) is session:
            del self.sessions[session.info.conn_id]
        if session.plan is not None:
            self.connections_per_key[session.key] -= 1
            if self.connections_per_key[session.key] <= 0:
                del self.connections_per_key[session.key]

    def _forget_instrument(self, contract: OptionContract) -> None:
        """The market ended the contract's life (nobody wanted it for a while, `serve`): so
        does the exchange side (10-50 KB each, with its recent trades). Wanted again, it is an
        instrument first seen: its 24 hours before are made again around its price then."""
        self.instruments.pop(contract, None)

    def instrument(self, contract: OptionContract, now: float) -> Instrument:
        inst = self.instruments.get(contract)
        if inst is None:
            inst = Instrument(contract, self.seed, self.market.clock.unix_ns(now))
            self.instruments[contract] = inst
        return inst

    # -- session-level faults (scenarios) --------------------------------------------------------

    def set_plan_limits(
        self, plan: str, *, connections: int | None = None, subscriptions: int | None = None
    ) -> None:
        """Change a plan's limits from now on; connections and subscriptions already made stay."""
        target = self.plans[plan]
        if connections is not None:
            target.connections = connections
        if subscriptions is not None:
            target.subscriptions = subscriptions

    def auth_failure(self, count: int = 1) -> None:
        """Refuse the next `count` connections as if their key were bad (a key revoked and
        restored, an auth backend hiccup)."""
        self.faults.auth_failures += count

    def forbid_stream(self, stream: str, forbidden: bool = True) -> None:
        """New subscriptions to `stream` get the documented 403 (a plan without that data);
        subscriptions already made keep streaming."""
        if forbidden:
            self.faults.forbidden_streams.add(stream)
        else:
            self.faults.forbidden_streams.discard(stream)


def api_key(info: ConnectionInfo) -> str | None:
    """The key from the `x-api-key` header or the `x-api-key` query parameter."""
    header = info.headers.get("x-api-key")
    query = info.query.get("x-api-key")
    first, second = (header, query) if invented.KEY_HEADER_WINS else (query, header)
    return first if first is not None else second


def create_server(
    hub: Hub, market: MarketSim, *, api_keys: Sequence[str] = (), **options: object
) -> AmberdataServer:
    """`options` are `AmberdataSettings` fields; an unknown name raises TypeError."""
    settings = AmberdataSettings(**options)  # type: ignore[arg-type]
    return AmberdataServer(hub, market, settings, frozenset(api_keys))
