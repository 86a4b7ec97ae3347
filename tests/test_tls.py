"""`--tls`: the mocks serve wss:// with a throwaway CA (or the user's certificate) so clients that
insist on TLS can be tested: clients trusting the printed CA get data, others fail the
handshake, and the server keeps serving."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket
import trustme
from massive import WebSocketClient
from massive.websocket.models import EquityTrade
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from mocks import tls
from mocks.serve import serve_forever
from mocks.sim.market import MarketSettings

ROOT = Path(__file__).resolve().parents[1]
FEEDLAB = [sys.executable, "-m", "mocks.cli"]
SAMPLE = ROOT / "recordings" / "massive-synthetic-seed7.jsonl.gz"
TIMEOUT = 20.0


class Served:
    """A `feedlab` command serving in a subprocess: its stdout lines, then SIGTERM."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        # A thread reads: select() on a pipe misses lines already in the file's buffer.
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.strip())

    def wait_for(self, count: int) -> list[str]:
        """The first `count` lines (the CA, then one line per URL)."""
        deadline = time.monotonic() + TIMEOUT
        while len(self.lines) < count:
            try:
                self.lines.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"only {self.lines} from {self.proc.args!r}") from None
        return self.lines

    def url(self, vendor: str) -> str:
        (line,) = [x for x in self.lines if x.startswith(f"{vendor} listening on ")]
        return line.split()[-1]

    @property
    def ca(self) -> Path:
        (line,) = [x for x in self.lines if x.startswith("TLS: trust the CA in ")]
        return Path(line.removeprefix("TLS: trust the CA in "))


