"""`feedlab run` and `feedlab serve --scenario`: exit codes, the summary table, report files,
one-line errors for bad files, and the server's view of an external client over TCP."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import trio

from clients.common import Backoff
from clients.massive import MassiveClient
from mocks.cli import main
from scenarios.external import ServerView, serve_scenario
from scenarios.model import parse_scenario

LIBRARY = Path(__file__).parent.parent / "scenarios" / "library"

QUICK = """
name = "quick"
vendor = "massive"
duration = "40s"
settle = "5s"
[client]
subscribe = ["Q.O:SPY250321C00560000"]
[[fault]]
at = "10.5s"
kind = "close"
[expect]
silent_loss = 0
"""


def test_run_prints_a_table_and_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [LIBRARY / "massive-disconnect-storm.toml", LIBRARY / "theta-dst-switch-day.toml"]
    report = tmp_path / "out.json"
    assert main(["run", *map(str, files), "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "massive-disconnect-storm" in out and "theta-dst-switch-day" in out
    assert "2 of 2 scenarios passed" in out
    data = json.loads(report.read_text())
    assert [r["scenario"] for r in data] == ["massive-disconnect-storm", "theta-dst-switch-day"]


def test_run_exits_1_when_an_expectation_breaks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "strict.toml"
    path.write_text(QUICK.replace("silent_loss = 0", "reconnects = 0"))
    html = tmp_path / "r.html"
    assert main(["run", str(path), "--seed", "3", "--report", str(html)]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert "<svg" in html.read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (QUICK.replace('duration = "40s"', 'duration = "forever"'), "bad.toml: duration: "),
        (QUICK + "typo = 1\n", "bad.toml: expect.typo: unknown metric"),
        (QUICK.replace("[client]", '[client]\nfactory = "no.such.module:f"'),
         "bad.toml: client.factory: cannot import no.such.module"),
    ],
)  # fmt: skip
def test_a_bad_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("feedlab: error: ") and str(path) in err and "\n" not in err
    assert message.split(": ", 1)[1] in err


def test_serve_scenario_refuses_another_vendors_file(capsys: pytest.CaptureFixture[str]) -> None:
    path = LIBRARY / "theta-upstream-outage.toml"
    assert main(["serve", "massive", "--scenario", str(path), "--port", "0"]) == 2
    assert "for theta, not massive" in capsys.readouterr().err
    assert main(["serve", "massive", "--report", "x.json"]) == 2


# One fault, 0.5 s after each connection subscribes; the fault's kind and parameters follow.
EXTERNAL = """
name = "external"
vendor = "massive"
duration = "1m"
[client]
subscribe = ["Q.O:SPY250321C00560000"]
[[fault]]
at = "0.5s"
"""


async def _server_view(text: str, backoff: Backoff, seconds: float) -> ServerView:
    """`serve_scenario` on a free port, one built-in Massive client reading for `seconds`,
    then the server's view."""
    s = parse_scenario(text, "external.toml")
    stop = trio.Event()
    views = []

    async def serve(task_status: trio.TaskStatus[str]) -> None:
        views.append(await serve_scenario(s, "127.0.0.1", 0, stop=stop, task_status=task_status))

    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve)
        async with MassiveClient("KEY", url, backoff=backoff) as client:
            await client.subscribe(*s.client.subscribe)
            with trio.move_on_after(seconds):
                async for _ in client:
                    pass
        stop.set()
    (view,) = views
    return view


async def test_serve_scenario_applies_faults_per_connection_and_reports_the_server_view(
    tmp_path: Path,
) -> None:
    """Real clock, TCP: the scenario's close comes 0.5 s after each connection subscribes; the
    built-in client reconnects, resubscribes, and the view shows both."""
    view = await _server_view(
        EXTERNAL + 'kind = "close"\ncode = 1011\n',
        Backoff(initial=0.2, rng=random.Random(1)),
        seconds=2.0,
    )
    data = view.to_json()
    first, second = data["connections"][:2]
    assert first["close_code"] == 1011 and first["authenticated"] is True
    assert [f["kind"] for f in first["faults"]] == ["close"]
    assert first["subscriptions"] == second["subscriptions"] == ["Q.O:SPY250321C00560000"]
    assert data["subscriptions_restored"] and all(data["subscriptions_restored"])
    assert data["auth_attempts"] >= 2 and data["auth_failures"] == 0
    assert all(d >= 0 for d in data["reconnect_delays"]) and data["events_sent"] > 0
    path = tmp_path / "view.json"
    view.write(path)
    assert json.loads(path.read_text())["scenario"] == "external"
    assert "reconnect delays" in view.summary() and "subscriptions restored" in view.summary()


RESTART_503 = EXTERNAL + 'kind = "restart"\nduration = "1.5s"\nanswer = "503"\n'


class _EveryFewMilliseconds(Backoff):
    """The same short delay before every attempt: no backoff at all."""

    def next_delay(self) -> float:
        return self.initial


async def _through_a_restart(backoff: Backoff) -> dict[str, Any]:
    """The server's view of one Massive client over TCP through a restart answering 503."""
    return (await _server_view(RESTART_503, backoff, seconds=4.0)).to_json()


async def test_serve_scenario_counts_the_attempts_a_restart_turned_away() -> None:
    """Answering 503 the server sees every attempt: a client retrying every 20 ms did not back
    off; the built-in backoff did. (Each new connection gets the schedule again, so a run of
    attempts follows every connection's restart; the first is checked.)"""
    hammering = await _through_a_restart(_EveryFewMilliseconds(initial=0.02))
    first, *_ = hammering["retry_delays"]
    assert len(first) >= 20 and sorted(first)[len(first) // 2] < 0.1  # most at once
    assert hammering["turned_away"] >= len(first) - 1
    assert hammering["backed_off"] is False
    # Random(1)'s first draws make delays of 0.07, 0.85 and 1.5 s: one at once, never two.
    patient = await _through_a_restart(Backoff(initial=0.5, rng=random.Random(1)))
    first, *_ = patient["retry_delays"]
    assert len(first) == 3  # two attempts turned away, then the connection that opened
    assert patient["backed_off"] is True
