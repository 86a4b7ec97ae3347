"""`feedlab serve VENDOR --scenario FILE`: a scenario's faults against *external* clients (any
language, any process) on the real clock, and the server's view of how they coped.

There is no client here to ask what it delivered, so the view (`scenarios.server_view`) is what
a server can see. A restart with the default answer closes the port: the kernel refuses those
attempts, and no server sees them.

Timing: the scenario *plays* as `feedlab run` plays it, its faults and actors timed from the
moment a client connection first subscribed, and hitting every connection open when they fire. A
client's reconnections within the scenario's `duration` and `settle` are part of that play: the
nightly restart comes once, and the disconnect storm's three closes are three different ones,
wherever the client's connections stand. The first subscription after a play has ended starts
the next. The market runs from the scenario's `start`, seed and settings. Each play judges the
scenario's `[expect]` bounds a server can count (connections, reconnects, resubscription,
turned-away attempts) and lists the rest as not seen.
"""

from __future__ import annotations

import math
import signal
import ssl
from collections.abc import Sequence
from typing import Any

import trio

from mocks.serve import LIVE_RESOLUTION
from mocks.server import SERVE_HISTORY, Connection
from mocks.sim.market import MarketSettings
from mocks.testing import MockService, run_mock
from scenarios.actors import actor_record, play_actor
from scenarios.ground_truth import ACTOR_HEADER, subscription_view
from scenarios.model import Actor, Scenario
from scenarios.runner import client_key
from scenarios.server_view import ConnectionView, PlayView, ServerView

POLL = 0.1  # seconds between looks for newly subscribed connections


def _authenticated(conn: Connection) -> bool | None:
    session: Any = conn.session
    if hasattr(session, "authenticated"):  # Massive
        return bool(session.authenticated)
    if hasattr(session, "plan"):  # Amberdata: a refused key has no plan
        return session.plan is not None
    return None


class _Watcher:
    """Starts a play of the scenario when a client connection first subscribes and none is
    playing, and keeps the view of every client connection (an actor's is not one)."""

    def __init__(
        self, s: Scenario, mock: MockService, view: ServerView, max_plays: float = math.inf
    ) -> None:
        self.s, self.mock, self.view = s, mock, view
        self.max_plays = max_plays
        self.views: dict[int, ConnectionView] = {}
        self.turned_away_upto = -math.inf  # the last attempt a restart turned away, seen

    def view_of(self, conn: Connection) -> ConnectionView:
        v = self.views.get(conn.conn_id)
        if v is None:
            v = ConnectionView(conn.conn_id, conn.info.remote, round(conn.info.opened_at, 3))
            self.views[conn.conn_id] = v
            self.view.connections.append(v)
        return v

    def clients(self) -> list[Connection]:
        return [c for c in self.mock.history if ACTOR_HEADER not in c.info.headers]

    def open_clients(self) -> list[int]:
        return [c.conn_id for c in self.clients() if c.open]

    def closing(self, conn: Connection) -> None:
        """A connection ends: look at it once more before its session lets go (one shorter
        than a poll would otherwise read as never authenticated, never subscribed)."""
        if ACTOR_HEADER not in conn.info.headers:
            self.refresh(conn)

    def refresh(self, conn: Connection) -> None:
        v = self.view_of(conn)
        v.closed = None if conn.closed_at is None else round(conn.closed_at, 3)
        v.close_code, v.client_close_code = conn.close_code, conn.client_close_code
        v.frames_sent, v.events_sent = conn.stats.frames_sent, conn.stats.events_sent
        v.frames_received = conn.stats.frames_received
        if v.authenticated is not True:  # sticky: a finished session reads unauthenticated
            v.authenticated = _authenticated(conn)
        if v.subscribed_at is None and self.subscribed(conn):
            v.subscribed_at = round(self.mock.market.now(), 3)
        if conn.open:
            subs = sorted(subscription_view(self.mock, {conn.conn_id}))
            if subs:
                v.subscriptions = subs

    def subscribed(self, conn: Connection) -> bool:
        if self.mock.hub.contracts_of(conn.conn_id):
            return True
        record = self.mock.ledger.connections.get(conn.conn_id)
        return record is not None and record.counts["routed"] > 0

    def collect_turned_away(self) -> None:
        """The server remembers only its last `SERVE_HISTORY` attempts a restart turned away;
        the view keeps them all (the attempts come in time order)."""
        new = [t for t in self.mock.turned_away if t > self.turned_away_upto]
        if new:
            self.view.turned_away += [round(t, 3) for t in new]
            self.turned_away_upto = new[-1]

    async def run(self, nursery: trio.Nursery) -> None:
        while True:
            self.collect_turned_away()
            for conn in self.clients():
                before = self.views.get(conn.conn_id)
                was_subscribed = before is not None and before.subscribed_at is not None
                self.refresh(conn)
                at = self.views[conn.conn_id].subscribed_at
                if at is not None and not was_subscribed and conn.open:
                    now = self.mock.market.now()
                    if not self.playing(now) and len(self.view.plays) < self.max_plays:
                        # started: the very time its connection's view says it subscribed
                        play = PlayView(len(self.view.plays) + 1, at, conn.conn_id)
                        self.view.plays.append(play)
                        nursery.start_soon(self.play, play, now, self.api_key(conn))
            await trio.sleep(POLL)

    def playing(self, now: float) -> bool:
        """Whether a play is under way: it lasts the scenario's duration and settle."""
        plays = self.view.plays
        return bool(plays) and now < plays[-1].started + self.s.duration + self.s.settle

    def api_key(self, conn: Connection) -> str:
        """The key the client used, for an actor on the same account (Theta has none)."""
        key = getattr(conn.session, "key", None)
        return str(key or client_key(self.s))

    async def play(self, play: PlayView, base: float, api_key: str) -> None:
        director, market = self.mock.director, self.mock.market
        schedule = sorted(
            (t, i, f)
            for i, f in enumerate(self.s.faults)
            for t in director.firing_times(i, f)
            if t <= self.s.duration
        )
        async with trio.open_nursery() as nursery:
            for index, actor in enumerate(self.s.actors):
                nursery.start_soon(self.actor, play, base, index, actor, api_key)
            for t, _, fault in schedule:
                await trio.sleep_until(market.trio_time(base + t))
                open_now = self.open_clients()
                applied = await director.inject(fault)
                entry = applied.to_json() | {"duration": fault.duration}
                self.note(play, entry, applied.connections or open_now)

    async def actor(
        self, play: PlayView, base: float, index: int, actor: Actor, api_key: str
    ) -> None:
        market = self.mock.market
        await trio.sleep_until(market.trio_time(base + actor.at))
        record = actor_record(market.now(), actor)
        self.note(play, record, self.open_clients())
        mock = self.mock
        await play_actor(mock, mock.connector, mock.url, index, actor, api_key, record)

    def note(self, play: PlayView, applied: dict[str, Any], touched: Sequence[int]) -> None:
        """Record a fault (or actor) in its play and in the view of each client connection it
        touched: the ones it names, or for a server-wide one those open when it fired."""
        play.faults.append(applied)
        for conn in self.clients():  # one opened since the last look has no view yet
            self.view_of(conn)
        for conn_id in touched:
            v = self.views.get(conn_id)
            if v is not None:
                v.faults.append(applied)


