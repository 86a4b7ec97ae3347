"""The ground truth: what the client should have delivered, against what it did (DESIGN.md,
principle 8). `compare` turns a finished run into its `Report`.

What it compares:
- the market's side: every quote and trade of the client's contracts the runner's tap saw
  (what was *published*, across disconnections, since the market does not stop);
- the application's side: every event the client delivered, and when;
- the mock's ledger (what each connection was routed and sent, and what faults dropped,
  duplicated, held back or corrupted) and the director's applied faults (when the mock could
  serve again);
- the mock's view of the client's subscriptions just before each disruptive fault and at the end
  (was the set restored exactly?).

Identity: a delivered event is matched to a market event by (kind, contract, exchange, event
time in ms) — what every vendor's wire carries unchanged — never by sequence numbers, which the
sequence faults rewrite on purpose. Streams without that identity (Amberdata snapshots, tickers
and bars, Massive aggregates, Theta market value, OHLC and index prices) are outside the loss
accounting; Amberdata's periodic streams are still watched for stale periods.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from clients.common import GapNotice
from mocks.sim.contracts import OptionContract
from mocks.sim.events import OptionQuote, OptionTrade
from mocks.sim.symbols import SymbolError
from mocks.testing import MockService
from mocks.theta.terminal import QuoteOnTheWire, quote_on_the_wire
from mocks.vendors import vendor_spec
from scenarios.model import BOOL_METRICS, expectation_metric
from scenarios.report import Expectation, Report

if TYPE_CHECKING:
    from scenarios.runner import _Run

ACTOR_HEADER = "x-feedlab-actor"  # marks the connections of `[[actor]]`s: not the client's

# Faults after which the client has to reconnect (or wait for data to come back); recovery is
# measured from the moment the mock could serve again.
DISRUPTIVE = frozenset(
    {
        "close",
        "cut",
        "reset",
        "stall",
        "evict",
        "slow_consumer",
        "force_disconnect",
        "oversize_frame",
        "heartbeat_stop",
        "restart",
        "upstream_outage",
    }
)
DEFAULT_DOWNTIME = {"restart": 5.0, "upstream_outage": 10.0}  # as mocks.director applies them


# -- what each vendor's events and subscriptions mean -----------------------------------------


@dataclass(frozen=True)
class Stream:
    """One subscription as the accounting sees it."""

    subscription: str
    kind: str  # "quote" / "trade" (identity), a periodic stream name, or "other"
    contract: OptionContract | None
    symbol: str  # the contract as the client writes it (per-contract metrics)
    exchange: str = ""

    @property
    def identity(self) -> bool:
        return self.kind in ("quote", "trade") and self.contract is not None


PERIODIC = {  # Amberdata stream -> the AmberdataSettings field with its interval
    "order:snapshots": "snapshot_interval",
    "tickers": "ticker_interval",
    "open_interests": "open_interest_interval",
}


def parse_streams(vendor: str, subscriptions: Iterable[str]) -> list[Stream]:
    parse = vendor_spec(vendor).parse_contract
    out: list[Stream] = []
    for sub in subscriptions:
        kind, symbol, exchange = "other", sub, ""
        if vendor == "massive":
            channel, _, symbol = sub.partition(".")
            kind = {"Q": "quote", "T": "trade"}.get(channel, "other")
        elif vendor == "theta":
            parts = sub.split(":")
            symbol = ":".join(parts[2:])
            if parts[0] == "option":
                kind = {"quote": "quote", "trade": "trade"}.get(parts[1], "other")
        else:
            rest = sub.removeprefix("market:options:")
            stream, _, target = rest.rpartition(":")
            symbol, _, exchange = target.partition("@")
            exchange = (exchange or "deribit").lower()
            kind = "trade" if stream == "trades" else stream if stream in PERIODIC else "other"
        try:
            contract: OptionContract | None = parse(symbol) if symbol != "*" else None
        except (SymbolError, ValueError):
            contract = None
        out.append(Stream(sub, kind, contract, symbol, exchange))
    return out


def classify(vendor: str, event: object) -> tuple[str, str, str] | None:
    """(kind, symbol, exchange) of a delivered market-data event; None for anything else."""
    name = type(event).__name__
    symbol = getattr(event, "symbol", None)
    if not isinstance(symbol, str) or not isinstance(getattr(event, "timestamp_ns", None), int):
        return None
    if vendor == "massive":
        kind = {"Quote": "quote", "Trade": "trade"}.get(name, "other")
        return kind, symbol, ""
    if vendor == "theta":
        kind = {"OptionQuote": "quote", "OptionTrade": "trade"}.get(name, "other")
        return kind, symbol, ""
    exchange = str(getattr(event, "exchange", "deribit")).lower()
    kind = {
        "Trade": "trade",
        "OrderBookSnapshot": "order:snapshots",
        "Ticker": "tickers",
        "OpenInterest": "open_interests",
    }.get(name, "other")
    return kind, symbol, exchange


def subscription_view(mock: MockService, client_ids: set[int]) -> frozenset[str]:
    """The mock's view of the client's subscriptions, over its open connections."""
    vendor = mock.vendor
    if vendor == "theta":
        return frozenset(str(key) for key in getattr(mock.server, "streams", {}))
    out: set[str] = set()
    for conn_id, conn in sorted(mock.connections.items()):
        if conn_id not in client_ids:
            continue
        session: Any = conn.session
        if vendor == "massive":
            for channel, symbols in session.subscriptions.items():
                out.update(f"{channel}.{sym}" for sym in symbols)
            out.update(f"{channel}.*" for channel in session.wildcards)
        else:
            out.update(
                f"{s.stream}:{s.instrument}@{s.exchange}" for s in session.subscriptions.values()
            )
    return frozenset(out)


# -- what the application received -------------------------------------------------------------


@dataclass
class Delivered:
    at: float  # market seconds when the application received it
    kind: str
    contract: OptionContract | None
    exchange: str
    ts_ns: int


@dataclass
class Observation:
    """Everything the runner saw while the scenario played."""

    delivered: list[Delivered] = field(default_factory=list)
    gaps: list[tuple[GapNotice, float]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    statuses: int = 0
    published: list[OptionQuote | OptionTrade] = field(default_factory=list)
    samples: list[tuple[float, frozenset[str]]] = field(default_factory=list)
    actors: list[dict[str, Any]] = field(default_factory=list)
    failed_connects: list[float] = field(default_factory=list)  # when each connect failed
    error: str | None = None
    error_at: float | None = None
    consuming: trio.CancelScope | None = None


# -- the comparison ---------------------------------------------------------------------------

Key = tuple[str, OptionContract, str, int]  # kind, contract, exchange, event time in ms


@dataclass
class _ThetasWire:
    """What the order of Theta's QUOTE messages on the client's connections does to what a
    client can deliver. They carry no sequence number, so a client tells a repeat from a
    change by the message alone:
    - `unseen`, per (contract, ns): market quotes sent only as a message alike to the one just
      before (the same millisecond, prices, sizes, exchanges): that message again, which a
      client must drop as it drops a duplicate. (Found by `feedlab chaos --vendor theta`:
      seed 14, three bursts of x17 making twins; seed 18, a `stale` fault in bursts making
      quotes of one millisecond alike.)
    - `like_changes`, per (contract, ms): copies of a quote sent again after a different quote
      of the same millisecond, nothing newer between: on the wire a change back (A, B, A),
      which a client must deliver. (Seed 9: a duplicate's copy held back by a reorder.)"""

    unseen: Counter[tuple[OptionContract, int]] = field(default_factory=Counter)
    like_changes: Counter[tuple[OptionContract, int]] = field(default_factory=Counter)

    @classmethod
    def read(cls, records: dict[int, Any]) -> _ThetasWire:
        wire = cls()
        for record in records.values():
            last: dict[OptionContract, tuple[OptionQuote, QuoteOnTheWire]] = {}
            newest: dict[OptionContract, int] = {}
            in_newest: dict[OptionContract, set[QuoteOnTheWire]] = {}
            for event in record.events["sent"]:
                if type(event) is not OptionQuote:
                    continue
                contract, ms, said = (
                    event.contract,
                    event.ts_ns // 1_000_000,
                    quote_on_the_wire(event),
                )
                before = last.get(contract)
                if before is not None and before[1] == said:
                    if (before[0].ts_ns, before[0].sequence) != (event.ts_ns, event.sequence):
                        wire.unseen[(contract, event.ts_ns)] += 1  # not a copy: another quote
                elif ms > newest.get(contract, -1):
                    newest[contract], in_newest[contract] = ms, set()
                elif ms == newest[contract] and said in in_newest[contract]:
                    wire.like_changes[(contract, ms)] += 1
                in_newest[contract].add(said)
                last[contract] = (event, said)
        return wire

    def visible(self, quotes: list[OptionQuote | OptionTrade]) -> list[OptionQuote | OptionTrade]:
        """The market's quotes less those no client could see."""
        unseen = Counter(self.unseen)
        out = []
        for quote in quotes:
            key = (quote.contract, quote.ts_ns)
            if unseen[key] > 0:
                unseen[key] -= 1
            else:
                out.append(quote)
        return out


def _key(kind: str, contract: OptionContract, exchange: str, ts_ns: int) -> Key:
    return (kind, contract, exchange, ts_ns // 1_000_000)


def _kind(event: OptionQuote | OptionTrade) -> str:
    return "quote" if type(event) is OptionQuote else "trade"


@dataclass
class _Tally:
    published: int = 0
    delivered: int = 0
    duplicates_delivered: int = 0
    out_of_order_delivered: int = 0
    injected_loss: int = 0
    injected_flagged: int = 0
    covered_loss: int = 0
    silent_loss: int = 0
    stale_periods: int = 0

    def add(self, other: _Tally) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def compare(run: _Run) -> Report:
    s, mock, obs = run.s, run.mock, run.obs
    clock = mock.market.clock
    client_ids = run.client_ids()
    records = {n: r for n, r in mock.ledger.connections.items() if n in client_ids}
    end_ns = clock.unix_ns(s.duration)

    # When the client first held each contract: its first routed event on any connection.
    first_ns: dict[OptionContract, int] = {}
    for number in sorted(records):
        for event in records[number].events["routed"]:
            if isinstance(event, OptionQuote | OptionTrade):
                contract = event.contract
                if contract in run.contracts and contract not in first_ns:
                    first_ns[contract] = event.ts_ns
    injected: Counter[tuple[str, OptionContract, int]] = Counter(
        (_kind(event), event.contract, event.ts_ns // 1_000_000)
        for _, event in _removed_on_purpose(records)
    )

    # Gap notices as windows per contract (None: every contract), Unix ns.
    windows: dict[OptionContract | None, list[tuple[int, int]]] = defaultdict(list)
    for gap, _ in obs.gaps:
        window = (round(gap.start * 1e9), round(gap.end * 1e9))
        for symbol in gap.contracts:
            if symbol == "*":
                windows[None].append(window)
            elif (covers := run.contract_of(symbol)) is not None:
                windows[covers].append(window)
    cover_from_ns = _error_cover(run, records)

    def covered(contract: OptionContract, ts_ns: int) -> bool:
        if cover_from_ns is not None and ts_ns >= cover_from_ns:
            return True
        return any(a <= ts_ns <= b for a, b in [*windows.get(contract, ()), *windows.get(None, ())])

    published_by: dict[tuple[str, OptionContract], list[OptionQuote | OptionTrade]] = defaultdict(
        list
    )
    for event in obs.published:
        start = first_ns.get(event.contract)
        if start is not None and start <= event.ts_ns <= end_ns:
            published_by[(_kind(event), event.contract)].append(event)
    delivered_by: dict[tuple[str, OptionContract | None, str], list[Delivered]] = defaultdict(list)
    for d in obs.delivered:
        delivered_by[(d.kind, d.contract, d.exchange)].append(d)

    rejected = set(obs.rejected)
    thetas_wire = _ThetasWire.read(records) if s.vendor == "theta" else _ThetasWire()
    per_contract: dict[str, _Tally] = {}
    total = _Tally()
    unmatched = 0
    accounted: set[tuple[str, OptionContract | None, str]] = set()
    for stream in run.streams:
        tally = per_contract.setdefault(stream.symbol, _Tally())
        if stream.kind in PERIODIC and stream.contract is not None:
            tally.stale_periods += _periodic_stale(run, stream, delivered_by, first_ns)
        if not stream.identity or stream.subscription in rejected:
            continue
        assert stream.contract is not None
        skey = (stream.kind, stream.contract, stream.exchange)
        if skey in accounted:
            continue
        accounted.add(skey)
        published = published_by.get((stream.kind, stream.contract), [])
        like_changes: Counter[tuple[OptionContract, int]] = Counter()
        if run.s.vendor == "theta" and stream.kind == "quote":
            published = thetas_wire.visible(published)
            like_changes = thetas_wire.like_changes
        t, extra = _account(
            stream, published, delivered_by.get(skey, []), injected, covered, end_ns, like_changes
        )
        t.stale_periods = _stale(run, published, delivered_by.get(skey, []), first_ns, stream)
        unmatched += extra
        tally.add(t)
    for t in per_contract.values():
        total.add(t)

    metrics: dict[str, Any] = total.as_dict()
    metrics["unmatched_delivered"] = unmatched
    conns = sorted((records[n] for n in records), key=lambda r: r.number)
    metrics["connections"] = len(conns)
    # A reconnect: a client connection opened after the first break (a close, or a disruptive
    # fault: a half-open socket never closes on the server's side).
    breaks = [r.closed_at for r in conns if r.closed_at is not None]
    breaks += [a.time for a in mock.director.applied if a.fault.kind in DISRUPTIVE]
    breaks += [a["time"] for a in obs.actors]
    first_break = min(breaks, default=math.inf)
    metrics["reconnects"] = sum(
        1 for r in conns[1:] if r.opened_at >= first_break
    )  # the first connection never reconnects
    # How hard the client knocked on a door that was shut (a `restart`, a refused key).
    metrics["failed_connects"] = len(obs.failed_connects)
    recoveries, unrecovered, away = _recoveries(run, records)
    metrics["max_recovery"] = round(max(recoveries), 6) if recoveries else 0.0
    ordered = sorted(recoveries)
    metrics["p50_recovery"] = round(ordered[(len(ordered) - 1) // 2], 6) if ordered else 0.0
    metrics["unrecovered"] = unrecovered
    away += _away_after_closes(run, records)
    metrics["resubscribed_exactly"] = _resubscribed(obs.samples, away)
    metrics["gap_notices"] = len(obs.gaps)
    metrics["rejected"] = len(obs.rejected)
    metrics["client_errors"] = 0 if obs.error is None else 1
    metrics["client_error"] = obs.error

    expectations = [check_expectation(key, bound, metrics) for key, bound in s.expect.items()]
    faults = [a.to_json() for a in mock.director.applied] + obs.actors
    faults.sort(key=lambda f: f["time"])
    return Report(
        scenario=s.name,
        seed=run.seed,
        passed=all(e.held for e in expectations),
        metrics=metrics,
        faults=faults,
        expectations=expectations,
        wall={},
        per_contract={k: v.as_dict() for k, v in per_contract.items()},
        timeline=_timeline(run, records),
    )


def _account(
    stream: Stream,
    published: list[OptionQuote | OptionTrade],
    delivered: list[Delivered],
    injected: Counter[tuple[str, OptionContract, int]],
    covered: Callable[[OptionContract, int], bool],
    end_ns: int,
    like_changes: Counter[tuple[OptionContract, int]],
) -> tuple[_Tally, int]:
    """Match one stream's deliveries to the market's events; (tally, unmatched deliveries).
    `like_changes`: repeats no client can tell from a change (`_ThetasWire`)."""
    assert stream.contract is not None
    tally = _Tally(published=len(published))
    remaining: dict[Key, deque[int]] = defaultdict(deque)  # key -> market sequences unmatched
    seen: set[Key] = set()
    for event in published:
        key = _key(stream.kind, event.contract, stream.exchange, event.ts_ns)
        remaining[key].append(event.sequence)
        seen.add(key)
    unmatched = 0
    highest = -math.inf
    for d in delivered:
        if d.ts_ns > end_ns:
            continue
        key = _key(stream.kind, stream.contract, stream.exchange, d.ts_ns)
        pending = remaining.get(key)
        if pending:
            sequence = pending.popleft()
            tally.delivered += 1
            if sequence < highest:
                tally.out_of_order_delivered += 1
            highest = max(highest, sequence)
        elif key in seen:
            if like_changes[(stream.contract, key[3])] > 0:
                like_changes[(stream.contract, key[3])] -= 1
            else:
                tally.duplicates_delivered += 1
        else:
            unmatched += 1
    for key, pending in remaining.items():
        if not pending:
            continue
        kind, contract, _, ms = key
        lost = len(pending)
        on_purpose = min(lost, injected.get((kind, contract, ms), 0))
        is_covered = covered(contract, ms * 1_000_000)
        tally.injected_loss += on_purpose
        if is_covered:
            tally.injected_flagged += on_purpose
            tally.covered_loss += lost - on_purpose
        else:
            tally.silent_loss += lost - on_purpose
    return tally, unmatched


def _stale(
    run: _Run,
    published: list[OptionQuote | OptionTrade],
    delivered: list[Delivered],
    first_ns: dict[OptionContract, int],
    stream: Stream,
) -> int:
    """Spells in which the application went longer than `stale_after` without the stream's
    events although the market had published one (lost, or stuck somewhere on the way)."""
    assert stream.contract is not None
    start_ns = first_ns.get(stream.contract)
    if start_ns is None or not published:
        return 0
    clock = run.mock.market.clock
    times = sorted(clock.t_of(e.ts_ns) for e in published)
    marks = [clock.t_of(start_ns), *(d.at for d in delivered if d.at <= run.s.duration)]
    marks.append(run.s.duration)
    count, limit = 0, run.s.stale_after
    for a, b in itertools.pairwise(marks):
        # Stale: the application heard nothing of the stream for longer than `stale_after`
        # after the market had published something of it.
        if b - a > limit:
            i = bisect.bisect_right(times, a)
            if i < len(times) and times[i] <= b - limit:
                count += 1
    return count


def _periodic_stale(
    run: _Run,
    stream: Stream,
    delivered_by: dict[tuple[str, OptionContract | None, str], list[Delivered]],
    first_ns: dict[OptionContract, int],
) -> int:
    """A periodic stream (Amberdata snapshots, tickers, open interest) is always expected."""
    assert stream.contract is not None
    start_ns = first_ns.get(stream.contract)
    if start_ns is None:
        return 0
    settings: Any = getattr(run.mock.server, "settings", None)
    interval = float(getattr(settings, PERIODIC[stream.kind], 1.0))
    limit = max(run.s.stale_after, 2 * interval + 1.0)
    delivered = delivered_by.get((stream.kind, stream.contract, stream.exchange), [])
    marks = [run.mock.market.clock.t_of(start_ns)]
    marks += [d.at for d in delivered if d.at <= run.s.duration]
    marks.append(run.s.duration)
    return sum(1 for a, b in itertools.pairwise(marks) if b - a > limit)


def _error_cover(run: _Run, records: dict[int, Any]) -> int | None:
    """A client that stopped with an error told the application the feed ended: what was
    published after its last connection was lost (or after the error) is not silent."""
    at = run.obs.error_at
    if at is None:
        return None
    closed = [
        r.closed_at for r in records.values() if r.closed_at is not None and r.closed_at <= at
    ]
    open_at_error = any(r.closed_at is None or r.closed_at > at for r in records.values())
    since = at if open_at_error or not closed else max(closed)
    return run.mock.market.clock.unix_ns(since)


def _removed_on_purpose(records: dict[int, Any]) -> Iterator[tuple[Any, OptionQuote | OptionTrade]]:
    """The quotes and trades a fault dropped or corrupted on the client's connections, each
    with its connection's ledger record."""
    for record in records.values():
        for fate in ("dropped", "corrupted"):
            for event in record.events[fate]:
                if isinstance(event, OptionQuote | OptionTrade):
                    yield record, event


def _served_again(t: float, downtimes: list[tuple[float, float]]) -> float:
    """The first moment from `t` on outside every downtime (they may overlap or chain)."""
    moved = True
    while moved:
        moved = False
        for start, ends in downtimes:
            if start <= t < ends:
                t, moved = ends, True
    return t


def _recoveries(
    run: _Run, records: dict[int, Any]
) -> tuple[list[float], int, list[tuple[float, float]]]:
    """Seconds from each moment the mock could serve again after a disruption to the first
    event the application received that the market made after that moment, less the time a
    restart or an upstream outage in between served nobody. A disruption inside one is served
    again when that ends. (Counted whole, a cut during a restart, or a restart followed a
    second later by another, read the mock's downtime as the client's recovery: 60-63 s.)
    Counted from when the market next made a quote or trade of the client's; with nothing
    delivered since, to the first connection the client opened after the market's last one: a
    cut after the close (real trading hours) was 330 s "unrecovered", the client back in a second
    and the market silent till the run's end. With neither, it is not a recovery.
    Also: how many were never recovered, and each disruption's (start, back) in market time."""
    mock, obs = run.mock, run.obs
    clock = mock.market.clock
    # When the market made the client's quotes and trades (None: always; only periodic
    # streams, whose every interval is data, or none to go by).
    to_be_had = sorted(clock.t_of(e.ts_ns) for e in obs.published) if run.contracts else None
    client_ids = set(records)
    ready: list[tuple[float, float]] = []  # (when the disruption began, when served again)
    downtimes: list[tuple[float, float]] = []  # when the mock served nobody's data
    struck: list[tuple[float, list[int]]] = []  # (when, the client connections it hit)
    for applied in mock.director.applied:
        kind = applied.fault.kind
        if kind not in DISRUPTIVE or applied.time > run.s.duration:
            continue
        if kind in DEFAULT_DOWNTIME:
            duration = applied.fault.duration
            ends = applied.time + (duration if duration is not None else DEFAULT_DOWNTIME[kind])
            downtimes.append((applied.time, ends))
            ready.append((applied.time, ends))
        elif hit := sorted(set(applied.connections) & client_ids):
            ready.append((applied.time, applied.time))
            struck.append((applied.time, hit))
    for actor in obs.actors:  # an actor that took the client's connection away
        ids = actor["connections"]
        if not ids:
            continue
        record = mock.ledger.connections.get(ids[0])
        actor_end = record.closed_at if record is not None and record.closed_at else math.inf
        for r in records.values():
            if r.closed_at is not None and actor["time"] <= r.closed_at <= actor_end:
                ready.append((r.closed_at, r.closed_at))
                break
    at = [d.at for d in obs.delivered]
    # Events a fault removed on purpose (drop, corrupt) on the client's connections: data that
    # came, and that the client could not have delivered: (market time, when its connection
    # opened), by time. Only a connection opened after a disruption shows the client back.
    removed = sorted(
        ((event.ts_ns - clock.start_ns) / 1e9, record.opened_at)
        for record, event in _removed_on_purpose(records)
    )
    removed_at = [r[0] for r in removed]
    opened = sorted(record.opened_at for record in records.values())
    last_made = to_be_had[-1] if to_be_had else -math.inf
    recoveries: list[float] = []
    unrecovered = 0
    away: list[tuple[float, float]] = []
    for began, t in ready:
        t = _served_again(t, downtimes)
        t_ns = clock.unix_ns(t)
        i = bisect.bisect_left(at, t)
        while i < len(obs.delivered) and obs.delivered[i].ts_ns < t_ns:
            i += 1
        j = bisect.bisect_left(removed_at, t)
        while j < len(removed) and removed[j][1] < t:
            j += 1
        made = _next(to_be_had, t) if to_be_had is not None else t
        since = t if made == math.inf else made
        if i < len(obs.delivered) or j < len(removed):
            # Back at the first event after `t` delivered, or removed by a fault on a connection
            # made since (a drop right after a reconnect counted as the client not being back:
            # `feedlab chaos --vendor massive --seed 11`, 67 s).
            back = min(
                obs.delivered[i].at if i < len(obs.delivered) else math.inf,
                removed[j][0] if j < len(removed) else math.inf,
            )
        elif to_be_had is not None and (reopened := _next(opened, max(t, last_made))) < math.inf:
            # A connection opened after the market's last quote or trade of the client's: no
            # data to go by, back when it opened. (Connections before it that delivered nothing
            # the market made meanwhile were no recovery: a theta client under 784 ms latency
            # failing every 3 s until just after the close.)
            back = reopened
        elif made == math.inf:
            # Nothing made since the disruption, and no connection since: no recovery at all
            # (the view at the end shows a client that never came back).
            away.append((began, run.end))
            continue
        else:
            back = math.inf
        # A later disruption that hit a connection the client made since this one: from then
        # on the time is that one's to recover from (a stall of the new connection before its
        # first event read as 80 s of recovery from the first stall: `feedlab chaos --vendor
        # massive --seed 36`; its own recovery took 40 s, a ping interval and timeout).
        again = min(
            (
                when
                for when, hit in struck
                if t < when < back and any(records[n].opened_at >= t for n in hit)
            ),
            default=math.inf,
        )
        if again < back:
            back = again
        elif back == math.inf:
            unrecovered += 1
            back = run.end
        recoveries.append(max(0.0, back - since - _down_between(since, back, downtimes)))
        away.append((began, back))
    return recoveries, unrecovered, away


def _next(times: list[float], t: float) -> float:
    """The first of these sorted times at or after `t` (infinity: none)."""
    k = bisect.bisect_left(times, t)
    return times[k] if k < len(times) else math.inf


def _down_between(start: float, end: float, downtimes: list[tuple[float, float]]) -> float:
    """How long the mock served nobody's data between `start` and `end` (overlaps once)."""
    total, reached = 0.0, start
    for down, up in sorted(downtimes):
        down, up = max(down, reached), min(up, end)
        if up > down:
            total += up - down
            reached = up
    return total


def _away_after_closes(run: _Run, records: dict[int, Any]) -> list[tuple[float, float]]:
    """From each close of a client connection (the mock's or the client's own: a ping timeout
    under a `latency` fault is no disruption of the mock's) to the first event delivered after
    it (`feedlab chaos --vendor massive --seed 3`, six subscriptions: a view sampled 1.2 s into
    the client's own reconnect was held against it)."""
    at = [d.at for d in run.obs.delivered]
    away = []
    for record in records.values():
        closed = record.closed_at
        if closed is not None and closed < run.end:
            i = bisect.bisect_left(at, closed)
            away.append((closed, at[i] if i < len(at) else run.end))
    return away


def _resubscribed(
    samples: list[tuple[float, frozenset[str]]], away: list[tuple[float, float]]
) -> bool:
    """The first non-empty view (before the first disruption) must be the view before every
    later disruption the client was back from the last one by, and at the end. (A view taken
    while the client was still away, a cut a second after a restart, is no client's fault:
    found by a chaos search with this metric as an invariant; `away` also has the time from
    each close of a connection to the next event delivered.)"""
    views = [view for _, view in samples]
    baseline = next((v for v in views if v), None)
    if baseline is None:
        return True
    index = views.index(baseline)
    last = len(samples) - 1  # the view at the end: the client had the settle time
    return all(
        view == baseline
        for i, (at, view) in enumerate(samples[index:], start=index)
        if i == last or not any(began <= at < back for began, back in away)
    )


def check_expectation(key: str, bound: float, metrics: dict[str, Any]) -> Expectation:
    metric, minimum = expectation_metric(key)
    value = metrics[metric]
    actual = float(value) if value is not None else math.nan
    if metric in BOOL_METRICS:
        held = bool(value) == bool(bound)
    elif minimum:
        held = actual >= bound
    else:
        held = actual <= bound
    if metric in ("max_recovery", "p50_recovery") and metrics["unrecovered"] and not minimum:
        held = False
    return Expectation(key, float(bound), actual, held)


def _timeline(run: _Run, records: dict[int, Any]) -> dict[str, Any]:
    """What the HTML page draws: connections, gap notices and delivered events per bucket."""
    end = run.end
    width = max(1.0, math.ceil(end / 300.0))
    rate = [0] * (int(end // width) + 1)
    for d in run.obs.delivered:
        rate[min(len(rate) - 1, int(d.at // width))] += 1
    clock = run.mock.market.clock
    connections = [
        {
            "id": c.conn_id,
            "actor": ACTOR_HEADER in c.info.headers,
            "opened": round(c.info.opened_at, 6),
            "closed": None if c.closed_at is None else round(c.closed_at, 6),
            "close_code": c.close_code,
            "client_close_code": c.client_close_code,
        }
        for c in run.mock.history
    ]
    gaps = [
        {
            "received": round(at, 6),
            "start": round(clock.t_of(round(g.start * 1e9)), 6),
            "end": round(clock.t_of(round(g.end * 1e9)), 6),
            "contracts": len(g.contracts),
            "reason": g.reason,
        }
        for g, at in run.obs.gaps
    ]
    del records
    return {
        "end": round(end, 6),
        "duration": round(run.s.duration, 6),
        "bucket": width,
        "rate": rate,
        "connections": connections,
        "gaps": gaps,
    }
