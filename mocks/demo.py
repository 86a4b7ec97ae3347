"""`feedlab demo` (what `make demo` runs): one virtual trading hour of the simulated market,
summarised — events per kind, sample quotes in each vendor's symbology, and the seed that
reproduces it all."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections import Counter
from typing import TextIO

from mocks.sim.chains import chain
from mocks.sim.clock import EASTERN, eastern_date_and_ms, from_unix_ns
from mocks.sim.events import IndexPrice, OptionQuote
from mocks.sim.market import MarketSettings, MarketSim
from mocks.sim.symbols import format_deribit, format_occ, parse_deribit, parse_occ, to_theta

START = dt.datetime(2025, 3, 14, 9, 30, tzinfo=EASTERN)
# The vendors' own documentation examples: expired in real life, streaming here by default.
DOC_EXAMPLES = ("O:SPY251219C00650000", "BTC-24JUN22-15000-P")


def run_demo(seed: int, out: TextIO) -> int:
    began = time.perf_counter()
    sim = MarketSim(MarketSettings(seed=seed, start=START, always_open=False))
    today = START.date()
    contracts = [
        *chain("SPY", today, sim.underlying_price("SPY"), expirations_count=2),
        *chain("SPXW", today, sim.underlying_price("SPX"), expirations_count=1),
        *chain("BTC", today, sim.underlying_price("BTC"), expirations_count=1, strikes_each_side=3),
    ]
    contracts += [parse_occ(DOC_EXAMPLES[0]), parse_deribit(DOC_EXAMPLES[1])]
    for contract in contracts:
        sim.watch(contract)
    sim.watch_underlying("SPX")
    events = sim.advance(3600.0)
    elapsed = time.perf_counter() - began

    kinds = Counter(type(e).__name__ for e in events)
    digest = hashlib.sha256(repr(events).encode()).hexdigest()[:16]
    print(
        f"feedlab demo: one virtual trading hour from {START:%Y-%m-%d %H:%M %Z}, seed {seed}",
        file=out,
    )
    print(
        f"  {len(contracts)} contracts, {len(events):,} events in {elapsed:.1f} s wall "
        f"(stream hash {digest})",
        file=out,
    )
    for kind, count in sorted(kinds.items()):
        print(f"  {kind:<15} {count:>10,}", file=out)
    quotes = [e for e in events if isinstance(e, OptionQuote)]
    spy = next(q for q in reversed(quotes) if q.contract.root == "SPY")
    spxw = next(q for q in reversed(quotes) if q.contract.root == "SPXW")
    btc = next(q for q in reversed(quotes) if q.contract.root == "BTC")
    print("  last quotes, in each vendor's symbology:", file=out)
    print(
        f"    Massive   {format_occ(spy.contract):<24} bid {spy.bid:>8.2f} x {spy.bid_size:<5}"
        f" ask {spy.ask:>8.2f} x {spy.ask_size:<5} q={spy.sequence}",
        file=out,
    )
    root, expiration, strike, right = to_theta(spxw.contract)
    date, ms_of_day = eastern_date_and_ms(spxw.ts_ns)
    print(
        f"    Theta     {root} {expiration} {strike} {right:<5} bid {spxw.bid:>8.2f} ask "
        f"{spxw.ask:>8.2f} date={date} ms_of_day={ms_of_day}",
        file=out,
    )
    print(
        f"    Amberdata {format_deribit(btc.contract):<24} bid {btc.bid:>8.4f} ask "
        f"{btc.ask:>8.4f} (BTC)",
        file=out,
    )
    index = [e for e in events if isinstance(e, IndexPrice)]
    if index:
        last = index[-1]
        print(
            f"  SPX price reports: {len(index):,}, last {last.price:.2f} at "
            f"{from_unix_ns(last.ts_ns, EASTERN):%H:%M:%S} ET",
            file=out,
        )
    print(f"  reproduce: feedlab demo --seed {seed}", file=out)
    return 0
