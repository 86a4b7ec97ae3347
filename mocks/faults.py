"""The fault list: every fault feedlab can inject, as data.

A fault is a kind plus parameters (each with a documented default, so a kind and a time are
enough), a schedule (`at`, `every` with `count`, or `probability`), an optional `duration`, and a
target (all connections, the N-th connection the mock accepted, or one contract). Scenario files
(`[[fault]]` tables), the pytest fixtures' `inject(kind, **params)` and the chaos search all
produce `Fault` objects; `mocks.director` carries them out.

Layers (DESIGN.md, principle 7):
  bytes      what Toxiproxy does, seeded: latency, bandwidth, stall, cut, reset, slice
  websocket  close codes, withheld pongs, fragmented and oversized frames
  message    drop, duplicate, reorder, corrupt, sequence jump/regression, stale prices
  session    the vendor's own ways to end or refuse a session
  market     the market itself: bursts of activity
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class FaultError(ValueError):
    """A fault description that cannot be carried out; the message names the key and problem."""


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(ms|s|m|h)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object, key: str = "duration") -> float:
    """ "30s", "2m", "1h", "250ms" or a number of seconds."""
    if isinstance(value, bool):
        raise FaultError(f'{key}: expected a duration like "30s", got {value!r}')
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise FaultError(f'{key}: expected a duration like "30s", "2m" or "250ms", got {value!r}')
    if not math.isfinite(seconds) or seconds < 0:
        raise FaultError(f"{key}: must be a non-negative duration, got {value!r}")
    return seconds


@dataclass(frozen=True)
class Param:
    name: str
    kind: type | str  # int, float, str, bool, or "duration"
    default: Any
    doc: str


@dataclass(frozen=True)
class FaultKind:
    name: str
    layer: str
    doc: str
    params: tuple[Param, ...] = ()
    lasts: bool = False  # `duration` means something for this kind
    per_message: bool = False  # `probability` is per message (else: per second)
    vendors: frozenset[str] | None = None  # None: every vendor

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


def _kinds(*kinds: FaultKind) -> dict[str, FaultKind]:
    return {k.name: k for k in kinds}


# What a `restart` answers a connect while the server is down.
RESTART_ANSWERS = ("refused", "none", "503")

KINDS: dict[str, FaultKind] = _kinds(
    # -- bytes -----------------------------------------------------------------------------------
    FaultKind(
        "latency",
        "bytes",
        "Delay every write to the client.",
        (
            Param("ms", float, 200.0, "added delay per write, milliseconds"),
            Param("jitter_ms", float, 0.0, "up to this much more, uniformly"),
        ),
        lasts=True,
    ),
    FaultKind(
        "bandwidth",
        "bytes",
        "Throttle what the client receives.",
        (Param("bytes_per_second", float, 16_384.0, "throughput cap"),),
        lasts=True,
    ),
    FaultKind(
        "stall",
        "bytes",
        "Stop moving bytes both ways but keep the socket: a half-open "
        "connection (no data, no pong, no close). Without duration it never resumes.",
        lasts=True,
    ),
    FaultKind("cut", "bytes", "Close TCP without a WebSocket close frame (the client sees 1006)."),
    FaultKind("reset", "bytes", "Close TCP with a reset (RST); in memory the same as cut."),
    FaultKind(
        "slice",
        "bytes",
        "Dribble writes in small pieces.",
        (
            Param("bytes", int, 1, "piece size"),
            Param("delay_ms", float, 1.0, "pause between pieces, milliseconds"),
        ),
        lasts=True,
    ),
    # -- websocket -------------------------------------------------------------------------------
    FaultKind(
        "close",
        "websocket",
        "Close the WebSocket with a close frame.",
        (
            Param("code", int, 1011, "close code"),
            Param("reason", str, "", "close reason"),
        ),
    ),
    FaultKind(
        "withhold_pong",
        "websocket",
        "Do not answer the client's pings; data still flows.",
        lasts=True,
    ),
    FaultKind(
        "fragment",
        "websocket",
        "Send each message as several continuation frames.",
        (Param("size", int, 64, "payload bytes per frame"),),
        lasts=True,
    ),
    FaultKind(
        "oversize_frame",
        "websocket",
        "Send one message larger than clients accept.",
        (Param("bytes", int, 2 * 1024 * 1024, "message size (vendors' clients stop at 1 MiB)"),),
    ),
    # -- message ---------------------------------------------------------------------------------
    FaultKind(
        "drop",
        "message",
        "Remove market events before they are sent.",
        (Param("events", int, 1, "how many events each firing drops (probability: per event)"),),
        lasts=True,
        per_message=True,
    ),
    FaultKind(
        "duplicate",
        "message",
        "Send market events twice.",
        (Param("events", int, 1, "how many events each firing duplicates"),),
        lasts=True,
        per_message=True,
    ),
    FaultKind(
        "reorder",
        "message",
        "Hold market events back and send them after later ones.",
        (
            Param("events", int, 1, "how many events each firing holds back"),
            Param("by", int, 2, "how many later events overtake each held one"),
            # Out of order is a matter of milliseconds at the vendors; on a quiet contract the
            # `by` later events took seconds, beyond any client's allowance for it.
            Param(
                "within",
                "duration",
                1.0,
                "held no longer than this (market time), nor behind an event newer by more",
            ),
        ),
        lasts=True,
        per_message=True,
    ),
    FaultKind(
        "corrupt",
        "message",
        "Damage a frame: invalid JSON, a wrong type, a missing field.",
        (Param("mode", str, "invalid_json", "invalid_json | wrong_type | missing_field"),),
        lasts=True,
        per_message=True,
    ),
    FaultKind(
        "sequence_jump",
        "message",
        "The contract's sequence numbers jump forward.",
        (Param("by", int, 1000, "added to every later sequence number on the connection"),),
    ),
    FaultKind(
        "sequence_regression",
        "message",
        "One event carries a sequence number from the past.",
        (Param("by", int, 5, "subtracted from that event's sequence number"),),
        per_message=True,
    ),
    FaultKind(
        "stale", "message", "Quotes repeat the prices they had when the fault began.", lasts=True
    ),
    # -- session ---------------------------------------------------------------------------------
    FaultKind(
        "auth_failure",
        "session",
        "The next authentications fail as the vendor fails them.",
        (Param("attempts", int, 1, "how many authentication attempts fail"),),
        vendors=frozenset({"massive", "amberdata"}),
    ),
    FaultKind(
        "evict",
        "session",
        "Evict the connection as a newer session of the same account "
        "would (Massive max_connections; Theta: a second client).",
        vendors=frozenset({"massive", "theta"}),
    ),
    FaultKind(
        "slow_consumer",
        "session",
        "Kill the connection as a slow consumer.",
        vendors=frozenset({"massive"}),
    ),
    FaultKind(
        "force_disconnect",
        "session",
        "Massive's force_disconnect status, then close.",
        vendors=frozenset({"massive"}),
    ),
    FaultKind(
        "restart",
        "session",
        "Server restart: every connection drops, new connections fail for the duration, "
        "then it serves again.",
        (
            Param(
                "answer",
                str,
                "refused",
                "what a connect meets meanwhile: refused (nobody listens) | none (accepted and "
                "held, the upgrade never answered: a proxy before a dead server) | 503 (a load "
                "balancer with no backend)",
            ),
        ),
        lasts=True,
    ),
    FaultKind(
        "upstream_outage",
        "session",
        "Theta Terminal loses its upstream: heartbeats say "
        "DISCONNECTED, data stops, the terminal resubscribes on recovery.",
        lasts=True,
        vendors=frozenset({"theta"}),
    ),
    FaultKind(
        "heartbeat_stop",
        "session",
        "Theta Terminal stops sending STATUS heartbeats.",
        lasts=True,
        vendors=frozenset({"theta"}),
    ),
    FaultKind(
        "limits",
        "session",
        "Lower the account's limits for the scenario.",
        (
            Param("contracts", int, 0, "Massive quote contracts per connection (0: unchanged)"),
            Param("connections", int, 0, "connections per key (0: unchanged)"),
            Param("subscriptions", int, 0, "Amberdata subscriptions per connection (0: unchanged)"),
            Param("quote_streams", int, 0, "Theta quote streams (0: unchanged)"),
            Param("trade_streams", int, 0, "Theta trade streams (0: unchanged)"),
        ),
    ),
    # -- market ----------------------------------------------------------------------------------
    FaultKind(
        "burst",
        "market",
        "The market gets busier for a while: every quote and trade rate times "
        "`factor` (a news spike). Without duration it lasts 60 s.",
        (Param("factor", float, 10.0, "rate multiplier"),),
        lasts=True,
    ),
)

SCHEDULE_KEYS = ("at", "every", "count", "probability", "duration", "connection", "contract")


@dataclass(frozen=True)
class Fault:
    """One fault of a scenario, resolved and validated."""

    kind: str
    at: float | None = None  # seconds from the start; with `every`, the first firing
    every: float | None = None
    count: int | None = None  # with `every`: how many firings (None: until the run ends)
    probability: float | None = None  # per message (message kinds) or per second (the rest)
    duration: float | None = None
    connection: int | None = None  # the N-th connection the mock accepted (1-based)
    contract: str | None = None  # in the vendor's own syntax
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> FaultKind:
        return KINDS[self.kind]

    def param(self, name: str) -> Any:
        if name in self.params:
            return self.params[name]
        param = self.spec.param(name)
        assert param is not None, f"{self.kind} has no parameter {name}"
        return param.default

    def describe(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.kind}{' ' + extra if extra else ''}"

    def to_table(self) -> dict[str, Any]:
        """The scenario-file form (seconds as "Ns" strings), the inverse of `parse_fault`."""
        table: dict[str, Any] = {"kind": self.kind}
        for key in SCHEDULE_KEYS:
            value = getattr(self, key)
            if value is None:
                continue
            table[key] = f"{value!r}s" if key in ("at", "every", "duration") else value
        table.update(self.params)
        return table


def parse_fault(table: Mapping[str, Any], vendor: str | None = None) -> Fault:
    """A fault from its scenario-file table. Errors name the key and the problem."""
    kind_name = table.get("kind")
    if not isinstance(kind_name, str):
        raise FaultError("kind: missing; one of " + ", ".join(KINDS))
    spec = KINDS.get(kind_name)
    if spec is None:
        raise FaultError(f"kind: unknown fault {kind_name!r}; one of {', '.join(KINDS)}")
    if vendor is not None and spec.vendors is not None and vendor not in spec.vendors:
        raise FaultError(
            f"kind: {kind_name} is not something {vendor} does "
            f"(only {', '.join(sorted(spec.vendors))})"
        )
    schedule: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for key, value in table.items():
        if key == "kind":
            continue
        if key in ("at", "every", "duration"):
            schedule[key] = parse_duration(value, key)
        elif key in ("count", "connection"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise FaultError(f"{key}: expected a whole number >= 1, got {value!r}")
            schedule[key] = value
        elif key == "probability":
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not 0.0 < float(value) <= 1.0
            ):
                raise FaultError(f"probability: expected a number in (0, 1], got {value!r}")
            schedule[key] = float(value)
        elif key == "contract":
            if not isinstance(value, str) or not value:
                raise FaultError(
                    f"contract: expected the contract in {vendor or 'the vendor'}'s "
                    f"syntax, got {value!r}"
                )
            schedule[key] = value
        else:
            params[key] = _parse_param(spec, key, value)
    if "every" in schedule and schedule["every"] <= 0:
        raise FaultError("every: must be longer than zero")
    if "count" in schedule and "every" not in schedule:
        raise FaultError("count: goes with every")
    if "duration" in schedule and not spec.lasts:
        raise FaultError(f"duration: {kind_name} happens at an instant and takes no duration")
    if "probability" in schedule and ("every" in schedule):
        raise FaultError("probability: use either every or probability, not both")
    if not any(k in schedule for k in ("at", "every", "probability")):
        raise FaultError('at: missing; say when (at = "30s", every = "2m" or probability)')
    if kind_name == "restart" and params.get("answer", "refused") not in RESTART_ANSWERS:
        raise FaultError(f"answer: expected refused, none or 503, got {params['answer']!r}")
    if kind_name == "corrupt" and params.get("mode", "invalid_json") not in (
        "invalid_json",
        "wrong_type",
        "missing_field",
    ):
        raise FaultError(
            f"mode: expected invalid_json, wrong_type or missing_field, got {params['mode']!r}"
        )
    return Fault(kind=kind_name, params=params, **schedule)


def _parse_param(spec: FaultKind, key: str, value: Any) -> Any:
    param = spec.param(key)
    if param is None:
        known = ", ".join([p.name for p in spec.params] + list(SCHEDULE_KEYS))
        raise FaultError(f"{key}: {spec.name} takes no {key!r}; it takes {known}")
    if param.kind == "duration":
        return parse_duration(value, key)
    if param.kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise FaultError(f"{key}: must not be negative, got {value!r}")
        return float(value)
    if param.kind is int and isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise FaultError(f"{key}: must not be negative, got {value!r}")
        return value
    if param.kind is str and isinstance(value, str):
        return value
    if param.kind is bool and isinstance(value, bool):
        return value
    expected = param.kind if isinstance(param.kind, str) else param.kind.__name__
    raise FaultError(f"{key}: expected {expected}, got {value!r}")


def fault(kind: str, **fields: Any) -> Fault:
    """Build a fault in code, with the same validation as a scenario file:
    `fault("close", at="30s", code=1011)`."""
    return parse_fault({"kind": kind, **fields})
