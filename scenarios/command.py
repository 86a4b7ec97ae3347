"""`feedlab run SCENARIO... --command CMD`: each scenario against a client in another process
(any language), unchanged but for where it connects.

For each scenario the mock serves it as `feedlab serve --scenario` does (real clock, TCP on
127.0.0.1, a free port), starts CMD through the shell with `{url}` replaced by the mock's URL and
the environment telling it the rest (FEEDLAB_URL, FEEDLAB_API_KEY, FEEDLAB_SUBSCRIBE: the
scenario's `[client]` subscriptions, comma-separated). The play starts when the client first
subscribes; after the scenario's `duration` and `settle` the client gets SIGTERM (SIGKILL 5 s
later), and the server's view judges the expectations a server can count.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

import trio

from scenarios.external import serve_scenario
from scenarios.model import Scenario
from scenarios.server_view import ServerView

SUBSCRIBE_WITHIN = 60.0  # seconds for the client to start and subscribe before we give up
KILL_AFTER = 5.0  # seconds between SIGTERM and SIGKILL


@dataclass
class CommandRun:
    """One scenario against the command: the server's view and how the client ended."""

    view: ServerView
    exit_code: int | None  # None: still running at the end (then stopped by us)
    exited_at: float | None  # seconds after the start, when it ended by itself
    subscribed: bool

    @property
    def passed(self) -> bool:
        return self.subscribed and self.view.passed()

    def to_json(self) -> dict[str, Any]:
        return self.view.to_json() | {
            "command_exit_code": self.exit_code,
            "command_exited_at": self.exited_at,
            "subscribed": self.subscribed,
            "passed": self.passed,
        }

    def summary_line(self) -> str:
        name = self.view.scenario
        if not self.subscribed and self.exit_code is not None:
            return f"{name}: FAIL (the command exited {self.exit_code} before it subscribed)"
        if not self.subscribed:
            return f"{name}: FAIL (the command never subscribed within {SUBSCRIBE_WITHIN:g} s)"
        judged = self.view.judged()
        broken = [e.metric for e in judged if not e.held]
        verdict = "pass" if self.passed else f"FAIL ({', '.join(broken)})"
        ended = "" if self.exit_code is None else f"; the command exited {self.exit_code} by itself"
        return f"{name}: {verdict}, {len(judged)} bound(s) judged by the server{ended}"


def client_environment(s: Scenario, url: str) -> dict[str, str]:
    from scenarios.runner import client_key

    return {
        "FEEDLAB_URL": url,
        "FEEDLAB_API_KEY": client_key(s),
        "FEEDLAB_SUBSCRIBE": ",".join(s.client.subscribe),
    }


async def run_command_scenario(s: Scenario, command: str) -> CommandRun:
    stop = trio.Event()
    exit_code: int | None = None
    exited_at: float | None = None
    async with trio.open_nursery() as nursery:
        sigterm_watch = trio.CancelScope()
        nursery.start_soon(_interrupt_on_sigterm, sigterm_watch)
        view: ServerView = await nursery.start(
            functools.partial(serve_scenario, s, "127.0.0.1", 0, stop=stop, max_plays=1)
        )
        began = trio.current_time()
        env = {**os.environ, **client_environment(s, view.url)}
        process = await trio.lowlevel.open_process(
            command.replace("{url}", view.url), shell=True, env=env, start_new_session=True
        )
        try:
            with trio.move_on_after(SUBSCRIBE_WITHIN):
                while not view.plays and process.returncode is None:
                    await trio.sleep(0.05)
            subscribed = bool(view.plays)
            if subscribed:  # a little past the play's end, where the view judges it
                with trio.move_on_after(s.duration + s.settle + 0.2):
                    await process.wait()
            if process.returncode is not None:
                exit_code = process.returncode
                exited_at = round(trio.current_time() - began, 3)
        finally:
            with trio.CancelScope(shield=True):
                await _stop(process)
            stop.set()  # serve_scenario takes its last look and returns
            sigterm_watch.cancel()
    return CommandRun(view, exit_code, exited_at, subscribed)


async def _interrupt_on_sigterm(scope: trio.CancelScope) -> None:
    """SIGTERM (a CI job's timeout) as Ctrl-C: the command is stopped on the way out, not left
    running in its own session."""
    with scope, trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            raise KeyboardInterrupt


async def _stop(process: trio.Process) -> None:
    """SIGTERM to the command's whole process group (a shell and what it started), then
    SIGKILL if it is still there `KILL_AFTER` seconds later."""
    if process.returncode is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with trio.move_on_after(KILL_AFTER):
        await process.wait()
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    await process.wait()


def run_with_command(scenarios: list[Scenario], command: str) -> list[CommandRun]:
    runs = []
    for s in scenarios:
        run = trio.run(run_command_scenario, s, command)
        sys.stdout.write(run.view.summary())
        print(run.summary_line(), file=sys.stderr, flush=True)
        runs.append(run)
    passed = sum(run.passed for run in runs)
    print(f"{passed} of {len(runs)} scenarios passed (judged by the server)", flush=True)
    return runs
