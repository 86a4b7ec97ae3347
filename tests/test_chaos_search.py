"""The chaos search end to end: it finds and shrinks the flaws of `scenarios.naive` (the Theta
one, which needs two faults, is in test_chaos_theta.py), finds nothing against the built-in
clients, and is a pure function of its settings. Known open bugs the search found are pinned
below as strict xfails."""

from __future__ import annotations

import pytest

from mocks.faults import Fault, fault
from mocks.vendors import VENDORS
from scenarios.chaos import build_scenario, run_example, search
from tests.test_chaos import settings

NAIVE = [
    ("massive", "massive_forgets_subscriptions", "silent_loss"),
    ("massive", "massive_keeps_duplicates", "duplicates_delivered"),
    ("massive", "massive_no_gap_notice", "silent_loss"),
    ("massive", "massive_gives_up_at_once", "client_errors"),
    ("amberdata", "amberdata_keeps_old_ids", "silent_loss"),
    ("amberdata", "amberdata_gives_up_on_503", "client_errors"),
]


@pytest.mark.parametrize(("vendor", "name", "metric"), NAIVE)
def test_search_finds_the_flaw_and_shrinks_it(vendor: str, name: str, metric: str) -> None:
    result = search(settings(vendor, f"scenarios.naive:{name}", examples=200, shrink_runs=40))
    assert result.finding is not None
    assert result.examples <= 200
    found = result.finding.scenario
    assert 1 <= len(found.faults) <= 3
    assert any(p.startswith(f"{metric} = ") for p in result.finding.problems)
    assert result.reproduced  # the file, read back and run again, fails the same way
    # The schedule separates the flaw from the built-in client, which keeps every invariant.
    assert not run_example(build_scenario(settings(vendor), found.faults)).failed


def test_search_sees_a_forgotten_stream_outside_the_loss_accounting() -> None:
    """Aggregates have no identity to account for: only the restored subscriptions show that a
    reconnect forgot them."""
    subscribe = ("Q.O:SPY250321C00560000", "T.O:SPY250321C00560000", "AM.O:SPY250321C00560000")
    flawed = "scenarios.naive:massive_forgets_aggregates"
    result = search(settings("massive", flawed, examples=50, shrink_runs=40, subscribe=subscribe))
    assert result.finding is not None
    assert result.finding.problems == ("resubscribed_exactly = 0 (bound 1)",)
    assert len(result.finding.scenario.faults) == 1
    builtin = settings("massive", subscribe=subscribe)
    assert not run_example(build_scenario(builtin, result.finding.scenario.faults)).failed


@pytest.mark.parametrize("vendor", VENDORS)
def test_a_short_search_finds_nothing_against_the_builtin_client(vendor: str) -> None:
    result = search(settings(vendor, examples=12))
    assert result.finding is None, result.finding.problems if result.finding else None
    assert result.examples == 12
    assert result.examples <= result.faults <= 4 * result.examples  # every one survived


def test_a_ping_racing_the_servers_close_ends_only_that_connection() -> None:
    """Found by this search: the Amberdata client pings every 15 s, and a close at 30 s made the
    mock's pong fail in wsproto, which used to end the whole mock."""
    assert not run_example(build_scenario(settings("amberdata"), [fault("close", at="30s")])).failed


KNOWN_FAILURES = [
    # Found by chaos and fixed since; kept as regression tests.
    pytest.param(
        "massive", 0, fault("sequence_regression", at="1s", by=2), id="massive-sequence_regression"
    ),
    pytest.param("massive", 0, fault("reorder", at="1s", by=2, events=3), id="massive-reorder"),
    pytest.param("theta", 0, fault("evict", at="1s"), id="theta-evict"),
    pytest.param(
        "theta",
        2,
        fault("slice", at="7s", duration="15s", bytes=64, delay_ms=1.0),
        id="theta-slice",
    ),
]


@pytest.mark.parametrize(("vendor", "seed", "known"), KNOWN_FAILURES)
def test_known_issue_found_by_chaos(vendor: str, seed: int, known: Fault) -> None:
    outcome = run_example(build_scenario(settings(vendor, seed=seed), [known]))
    assert not outcome.failed, outcome.problems
