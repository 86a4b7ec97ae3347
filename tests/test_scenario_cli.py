"""`feedlab run` and `feedlab serve --scenario`: exit codes, the summary table, report files,
one-line errors for bad files, and the server's view of an external client over TCP."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket

from clients.common import Backoff
from clients.massive import MassiveClient
from mocks.cli import main
from mocks.server import SERVE_HISTORY
from mocks.testing import MockService
from scenarios.external import serve_scenario
from scenarios.model import parse_scenario
from scenarios.server_view import ConnectionView, PlayView, ServerView
from tests.test_cli import FEEDLAB, _wait_for_lines, spawn

ROOT = Path(__file__).parent.parent
LIBRARY = ROOT / "scenarios" / "library"

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


# One fault, 0.5 s after a connection first subscribes; the fault's kind and parameters follow.
EXTERNAL = """
name = "external"
vendor = "massive"
duration = "1m"
[client]
subscribe = ["Q.O:SPY250321C00560000"]
[[fault]]
at = "0.5s"
"""


async def _serve_and_view(
    text: str, visit: Callable[[str], Awaitable[None]], max_plays: float = math.inf
) -> ServerView:
    """`serve_scenario` on a free port while `visit(url)` plays the clients, then the server's
    view."""
    s = parse_scenario(text, "external.toml")
    stop = trio.Event()
    views = []

    async def serve(task_status: trio.TaskStatus[ServerView]) -> None:
        view = await serve_scenario(
            s, "127.0.0.1", 0, stop=stop, max_plays=max_plays, task_status=task_status
        )
        views.append(view)

    async with trio.open_nursery() as nursery:
        await visit((await nursery.start(serve)).url)
        stop.set()
    (view,) = views
    return view


async def _server_view(
    text: str,
    backoff: Backoff,
    seconds: float,
    *,
    clients: int = 1,
    key: str = "KEY",
    max_plays: float = math.inf,
) -> ServerView:
    """Built-in Massive clients one after the other, each reading for `seconds`."""
    subscriptions = parse_scenario(text, "external.toml").client.subscribe

    async def visit(url: str) -> None:
        for _ in range(clients):
            async with MassiveClient(key, url, backoff=backoff) as client:
                await client.subscribe(*subscriptions)
                with trio.move_on_after(seconds):
                    async for _ in client:
                        pass

    return await _serve_and_view(text, visit, max_plays)


async def test_serve_scenario_plays_the_faults_and_reports_the_server_view(
    tmp_path: Path,
) -> None:
    """Real clock, TCP: the scenario's close comes 0.5 s after the client subscribed; the
    built-in client reconnects, resubscribes, and the view shows both connections. The
    reconnection is part of the same play: it is not closed again."""
    expect = "[expect]\nconnections = 2\nmin_reconnects = 1\nresubscribed_exactly = true\n"
    view = await _server_view(
        EXTERNAL + 'kind = "close"\ncode = 1011\n' + expect + "silent_loss = 0\n",
        Backoff(initial=0.2, rng=random.Random(1)),
        seconds=2.0,
    )
    data = view.to_json()
    first, second = data["connections"]
    assert first["close_code"] == 1011 and first["authenticated"] is True
    assert [f["kind"] for f in first["faults"]] == ["close"] and second["faults"] == []
    (play,) = data["plays"]
    assert play["connection"] == first["id"] and play["connections"] == [1, 2]
    assert [(e["metric"], e["actual"], e["held"]) for e in play["expectations"]] == [
        ("connections", 2, True),
        ("min_reconnects", 1, True),
        ("resubscribed_exactly", 1, True),
    ]
    assert play["unchecked"] == ["silent_loss"] and data["passed"] is True
    assert first["subscriptions"] == second["subscriptions"] == ["Q.O:SPY250321C00560000"]
    assert data["subscriptions_restored"] == [True]
    assert data["auth_attempts"] == 2 and data["auth_failures"] == 0
    assert all(d >= 0 for d in data["reconnect_delays"]) and data["events_sent"] > 0
    path = tmp_path / "view.json"
    view.write(path)
    assert json.loads(path.read_text())["scenario"] == "external"
    summary = view.summary()
    assert "reconnect delays" in summary and "subscriptions restored" in summary
    assert "play 1 from" in summary and "connections 2 (at most 2): held" in summary
    assert "not seen by a server: silent_loss" in summary


def test_the_server_view_judges_what_a_server_can_count() -> None:
    """Per play: connections, reconnects (opened after the first break), resubscribed exactly,
    and the attempts a restart turned away unless its answer was the closed port's."""
    view = ServerView("s", "massive", "ws://x", expect={"connections": 2, "failed_connects": 3})
    view.connections = [
        ConnectionView(1, "a", opened=0.0, closed=5.0, subscribed_at=0.1, subscriptions=["A"]),
        ConnectionView(2, "b", opened=9.0, subscribed_at=9.1, subscriptions=["A"]),
        ConnectionView(3, "c", opened=9.5, subscriptions=[]),  # never subscribed: auth failed?
        ConnectionView(4, "d", opened=70.0, subscribed_at=70.1, subscriptions=["B"]),
    ]
    restart = {"time": 5.0, "kind": "restart", "params": {"answer": "503"}, "duration": 3.0}
    view.plays = [PlayView(1, 0.1, 1, [restart]), PlayView(2, 70.1, 4)]
    view.turned_away = [6.0, 7.0, 8.0, 8.5, 71.0]
    first, second = view.to_json()["plays"]
    assert first["connections"] == [1, 2, 3] and second["connections"] == [4]
    assert first["metrics"] == {
        "connections": 3,
        "reconnects": 2,
        "resubscribed_exactly": True,
        "failed_connects": 4,
        "max_recovery": 1.1,  # back at 8.0, subscribed again at 9.1
        "p50_recovery": 1.1,
        "unrecovered": 0,
    }
    assert [e["held"] for e in first["expectations"]] == [False, False]
    assert "connections 3 (at most 2): BROKEN" in view.summary()
    assert view.to_json()["passed"] is False
    restart["params"] = {"answer": "refused"}  # the kernel refused: no server saw them
    assert view.metrics(view.plays[0])["failed_connects"] is None
    assert view.checks(view.plays[0])[1] == ["failed_connects"]
    assert view.to_json()["backed_off"] is None  # nor how often they came
    assert "backed off: not seen (a restart closed the port" in view.summary()
    view.connections[1].subscriptions = ["B"]
    assert view.metrics(view.plays[0])["resubscribed_exactly"] is False
    # Back without subscribing: nothing at the end of the play.
    view.connections[1].subscriptions, view.connections[1].subscribed_at = [], None
    assert view.metrics(view.plays[0])["resubscribed_exactly"] is False
    # Back, subscribed, then gone by its own close before the end: judged as it left.
    view.connections[1].subscriptions, view.connections[1].subscribed_at = ["A"], 9.1
    view.connections[1].closed, view.connections[1].client_close_code = 30.0, 1000
    view.connections[2].closed = 9.6
    assert view.metrics(view.plays[0])["resubscribed_exactly"] is True
    view.connections[1].close_code = 1011  # the server closed it, and the client never came back
    assert view.metrics(view.plays[0])["resubscribed_exactly"] is False


