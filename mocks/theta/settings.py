"""The Theta mock's settings: the account's plans, stream limits, the heartbeat, and the universe
of contracts behind the full trade stream.

`create_server(..., **options)` builds a `ThetaSettings` from its keyword options, so an unknown
option name raises TypeError and every default is written down here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mocks.ratelimit import RateLimit
from mocks.theta import invented

Plan = Literal["free", "value", "standard", "pro"]


@dataclass(frozen=True, slots=True)
class PlanLimits:
    streaming: bool
    quote_streams: int
    trade_streams: int
    full_trade_stream: bool


# [doc] Pro: 20K quote streams plus the full trade stream; Standard: 10K quote and 20K trade
# streams; lower plans: no streaming. Each security type (options, stocks, indices) has its own
# plan at Theta ("Options Standard", "Index Standard").
PLANS: dict[str, PlanLimits] = {
    "free": PlanLimits(False, 0, 0, False),
    "value": PlanLimits(False, 0, 0, False),
    "standard": PlanLimits(True, 10_000, 20_000, False),
    "pro": PlanLimits(True, 20_000, invented.PRO_TRADE_STREAMS, True),
}

HEARTBEAT_INTERVAL = 1.0  # [doc] "once a second"


@dataclass(frozen=True, slots=True)
class ThetaSettings:
    options_plan: Plan = "pro"
    stock_plan: Plan = "pro"
    index_plan: Plan = "pro"
    # Override the plans' stream limits (per security type); None keeps the plan's.
    quote_stream_limit: int | None = None
    trade_stream_limit: int | None = None
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    # Client requests per connection (`mocks.ratelimit`): sustained rate, burst, and the refusals
    # in one flood after which the connection is closed.
    request_rate: float = invented.REQUEST_RATE
    request_burst: int = invented.REQUEST_BURST
    refusals_before_close: int = invented.REFUSALS_BEFORE_CLOSE
    # The full trade stream covers every option trade the market makes; the market only simulates
    # watched contracts, so STREAM_BULK watches these roots' near-the-money chains: the next
    # `bulk_expirations` expirations (daily for SPXW, SPY, QQQ; Fridays for the rest) and
    # `bulk_strikes_each_side` strikes on each side of the money, calls and puts.
    bulk_roots: tuple[str, ...] = ("SPXW", "SPY", "QQQ", "AAPL", "TSLA", "NVDA")
    bulk_expirations: int = 2
    bulk_strikes_each_side: int = 10

    def __post_init__(self) -> None:
        for plan in (self.options_plan, self.stock_plan, self.index_plan):
            if plan not in PLANS:
                raise ValueError(f"unknown Theta plan {plan!r}; one of {sorted(PLANS)}")
        for limit in (self.quote_stream_limit, self.trade_stream_limit):
            if limit is not None and limit < 0:
                raise ValueError("stream limits must be >= 0")
        if self.heartbeat_interval <= 0:
            raise ValueError("heartbeat_interval must be > 0")
        if self.bulk_expirations < 1 or self.bulk_strikes_each_side < 0:
            raise ValueError("bulk_expirations must be >= 1 and bulk_strikes_each_side >= 0")
        _ = self.request_limit  # RateLimit checks its numbers

    @property
    def request_limit(self) -> RateLimit:
        return RateLimit(self.request_rate, self.request_burst, self.refusals_before_close)
