"""Recording sessions: the mock's own (`serve --record`, a `WireObserver`) and any server's through
a proxy (`feedlab record VENDOR --upstream URL`), both into the format of `mocks.recording`.

Secrets never reach the disk. `Redactor` replaces, before anything is written: Massive's `auth`
params, Amberdata's `x-api-key` header and query parameter (and any header or query parameter
whose name says key, token, secret or password), every `--redact REGEX` match, and — once a secret
has been seen (or, for `serve --record`, given with `--api-key`) — that same string wherever else
it turns up (a server echoing the key back).
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import ssl
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import trio
import trio_websocket

from mocks.recording import FLUSH_INTERVAL, Header, RecordingWriter, Side
from mocks.server import Connection, MockServer

REDACTED = "REDACTED"
# Header and query parameter names that carry credentials at any vendor (compared lower-cased).
SECRET_NAME = re.compile(r"(^|[-_])(api[-_]?key|apikey|key|token|secret|password|authorization)$")
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})
# Handshake headers the proxy must not copy onto its own upstream handshake.
HOP_BY_HOP = frozenset(
    {
        "host",
        "connection",
        "upgrade",
        "content-length",
        "transfer-encoding",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)


class Redactor:
    """What must not be written, for one vendor, plus the user's own patterns."""

    def __init__(
        self, vendor: str, patterns: Sequence[str] = (), known_secrets: Sequence[str] = ()
    ) -> None:
        self.vendor = vendor
        self.patterns = [re.compile(p) for p in patterns]
        self.secrets: set[str] = set()
        # Longest first: were "demo" replaced before "demo-key-2", "-key-2" would reach the disk.
        self._longest_first: list[str] = []
        # The keys a mock was given: redacted even where a client puts one we do not look for.
        for secret in known_secrets:
            self._learn(secret)

    def describe(self) -> list[str]:
        """For the header: which redactions were applied to this file."""
        out = ["header and query values named like a key, token, secret or password"]
        if self.vendor == "massive":
            out.append("massive: params of every auth action")
        if self.vendor == "amberdata":
            out.append("amberdata: x-api-key header and query parameter")
        out.append("every secret seen, wherever it appears again")
        if self.patterns:  # not the patterns themselves: a pattern may spell out a secret
            out.append(f"--redact: {len(self.patterns)} pattern(s) of the user's")
        return out

    def _learn(self, secret: str) -> None:
        # A 1-3 character "key" would blank out half the file.
        if len(secret) >= 4 and secret not in self.secrets:
            self.secrets.add(secret)
            self._longest_first = sorted(self.secrets, key=len, reverse=True)

    def text(self, text: str) -> str:
        for secret in self._longest_first:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern in self.patterns:
            text = pattern.sub(REDACTED, text)
        return text

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in headers.items():
            lower = name.lower()
            if lower in SECRET_HEADERS or SECRET_NAME.search(lower):
                self._learn(value)
                out[lower] = REDACTED
            else:
                out[lower] = value
        return {k: self.text(v) for k, v in out.items()}

    def query(self, query: Mapping[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in query.items():
            if SECRET_NAME.search(name.lower()):
                self._learn(value)
                out[name] = REDACTED
            else:
                out[name] = value
        return {k: self.text(v) for k, v in out.items()}

    def client_message(self, data: str | bytes) -> str | bytes:
        """A client's message: Massive's `{"action":"auth","params":KEY}` loses its key."""
        if self.vendor == "massive":
            try:
                obj = orjson.loads(data)
            except orjson.JSONDecodeError:
                obj = None
            if isinstance(obj, dict) and obj.get("action") == "auth":
                params = obj.get("params")
                if isinstance(params, str):
                    self._learn(params)
                obj["params"] = REDACTED
                redacted = orjson.dumps(obj)
                data = redacted.decode() if isinstance(data, str) else redacted
        return self.message(data)

    def message(self, data: str | bytes) -> str | bytes:
        if isinstance(data, str):
            return self.text(data) if self.secrets or self.patterns else data
        if not (self.secrets or self.patterns):
            return data
        try:
            return self.text(data.decode()).encode()
        except UnicodeDecodeError:
            return data

    def url(self, url: str) -> str:
        """A URL fit for the header: no user info, secret query parameters replaced."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        query = urlencode(self.query(dict(parse_qsl(parts.query))), safe=":/")
        return self.text(urlunsplit((parts.scheme, host, parts.path, query, parts.fragment)))


def utc_now_iso() -> str:
    """The wall clock: only for a header's `created` (the recording itself is in its own time)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- the mock's own sessions -----------------------------------------------------------------------


class WireRecorder:
    """A `mocks.server.WireObserver`: every connection of a `MockServer`, in market time."""

    def __init__(self, writer: RecordingWriter, redactor: Redactor) -> None:
        self.writer = writer
        self.redactor = redactor

    def attach(self, server: MockServer) -> None:
        server.observers.append(self)

    def opened(self, conn: Connection, now: float) -> None:
        info = conn.info
        self.writer.open(
            now,
            conn.conn_id,
            info.path,
            self.redactor.query(info.query),
            self.redactor.headers(info.headers),
        )

    def received(self, conn: Connection, message: str | bytes, now: float) -> None:
        self.writer.message(now, conn.conn_id, "client", self.redactor.client_message(message))

    def sent(self, conn: Connection, message: str | bytes, now: float) -> None:
        self.writer.message(now, conn.conn_id, "server", self.redactor.message(message))

    def closed(self, conn: Connection, now: float) -> None:
        if conn.close_code is not None:
            self.writer.close(now, conn.conn_id, "server", conn.close_code)
        else:
            code = conn.client_close_code if conn.client_close_code is not None else 1006
            self.writer.close(now, conn.conn_id, "client", code)


async def flush_periodically(writer: RecordingWriter) -> None:
    """Keep the promise that no line waits in memory longer than FLUSH_INTERVAL (run in a
    nursery for as long as the writer is open)."""
    while not writer.closed:
        await trio.sleep(FLUSH_INTERVAL / 2)
        writer.flush_due()


def mock_header(vendor: str, seed: int, start: dt.datetime, redactor: Redactor) -> Header:
    """A recording made by the mock: the source is the mock and its seed; `created` is the
    market's start, so a synthetic recording is the same bytes every time it is made."""
    created = start.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return Header(
        vendor=vendor,
        source={"kind": "mock", "seed": seed, "market_start": created},
        created=created,
        redactions=redactor.describe(),
    )


# -- the recording proxy ---------------------------------------------------------------------------


def upstream_target(upstream: str, client_path: str) -> str:
    """Where a client's connection goes: the upstream's own path when it names one, else the
    path the client asked for; the client's query parameters are added to the upstream's."""
    up = urlsplit(upstream)
    client = urlsplit(client_path)
    path = up.path if up.path not in ("", "/") else (client.path or "/")
    query = "&".join(q for q in (up.query, client.query) if q)
    return urlunsplit((up.scheme, up.netloc, path, query, ""))


class RecordingProxy:
    """Clients connect here as if to the vendor; every connection is relayed to `upstream`
    unchanged (headers included) and recorded. Pings are answered on each leg by trio-websocket
    itself and are not relayed or recorded."""

    def __init__(
        self,
        vendor: str,
        upstream: str,
        writer: RecordingWriter,
        redactor: Redactor,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.vendor = vendor
        self.upstream = upstream
        self.writer = writer
        self.redactor = redactor
        self.ssl_context = ssl_context
        self._ids = itertools.count(1)
        self._start: float | None = None
        self.connections = 0

    def now(self) -> float:
        if self._start is None:
            self._start = trio.current_time()
        return trio.current_time() - self._start

    async def serve(
        self,
        host: str,
        port: int,
        *,
        listen_ssl: ssl.SSLContext | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen until cancelled (`wss://` with `listen_ssl`); `task_status.started` gets the
        bound port."""
        self.now()
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, self._handle, host, port, listen_ssl
            )
            task_status.started(server.port)

    async def _handle(self, request: trio_websocket.WebSocketRequest) -> None:
        conn = next(self._ids)
        self.connections += 1
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers}
        target = urlsplit(request.path)
        forward = [
            (k, v) for k, v in request.headers if k.decode("latin-1").lower() not in HOP_BY_HOP
        ]
        url = upstream_target(self.upstream, request.path)
        ssl_context = self.ssl_context
        if url.startswith("wss://") and ssl_context is None:
            ssl_context = ssl.create_default_context()
        self.writer.open(
            self.now(),
            conn,
            target.path,
            self.redactor.query(dict(parse_qsl(target.query))),
            self.redactor.headers(headers),
        )
        try:
            async with trio_websocket.open_websocket_url(
                url,
                ssl_context,
                subprotocols=list(request.proposed_subprotocols) or None,
                extra_headers=forward,
            ) as upstream:
                client = await request.accept(subprotocol=upstream.subprotocol)
                ending: list[bool] = []
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, conn, client, upstream, "client", ending)
                    nursery.start_soon(self._pump, conn, upstream, client, "server", ending)
        except trio_websocket.ConnectionRejected as rejected:
            body = rejected.body or b""
            self.writer.reject(
                self.now(), conn, rejected.status_code, self.redactor.text(body.decode("latin-1"))
            )
            await request.reject(rejected.status_code, body=body)
        except (trio_websocket.HandshakeError, OSError) as exc:
            text = f"upstream unreachable: {exc}"
            self.writer.reject(self.now(), conn, 502, self.redactor.text(text))
            await request.reject(502, body=text.encode())

    async def _pump(
        self,
        conn: int,
        source: trio_websocket.WebSocketConnection,
        sink: trio_websocket.WebSocketConnection,
        side: Side,
        ending: list[bool],
    ) -> None:
        """Relay one direction until it closes; the first side to close is recorded, and the
        other side is closed the same way."""
        redact = self.redactor.client_message if side == "client" else self.redactor.message
        try:
            while True:
                message = await source.get_message()
                self.writer.message(self.now(), conn, side, redact(message))
                await sink.send_message(message)
        except trio_websocket.ConnectionClosed as closed:
            if ending:
                return  # the other direction saw the close first and is passing it on
            ending.append(True)
            reason = closed.reason
            code = reason.code if reason is not None else 1006
            text = (reason.reason or "") if reason is not None else ""
            # `closed` is raised on whichever leg was used; the side that closed is the one
            # whose connection reports a close it did not start.
            who: Side = (
                side if source.closed is not None else ("server" if side == "client" else "client")
            )
            self.writer.close(self.now(), conn, who, code, self.redactor.text(text))
            await _close_like(sink if who == side else source, code, text)


async def _close_like(ws: trio_websocket.WebSocketConnection, code: int, reason: str) -> None:
    """Pass a close on. The reserved codes 1005/1006/1015 cannot go in a close frame: the other
    side then gets a plain 1000."""
    if code in (1005, 1006, 1015) or not 1000 <= code < 5000:
        code, reason = 1000, ""
    with trio.move_on_after(2.0):
        await ws.aclose(code, reason or None)
