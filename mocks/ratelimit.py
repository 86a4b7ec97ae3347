"""The per-connection bound on a client's request rate: one token bucket that every vendor core
uses; each vendor answers a refusal, and closes a flooding connection, in its own words.

Every frame a client sends is one request and takes one token. Tokens come back at `rate` per
second, up to `burst`. A request that finds the bucket empty is refused: the vendor answers it
with an error and drops it, and the connection stays open. A client that keeps sending into an
empty bucket is flooding: once `refusals_before_close` requests have been refused since the
bucket was last full, the vendor closes the connection (1008, policy violation). A flood ends
only when the client has been quiet long enough for the whole burst to come back, so a client
that keeps sending a little faster than `rate` is closed in the end, while one that overran once
and then kept to the rate is not.

Time is the `now` a session is given: seconds on Trio's clock since the run started (virtual
under `MockClock`), never the wall clock. The bucket does not read a clock itself, so the cores
stay sans-I/O and a replayed run refuses exactly what the recorded one did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["accept", "refuse", "close"]
ACCEPT: Verdict = "accept"
REFUSE: Verdict = "refuse"
CLOSE: Verdict = "close"
# A token short by less than this is a whole one: a client sending exactly at the rate must not be
# refused for a rounding error of the elapsed time.
_ROUNDING = 1e-9


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A vendor's numbers (its `invented.py` defaults, or the settings a test chose)."""

    rate: float  # requests per second, sustained
    burst: int  # requests at once, from a bucket that had time to fill
    refusals_before_close: int  # refused requests in one flood before the connection is closed

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"request_rate must be a number > 0, not {self.rate!r}")
        if self.burst < 1:
            raise ValueError(f"request_burst must be >= 1, not {self.burst!r}")
        if self.refusals_before_close < 1:
            raise ValueError(
                f"refusals_before_close must be >= 1, not {self.refusals_before_close!r}"
            )


class RequestRate:
    """One connection's bucket. It starts full: a client may send its whole burst at once."""

    __slots__ = ("_at", "_flood", "_tokens", "limit", "refused")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self._tokens = float(limit.burst)
        self._at = now
        self._flood = 0  # refused since the bucket was last full
        self.refused = 0  # refused over the connection's life

    def admit(self, now: float) -> Verdict:
        """One request arrived at `now`: accept it, refuse it, or refuse it and close."""
        limit = self.limit
        if now > self._at:
            self._tokens = min(float(limit.burst), self._tokens + (now - self._at) * limit.rate)
            self._at = now
        if self._tokens >= limit.burst:
            self._flood = 0
        if self._tokens >= 1.0 - _ROUNDING:
            self._tokens -= 1.0
            return ACCEPT
        self.refused += 1
        self._flood += 1
        return CLOSE if self._flood >= limit.refusals_before_close else REFUSE

    @property
    def tokens(self) -> float:
        """Requests the bucket would accept right now (as of the last request)."""
        return self._tokens
