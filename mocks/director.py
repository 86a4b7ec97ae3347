"""The director: plays faults (`mocks.faults`) against a running mock server.

It turns each fault's schedule into firing times (seeded: `probability` draws come from a
generator derived from the run's seed and the fault's position), waits for each on the market's
clock, and applies the fault to its targets through the layer it belongs to: the connection's
`Link` (bytes), the WebSocket (close codes, pongs, frames), the message filter below (events and
frames), the vendor core's own methods (sessions) or the server (restart). Everything applied is
kept in `applied`, with times, for the scenario report.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio

from mocks.faults import Fault
from mocks.server import Connection, MockServer
from mocks.session import Send
from mocks.sim.contracts import OptionContract
from mocks.sim.events import Event, OptionQuote, OptionTrade
from mocks.sim.rng import derive_rng


@dataclass(frozen=True)
class Applied:
    """One firing of a fault, as it happened."""

    time: float
    fault: Fault
    connections: tuple[int, ...]  # the connections it touched (empty: server-wide)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "time": round(self.time, 6),
            "kind": self.fault.kind,
            "params": dict(self.fault.params),
            "connections": list(self.connections),
            "note": self.note,
        }


# -- message-level faults -------------------------------------------------------------------------


@dataclass
class _Active:
    """A message fault in force: until `until`, for `budget` more events (None: any number)."""

    fault: Fault
    until: float
    budget: int | None
    rng: random.Random
    contract: OptionContract | None
    # reorder, by connection number: (how many later events still to pass it, event)
    held: dict[int, list[tuple[int, Event]]] = field(default_factory=dict)
    stale: dict[OptionContract, OptionQuote] = field(default_factory=dict)


class MessageFaults:
    """The server's message filter: drop, duplicate, reorder, sequence faults, stale prices on
    events; corruption on frames. Each touched event is recorded in the server's ledger."""

    def __init__(self, server: MockServer) -> None:
        self.server = server
        self.active: list[_Active] = []
        self._offsets: dict[tuple[int, OptionContract | None], int] = {}  # sequence jumps

    @property
    def quiet(self) -> bool:
        """Nothing to do to any event or frame: the server skips the filter, which at Theta's
        one message per frame would be called 100,000 times a second under `--rate max`."""
        return not self.active and not self._offsets

    def add(self, active: _Active) -> None:
        self.active.append(active)

    def jump(self, conn_id: int, contract: OptionContract | None, by: int) -> None:
        key = (conn_id, contract)
        self._offsets[key] = self._offsets.get(key, 0) + by

    def _applies(self, active: _Active, conn: Connection, now: float) -> bool:
        target = active.fault.connection
        return now < active.until and (target is None or target == conn.conn_id)

    def on_events(self, conn: Connection, events: list[Event], now: float) -> list[Event]:
        self.active = [
            a for a in self.active if (now < a.until and a.budget != 0) or self._holds(a)
        ]
        if self._offsets:
            events = [self._offset(conn.conn_id, e) for e in events]
        for active in self.active:
            if self._applies(active, conn, now) or conn.conn_id in active.held:
                events = self._apply(active, conn, events)
        return events

    def next_release(self, conn: Connection) -> float | None:
        """When (market time) the oldest event a reorder holds for this connection is `within`
        old: it goes out then even if no later event has come to pass it. (It waited for one:
        on a contract that quotes every few seconds a held quote was a delay of seconds, which a
        client's staleness check takes for a silent feed, not a reorder.)"""
        t_of = self.server.market.clock.t_of
        times = [
            t_of(min(event[0] for _, event in held) + _within_ns(active))
            for active in self.active
            if (held := active.held.get(conn.conn_id))
        ]
        return min(times, default=None)

    def released(self, conn: Connection, now: float) -> list[Event]:
        """What reorders hold for this connection that is `within` old by `now`, oldest first."""
        now_ns = self.server.market.clock.unix_ns(now)
        out: list[Event] = []
        for active in self.active:
            held = active.held.get(conn.conn_id)
            if not held:
                continue
            limit = now_ns - _within_ns(active)
            out += [event for _, event in held if event[0] <= limit]
            held[:] = [h for h in held if h[1][0] > limit]
            if not held:
                del active.held[conn.conn_id]
        out.sort(key=lambda event: event[0])
        return out

    def _holds(self, active: _Active) -> bool:
        """Whether a reorder still holds events for a connection that is open (what it held
        for one that has closed is lost with it)."""
        connections = self.server.ledger.connections
        for number in list(active.held):
            record = connections.get(number)
            if record is None or record.closed_at is not None:
                del active.held[number]
        return bool(active.held)

    def _offset(self, conn_id: int, event: Event) -> Event:
        if not isinstance(event, OptionQuote | OptionTrade):
            return event
        by = self._offsets.get((conn_id, event.contract), 0) + self._offsets.get((conn_id, None), 0)
        return event._replace(sequence=event.sequence + by) if by else event

    def _hit(self, active: _Active, event: Event) -> bool:
        """Does this event take the fault? (contract filter, then budget or probability)"""
        if not isinstance(event, OptionQuote | OptionTrade):
            return False
        if active.contract is not None and event.contract != active.contract:
            return False
        if active.budget is not None:
            if active.budget <= 0:
                return False
            active.budget -= 1
            return True
        p = active.fault.probability
        return p is not None and active.rng.random() < p

    def _apply(self, active: _Active, conn: Connection, events: list[Event]) -> list[Event]:
        kind = active.fault.kind
        ledger, number = self.server.ledger, conn.conn_id
        out: list[Event] = []
        if kind == "reorder":
            # Held on the connection it was meant for (a new connection is not sent the last
            # one's), until `by` later events passed it, and never behind an event more than
            # `within` newer: out of order by at most that much market time. (With no later
            # event, `released` lets it out once it is `within` old.)
            by = int(active.fault.param("by"))
            within_ns = _within_ns(active)
            held = active.held.setdefault(number, [])
            for event in events:
                if self._hit(active, event):
                    held.append((by, event))
                    ledger.note(number, "reordered", [event])
                    continue
                limit = event[0] - within_ns  # (every event's first field is its ts_ns)
                if held and held[0][1][0] < limit:
                    out += [waiting for _, waiting in held if waiting[0] < limit]
                    held[:] = [h for h in held if h[1][0] >= limit]
                out.append(event)
                still: list[tuple[int, Event]] = []
                for countdown, waiting in held:
                    if countdown <= 1:
                        out.append(waiting)
                    else:
                        still.append((countdown - 1, waiting))
                held[:] = still
            if not held:
                del active.held[number]
            return out
        # A duplicate's two copies are one object here: a sequence regression that takes one
        # takes both, so they still carry one number. (Only the first changed, they read as
        # two events, which no client can tell from a repeat: a schedule of a duplicate and a
        # regression at the same second made the chaos search blame the built-in client.)
        regressed: dict[int, Event] = {}
        for event in events:
            if kind == "sequence_regression" and id(event) in regressed:
                out.append(regressed[id(event)])
            elif (
                kind == "stale"
                and isinstance(event, OptionQuote)
                and (active.contract is None or event.contract == active.contract)
            ):
                first = active.stale.setdefault(event.contract, event)
                out.append(
                    event._replace(
                        bid=first.bid,
                        ask=first.ask,
                        bid_size=first.bid_size,
                        ask_size=first.ask_size,
                    )
                )
            elif kind in ("drop", "duplicate", "sequence_regression") and self._hit(active, event):
                if kind == "drop":
                    ledger.note(number, "dropped", [event])
                elif kind == "duplicate":
                    ledger.note(number, "duplicated", [event])
                    out += (event, event)
                else:
                    assert isinstance(event, OptionQuote | OptionTrade)  # _hit takes no others
                    by = int(active.fault.param("by"))
                    earlier = event._replace(sequence=event.sequence - by)
                    regressed[id(event)] = earlier
                    out.append(earlier)
            else:
                out.append(event)
        return out

    def on_frame(self, conn: Connection, frame: Send) -> Send:
        for active in self.active:
            if active.fault.kind != "corrupt" or not self._applies(
                active, conn, conn.server.market.now()
            ):
                continue
            if not frame.events or not any(self._hit(active, e) for e in frame.events):
                continue
            self.server.ledger.note(conn.conn_id, "corrupted", frame.events)
            return Send(
                corrupt(frame.data, str(active.fault.param("mode")), active.rng), frame.events
            )
        return frame


