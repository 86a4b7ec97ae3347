"""API keys never appear in what feedlab prints, logs, reports or records, nor in the built-in
clients' exceptions (each test greps everything produced for a distinctive key); scenario and
recording files are read as data only (tomllib and JSON: no eval, no pickle, no YAML)."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket

from clients.amberdata import AmberdataClient
from clients.common import AuthError
from clients.massive import MassiveClient
from mocks.cli import main
from mocks.testing import run_mock

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "scenarios" / "library"
FEEDLAB = [sys.executable, "-m", "mocks.cli"]
SECRET = "SECRETKEY-7f3a9c2e"  # every key below contains it
GOOD, BAD = f"{SECRET}-good", f"{SECRET}-bad"


def assert_no_secret(*texts: str | bytes) -> None:
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        at = data.find(SECRET.encode())
        assert at < 0, f"leaked: ...{data[max(0, at - 300) : at + 60]!r}"


def all_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


# -- the built-in clients' exceptions ------------------------------------------------------------


@pytest.mark.parametrize("vendor", ["massive", "amberdata"])
async def test_a_refused_key_is_not_in_the_clients_exception(
    vendor: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with run_mock(vendor, api_keys=(GOOD,)) as mock:
        cls: Any = MassiveClient if vendor == "massive" else AmberdataClient
        subscription = (
            "Q.O:SPY250321C00560000"
            if vendor == "massive"
            else "market:options:order:snapshots:BTC-28MAR25-60000-C@deribit"
        )
        with pytest.raises(AuthError) as raised:
            with trio.fail_after(60):
                async with cls(BAD, mock.url, connector=mock.connector) as client:
                    await client.subscribe(subscription)
                    async for _ in client:
                        pass
        assert_no_secret(all_text(raised.value))
        for conn in mock.history:  # and the server's record of the connection
            assert_no_secret(repr(conn.info.query), repr(conn.close_code))


# -- feedlab run: output and reports -------------------------------------------------------------


def _bad_key_scenario() -> str:
    text = (LIBRARY / "amberdata-bad-key.toml").read_text()
    return text.replace("UAK-bad", BAD).replace("UAK-good", GOOD)


def _refused_scenario() -> str:
    text = (LIBRARY / "massive-auth-failure-on-reconnect.toml").read_text()
    return text.replace(
        "[expect]",
        f'[mock]\napi_keys = ["{GOOD}"]\n\n[client.options]\napi_key = "{GOOD}"\n\n[expect]',
    )


@pytest.mark.parametrize(
    "scenario",
    [_refused_scenario, _bad_key_scenario],
    ids=["massive-auth-failure", "amberdata-bad-key"],
)
def test_run_reports_and_output_carry_no_key(
    scenario: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = scenario()
    assert SECRET in text  # the keys are really in play
    path = tmp_path / "secret.toml"
    path.write_text(text)
    for report in ("r.json", "r.html"):
        assert main(["run", str(path), "--report", str(tmp_path / report)]) == 0
        captured = capsys.readouterr()
        assert "AuthError" in captured.err + captured.out  # the refusal was reported
        assert_no_secret(captured.out, captured.err, (tmp_path / report).read_bytes())


# -- feedlab serve (and serve --record) as a process --------------------------------------------


def test_serve_and_its_recording_carry_no_key(tmp_path: Path) -> None:
    record = tmp_path / "session.jsonl"
    proc = subprocess.Popen(
        [*FEEDLAB, "serve", "massive", "--port", "0", "--api-key", GOOD, "--record", str(record)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert "listening on" in line
        url = line.split()[-1]

        async def clients() -> list[BaseException]:
            # First, a client that puts the key where no vendor does: it is redacted because the
            # mock was given it, not because it was seen in an auth message.
            async with trio_websocket.open_websocket_url(url) as ws:
                await ws.get_message()  # connected
                await ws.send_message(f'{{"action":"subscribe","params":"Q.{GOOD}"}}')
                await ws.get_message()
            errors: list[BaseException] = []
            for key in (GOOD, BAD):
                try:
                    with trio.fail_after(20):
                        async with MassiveClient(key, url, max_reconnects=0) as client:
                            await client.subscribe("T.*")
                            async for _ in client:
                                break
                except AuthError as exc:
                    errors.append(exc)
            return errors

        errors = trio.run(clients)
        assert len(errors) == 1  # the bad key was refused, the good one served
        assert_no_secret(all_text(errors[0]))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert_no_secret(out, err, record.read_bytes())
    assert b'"kind":"open"' in record.read_bytes()  # the sessions were recorded


# -- data only ------------------------------------------------------------------------------------

READERS = [
    "scenarios/model.py",
    "mocks/faults.py",
    "mocks/recording.py",
    "mocks/recorder.py",
    "mocks/replay.py",
    "mocks/verify.py",
    "mocks/tls.py",
]
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "yaml", "ruamel", "jsonpickle"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}


@pytest.mark.parametrize("path", READERS)
def test_files_are_parsed_as_data_only(path: str) -> None:
    tree = ast.parse((ROOT / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & UNSAFE_MODULES, path
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in UNSAFE_MODULES, path
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in UNSAFE_CALLS, f"{path}: {node.func.id}()"


def test_scenarios_are_toml_and_recordings_json(tmp_path: Path) -> None:
    from mocks.recording import RecordingError, read_recording
    from scenarios.model import ScenarioError, parse_scenario

    marker = tmp_path / "ran"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    with pytest.raises(ScenarioError):
        parse_scenario(f'name = "x"\nvendor = "massive"\nduration = "{code}"\n', "s.toml")
    with pytest.raises(ScenarioError):
        parse_scenario("!!python/object/apply:os.system ['true']\n", "s.toml")  # YAML: not TOML
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"!!python/object/apply:os.system ['true']\n")
    with pytest.raises(RecordingError):
        read_recording(path)
    path.write_bytes(b"\x80\x04\x95" + b"cos\nsystem\n(S'true'\ntR.")  # a pickle
    with pytest.raises(RecordingError):
        read_recording(path)
    assert not marker.exists()