async def serve_scenario(
    s: Scenario,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    stop: trio.Event | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_plays: float = math.inf,
    task_status: trio.TaskStatus[ServerView] = trio.TASK_STATUS_IGNORED,
) -> ServerView:
    """Serve until SIGINT/SIGTERM (or `stop`), then return what the server saw (started: the
    view as it fills, its `url` where the mock listens). After `max_plays` plays the scenario
    plays no more (`run --command`: one)."""
    from mocks.vendors import vendor_spec

    options = dict(s.mock)
    api_keys = tuple(options.pop("api_keys", ()))
    max_buffer = int(options.pop("max_buffer", 50_000))
    market = MarketSettings(seed=s.seed, start=s.start, **s.market)
    async with run_mock(
        s.vendor,
        seed=s.seed,
        market=market,
        market_resolution=LIVE_RESOLUTION,  # a served feed is a live one, as `serve` is
        horizon=math.inf,
        api_keys=api_keys,
        max_buffer=max_buffer,
        keep_events=False,  # it serves for as long as it is left: counts only,
        history_limit=SERVE_HISTORY,  # and the last finished connections (the view keeps all)
        **options,
    ) as mock:
        chosen = vendor_spec(s.vendor).default_port if port is None else port
        await mock.serve_tcp(host, chosen, ssl_context=ssl_context)
        url = mock.tcp_url(f"[{host}]" if ":" in host else host)
        view = ServerView(
            s.name, s.vendor, url, expect=dict(s.expect), play_length=s.duration + s.settle
        )
        watcher = _Watcher(s, mock, view, max_plays)
        mock.mock_server.on_close.append(watcher.closing)
        print(
            f"{s.vendor} listening on {url} with scenario {s.name} "
            f"(seed {s.seed}, market time from {s.start.isoformat()})",
            flush=True,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher.run, nursery)
            task_status.started(view)
            if stop is None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        break
            else:  # whoever holds `stop` decides; Ctrl-C interrupts it as usual
                await stop.wait()
            for conn in watcher.clients():
                watcher.refresh(conn)
            view.ended = round(mock.market.now(), 3)
            watcher.collect_turned_away()
            nursery.cancel_scope.cancel()
        return view
