"""The market actor: runs `MarketSim` on Trio's clock and publishes batches to subscribers.

It wakes at most every `resolution` seconds (and never while nothing is watched), advances the
simulation to the current time and sends every due event, in one batch, to each subscriber's
bounded channel. Under `trio.testing.MockClock(autojump_threshold=0)` that is an hour of market
in seconds; on the real clock it is a live feed. `rate="max"` ignores the clock and produces
as fast as the subscribers drain (for throughput benchmarks).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import trio

from mocks.actor import Actor
from mocks.sim.clock import MarketClock
from mocks.sim.contracts import OptionContract
from mocks.sim.events import Event
from mocks.sim.market import CHUNK_BUDGET, CHUNK_BUDGET_MAX_RATE, MarketSettings, MarketSim

Batch = list[Event]


class Market(Actor[None]):
    """Owns the `MarketSim`. Its mailbox only carries wake-ups ("something is newly watched")."""

    def __init__(
        self,
        settings: MarketSettings | None = None,
        *,
        resolution: float = 0.05,
        max_rate: bool = False,
        wall_clock: bool = False,
        chunk_budget: int | None = None,
    ) -> None:
        super().__init__("market", mailbox_size=1)
        # `serve`: the settings' start is the command's wall-clock reading, and market time 0 is
        # that instant, however long start-up took (a TLS certificate, the GC's start-up sweep):
        # otherwise every timestamp would lag the wall clock by the start-up time.
        self.wall_clock = wall_clock
        if chunk_budget is None:
            chunk_budget = CHUNK_BUDGET_MAX_RATE if max_rate else CHUNK_BUDGET
        self.sim = MarketSim(settings, chunk_budget=chunk_budget)
        self.resolution = resolution
        self.max_rate = max_rate
        self.epoch: float | None = None
        # On the clock (not `max_rate`): the most a batch went out after it was due, in seconds,
        # since whoever reads it last set it to 0 (`feedlab serve` warns when it grows).
        self.worst_lag = 0.0
        self._subscribers: list[trio.MemorySendChannel[Batch]] = []
        # What each subscriber says when asked whether anyone wants events now (`subscribe`).
        self._interest: list[Callable[[], bool]] = []
        self._watchers: dict[OptionContract, int] = {}  # hubs routing each contract

    @property
    def clock(self) -> MarketClock:
        return self.sim.clock

    def now(self) -> float:
        """Seconds of market time since the run started."""
        if self.epoch is None:
            return self.sim.now
        return (
            max(self.sim.now, trio.current_time() - self.epoch)
            if not self.max_rate
            else self.sim.now
        )

    def trio_time(self, t: float) -> float:
        """The Trio clock reading at market time t."""
        return (self.epoch or 0.0) + t

    def now_ns(self) -> int:
        return self.sim.clock.unix_ns(self.now())

    def subscribe(
        self, buffer: int = 16, interested: Callable[[], bool] | None = None
    ) -> trio.MemoryReceiveChannel[Batch]:
        """A channel of every batch. `interested` tells whether the subscriber has anyone to
        pass events to: with `max_rate` the market works only while some subscriber has (a
        market watched by clients that have all gone would otherwise keep a core busy)."""
        send, receive = trio.open_memory_channel[Batch](buffer)
        self._subscribers.append(send)
        if interested is not None:
            self._interest.append(interested)
        return receive

    def _wanted(self) -> bool:
        return not self._interest or any(interested() for interested in self._interest)

    # What the hubs call, each once per contract it routes (`watch`) and once when nobody it
    # serves wants the contract any more (`unwatch`): with several vendors on one market, the
    # contract is unwatched when the last hub lets go. Either takes effect at the caller's "now",
    # whatever the market task has already processed, so the outcome does not depend on task
    # scheduling.
    def watch(self, contract: OptionContract) -> bool:
        self._watchers[contract] = self._watchers.get(contract, 0) + 1
        watched = self.sim.is_watched(contract)
        ok = self.sim.watch(contract, at=self.now())  # (watched: it stays, if it was let go)
        if not watched or self.max_rate:  # max_rate: it may be idle for want of interest
            self.tell_nowait(None)
        return ok

    def unwatch(self, contract: OptionContract) -> None:
        left = self._watchers.get(contract, 0) - 1
        if left > 0:
            self._watchers[contract] = left
            return
        self._watchers.pop(contract, None)
        if self.sim.settings.forget_after is not None:
            self.sim.unwatch(contract, at=self.now())
            self.tell_nowait(None)  # a life may end before the next event

    def watch_underlying(self, root: str) -> None:
        self.sim.watch_underlying(root, at=self.now())
        self.tell_nowait(None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started_late = 0.0
        if self.wall_clock:
            started_late = max(0.0, time.time() - self.sim.settings.start.timestamp())
        self.epoch = trio.current_time() - self.sim.now - started_late
        task_status.started()
        published = self.sim.now  # market time of the last advance
        while True:
            next_t = self.sim.next_time()
            if self.max_rate:
                if next_t is None or not self._wanted():
                    await self._inbox.receive()
                    continue
                until = next_t + self.resolution
            else:
                due = await self._sleep_until_due(next_t, published + self.resolution)
                until = self.now()
                if until - due > self.worst_lag:
                    self.worst_lag = until - due
            batch = self.sim.advance(until)
            published = until
            if batch:
                for channel in self._subscribers:
                    await channel.send(batch)
            elif self.max_rate:
                await trio.sleep(0)

    async def _sleep_until_due(self, next_t: float | None, earliest: float) -> float:
        """Sleep until the next event is due, but not before `earliest` (one batch per
        `resolution`, counted from the last batch); returns the market time it meant to wake
        at. A process short of CPU wakes later than that.

        A watch wakes the actor: its contract may be due sooner. Only then is the market asked
        again, and only if the wake-up was set later than `earliest`: otherwise nothing can bring
        it forward, and asking would regenerate the market's chunk for every watch (with
        `--rate`, each watch changes every contract's rate). A watch never pushes the wake-up
        further out: a stream of subscriptions must not hold the market still."""
        wake = math.inf if next_t is None else max(next_t, earliest)
        while True:
            with trio.move_on_at(self.trio_time(wake)) as sleep:
                await self._inbox.receive()
            if sleep.cancelled_caught:
                return wake
            if wake > earliest:
                next_t = self.sim.next_time()
                wake = math.inf if next_t is None else max(next_t, earliest)


__all__ = ["Batch", "Market", "MarketSettings"]
