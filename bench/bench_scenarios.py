"""Virtual-time speed-up of a scenario run: simulated seconds per wall second for one market
hour of 200 Massive contracts (quotes and trades) with 5 faults, mock and built-in client in
one process over in-memory streams. The issue's target is at least 60x on a 2-core machine;
printed, never asserted (CI does not judge wall-clock speed). The machine is shared, so the
speed-up is also given per CPU second of this process (what it would be with a core to itself).

Then the chaos search's examples per second for each vendor's built-in client (`feedlab chaos
--vendor V --examples 20 --seed 0`: Hypothesis draws fault schedules of 3 virtual minutes, each
run in virtual time), and what that is in simulated seconds per wall second.

    .venv/bin/python bench/bench_scenarios.py [--chaos-examples 20] [--skip-hour]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time

from mocks.faults import fault
from mocks.sim.clock import EASTERN
from scenarios.chaos import SearchSettings, search
from scenarios.model import ClientSpec, Scenario
from scenarios.runner import run_scenario_sync

CONTRACTS = 200
HOUR = 3600.0


def scenario() -> Scenario:
    tickers = [f"O:SPY250321{'CP'[n % 2]}{(450_000 + 5_000 * (n // 2)):08d}" for n in range(100)]
    tickers += [f"O:QQQ250321{'CP'[n % 2]}{(400_000 + 5_000 * (n // 2)):08d}" for n in range(100)]
    subscribe = tuple(f"{channel}.{t}" for t in tickers[:CONTRACTS] for channel in ("Q", "T"))
    return Scenario(
        name="bench-massive-hour",
        description="One market hour, 200 contracts, 5 faults.",
        vendor="massive",
        seed=1,
        duration=HOUR,
        start=dt.datetime(2025, 3, 14, 10, 0, tzinfo=EASTERN),
        client=ClientSpec(subscribe=subscribe),
        faults=(
            # Off the round seconds: a fault landing on the instant of a client ping hits a
            # mock bug (a pong while closing kills the server), and a stall without end makes
            # a later restart refuse forever: both reported to the lead.
            fault("close", at="301.3s", code=1011),
            fault("cut", at="903.7s"),
            fault("stall", at="1501.1s", duration="60s"),
            fault("slow_consumer", at="2403.9s"),
            fault("restart", at="3001.7s", duration="10s"),
        ),
        expect={"silent_loss": 0},
        market={},
        mock={},
    )


def hour() -> None:
    s = scenario()
    started, cpu_started = time.perf_counter(), time.process_time()
    report = run_scenario_sync(s)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    simulated = s.duration + s.settle
    print(f"scenario: {s.name}: {CONTRACTS} contracts, {len(s.faults)} faults")
    print(f"  {report.summary_line()}")
    print(
        f"  simulated {simulated:.0f} s in {wall:.2f} s wall: "
        f"{simulated / wall:.0f}x virtual-time speed-up (target >= 60x); "
        f"{simulated / cpu:.0f}x per CPU second ({cpu:.2f} s CPU)"
    )


def chaos(examples: int) -> None:
    """Examples per second of the chaos search against each vendor's built-in client (which
    survives: every example runs to its end, none is spent shrinking)."""
    print(f"chaos search: {examples} examples per vendor, built-in clients, seed 0")
    for vendor in ("massive", "theta", "amberdata"):
        settings = SearchSettings(vendor=vendor, examples=examples, seed=0)
        cpu_started = time.process_time()
        result = search(settings)
        cpu = time.process_time() - cpu_started
        simulated = result.runs * settings.duration
        found = "found a failure" if result.finding is not None else "nothing found"
        print(
            f"  {vendor:<9} {result.runs} runs in {result.wall:.1f} s wall: "
            f"{result.runs_per_second:.1f} examples/s ({result.runs / cpu:.1f} per CPU second), "
            f"{simulated / result.wall:.0f}x virtual time; {found}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--chaos-examples", type=int, default=20)
    parser.add_argument("--skip-hour", action="store_true", help="only the chaos search")
    args = parser.parse_args()
    if not args.skip_hour:
        hour()
    chaos(args.chaos_examples)


if __name__ == "__main__":
    main()
