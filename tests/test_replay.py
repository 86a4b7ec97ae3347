"""Replay: the shipped sample recordings served as the vendor, through the built-in clients.

The samples are made by `recordings/make_samples.py` (each mock, seed 7, its built-in client);
the module fixture makes them again, checks the shipped files are exactly that, and keeps what
the client delivered while recording — which a replay must reproduce, event for event.
"""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import orjson
import pytest
import trio

from clients.common import Backoff, GapNotice, Rejected, Status
from mocks.faults import fault
from mocks.recording import read_recording
from mocks.replay import build_timeline, open_replay, replay_sessions
from mocks.testing import MockService

ROOT = Path(__file__).resolve().parents[1]


def _load_make_samples() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_samples", ROOT / "recordings" / "make_samples.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_samples"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


make_samples = _load_make_samples()
VENDORS = ("massive", "theta", "amberdata")
STARTED_NS = 1_741_959_000_000_000_000  # the samples' market start, 2025-03-14 09:30 ET


def market_data(events: list[Any]) -> list[Any]:
    return [e for e in events if not isinstance(e, Status | GapNotice | Rejected)]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[Any]]]:
    """Each sample made afresh in this process: the file, and what its client delivered while
    being recorded. (The order of lines written at one instant may differ from the shipped
    file's when other tests ran first in this process: Trio's scheduler under Hypothesis orders
    tasks by a process-wide counter. The shipped bytes are checked in a fresh process below.)"""
    out: dict[str, tuple[Path, list[Any]]] = {}
    for vendor in VENDORS:
        sample = make_samples.SAMPLES[vendor]
        path, delivered = make_samples.make(sample, tmp_path_factory.mktemp(vendor) / "s.jsonl.gz")
        out[vendor] = (path, market_data(delivered))
    return out


@pytest.fixture(scope="module")
def recorded(made: dict[str, tuple[Path, list[Any]]]) -> dict[str, list[Any]]:
    return {vendor: delivered for vendor, (_, delivered) in made.items()}


