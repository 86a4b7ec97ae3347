"""Replay: serve a recording as the vendor (`feedlab replay FILE`, `serve VENDOR --replay FILE`).

The control conversation — the greeting, auth, subscribe replies, request and subscription ids,
heartbeats — is answered live by the vendor's own protocol core, exactly as `feedlab serve` does;
only the market data comes from the file. The recorded data frames form one timeline; each client
(API key) gets its own playback of it, starting when it first subscribes, with the recorded gaps
divided by `speed` (`None`: as fast as the client reads), filtered to what each connection
subscribed to and rewritten where the protocol needs it (Amberdata's subscription ids). A
client's reconnection carries on where its playback is now, as a live feed would. What is
vendor-specific lives in `mocks/<vendor>/replay.py`.

The replay runs on the same `MockServer` as the mock, so byte, WebSocket and session faults (cut,
close, stall, latency, eviction, upstream outage...) and corruption of frames apply on top of it.
Message faults that act on market events (drop, duplicate, reorder, sequence, stale, burst) do
not: a replay has frames, not market events. Nor do a scenario's actors.
"""

from __future__ import annotations

import bisect
import datetime as dt
import importlib
import math
from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio

from mocks.director import Director
from mocks.faults import KINDS, Fault
from mocks.hub import Hub
from mocks.recording import Record, Recording, read_recording
from mocks.server import MockServer
from mocks.session import Action, ConnectionInfo, Send, Session, VendorServer
from mocks.sim.actor import Market
from mocks.sim.market import MarketSettings
from mocks.testing import MockService
from mocks.vendors import VENDORS, vendor_spec

CHUNK = 64  # frames a playback hands over per turn at most; the driver reads the client between
SCAN = 4096  # recorded frames a playback looks at per turn at most (most may not be wanted)
MAX_SPEED_LEAD = 0.05  # at --speed max, a playback starts this long after the first subscription
LOOP_GAP = 0.0  # seconds between the end of one pass and the start of the next


# The fault kinds a replay leaves out: they act on market events, and a replay has frames.
NOT_REPLAYED = frozenset(
    k.name
    for k in KINDS.values()
    if k.layer == "market" or (k.layer == "message" and k.name != "corrupt")
)


@dataclass(frozen=True, slots=True)
class DataFrame:
    """One recorded market-data frame, indexed once per recording for every playback."""

    t: float  # seconds since the recording started
    conn: int  # the recorded connection it was sent on
    line: int
    data: str | bytes  # exactly as recorded
    keys: tuple[Hashable, ...]  # what it is about, in the vendor module's terms
    events: int  # market events inside (a Massive frame carries many)
    subscription: str = ""  # Amberdata: the recorded subscription id


class Indexer(Protocol):
    """Reads one recording's conversation in order and picks out its data frames."""

    def client(self, record: Record) -> None:
        """A message the client sent (subscriptions, request ids)."""

    def server(self, record: Record) -> DataFrame | None:
        """A message the server sent: a data frame, or None for control traffic."""


class VendorReplay(Protocol):
    """What `mocks/<vendor>/replay.py` provides."""

    def indexer(self) -> Indexer: ...

    def is_subscribe(self, message: str | bytes) -> bool:
        """Does this client message ask for data? (the recording's playback origin)"""

    def is_data(self, message: str | bytes) -> bool:
        """Is this frame, rendered by the core itself, market data? (replay drops those)"""

    def subscribed(self, session: Session) -> bool:
        """Has this client any subscription now? (its playback starts then)"""

    def identity(self, session: Session) -> str:
        """Who the client is (its API key): connections of one client share a playback."""

    def select(self, session: Session, frame: DataFrame) -> str | bytes | None:
        """What this client gets of the frame: all of it, a filtered or rewritten copy, or
        nothing."""


def vendor_replay(vendor: str) -> VendorReplay:
    if vendor not in VENDORS:
        raise ValueError(f"unknown vendor {vendor!r}")
    module = importlib.import_module(f"mocks.{vendor}.replay")
    rules: VendorReplay = module.RULES
    return rules


@dataclass(frozen=True)
class Timeline:
    vendor: str
    frames: tuple[DataFrame, ...]
    origin: float  # recorded time of the first subscription request: playback time zero
    end: float  # recorded time of the last data frame

    def first_at_or_after(self, t: float) -> int:
        """The index of the first frame recorded at or after t."""
        return bisect.bisect_left(self.frames, t, key=lambda f: f.t)

    @property
    def events(self) -> int:
        return sum(f.events for f in self.frames)


def build_timeline(recording: Recording, rules: VendorReplay | None = None) -> Timeline:
    rules = rules or vendor_replay(recording.vendor)
    indexer = rules.indexer()
    frames: list[DataFrame] = []
    origin: float | None = None
    for record in recording.records:
        if not record.is_message:
            continue
        if record.side == "client":
            indexer.client(record)
            if origin is None and rules.is_subscribe(record.data):
                origin = record.t
        else:
            frame = indexer.server(record)
            if frame is not None:
                frames.append(frame)
    frames.sort(key=lambda f: f.t)  # stable: the recorded order within an instant stays
    start = frames[0].t if frames else 0.0
    if origin is None or origin > start:
        origin = start
    end = frames[-1].t if frames else origin
    return Timeline(recording.vendor, tuple(frames), origin, end)


