"""Simulator speed against JSON encoding of the same events (issue "Speed").

Produces a quarter hour of market for a chain of 200 SPY contracts plus the SPX index with
`MarketSim.advance`, then times `orjson.dumps` of each of the same events as a plain dict
(prepared beforehand, not timed). The target is a ratio of at least 1/3: the market must not cost
more than three times what merely encoding its output costs.

The machine may be shared, so each round times both in the same process, back to back, and the
figures are CPU time of this process (`time.process_time`), best of several rounds. The timed
market run keeps no events (as in the service, where each batch is encoded and dropped); the
events for the encoding baseline come from an untimed run with the same seed, made once, which
gives the same events (each round checks the count). Also printed: the same run sliced the way
the market actor slices it (0.05 s of market time per `advance`). Prints the figures and exits 0
either way: CI never asserts on speed.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time

import orjson

from mocks.sim.chains import chain
from mocks.sim.clock import EASTERN
from mocks.sim.events import Event, OptionQuote, OptionTrade
from mocks.sim.market import MarketSettings, MarketSim

START = dt.datetime(2025, 3, 14, 9, 30, tzinfo=EASTERN)
SECONDS = 900.0
ROUNDS = 9


def as_dict(event: Event) -> dict[str, object]:
    fields: dict[str, object] = dict(event._asdict())
    if isinstance(event, OptionQuote | OptionTrade):
        c = event.contract
        fields["contract"] = {
            "root": c.root,
            "expiration": c.expiration.isoformat(),
            "strike_milli": c.strike_milli,
            "right": c.right,
        }
    return fields


def new_market() -> MarketSim:
    sim = MarketSim(MarketSettings(seed=1, start=START))
    spot = sim.underlying_price("SPY")
    for contract in chain("SPY", START.date(), spot, expirations_count=4, strikes_each_side=12):
        sim.watch(contract)
    sim.watch_underlying("SPX")
    return sim


def simulate(window: float) -> tuple[int, float]:
    """(events, CPU seconds) for the whole run, advancing `window` seconds at a time."""
    sim = new_market()
    steps = round(SECONDS / window)
    count = 0
    began = time.process_time()
    for i in range(1, steps + 1):
        count += len(sim.advance(i * window))
    return count, time.process_time() - began


def encode(dicts: list[dict[str, object]]) -> float:
    dumps = orjson.dumps
    began = time.process_time()
    for d in dicts:
        dumps(d)
    return time.process_time() - began


def main() -> int:
    sim_rates, live_rates, enc_rates, ratios = [], [], [], []
    dicts = [as_dict(e) for e in new_market().advance(SECONDS)]
    count = len(dicts)
    for _ in range(ROUNDS):
        sim_count, sim_s = simulate(1.0)
        live_count, live_s = simulate(0.05)
        assert sim_count == live_count == count  # the same events, however time is sliced
        enc_s = encode(dicts)
        sim_rates.append(count / sim_s)
        live_rates.append(count / live_s)
        enc_rates.append(count / enc_s)
        ratios.append(sim_s and enc_s / sim_s)
    best_sim, best_live, best_enc = max(sim_rates), max(live_rates), max(enc_rates)
    print(
        f"market: {best_sim:,.0f} events/s simulated (1 s windows), {best_live:,.0f}/s in the "
        f"actor's 0.05 s windows; orjson.dumps of the same {count:,} events as dicts: "
        f"{best_enc:,.0f}/s"
    )
    print(
        f"ratio {best_sim / best_enc:.3f} (best of {ROUNDS} each; median of the rounds' own "
        f"ratios {statistics.median(ratios):.3f}; live windows {best_live / best_enc:.3f}); "
        f"target >= 0.333"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
