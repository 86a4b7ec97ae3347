"""What the plain test clients (`plain_<vendor>_client.py`, commands for `feedlab run
--command`) share: a user's reconnect loop, in plain `websockets` and nothing from feedlab."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect


def reconnect_forever(
    url: str, greet: Callable[[ClientConnection, int], None], **options: Any
) -> None:
    """Connect, `greet(ws, n)` (the n-th connection: log in, subscribe), read everything, and
    connect again 0.3 s after any drop, until killed."""
    connections = 0
    while True:
        try:
            with connect(url, open_timeout=5, **options) as ws:
                connections += 1
                greet(ws, connections)
                for _ in ws:
                    pass
        except (ConnectionClosed, OSError, TimeoutError):
            pass
        time.sleep(0.3)
