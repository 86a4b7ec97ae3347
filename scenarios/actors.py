"""A scenario's `[[actor]]`s: other programs on the client's account (a second session, a second
terminal client), played the same way by `feedlab run` and by `feedlab serve --scenario`."""

from __future__ import annotations

from typing import Any

import trio
import trio_websocket

from mocks.testing import MockService
from scenarios.ground_truth import ACTOR_HEADER
from scenarios.model import Actor


def actor_record(now: float, actor: Actor) -> dict[str, Any]:
    """What the reports show of an actor, shaped like an applied fault; `play_actor` fills in
    its connection and how it ended."""
    return {
        "time": round(now, 6),
        "kind": "actor",
        "params": {"hold": actor.hold, "messages": len(actor.send)},
        "connections": [],
        "note": "",
    }


async def play_actor(
    mock: MockService,
    connector: Any,
    base_url: str,
    index: int,
    actor: Actor,
    api_key: str,
    record: dict[str, Any],
) -> None:
    """Open a WebSocket to the actor's path on `base_url`'s host, send its messages (`{api_key}`
    stands for the client's key), read until `hold` is up or the server closes it."""
    path = (actor.path or mock.path).replace("{api_key}", api_key)
    scheme, _, rest = base_url.partition("://")
    url = f"{scheme}://{rest.split('/', 1)[0]}{path}"
    before = len(mock.history)
    try:
        async with connector(url, [(ACTOR_HEADER.encode(), b"%d" % index)]) as ws:
            record["connections"] = [
                c.conn_id for c in mock.history[before:] if ACTOR_HEADER in c.info.headers
            ][:1]
            for message in actor.send:
                await ws.send_message(message.replace("{api_key}", api_key))
            with trio.move_on_after(actor.hold):
                while True:
                    await ws.get_message()
    except (
        trio_websocket.ConnectionClosed,
        trio_websocket.HandshakeError,
        trio.BrokenResourceError,
        trio.ClosedResourceError,
        OSError,
    ) as exc:  # how it ended, for the report: the server's doing, most often
        record["note"] = type(exc).__name__
