"""`feedlab serve`: vendor mocks on the real clock, on TCP, until SIGINT or SIGTERM.

Each vendor gets its own hub and server over one shared market, so `serve all` shows the same
instruments moving consistently across the three vendors' symbologies.
"""

from __future__ import annotations

import signal

import trio

from mocks.hub import Hub
from mocks.server import MockServer
from mocks.sim.actor import Market
from mocks.sim.market import MarketSettings
from mocks.vendors import vendor_spec

SHUTDOWN_GRACE = 2.0  # seconds for clients to answer our 1001 close frames


async def serve_forever(
    vendors: list[str],
    host: str,
    port: int | None,
    settings: MarketSettings,
    api_keys: tuple[str, ...],
    max_rate: bool = False,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    market = Market(settings, max_rate=max_rate)
    servers: list[MockServer] = []
    urls: list[str] = []
    url_host = f"[{host}]" if ":" in host else host
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(market.run)
            for name in vendors:
                spec = vendor_spec(name)
                hub = Hub(market)
                core = spec.create_server(hub, market.sim, api_keys=api_keys)
                server = MockServer(core, hub, market, seed=settings.seed, backpressure=max_rate)
                await nursery.start(server.run)
                bound = await server.serve_tcp(host, spec.default_port if port is None else port)
                servers.append(server)
                urls.append(f"ws://{url_host}:{bound}{spec.path}")
                print(f"{name} listening on {urls[-1]}", flush=True)
            task_status.started(urls)
            async for _ in signals:
                break
            # Going away: every client gets a 1001 close frame, then the listeners stop.
            with trio.move_on_after(SHUTDOWN_GRACE):
                async with trio.open_nursery() as closing:
                    for server in servers:
                        for conn in list(server.connections.values()):
                            closing.start_soon(conn.close, 1001, "server shutting down")
            nursery.cancel_scope.cancel()
