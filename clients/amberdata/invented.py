"""Invented: what Amberdata does not document and this client had to choose. Kept in one place so
that a live recording can correct it (DESIGN.md, principle 5).
"""

from __future__ import annotations

import math

from clients.amberdata.instruments import OHLCV, OPEN_INTERESTS, ORDER_SNAPSHOTS, TICKERS, TRADES

# Staleness bound per stream: replace a connection that has been silent this long although it
# carries a subscription of that stream (the tightest bound among its subscriptions applies).
# Amberdata sends no application heartbeat. The documented snapshot's `timestamp` falls on a
# minute boundary, which suggests books may be snapshotted only once a minute when quiet, so
# snapshots and tickers get three such intervals. Trades, bars and open interest are event- or
# schedule-driven and may be silent for hours on an illiquid option: no bound; the WebSocket
# ping still catches a dead socket.
STALE_AFTER: dict[str, float | None] = {
    ORDER_SNAPSHOTS: 180.0,
    TICKERS: 180.0,
    TRADES: None,
    OHLCV: None,
    OPEN_INTERESTS: None,
}

# The documented text frame that precedes close 1008 when the key is refused.
AUTH_FAILURE_PREFIX = "invalid api key"


def exchange_time_ns(milliseconds: float, nanoseconds: int | None) -> int:
    """Unix nanoseconds from `exchangeTimestamp` (ms) and `exchangeTimestampNanoseconds`.

    The docs call the latter the "nanoseconds part of exchangeTimestamp" (sample value 0). We
    read it as the part below the millisecond; a value that only makes sense as nanoseconds of
    the second (its milliseconds agree with the timestamp's) is taken as that instead.
    """
    whole_ms = math.floor(milliseconds)
    base = round(milliseconds * 1000) * 1000
    if nanoseconds is None or nanoseconds < 0:
        return base
    if nanoseconds < 1_000_000:
        return whole_ms * 1_000_000 + nanoseconds
    if nanoseconds < 1_000_000_000 and nanoseconds // 1_000_000 == whole_ms % 1000:
        return (whole_ms // 1000) * 1_000_000_000 + nanoseconds
    return base
