"""What a server can see of its clients under a scenario, and judge: the view that `feedlab
serve --scenario` prints and `feedlab run --command` passes or fails.

Per connection: when it opened and closed and how, its authentication and subscriptions, what it
was sent, the faults that hit it. Per play of the scenario: what it applied, and the scenario's
`[expect]` bounds a server can count — connections, reconnects, resubscription, the attempts a
restart turned away, recoveries up to the client's resubscription; the rest are listed as not
seen. Across the run: the delays between one connection and the next (did the client back off?).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from scenarios.ground_truth import DEFAULT_DOWNTIME, DISRUPTIVE, check_expectation
from scenarios.model import BOOL_METRICS, expectation_metric
from scenarios.report import Expectation

DISRUPTIVE_TOO = DISRUPTIVE | {"actor"}  # an actor evicting the client disrupts it too
# The disruptions after which a client has to open a new connection (a stall without a duration
# too): one it did not come back from is unrecovered.
ENDS_A_CONNECTION = frozenset(
    {"close", "cut", "reset", "evict", "slow_consumer", "force_disconnect", "restart"}
)


@dataclass
class ConnectionView:
    id: int
    remote: str
    opened: float
    closed: float | None = None
    close_code: int | None = None
    client_close_code: int | None = None
    authenticated: bool | None = None  # None: the vendor has no authentication (Theta)
    subscribed_at: float | None = None
    subscriptions: list[str] = field(default_factory=list)
    frames_sent: int = 0
    events_sent: int = 0
    frames_received: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PlayView:
    """One play of the scenario, timed from the subscription that started it. Its connections
    are the client connections that first subscribed (or, never subscribing, opened) from then
    until the next play started."""

    number: int
    started: float
    connection: int  # whose first subscription started it
    faults: list[dict[str, Any]] = field(default_factory=list)  # as applied, actors included


@dataclass
class ServerView:
    scenario: str
    vendor: str
    url: str
    connections: list[ConnectionView] = field(default_factory=list)
    plays: list[PlayView] = field(default_factory=list)
    turned_away: list[float] = field(default_factory=list)  # by a restart answering none/503
    expect: dict[str, float] = field(default_factory=dict)  # the scenario's [expect]
    play_length: float = math.inf  # a play's duration and settle: when its end is judged
    ended: float | None = None  # when the server stopped (market seconds)

    def next_start(self, play: PlayView) -> float:
        """When the play after this one started (inf: none has)."""
        return min((p.started for p in self.plays if p.number > play.number), default=math.inf)

    def play_end(self, play: PlayView) -> float:
        ends = [play.started + self.play_length, self.next_start(play)]
        return min(ends + ([] if self.ended is None else [self.ended]))

    def connections_of(self, play: PlayView) -> list[ConnectionView]:
        return [c for c in self.connections if self.play_of(c) == play.number]

    def _resubscribed(self, play: PlayView, conns: list[ConnectionView]) -> bool:
        """As `feedlab run` judges it: the subscriptions of the client's open connections just
        before each disruption and at the play's end equal the first ones the play saw. A
        look before a disruption that finds none (the client still away) is left out; the one
        at the end never is: a client that came back without subscribing fails it. A client
        that left by itself (its close, not the server's) before the end is judged as it left."""

        def subscribed_at(t: float) -> frozenset[str]:
            return frozenset(
                sub
                for c in conns
                if c.opened <= t < _serving_until(c)
                if c.subscribed_at is not None and c.subscribed_at <= t
                for sub in c.subscriptions
            )

        disruptions = [f["time"] - 0.25 for f in play.faults if f["kind"] in DISRUPTIVE_TOO]
        looks = [subscribed_at(t) for t in sorted(disruptions)]
        end_at = self.play_end(play)
        closed = [c for c in conns if c.closed is not None and c.closed <= end_at]
        if closed and len(closed) == len(conns):  # nothing open: had the client left by itself?
            last = max(closed, key=lambda c: c.closed or 0.0)
            if last.close_code is None and last.client_close_code is not None:
                end_at = (last.closed or 0.0) - 0.001  # its last moment counts as the end
        end = subscribed_at(end_at)
        baseline = next((v for v in [*looks, end] if v), None)
        if baseline is None:
            return True
        return end == baseline and all(v == baseline for v in looks if v)

    def play_of(self, c: ConnectionView) -> int | None:
        t = c.opened if c.subscribed_at is None else c.subscribed_at
        return max((p.number for p in self.plays if p.started <= t), default=None)

    def _recoveries(self, play: PlayView, conns: list[ConnectionView]) -> tuple[list[float], int]:
        """Per disruption that hit the client: seconds from the moment the server could serve
        again to the client's subscription on a connection opened since (`feedlab run` waits
        for the first event the application received, so this is its lower bound), ending
        where a later disruption hit a connection made since; and how many it never came back
        from (counted to the play's end). One that need not end a connection (a stall with a
        duration, an upstream outage, an actor) counts only when the client reconnected."""
        end = self.play_end(play)
        hits = sorted(
            (f["time"], i, f) for i, f in enumerate(play.faults) if f["kind"] in DISRUPTIVE_TOO
        )
        recoveries, unrecovered = [], 0
        for n, (t, _, f) in enumerate(hits):
            kind, lasting = f["kind"], f.get("duration")
            since = [c for c in conns if c.opened >= t]
            if not any(c.opened <= t and _serving_until(c) >= t for c in conns):
                continue  # the client was away
            must = _ends_a_connection(f)
            if not must and not since:
                continue
            back = t
            if kind in DEFAULT_DOWNTIME:
                back += lasting if lasting is not None else DEFAULT_DOWNTIME[kind]
            struck = [
                t2
                for t2, _, _ in hits[n + 1 :]
                if any(t <= c.opened <= t2 and _serving_until(c) >= t2 for c in since)
            ]
            until = min([*struck, end])
            resubscribed = [
                c.subscribed_at
                for c in since
                if c.subscribed_at is not None and c.subscribed_at <= until
            ]
            if resubscribed:
                recoveries.append(max(0.0, min(resubscribed) - back))
            else:
                recoveries.append(max(0.0, until - back))
                unrecovered += not struck
        return recoveries, unrecovered

    def metrics(self, play: PlayView) -> dict[str, Any]:
        """What a server can count of `feedlab run`'s metrics for one play (None: it cannot:
        the attempts a closed port refused never reach it)."""
        conns = self.connections_of(play)
        breaks = [c.closed for c in conns if c.closed is not None]
        breaks += [f["time"] for f in play.faults if f["kind"] in DISRUPTIVE_TOO]
        first_break = min(breaks, default=math.inf)
        restarts = [f for f in play.faults if f["kind"] == "restart"]
        until = self.next_start(play)
        recoveries, unrecovered = self._recoveries(play, conns)
        ordered = sorted(recoveries)
        disrupted = any(f["kind"] in DISRUPTIVE_TOO for f in play.faults)
        unseen = None if disrupted else 0.0
        return {
            "connections": len(conns),
            "reconnects": sum(1 for c in conns[1:] if c.opened >= first_break),
            "resubscribed_exactly": self._resubscribed(play, conns),
            "failed_connects": None
            if any(f["params"].get("answer", "refused") == "refused" for f in restarts)
            else sum(1 for t in self.turned_away if play.started <= t < until),
            # None: disruptions, but none the server could time (an outage the client sat out)
            "max_recovery": round(ordered[-1], 3) if ordered else unseen,
            "p50_recovery": round(ordered[(len(ordered) - 1) // 2], 3) if ordered else unseen,
            "unrecovered": unrecovered,
        }

    def checks(
        self, play: PlayView, metrics: dict[str, Any] | None = None
    ) -> tuple[list[Expectation], list[str]]:
        """The scenario's expectations the server can judge for one play (from its `metrics`,
        when the caller has them), and the rest."""
        if metrics is None:
            metrics = self.metrics(play)
        held, unchecked = [], []
        for key, bound in self.expect.items():
            metric, _ = expectation_metric(key)
            if metrics.get(metric) is None:
                unchecked.append(key)
            else:
                held.append(check_expectation(key, bound, metrics))
        return held, unchecked

    def judged(self) -> list[Expectation]:
        """Every play's expectations the server could judge."""
        return [e for p in self.plays for e in self.checks(p)[0]]

    def passed(self) -> bool:
        """A play ran, and every bound the server could judge held."""
        return bool(self.plays) and all(e.held for e in self.judged())

    def port_closed(self) -> bool:
        """Whether a restart closed the port: the attempts the kernel refused meanwhile
        never reached the server, so it cannot tell whether the client backed off."""
        return any(
            f["kind"] == "restart" and f["params"].get("answer", "refused") == "refused"
            for p in self.plays
            for f in p.faults
        )

    def retry_delays(self) -> list[list[float]]:
        """After each connection that ended: the seconds to the first attempt, and between
        one attempt and the next, turned away or not, until a connection opened (or the
        server stopped)."""
        runs = []
        nexts = [c.opened for c in self.connections[1:]] + [math.inf]
        for before, opened in zip(self.connections, nexts, strict=False):  # none: no runs
            left = _ended(before)
            if left is None or opened < left:
                continue
            attempts = [left]
            attempts += [t for t in self.turned_away if left <= t < opened]
            if opened < math.inf:
                attempts.append(opened)
            runs.append([round(b - a, 3) for a, b in itertools.pairwise(attempts)])
        return runs

    def reconnect_delays(self) -> list[float]:
        """Seconds from each connection's end to the next connection's start (a connection
        opened while the one before still served is another one of the client's, not a
        reconnect)."""
        delays = []
        for before, after in zip(self.connections, self.connections[1:], strict=False):
            left = _ended(before)
            if left is not None and after.opened >= left:
                delays.append(round(after.opened - left, 3))
        return delays

    def restored(self) -> list[bool]:
        """For each connection after the first that subscribed: the same set as the last one."""
        out, last = [], None
        for c in self.connections:
            if not c.subscriptions:
                continue
            if last is not None:
                out.append(sorted(c.subscriptions) == sorted(last))
            last = c.subscriptions
        return out

    def to_json(self) -> dict[str, Any]:
        delays = self.reconnect_delays()
        retries = self.retry_delays()
        plays = []
        for p in self.plays:
            metrics = self.metrics(p)
            checked, unchecked = self.checks(p, metrics)
            plays.append(
                dataclasses.asdict(p)
                | {
                    "connections": [c.id for c in self.connections_of(p)],
                    "metrics": metrics,
                    "expectations": [e.to_json() for e in checked],
                    "unchecked": unchecked,
                }
            )
        return {
            "scenario": self.scenario,
            "vendor": self.vendor,
            "url": self.url,
            "connections": [
                dataclasses.asdict(c) | {"play": self.play_of(c)} for c in self.connections
            ],
            "plays": plays,
            "passed": self.passed(),
            "auth_attempts": sum(1 for c in self.connections if c.authenticated is not None),
            "auth_failures": sum(1 for c in self.connections if c.authenticated is False),
            "reconnect_delays": delays,
            "immediate_reconnects": sum(1 for d in delays if d < 0.1),
            "turned_away": len(self.turned_away),
            "retry_delays": retries,
            "backed_off": None if self.port_closed() else _backed_off(delays, retries),
            "subscriptions_restored": self.restored(),
            "frames_sent": sum(c.frames_sent for c in self.connections),
            "events_sent": sum(c.events_sent for c in self.connections),
        }

    def write(self, path: str | Path) -> None:
        Path(path).write_bytes(
            orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )

    def summary(self) -> str:
        data = self.to_json()
        lines = [f"scenario {self.scenario} on {self.url}: {len(self.connections)} connection(s)"]
        for p in self.plays:
            kinds = ", ".join(f["kind"] for f in p.faults) or "nothing yet"
            lines.append(f"  play {p.number} from {p.started:.3f}s (#{p.connection}): {kinds}")
            checked, unchecked = self.checks(p)
            for e in checked:
                lines.append(f"    {_described(e)}: {'held' if e.held else 'BROKEN'}")
            if unchecked:
                lines.append(f"    not seen by a server: {', '.join(unchecked)}")
        for c in self.connections:
            closed = "open" if c.closed is None else f"closed at {c.closed:.3f}s"
            code = c.close_code or c.client_close_code
            auth = {None: "", True: ", authenticated", False: ", auth failed"}[c.authenticated]
            lines.append(
                f"  #{c.id} {c.remote}: opened {c.opened:.3f}s, {closed}"
                f"{'' if code is None else f' ({code})'}{auth}, "
                f"{len(c.subscriptions)} subscription(s), {c.events_sent} events in "
                f"{c.frames_sent} frames, {len(c.faults)} fault(s)"
            )
        lines.append(f"reconnect delays (s): {data['reconnect_delays'] or 'none'}")
        lines.append(
            f"backed off: {_yes_no_unseen(data['backed_off'])}; "
            f"immediate reconnects: {data['immediate_reconnects']}; "
            f"attempts a restart turned away: {data['turned_away']}"
        )
        lines.append(f"subscriptions restored: {data['subscriptions_restored'] or 'n/a'}")
        return "\n".join(lines) + "\n"


def _ends_a_connection(fault: dict[str, Any]) -> bool:
    kind = fault["kind"]
    return kind in ENDS_A_CONNECTION or (kind == "stall" and fault.get("duration") is None)


def _ended(c: ConnectionView) -> float | None:
    """When a connection stopped serving its client: its close, or the disruption that hit it
    first if sooner (a stalled socket closes on the server's side only when the server gives
    up on it, long after the client has reconnected)."""
    times = [f["time"] for f in c.faults if _ends_a_connection(f)]
    if c.closed is not None:
        times.append(c.closed)
    return min(times) if times else None


def _serving_until(c: ConnectionView) -> float:
    ended = _ended(c)
    return math.inf if ended is None else ended


def _described(e: Expectation) -> str:
    metric, minimum = expectation_metric(e.metric)
    if metric in BOOL_METRICS:
        return f"{metric} {bool(e.actual)} (expected {bool(e.bound)})"
    return f"{metric} {e.actual:g} ({'at least' if minimum else 'at most'} {e.bound:g})"


def _yes_no_unseen(value: bool | None) -> str:
    if value is None:
        return 'not seen (a restart closed the port: answer = "503" shows the attempts)'
    return "yes" if value else "no"


def _backed_off(delays: list[float], retries: list[list[float]]) -> bool:
    """A client backs off when it never tries again at once (under 0.1 s) twice in a row:
    across drops, or within one run of attempts a restart turned away. A single reconnect
    must not be at once either."""
    if len(delays) <= 1 and not all(d >= 0.1 for d in delays):
        return False
    return not any(
        a < 0.1 and b < 0.1 for run in [delays, *retries] for a, b in itertools.pairwise(run)
    )
