"""The `feedlab` command's contract: subcommands, one-line errors with exit code 2, serve."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
import trio_websocket

from mocks.cli import main
from mocks.demo import run_demo

FEEDLAB = [sys.executable, "-m", "mocks.cli"]
ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "watch", "demo"):
        assert command in out


def test_demo_runs_the_scenarios_and_the_chaos_search(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_demo(seed=3, out=out, report_dir=tmp_path) == 0
    text = out.getvalue()
    assert "seed 3" in text and "O:SPY" in text and "BTC-" in text
    assert text.count(" pass (") == 7 and "FAIL" not in text
    assert 'kind = "cut"' in text or 'kind = "close"' in text  # the minimal schedule
    assert (tmp_path / "demo.html").read_text().startswith("<!DOCTYPE html")
    assert "\x1b[" not in text  # no colour codes: readable when piped


def spawn(command: list[str]) -> subprocess.Popen[str]:
    """A command in the project's directory, its output unbuffered and piped."""
    return subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_for_lines(proc: subprocess.Popen[str], count: int) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while len(lines) < count and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            lines.append(line.strip())
    return lines


@pytest.mark.skipif(
    not Path(ROOT, "mocks", "massive", "__init__.py").exists(),
    reason="the Massive mock is not there yet",
)
def test_serve_prints_listening_lines_and_exits_0_on_sigterm() -> None:
    proc = spawn([*FEEDLAB, "serve", "all", "--port", "0"])
    try:
        lines = _wait_for_lines(proc, 3)
        assert [line.split()[0] for line in lines] == ["massive", "theta", "amberdata"]
        assert lines[0].startswith("massive listening on ws://127.0.0.1:")
        assert lines[0].endswith("/options") and lines[1].endswith("/v1/events")
        assert lines[2].endswith("/")
        url = lines[0].split()[-1]

        async def connect() -> str | bytes:
            async with trio_websocket.open_websocket_url(url) as ws:
                return await ws.get_message()

        assert "connected" in str(trio.run(connect))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_serve_forgets_what_no_client_has_wanted_for_a_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`serve` is long-running: contracts nobody wants stop after `FORGET_AFTER` (the market's
    side: tests/test_market_unwatch.py); scenarios keep them (MarketSettings' default)."""
    import mocks.serve
    from mocks.sim.market import MarketSettings

    given: list[MarketSettings] = []

    async def serve_forever(
        names: object,
        host: object,
        port: object,
        settings: MarketSettings,
        *args: object,
        **kwargs: object,
    ) -> None:
        given.append(settings)

    monkeypatch.setattr(mocks.serve, "serve_forever", serve_forever)
    assert main(["serve", "massive", "--port", "0", "--rate", "500"]) == 0
    assert [s.forget_after for s in given] == [mocks.serve.FORGET_AFTER] == [60.0]
    assert given[0].total_rate == 500.0
    assert MarketSettings().forget_after is None


def test_ctrl_c_stops_a_server_with_0_and_a_run_with_130(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`serve` runs until Ctrl-C and exits 0; a `run` cut short never held its expectations."""
    import mocks.serve
    import scenarios.cli

    def interrupted(*args: object, **kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(scenarios.cli, "run_command", interrupted)
    monkeypatch.setattr(mocks.serve, "serve_forever", interrupted)
    assert main(["run", "x.toml"]) == 130
    assert main(["serve", "massive", "--port", "0"]) == 0
