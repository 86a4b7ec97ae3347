"""The chaos search: fault schedules as Hypothesis draws them, one example's verdict (loss,
duplicates, crash, hang), the search finding and shrinking the flaws of `scenarios.naive`, and
`feedlab chaos` as a command. Virtual time throughout; each search is a few seconds."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import io
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from mocks.cli import UsageError
from mocks.faults import KINDS, Fault, fault, parse_fault
from mocks.vendors import VENDORS
from scenarios import chaos
from scenarios.chaos import (
    ENDINGS,
    MAX_BURST_PRODUCT,
    NOT_SEARCHED,
    SearchSettings,
    _bursts_within_bounds,
    build_scenario,
    kinds_for,
    run_example,
    schedule_strategy,
    search,
)
from scenarios.cli import run_command
from scenarios.model import load_scenario, parse_scenario, scenario_to_toml

# Fault kinds whose open bugs a search would find first against the built-in clients; each has
# a strict xfail below that starts passing (and so fails) once it is fixed: then drop it here.
KNOWN_ISSUES: dict[str, tuple[str, ...]] = {
    "massive": (),
    "theta": (),
    "amberdata": (),
}


def settings(vendor: str, factory: str | None = None, **changes: Any) -> SearchSettings:
    changes.setdefault("duration", 60.0)
    changes.setdefault("skip", KNOWN_ISSUES[vendor])
    return SearchSettings(vendor=vendor, factory=factory, **changes)


# -- schedules -------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", VENDORS)
def test_searched_kinds_are_the_vendors_own_minus_the_ones_left_out(vendor: str) -> None:
    kinds = set(kinds_for(vendor))
    for name, kind in KINDS.items():
        does_it = kind.vendors is None or vendor in kind.vendors
        assert (name in kinds) == (does_it and name not in NOT_SEARCHED), name
    assert kinds_for(vendor, ("close",)) == tuple(k for k in kinds_for(vendor) if k != "close")


@given(st.data())
def test_every_drawn_schedule_is_a_valid_scenario_within_the_run(data: st.DataObject) -> None:
    vendor = data.draw(st.sampled_from(VENDORS))
    duration = float(data.draw(st.integers(10, 600)))
    faults = data.draw(schedule_strategy(vendor, duration, max_faults=4))
    assert 1 <= len(faults) <= 4
    assert math.prod(f.param("factor") for f in faults if f.kind == "burst") <= MAX_BURST_PRODUCT
    for f in faults:
        assert f.kind in kinds_for(vendor)
        assert f.at is not None and 1 <= f.at <= max(1, int(duration * 0.6))
        assert f.duration is None or 1 <= f.duration <= max(1, int(duration * 0.25))
        assert parse_fault(f.to_table(), vendor) == f  # what the scenario file says is the fault
    scenario = build_scenario(SearchSettings(vendor=vendor, duration=duration), faults)
    assert parse_scenario(scenario_to_toml(scenario)).faults == scenario.faults
    assert [f.at for f in scenario.faults] == sorted(f.at or 0.0 for f in faults)


def test_bursts_multiply_only_so_far_in_a_drawn_schedule() -> None:
    """`feedlab chaos --vendor massive --seed 11` drew four bursts (x15, x17, x17, x15): the
    market 65,000 times busier, and the example out of wall time in the mock (a "hang")."""
    drawn = [
        fault("burst", at="1s", duration="36s", factor=15),
        fault("cut", at="2s"),
        fault("burst", at="1s", duration="36s", factor=17),
        fault("burst", at="15s", duration="36s", factor=17),
        fault("burst", at="15s", duration="36s", factor=15),
    ]
    kept = _bursts_within_bounds(drawn)
    assert kept == drawn[:3]


def test_the_simplest_schedule_is_one_cut_at_the_first_second() -> None:
    """Shrinking heads here: few faults, early, the plainest kind."""
    simplest = hypothesis.find(schedule_strategy("massive", 600.0), lambda faults: True)
    assert simplest == [Fault(kind="cut", at=1.0)]


def test_half_the_faults_drawn_end_or_interrupt_the_feed() -> None:
    drawn: list[Fault] = []

    @hypothesis.settings(max_examples=300, database=None)
    @hypothesis.seed(3)
    @given(schedule_strategy("theta", 180.0))
    def collect(faults: list[Fault]) -> None:
        drawn.extend(faults)

    collect()
    endings = sum(f.kind in ENDINGS for f in drawn)
    assert 0.3 < endings / len(drawn) < 0.8
    assert any(f.kind == "upstream_outage" for f in drawn)


# -- one example -----------------------------------------------------------------------------


def test_an_example_the_builtin_client_survives_has_no_problems() -> None:
    outcome = run_example(build_scenario(settings("massive"), [fault("close", at="10s")]))
    assert not outcome.failed
    assert outcome.report is not None and outcome.report.metrics["reconnects"] == 1


# What `feedlab chaos` found against the built-in clients with other seeds than `make chaos`'s
# (2026-12-07), each fixed since; the fix's own test is named beside it.
FOUND: dict[str, tuple[str, int, list[Fault]]] = {
    # A connection lost before its first event: the gap notice started at the loss, a ping
    # timeout after the stall (47 events lost silently). tests/test_client_massive_mock.py
    "massive-stall-of-a-new-connection": (
        "massive",
        20261207,
        [fault("cut", at="47s"), fault("stall", at="48s")],
    ),
    # The regression took one copy of a duplicate: two numbers, no client can tell a repeat.
    # tests/test_faults.py
    "massive-regressed-duplicate": (
        "massive",
        3,
        [fault("duplicate", at="1s"), fault("sequence_regression", at="1s", by=1)],
    ),
    # A duplicate quote held back behind later ones was delivered again (no sequence number).
    # tests/test_client_theta.py
    "theta-held-back-repeat": (
        "theta",
        2,
        [fault("duplicate", at="62s", events=2), fault("reorder", at="62s", events=1, by=5)],
    ),
    # After a reconnect the numbers went on from below the jumped ones, and a new trade that met
    # an old number was dropped as a repeat. tests/test_client_amberdata.py
    "amberdata-new-event-old-number": (
        "amberdata",
        7,
        [fault("sequence_jump", at="1s", by=145), fault("cut", at="54s")],
    ),
    # The same against the Theta client (not found by a search: the schedule above, seed 8).
    # tests/test_client_theta.py
    "theta-new-trade-old-number": (
        "theta",
        8,
        [fault("sequence_jump", at="1s", by=145), fault("cut", at="54s")],
    ),
    # A reorder held events for seconds (a quiet contract) and let them out into a stalled
    # socket, older than the gap notice's start. tests/test_faults.py (and `GAP_MARGIN`)
    "theta-held-into-a-stall": (
        "theta",
        9,
        [fault("reorder", at="5s", events=3, by=6), fault("stall", at="11s")],
    ),
    # Not found by a search: the same held events lost with a cut. One held back behind newer
    # ones is older than the newest the client saw: the notice must start before (`GAP_MARGIN`;
    # at 0, one event is lost silently).
    "theta-held-at-a-cut": (
        "theta",
        9,
        [fault("reorder", at="5s", events=3, by=6), fault("cut", at="7s")],
    ),
    # Back for a second between two restarts: the first one's recovery counted the second's
    # downtime, 60.1 s. tests/test_scenario_runner.py
    "theta-restart-after-restart": (
        "theta",
        5,
        [
            fault("restart", at="19s", duration="21s"),
            fault("restart", at="41s", duration="25s"),
            fault("upstream_outage", at="41s", duration="27s"),
        ],
    ),
    # Our close waited on a terminal withholding pongs; an oversize frame then made
    # trio-websocket send a second close, and wsproto's refusal stopped the client.
    # (clients/theta/client.py `_is_connection_error`; trio-websocket#175)
    "theta-oversize-while-closing": (
        "theta",
        13,
        [fault("withhold_pong", at="21s", duration="20s"), fault("oversize_frame", at="60s")],
    ),
    # A heartbeat stop at the second of a restart started at the next client's first step,
    # 48 s late, and two reconnects in a row took the silence for dead sockets.
    # tests/test_mock_theta.py
    "theta-heartbeat-stop-in-a-restart": (
        "theta",
        17,
        [
            fault("restart", at="1s", duration="27s"),
            fault("heartbeat_stop", at="1s", duration="21s"),
            fault("drop", at="1s", events=8),
        ],
    ),
    # (`feedlab chaos --vendor theta --seed 14`, three bursts of x17 for 17 s, 40 s of wall
    # time, is not here: two quotes alike on Theta's wire counted as two events to deliver.
    # tests/test_scenario_runner.py)
    # A duplicate's copy held back by a reorder behind another quote of its millisecond: on
    # Theta's wire (no sequence numbers) a change back, A, B, A, which the client must deliver;
    # it counted as a duplicate delivered. tests/test_scenario_runner.py
    "theta-repeat-like-a-change": (
        "theta",
        9,
        [fault("duplicate", at="1s", events=5), fault("reorder", at="3s", events=2, by=3)],
    ),
    # Stale prices in a burst (x361): quotes of one millisecond alike on the wire, which the
    # client drops as repeats, counted lost. Found by seed 18 with 26 s bursts; shortened.
    # tests/test_scenario_runner.py
    "theta-stale-in-a-burst": (
        "theta",
        18,
        [
            fault("stale", at="1s", duration="10s"),
            fault("burst", at="1s", duration="5s", factor=19.0),
            fault("burst", at="1s", duration="5s", factor=19.0),
        ],
    ),
    # With `resubscribed_exactly` an invariant: the view sampled before the cut, a second
    # after a restart, while the client was still away, was held against it.
    # tests/test_scenario_runner.py
    "massive-view-while-away": (
        "massive",
        1,
        [fault("restart", at="1s", duration="1s"), fault("cut", at="2s")],
    ),
    # The same in the client's own reconnect: a latency fault made it give up on a connection
    # (no disruption of the mock's), and the view was sampled 1.2 s into the next one.
    "massive-view-in-its-own-reconnect": (
        "massive",
        3,
        [
            fault("cut", at="66s"),
            fault("withhold_pong", at="72s", duration="15s"),
            fault("latency", at="93s", duration="15s", ms=616.0, jitter_ms=0.0),
            fault("cut", at="108s"),
        ],
    ),
    # The cut's recovery was counted from the cut, inside the restart: 63 s over the 60 s bound.
    # tests/test_scenario_runner.py
    "theta-cut-in-a-restart": (
        "theta",
        3,
        [fault("cut", at="1s"), fault("restart", at="1s", duration="37s")],
    ),
    # A stall noticed 40 s later (a ping interval and timeout), then another of the new
    # connection 0.6 s after it opened, its first event held by a reorder: both stalls' 80 s
    # read as the first one's recovery. tests/test_scenario_runner.py
    "massive-stall-of-the-reconnection": (
        "massive",
        36,
        [
            fault("stall", at="1s"),
            fault("oversize_frame", at="1s"),
            fault("reorder", at="1s", events=1, by=2),
            fault("stall", at="41s"),
        ],
    ),
}


# Found by searches in real trading hours (`--start`, `--market-hours real`): (vendor, seed,
# start, faults).
FOUND_IN_REAL_HOURS: dict[str, tuple[str, int, str, list[Fault]]] = {
    # Subscribed at 09:28, 1.6 s of latency over the open: the first quote at 09:30:00.318 was
    # still on its way behind a heartbeat that arrived at .319, where the gap notice started
    # (no data timestamp yet to start it by): 1 lost silently. clients/theta/client.py
    "theta-first-quote-in-flight-at-the-open": (
        "theta",
        1,
        "2025-03-14T09:28:00-04:00",
        [fault("latency", at="105s", duration="17s", ms=1591)],
    ),
}


@pytest.mark.parametrize("found", FOUND_IN_REAL_HOURS)
def test_what_the_search_found_in_real_hours_is_survived_now(found: str) -> None:
    vendor, seed, start, faults = FOUND_IN_REAL_HOURS[found]
    when = dt.datetime.fromisoformat(start)
    search = SearchSettings(vendor=vendor, seed=seed, start=when, real_hours=True)
    outcome = run_example(build_scenario(search, faults))
    assert not outcome.failed, outcome.problems


@pytest.mark.parametrize("found", FOUND)
def test_what_the_search_found_is_survived_now(found: str) -> None:
    vendor, seed, faults = FOUND[found]
    outcome = run_example(build_scenario(SearchSettings(vendor=vendor, seed=seed), faults))
    assert not outcome.failed, outcome.problems


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_stall_before_the_first_event_is_covered_by_a_gap_notice(vendor: str) -> None:
    """A connection that goes half-open before its first event is noticed a ping timeout (or a
    heartbeat) later; what it lost in between is in the gap notice. The Massive and Amberdata
    clients started such a notice at the loss, not at the connection's start."""
    outcome = run_example(build_scenario(settings(vendor, seed=3), [fault("stall", at="0.1s")]))
    assert not outcome.failed, outcome.problems
    assert outcome.report is not None
    assert outcome.report.metrics["silent_loss"] == 0
    assert outcome.report.metrics["covered_loss"] > 0


