"""Per-second (`A`) and per-minute (`AM`) aggregate bars, built from the trades a connection gets.

A bar covers one window [s, e) of the trades' own timestamps; a window without trades has no bar
[doc]. A bar is finished when a later trade of the same contract arrives, or when the session's
clock passes the window's end (plus a grace, see `invented.AGGREGATE_GRACE`). Today's totals
(`av`, `op`, `a`) are this connection's own count (see `invented`), reset at US Eastern midnight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mocks.massive.wire import AggregateEvent
from mocks.sim.clock import eastern_date_and_ms
from mocks.sim.contracts import OptionContract
from mocks.sim.events import OptionTrade

SECOND_MS = 1_000
MINUTE_MS = 60_000


@dataclass(slots=True)
class _Day:
    date: int  # YYYYMMDD, US Eastern
    open: float
    volume: int = 0
    notional: float = 0.0


@dataclass(slots=True)
class _Bar:
    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: int = 0
    notional: float = 0.0
    trades: int = 0
    # today's totals as of this bar's last trade
    day_volume: int = 0
    day_open: float = 0.0
    day_vwap: float = 0.0


class DayTotals:
    """Today's volume, open and VWAP per contract, from the trades one connection received."""

    def __init__(self) -> None:
        self._days: dict[OptionContract, _Day] = {}
        self._date = 0  # the latest day traded

    def add(self, trade: OptionTrade) -> _Day:
        date, _ = eastern_date_and_ms(trade.ts_ns)
        if date > self._date:
            # A new day: yesterday's totals are over. (A connection held for days while its
            # client rolls through strikes kept one per contract it ever saw trade.)
            self._days = {c: d for c, d in self._days.items() if d.date >= date}
            self._date = date
        day = self._days.get(trade.contract)
        if day is None or day.date != date:
            day = self._days[trade.contract] = _Day(date, trade.price)
        day.volume += trade.size
        day.notional += trade.price * trade.size
        return day


class BarBuilder:
    """Open bars of one window size ("A": 1 s, "AM": 1 min) for the contracts of one channel."""

    def __init__(self, ev: str, window_ms: int) -> None:
        self.ev = ev
        self.window_ms = window_ms
        self._open: dict[OptionContract, _Bar] = {}
        # window start (Unix ms) -> open bars in it: one or two windows are open at a time, so
        # the session's deadline (asked at every step) need not look at every open bar
        self._starts: dict[int, int] = {}

    def add(self, trade: OptionTrade, day: _Day) -> _Bar | None:
        """Count a trade; returns the contract's previous bar if this trade finished it."""
        start = trade.ts_ns // 1_000_000 // self.window_ms * self.window_ms
        bar = self._open.get(trade.contract)
        finished = None
        if bar is not None and start > bar.start_ms:
            finished = bar
            bar = None
        elif bar is not None and start < bar.start_ms:
            # A trade older than the open window (a late report): its own window is gone.
            return None
        if finished is not None:
            self._closed(finished.start_ms)
        if bar is None:
            price = trade.price
            bar = self._open[trade.contract] = _Bar(start, price, price, price, price)
            self._starts[start] = self._starts.get(start, 0) + 1
        bar.high = max(bar.high, trade.price)
        bar.low = min(bar.low, trade.price)
        bar.close = trade.price
        bar.volume += trade.size
        bar.notional += trade.price * trade.size
        bar.trades += 1
        bar.day_volume = day.volume
        bar.day_open = day.open
        bar.day_vwap = day.notional / day.volume
        return finished

    def due(self, is_due: Callable[[int], bool]) -> list[tuple[OptionContract, _Bar]]:
        """Take the bars whose window end (Unix ms) `is_due`, oldest first."""
        window = self.window_ms
        due = {start for start in self._starts if is_due(start + window)}
        if not due:
            return []
        out = [(c, b) for c, b in self._open.items() if b.start_ms in due]
        for contract, bar in out:
            del self._open[contract]
            self._closed(bar.start_ms)
        out.sort(key=lambda cb: (cb[1].start_ms, cb[0]))
        return out

    def discard(self, contract: OptionContract) -> None:
        bar = self._open.pop(contract, None)
        if bar is not None:
            self._closed(bar.start_ms)

    def earliest_end_ms(self) -> int | None:
        if not self._starts:
            return None
        return min(self._starts) + self.window_ms

    def _closed(self, start: int) -> None:
        left = self._starts[start] - 1
        if left:
            self._starts[start] = left
        else:
            del self._starts[start]

    def render(self, symbol: str, bar: _Bar) -> AggregateEvent:
        return AggregateEvent(
            self.ev,
            symbol,
            bar.volume,
            bar.day_volume,
            bar.day_open,
            round(bar.notional / bar.volume, 4),
            bar.open,
            bar.close,
            bar.high,
            bar.low,
            round(bar.day_vwap, 4),
            round(bar.volume / bar.trades),
            bar.start_ms,
            bar.start_ms + self.window_ms,
        )
