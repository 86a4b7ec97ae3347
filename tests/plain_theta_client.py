"""A Theta Terminal client in another process, as a user's would be: plain `websockets`, nothing
from feedlab. It reads FEEDLAB_URL and FEEDLAB_SUBSCRIBE (`option:quote:SPY:20250321:575:C`,
`option:trade:...`, `index:price:SPX`), asks for each stream, and reconnects 0.3 s after any
drop (the terminal has no authentication)."""

from __future__ import annotations

import itertools
import json
import os

from plain_client import reconnect_forever
from websockets.sync.client import ClientConnection


def request(subscription: str, request_id: int) -> str:
    sec, kind, root, *option = subscription.split(":")
    contract: dict[str, object] = {"root": root}
    if option:
        expiration, strike, right = option
        contract |= {
            "expiration": int(expiration),
            "strike": round(float(strike) * 1000),  # the wire's 1/10 cent
            "right": right,
        }
    return json.dumps(
        {
            "msg_type": "STREAM",
            "sec_type": sec.upper(),
            "req_type": "TRADE" if kind in ("trade", "price") else "QUOTE",
            "add": True,
            "id": request_id,
            "contract": contract,
        }
    )


def main() -> None:
    url, subscriptions = os.environ["FEEDLAB_URL"], os.environ["FEEDLAB_SUBSCRIBE"].split(",")
    request_ids = itertools.count(1)

    def greet(ws: ClientConnection, n: int) -> None:
        for subscription in subscriptions:
            ws.send(request(subscription, next(request_ids)))

    reconnect_forever(url, greet)


if __name__ == "__main__":
    main()
