"""Recording: the format (written as it happens, read back tolerantly), the mock recording its own
sessions, the recording proxy relaying to a mock over TCP, secrets kept off the disk, and a
recorder killed with SIGKILL leaving a readable file that `verify` calls truncated.
"""

from __future__ import annotations

import gzip
import os
import random
import signal
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest
import trio
import trio_websocket
from hypothesis import given
from hypothesis import strategies as st

from clients.amberdata import AmberdataClient
from clients.common import Backoff
from clients.massive import MassiveClient, Quote
from mocks import recording as recording_module
from mocks.recorder import RecordingProxy, Redactor, WireRecorder, mock_header, upstream_target
from mocks.recording import Header, RecordingError, RecordingWriter, read_recording
from mocks.sim.market import MarketSettings
from mocks.testing import run_mock
from mocks.verify import verify

KEY = "sk-live-4f9a8b7c6d5e"
CALL = "O:SPY250321C00575000"
HEADER = Header("massive", {"kind": "mock", "seed": 1}, "2025-03-14T13:30:00Z")


# -- the format --------------------------------------------------------------------------------


@given(
    st.lists(
        st.tuples(
            st.floats(0, 1e6, allow_nan=False),
            st.integers(1, 50),
            st.sampled_from(["client", "server"]),
            st.one_of(st.text(), st.binary()),
        ),
        max_size=20,
    ),
    st.booleans(),
)
def test_messages_read_back_exactly(
    tmp_path_factory: pytest.TempPathFactory,
    messages: list[tuple[float, int, str, str | bytes]],
    compressed: bool,
) -> None:
    path = tmp_path_factory.mktemp("rt") / ("r.jsonl.gz" if compressed else "r.jsonl")
    writer = RecordingWriter(path, HEADER)
    for t, conn, side, data in messages:
        writer.message(t, conn, side, data)  # type: ignore[arg-type]
    writer.end(1e6)
    recording = read_recording(path)
    assert recording.truncated is None and recording.header == HEADER
    got = [(r.t, r.conn, r.side, r.data) for r in recording.records]
    assert got == [(round(t, 6), c, s, d) for t, c, s, d in messages]


def test_open_close_and_reject_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    writer = RecordingWriter(path, HEADER)
    writer.open(0.5, 3, "/options", {"a": "1"}, {"user-agent": "x"})
    writer.close(1.5, 3, "server", 1008, "policy")
    writer.reject(2.0, 4, 401, "Unauthorized")
    writer.end(3.0)
    opened, closed, rejected = read_recording(path).records
    assert (opened.kind, opened.path, dict(opened.query), dict(opened.headers)) == (
        "open",
        "/options",
        {"a": "1"},
        {"user-agent": "x"},
    )
    assert (closed.side, closed.code, closed.reason) == ("server", 1008, "policy")
    assert (rejected.status, rejected.data) == (401, "Unauthorized")


