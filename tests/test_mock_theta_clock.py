"""The Theta mock's per-hour `date`/`ms_of_day` shortcut gives what the full US Eastern conversion
gives, on ordinary days and across daylight-saving switches."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from mocks.sim.clock import eastern_date_and_ms
from mocks.theta.terminal import _EasternDay

_NS = 1_000_000_000
_2020 = int(dt.datetime(2020, 1, 1, tzinfo=dt.UTC).timestamp()) * _NS
_2030 = int(dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp()) * _NS


@given(st.lists(st.integers(_2020, _2030), min_size=1, max_size=20))
def test_matches_the_full_conversion(times: list[int]) -> None:
    day = _EasternDay()
    for ts_ns in sorted(times) + times:
        assert day(ts_ns) == eastern_date_and_ms(ts_ns)


def test_daylight_saving_switch_days_millisecond_by_minute() -> None:
    day = _EasternDay()
    for switch in (
        dt.datetime(2025, 3, 9, 4, tzinfo=dt.UTC),
        dt.datetime(2025, 11, 2, 3, tzinfo=dt.UTC),
    ):
        start = int(switch.timestamp()) * _NS
        for minute in range(6 * 60):
            ts_ns = start + minute * 60 * _NS + 999_999_999
            assert day(ts_ns) == eastern_date_and_ms(ts_ns)
            assert day(ts_ns - 999_999_999) == eastern_date_and_ms(ts_ns - 999_999_999)