def test_reconnect_delays_count_from_where_the_connection_stopped_serving() -> None:
    """A stalled socket closes on the server's side only when the server gives up on it: the
    delay counts from the stall (it was -79.9 s, 'immediate', 'not backed off'). A second
    connection opened while the first still serves is not a reconnect."""
    stall = {"time": 30.0, "kind": "stall", "params": {}, "duration": None}
    view = ServerView("s", "massive", "ws://x")
    view.connections = [
        ConnectionView(1, "a", opened=0.0, closed=150.0, faults=[stall]),
        ConnectionView(2, "b", opened=70.5, closed=150.0),
    ]
    assert view.reconnect_delays() == [40.5] and view.retry_delays() == [[40.5], []]
    assert view.to_json()["backed_off"] is True
    # A restart at 30.2065 s (times to the microsecond) closed connection 1 at 30.209: it was hit.
    restart = {"time": 30.2065, "kind": "restart", "params": {}, "duration": 30.0}
    view.connections[0].closed, view.connections[0].faults = 30.209, [restart]
    view.connections[0].subscribed_at, view.connections[0].subscriptions = 0.1, ["A"]
    view.connections[1].subscribed_at, view.connections[1].subscriptions = 70.6, ["A"]
    view.plays = [PlayView(1, 0.1, 1, [restart])]
    assert view.metrics(view.plays[0])["max_recovery"] == pytest.approx(10.394, abs=0.002)
    view.connections[0].closed, view.connections[0].faults = 150.0, []
    # No stall, no restart: two connections at once, as for 1,001 contracts.
    assert view.reconnect_delays() == [] and view.retry_delays() == [[]]


