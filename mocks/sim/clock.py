"""Market time: the mapping from Trio's clock to the market's calendar, US Eastern time with
daylight saving, and the trading hours that decide when data flows.

Inside the simulation nothing reads the wall clock; `MarketClock` turns seconds since the run's
start into Unix time from a start instant fixed when the run begins (`feedlab serve` uses the
real now, scenarios their `start`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from mocks.sim.contracts import Kind

EASTERN = ZoneInfo("America/New_York")
UTC = dt.UTC
_NS = 1_000_000_000

REGULAR_OPEN = dt.time(9, 30)
REGULAR_CLOSE = dt.time(16, 0)

# NYSE/Cboe full-day closures. Early closes (13:00) are not modelled.
US_HOLIDAYS = frozenset(
    dt.date.fromisoformat(d)
    for d in [
        "2024-01-01",
        "2024-01-15",
        "2024-02-19",
        "2024-03-29",
        "2024-05-27",
        "2024-06-19",
        "2024-07-04",
        "2024-09-02",
        "2024-11-28",
        "2024-12-25",
        "2025-01-01",
        "2025-01-09",
        "2025-01-20",
        "2025-02-17",
        "2025-04-18",
        "2025-05-26",
        "2025-06-19",
        "2025-07-04",
        "2025-09-01",
        "2025-11-27",
        "2025-12-25",
        "2026-01-01",
        "2026-01-19",
        "2026-02-16",
        "2026-04-03",
        "2026-05-25",
        "2026-06-19",
        "2026-07-03",
        "2026-09-07",
        "2026-11-26",
        "2026-12-25",
        "2027-01-01",
        "2027-01-18",
        "2027-02-15",
        "2027-03-26",
        "2027-05-31",
        "2027-06-18",
        "2027-07-05",
        "2027-09-06",
        "2027-11-25",
        "2027-12-24",
    ]
)


@dataclass(frozen=True, slots=True)
class MarketClock:
    """Seconds since the run started (`t`) <-> Unix nanoseconds <-> Trio time."""

    start: dt.datetime  # aware; the market instant at t = 0
    epoch: float = 0.0  # trio.current_time() at t = 0
    # `start` in Unix nanoseconds, computed once: every rendered timestamp asks for it.
    start_ns: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("MarketClock.start must be timezone-aware")
        object.__setattr__(self, "start_ns", unix_ns(self.start))

    def unix_ns(self, t: float) -> int:
        return self.start_ns + round(t * _NS)

    def t_of(self, ts_ns: int) -> float:
        return (ts_ns - self.start_ns) / _NS

    def trio_time(self, t: float) -> float:
        return self.epoch + t

    def sim_time(self, trio_now: float) -> float:
        return trio_now - self.epoch


def unix_ns(moment: dt.datetime) -> int:
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * 1000


def from_unix_ns(ts_ns: int, tz: dt.tzinfo = UTC) -> dt.datetime:
    seconds, ns = divmod(ts_ns, _NS)
    moment = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(
        seconds=seconds, microseconds=ns // 1000
    )
    return moment.astimezone(tz)


def eastern_date_and_ms(ts_ns: int) -> tuple[int, int]:
    """Theta's (`date` YYYYMMDD, `ms_of_day`) in US Eastern time, daylight saving included."""
    local = from_unix_ns(ts_ns, EASTERN)
    # Wall-clock milliseconds since local midnight: on a DST switch day (23 or 25 hours long) this
    # is what the terminal sends, not elapsed time since midnight.
    ms = (local.hour * 3600 + local.minute * 60 + local.second) * 1000 + local.microsecond // 1000
    return local.year * 10000 + local.month * 100 + local.day, ms


@dataclass(frozen=True, slots=True)
class MarketHours:
    """When each kind of market trades. `always_open` serves data at any hour (a local feed on a
    Sunday night); otherwise US options and indices follow 09:30-16:00 ET on trading days and crypto
    trades around the clock."""

    always_open: bool = True

    def is_open(self, kind: Kind, ts_ns: int) -> bool:
        if self.always_open or kind is Kind.CRYPTO:
            return True
        local = from_unix_ns(ts_ns, EASTERN)
        if not is_trading_day(local.date()):
            return False
        return REGULAR_OPEN <= local.time() < REGULAR_CLOSE

    def next_open_ns(self, kind: Kind, ts_ns: int) -> int:
        """The first instant at or after `ts_ns` when `kind` trades."""
        if self.is_open(kind, ts_ns):
            return ts_ns
        local = from_unix_ns(ts_ns, EASTERN)
        day = local.date()
        if local.time() >= REGULAR_OPEN:
            day += dt.timedelta(days=1)
        while not is_trading_day(day):
            day += dt.timedelta(days=1)
        return unix_ns(dt.datetime.combine(day, REGULAR_OPEN, tzinfo=EASTERN))


def is_trading_day(day: dt.date) -> bool:
    return day.weekday() < 5 and day not in US_HOLIDAYS
