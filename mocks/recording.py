"""Recordings: WebSocket sessions written down as they happen, read back for replay and verify.

The format (`recordings/README.md`, version 1) is JSON Lines, gzip-compressed when the file name
ends in `.gz`. Line 1 is a header (format, version, vendor, source, creation time, redactions,
feedlab version); then one line per thing that happened on a connection — `open` (path, query,
headers), `text`, `binary` (base64), `close` (code, reason), `reject` (an HTTP refusal of the
upgrade) — with seconds since the start, the connection id and who sent it; a clean stop ends
with an `end` line. A recorder that dies (kill -9) leaves every line flushed so far, so the reader
accepts a file with no `end` line or a cut-off last line and says so instead of failing.
"""

from __future__ import annotations

import base64
import gzip
import io
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

import orjson

FORMAT = "feedlab-recording"
VERSION = 1
FEEDLAB_VERSION = "0.1.0"
FLUSH_INTERVAL = 0.1  # seconds: the most a line waits in memory before it reaches the file

Side = Literal["client", "server"]
Kind = Literal["open", "text", "binary", "close", "reject"]
KINDS: tuple[str, ...] = ("open", "text", "binary", "close", "reject")
SIDES: tuple[str, ...] = ("client", "server")


class RecordingError(Exception):
    """A file that is not a readable recording: `<file>: line N: problem`."""

    def __init__(self, path: str | Path, line: int, problem: str) -> None:
        super().__init__(f"{path}: line {line}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Header:
    vendor: str
    source: dict[str, Any]  # {"kind": "mock", "seed": 7, ...} or {"kind": "proxy", "upstream": URL}
    created: str  # ISO 8601, UTC
    redactions: list[str] = field(default_factory=list)
    feedlab: str = FEEDLAB_VERSION
    version: int = VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "vendor": self.vendor,
            "source": self.source,
            "created": self.created,
            "redactions": self.redactions,
            "feedlab": self.feedlab,
        }


@dataclass(frozen=True, slots=True)
class Record:
    """One line after the header. `data` is the payload exactly as on the wire (after redaction):
    `str` for text, `bytes` for binary."""

    line: int
    t: float
    conn: int
    side: Side
    kind: Kind
    data: str | bytes = ""
    path: str = ""
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    code: int | None = None
    reason: str = ""
    status: int | None = None  # reject: the HTTP status

    @property
    def is_message(self) -> bool:
        return self.kind in ("text", "binary")


@dataclass
class Recording:
    path: str
    header: Header
    records: list[Record]
    ended: bool  # the recorder wrote its `end` line (it stopped cleanly)
    cut_off: str | None = None  # what was wrong with the last line, when it was cut off

    @property
    def truncated(self) -> str | None:
        """Why this file looks like the recorder died mid-way; None for a complete file."""
        if self.cut_off is not None:
            return self.cut_off
        if not self.ended:
            return "no end line: the recorder stopped without closing the file (killed?)"
        return None

    @property
    def vendor(self) -> str:
        return self.header.vendor


# -- writing ---------------------------------------------------------------------------------------


def _open_for_writing(path: Path) -> tuple[IO[bytes], gzip.GzipFile | None]:
    raw = path.open("wb")
    if path.name.endswith(".gz"):
        # mtime=0 and no file name: the same session gives the same bytes (synthetic samples).
        # Level 3, not gzip's 9: a recorder must keep up with the feed it records. On a
        # recording of 20,000 Massive events/s, 9 compressed 11 MB/s (a third of a core for
        # the recorder alone), 3 114 MB/s for a third more bytes (`gzip -9` recompresses).
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=3)
        return raw, gz
    return raw, None