@contextmanager
def feedlab(*argv: str) -> Iterator[Served]:
    proc = subprocess.Popen(
        [*FEEDLAB, *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    served = Served(proc)
    try:
        yield served
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        err = proc.stderr.read() if proc.stderr else ""
        assert code == 0, err
    # Refused handshakes end those connections only: nothing logged as a failure of the mock.
    assert "Traceback" not in err and "failed" not in err, err


def trusting(ca: Path | str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def first_events(
    url: str, context: ssl.SSLContext, subscription: str = "T.*"
) -> list[dict[str, Any]]:
    """Massive over wss:// with a plain `websockets` client: auth, subscribe, the first data."""
    with connect(url, ssl=context, open_timeout=TIMEOUT) as ws:
        assert "connected" in str(ws.recv(timeout=TIMEOUT))
        ws.send(json.dumps({"action": "auth", "params": "k"}))
        assert "auth_success" in str(ws.recv(timeout=TIMEOUT))
        ws.send(json.dumps({"action": "subscribe", "params": subscription}))
        while True:
            frame = json.loads(ws.recv(timeout=TIMEOUT))
            events = [m for m in frame if m["ev"] != "status"]
            if events:
                return events


def official_trades(port: int, ca: Path) -> list[Any]:
    """The official `massive` client, unchanged, told to trust our CA (`ca_certs`)."""
    seen: list[Any] = []

    class Enough(Exception):
        pass

    async def main() -> None:
        client = WebSocketClient(
            api_key="k",
            feed=f"127.0.0.1:{port}",
            market="options",
            secure=True,
            ca_certs=str(ca),
            subscriptions=["T.*"],
        )

        async def handler(messages: list[Any]) -> None:
            seen.extend(messages)
            if any(isinstance(m, EquityTrade) for m in seen):
                raise Enough

        await asyncio.wait_for(client.connect(handler), TIMEOUT)

    try:
        asyncio.run(main())
    except Enough:
        pass
    return seen


def test_serve_tls_prints_the_ca_and_clients_that_trust_it_get_data(tmp_path: Path) -> None:
    with feedlab("serve", "all", "--tls", "--port", "0", "--rate", "300") as served:
        lines = served.wait_for(4)
        assert lines[0].startswith("TLS: trust the CA in ") and served.ca.is_file()
        assert served.ca.name == "feedlab-ca.pem"
        for vendor, path in (("massive", "/options"), ("theta", "/v1/events"), ("amberdata", "/")):
            url = served.url(vendor)
            assert url.startswith("wss://127.0.0.1:") and url.endswith(path)
            with connect(url, ssl=trusting(served.ca), open_timeout=TIMEOUT) as ws:
                assert ws.response is not None and ws.response.status_code == 101
        trades = first_events(served.url("massive"), trusting(served.ca))
        assert trades[0]["ev"] == "T" and trades[0]["sym"].startswith("O:")
        port = int(served.url("massive").rsplit(":", 1)[1].split("/")[0])
        assert any(isinstance(m, EquityTrade) for m in official_trades(port, served.ca))
        ca = served.ca
    assert not ca.exists()  # a temporary CA goes with the server that used it


def test_a_client_that_does_not_trust_the_ca_fails_the_handshake_and_others_go_on(
    tmp_path: Path,
) -> None:
    ca_out = tmp_path / "ca.pem"
    with feedlab("serve", "massive", "--tls", "--port", "0", "--tls-ca-out", str(ca_out)) as served:
        served.wait_for(2)
        assert served.ca == ca_out.resolve()
        url = served.url("massive")
        for _ in range(3):
            with pytest.raises(ssl.SSLCertVerificationError):
                connect(url, open_timeout=TIMEOUT)  # the system's CAs only
        other_ca = trustme.CA()
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(url, ssl=other_ca_context(other_ca), open_timeout=TIMEOUT)
        with pytest.raises((WebSocketException, OSError)):  # plain ws:// to a TLS port: no
            connect(url.replace("wss://", "ws://"), open_timeout=5)
        # by name too: the certificate is for localhost as well as 127.0.0.1
        with connect(url.replace("127.0.0.1", "localhost"), ssl=trusting(ca_out)) as ws:
            assert "connected" in str(ws.recv(timeout=TIMEOUT))
    assert ca_out.is_file()  # one the user asked for stays


def other_ca_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_replay_and_serve_record_take_tls_too(tmp_path: Path) -> None:
    with feedlab("replay", str(SAMPLE), "--port", "0", "--tls") as served:
        served.wait_for(2)
        url = served.url("massive")
        assert url.startswith("wss://127.0.0.1:")
        (quote, *_) = first_events(url, trusting(served.ca), "Q.O:SPY250321C00575000")
        assert quote["ev"] == "Q" and quote["sym"] == "O:SPY250321C00575000"
    out = tmp_path / "rec.jsonl"
    with feedlab(
        "serve", "massive", "--record", str(out), "--port", "0", "--tls", "--rate", "300"
    ) as served:
        served.wait_for(2)
        assert first_events(served.url("massive"), trusting(served.ca))
    assert '\\"ev\\":\\"T\\"' in out.read_text()  # trades recorded, as JSON in JSON


def test_the_recording_proxy_listens_on_wss_too(tmp_path: Path) -> None:
    """A client that insists on TLS can be recorded: it talks wss:// to the proxy, which
    relays to the upstream as given (here a plain local mock)."""
    out = tmp_path / "proxied.jsonl"
    with feedlab("serve", "massive", "--port", "0", "--rate", "300") as upstream:
        upstream.wait_for(1)
        with feedlab(
            "record", "massive", "--upstream", upstream.url("massive"),
            "--listen", "127.0.0.1:0", "--out", str(out), "--tls",
        ) as proxy:  # fmt: skip
            lines = proxy.wait_for(2)
            (served,) = [x.split()[-1] for x in lines if x.startswith("massive recording on ")]
            assert served.startswith("wss://127.0.0.1:") and served.endswith("/options")
            with pytest.raises(ssl.SSLCertVerificationError):
                connect(served, open_timeout=TIMEOUT)  # the system's CAs only
            assert first_events(served, trusting(proxy.ca))
    assert '\\"ev\\":\\"T\\"' in out.read_text()  # the trades went through and were recorded


async def test_a_given_certificate_and_key_are_served(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    given = tls.load(cert, key)
    assert given.ca_path is None and "--tls-cert" in given.notice()
    settings = MarketSettings(seed=1)
    async with trio.open_nursery() as nursery:
        (url,) = await nursery.start(
            serve_forever, ["massive"], "127.0.0.1", 0, settings, (), False, given.context
        )
        assert url.startswith("wss://")
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
        with trio.fail_after(TIMEOUT):
            async with trio_websocket.open_websocket_url(url, client_context) as ws:
                assert "connected" in str(await ws.get_message())
        nursery.cancel_scope.cancel()


def test_the_generated_certificate_names_loopback_and_the_address_served() -> None:
    assert tls.identities("127.0.0.1") == ["localhost", "127.0.0.1", "::1"]
    assert tls.identities("192.0.2.7")[-1] == "192.0.2.7"
    assert len(tls.identities("0.0.0.0")) == 4  # and this machine's name


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"cert": "not pem"}, "no PEM certificate"),
        ({"key": "not pem"}, "no PEM private key"),
        ({"key": "other"}, "not a certificate and its private key"),
        ({"key": "encrypted"}, "the key is encrypted"),
        ({"cert": None}, "cannot read it"),
    ],
)
def test_a_bad_certificate_or_key_is_named(
    tmp_path: Path, files: dict[str, str | None], problem: str
) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    for name, content in files.items():
        path = cert if name == "cert" else key
        if content is None:
            path.unlink()
        elif content == "other":
            ca.issue_cert("x").private_key_pem.write_to_path(str(path))
        elif content == "encrypted":
            path.write_bytes(_encrypted(leaf.private_key_pem.bytes()))
        else:
            path.write_text(content)
    with pytest.raises(tls.TlsError) as raised:
        tls.load(cert, key)
    message = str(raised.value)
    assert problem in message and "\n" not in message
    assert str(cert if "cert" in files else key) in message


