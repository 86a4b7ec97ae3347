"""The actor base: a long-lived Trio task that owns its state and reads a bounded mailbox.

Actors are started in a nursery and stopped by cancelling it; structured concurrency is the
supervision tree (DESIGN.md, principle 2). A full mailbox makes the sender wait (`tell`) or fail
(`tell_nowait`), which is how backpressure and overload become visible instead of memory growth.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import trio

M = TypeVar("M")


class Actor(Generic[M]):
    mailbox_size = 64

    def __init__(self, name: str, mailbox_size: int | None = None) -> None:
        self.name = name
        self._inbox_send, self._inbox = trio.open_memory_channel[M](
            mailbox_size if mailbox_size is not None else self.mailbox_size
        )

    async def tell(self, message: M) -> None:
        await self._inbox_send.send(message)

    def tell_nowait(self, message: M) -> bool:
        """Deliver without waiting; False when the mailbox is full."""
        try:
            self._inbox_send.send_nowait(message)
        except trio.WouldBlock:
            return False
        return True

    def start(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self.run, name=self.name)

    async def run(self) -> None:
        async for message in self._inbox:
            await self.handle(message)

    async def handle(self, message: M) -> None:
        raise TypeError(f"{type(self).__name__} received a message it has no handler for")