def test_a_stalled_connection_subscribes_to_nothing_after_the_stall() -> None:
    """The stalled socket stays open on the server's side until the stop: its subscriptions
    must not stand in for a reconnection that never subscribed again."""
    stall = {"time": 30.0, "kind": "stall", "params": {}, "duration": None}
    view = ServerView("s", "massive", "ws://x", expect={"resubscribed_exactly": 1})
    view.connections = [
        ConnectionView(1, "a", opened=0.0, subscribed_at=0.1, subscriptions=["A"], faults=[stall]),
        ConnectionView(2, "b", opened=70.5),
    ]  # both still open at the stop
    view.plays, view.ended = [PlayView(1, 0.1, 1, [stall])], 150.0
    assert view.metrics(view.plays[0])["resubscribed_exactly"] is False
    assert view.metrics(view.plays[0])["unrecovered"] == 1
    view.connections[1].subscribed_at, view.connections[1].subscriptions = 70.6, ["A"]
    metrics = view.metrics(view.plays[0])
    assert metrics["resubscribed_exactly"] is True and metrics["max_recovery"] == 40.6


def test_the_server_view_times_recoveries_from_the_resubscription() -> None:
    """From the moment the server could serve again to the client's subscription on a new
    connection; cut short where a later disruption hit the new connection; never back:
    unrecovered, counted to the play's end, and max_recovery breaks whatever its value."""
    view = ServerView("s", "massive", "ws://x", expect={"max_recovery": 5.0}, play_length=100.0)
    view.connections = [
        ConnectionView(1, "a", opened=0.0, closed=10.0, subscribed_at=0.1, subscriptions=["A"]),
        ConnectionView(2, "b", opened=13.0, closed=20.0, subscriptions=[]),  # stalled, no sub
        ConnectionView(3, "c", opened=21.0, subscribed_at=21.5, subscriptions=["A"]),
    ]
    close = {"time": 10.0, "kind": "close", "params": {}, "duration": None}
    cut = {"time": 20.0, "kind": "cut", "params": {}, "duration": None}
    view.plays = [PlayView(1, 0.1, 1, [close, cut])]
    metrics = view.metrics(view.plays[0])
    assert (metrics["max_recovery"], metrics["p50_recovery"], metrics["unrecovered"]) == (
        10.0,  # the close's: cut short at 20 s, where the cut hit connection 2
        1.5,
        0,
    )
    assert "max_recovery 10 (at most 5): BROKEN" in view.summary()
    view.connections.pop()  # never back after the cut
    metrics = view.metrics(view.plays[0])
    assert (metrics["max_recovery"], metrics["unrecovered"]) == (80.1, 1)  # to 100.1, the end
    # A stall with a duration need not end the connection: nothing to judge without a reconnect.
    view.connections = view.connections[:1]
    view.plays[0].faults = [{"time": 5.0, "kind": "stall", "params": {}, "duration": 2.0}]
    assert view.metrics(view.plays[0])["max_recovery"] is None  # not "held" for want of a look
    assert view.checks(view.plays[0])[1] == ["max_recovery"]
    view.plays[0].faults = []
    assert view.metrics(view.plays[0])["max_recovery"] == 0.0  # nothing to recover from
    view.plays[0].faults = [{"time": 5.0, "kind": "stall", "params": {}, "duration": None}]
    # Without a duration the socket is dead: the client must leave.
    assert view.metrics(view.plays[0])["unrecovered"] == 1


