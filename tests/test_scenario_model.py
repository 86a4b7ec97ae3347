"""Scenario files: the issue's example reads as written, every library file round-trips through
`scenario_to_toml`, and each kind of mistake is one line naming the file, the key and the
problem."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mocks.faults import fault
from scenarios.model import (
    ClientSpec,
    Scenario,
    ScenarioError,
    load_scenario,
    parse_scenario,
    scenario_to_toml,
)

LIBRARY = sorted((Path(__file__).parent.parent / "scenarios" / "library").glob("*.toml"))

EXAMPLE = """
name = "massive-disconnect-storm"
description = "Three abrupt closes in two minutes; the client must resubscribe each time."
vendor = "massive"                       # massive | theta | amberdata
seed = 7
duration = "10m"                         # virtual time
start = "2025-03-14T09:30:00-04:00"      # market time at t = 0

[client]                                 # the built-in client unless factory names another
subscribe = ["Q.O:SPY250321C00560000", "T.O:SPY250321C00560000"]   # the vendor's own syntax
# factory = "package.module:function"

[[fault]]
at = "30s"                               # or: every = "2m" with count = 3, or probability = 0.01
kind = "close"
code = 1011

[expect]                                 # bounds over report metrics; every one must hold
silent_loss = 0
duplicates_delivered = 0
max_recovery = "5s"
"""


def test_the_issue_example_reads_as_written() -> None:
    s = parse_scenario(EXAMPLE, "storm.toml")
    assert (s.name, s.vendor, s.seed, s.duration) == ("massive-disconnect-storm", "massive", 7, 600)
    assert s.start == dt.datetime(2025, 3, 14, 13, 30, tzinfo=dt.UTC)
    assert s.client == ClientSpec(("Q.O:SPY250321C00560000", "T.O:SPY250321C00560000"))
    assert s.faults == (fault("close", at="30s", code=1011),)
    assert s.expect == {"silent_loss": 0, "duplicates_delivered": 0, "max_recovery": 5.0}
    assert s.source == "storm.toml"


def test_the_library_has_at_least_twelve_stories_for_every_vendor() -> None:
    scenarios = [load_scenario(p) for p in LIBRARY]
    assert len(scenarios) >= 12
    assert {s.vendor for s in scenarios} == {"massive", "theta", "amberdata"}
    assert len({s.name for s in scenarios}) == len(scenarios)
    for path, s in zip(LIBRARY, scenarios, strict=True):
        assert path.stem == s.name
        assert s.expect.get("silent_loss") == 0, s.name  # the headline invariant, everywhere


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
def test_library_files_round_trip(path: Path) -> None:
    s = load_scenario(path)
    again = parse_scenario(scenario_to_toml(s), "<again>")
    assert again == s
    assert scenario_to_toml(again) == scenario_to_toml(s)


@given(
    seed=st.integers(0, 2**32),
    duration=st.floats(0.5, 86_400, allow_nan=False),
    at=st.floats(0, 0.5, allow_nan=False),
    code=st.integers(1000, 4999),
    bound=st.floats(0, 1e6, allow_nan=False),
    description=st.text(max_size=40),
)
def test_written_scenarios_read_back_equal(
    seed: int, duration: float, at: float, code: int, bound: float, description: str
) -> None:
    s = Scenario(
        name="generated",
        description=description,
        vendor="theta",
        seed=seed,
        duration=duration,
        start=dt.datetime(2025, 3, 9, 1, 59, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        client=ClientSpec(("option:quote:SPY:20250321:575:C",), "scenarios.naive:x", {"a": 1}),
        faults=(fault("close", at=at, code=code), fault("upstream_outage", at=at, duration=3)),
        expect={"silent_loss": 0, "min_reconnects": bound, "resubscribed_exactly": 1.0},
        market={"activity": 0.5},
        mock={"quote_stream_limit": 2},
    )
    assert parse_scenario(scenario_to_toml(s)) == s


BASE = """
name = "x"
vendor = "massive"
duration = "1m"
[client]
subscribe = ["Q.O:SPY250321C00560000"]
"""


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ("colour = 1", "client.colour", "unknown key"),
        ("[expect]\nsilent_los = 0", "expect.silent_los", "unknown metric"),
        ('[expect]\nmax_recovery = "soon"', "expect.max_recovery", "duration"),
        ("[expect]\nresubscribed_exactly = 1", "expect.resubscribed_exactly", "true or false"),
        ('[[fault]]\nkind = "close"\nat = "10s"\ncode = "x"', "fault[0].code", "expected int"),
        ('[[fault]]\nkind = "close"\nat = "2m"', "fault[0].at", "after the scenario's duration"),
        ('[[fault]]\nkind = "upstream_outage"\nat = "1s"', "fault[0].kind", "not something"),
        ('[[fault]]\nkind = "teleport"\nat = "1s"', "fault[0].kind", "unknown fault"),
        ('[[fault]]\nkind = "drop"\nat = "1s"\ncontract = "O:NOPE"', "fault[0].contract", ""),
        ('[[actor]]\nhold = "1s"', "actor[0].at", "missing"),
        ('[[actor]]\nat = "1s"\nsend = [1]', "actor[0].send", "list of text"),
        ("[market]\nactivity = true", "market.activity", "expected a number"),
        ("[market]\nseed = 3", "market.seed", "unknown key"),
        ("[mock]\nmax_connectionz = 2", "mock.max_connectionz", "unknown key"),
        ("[mock]\nmax_connections = 0", "mock", "max_connections"),
        ("[client.options]\nx = 1\n[client.extra]", "client.extra", "unknown key"),
    ],
)
def test_mistakes_name_the_file_the_key_and_the_problem(extra: str, key: str, problem: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(BASE + extra, "bad.toml")
    message = str(caught.value)
    assert message.startswith(f"bad.toml: {key}: "), message
    assert problem in message and "\n" not in message


HEAD = 'name = "x"\nvendor = "massive"\nduration = "1m"\n'
SUBSCRIBE = '[client]\nsubscribe = ["T.*"]\n'


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('vendor = "massive"\nduration = "1m"\n' + SUBSCRIBE, "name"),
        ('name = "x"\nvendor = "bloomberg"\nduration = "1m"', "vendor"),
        ('name = "x"\nvendor = "massive"\n' + SUBSCRIBE, "duration"),
        (HEAD, "client"),
        (HEAD + "[client]\nsubscribe = []", "client.subscribe"),
        (HEAD + '[client]\nsubscribe = ["SPY"]', "client.subscribe[0]"),
        (HEAD.replace("massive", "theta") + '[client]\nsubscribe = ["option:quote:SPY"]',
         "client.subscribe[0]"),
        (HEAD + "start = 2025-03-14T09:30:00\n" + SUBSCRIBE, "start"),
        (HEAD + SUBSCRIBE + 'factory = "nocolon"', "client.factory"),
        ("name = = 1", "toml"),
        ('colour = "red"\nname = "x"', "colour"),
    ],
)  # fmt: skip
def test_missing_and_malformed_top_level_keys(text: str, key: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "f.toml")
    assert str(caught.value).startswith(f"f.toml: {key}: "), caught.value


def test_an_unreadable_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"nothing\.toml: file: cannot read it"):
        load_scenario(tmp_path / "nothing.toml")
