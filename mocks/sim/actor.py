"""The market actor: runs `MarketSim` on Trio's clock and publishes batches to subscribers.

It wakes at most every `resolution` seconds (and never while nothing is watched), advances the
simulation to the current time and sends every due event, in one batch, to each subscriber's
bounded channel. Under `trio.testing.MockClock(autojump_threshold=0)` that is an hour of market
in seconds; on the real clock it is a live feed. `rate="max"` ignores the clock and produces
as fast as the subscribers drain (for throughput benchmarks).
"""

from __future__ import annotations

import math

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
    ) -> None:
        super().__init__("market", mailbox_size=1)
        self.sim = MarketSim(
            settings, chunk_budget=CHUNK_BUDGET_MAX_RATE if max_rate else CHUNK_BUDGET
        )
        self.resolution = resolution
        self.max_rate = max_rate
        self.epoch: float | None = None
        self._subscribers: list[trio.MemorySendChannel[Batch]] = []

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

    def subscribe(self, buffer: int = 16) -> trio.MemoryReceiveChannel[Batch]:
        send, receive = trio.open_memory_channel[Batch](buffer)
        self._subscribers.append(send)
        return receive

    # What the hub calls. Watching takes effect at the caller's "now", whatever the market task
    # has already processed, so the outcome does not depend on task scheduling.
    def watch(self, contract: OptionContract) -> bool:
        if self.sim.is_watched(contract):
            return True
        ok = self.sim.watch(contract, at=self.now())
        self.tell_nowait(None)
        return ok

    def watch_underlying(self, root: str) -> None:
        self.sim.watch_underlying(root, at=self.now())
        self.tell_nowait(None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.epoch = trio.current_time() - self.sim.now
        task_status.started()
        published = self.sim.now  # market time of the last advance
        while True:
            next_t = self.sim.next_time()
            if self.max_rate:
                if next_t is None:
                    await self._inbox.receive()
                    continue
                until = next_t + self.resolution
            else:
                # At most one batch per `resolution`, counted from the last one: a watch that
                # wakes the actor (its contract may be due sooner) must not push the next batch
                # further out, or a stream of subscriptions would hold the market still.
                wake = math.inf if next_t is None else max(next_t, published + self.resolution)
                with trio.move_on_at(self.epoch + wake):
                    await self._inbox.receive()
                    continue  # woken by a watch: recompute the next wake
                until = self.now()
            batch = self.sim.advance(until)
            published = until
            if batch:
                for channel in self._subscribers:
                    await channel.send(batch)
            elif self.max_rate:
                await trio.sleep(0)


__all__ = ["Batch", "Market", "MarketSettings"]
