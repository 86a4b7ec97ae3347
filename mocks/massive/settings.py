"""The Massive mock's settings: accounts and plans, limits, batching, and the fault variants.

`create_server(..., **options)` builds a `MassiveSettings` from its keyword options, so an unknown
option name raises TypeError and every default is written down here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from mocks.massive import invented
from mocks.massive.wire import QUOTE_CONTRACTS_PER_CONNECTION
from mocks.ratelimit import RateLimit

EvictionPolicy = Literal["evict_oldest", "evict_oldest_abort", "refuse_newcomer"]
SlowConsumerPolicy = Literal["close", "abort", "drop"]

ONE_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Account:
    """One API key's plan. Keys named in `api_keys` get the default account."""

    max_connections: int | None = None  # None: the server's `max_connections`
    websocket_access: bool = True  # False: auth_failed with the "plan doesn't include" text


@dataclass(frozen=True, slots=True)
class MassiveSettings:
    # Accounts: with neither `api_keys` nor `accounts`, any non-empty key is accepted.
    accounts: Mapping[str, Account] = field(default_factory=dict)
    max_connections: int = 1  # [doc] one connection per cluster per account by default
    # Who goes when a key opens one connection too many [obs]: the older connection gets the
    # max_connections status and close 1008 (or the status and no close frame), or the newcomer
    # is refused with the same status.
    eviction: EvictionPolicy = "evict_oldest"
    auth_timeout: float = invented.AUTH_TIMEOUT_SECONDS
    quote_limit: int = QUOTE_CONTRACTS_PER_CONNECTION
    flush_interval: float = invented.FLUSH_INTERVAL
    max_batch_events: int = invented.MAX_BATCH_EVENTS
    max_frame_bytes: int = invented.MAX_FRAME_BYTES
    # When the connection's outbound buffer overflows: status `slow_consumer` then close 1008,
    # status then abort (no close frame), or silently drop what does not fit and carry on.
    slow_consumer: SlowConsumerPolicy = "close"
    delay: float = invented.DELAY_SECONDS  # the delayed feed's lag, seconds
    aggregate_grace: float = invented.AGGREGATE_GRACE
    # Client requests per connection (`mocks.ratelimit`): sustained rate, burst, and the refusals
    # in one flood after which the connection is closed.
    request_rate: float = invented.REQUEST_RATE
    request_burst: int = invented.REQUEST_BURST
    refusals_before_close: int = invented.REFUSALS_BEFORE_CLOSE
    # Contracts `T.*`, `A.*`, `AM.*` stream besides everything subscribed on this server
    # (OCC tickers); None: the invented default universe around SPY and QQQ.
    wildcard_contracts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not 0 < self.max_frame_bytes < ONE_MIB:
            raise ValueError("max_frame_bytes must stay under 1 MiB (the official client's limit)")
        if self.max_batch_events < 1 or self.flush_interval < 0:
            raise ValueError("max_batch_events must be >= 1 and flush_interval >= 0")
        if self.max_connections < 1 or self.quote_limit < 0:
            raise ValueError("max_connections must be >= 1 and quote_limit >= 0")
        if self.eviction not in get_args(EvictionPolicy):
            raise ValueError(f"eviction must be one of {get_args(EvictionPolicy)}")
        if self.slow_consumer not in get_args(SlowConsumerPolicy):
            raise ValueError(f"slow_consumer must be one of {get_args(SlowConsumerPolicy)}")
        if self.auth_timeout <= 0 or self.delay < 0 or self.aggregate_grace < 0:
            raise ValueError("auth_timeout must be > 0; delay and aggregate_grace >= 0")
        _ = self.request_limit  # RateLimit checks its numbers

    @property
    def request_limit(self) -> RateLimit:
        return RateLimit(self.request_rate, self.request_burst, self.refusals_before_close)