@pytest.mark.parametrize("hash_seed", ["0", "3"])
def test_the_shipped_samples_are_what_the_script_makes(tmp_path: Path, hash_seed: str) -> None:
    """Whatever the process's string hashing (CI's differs run to run), same bytes."""
    subprocess.run(
        [sys.executable, str(ROOT / "recordings" / "make_samples.py"), "--out-dir", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
    )
    for vendor in VENDORS:
        shipped = make_samples.SAMPLES[vendor].path
        assert (tmp_path / shipped.name).read_bytes() == shipped.read_bytes(), (
            f"{shipped} is out of date: run recordings/make_samples.py"
        )


def test_samples_are_small_synthetic_and_what_the_script_makes(
    recorded: dict[str, list[Any]],
) -> None:
    for vendor in VENDORS:
        path = make_samples.SAMPLES[vendor].path
        assert "synthetic" in path.name and path.stat().st_size < 1_000_000
        recording = read_recording(path)
        assert recording.header.source == {
            "kind": "mock",
            "seed": 7,
            "market_start": "2025-03-14T13:30:00Z",
        }
        assert recording.truncated is None
        assert len(recorded[vendor]) > 100


def assert_reproduces(got: list[Any], expected: list[Any]) -> None:
    """The replay delivered what the recording client did, in order. The recording client
    stopped reading after DURATION; a frame the mock sent at that very instant is in the file but
    was never delivered then: a replay delivers it too (at most the last instant's two)."""
    got = market_data(got)
    assert expected and got[: len(expected)] == expected
    end_ns = STARTED_NS + int(make_samples.DURATION * 1e9)
    assert all(e.timestamp_ns >= end_ns - 10**8 for e in got[len(expected) :])
    assert len(got) - len(expected) <= 2


def client_for(vendor: str, service: MockService, key: str = "replay-key") -> Any:
    return make_samples.SAMPLES[vendor].client(
        key,
        service.url,
        connector=service.connector,
        clock=lambda: service.market.now_ns() / 1e9,
        backoff=Backoff(rng=random.Random(3)),
    )


async def consume(client: Any, subscriptions: tuple[str, ...], seconds: float) -> list[Any]:
    got: list[Any] = []
    async with client:
        await client.subscribe(*subscriptions)
        with trio.move_on_after(seconds):
            async for event in client:
                got.append(event)
    return got


@pytest.mark.parametrize("speed", [1.0, 4.0, None], ids=["speed-1", "speed-4", "speed-max"])
@pytest.mark.parametrize("vendor", VENDORS)
async def test_replay_through_the_builtin_client_reproduces_the_recorded_events(
    autojump_clock: trio.abc.Clock,
    made: dict[str, tuple[Path, list[Any]]],
    vendor: str,
    speed: float | None,
) -> None:
    sample = make_samples.SAMPLES[vendor]
    path, delivered = made[vendor]
    async with open_replay(path, speed=speed) as service:
        got = await consume(client_for(vendor, service), sample.subscriptions, 70.0)
        assert_reproduces(got, delivered)
        (session,) = replay_sessions(service)
        assert session.frames_sent == len(build_timeline(read_recording(path)).frames)


async def test_the_recorded_timing_is_kept_and_scaled(autojump_clock: trio.abc.Clock) -> None:
    """Speed 1: the last frame arrives as long after the subscription as it was recorded;
    speed 4: a quarter of that."""
    sample = make_samples.SAMPLES["massive"]
    timeline = build_timeline(read_recording(sample.path))
    span = timeline.end - timeline.origin
    for speed in (1.0, 4.0):
        arrivals: list[float] = []
        async with open_replay(sample.path, speed=speed) as service:
            client = client_for("massive", service)
            async with client:
                await client.subscribe(*sample.subscriptions)
                subscribed_at = trio.current_time()
                with trio.move_on_after(span / speed + 5):
                    async for _ in client:
                        arrivals.append(trio.current_time() - subscribed_at)
        assert arrivals[-1] == pytest.approx(span / speed, abs=0.05)


async def test_a_client_gets_only_what_it_subscribed_to(
    autojump_clock: trio.abc.Clock, made: dict[str, tuple[Path, list[Any]]]
) -> None:
    """Massive batches mixing both contracts are cut down to the one subscribed."""
    path, delivered = made["massive"]
    spy = "O:SPY250321C00575000"
    frames = build_timeline(read_recording(path)).frames
    pairs = [cast(tuple[tuple[str, str], ...], f.keys) for f in frames]
    assert any({sym for _, sym in keys} == {spy, "O:QQQ250321P00480000"} for keys in pairs)
    async with open_replay(path, speed=None) as service:
        got = await consume(client_for("massive", service), (f"Q.{spy}",), 70.0)
    expected = [e for e in delivered if type(e).__name__ == "Quote" and e.symbol == spy]
    assert_reproduces(got, expected)


async def test_theta_and_amberdata_filter_by_stream(
    autojump_clock: trio.abc.Clock, recorded: dict[str, list[Any]]
) -> None:
    async with open_replay(make_samples.SAMPLES["theta"].path, speed=None) as service:
        got = await consume(client_for("theta", service), ("index:price:SPX",), 70.0)
    expected = [e for e in recorded["theta"] if e.symbol == "SPX"]
    assert_reproduces(got, expected)

    async with open_replay(make_samples.SAMPLES["amberdata"].path, speed=None) as service:
        trades = "market:options:trades:ETH-28MAR25-2500-P"
        got = await consume(client_for("amberdata", service), (trades,), 70.0)
    expected = [
        e
        for e in recorded["amberdata"]
        if type(e).__name__ == "Trade" and e.symbol == "ETH-28MAR25-2500-P"
    ]
    assert_reproduces(got, expected)


async def test_amberdata_pushes_carry_the_new_clients_subscription_ids(
    autojump_clock: trio.abc.Clock,
) -> None:
    sample = make_samples.SAMPLES["amberdata"]
    recorded_ids = {f.subscription for f in build_timeline(read_recording(sample.path)).frames}
    async with (
        open_replay(sample.path, speed=None, seed=99) as service,
        service.connector(service.url, [(b"x-api-key", b"UAK-other")]) as ws,
    ):
        request = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "subscribe",
            "params": [
                "market:options:trades",
                {"instrument": "ETH-28MAR25-2500-P", "exchange": "deribit"},
            ],
        }
        await ws.send_message(orjson.dumps(request).decode())
        reply = orjson.loads(await ws.get_message())
        new_id = reply["result"]
        assert new_id not in recorded_ids
        push = orjson.loads(await ws.get_message())
        assert push["method"] == "subscription"
        assert push["params"]["subscription"] == new_id


