"""`feedlab run` and `feedlab serve --scenario`: the command-line side of scenarios.

Bad scenario files are the user's input: one line naming file, key and problem, exit code 2
(raised as the CLI's `UsageError`). `run` exits 0 only when every expectation of every scenario
held, 1 otherwise.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import ssl
import sys
from collections.abc import Mapping
from pathlib import Path

from mocks.cli import UsageError
from scenarios.model import Scenario, ScenarioError, load_scenario
from scenarios.report import Report, render_table, write_reports


def load_all(paths: list[str]) -> list[Scenario]:
    try:
        return [load_scenario(p) for p in paths]
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None


def run_command(
    paths: list[str],
    seed: int | None,
    report: str | None,
    realtime: bool,
    command: str | None = None,
) -> int:
    from scenarios.runner import load_factory, run_scenario_sync

    scenarios = load_all(paths)
    if report is not None and not Path(report).parent.is_dir():
        raise UsageError(f"--report: no such directory: {Path(report).parent}")
    if command is not None:
        return _run_with_command(scenarios, seed, report, command)
    try:
        for s in scenarios:
            load_factory(s)  # a missing client factory is a bad file, found before any run
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    reports: list[Report] = []
    for s in scenarios:
        result = run_scenario_sync(s, seed=seed, realtime=realtime)
        print(result.summary_line(), file=sys.stderr, flush=True)
        reports.append(result)
    sys.stdout.write(render_table(reports))
    if report is not None:
        write_reports(reports, report)
    return 0 if all(r.passed for r in reports) else 1


def _run_with_command(
    scenarios: list[Scenario], seed: int | None, report: str | None, command: str
) -> int:
    """`run --command`: each scenario against a client in another process."""
    import orjson

    from scenarios.command import run_with_command

    if not command.strip():
        raise UsageError("--command: empty")
    if report is not None and not report.endswith(".json"):
        raise UsageError("--report with --command: a .json file (the server's views)")
    if seed is not None:
        scenarios = [dataclasses.replace(s, seed=seed) for s in scenarios]
    runs = run_with_command(scenarios, command)
    if report is not None:
        views = [r.to_json() for r in runs]
        Path(report).write_bytes(orjson.dumps(views, option=orjson.OPT_INDENT_2) + b"\n")
    return 0 if all(r.passed for r in runs) else 1


def serve_command(
    vendor: str,
    path: str,
    report: str | None,
    host: str,
    port: int | None,
    ssl_context: ssl.SSLContext | None = None,
    *,
    seed: int | None = None,
    start: dt.datetime | None = None,
    market: Mapping[str, object] | None = None,
    api_keys: tuple[str, ...] = (),
) -> int:
    """Serve one scenario file; what the command line gives instead of the file's (a seed, a
    start, market settings, the keys to accept) replaces it."""
    import trio

    from mocks.vendors import VENDORS
    from scenarios.external import serve_scenario

    if vendor not in VENDORS:
        raise UsageError(f"unknown vendor {vendor!r}; choose from {', '.join(VENDORS)}")
    (scenario,) = load_all([path])
    if scenario.vendor != vendor:
        raise UsageError(f"{path}: vendor: the scenario is for {scenario.vendor}, not {vendor}")
    scenario = dataclasses.replace(
        scenario,
        seed=scenario.seed if seed is None else seed,
        start=scenario.start if start is None else start,
        market={**scenario.market, **(market or {})},
        mock={**scenario.mock, "api_keys": list(api_keys)} if api_keys else scenario.mock,
    )
    if report is not None and not Path(report).parent.is_dir():
        raise UsageError(f"--report: no such directory: {Path(report).parent}")
    try:
        view = trio.run(
            functools.partial(serve_scenario, scenario, host, port, ssl_context=ssl_context)
        )
    except OSError as exc:
        print(f"feedlab: error: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 2
    sys.stdout.write(view.summary())
    if report is not None:
        view.write(report)
    return 0
