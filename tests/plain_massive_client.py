"""A Massive client in another process, as a user's would be: plain `websockets`, nothing from
feedlab. It reads FEEDLAB_URL, FEEDLAB_API_KEY and FEEDLAB_SUBSCRIBE, and reconnects 0.3 s after
any drop. With `--forget` it subscribes on its first connection only (a reconnect bug)."""

from __future__ import annotations

import json
import os
import sys

from plain_client import reconnect_forever
from websockets.sync.client import ClientConnection


def main() -> None:
    url, key = os.environ["FEEDLAB_URL"], os.environ["FEEDLAB_API_KEY"]
    subscribe = os.environ["FEEDLAB_SUBSCRIBE"]
    forget = "--forget" in sys.argv

    def greet(ws: ClientConnection, n: int) -> None:
        ws.recv(5)
        ws.send(json.dumps({"action": "auth", "params": key}))
        ws.recv(5)
        if n == 1 or not forget:
            ws.send(json.dumps({"action": "subscribe", "params": subscribe}))

    reconnect_forever(url, greet)


if __name__ == "__main__":
    main()
