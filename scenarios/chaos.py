"""Randomised chaos search: Hypothesis draws fault schedules, each runs in virtual time, and a
schedule that breaks an invariant is shrunk to a minimal one and written as a scenario file.

    feedlab chaos --vendor massive --client scenarios.naive:massive_forgets_subscriptions \\
        --examples 200 --seed 1 --out found.toml      # exit 1: found; `feedlab run found.toml`

The invariants are the headline ones of DESIGN.md principle 8, as scenario expectations (so the
file written reproduces the verdict under `feedlab run`): nothing lost silently, nothing
delivered twice, recovery within a bound, the subscriptions restored exactly (which also covers
the streams outside the loss accounting: aggregates, index prices, snapshots); plus the client
neither crashes nor hangs, each run bounded in virtual and in wall time.

Determinism: the search is a pure function of its settings. Hypothesis runs with a fixed seed and
no example database, and each run is a pure function of (scenario, seed) (the runner's promise),
so the same `--seed` explores the same schedules and finds the same minimal one.

Shrink-friendly generation: a schedule is a list of faults, each drawn from one strategy per
kind, in `SEARCH_ORDER` (Hypothesis shrinks towards the first kind of a `one_of`), with whole
seconds and small integers that shrink towards early times, short durations and the kinds'
defaults. So a minimal schedule reads: few faults, early, plain.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import trio
import trio.testing

from mocks.cli import UsageError, whole_number
from mocks.faults import KINDS, Fault, FaultError, parse_duration
from mocks.sim.market import MarketSettings
from mocks.vendors import VENDORS
from scenarios.model import ClientSpec, Scenario, ScenarioError, parse_scenario, scenario_to_toml

if TYPE_CHECKING:
    from hypothesis import strategies as st

    from scenarios.report import Report

# Hypothesis and the runner are imported where they are used: `feedlab` builds every
# subcommand's options (`add_arguments`) on each start, and should not pay for them.

# -- what is searched -----------------------------------------------------------------------------

SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {
    "massive": ("Q.O:SPY250321C00560000", "T.O:SPY250321C00560000"),
    "theta": ("option:quote:SPY:20250321:575:C", "option:trade:SPY:20250321:575:C"),
    "amberdata": (
        "market:options:trades:BTC-28MAR25-60000-C@deribit",
        "market:options:trades:ETH-28MAR25-2500-P@deribit",
        # Trades are sparse; a ticker every few seconds shows when the feed is back.
        "market:options:tickers:BTC-28MAR25-60000-C@deribit",
    ),
}
"""A few contracts per vendor, live on the default market day: enough traffic to see loss."""

SEARCH_ORDER: tuple[str, ...] = (
    # Abrupt ends of a connection first: the simplest faults a minimal schedule can use.
    "cut",
    "close",
    "reset",
    "evict",
    "slow_consumer",
    "force_disconnect",
    "stall",
    "restart",
    "upstream_outage",
    "heartbeat_stop",
    "withhold_pong",
    "oversize_frame",
    # Messages.
    "duplicate",
    "drop",
    "reorder",
    "corrupt",
    "sequence_jump",
    "sequence_regression",
    "stale",
    # Weather.
    "latency",
    "bandwidth",
    "slice",
    "fragment",
    # The market itself.
    "burst",
)
"""Every fault kind the search draws from, simplest first (the shrinker's direction)."""

ENDINGS = frozenset(SEARCH_ORDER[: SEARCH_ORDER.index("oversize_frame") + 1])
"""Kinds that end or interrupt the feed: the client has to reconnect or wait for data."""

NOT_SEARCHED: dict[str, str] = {
    "auth_failure": "a refused key is fatal by design: a client that stops is right to",
    "limits": "a plan change refuses subscriptions on purpose; the loss is announced, not chaos",
}
"""Kinds left out of the search, and why: a correct client cannot keep the invariants there."""

CLOSE_CODES = (1011, 1000, 1001, 1008, 1012, 1013, 4000)
CORRUPT_MODES = ("invalid_json", "wrong_type", "missing_field")
# A `restart`'s answers (mocks.faults.RESTART_ANSWERS) drawn for the vendors whose clients read
# the upgrade's HTTP status (Amberdata's: 401/403 is a refused key). Massive's and Theta's
# clients meet every failed connect alike, and drawing the answer for them cost the search the
# two-fault Theta flaw on 4 of 16 seeds within 200 examples (all 8 checked found without it).
# Not "none": in virtual time it only waits out the runner's connector, 10 s a try.
ANSWER_READERS = ("amberdata",)
SEARCHED_ANSWERS = ("refused", "503")


@dataclass(frozen=True)
class SearchSettings:
    """One chaos search. `factory` is "module:function" (None: the vendor's built-in client)."""

    vendor: str
    factory: str | None = None
    examples: int = 100
    seed: int = 0
    duration: float = 180.0  # virtual seconds per example
    max_faults: int = 4
    max_recovery: float = 60.0  # seconds; the recovery invariant's bound
    subscribe: tuple[str, ...] = ()  # default: SUBSCRIPTIONS[vendor]
    # Market time at t = 0 (None: the default market day's open), and whether the market
    # follows the exchanges' hours (a search across the close or overnight) or never closes.
    start: dt.datetime | None = None
    real_hours: bool = False
    wall_limit: float = 120.0  # wall seconds one example may take before it counts as a hang
    skip: tuple[str, ...] = ()  # fault kinds left out of this search
    shrink_runs: int = 200  # runs spent at most on shrinking a failure (a count, not a time)

    @property
    def subscriptions(self) -> tuple[str, ...]:
        return self.subscribe or SUBSCRIPTIONS[self.vendor]

    def expectations(self) -> dict[str, float]:
        return {
            "silent_loss": 0,
            "duplicates_delivered": 0,
            "max_recovery": self.max_recovery,
            "resubscribed_exactly": 1.0,
            "client_errors": 0,
        }


def kinds_for(vendor: str, skip: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The kinds searched for a vendor, in `SEARCH_ORDER`."""
    return tuple(
        name
        for name in SEARCH_ORDER
        if name not in skip and vendor in (KINDS[name].vendors or VENDORS)
    )


def _whole(low: int, high: int) -> st.SearchStrategy[float]:
    from hypothesis import strategies as st

    return st.integers(low, max(low, high)).map(float)


def _make(kind: str) -> Callable[..., Fault]:
    def make(
        at: float, duration: float | None = None, **params: Any
    ) -> Fault:  # one Fault per draw
        return Fault(kind=kind, at=at, duration=duration, params=params)

    return make


def fault_strategy(kind: str, duration: float, vendor: str) -> st.SearchStrategy[Fault]:
    """One fault of `kind` at a whole second within the first 60% of the run (recovery must be
    observable before the end), lasting at most a quarter of the run."""
    from hypothesis import strategies as st

    latest = max(1, int(duration * 0.6))
    longest = max(1, int(duration * 0.25))
    at = _whole(1, latest)
    lasting = _whole(1, longest)
    make = _make(kind)
    params: dict[str, st.SearchStrategy[Any]] = {}
    if kind == "close":
        params["code"] = st.sampled_from(CLOSE_CODES)
    elif kind == "stall":  # no duration: the socket stays half-open until the client gives up
        params["duration"] = st.none() | lasting
    elif kind == "restart":
        params["duration"] = lasting
        if vendor in ANSWER_READERS:
            params["answer"] = st.sampled_from(SEARCHED_ANSWERS)
    elif kind in ("upstream_outage", "heartbeat_stop", "withhold_pong", "stale"):
        params["duration"] = lasting
    elif kind in ("drop", "duplicate"):
        params["events"] = st.integers(1, 20)
    elif kind == "reorder":
        params["events"] = st.integers(1, 5)
        params["by"] = st.integers(2, 6)
    elif kind == "corrupt":
        params["mode"] = st.sampled_from(CORRUPT_MODES)
    elif kind == "sequence_jump":
        params["by"] = st.integers(1, 1_000_000)
    elif kind == "sequence_regression":
        params["by"] = st.integers(1, 50)
    elif kind == "latency":
        params["duration"] = lasting
        params["ms"] = _whole(0, 2000)
        params["jitter_ms"] = _whole(0, 500)
    elif kind == "bandwidth":
        params["duration"] = lasting
        params["bytes_per_second"] = _whole(16_384, 1_000_000)
    elif kind == "slice":
        params["duration"] = lasting
        params["bytes"] = st.integers(64, 4096)
        params["delay_ms"] = _whole(0, 5)
    elif kind == "fragment":
        params["duration"] = lasting
        params["size"] = st.integers(16, 1024)
    elif kind == "burst":
        params["duration"] = lasting
        params["factor"] = _whole(2, 20)
    return st.builds(make, at=at, **params)


def _as_is(fault: Fault) -> Fault:
    return fault


def schedule_strategy(
    vendor: str, duration: float, max_faults: int = 4, skip: tuple[str, ...] = ()
) -> st.SearchStrategy[list[Fault]]:
    """A fault schedule: one to `max_faults` faults of the vendor's kinds, drawn in three equal
    tiers: faults that end or interrupt any feed (`ENDINGS`), the vendor's own session faults
    (its known pain: Theta's upstream outage, Massive's slow-consumer kill), and the rest
    (messages, network weather). Reconnection logic is what the search is for, and the bugs
    worth finding often need two of the first tiers together (a reconnect, then an outage)."""
    from hypothesis import strategies as st

    kinds = kinds_for(vendor, skip)
    own = [k for k in kinds if KINDS[k].vendors is not None]
    tiers = [
        [k for k in kinds if k in ENDINGS and k not in own],
        own,
        [k for k in kinds if k not in ENDINGS and k not in own],
    ]
    # `.map` keeps Hypothesis from flattening the tiers into one uniform choice; shrinking
    # moves towards the first tier and the first kind in it.
    one = st.one_of(
        [
            st.one_of([fault_strategy(k, duration, vendor) for k in tier]).map(_as_is)
            for tier in tiers
            if tier
        ]
    )
    return st.lists(one, min_size=1, max_size=max_faults).map(_bursts_within_bounds)


# Bursts multiply: four of the drawn sizes at once made the market 65,000 times busier, and the
# example ran out of wall time in the mock, not the client (`feedlab chaos --vendor massive
# --seed 11`: a "hang"). A schedule keeps its bursts while their factors multiply to this at most
# (two of the largest drawn), and drops the rest.
MAX_BURST_PRODUCT = 400.0


def _bursts_within_bounds(faults: list[Fault]) -> list[Fault]:
    kept, product = [], 1.0
    for f in faults:
        if f.kind == "burst":
            factor = float(f.param("factor"))
            if product * factor > MAX_BURST_PRODUCT:
                continue
            product *= factor
        kept.append(f)
    return kept


def chronological(faults: list[Fault] | tuple[Fault, ...]) -> tuple[Fault, ...]:
    """A schedule as a scenario file lists it: by time, then by kind (a stable order)."""
    return tuple(sorted(faults, key=lambda f: (f.at or 0.0, SEARCH_ORDER.index(f.kind))))


def build_scenario(
    settings: SearchSettings, faults: list[Fault] | tuple[Fault, ...], description: str = ""
) -> Scenario:
    who = settings.factory or f"the built-in {settings.vendor} client"
    return Scenario(
        name=f"chaos-{settings.vendor}-seed{settings.seed}",
        description=description or f"A fault schedule from the chaos search against {who}.",
        vendor=settings.vendor,
        seed=settings.seed,
        duration=settings.duration,
        start=settings.start or MarketSettings().start,
        client=ClientSpec(subscribe=settings.subscriptions, factory=settings.factory),
        faults=chronological(faults),
        expect=settings.expectations(),
        market={"always_open": False} if settings.real_hours else {},
        mock={},
        source=None,
    )


# -- one example ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One example's verdict: the report (None if the run crashed or hung) and what broke."""

    report: Report | None
    problems: tuple[str, ...]

    @property
    def failed(self) -> bool:
        return bool(self.problems)


def problems_of(report: Report) -> tuple[str, ...]:
    """The broken expectations of a report, as "metric = actual (bound B)", and why the client
    stopped if it did."""
    broken = [
        f"{e.metric} = {_number(e.actual)} (bound {_number(e.bound)})"
        for e in report.expectations
        if not e.held
    ]
    if report.metrics.get("client_error"):
        broken.append(f"client stopped: {report.metrics['client_error']}")
    return tuple(broken)


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


MOCK_LOGGER = "feedlab.server"
"""Where the mock server reports a connection that failed for a reason of its own (a bug)."""


class _MockFailures(logging.Handler):
    """Collects the mock's connection failures of one run (and keeps their tracebacks off the
    terminal: the finding says what failed, and the scenario file reproduces it)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.failures: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        self.failures.append(_describe(error) if error is not None else record.getMessage())


def run_example(scenario: Scenario, wall_limit: float = 120.0) -> Outcome:
    """Run one scenario in virtual time, bounded in virtual time and in wall time: a run that
    outlives either bound is a hang. Virtual time alone cannot see a client that keeps the
    scheduler busy (autojump waits for every task to sleep), so a timer thread cancels the run
    through Trio's token once `wall_limit` seconds have passed."""
    from scenarios.runner import run_scenario

    virtual_limit = scenario.duration + scenario.settle + max(600.0, scenario.duration)
    expired = threading.Event()

    async def bounded() -> Report | None:
        token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:

            def expire() -> None:
                expired.set()
                scope.cancel()

            def on_timer() -> None:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(expire)

            timer = threading.Timer(wall_limit, on_timer)
            timer.daemon = True
            timer.start()
            try:
                with trio.move_on_after(virtual_limit):
                    return await run_scenario(scenario)
            finally:
                timer.cancel()
        return None

    mock_failures = _MockFailures()
    server_log = logging.getLogger(MOCK_LOGGER)
    server_log.addHandler(mock_failures)
    try:
        report = trio.run(bounded, clock=trio.testing.MockClock(autojump_threshold=0))
    except Exception as exc:  # the client's errors are in the report: this is the mock's
        return Outcome(None, (f"the mock or runner crashed: {_describe(exc)}",))
    finally:
        server_log.removeHandler(mock_failures)
    if mock_failures.failures:  # a bug of the mock on one connection: a finding all the same
        return Outcome(report, (f"the mock failed: {mock_failures.failures[0]}",))
    if report is None:
        spent = (
            f"{wall_limit:g} s of wall time"
            if expired.is_set()
            else (f"{virtual_limit:g} s of virtual time")
        )
        return Outcome(None, (f"hang: no result after {spent}",))
    return Outcome(report, problems_of(report))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _describe(exc.exceptions[0])
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- the search ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    scenario: Scenario  # the minimal failing schedule, with the invariants as expectations
    problems: tuple[str, ...]
    report: Report | None


@dataclass
class SearchResult:
    settings: SearchSettings
    examples: int = 0  # schedules run while searching (before the first failure, or all)
    faults: int = 0  # faults injected by those schedules (all survived when nothing was found)
    shrink_runs: int = 0  # runs spent shrinking a failure
    wall: float = 0.0
    finding: Finding | None = None
    reproduced: bool | None = None  # the scenario file, read back and run again, fails alike
    notes: list[str] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return self.examples + self.shrink_runs

    @property
    def runs_per_second(self) -> float:
        return self.runs / self.wall if self.wall > 0 else math.inf


class _Broken(Exception):
    """Raised from one place for every failing example, so Hypothesis sees one bug to shrink."""


@contextlib.contextmanager
def _hypothesis_constants_only() -> Iterator[None]:
    """Hypothesis (6.131 on) now and then draws a number found in the source of the project's
    modules loaded in the process. A search would then draw other schedules for the same seed
    depending on what else was imported before it (a test run, the client's own module) and
    on every number added to feedlab's code. Meanwhile it draws only Hypothesis' own."""
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants
    except ImportError:  # a Hypothesis without local constants, or with them moved
        yield
        return
    local = getattr(providers, "_get_local_constants", None)
    cache = getattr(providers, "CONSTANTS_CACHE", None)
    if local is None or cache is None:
        yield
        return
    none = Constants()
    providers._get_local_constants = lambda: none
    cache.cache.clear()  # what the project's constants allowed, per kind of draw
    try:
        yield
    finally:
        providers._get_local_constants = local
        cache.cache.clear()


def search(settings: SearchSettings, out: TextIO | None = None) -> SearchResult:
    """Search fault schedules; shrink the first failure to a minimal one and check that its
    scenario file, read back, fails the same way."""
    import hypothesis
    from hypothesis import HealthCheck, Phase, Verbosity
    from hypothesis.errors import Flaky

    result = SearchResult(settings)
    found: list[Finding] = []
    seen: dict[str, Outcome] = {}
    started = time.monotonic()

    @hypothesis.settings(
        max_examples=settings.examples,
        database=None,
        deadline=None,
        derandomize=False,
        phases=(Phase.generate, Phase.shrink),
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        print_blob=False,
    )
    @hypothesis.seed(settings.seed)
    @hypothesis.given(
        schedule_strategy(settings.vendor, settings.duration, settings.max_faults, settings.skip)
    )
    def probe(faults: list[Fault]) -> None:
        scenario = build_scenario(settings, faults)
        key = scenario_to_toml(scenario)
        outcome = seen.get(key)
        if outcome is None:  # a run is a pure function of its scenario: never run one twice
            if found and result.shrink_runs >= settings.shrink_runs:
                # Budget spent: report the rest as passing, so Hypothesis settles on the
                # smallest failure it has. A count, unlike Hypothesis' own time limit on
                # shrinking, keeps the search a pure function of its settings.
                return
            if found:
                result.shrink_runs += 1
            else:
                result.examples += 1
                result.faults += len(faults)
            outcome = seen[key] = run_example(scenario, settings.wall_limit)
        if out is not None and not found and result.examples % 10 == 0:
            print(f"  {result.examples} examples ...", file=out, flush=True)
        if outcome.failed:
            found.append(Finding(scenario, outcome.problems, outcome.report))
            raise _Broken("; ".join(outcome.problems))

    try:
        with _hypothesis_constants_only():
            probe()
    except _Broken:
        pass
    except Flaky as exc:  # a run that is not a pure function of its scenario: say so
        result.notes.append(f"Hypothesis saw a flaky example: {_describe(exc)}")
    result.wall = time.monotonic() - started
    if found:
        # Hypothesis runs its minimal example last; another one as small or smaller (in faults,
        # then in time) may have been seen on the way, and ties go to Hypothesis' choice.
        minimal = _leave_out(settings, min(found[-1:] + found, key=_size), seen, result)
        result.wall = time.monotonic() - started
        result.finding = _describe_finding(settings, minimal, result)
        again = run_example(
            parse_scenario(scenario_to_toml(result.finding.scenario), "<chaos>"),
            settings.wall_limit,
        )
        result.reproduced = again.problems == minimal.problems
    return result


def _leave_out(
    settings: SearchSettings, finding: Finding, seen: dict[str, Outcome], result: SearchResult
) -> Finding:
    """A last pass after Hypothesis: leave out each fault in turn and keep any schedule that
    still fails. It costs a few runs, and makes sure a shrink budget cut short never leaves a
    fault in that the failure does not need."""
    faults = list(finding.scenario.faults)
    index = 0
    while index < len(faults) and len(faults) > 1:
        trial = build_scenario(settings, faults[:index] + faults[index + 1 :])
        key = scenario_to_toml(trial)
        outcome = seen.get(key)
        if outcome is None:
            result.shrink_runs += 1
            outcome = seen[key] = run_example(trial, settings.wall_limit)
        if outcome.failed:
            faults = list(trial.faults)
            finding = Finding(trial, outcome.problems, outcome.report)
        else:
            index += 1
    return finding


def _size(finding: Finding) -> tuple[int, float]:
    return len(finding.scenario.faults), sum(f.at or 0.0 for f in finding.scenario.faults)


def _describe_finding(settings: SearchSettings, finding: Finding, result: SearchResult) -> Finding:
    who = f"--client {settings.factory}" if settings.factory else "the built-in client"
    description = (
        f"Found by `feedlab chaos --vendor {settings.vendor} --seed {settings.seed}"
        f"{_when(settings)}` "
        f"against {who} after {result.examples} examples; broke: {'; '.join(finding.problems)}."
    )
    scenario = build_scenario(settings, finding.scenario.faults, description)
    return Finding(scenario, finding.problems, finding.report)


def write_finding(result: SearchResult, path: Path) -> None:
    assert result.finding is not None
    path.write_text(scenario_to_toml(result.finding.scenario))


def summary(result: SearchResult) -> str:
    s = result.settings
    lines = []
    rate = f"{result.runs_per_second:.1f} examples/s"  # every run, shrinking included
    if result.finding is None:
        lines.append(
            f"nothing found in {result.examples} examples of {s.duration:g} s virtual, "
            f"{result.faults} faults survived ({result.wall:.1f} s wall, {rate})"
        )
    else:
        finding = result.finding
        lines.append(
            f"found after {result.examples} examples, shrunk in {result.shrink_runs} more runs "
            f"({result.wall:.1f} s wall, {rate})"
        )
        lines.append(f"minimal schedule: {len(finding.scenario.faults)} fault(s)")
        for f in finding.scenario.faults:
            timing = f"{f.at:g}s" if f.at is not None else "?"
            lasting = f" for {f.duration:g}s" if f.duration is not None else ""
            lines.append(f"  at {timing:>6}  {f.describe()}{lasting}")
        lines.append("broken: " + "; ".join(finding.problems))
        if result.reproduced is False:
            lines.append("warning: the scenario file, run again, did not fail the same way")
    lines.extend(f"note: {n}" for n in result.notes)
    return "\n".join(lines)


# -- the command ---------------------------------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        return parse_duration(text, "duration")
    except FaultError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`feedlab chaos`'s options (the CLI module wires the subcommand to `main`)."""
    parser.add_argument("--vendor", required=True, choices=VENDORS)
    parser.add_argument(
        "--client",
        default=None,
        metavar="MODULE:FUNCTION",
        help="client factory to test (default: the vendor's built-in client); "
        "e.g. scenarios.naive:massive_forgets_subscriptions",
    )
    parser.add_argument("--examples", type=whole_number, default=100, help="default 100")
    parser.add_argument("--seed", type=whole_number, default=0, help="default 0")
    parser.add_argument(
        "--duration", type=_seconds, default=180.0, help='virtual time per example (default "3m")'
    )
    parser.add_argument(
        "--max-faults", type=whole_number, default=4, help="faults per schedule (default 4)"
    )
    parser.add_argument(
        "--max-recovery",
        type=_seconds,
        default=60.0,
        help='the recovery invariant\'s bound (default "60s")',
    )
    parser.add_argument(
        "--subscribe",
        action="append",
        default=[],
        metavar="SUBSCRIPTION",
        help="what the client subscribes, in the vendor's syntax (repeatable; default: a few "
        "contracts of the default market day)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="KIND",
        help="leave this fault kind out of the search (repeatable)",
    )
    parser.add_argument(
        "--start",
        default=None,
        metavar="DATETIME",
        help="market time at the start of each example, with its UTC offset "
        "(default 2025-03-14T09:30:00-04:00)",
    )
    parser.add_argument(
        "--market-hours",
        choices=("always", "real"),
        default="always",
        help="always: data at any hour (default); real: follow the exchanges (with --start "
        "near 16:00 ET, a search across the close)",
    )
    parser.add_argument(
        "--out", required=True, metavar="FILE", help="where a failing scenario is written"
    )


def check_factory(text: str) -> None:
    """A one-line error for a --client that cannot be imported, before any example runs."""
    module_name, sep, function = text.partition(":")
    if not sep or not module_name or not function:
        raise UsageError(f"--client: expected module:function, got {text!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--client: cannot import {module_name!r}: {exc}") from None
    if not callable(getattr(module, function, None)):
        raise UsageError(f"--client: {module_name} has no function {function!r}")


def settings_from(args: argparse.Namespace) -> SearchSettings:
    if args.examples < 1:
        raise UsageError("--examples: at least 1")
    if args.max_faults < 1:
        raise UsageError("--max-faults: at least 1")
    if args.duration < 10:
        raise UsageError("--duration: at least 10s, so that a fault and a recovery fit")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"--out: no directory {str(out.parent)!r}")
    for kind in args.skip:
        if kind not in KINDS:
            raise UsageError(f"--skip: unknown fault kind {kind!r}; one of {', '.join(KINDS)}")
    if args.client is not None:
        check_factory(args.client)
    start = None
    if args.start is not None:
        try:
            start = dt.datetime.fromisoformat(args.start)
        except ValueError:
            raise UsageError(f"--start: not an ISO date-time: {args.start!r}") from None
        if start.utcoffset() is None:
            raise UsageError("--start: needs a UTC offset (e.g. 2025-03-14T15:58:00-04:00)")
    settings = SearchSettings(
        vendor=args.vendor,
        factory=args.client,
        examples=args.examples,
        seed=args.seed,
        duration=args.duration,
        max_faults=args.max_faults,
        max_recovery=args.max_recovery,
        subscribe=tuple(args.subscribe),
        skip=tuple(args.skip),
        start=start,
        real_hours=args.market_hours == "real",
    )
    if not kinds_for(settings.vendor, settings.skip):
        raise UsageError("--skip: no fault kind is left to search")
    try:  # the scenario every example builds on must be one `feedlab run` accepts
        parse_scenario(scenario_to_toml(build_scenario(settings, ())), "--subscribe")
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    return settings


def _when(settings: SearchSettings) -> str:
    """The market's start and hours of a search, as `feedlab chaos` options ("": defaults)."""
    when = f" --start {settings.start.isoformat()}" if settings.start is not None else ""
    return when + (" --market-hours real" if settings.real_hours else "")


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`feedlab chaos`: exit 1 with a scenario file written when a schedule broke an invariant,
    0 when none did. Bad input raises the CLI's UsageError (one line, exit 2)."""
    out = out or sys.stdout
    settings = settings_from(args)
    who = settings.factory or "the built-in client"
    kinds = ", ".join(kinds_for(settings.vendor, settings.skip))
    print(
        f"chaos: {settings.vendor}, {who}, seed {settings.seed}: up to {settings.examples} "
        f"schedules of {settings.duration:g} s virtual time{_when(settings)}\n  kinds: {kinds}",
        file=out,
        flush=True,
    )
    result = search(settings, out)
    print(summary(result), file=out)
    path = Path(args.out)
    if result.finding is None:
        print(f"{path} not written", file=out)
        return 0
    write_finding(result, path)
    print(f"wrote {path}; reproduce with: feedlab run {path}", file=out)
    return 1