async def test_each_client_has_its_own_playback(
    autojump_clock: trio.abc.Clock, recorded: dict[str, list[Any]]
) -> None:
    """A second client (another key) arriving 30 s later still gets the recording from the
    start; the first one is not disturbed."""
    sample = make_samples.SAMPLES["massive"]
    results: dict[str, list[Any]] = {}
    async with open_replay(sample.path, speed=1.0) as service:

        async def run(key: str, delay: float) -> None:
            await trio.sleep(delay)
            got = await consume(client_for("massive", service, key), sample.subscriptions, 70.0)
            results[key] = got

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "first", 0.0)
            nursery.start_soon(run, "second", 30.0)
    assert_reproduces(results["first"], recorded["massive"])
    assert_reproduces(results["second"], recorded["massive"])


async def test_loop_starts_again_at_the_end(autojump_clock: trio.abc.Clock) -> None:
    """A raw connection (the built-in client would rightly drop repeated sequence numbers)."""
    sample = make_samples.SAMPLES["massive"]
    frames = build_timeline(read_recording(sample.path)).frames
    async with (
        open_replay(sample.path, speed=None, loop=True) as service,
        service.connector(service.url) as ws,
    ):
        await ws.get_message()  # connected
        await ws.send_message('{"action":"auth","params":"k"}')
        await ws.get_message()
        await ws.send_message(
            orjson.dumps({"action": "subscribe", "params": ",".join(sample.subscriptions)})
        )
        await ws.get_message()
        data = [await ws.get_message() for _ in range(2 * len(frames) + 5)]
    texts = [f.data for f in frames]
    assert data[: len(frames)] == texts
    assert data[len(frames) : 2 * len(frames)] == texts
    assert data[2 * len(frames) :] == texts[:5]


async def test_faults_apply_on_top_of_a_replay(
    autojump_clock: trio.abc.Clock, recorded: dict[str, list[Any]]
) -> None:
    """A close 1011 at 21.3 s: the client reconnects, its playback carries on from the present
    (nothing is replayed twice) and what it missed lies inside its gap notice."""
    sample = make_samples.SAMPLES["massive"]
    faults = (fault("close", at="21.3s", code=1011),)
    async with open_replay(sample.path, speed=1.0, faults=faults) as service:
        got = await consume(client_for("massive", service), sample.subscriptions, 70.0)
        assert [a.fault.kind for a in service.director.applied] == ["close"]
        assert len(service.history) == 2
    (gap,) = [e for e in got if isinstance(e, GapNotice)]
    delivered = market_data(got)
    assert len(delivered) == len(set(map(_identity, delivered)))  # nothing twice
    recorded_ids = [_identity(e) for e in recorded["massive"]]
    assert [_identity(e) for e in delivered] == [
        i for i in recorded_ids if i in set(map(_identity, delivered))
    ]
    missing = [e for e in recorded["massive"] if _identity(e) not in set(map(_identity, delivered))]
    assert missing, "the outage lost nothing?"
    for event in missing:
        if hasattr(event, "timestamp_ns") and type(event).__name__ in ("Quote", "Trade"):
            assert gap.start - 1 <= event.timestamp_ns / 1e9 <= gap.end + 1
    assert any(e.timestamp_ns / 1e9 > gap.end for e in delivered if hasattr(e, "timestamp_ns"))


