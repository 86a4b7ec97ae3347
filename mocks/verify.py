"""`feedlab verify FILE`: the drift detector. Checks every recorded frame against the vendor's
strict wire schema (the mock's own msgspec Structs, read strictly: unknown fields, missing fields
and changed types are all reported, not just the first) and the vendor's protocol rules
(per-contract sequences, timestamps, control flow, known status messages). Each difference is
reported with its line number; a recording of the live service that verifies clean says the mock
still speaks the vendor's language, and one that does not says where the vendor moved.

The per-vendor rules live in `mocks/<vendor>/verify.py`.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, Union, get_args, get_origin

import msgspec
from msgspec import UnsetType

from mocks.recording import Record, Recording, read_recording
from mocks.vendors import VENDORS

PLAUSIBLE_UNIX_MS = (946_684_800_000, 4_102_444_800_000)  # 2000-01-01 .. 2100-01-01


@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    conn: int | None
    text: str

    def render(self, path: str) -> str:
        where = f"{path}:{self.line}:" + (f" conn {self.conn}:" if self.conn is not None else "")
        return f"{where} {self.text}"


@dataclass
class Report:
    path: str
    vendor: str
    frames: int = 0
    problems: list[Problem] = field(default_factory=list)
    truncated: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.truncated is None

    def lines(self) -> list[str]:
        out = [p.render(self.path) for p in self.problems]
        if self.truncated is not None:
            out.append(f"{self.path}: truncated: {self.truncated}")
        verdict = "ok" if self.ok else "DIFFERENCES"
        out.append(
            f"{self.path}: {self.vendor}: {self.frames} frames checked, "
            f"{len(self.problems)} problems{', truncated' if self.truncated else ''}: {verdict}"
        )
        return out


class Checker(Protocol):
    """A vendor's rules. It sees the recording in order and returns problems as it finds them."""

    def opened(self, record: Record) -> list[Problem]: ...

    def client(self, record: Record) -> list[Problem]: ...

    def server(self, record: Record) -> list[Problem]: ...

    def closed(self, record: Record) -> list[Problem]: ...


def vendor_checker(vendor: str) -> Checker:
    module = importlib.import_module(f"mocks.{vendor}.verify")
    checker: Checker = module.Checker()
    return checker


def verify(recording: Recording | str | Path) -> Report:
    if not isinstance(recording, Recording):
        recording = read_recording(recording)
    report = Report(recording.path, recording.vendor, truncated=recording.truncated)
    if recording.vendor not in VENDORS:
        report.problems.append(Problem(1, None, f"unknown vendor {recording.vendor!r}"))
        return report
    checker = vendor_checker(recording.vendor)
    opened: set[int] = set()
    closed: set[int] = set()
    for record in recording.records:
        problems: list[Problem] = []
        if record.kind == "open":
            if record.conn in opened:
                problems.append(Problem(record.line, record.conn, "connection opened twice"))
            opened.add(record.conn)
            problems += checker.opened(record)
        elif record.kind == "reject":
            continue
        elif record.conn not in opened:
            problems.append(
                Problem(record.line, record.conn, f"{record.kind} on a connection never opened")
            )
        elif record.conn in closed:
            if record.kind != "close":
                problems.append(
                    Problem(record.line, record.conn, f"{record.kind} after the connection closed")
                )
        elif record.kind == "close":
            closed.add(record.conn)
            problems += checker.closed(record)
        elif record.side == "client":
            problems += checker.client(record)
        else:
            report.frames += 1
            problems += checker.server(record)
        report.problems += problems
    return report


# -- strict schema comparison ----------------------------------------------------------------------

_JSON = msgspec.json.Decoder()


def decode_json(data: str | bytes) -> tuple[Any, str | None]:
    """(value, None) or (None, why it is not JSON)."""
    try:
        return _JSON.decode(data), None
    except msgspec.DecodeError as exc:
        return None, f"not JSON: {exc}"


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _expected(t: Any) -> str:
    origin = get_origin(t)
    if t is int:
        return "integer"
    if t is float:
        return "number"
    if t is str:
        return "string"
    if t is bool:
        return "boolean"
    if t is None or t is type(None):
        return "null"
    if t is list or t is tuple or origin in (list, tuple):
        return "array"
    if t is dict or origin is dict or _is_struct(t):
        return "object"
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(_expected(u) for u in get_args(t) if u is not UnsetType))
    if origin is Literal:
        return " or ".join(repr(v) for v in get_args(t))
    return "any"


def _is_struct(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, msgspec.Struct)


def _type_differences(value: Any, t: Any, where: str) -> list[str]:
    """How a JSON value differs from a field's Python type (as msgspec reads it, strictly)."""
    if t is Any:
        return []
    if _is_struct(t):
        return struct_differences(value, t, where)
    origin = get_origin(t)
    if origin in (Union, types.UnionType):
        best: list[str] | None = None
        for option in get_args(t):
            if option is UnsetType:
                continue
            found = _type_differences(value, option, where)
            if not found:
                return []
            closer = best is None or len(found) < len(best)
            if _is_struct(option) and isinstance(value, dict) and closer:
                best = found
        if best is not None:
            return best
        return [_mismatch(t, value, where)]
    ok: bool
    if t is bool:
        ok = isinstance(value, bool)
    elif t is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif t is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif t is str:
        ok = isinstance(value, str)
    elif t is None or t is type(None):
        ok = value is None
    elif origin is Literal:
        ok = value in get_args(t)
    elif origin is list or t is list:
        if not isinstance(value, list):
            ok = False
        else:
            (item_type,) = get_args(t) or (Any,)
            out: list[str] = []
            for i, item in enumerate(value):
                out += _type_differences(item, item_type, f"{where}[{i}]")
            return out
    elif origin is tuple:
        item_types = get_args(t)
        if len(item_types) == 2 and item_types[1] is Ellipsis:
            item_types = (item_types[0],) * (len(value) if isinstance(value, list) else 0)
        if not isinstance(value, list) or len(value) != len(item_types):
            ok = False
        else:
            out = []
            for i, (item, item_type) in enumerate(zip(value, item_types, strict=True)):
                out += _type_differences(item, item_type, f"{where}[{i}]")
            return out
    elif origin is dict or t is dict:
        ok = isinstance(value, dict)
    else:
        ok = True
    return [] if ok else [_mismatch(t, value, where)]


def _mismatch(t: Any, value: Any, where: str) -> str:
    return f"{where}: expected {_expected(t)}, got {_describe(value)} ({_short(value)})"


def _short(value: Any) -> str:
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= 40 else text[:37] + "..."


def struct_differences(value: Any, struct: type[msgspec.Struct], where: str) -> list[str]:
    """Every way `value` (plain JSON) differs from the Struct: unknown fields, missing fields,
    changed types — all of them, nested, with the field path."""
    if not isinstance(value, dict):
        return [f"{where}: expected an object, got {_describe(value)}"]
    known = {f.encode_name: f for f in msgspec.structs.fields(struct)}
    out: list[str] = []
    for name in value:
        if name not in known:
            out.append(f"{where}.{name}: unknown field ({_short(value[name])})")
    for name, f in known.items():
        if name not in value:
            if f.required:
                out.append(f"{where}.{name}: missing field")
            continue
        out += _type_differences(value[name], f.type, f"{where}.{name}")
    return out


def problems_at(record: Record, texts: Iterable[str]) -> list[Problem]:
    return [Problem(record.line, record.conn, text) for text in texts]


def plausible_ms(value: object) -> bool:
    return isinstance(value, int) and PLAUSIBLE_UNIX_MS[0] <= value < PLAUSIBLE_UNIX_MS[1]
