"""`mocks.background`: a mock on its own thread for code that is not Trio — synchronous clients
here (`websockets.sync`), every wait bounded. What the fixtures add is in test_plugin.py."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

import mocks
from mocks.background import BackgroundMock, MockFailed
from mocks.faults import fault
from mocks.server import Connection
from mocks.testing import MockService

CALL = "O:SPY250321C00560000"
SPXW_QUOTE = {
    "msg_type": "STREAM",
    "sec_type": "OPTION",
    "req_type": "QUOTE",
    "add": True,
    "contract": {"root": "SPXW", "expiration": 20250321, "strike": 5600000, "right": "C"},
}
WAIT = 5.0


def feedlab_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("feedlab-")]


@contextmanager
def massive_session(mock: BackgroundMock, key: str | None = None) -> Iterator[ClientConnection]:
    """A Massive connection that has sent its auth (the reply is the test's to read)."""
    with connect(mock.url, open_timeout=WAIT) as ws:
        assert json.loads(ws.recv(WAIT))[0]["status"] == "connected"
        ws.send(json.dumps({"action": "auth", "params": key or mock.api_key}))
        yield ws


def recv_until_closed(ws: ClientConnection) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as closed:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            ws.recv(WAIT)
    return closed.value


def wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_serves_on_a_free_local_port_and_closes_port_and_thread_on_exit() -> None:
    with mocks.background("massive") as mock:
        assert mock.host == "127.0.0.1" and mock.port > 0
        assert mock.url == f"ws://127.0.0.1:{mock.port}/options"
        assert [t.name for t in feedlab_threads()] == ["feedlab-massive-mock"]
        with massive_session(mock) as ws:
            assert json.loads(ws.recv(WAIT))[0]["status"] == "auth_success"
            ws.send(json.dumps({"action": "subscribe", "params": f"Q.{CALL},T.{CALL}"}))
            ws.recv(WAIT)
            wait_for(lambda: mock.connections[0].subscriptions, "the subscription")
            [conn] = mock.connections
            assert conn.open and conn.number == 1 and conn.path == "/options"
            assert conn.subscriptions == (f"Q.{CALL}", f"T.{CALL}")
            # left open on purpose: exiting the block must close it
        port = mock.port
    assert feedlab_threads() == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()


def test_api_key_is_one_the_mock_accepts_and_others_are_refused() -> None:
    with mocks.background("massive", api_keys=("secret",)) as mock:
        assert mock.api_key == "secret"
        with massive_session(mock, key="not-the-key") as ws:
            assert json.loads(ws.recv(WAIT))[0]["status"] == "auth_failed"
        with massive_session(mock) as ws:
            assert json.loads(ws.recv(WAIT))[0]["status"] == "auth_success"


def test_inject_applies_at_once_and_the_snapshots_keep_what_a_closed_connection_had() -> None:
    with mocks.background("massive", seed=3) as mock, massive_session(mock) as ws:
        ws.recv(WAIT)
        ws.send(json.dumps({"action": "subscribe", "params": f"Q.{CALL}"}))
        wait_for(lambda: mock.published[1].counts["sent"] > 0, "a quote")
        applied = mock.inject("close", code=4001, reason="maintenance")
        assert applied.fault.kind == "close" and applied.connections == (1,)
        closed = recv_until_closed(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 4001
        wait_for(lambda: not mock.connections[0].open, "the close")
        [conn] = mock.connections
        assert conn.close_code == 4001 and conn.subscriptions == (f"Q.{CALL}",)
        record = mock.published[1]
        assert record.close_code == 4001
        assert record.counts["sent"] == len(record.events["sent"]) > 0
        assert [a.fault.kind for a in mock.applied] == ["close"]


def test_faults_given_at_start_play_on_the_mock_clock() -> None:
    with (
        mocks.background("massive", faults=[fault("auth_failure", at="0s")]) as mock,
        massive_session(mock) as ws,
    ):
        wait_for(lambda: mock.applied, "the fault")
        assert json.loads(ws.recv(WAIT))[0]["status"] == "auth_failed"


def test_theta_streams_belong_to_the_terminal_and_stay_with_the_connection_it_served() -> None:
    with mocks.background("theta") as mock:
        with connect(mock.url, open_timeout=WAIT) as first:
            first.send(json.dumps({**SPXW_QUOTE, "id": 0}))
            assert json.loads(first.recv(WAIT))["header"]["response"] == "SUBSCRIBED"
            second = connect(mock.url, open_timeout=WAIT)  # the terminal serves the newest client
            recv_until_closed(first)
        with second:
            wait_for(lambda: not mock.connections[0].open, "the eviction")
            old, new = mock.connections
            assert old.subscriptions == new.subscriptions == ("option:quote:SPXW:20250321:5600:C",)


def test_call_runs_in_the_mock_thread() -> None:
    def where(service: MockService) -> tuple[str, str]:
        return threading.current_thread().name, service.vendor

    with mocks.background("amberdata") as mock:
        assert mock.call(where) == ("feedlab-amberdata-mock", "amberdata")


class Exploding:
    """A wire observer with a bug: it raises on every client message (after the first)."""

    def opened(self, conn: Connection, now: float) -> None:
        pass

    def received(self, conn: Connection, message: str | bytes, now: float) -> None:
        if conn.conn_id == 1:
            raise RuntimeError("exploded on purpose")

    def sent(self, conn: Connection, message: str | bytes, now: float) -> None:
        pass

    def closed(self, conn: Connection, now: float) -> None:
        pass


def test_a_bug_in_the_mock_is_raised_in_the_callers_thread() -> None:
    with pytest.raises(MockFailed) as failed, mocks.background("massive") as mock:
        mock.call(lambda service: service.mock_server.observers.append(Exploding()))
        with massive_session(mock):
            wait_for(lambda: mock.problem is not None, "the bug")
        assert mock.connections[0].client_close_code is None  # the mock ended it, not the client
        with massive_session(mock) as ws:  # the mock serves on: only that connection ended
            assert json.loads(ws.recv(WAIT))[0]["status"] == "auth_success"
        with pytest.raises(MockFailed):
            mock.check()
    assert "exploded on purpose" in repr(failed.value.__cause__)
    assert feedlab_threads() == []


def test_an_error_in_the_block_is_raised_with_a_note_about_the_failed_mock() -> None:
    with pytest.raises(KeyError) as error, mocks.background("massive") as mock:
        mock.call(lambda service: service.mock_server.observers.append(Exploding()))
        with massive_session(mock):
            wait_for(lambda: mock.problem is not None, "the bug")
        raise KeyError("the test's own error")
    assert any("massive mock had failed too" in note for note in error.value.__notes__)


def test_unknown_vendor() -> None:
    with pytest.raises(ValueError, match="unknown vendor 'polygon'"), mocks.background("polygon"):
        pass
