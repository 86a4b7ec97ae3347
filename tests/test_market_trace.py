"""bench/market_trace.py: a live `serve`'s market calls, recorded and replayed in-process."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import trio
import trio_websocket

from tests.test_cli import ROOT, _wait_for_lines, spawn

TRACE = [sys.executable, str(ROOT / "bench" / "market_trace.py")]


def test_a_recorded_serve_replays_the_same_events(tmp_path: Path) -> None:
    trace = tmp_path / "market.trace"
    proc = spawn(
        [*TRACE, "record", str(trace), "--", "serve", "massive", "--port", "0", "--rate", "500"]
    )
    try:
        url = _wait_for_lines(proc, 1)[0].split()[-1]

        async def client() -> int:
            quotes = 0
            async with trio_websocket.open_websocket_url(url) as ws:
                await ws.get_message()  # connected
                await ws.send_message('{"action":"auth","params":"k"}')
                await ws.get_message()
                await ws.send_message('{"action":"subscribe","params":"Q.O:SPY250620C00550000"}')
                while quotes < 20:
                    message = await ws.get_message()
                    quotes += sum(e.get("ev") == "Q" for e in orjson.loads(message))
            return quotes

        assert trio.run(client) >= 20  # (a frame may carry several: more under load)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0

    def replay() -> tuple[int, int, str]:
        out = subprocess.run(
            [*TRACE, "replay", str(trace)], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        found = re.match(r"([\d,]+) calls, ([\d,]+) events \(digest (\w+)\)", out)
        assert found is not None, out
        return int(found[1].replace(",", "")), int(found[2].replace(",", "")), found[3]

    first = replay()
    assert first == replay()
    calls, events, _ = first
    assert calls > 20 and events >= 20  # (what the market returned: the client's quotes among them)