class RecordingWriter:
    """Appends lines as things happen. Nothing waits in memory longer than `FLUSH_INTERVAL`:
    a write flushes when the last flush is that old, and `flush_due` (called by a timer task)
    covers quiet moments. A gzip file gets a sync flush each time, so what is on disk decompresses
    up to the last flush even if the process is killed."""

    def __init__(self, path: str | Path, header: Header) -> None:
        self.path = Path(path)
        self.header = header
        self._raw, self._gz = _open_for_writing(self.path)
        self._out: IO[bytes] = cast(IO[bytes], self._gz) if self._gz is not None else self._raw
        self._pending: list[bytes] = []
        self._last_flush = time.monotonic()
        self.closed = False
        self.lines = 0
        self._write(orjson.dumps(header.to_json()))
        self.flush()

    # -- what happened ---------------------------------------------------------------------------

    def open(
        self,
        t: float,
        conn: int,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
    ) -> None:
        self._line(
            {
                "t": _t(t),
                "c": conn,
                "from": "client",
                "kind": "open",
                "path": path,
                "query": dict(query),
                "headers": dict(headers),
            }
        )

    def message(self, t: float, conn: int, side: Side, data: str | bytes) -> None:
        if isinstance(data, str):
            self._line({"t": _t(t), "c": conn, "from": side, "kind": "text", "data": data})
        else:
            encoded = base64.b64encode(data).decode("ascii")
            self._line({"t": _t(t), "c": conn, "from": side, "kind": "binary", "data": encoded})

    def close(self, t: float, conn: int, side: Side, code: int | None, reason: str = "") -> None:
        self._line(
            {"t": _t(t), "c": conn, "from": side, "kind": "close", "code": code, "reason": reason}
        )

    def reject(self, t: float, conn: int, status: int, body: str) -> None:
        self._line(
            {
                "t": _t(t),
                "c": conn,
                "from": "server",
                "kind": "reject",
                "status": status,
                "data": body,
            }
        )

    def end(self, t: float) -> None:
        """The clean stop: the last line of a complete recording. Closes the file."""
        if self.closed:
            return
        self._line({"t": _t(t), "kind": "end"})
        self.close_file()

    # -- mechanics -------------------------------------------------------------------------------

    def _line(self, obj: dict[str, Any]) -> None:
        if self.closed:
            return
        self._write(orjson.dumps(obj))
        if time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
            self.flush()

    def _write(self, line: bytes) -> None:
        self._pending.append(line)
        self._pending.append(b"\n")
        self.lines += 1

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if self.closed or not self._pending:
            return
        self._out.write(b"".join(self._pending))
        self._pending.clear()
        if self._gz is not None:
            self._gz.flush(zlib.Z_SYNC_FLUSH)
        self._raw.flush()

    def flush_due(self) -> None:
        """Flush if anything has waited; for a timer that runs at least every FLUSH_INTERVAL."""
        if self._pending:
            self.flush()

    def close_file(self) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        if self._gz is not None:
            self._gz.close()
        self._raw.close()


def _t(t: float) -> float:
    return round(t, 6)


# -- reading ---------------------------------------------------------------------------------------


def _lines(path: Path) -> tuple[list[bytes], str | None]:
    """The file's lines and, for a gzip stream that stops early, why (the crash case)."""
    data = path.read_bytes()
    problem: str | None = None
    if path.name.endswith(".gz"):
        out = io.BytesIO()
        try:
            decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
            out.write(decompressor.decompress(data))
            if not decompressor.eof:
                problem = "the gzip stream ends early (the recorder was killed?)"
        except zlib.error as exc:
            raise RecordingError(path, 1, f"not a gzip file: {exc}") from None
        data = out.getvalue()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        # No newline after the last line: written partly, then the process died.
        problem = problem or "the last line has no newline (cut off)"
    return lines, problem


