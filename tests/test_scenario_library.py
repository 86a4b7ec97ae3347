"""The built-in library: every built-in client passes every built-in scenario, nothing lost
silently (the whole library in virtual time, a few seconds of wall time)."""

from __future__ import annotations

from pathlib import Path

from scenarios.model import load_scenario
from scenarios.runner import run_scenario_sync

LIBRARY = sorted((Path(__file__).parent.parent / "scenarios" / "library").glob("*.toml"))


def test_every_library_scenario_passes_with_no_silent_loss() -> None:
    failures = []
    for path in LIBRARY:
        report = run_scenario_sync(load_scenario(path))
        if not report.passed or report.metrics["silent_loss"] != 0:
            failures.append(report.summary_line())
        assert report.metrics["unmatched_delivered"] == 0, report.summary_line()
    assert not failures, "\n".join(failures)
    assert len(LIBRARY) >= 12