@dataclass(frozen=True)
class Playback:
    timeline: Timeline
    rules: VendorReplay
    speed: float | None = 1.0  # None: as fast as the client reads
    loop: bool = False

    @property
    def cycle(self) -> float:
        """How long one pass lasts in replay time."""
        if self.speed is None:
            return 0.0
        return (self.timeline.end - self.timeline.origin) / self.speed + LOOP_GAP


@dataclass
class _Shared:
    """One client's playback, shared by its connections: a reconnect continues where the
    recording is now (what was sent meanwhile is lost, as on a live feed), not from the start."""

    origin: float
    next: int = 0  # at --speed max: how far the client's connections have got
    cycle_offset: float = 0.0


class ReplaySession:
    """The vendor's own session for the control conversation, plus this client's playback."""

    def __init__(self, inner: Session, playback: Playback, shared: dict[str, _Shared]) -> None:
        self.inner = inner
        self.playback = playback
        self._shared_by_client = shared
        self._shared: _Shared | None = None
        self.frames = playback.timeline.frames
        self._origin: float | None = None
        self._next = 0
        self._cycle_offset = 0.0
        self._sent_this_pass = 0
        self.frames_sent = 0
        self.events_sent = 0
        self.passes = 0

    # -- the Session protocol ----------------------------------------------------------------------

    def opened(self, now: float) -> list[Action]:
        out = self._control(self.inner.opened(now))
        self._maybe_start(now)
        return out

    def received(self, message: str | bytes, now: float) -> list[Action]:
        out = self._control(self.inner.received(message, now))
        self._maybe_start(now)
        return out

    def publish(self, events: Sequence[Any], now: float) -> list[Action]:
        return self._control(self.inner.publish(events, now))

    def tick(self, now: float) -> list[Action]:
        out = self._control(self.inner.tick(now))
        if self._origin is not None:
            out += self._due(now)
        return out

    def next_deadline(self) -> float | None:
        inner = self.inner.next_deadline()
        mine = self._next_due()
        if mine is None:
            return inner
        return mine if inner is None else min(inner, mine)

    def overflowed(self, now: float) -> list[Action]:
        return self.inner.overflowed(now)

    def closed(self, now: float) -> None:
        self.inner.closed(now)

    # -- playback ----------------------------------------------------------------------------------

    def _control(self, actions: list[Action]) -> list[Action]:
        is_data = self.playback.rules.is_data
        return [a for a in actions if not (isinstance(a, Send) and is_data(a.data))]

    def _maybe_start(self, now: float) -> None:
        rules = self.playback.rules
        if self._origin is not None or not self.frames or not rules.subscribed(self.inner):
            return
        self._sent_this_pass = 0
        client = rules.identity(self.inner)
        shared = self._shared_by_client.get(client)
        if shared is None:
            lead = MAX_SPEED_LEAD if self.playback.speed is None else 0.0
            shared = self._shared_by_client[client] = _Shared(now + lead)
            self._origin, self._next, self._cycle_offset = shared.origin, 0, 0.0
        else:
            self._resume(shared, now)
        self._shared = shared

    def _resume(self, shared: _Shared, now: float) -> None:
        """Another connection of this client played before: carry on from the present."""
        self._origin = shared.origin
        speed, timeline = self.playback.speed, self.playback.timeline
        if speed is None:
            self._next, self._cycle_offset = shared.next, shared.cycle_offset
            return
        elapsed = max(0.0, now - shared.origin)
        cycle = self.playback.cycle
        passes = math.floor(elapsed / cycle) if self.playback.loop and cycle > 0 else 0
        self._cycle_offset = passes * cycle
        self._next = timeline.first_at_or_after(
            timeline.origin + (elapsed - self._cycle_offset) * speed
        )

    def _due_at(self, index: int) -> float:
        assert self._origin is not None
        speed = self.playback.speed
        if speed is None:
            return self._origin
        timeline = self.playback.timeline
        return self._origin + self._cycle_offset + (self.frames[index].t - timeline.origin) / speed

    def _next_due(self) -> float | None:
        if self._origin is None:
            return None
        if self._next >= len(self.frames):
            if not self.playback.loop:
                return None
            return self._origin + self._cycle_offset + self.playback.cycle
        return self._due_at(self._next)

    def _due(self, now: float) -> list[Action]:
        out: list[Action] = []
        frames, select, inner = self.frames, self.playback.rules.select, self.inner
        scanned = 0
        while len(out) < CHUNK and scanned < SCAN:
            if self._next >= len(frames) and not (self.playback.loop and self._wrap()):
                break
            if self._due_at(self._next) > now:
                break
            frame = frames[self._next]
            self._next += 1
            scanned += 1
            data = select(inner, frame)
            shared = self._shared
            if shared is not None and (self._cycle_offset, self._next) > (
                shared.cycle_offset,
                shared.next,
            ):
                shared.cycle_offset, shared.next = self._cycle_offset, self._next
            if data is not None:
                out.append(Send(data))
                self.frames_sent += 1
                self.events_sent += frame.events
                self._sent_this_pass += 1
        return out

    def _wrap(self) -> bool:
        """Start the next pass (`--loop`); False when the last pass gave this client nothing —
        then the playback waits for a change of subscriptions instead of spinning."""
        self.passes += 1
        if self._sent_this_pass == 0:
            self._origin = None
            return False
        self._cycle_offset += self.playback.cycle
        self._next = 0
        self._sent_this_pass = 0
        return True