def read_recording(path: str | Path) -> Recording:
    """Read a whole recording. Raises `RecordingError` for a file that is not one; a file cut
    off by a crash is read up to its last whole line and `Recording.truncated` says so."""
    path = Path(path)
    try:
        lines, gz_problem = _lines(path)
    except FileNotFoundError:
        raise RecordingError(path, 0, "no such file") from None
    except IsADirectoryError:
        raise RecordingError(path, 0, "is a directory") from None
    except OSError as exc:
        raise RecordingError(path, 0, exc.strerror or str(exc)) from None
    if not lines:
        raise RecordingError(path, 1, "empty file: no header")
    header = _header(path, lines[0], last=len(lines) == 1 and gz_problem is not None)
    records: list[Record] = []
    ended = False
    cut_off: str | None = None
    last = len(lines)
    for number, raw in enumerate(lines[1:], start=2):
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            if number == last:
                cut_off = f"line {number} is cut off (the recorder stopped mid-line)"
                break
            raise RecordingError(path, number, "not JSON") from None
        if not isinstance(obj, dict):
            raise RecordingError(path, number, "not a JSON object")
        if obj.get("kind") == "end":
            ended = True
            if number != last:
                raise RecordingError(path, number + 1, "lines after the end line")
            break
        records.append(_record(path, number, obj))
    if cut_off is None and gz_problem is not None:
        cut_off = gz_problem
    return Recording(str(path), header, records, ended and cut_off is None, cut_off)


def _header(path: Path, raw: bytes, last: bool) -> Header:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        problem = "header cut off" if last else "header is not JSON"
        raise RecordingError(path, 1, problem) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise RecordingError(path, 1, f"not a {FORMAT} file (no format header)")
    version = obj.get("version")
    if version != VERSION:
        raise RecordingError(path, 1, f"format version {version!r}; this feedlab reads {VERSION}")
    vendor = obj.get("vendor")
    if not isinstance(vendor, str) or not vendor:
        raise RecordingError(path, 1, "header without a vendor")
    source = obj.get("source")
    redactions = obj.get("redactions", [])
    return Header(
        vendor=vendor,
        source=source if isinstance(source, dict) else {},
        created=str(obj.get("created", "")),
        redactions=[str(r) for r in redactions] if isinstance(redactions, list) else [],
        feedlab=str(obj.get("feedlab", "")),
        version=VERSION,
    )


def _record(path: Path, number: int, obj: dict[str, Any]) -> Record:
    def bad(problem: str) -> RecordingError:
        return RecordingError(path, number, problem)

    t, conn, side, kind = obj.get("t"), obj.get("c"), obj.get("from"), obj.get("kind")
    if not isinstance(t, int | float) or isinstance(t, bool):
        raise bad(f"time 't' must be a number, not {t!r}")
    if not isinstance(conn, int) or isinstance(conn, bool):
        raise bad(f"connection 'c' must be a whole number, not {conn!r}")
    if side not in SIDES:
        raise bad(f"'from' must be client or server, not {side!r}")
    if kind not in KINDS:
        raise bad(f"unknown kind {kind!r}")
    data = obj.get("data", "")
    if kind == "text":
        if not isinstance(data, str):
            raise bad("text data must be a string")
        return Record(number, float(t), conn, side, "text", data)
    if kind == "binary":
        if not isinstance(data, str):
            raise bad("binary data must be a base64 string")
        try:
            payload = base64.b64decode(data, validate=True)
        except ValueError:
            raise bad("binary data is not valid base64") from None
        return Record(number, float(t), conn, side, "binary", payload)
    if kind == "open":
        query, headers = obj.get("query", {}), obj.get("headers", {})
        if not isinstance(query, dict) or not isinstance(headers, dict):
            raise bad("open: query and headers must be objects")
        return Record(
            number,
            float(t),
            conn,
            side,
            "open",
            path=str(obj.get("path", "")),
            query={str(k): str(v) for k, v in query.items()},
            headers={str(k): str(v) for k, v in headers.items()},
        )
    if kind == "close":
        code = obj.get("code")
        if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
            raise bad(f"close code must be a whole number or null, not {code!r}")
        return Record(
            number, float(t), conn, side, "close", code=code, reason=str(obj.get("reason", ""))
        )
    status = obj.get("status")
    if not isinstance(status, int) or isinstance(status, bool):
        raise bad(f"reject status must be a whole number, not {status!r}")
    return Record(number, float(t), conn, side, "reject", str(data), status=status)


def messages(recording: Recording, side: Side) -> Iterator[Record]:
    """The text and binary messages one side sent, in order."""
    for record in recording.records:
        if record.side == side and record.is_message:
            yield record