class _BusyClient:
    """Never lets virtual time move: every task keeps the scheduler busy."""

    async def __aenter__(self) -> _BusyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def subscribe(self, *subscriptions: str) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[object]:
        return self._spin()

    async def _spin(self) -> AsyncIterator[object]:
        while True:
            await trio.lowlevel.checkpoint()
            if False:  # pragma: no cover - an async generator that never yields
                yield None


def busy_client(**kwargs: Any) -> _BusyClient:
    return _BusyClient()


def failing_client(**kwargs: Any) -> Any:
    raise RuntimeError("cannot start")


def test_a_client_that_never_lets_time_pass_is_a_hang() -> None:
    scenario = build_scenario(settings("massive", "tests.test_chaos:busy_client"), [])
    outcome = run_example(scenario, wall_limit=1.0)
    assert outcome.report is None
    assert outcome.problems == ("hang: no result after 1 s of wall time",)


def test_a_client_that_stops_with_an_error_breaks_the_no_crash_invariant() -> None:
    scenario = build_scenario(settings("massive", "tests.test_chaos:failing_client"), [])
    outcome = run_example(scenario)
    assert "client_errors = 1 (bound 0)" in outcome.problems
    assert "client stopped: RuntimeError: cannot start" in outcome.problems


# -- the search, reproducibly ------------------------------------------------------------------