STORM = """
name = "storm"
vendor = "massive"
duration = "3.5s"
settle = "0.2s"
[client]
subscribe = ["Q.O:SPY250321C00560000"]
[[fault]]
at = "0.5s"
kind = "close"
code = 1011
[[fault]]
at = "1.5s"
kind = "close"
code = 1012
[[fault]]
at = "2.5s"
kind = "close"
code = 1001
"""


async def test_serve_scenario_plays_a_storm_once_across_the_reconnections() -> None:
    """Three different closes: the client's connections meet them one after the other, as
    scheduled from its first subscription (a schedule per connection would close each one
    with the first, 1011, and never play the rest). A second client arriving after the
    play's `duration` starts the next play (and so would the first coming back after it)."""
    view = await _server_view(STORM, Backoff(initial=0.05, rng=random.Random(2)), 4.0, clients=2)
    codes = [c.close_code for c in view.connections]
    assert codes[:3] == [1011, 1012, 1001]
    assert view.plays[0].connection == view.connections[0].id
    assert view.plays[1].connection == view.connections[4].id  # the second client's first
    assert [f["kind"] for f in view.plays[0].faults] == ["close"] * 3
    assert codes[4] == 1011  # the second client, 0.5 s into the second play
    # `run --command` plays once: the second client meets nothing.
    once = await _server_view(STORM, Backoff(initial=0.05), 4.0, clients=2, max_plays=1)
    assert len(once.plays) == 1 and once.connections[4].faults == []


EVICTING_ACTOR = """
name = "evicted"
vendor = "massive"
duration = "1m"
[client]
subscribe = ["Q.O:SPY250321C00560000"]
[[actor]]
at = "0.5s"
hold = "0.5s"
send = ['{"action":"auth","params":"{api_key}"}']
"""


async def test_serve_scenario_plays_the_actors_with_the_clients_key() -> None:
    """An `[[actor]]` logs in with the key the external client used: one connection per
    account, so the client's connection is the one evicted (max_connections: the built-in
    client waits a while before it tries again); the actor's connection is not in the view of
    the client's."""
    view = await _server_view(
        EVICTING_ACTOR, Backoff(initial=0.2, rng=random.Random(1)), 1.5, key="MINE"
    )
    first = view.connections[0]
    assert first.close_code == 1008
    (actor,) = view.plays[0].faults
    assert first.faults == [actor] and actor["kind"] == "actor"  # (a reconnect may evict it)
    assert actor["connections"] and actor["connections"][0] not in {c.id for c in view.connections}


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
    off; the built-in backoff did."""
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


def _quote_time(url: str, key: str) -> tuple[str, float]:
    """Log in with `key` and subscribe to one contract's quotes: the auth status, and the
    first quote's `t` (seconds), or nan when the key was refused."""
    from websockets.sync.client import connect

    with connect(url, open_timeout=10) as ws:
        ws.recv(10)
        ws.send(json.dumps({"action": "auth", "params": key}))
        status = json.loads(ws.recv(10))[0]["status"]
        if status != "auth_success":
            return status, math.nan
        ws.send(json.dumps({"action": "subscribe", "params": "Q.O:SPY260320C00600000"}))
        while True:
            for event in json.loads(ws.recv(10)):
                if event["ev"] == "Q":
                    return status, event["t"] / 1000