def test_lines_reach_the_disk_without_closing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write flushes once the last flush is FLUSH_INTERVAL old; `flush_due` (the timer task)
    flushes anything waiting. Either way a reader sees it with the writer still open."""
    now = [100.0]
    monkeypatch.setattr(recording_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    for name in ("r.jsonl", "r.jsonl.gz"):
        path = tmp_path / name
        writer = RecordingWriter(path, HEADER)
        writer.message(0.0, 1, "server", "first")
        assert read_recording(path).records == []  # still in memory: < 100 ms
        now[0] += recording_module.FLUSH_INTERVAL + 0.001
        writer.message(0.1, 1, "server", "second")
        assert [r.data for r in read_recording(path).records] == ["first", "second"]
        writer.message(0.2, 1, "server", "third")
        writer.flush_due()
        recording = read_recording(path)
        assert [r.data for r in recording.records] == ["first", "second", "third"]
        assert recording.truncated is not None  # no end line (and for gzip no trailer) yet
        writer.close_file()


def test_a_cut_off_last_line_is_reported_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    writer = RecordingWriter(path, HEADER)
    writer.message(0.0, 1, "server", "whole")
    writer.end(1.0)
    text = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(text[:2]) + b'{"t":0.5,"c":1,"from":"ser')
    recording = read_recording(path)
    assert [r.data for r in recording.records] == ["whole"]
    assert recording.truncated == "line 3 is cut off (the recorder stopped mid-line)"


def test_a_cut_gzip_stream_is_reported_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl.gz"
    writer = RecordingWriter(path, HEADER)
    for i in range(200):
        writer.message(i, 1, "server", f"message {i} " * 20)
    writer.end(300.0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    recording = read_recording(path)
    assert 0 < len(recording.records) < 200
    assert recording.records[0].data == "message 0 " * 20
    assert recording.truncated is not None


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ([b'{"t":0,"c":1,"from":"server","kind":"text","data":"x"}'], "line 1: not a feedlab"),
        ([HEADER_LINE := orjson.dumps(HEADER.to_json()), b"garbage", b"{}"], "line 2: not JSON"),
        ([HEADER_LINE, b'{"t":"soon","c":1,"from":"server","kind":"text"}', b""], "line 2: time"),
        ([HEADER_LINE, b'{"t":1,"c":1,"from":"server","kind":"fax"}', b""], "line 2: unknown kind"),
        ([HEADER_LINE.replace(b'"version":1', b'"version":9')], "line 1: format version 9"),
    ],
)
def test_a_malformed_file_names_the_line(tmp_path: Path, lines: list[bytes], problem: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(RecordingError) as caught:
        read_recording(path)
    assert str(caught.value).startswith(f"{path}: {problem}")


# -- secrets -----------------------------------------------------------------------------------


def test_redactor_replaces_every_secret_it_knows() -> None:
    redactor = Redactor("amberdata", [r"acct-\d+"])
    assert redactor.headers({"X-Api-Key": KEY, "User-Agent": "ua"}) == {
        "x-api-key": "REDACTED",
        "user-agent": "ua",
    }
    assert redactor.query({"x-api-key": KEY, "api_key": "abcd1234", "depth": "5"}) == {
        "x-api-key": "REDACTED",
        "api_key": "REDACTED",
        "depth": "5",
    }
    assert redactor.message(f'{{"echo":"{KEY}","account":"acct-42"}}') == (
        '{"echo":"REDACTED","account":"REDACTED"}'
    )
    assert KEY not in redactor.url(f"wss://user:pw@ws.amberdata.com/?x-api-key={KEY}")
    massive = Redactor("massive")
    assert massive.client_message(b'{"action":"auth","params":"' + KEY.encode() + b'"}') == (
        b'{"action":"auth","params":"REDACTED"}'
    )


def test_a_secret_that_contains_another_is_replaced_whole() -> None:
    """Keys of one family ("demo", "demo-key-2"): replacing the shorter first would leave the rest
    of the longer one on disk. Learned in either order, the longest goes first."""
    family = [KEY[:length] for length in range(4, len(KEY) + 1)]
    for learned in (family, family[::-1]):
        redactor = Redactor("massive")
        for key in learned:
            redactor.client_message(orjson.dumps({"action": "auth", "params": key}))
        assert redactor.message(f"echo {KEY} and {KEY[:6]}.") == "echo REDACTED and REDACTED."


def test_upstream_target_keeps_the_upstream_path_and_adds_the_client_query() -> None:
    assert upstream_target("wss://socket.massive.com/options", "/options") == (
        "wss://socket.massive.com/options"
    )
    assert upstream_target("ws://127.0.0.1:9/", "/?x-api-key=k") == "ws://127.0.0.1:9/?x-api-key=k"


async def test_the_mock_records_its_own_sessions_without_the_key(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    path = tmp_path / "serve.jsonl.gz"
    redactor = Redactor("massive", [r"SPY2503\d+C"])
    settings = MarketSettings(seed=3, activity=4.0)
    writer = RecordingWriter(path, mock_header("massive", 3, settings.start, redactor))
    sent: list[str | bytes] = []
    async with run_mock("massive", market=settings) as mock:
        WireRecorder(writer, redactor).attach(mock.mock_server)
        mock.mock_server.taps.append(lambda conn, action: sent.append(action.data))
        client = MassiveClient(
            KEY, mock.url, connector=mock.connector, backoff=Backoff(rng=random.Random(1))
        )
        async with client:
            await client.subscribe(f"Q.{CALL}")
            with trio.move_on_after(10):
                async for _ in client:
                    pass
        await trio.sleep(1)
        writer.end(mock.market.now())
    raw = gzip.decompress(path.read_bytes())
    assert KEY.encode() not in raw and b"SPY2503" not in raw
    recording = read_recording(path)
    server_said = [r.data for r in recording.records if r.side == "server" and r.is_message]
    assert len(server_said) == len(sent) > 10  # every frame, as sent (redacted)
    assert server_said == [redactor.message(d) for d in sent]
    assert recording.records[0].kind == "open"
    assert recording.records[-1].kind == "close"
    assert verify(recording).ok


# -- the proxy ---------------------------------------------------------------------------------


async def test_the_proxy_relays_unchanged_and_records(tmp_path: Path) -> None:
    """Massive's built-in client through the proxy to the mock, over TCP on the real clock."""
    path = tmp_path / "proxy.jsonl"
    redactor = Redactor("massive")
    async with run_mock("massive", market=MarketSettings(seed=5, activity=60.0)) as mock:
        port = await mock.serve_tcp()
        writer = RecordingWriter(path, HEADER)
        proxy = RecordingProxy("massive", f"ws://127.0.0.1:{port}/options", writer, redactor)
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(proxy.serve, "127.0.0.1", 0)
            client = MassiveClient(KEY, f"ws://127.0.0.1:{bound}/options")
            quotes: list[Quote] = []
            with trio.fail_after(10):
                async with client:
                    await client.subscribe(f"Q.{CALL}")
                    async for event in client:
                        if isinstance(event, Quote):
                            quotes.append(event)
                            if len(quotes) >= 5:
                                break
                await trio.sleep(0.2)
            (conn,) = mock.history
            nursery.cancel_scope.cancel()
        writer.end(proxy.now())
    raw = path.read_bytes()
    assert KEY.encode() not in raw
    recording = read_recording(path)
    opened = recording.records[0]
    assert opened.kind == "open" and opened.path == "/options"
    server = [r for r in recording.records if r.side == "server" and r.is_message]
    assert orjson.loads(server[0].data)[0]["status"] == "connected"
    assert sum(str(r.data).count('"ev":"Q"') for r in server) >= 5
    assert recording.records[-1].kind == "close" and recording.records[-1].side == "client"
    assert conn.info.path == "/options"
    assert verify(recording).ok


