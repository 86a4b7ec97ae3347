"""Scenario files: the TOML format feedlab runs (`feedlab run`, `feedlab serve --scenario`), read
into a validated `Scenario` and written back (`scenario_to_toml`, used for chaos findings).

The format is a contract with users, so every mistake is reported as one line naming the file, the
key and the problem (`ScenarioError`), and unknown keys are errors rather than silently ignored:
a misspelt `[expect]` bound that never gets checked is worse than a refused file.

    name = "massive-disconnect-storm"
    vendor = "massive"                     # massive | theta | amberdata
    seed = 7
    duration = "10m"                       # virtual time
    start = 2025-03-14T09:30:00-04:00      # market time at t = 0 (a TOML datetime or a string)
    [client]
    subscribe = ["Q.O:SPY250321C00560000"] # the vendor's own syntax
    [[fault]]                              # as `mocks.faults.parse_fault` reads them
    at = "30s"
    kind = "close"
    [[actor]]                              # another program on the same account
    at = "2m"
    send = ['{"action":"auth","params":"{api_key}"}']
    [expect]                               # a metric's maximum; `min_<metric>` a minimum
    silent_loss = 0
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mocks.faults import Fault, FaultError, parse_duration, parse_fault
from mocks.sim.market import MarketSettings
from mocks.sim.symbols import SymbolError
from mocks.vendors import VENDORS, vendor_spec


class ScenarioError(ValueError):
    """A scenario file that cannot be run: `<file>: <key>: <problem>`, one line."""


# -- the model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSpec:
    """Who is under test: the built-in client of the vendor unless `factory` names another
    ("package.module:function", called as `factory(*, url, connector, api_key, clock, seed,
    **options)`). `options` go to the factory; `api_key` among them is the key it is given."""

    subscribe: tuple[str, ...]
    factory: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Actor:
    """Another program on the same account (a second session, a second terminal client): at
    `at` it opens a WebSocket to `path`, sends each of `send` as a text message (`{api_key}`
    stands for the client's key), reads whatever comes, and leaves after `hold` seconds or when
    the server closes it. Its connections are not the client's: the report leaves them out."""

    at: float
    hold: float = 5.0
    send: tuple[str, ...] = ()
    path: str | None = None  # None: the vendor's path


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    vendor: str
    seed: int
    duration: float  # seconds of market time the run lasts (faults later than this never fire)
    start: dt.datetime  # market time at t = 0, timezone-aware
    client: ClientSpec
    faults: tuple[Fault, ...]
    expect: Mapping[str, float]
    market: Mapping[str, Any]  # MarketSettings fields (not seed / start)
    mock: Mapping[str, Any]  # the vendor's settings fields, plus api_keys and max_buffer
    source: str | None = field(default=None, compare=False)  # the file it came from
    actors: tuple[Actor, ...] = ()
    stale_after: float = 10.0  # a stream quiet this long while the market moved: a stale period
    settle: float = 30.0  # virtual seconds after `duration` for in-flight data and recoveries


# -- metrics and bounds -----------------------------------------------------------------------

# Every metric the report computes that an [expect] bound may name. A bare name is a maximum,
# `min_<name>` a minimum; `resubscribed_exactly` takes true/false and must equal it.
COUNT_METRICS = (
    "published",
    "delivered",
    "duplicates_delivered",
    "out_of_order_delivered",
    "unmatched_delivered",
    "injected_loss",
    "injected_flagged",
    "covered_loss",
    "silent_loss",
    "connections",
    "reconnects",
    "failed_connects",
    "unrecovered",
    "stale_periods",
    "gap_notices",
    "rejected",
    "client_errors",
)
TIME_METRICS = ("max_recovery", "p50_recovery")
BOOL_METRICS = ("resubscribed_exactly",)
METRICS = COUNT_METRICS + TIME_METRICS + BOOL_METRICS


def expectation_metric(key: str) -> tuple[str, bool]:
    """(metric, is_minimum) for an [expect] key."""
    if key.startswith("min_") and key[4:] in METRICS:
        return key[4:], True
    return key, False


# -- reading ----------------------------------------------------------------------------------

_TOP_KEYS = (
    "name",
    "description",
    "vendor",
    "seed",
    "duration",
    "start",
    "stale_after",
    "settle",
    "client",
    "fault",
    "actor",
    "expect",
    "market",
    "mock",
)
_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_MOCK_EXTRA = {"api_keys": "list of keys the mock accepts", "max_buffer": "unsent events kept"}


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: file: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: file: not UTF-8 text") from None
    return parse_scenario(text, str(path))


def parse_scenario(text: str, source: str = "<string>") -> Scenario:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: toml: {str(exc).splitlines()[0]}") from None
    return _Reader(source).scenario(doc)


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, problem: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {key}: {problem}")

    def unknown(self, table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.error(
                    f"{where}{key}", f"unknown key; expected one of {', '.join(allowed)}"
                )

    def string(self, doc: Mapping[str, Any], key: str, default: str | None = None) -> str:
        value = doc.get(key, default)
        if value is None:
            raise self.error(key, "missing")
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {value!r}")
        return value

    def duration(self, value: Any, key: str) -> float:
        try:
            return parse_duration(value, key)
        except FaultError as exc:
            raise self.error(key, str(exc).split(": ", 1)[1]) from None

    def scenario(self, doc: Mapping[str, Any]) -> Scenario:
        self.unknown(doc, _TOP_KEYS, "")
        name = self.string(doc, "name")
        if not name.strip():
            raise self.error("name", "must not be empty")
        vendor = self.string(doc, "vendor")
        if vendor not in VENDORS:
            raise self.error("vendor", f"unknown vendor {vendor!r}; one of {', '.join(VENDORS)}")
        seed = doc.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise self.error("seed", f"expected a whole number >= 0, got {seed!r}")
        if "duration" not in doc:
            raise self.error("duration", 'missing; how long the run lasts, e.g. "10m"')
        duration = self.duration(doc["duration"], "duration")
        if duration <= 0:
            raise self.error("duration", "must be longer than zero")
        faults = self.faults(doc.get("fault", []), vendor, duration)
        return Scenario(
            name=name,
            description=self.string(doc, "description", ""),
            vendor=vendor,
            seed=seed,
            duration=duration,
            start=self.start(doc.get("start")),
            client=self.client(doc.get("client"), vendor),
            faults=faults,
            expect=self.expect(doc.get("expect", {})),
            market=self.market(doc.get("market", {})),
            mock=self.mock(doc.get("mock", {}), vendor),
            source=self.source,
            actors=self.actors(doc.get("actor", []), duration),
            stale_after=self.duration(doc.get("stale_after", 10.0), "stale_after"),
            settle=self.duration(doc.get("settle", 30.0), "settle"),
        )

    def start(self, value: Any) -> dt.datetime:
        if value is None:
            return MarketSettings().start
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value)
            except ValueError:
                raise self.error("start", f"not an ISO date-time: {value!r}") from None
        if not isinstance(value, dt.datetime):
            raise self.error("start", f"expected a date-time like 2025-03-14T09:30:00-04:00, "
                             f"got {value!r}")  # fmt: skip
        if value.tzinfo is None or value.utcoffset() is None:
            raise self.error("start", "needs a UTC offset (e.g. -04:00): market time is absolute")
        return value

    def client(self, table: Any, vendor: str) -> ClientSpec:
        if not isinstance(table, dict):
            raise self.error("client", "missing [client] table with subscribe = [...]")
        self.unknown(table, ("subscribe", "factory", "options"), "client.")
        subscribe = table.get("subscribe")
        if not isinstance(subscribe, list) or not subscribe:
            raise self.error("client.subscribe", "expected a non-empty list of subscriptions")
        for i, item in enumerate(subscribe):
            key = f"client.subscribe[{i}]"
            if not isinstance(item, str) or not item:
                raise self.error(key, f"expected a subscription string, got {item!r}")
            problem = subscription_problem(vendor, item)
            if problem:
                raise self.error(key, problem)
        factory = table.get("factory")
        if factory is not None and (
            not isinstance(factory, str) or not _FACTORY.fullmatch(factory)
        ):
            raise self.error(
                "client.factory", f'expected "package.module:function", got {factory!r}'
            )
        options = table.get("options", {})
        if not isinstance(options, dict):
            raise self.error("client.options", "expected a table of keyword arguments")
        return ClientSpec(tuple(subscribe), factory, options)

    def faults(self, tables: Any, vendor: str, duration: float) -> tuple[Fault, ...]:
        if not isinstance(tables, list):
            raise self.error("fault", "expected [[fault]] tables")
        out: list[Fault] = []
        spec = vendor_spec(vendor)
        for i, table in enumerate(tables):
            where = f"fault[{i}]"
            if not isinstance(table, dict):
                raise self.error(where, "expected a table")
            try:
                fault = parse_fault(table, vendor)
            except FaultError as exc:
                raise ScenarioError(f"{self.source}: {where}.{exc}") from None
            if fault.at is not None and fault.at > duration:
                raise self.error(f"{where}.at", f"after the scenario's duration ({duration:g}s)")
            if fault.contract is not None:
                try:
                    spec.parse_contract(fault.contract)
                except (SymbolError, ValueError) as exc:
                    raise self.error(f"{where}.contract", str(exc)) from None
            out.append(fault)
        return tuple(out)

    def actors(self, tables: Any, duration: float) -> tuple[Actor, ...]:
        if not isinstance(tables, list):
            raise self.error("actor", "expected [[actor]] tables")
        out: list[Actor] = []
        for i, table in enumerate(tables):
            where = f"actor[{i}]"
            if not isinstance(table, dict):
                raise self.error(where, "expected a table")
            self.unknown(table, ("at", "hold", "send", "path"), f"{where}.")
            if "at" not in table:
                raise self.error(f"{where}.at", 'missing; when it connects, e.g. "2m"')
            at = self.duration(table["at"], f"{where}.at")
            if at > duration:
                raise self.error(f"{where}.at", f"after the scenario's duration ({duration:g}s)")
            send = table.get("send", [])
            if not isinstance(send, list) or not all(isinstance(m, str) for m in send):
                raise self.error(f"{where}.send", "expected a list of text messages")
            path = table.get("path")
            if path is not None and (not isinstance(path, str) or not path.startswith("/")):
                raise self.error(f"{where}.path", f"expected a path starting with /, got {path!r}")
            hold = self.duration(table.get("hold", 5.0), f"{where}.hold")
            out.append(Actor(at, hold, tuple(send), path))
        return tuple(out)

    def expect(self, table: Any) -> dict[str, float]:
        if not isinstance(table, dict):
            raise self.error("expect", "expected a table of bounds")
        out: dict[str, float] = {}
        for key, value in table.items():
            metric, _ = expectation_metric(key)
            where = f"expect.{key}"
            if metric not in METRICS:
                raise self.error(where, f"unknown metric; one of {', '.join(METRICS)} "
                                 "(min_<metric> for a lower bound)")  # fmt: skip
            if metric in BOOL_METRICS:
                if not isinstance(value, bool):
                    raise self.error(where, f"expected true or false, got {value!r}")
                out[key] = 1.0 if value else 0.0
            elif metric in TIME_METRICS:
                out[key] = self.duration(value, where)
            else:
                if (
                    not isinstance(value, int | float)
                    or isinstance(value, bool)
                    or not math.isfinite(value)
                    or value < 0
                ):
                    raise self.error(where, f"expected a number >= 0, got {value!r}")
                out[key] = float(value)
        return out

    def market(self, table: Any) -> dict[str, Any]:
        if not isinstance(table, dict):
            raise self.error("market", "expected a table of market settings")
        defaults = {
            f.name: getattr(MarketSettings(), f.name) for f in dataclasses.fields(MarketSettings)
        }
        allowed = tuple(k for k in defaults if k not in ("seed", "start"))
        self.unknown(table, allowed, "market.")
        out = {k: self.typed(f"market.{k}", v, defaults[k], k) for k, v in table.items()}
        try:
            MarketSettings(**out)
        except (TypeError, ValueError) as exc:
            raise self.error("market", str(exc)) from None
        return out

    def mock(self, table: Any, vendor: str) -> dict[str, Any]:
        if not isinstance(table, dict):
            raise self.error("mock", "expected a table of vendor options")
        settings = vendor_settings(vendor)
        defaults = {
            f.name: getattr(settings(), f.name)
            for f in dataclasses.fields(settings)
            if not isinstance(getattr(settings(), f.name), Mapping)  # accounts: not in files
        }
        allowed = (*defaults, *_MOCK_EXTRA)
        self.unknown(table, allowed, "mock.")
        out: dict[str, Any] = {}
        for key, value in table.items():
            where = f"mock.{key}"
            if key == "api_keys":
                if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
                    raise self.error(where, "expected a list of key strings")
                out[key] = tuple(value)
            elif key == "max_buffer":
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise self.error(where, f"expected a whole number >= 1, got {value!r}")
                out[key] = value
            else:
                out[key] = self.typed(where, value, defaults[key], key)
        try:
            settings(**{k: v for k, v in out.items() if k not in _MOCK_EXTRA})
        except (TypeError, ValueError) as exc:
            raise self.error("mock", str(exc)) from None
        return out

    def typed(self, where: str, value: Any, default: Any, name: str) -> Any:
        """A settings value checked against the type of its default."""
        if isinstance(default, bool) or (default is None and isinstance(value, bool)):
            if not isinstance(value, bool):
                raise self.error(where, f"expected true or false, got {value!r}")
            return value
        if isinstance(default, int | float) or default is None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                if default is None and isinstance(value, str | list):
                    return tuple(value) if isinstance(value, list) else value
                raise self.error(where, f"expected a number, got {value!r}")
            return float(value) if isinstance(default, float) else value
        if isinstance(default, str):
            if not isinstance(value, str):
                raise self.error(where, f"expected a string, got {value!r}")
            return value
        if isinstance(default, tuple):
            if not isinstance(value, list):
                raise self.error(where, f"expected a list, got {value!r}")
            return tuple(value)
        raise self.error(where, f"{name} cannot be set from a scenario file")


def vendor_settings(vendor: str) -> type[Any]:
    """The dataclass of a vendor's mock options (`[mock]`)."""
    if vendor == "massive":
        from mocks.massive.settings import MassiveSettings

        return MassiveSettings
    if vendor == "theta":
        from mocks.theta.settings import ThetaSettings

        return ThetaSettings
    from mocks.amberdata.server import AmberdataSettings

    return AmberdataSettings


_MASSIVE_CHANNELS = ("Q", "T", "A", "AM")
_THETA_SECURITIES = ("option", "stock", "index")
_AMBERDATA_STREAMS = ("order:snapshots", "tickers", "trades", "ohlcv", "open_interests")


def subscription_problem(vendor: str, text: str) -> str | None:
    """What is wrong with a subscription written in the vendor's syntax (None: nothing)."""
    parse = vendor_spec(vendor).parse_contract
    try:
        if vendor == "massive":
            channel, _, ticker = text.partition(".")
            if channel not in _MASSIVE_CHANNELS or not ticker:
                return (
                    f"{text!r} is not CHANNEL.TICKER with CHANNEL in {', '.join(_MASSIVE_CHANNELS)}"
                )
            if ticker != "*":
                parse(ticker)
        elif vendor == "theta":
            parts = text.split(":")
            if len(parts) < 3 or parts[0] not in _THETA_SECURITIES:
                return (
                    f"{text!r} is not option:quote:ROOT:YYYYMMDD:STRIKE:RIGHT or index:price:ROOT"
                )
            if parts[0] == "option" and parts[2:] != ["*"]:
                parse(text)
        else:
            prefix = "market:options:"
            rest = text[len(prefix) :] if text.startswith(prefix) else ""
            stream = next((s for s in _AMBERDATA_STREAMS if rest.startswith(s + ":")), None)
            if stream is None:
                return f"{text!r} is not {prefix}STREAM:INSTRUMENT[@EXCHANGE]"
            parse(text)
    except (SymbolError, ValueError) as exc:
        return str(exc)
    return None


# -- writing ----------------------------------------------------------------------------------


def scenario_to_toml(s: Scenario) -> str:
    """The scenario as a file `parse_scenario` reads back equal (chaos findings are written so)."""
    lines = [
        f"name = {_value(s.name)}",
        f"description = {_value(s.description)}",
        f"vendor = {_value(s.vendor)}",
        f"seed = {s.seed}",
        f"duration = {_seconds(s.duration)}",
        f"start = {s.start.isoformat()}",
    ]
    if s.stale_after != 10.0:
        lines.append(f"stale_after = {_seconds(s.stale_after)}")
    if s.settle != 30.0:
        lines.append(f"settle = {_seconds(s.settle)}")
    lines += ["", "[client]", f"subscribe = {_value(list(s.client.subscribe))}"]
    if s.client.factory is not None:
        lines.append(f"factory = {_value(s.client.factory)}")
    if s.client.options:
        lines += ["", "[client.options]", *_pairs(s.client.options)]
    for fault in s.faults:
        table = fault.to_table()
        lines += ["", "[[fault]]", *_pairs(table)]
    for actor in s.actors:
        lines += ["", "[[actor]]", f"at = {_seconds(actor.at)}", f"hold = {_seconds(actor.hold)}"]
        lines.append(f"send = {_value(list(actor.send))}")
        if actor.path is not None:
            lines.append(f"path = {_value(actor.path)}")
    if s.expect:
        lines += ["", "[expect]"]
        for key, bound in s.expect.items():
            metric, _ = expectation_metric(key)
            if metric in BOOL_METRICS:
                lines.append(f"{key} = {'true' if bound else 'false'}")
            else:
                lines.append(f"{key} = {_value(bound)}")
    if s.market:
        lines += ["", "[market]", *_pairs(s.market)]
    if s.mock:
        lines += ["", "[mock]", *_pairs(s.mock)]
    return "\n".join(lines) + "\n"


def _seconds(value: float) -> str:
    return f'"{value!r}s"'


def _pairs(table: Mapping[str, Any]) -> list[str]:
    return [f"{_key(k)} = {_value(v)}" for k, v in table.items()]


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ScenarioError(f"<toml>: value: {value!r} cannot be written to a scenario file")
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise ScenarioError(f"<toml>: value: {value!r} cannot be written to a scenario file")