class ReplayServer:
    """The vendor core wrapped so every session it opens is a `ReplaySession`. Everything else
    (the director's session faults: `evict`, `upstream_outage`, limits...) reaches the core."""

    def __init__(self, core: VendorServer, playback: Playback) -> None:
        self.core = core
        self.vendor = core.vendor
        self.playback = playback
        self.sessions: list[ReplaySession] = []
        self.clients: dict[str, _Shared] = {}  # playbacks by client (API key)

    def accepts_path(self, path: str) -> bool:
        return self.core.accepts_path(path)

    def open(self, info: ConnectionInfo, now: float) -> ReplaySession:
        session = ReplaySession(self.core.open(info, now), self.playback, self.clients)
        self.sessions.append(session)
        return session

    def __getattr__(self, name: str) -> Any:
        return getattr(self.core, name)


class _Still:
    """What the hub tells the market in a replay: nothing. Subscriptions are bookkeeping only;
    the simulator never starts producing (the data comes from the file)."""

    def __init__(self, market: Market) -> None:
        self.market = market

    def watch(self, contract: object) -> bool:
        return True

    def unwatch(self, contract: object) -> None:
        return None

    def watch_underlying(self, root: str) -> None:
        return None

    def now_ns(self) -> int:
        return self.market.now_ns()


def recording_start(recording: Recording) -> dt.datetime:
    """The market clock of a replay starts when the recording did (the core's own timestamps,
    e.g. in Massive's wildcard universe, then agree with the recorded data)."""
    try:
        start = dt.datetime.fromisoformat(recording.header.created.replace("Z", "+00:00"))
    except ValueError:
        return MarketSettings().start
    return start if start.tzinfo is not None else start.replace(tzinfo=dt.UTC)


def build_replay_server(
    recording: Recording,
    *,
    speed: float | None = 1.0,
    loop: bool = False,
    seed: int = 0,
    api_keys: tuple[str, ...] = (),
    max_buffer: int = 50_000,
    **options: Any,
) -> MockServer:
    """A `MockServer` that answers as the recording's vendor and plays the recording's data.
    Start it with `nursery.start(server.run)` after `start_clock(server)`."""
    spec = vendor_spec(recording.vendor)
    rules = vendor_replay(recording.vendor)
    timeline = build_timeline(recording, rules)
    market = Market(MarketSettings(seed=seed, start=recording_start(recording)))
    hub = Hub(_Still(market))
    core = spec.create_server(hub, market.sim, api_keys=api_keys, **options)
    replay = ReplayServer(core, Playback(timeline, rules, speed, loop))
    return MockServer(replay, hub, market, seed=seed, max_buffer=max_buffer)


def start_clock(server: MockServer) -> None:
    """The market actor never runs in a replay; its clock still has to: from now on."""
    server.market.epoch = trio.current_time()


@asynccontextmanager
async def open_replay(
    recording: Recording | str | Path,
    *,
    speed: float | None = 1.0,
    loop: bool = False,
    seed: int = 0,
    faults: Sequence[Fault] = (),
    horizon: float = math.inf,
    api_keys: tuple[str, ...] = (),
    **options: Any,
) -> AsyncIterator[MockService]:
    """A replay inside the current Trio run, shaped like `mocks.testing.run_mock`: `.connector`
    for in-memory clients (virtual time), `await .serve_tcp()` for real sockets, `.director`."""
    if not isinstance(recording, Recording):
        recording = read_recording(recording)
    server = build_replay_server(
        recording, speed=speed, loop=loop, seed=seed, api_keys=api_keys, **options
    )
    spec = vendor_spec(recording.vendor)
    director = Director(
        server, faults, seed=seed, horizon=horizon, parse_contract=spec.parse_contract
    )
    start_clock(server)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        await nursery.start(director.run)
        try:
            yield MockService(recording.vendor, server, spec.path, director)
        finally:
            nursery.cancel_scope.cancel()


def replay_sessions(service: MockService) -> list[ReplaySession]:
    vendor = service.mock_server.vendor
    assert isinstance(vendor, ReplayServer)
    return vendor.sessions
