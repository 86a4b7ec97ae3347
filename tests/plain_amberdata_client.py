"""An Amberdata client in another process, as a user's would be: plain `websockets`, nothing
from feedlab. It reads FEEDLAB_URL, FEEDLAB_API_KEY (sent as `x-api-key`) and FEEDLAB_SUBSCRIBE
(`market:options:trades:BTC-28MAR25-60000-C@deribit`, ...), subscribes to each by JSON-RPC, and
reconnects 0.3 s after any drop."""

from __future__ import annotations

import json
import os
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def request(subscription: str, request_id: int) -> str:
    stream, _, target = subscription.rpartition(":")
    instrument, _, exchange = target.partition("@")
    params = [stream, {"instrument": instrument, "exchange": exchange or "deribit"}]
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "subscribe", "params": params})


def main() -> None:
    url, key = os.environ["FEEDLAB_URL"], os.environ["FEEDLAB_API_KEY"]
    subscriptions = os.environ["FEEDLAB_SUBSCRIBE"].split(",")
    request_id = 0
    while True:
        try:
            with connect(url, open_timeout=5, additional_headers={"x-api-key": key}) as ws:
                for subscription in subscriptions:
                    request_id += 1
                    ws.send(request(subscription, request_id))
                for _ in ws:
                    pass
        except (ConnectionClosed, OSError, TimeoutError):
            pass
        time.sleep(0.3)


if __name__ == "__main__":
    main()
