"""An Amberdata client in another process, as a user's would be: plain `websockets`, nothing
from feedlab. It reads FEEDLAB_URL, FEEDLAB_API_KEY (sent as `x-api-key`) and FEEDLAB_SUBSCRIBE
(`market:options:trades:BTC-28MAR25-60000-C@deribit`, ...), subscribes to each by JSON-RPC, and
reconnects 0.3 s after any drop."""

from __future__ import annotations

import itertools
import json
import os

from plain_client import reconnect_forever
from websockets.sync.client import ClientConnection


def request(subscription: str, request_id: int) -> str:
    stream, _, target = subscription.rpartition(":")
    instrument, _, exchange = target.partition("@")
    params = [stream, {"instrument": instrument, "exchange": exchange or "deribit"}]
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "subscribe", "params": params})


def main() -> None:
    url, key = os.environ["FEEDLAB_URL"], os.environ["FEEDLAB_API_KEY"]
    subscriptions = os.environ["FEEDLAB_SUBSCRIBE"].split(",")
    request_ids = itertools.count(1)

    def greet(ws: ClientConnection, n: int) -> None:
        for subscription in subscriptions:
            ws.send(request(subscription, next(request_ids)))

    reconnect_forever(url, greet, additional_headers={"x-api-key": key})


if __name__ == "__main__":
    main()
