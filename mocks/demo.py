"""`feedlab demo` (what `make demo` runs): the whole product in under a minute.

1. The market: a virtual minute of the simulated market in each vendor's symbology.
2. The flagship scenarios of the library against the three built-in clients, in virtual time,
   each line saying what ran, the events per second, and the faults as they fired.
3. The chaos search against a deliberately flawed client: the minimal failing schedule it found.
4. The report table, and where the HTML report was written.

Plain text only, so it reads the same piped into a file as on a terminal.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import TextIO

from mocks.sim.clock import EASTERN, eastern_date_and_ms
from mocks.sim.events import OptionQuote
from mocks.sim.market import MarketSettings, MarketSim
from mocks.sim.symbols import format_deribit, format_occ, parse_deribit, parse_occ, to_theta

LIBRARY = Path(__file__).resolve().parent.parent / "scenarios" / "library"
FLAGSHIPS = (
    "massive-disconnect-storm",
    "massive-half-open-socket",
    "massive-max-connections-eviction",
    "theta-upstream-outage",
    "theta-reused-request-id",
    "amberdata-resubscribe-new-ids",
    "amberdata-stalled-socket",
)
NAIVE_CLIENT = "scenarios.naive:massive_forgets_subscriptions"
START = dt.datetime(2025, 3, 14, 9, 30, tzinfo=EASTERN)


def run_demo(seed: int, out: TextIO, report_dir: Path | None = None) -> int:
    began = time.monotonic()
    print(f"feedlab demo (seed {seed})", file=out)
    _market(seed, out)
    reports = _scenarios(seed, out)
    minimal = _chaos(seed, out)
    from scenarios.report import render_table, write_reports

    print("\n== 4. The report", file=out)
    out.write(render_table(reports))
    where = (report_dir or Path("reports")) / "demo.html"
    where.parent.mkdir(parents=True, exist_ok=True)
    write_reports(reports, where)
    print(
        f"HTML report (timelines of connections, faults, event rates, gap notices): {where}",
        file=out,
    )
    passed = all(r.passed for r in reports)
    print(
        f"\n{sum(r.passed for r in reports)} of {len(reports)} scenarios held; chaos found the "
        f"flawed client's bug{' in ' + str(len(minimal.faults)) + ' fault(s)' if minimal else ''}"
        f"; {time.monotonic() - began:.0f} s in all",
        file=out,
    )
    return 0 if passed and minimal is not None else 1


def _market(seed: int, out: TextIO) -> None:
    print("\n== 1. The market: one virtual minute, each vendor's symbology", file=out)
    sim = MarketSim(MarketSettings(seed=seed, start=START))
    contracts = [
        parse_occ("O:SPY250321C00575000"),
        parse_occ("O:SPXW250314C05600000"),
        parse_deribit("BTC-28MAR25-60000-C"),
    ]
    for contract in contracts:
        sim.watch(contract)
    sim.watch_underlying("SPX")
    events = sim.advance(60.0)
    last = {e.contract: e for e in events if isinstance(e, OptionQuote)}
    spy, spxw, btc = (last[c] for c in contracts)
    root, expiration, strike, right = to_theta(spxw.contract)
    date, ms_of_day = eastern_date_and_ms(spxw.ts_ns)
    print(f"  {len(events):,} events; last quotes:", file=out)
    print(
        f"  Massive    {format_occ(spy.contract):<22} bid {spy.bid:.2f} x {spy.bid_size} "
        f"ask {spy.ask:.2f} x {spy.ask_size}  q={spy.sequence}",
        file=out,
    )
    print(
        f"  Theta      {root} {expiration} {strike} {right}  bid {spxw.bid:.2f} ask "
        f"{spxw.ask:.2f}  date={date} ms_of_day={ms_of_day}",
        file=out,
    )
    print(
        f"  Amberdata  {format_deribit(btc.contract):<22} bid {btc.bid:.4f} ask {btc.ask:.4f} "
        "(BTC)",
        file=out,
        flush=True,
    )


def _scenarios(seed: int, out: TextIO) -> list:  # type: ignore[type-arg]
    from scenarios.model import load_scenario
    from scenarios.runner import run_scenario_sync

    print(
        "\n== 2. Flagship scenarios against the built-in clients (virtual time)",
        file=out,
        flush=True,
    )
    reports = []
    for name in FLAGSHIPS:
        scenario = load_scenario(LIBRARY / f"{name}.toml")
        print(
            f"  running {name}: {scenario.duration:g} s of {scenario.vendor} market ...",
            file=out,
            end="",
            flush=True,
        )
        report = run_scenario_sync(scenario)
        wall = float(report.wall.get("elapsed_s") or 0.0)
        delivered = report.metrics.get("delivered", 0)
        rate = f"{delivered / wall:,.0f} events/s delivered, " if wall else ""
        print(
            f" {'pass' if report.passed else 'FAIL'} ({rate}"
            f"{report.wall.get('speedup')}x real time)",
            file=out,
        )
        for fault in report.faults:
            params = " ".join(f"{k}={v}" for k, v in sorted(fault.get("params", {}).items()))
            print(f"      at {fault['time']:>7.1f}s  {fault['kind']} {params}".rstrip(), file=out)
        print(
            f"      silent loss {report.metrics.get('silent_loss')}, covered by gap notices "
            f"{report.metrics.get('covered_loss')}, reconnects "
            f"{report.metrics.get('reconnects')}, max recovery "
            f"{float(report.metrics.get('max_recovery') or 0):.2f} s",
            file=out,
            flush=True,
        )
        reports.append(report)
    return reports


def _chaos(seed: int, out: TextIO):  # type: ignore[no-untyped-def]
    from scenarios.chaos import SearchSettings, search
    from scenarios.model import scenario_to_toml

    print(f"\n== 3. Chaos search against a flawed client ({NAIVE_CLIENT})", file=out, flush=True)
    settings = SearchSettings(vendor="massive", factory=NAIVE_CLIENT, examples=200, seed=seed)
    result = search(settings)
    if result.finding is None:
        print("  nothing found (unexpected: this client does not resubscribe)", file=out)
        return None
    print(
        f"  found after {result.examples} example(s), shrunk in {result.shrink_runs} more "
        f"run(s): {'; '.join(result.finding.problems)}",
        file=out,
    )
    print("  the minimal failing scenario (feedlab run reproduces it):", file=out)
    for line in scenario_to_toml(result.finding.scenario).splitlines():
        print(f"    {line}", file=out)
    return result.finding.scenario