def _within_ns(active: _Active) -> int:
    return round(float(active.fault.param("within")) * 1e9)


def corrupt(data: str | bytes, mode: str, rng: random.Random) -> str | bytes:
    """Damage a JSON frame the way a broken upstream does: cut it short, change a field's type,
    or remove a field. Vendor-neutral: it works on any JSON object or array of objects."""
    text = data.decode() if isinstance(data, bytes) else data
    if mode == "invalid_json":
        return text[: max(1, len(text) // 2)]
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text[: max(1, len(text) // 2)]
    target = _first_object(doc)
    if target is None or not target:
        return text[: max(1, len(text) // 2)]
    keys = sorted(target)
    key = keys[rng.randrange(len(keys))]
    if mode == "missing_field":
        del target[key]
    else:  # wrong_type: numbers become strings, everything else becomes a number
        value = target[key]
        target[key] = str(value) if isinstance(value, int | float) else 12345
    return orjson.dumps(doc).decode()


def _first_object(doc: Any) -> dict[str, Any] | None:
    """The innermost-first data object: the event inside Massive's array, Theta's body, or
    Amberdata's result, found by walking to the deepest dict with scalar fields."""
    if isinstance(doc, list):
        for item in doc:
            found = _first_object(item)
            if found is not None:
                return found
        return None
    if isinstance(doc, dict):
        for value in doc.values():
            if isinstance(value, dict | list):
                found = _first_object(value)
                if found is not None:
                    return found
        return doc
    return None


# -- network conditions ---------------------------------------------------------------------------

CONDITIONS = frozenset({"latency", "bandwidth", "slice", "withhold_pong", "fragment"})


def _condition(fault: Fault, conn: Connection) -> Callable[[], None]:
    """Set a network condition on a connection's link; returns what undoes it."""
    link, kind = conn.link, fault.kind
    if kind == "latency":
        link.latency = fault.param("ms") / 1000.0
        link.jitter = fault.param("jitter_ms") / 1000.0

        def restore() -> None:
            link.latency = link.jitter = 0.0
    elif kind == "bandwidth":
        link.bandwidth = float(fault.param("bytes_per_second"))

        def restore() -> None:
            link.bandwidth = None
    elif kind == "slice":
        link.slice_size = int(fault.param("bytes"))
        link.slice_delay = fault.param("delay_ms") / 1000.0

        def restore() -> None:
            link.slice_size, link.slice_delay = None, 0.0
    elif kind == "withhold_pong":
        link.withhold_pong = True

        def restore() -> None:
            link.withhold_pong = False
    else:
        assert kind == "fragment", kind
        link.fragment_size = int(fault.param("size"))

        def restore() -> None:
            link.fragment_size = None

    return restore


# -- the director ---------------------------------------------------------------------------------


class Director:
    """Schedules and applies faults against one `MockServer` on the market's clock."""

    def __init__(
        self,
        server: MockServer,
        faults: Sequence[Fault] = (),
        *,
        seed: int = 0,
        horizon: float = math.inf,
        parse_contract: Callable[[str], OptionContract] | None = None,
    ) -> None:
        self.server = server
        self.faults = list(faults)
        self.seed = seed
        self.horizon = horizon
        self.parse_contract = parse_contract
        self.applied: list[Applied] = []
        self.messages = MessageFaults(server)
        server.faults = self.messages
        self._nursery: trio.Nursery | None = None

    def firing_times(self, index: int, fault: Fault) -> list[float]:
        """When a fault fires, from its schedule; a pure function of (seed, index, fault)."""
        if fault.every is not None:
            first = fault.at if fault.at is not None else fault.every
            count = fault.count if fault.count is not None else math.inf
            times: list[float] = []
            t = first
            while len(times) < count and t <= self.horizon:
                times.append(t)
                t += fault.every
            return times
        if fault.probability is not None and not fault.spec.per_message:
            rng = derive_rng(self.seed, f"fault-schedule:{index}:{fault.kind}")
            start = fault.at or 0.0
            end = min(self.horizon, start + fault.duration) if fault.duration else self.horizon
            times, t = [], start
            if not math.isfinite(end):
                end = start + 86_400.0
            while True:
                t += rng.expovariate(fault.probability)
                if t > end:
                    return times
                times.append(t)
        return [fault.at or 0.0]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        schedule = sorted(
            (t, i, f) for i, f in enumerate(self.faults) for t in self.firing_times(i, f)
        )
        market = self.server.market
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            for t, index, fault in schedule:
                await trio.sleep_until(market.trio_time(t))
                await self.apply(fault, index)
            await trio.sleep_forever()  # faults with a duration still have restores pending

    async def inject(self, fault: Fault) -> Applied:
        """Apply a fault now, outside any schedule (the fixtures' `inject`)."""
        self.faults.append(fault)
        return await self.apply(fault, len(self.faults) - 1)

    def _targets(self, fault: Fault) -> list[Connection]:
        conns = self.server.connections
        if fault.connection is not None:
            conn = conns.get(fault.connection)
            return [conn] if conn is not None else []
        return [conns[k] for k in sorted(conns)]

    async def apply(self, fault: Fault, index: int = 0) -> Applied:
        now = self.server.market.now()
        layer = fault.spec.layer
        targets = self._targets(fault)
        ids = tuple(c.conn_id for c in targets)
        note = ""
        if fault.kind in CONDITIONS:
            self._set_condition(fault, targets, now)
        elif layer in ("bytes", "websocket"):
            for conn in targets:
                await self._apply_to_connection(fault, conn)
        elif layer == "message":
            contract = (
                self.parse_contract(fault.contract)
                if (fault.contract and self.parse_contract)
                else None
            )
            if fault.kind == "sequence_jump":
                for conn in targets:
                    self.messages.jump(conn.conn_id, contract, int(fault.param("by")))
            else:
                budget: int | None = None
                if fault.probability is None and fault.kind != "stale":
                    budget = int(fault.params.get("events", 1))
                if fault.kind == "corrupt" and fault.probability is None:
                    budget = 1
                until = now + fault.duration if fault.duration else math.inf
                rng = derive_rng(self.seed, f"fault:{index}:{fault.kind}:{now:.6f}")
                self.messages.add(_Active(fault, until, budget, rng, contract))
            ids = tuple(c.conn_id for c in targets) if fault.connection else ()
        elif fault.kind == "burst":
            duration = fault.duration if fault.duration is not None else 60.0
            market = self.server.market
            market.sim.burst(float(fault.param("factor")), duration, at=now)
            market.tell_nowait(None)  # the market actor recomputes when to wake
            note = f"x{fault.param('factor'):g} for {duration:g}s"
        elif fault.kind == "restart":
            downtime = fault.duration if fault.duration is not None else 5.0
            answer = str(fault.param("answer"))
            await self._spawn(self.server.restart, downtime, answer)
            note = f"down for {downtime:g}s" + ("" if answer == "refused" else f", {answer}")
        else:
            note = self._apply_session(fault, targets)
        applied = Applied(now, fault, ids, note)
        self.applied.append(applied)
        return applied

    async def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)
        else:
            await fn(*args)

    async def _later(self, delay: float, fn: Callable[[], None]) -> None:
        await trio.sleep(delay)
        fn()

    def _set_condition(self, fault: Fault, targets: list[Connection], now: float) -> None:
        """A network condition holds for its duration on every matching connection, including
        those a client opens while it lasts (a reconnect does not escape bad weather)."""
        until = now + fault.duration if fault.duration is not None else math.inf
        market = self.server.market

        def apply(conn: Connection) -> None:
            if market.now() >= until:
                return
            if fault.connection is not None and conn.conn_id != fault.connection:
                return
            restore = _condition(fault, conn)
            if math.isfinite(until) and self._nursery is not None:
                self._nursery.start_soon(self._later, until - market.now(), restore)

        for conn in targets:
            apply(conn)
        self.server.on_accept.append(apply)

    async def _apply_to_connection(self, fault: Fault, conn: Connection) -> None:
        link, kind = conn.link, fault.kind
        restore: Callable[[], None] | None = None
        if kind == "stall":
            link.stall()
            restore = link.resume
        elif kind == "cut":
            await self._spawn(conn.abort)
        elif kind == "reset":
            await self._spawn(conn.reset)
        elif kind == "close":
            await self._spawn(conn.close, int(fault.param("code")), str(fault.param("reason")))
        elif kind == "oversize_frame":
            size = int(fault.param("bytes"))
            conn.inject(Send('"' + "x" * max(0, size - 2) + '"'))
        if restore is not None and fault.duration is not None:
            await self._spawn(self._later, fault.duration, restore)

    def _apply_session(self, fault: Fault, targets: list[Connection]) -> str:
        """Session faults are the vendor core's own methods, named after the fault kinds."""
        core: Any = self.server.vendor
        kind = fault.kind
        if kind == "auth_failure":
            core.auth_failure(int(fault.param("attempts")))
        elif kind in ("evict", "slow_consumer", "force_disconnect"):
            method = getattr(core, kind)
            for conn in targets:
                method(conn.conn_id)
        elif kind in ("upstream_outage", "heartbeat_stop"):
            duration = fault.duration if fault.duration is not None else 10.0
            getattr(core, kind)(duration, at=self.server.market.now())
        elif kind == "limits":
            return self._apply_limits(core, fault)
        return ""

    def _apply_limits(self, core: Any, fault: Fault) -> str:
        changed = {
            k: int(fault.param(k))
            for k in ("contracts", "connections", "subscriptions", "quote_streams", "trade_streams")
            if int(fault.param(k))
        }
        vendor = self.server.vendor.vendor
        if vendor == "massive":
            if "contracts" in changed:
                core.set_quote_limit(changed["contracts"])
            if "connections" in changed:
                core.settings = dataclasses.replace(
                    core.settings, max_connections=changed["connections"]
                )
        elif vendor == "theta":
            core.set_stream_limits(changed.get("quote_streams"), changed.get("trade_streams"))
        elif vendor == "amberdata":
            for plan in list(core.plans):
                core.set_plan_limits(
                    plan,
                    connections=changed.get("connections"),
                    subscriptions=changed.get("subscriptions"),
                )
        return ", ".join(f"{k}={v}" for k, v in sorted(changed.items()))
