"""The chaos search against the flawed Theta client: its bug needs two faults together (a
reconnect, which makes it reuse request ids, then an upstream outage, after which the terminal
restores only streams with fresh ids), so this search is the longest and has a file of its own."""

from __future__ import annotations

from scenarios.chaos import SearchSettings, build_scenario, run_example, search
from tests.test_chaos import KNOWN_ISSUES


def test_search_finds_reused_request_ids_and_shrinks_to_a_reconnect_and_an_outage() -> None:
    result = search(
        SearchSettings(
            vendor="theta",
            factory="scenarios.naive:theta_reuses_request_ids",
            examples=200,
            seed=2,
            duration=60.0,
            skip=KNOWN_ISSUES["theta"],
        )
    )
    assert result.finding is not None
    found = result.finding.scenario
    assert result.examples <= 200 and 2 <= len(found.faults) <= 3
    assert "upstream_outage" in {f.kind for f in found.faults}
    assert any(p.startswith("silent_loss = ") for p in result.finding.problems)
    assert result.reproduced
    builtin = build_scenario(SearchSettings(vendor="theta", duration=60.0), found.faults)
    assert not run_example(builtin).failed