def _encrypted(pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pem, None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


async def test_reset_sets_linger_zero_on_the_socket_beneath_tls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The `reset` fault sets SO_LINGER 0 (closing then sends RST) on the TCP socket beneath the
    TLS stream; SSLStream itself has no `.socket`."""
    import socket as socket_module
    import struct

    from mocks.transport import Link

    a, b = trio.socket.socketpair()
    raw = trio.SocketStream(a)
    seen: list[bytes] = []
    real_setsockopt = a.setsockopt

    def spy(level: int, option: int, value: Any) -> None:
        if option == socket_module.SO_LINGER:
            seen.append(value)
        real_setsockopt(level, option, value)

    monkeypatch.setattr(a, "setsockopt", spy)
    link = Link(trio.SSLStream(raw, ssl.create_default_context(), server_side=False))
    await link.reset()
    assert seen == [struct.pack("ii", 1, 0)]
    b.close()


def test_background_mock_with_tls_serves_wss_to_clients_trusting_its_ca() -> None:
    from mocks.background import background

    with background("amberdata", tls=True) as mock:
        assert mock.url.startswith("wss://127.0.0.1:") and mock.ca_path is not None
        ca_path = mock.ca_path
        headers = {"x-api-key": mock.api_key}
        with connect(mock.url, additional_headers=headers, ssl=mock.client_ssl_context()) as ws:
            ws.send(
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "subscribe",
                        "params": [
                            "market:options:trades",
                            {"instrument": "BTC-28MAR25-60000-C", "exchange": "deribit"},
                        ],
                    }
                )
            )
            reply = json.loads(ws.recv(TIMEOUT))
            assert isinstance(reply["result"], str)
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(mock.url, additional_headers=headers, ssl=ssl.create_default_context())
    assert not ca_path.exists()  # the throwaway CA goes with the mock


def test_serve_scenario_takes_tls_too() -> None:
    storm = ROOT / "scenarios" / "library" / "massive-disconnect-storm.toml"
    with feedlab("serve", "massive", "--tls", "--port", "0", "--scenario", str(storm)) as served:
        lines = served.wait_for(2)
        assert lines[0].startswith("TLS: trust the CA in ")
        url = lines[1].split(" listening on ")[1].split()[0]
        assert url.startswith("wss://127.0.0.1:")
        with connect(url, ssl=trusting(served.ca), open_timeout=TIMEOUT) as ws:
            assert json.loads(ws.recv(TIMEOUT))[0]["status"] == "connected"