def test_the_same_seed_gives_the_same_search() -> None:
    factory = "scenarios.naive:massive_no_gap_notice"
    first, second = (search(settings("massive", factory, seed=2)) for _ in range(2))
    assert first.finding is not None and second.finding is not None
    assert first.finding.scenario == second.finding.scenario
    assert (first.examples, first.shrink_runs) == (second.examples, second.shrink_runs)
    other = search(settings("massive", factory, seed=1))
    assert other.examples != first.examples  # a different seed, a different search


def test_a_search_draws_the_same_whatever_else_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hypothesis draws now and then a number from the source of the project's modules that
    are loaded: a search must not, or the modules a test run (or the client's own module)
    imported before it would change the schedules a seed draws."""
    drawn: list[list[Fault]] = []
    run = chaos.run_example

    def recording(scenario: Any, wall_limit: float = 120.0) -> Any:
        drawn.append(list(scenario.faults))
        return run(scenario, wall_limit)

    monkeypatch.setattr(chaos, "run_example", recording)
    # Network weather only: every fault draws numbers from wide ranges (milliseconds, sizes).
    weather = ("latency", "bandwidth", "slice", "fragment")
    searched = settings(
        "massive", examples=25, seed=3, skip=tuple(sorted(set(KINDS) - set(weather)))
    )
    search(searched)
    before, drawn[:] = list(drawn), []
    (tmp_path / "feed_handler_numbers.py").write_text(f"LIMITS = {list(range(100, 1000))}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("feed_handler_numbers")
    search(searched)
    assert drawn == before


def test_a_shrink_budget_bounds_the_runs_spent_shrinking() -> None:
    factory = "scenarios.naive:massive_no_gap_notice"
    full = search(settings("massive", factory, seed=2))
    cut_short = search(settings("massive", factory, seed=2, shrink_runs=1))
    assert full.finding is not None and cut_short.finding is not None
    assert cut_short.shrink_runs < full.shrink_runs
    assert cut_short.reproduced and len(cut_short.finding.scenario.faults) <= 3


# -- the command -----------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    chaos.add_arguments(parser)
    return parser.parse_args(argv)


def test_command_writes_a_scenario_that_reproduces_the_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "found.toml"
    out = io.StringIO()
    code = chaos.main(
        parse(
            "--vendor", "massive", "--client", "scenarios.naive:massive_forgets_subscriptions",
            "--examples", "50", "--seed", "2", "--duration", "1m", "--out", str(out_file),
        ),
        out,
    )  # fmt: skip
    assert code == 1
    text = out.getvalue()
    assert "examples/s" in text and f"wrote {out_file}" in text
    found = load_scenario(out_file)
    assert found.client.factory == "scenarios.naive:massive_forgets_subscriptions"
    assert found.expect["silent_loss"] == 0 and 1 <= len(found.faults) <= 3
    assert run_command([str(out_file)], None, None, False) == 1  # `feedlab run FILE` fails too
    assert "silent_loss" in capsys.readouterr().out


def test_a_search_across_the_close_writes_its_start_and_hours(tmp_path: Path) -> None:
    """`--start` and `--market-hours real`: the schedules run across 16:00 ET, and the file
    written says so, so that `feedlab run` repeats the same market."""
    out_file = tmp_path / "found.toml"
    start = "2025-03-14T15:58:00-04:00"
    out = io.StringIO()
    code = chaos.main(
        parse(
            "--vendor", "massive", "--client", "scenarios.naive:massive_forgets_subscriptions",
            "--examples", "50", "--seed", "2", "--start", start, "--market-hours", "real",
            "--out", str(out_file),
        ),
        out,
    )  # fmt: skip
    assert code == 1
    assert f"virtual time --start {start} --market-hours real\n" in out.getvalue()
    found = load_scenario(out_file)
    assert f"--start {start} --market-hours real`" in found.description
    assert found.start.isoformat() == start and found.market == {"always_open": False}
    assert run_command([str(out_file)], None, None, False) == 1


@pytest.mark.parametrize("vendor", ["massive", "theta"])
def test_the_builtin_clients_survive_a_short_search_across_the_close(vendor: str) -> None:
    start = dt.datetime.fromisoformat("2025-03-14T15:58:00-04:00")
    result = search(settings(vendor, examples=5, duration=180.0, start=start, real_hours=True))
    assert result.finding is None, result.finding.problems if result.finding else None


def test_command_exits_0_and_writes_nothing_when_nothing_broke(tmp_path: Path) -> None:
    out_file = tmp_path / "found.toml"
    out = io.StringIO()
    skip = [a for k in kinds_for("massive") if k not in ("close", "cut") for a in ("--skip", k)]
    code = chaos.main(
        parse("--vendor", "massive", "--examples", "3", "--duration", "1m",
              "--out", str(out_file), *skip),
        out,
    )  # fmt: skip
    assert code == 0
    assert not out_file.exists()
    assert "nothing found in 3 examples" in out.getvalue()
    assert "faults survived" in out.getvalue()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--client", "scenarios.naive"], "--client: expected module:function"),
        (["--client", "no.such.module:f"], "--client: cannot import 'no.such.module'"),
        (["--client", "scenarios.naive:nobody"], "--client: scenarios.naive has no function"),
        (["--skip", "gremlins"], "--skip: unknown fault kind 'gremlins'"),
        (["--examples", "0"], "--examples: at least 1"),
        (["--duration", "5s"], "--duration: at least 10s"),
        (["--subscribe", "Q.SPY"], "subscribe[0]:"),
        (["--out", "/no/such/dir/found.toml"], "--out: no directory"),
        (["--start", "15:58"], "--start: not an ISO date-time: '15:58'"),
        (["--start", "2025-03-14T15:58"], "--start: needs a UTC offset"),
    ],
)
def test_command_rejects_bad_input_in_one_line(argv: list[str], message: str) -> None:
    args = parse("--vendor", "massive", "--out", "found.toml", *argv)
    with pytest.raises(UsageError) as caught:
        chaos.main(args, io.StringIO())
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