async def test_the_proxy_forwards_headers_and_query_and_keeps_them_off_disk(
    tmp_path: Path,
) -> None:
    """Amberdata's key travels in a header and in the query; the mock must see both, the file
    neither. The mock's close passes through to the client with its code."""
    path = tmp_path / "amberdata.jsonl.gz"
    redactor = Redactor("amberdata")
    async with run_mock("amberdata", api_keys=(KEY,)) as mock:
        port = await mock.serve_tcp()
        writer = RecordingWriter(path, HEADER)
        proxy = RecordingProxy("amberdata", f"ws://127.0.0.1:{port}", writer, redactor)
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(proxy.serve, "127.0.0.1", 0)
            client = AmberdataClient(KEY, f"ws://127.0.0.1:{bound}/")
            with trio.fail_after(10):
                async with client:
                    await client.subscribe("market:options:trades:BTC-28MAR25-60000-C")
                    await mock.wait_connections(1)
                    while not mock.history[0].session.subscriptions:  # type: ignore[attr-defined]
                        await trio.sleep(0.01)
                url = f"ws://127.0.0.1:{bound}/?x-api-key={KEY}"
                async with trio_websocket.open_websocket_url(url) as ws:
                    await mock.wait_connections(2)
                    await mock.inject("close", code=4001, reason="bye", connection=2)
                    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                        await ws.get_message()
                    assert closed.value.reason is not None
                    assert closed.value.reason.code == 4001
            assert mock.history[0].info.headers["x-api-key"] == KEY
            assert mock.history[1].info.query["x-api-key"] == KEY
            nursery.cancel_scope.cancel()
        writer.end(proxy.now())
    raw = gzip.decompress(path.read_bytes())
    assert KEY.encode() not in raw
    recording = read_recording(path)
    opens = [r for r in recording.records if r.kind == "open"]
    assert opens[0].headers["x-api-key"] == "REDACTED"
    assert opens[1].query["x-api-key"] == "REDACTED"
    closes = [r for r in recording.records if r.kind == "close" and r.conn == opens[1].conn]
    assert [(c.side, c.code, c.reason) for c in closes] == [("server", 4001, "bye")]