def _identity(event: Any) -> tuple[Any, ...]:
    return (type(event).__name__, event.symbol, getattr(event, "sequence", None), repr(event))


async def test_theta_upstream_outage_silences_a_replay(autojump_clock: trio.abc.Clock) -> None:
    sample = make_samples.SAMPLES["theta"]
    faults = (fault("upstream_outage", at="10s", duration="20s"),)
    async with open_replay(sample.path, speed=1.0, faults=faults) as service:
        got = await consume(client_for("theta", service), sample.subscriptions, 70.0)
    data = market_data(got)
    assert data
    assert any(isinstance(e, GapNotice) and e.reason == "upstream outage" for e in got)


async def test_the_official_massive_client_gets_the_recorded_quotes() -> None:
    """`massive.WebSocketClient`, unchanged, in a thread over TCP, on the real clock."""
    from massive.websocket.models import EquityQuote

    from tests.test_mock_massive_official import in_thread, run_official

    sample = make_samples.SAMPLES["massive"]
    recording = read_recording(sample.path)
    quotes = [
        (item["sym"], item["q"], item["bp"], item["ap"])
        for f in build_timeline(recording).frames
        for item in orjson.loads(f.data)
        if item["ev"] == "Q"
    ]
    async with open_replay(recording, speed=None) as service:
        port = await service.serve_tcp()
        seen, error = await in_thread(
            lambda: run_official(
                port,
                [s for s in sample.subscriptions if s.startswith("Q.")],
                lambda seen: len(seen) >= len(quotes),
            )
        )
    assert error is None
    got = [(m.symbol, m.sequence_number, m.bid_price, m.ask_price) for m in seen]
    assert all(isinstance(m, EquityQuote) for m in seen)
    assert got == quotes


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "line 1: empty file"),
        (b'{"format":"other"}\n', "line 1: not a feedlab-recording file"),
        (b"not json\n", "line 1: header is not JSON"),
    ],
)
def test_replay_of_a_bad_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, problem: str
) -> None:
    from mocks.recording_cli import main

    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    assert main(["replay", str(path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}: {problem}" in err


def test_replay_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mocks.recording_cli import main

    assert main(["replay", str(tmp_path / "nope.jsonl.gz")]) == 2
    assert "nope.jsonl.gz: line 0: no such file" in capsys.readouterr().err


def test_speed_must_be_a_factor_or_max(capsys: pytest.CaptureFixture[str]) -> None:
    from mocks.recording_cli import main

    assert main(["replay", "x.jsonl", "--speed", "fast"]) == 2
    assert "--speed takes a factor or 'max'" in capsys.readouterr().err


def test_a_scenario_over_a_replay_names_what_it_leaves_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`serve --replay FILE --scenario S`: faults on market events and actors cannot play over
    recorded frames; one warning line names them, and the rest of the faults are served."""
    from mocks.recording_cli import _scenario_faults

    path = tmp_path / "mixed.toml"
    path.write_text(
        'name = "mixed"\nvendor = "massive"\nduration = "1m"\n'
        '[client]\nsubscribe = ["Q.O:SPY250321C00560000"]\n'
        '[[fault]]\nat = "5s"\nkind = "drop"\n'
        '[[fault]]\nat = "6s"\nkind = "close"\n'
        '[[actor]]\nat = "7s"\nsend = []\n'
    )
    faults = _scenario_faults(str(path), "massive")
    assert [f.kind for f in faults] == ["drop", "close"]
    err = capsys.readouterr().err
    assert err == f"feedlab: warning: {path}: not played over a replay: drop, actor\n"
    _scenario_faults(str(ROOT / "scenarios/library/massive-disconnect-storm.toml"), "massive")
    assert capsys.readouterr().err == ""