def test_serve_scenario_takes_seed_start_hours_and_keys_from_the_command_line(
    tmp_path: Path,
) -> None:
    """What the command line gives replaces the file's: the seed and start show on the first
    line, the quotes carry the given market time, only the given key is let in."""
    path = tmp_path / "external.toml"
    path.write_text(EXTERNAL + 'kind = "close"\n')
    start = "2026-01-05T10:00:00-05:00"  # a Monday, the market open under --market-hours real
    report = tmp_path / "view.json"
    given = ["--seed", "5", "--start", start, "--market-hours", "real", "--api-key", "GOOD"]
    given += ["--report", str(report)]
    proc = spawn([*FEEDLAB, "serve", "massive", "--port", "0", "--scenario", str(path), *given])
    try:
        (line,) = _wait_for_lines(proc, 1)
        assert line.endswith(f"with scenario external (seed 5, market time from {start})")
        url = line.split(" listening on ")[1].split()[0]
        assert _quote_time(url, "BAD")[0] == "auth_failed"
        status, t = _quote_time(url, "GOOD")
        begins = dt.datetime.fromisoformat(start).timestamp()
        assert status == "auth_success" and begins <= t < begins + 60
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "auth failed" in out and "authenticated" in out
    # Both connections came and went between two looks of the view (0.1 s): seen as they ended.
    refused, good = json.loads(report.read_text())["connections"]
    assert refused["authenticated"] is False and refused["subscribed_at"] is None
    assert good["authenticated"] is True and good["subscriptions"] == ["Q.O:SPY260320C00600000"]
    assert good["subscribed_at"] is not None


def test_serve_starts_the_market_where_told() -> None:
    proc = spawn(
        [*FEEDLAB, "serve", "massive", "--port", "0", "--start", "2025-03-14T09:30:00-04:00"]
    )
    try:
        (line,) = _wait_for_lines(proc, 1)
        _, t = _quote_time(line.split()[-1], "KEY")
        assert dt.datetime(2025, 3, 14, 13, 30, tzinfo=dt.UTC).timestamp() <= t < 1742000000
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


PLAIN_CLIENT = f"{sys.executable} {ROOT / 'tests' / 'plain_massive_client.py'}"
ONE_CLOSE = """
name = "one-close"
vendor = "massive"
duration = "2s"
settle = "1s"
[client]
subscribe = ["Q.O:SPY250321C00560000", "T.O:SPY250321C00560000"]
[[fault]]
at = "1s"
kind = "close"
[expect]
connections = 2
min_reconnects = 1
resubscribed_exactly = true
silent_loss = 0
"""