async def test_an_upstream_refusal_reaches_the_client(tmp_path: Path) -> None:
    path = tmp_path / "refused.jsonl"
    async with run_mock("massive") as mock:
        port = await mock.serve_tcp()
        writer = RecordingWriter(path, HEADER)
        proxy = RecordingProxy(
            "massive", f"ws://127.0.0.1:{port}/nowhere", writer, Redactor("massive")
        )
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(proxy.serve, "127.0.0.1", 0)
            with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
                async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{bound}/x"):
                    pass
            assert rejected.value.status_code == 404
            nursery.cancel_scope.cancel()
        writer.end(proxy.now())
    (_opened, refusal) = read_recording(path).records
    assert refusal.kind == "reject" and refusal.status == 404


# -- a crash -----------------------------------------------------------------------------------


async def test_sigkill_leaves_a_readable_file_that_verify_calls_truncated(tmp_path: Path) -> None:
    path = tmp_path / "killed.jsonl.gz"
    async with run_mock("massive", market=MarketSettings(seed=5, activity=60.0)) as mock:
        port = await mock.serve_tcp()
        command = [
            sys.executable,
            "-m",
            "mocks.recording_cli",
            "record",
            "massive",
            "--upstream",
            f"ws://127.0.0.1:{port}/options",
            "--listen",
            "127.0.0.1:0",
            "--out",
            str(path),
        ]
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1]
        )
        try:
            assert process.stdout is not None
            with trio.fail_after(15):
                banner = b""
                while not banner.endswith(b"\n"):
                    banner += await process.stdout.receive_some(1)
            url = banner.decode().strip().rsplit(" ", 1)[-1]
            assert banner.startswith(b"massive recording on ws://127.0.0.1:")
            frames = 0
            with trio.fail_after(10):
                async with trio_websocket.open_websocket_url(url) as ws:
                    await ws.get_message()
                    await ws.send_message(f'{{"action":"auth","params":"{KEY}"}}')
                    await ws.get_message()
                    await ws.send_message(f'{{"action":"subscribe","params":"Q.{CALL}"}}')
                    while frames < 20:
                        if '"ev":"Q"' in await ws.get_message():
                            frames += 1
                    await trio.sleep(0.3)  # past the flush interval
                    os.kill(process.pid, signal.SIGKILL)
                    await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == -signal.SIGKILL
    recording = read_recording(path)
    assert recording.truncated is not None
    quotes = [r for r in recording.records if r.side == "server" and '"ev":"Q"' in str(r.data)]
    assert len(quotes) >= 20
    partial = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(path.read_bytes())
    assert KEY.encode() not in partial and b'\\"params\\":\\"REDACTED' in partial
    report = verify(recording)
    assert not report.ok and report.truncated is not None
    from mocks.recording_cli import main

    assert main(["verify", str(path)]) == 1
