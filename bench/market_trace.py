"""Record every call a live `feedlab serve` makes on its `MarketSim`, and replay them in-process.

A market bug seen only in a long-running `serve` (a crash after minutes of clients coming and
going, a stream that depends on the clock's slicing) becomes a deterministic reproduction: the
replay makes the same calls with the same arguments, so it fails at the same call, and its CPU
time, work counters and a digest of every event returned compare two versions of the market on
the very same load (2026-12-07: an IndexError after two minutes of rolling Amberdata
subscriptions, and the cost of subscription storms, 72 s of CPU -> 18 s for the same events).

    .venv/bin/python bench/market_trace.py record TRACE -- serve amberdata --port 0 --rate 5000
    PYTHONPATH=OTHER_TREE .venv/bin/python bench/market_trace.py replay TRACE

The trace is a pickle stream: the settings and chunk budget, then (method, args, kwargs) per call.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from mocks.sim import market

CALLS = ("watch", "unwatch", "advance", "next_time", "watch_underlying", "burst")


def record(trace: BinaryIO) -> None:
    """From now on, every `MarketSim` made and every call in `CALLS` goes to `trace`."""
    make = market.MarketSim.__init__

    def init(self: market.MarketSim, *args: Any, **kwargs: Any) -> None:
        make(self, *args, **kwargs)
        pickle.dump(("init", self.settings, self.chunk_budget), trace)

    market.MarketSim.__init__ = init  # type: ignore[method-assign]
    for name in CALLS:
        method = getattr(market.MarketSim, name)

        @functools.wraps(method)
        def traced(
            self: Any,
            *args: Any,
            _name: str = name,
            _method: Callable[..., Any] = method,
            **kwargs: Any,
        ) -> Any:
            pickle.dump((_name, args, kwargs), trace)
            try:
                return _method(self, *args, **kwargs)
            finally:
                trace.flush()  # (a crash leaves the trace whole)

        setattr(market.MarketSim, name, traced)


def calls(trace: BinaryIO) -> Iterator[tuple[str, Any, Any]]:
    while True:
        try:
            yield pickle.load(trace)
        except EOFError:
            return


def replay(trace: BinaryIO) -> int:
    entries = calls(trace)
    _, settings, budget = next(entries)
    sim = market.MarketSim(settings, chunk_budget=budget)
    digest, events, count = hashlib.sha256(), 0, 0
    started = time.process_time()
    for name, args, kwargs in entries:
        count += 1
        out = getattr(sim, name)(*args, **kwargs)
        if name == "advance":
            events += len(out)
            for event in out:
                digest.update(repr(event).encode())
    print(
        f"{count:,} calls, {events:,} events (digest {digest.hexdigest()[:16]}), "
        f"{time.process_time() - started:.1f} s of CPU; {sim.work}"
    )
    return 0


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[0] == "record" and argv[2] == "--":
        from mocks.cli import main as feedlab

        with open(argv[1], "wb") as trace:
            record(trace)
            return feedlab(argv[3:])
    if len(argv) == 2 and argv[0] == "replay":
        with open(argv[1], "rb") as trace:
            return replay(trace)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