def test_run_plays_scenarios_against_a_command_in_any_language(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --command`: a client in another process, told where to connect and what to
    subscribe by its environment; the server judges what it can count. The same client with a
    reconnect bug (it does not subscribe again) fails, and the exit code says so."""
    path = tmp_path / "one-close.toml"
    path.write_text(ONE_CLOSE)
    report = tmp_path / "views.json"
    assert main(["run", str(path), "--command", PLAIN_CLIENT, "--report", str(report)]) == 0
    out, err = capsys.readouterr()
    assert "one-close: pass, 3 bound(s) judged by the server" in err
    assert out.endswith("1 of 1 scenarios passed (judged by the server)\n")
    (run,) = json.loads(report.read_text())
    assert run["passed"] is True and run["command_exit_code"] is None
    assert run["plays"][0]["unchecked"] == ["silent_loss"]
    assert run["connections"][0]["subscriptions"] == [
        "Q.O:SPY250321C00560000",
        "T.O:SPY250321C00560000",
    ]
    assert main(["run", str(path), "--command", PLAIN_CLIENT + " --forget"]) == 1
    assert "one-close: FAIL (resubscribed_exactly)" in capsys.readouterr().err


def test_run_says_when_the_command_never_subscribes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import scenarios.command

    monkeypatch.setattr(scenarios.command, "SUBSCRIBE_WITHIN", 2.0)
    path = tmp_path / "one-close.toml"
    path.write_text(ONE_CLOSE)
    assert main(["run", str(path), "--command", "exit 3"]) == 1
    assert "one-close: FAIL (the command exited 3 before it subscribed)" in capsys.readouterr().err
    assert main(["run", str(path), "--command", "sleep 30"]) == 1
    assert "one-close: FAIL (the command never subscribed within 2 s)" in capsys.readouterr().err


@pytest.fixture
def served_mocks(monkeypatch: pytest.MonkeyPatch) -> list[MockService]:
    """The mocks `serve_scenario` starts, to look inside them."""
    import scenarios.external
    from mocks.testing import run_mock

    mocks: list[MockService] = []

    @asynccontextmanager
    async def watched(*args: Any, **kwargs: Any) -> AsyncIterator[MockService]:
        async with run_mock(*args, **kwargs) as mock:
            mocks.append(mock)
            yield mock

    monkeypatch.setattr(scenarios.external, "run_mock", watched)
    return mocks


async def test_serve_scenario_keeps_counts_not_events(served_mocks: list[MockService]) -> None:
    """It serves for as long as it is left: the ledger counts what each connection was sent
    and keeps no event (kept, 20,000 events/s grew the process by 4.4 MB a second)."""
    await _server_view(EXTERNAL + 'kind = "close"\n', Backoff(initial=0.2), seconds=1.0)
    (mock,) = served_mocks
    records = list(mock.ledger.connections.values())
    assert sum(r.counts["sent"] for r in records) > 0
    assert all(not any(r.events.values()) for r in records)


async def test_serve_scenario_remembers_few_connections_and_views_them_all(
    served_mocks: list[MockService],
) -> None:
    """A finished connection keeps 20-30 KiB of WebSocket, link and session: the server keeps
    its last `SERVE_HISTORY`, the view a line for every one."""

    async def visit(url: str) -> None:
        for _ in range(SERVE_HISTORY + 30):
            async with trio_websocket.open_websocket_url(url) as ws:
                await ws.get_message()

    view = await _serve_and_view(EXTERNAL + 'kind = "close"\n', visit)
    (mock,) = served_mocks
    assert len(view.connections) == SERVE_HISTORY + 30
    assert all(c.closed is not None for c in view.connections)
    assert len(mock.history) == SERVE_HISTORY


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_run_command_interrupted_stops_the_command_and_exits_130(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """Ctrl-C or a CI job's timeout: the command is stopped (it runs in its own session: left
    alone it would outlive us), no traceback, and the run does not read as passed."""
    path = tmp_path / "one-close.toml"
    path.write_text(ONE_CLOSE)
    pid_file = tmp_path / "command.pid"
    proc = spawn([*FEEDLAB, "run", str(path), "--command", f"echo $$ > {pid_file}; exec sleep 60"])
    try:
        (line,) = _wait_for_lines(proc, 1)
        assert " listening on " in line
        deadline = time.monotonic() + 10
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    command = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(command, 0)


# The same scenario's subscriptions for Theta and Amberdata, and their plain clients.
OTHER_VENDORS = [
    ("theta", '["option:quote:SPY:20250321:575:C", "index:price:SPX"]'),
    ("amberdata", '["market:options:trades:BTC-28MAR25-60000-C@deribit"]'),
]


@pytest.mark.parametrize(("vendor", "subscribe"), OTHER_VENDORS)
def test_run_command_serves_the_other_vendors_clients_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], vendor: str, subscribe: str
) -> None:
    """The same path for the other protocols: Theta's terminal (no key, JSON stream requests)
    and Amberdata's JSON-RPC (a key header); a drop, and a reconnection that asks again."""
    path = tmp_path / f"{vendor}-one-close.toml"
    path.write_text(
        ONE_CLOSE.replace('"massive"', f'"{vendor}"').replace(
            '["Q.O:SPY250321C00560000", "T.O:SPY250321C00560000"]', subscribe
        )
    )
    command = f"{sys.executable} {ROOT / 'tests' / f'plain_{vendor}_client.py'}"
    assert main(["run", str(path), "--command", command]) == 0, capsys.readouterr()
    assert "one-close: pass, 3 bound(s) judged by the server" in capsys.readouterr().err
