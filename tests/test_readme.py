"""Every code block of README.md runs (issue 8, "README cookbook").

The blocks are read from the README itself, so an edited or added snippet is tested as it now
reads. Each kind runs in the way that proves it works:
- Python scripts run in a subprocess against background mocks; where a snippet names a vendor's
  default port (8765, 25520, 8766) the mock gets a free port and the text is rewritten to it.
  Snippets that loop forever are stopped once they have printed a data message.
- Python snippets that are pytest tests run in pytest's `pytester`.
- `feedlab ...` / `make ...` commands are parsed (every one), then run from a temporary
  directory that looks like the repository (scenarios/ and recordings/ linked in), with port 0,
  bounded in time, checking exit codes. Those that cannot run here are in PARSE_ONLY, with why.
  The one-shot commands (`run`, `chaos`, `verify`) start together when the module starts, so
  their seconds overlap with the other tests.
- TOML blocks load with the scenario loader.
Snippets that cannot run as written are in KNOWN_GAPS (strict xfail: once the README is fixed
the entry must go), commands in COMMAND_FIXES; the test runs the proposed fixes instead
(SNIPPET_FIXES, COMMAND_FIXES), so they are known to work when the README takes them.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FEEDLAB = ROOT / ".venv" / "bin" / "feedlab"

# The vendors' default ports as the README writes them.
DEFAULT_PORTS = {8765: "massive", 25520: "theta", 8766: "amberdata"}

# -- what the README cannot do as written -------------------------------------------------------

# Snippets that do not run as written, by a string only that snippet contains: the reason.
# Each one is a strict xfail, so fixing the README makes the test fail until the entry is deleted.
KNOWN_GAPS: dict[str, str] = {}

# What the test runs instead of a KNOWN_GAPS snippet, to show that the proposed fix works.
SNIPPET_FIXES: dict[str, str] = {}

# Commands that do not work as written, by their text (without `.venv/bin/`): what the test runs
# instead (the proposed fix). Why: the Amberdata trades of one option are rare, a reader watching
# them saw only the `connected` status for 20 s; snapshots come within a second.
COMMAND_FIXES: dict[str, str] = {}

# Commands that are parsed (argument validity) but not run, by how their text starts: the reason.
PARSE_ONLY: dict[str, str] = {
    "make demo": "the demo takes up to a minute (more than this file's budget)",
    "make test": "runs the whole suite, this file included",
    "feedlab run scenarios/library/*.toml": "the whole library takes longer than this file's "
    "budget; tests/test_scenario_library.py runs every library file",
    "feedlab record massive --upstream wss://socket.massive.com/options": "needs the live service",
    "feedlab run scenarios/library/massive-*.toml --command": "runs the reader's own client "
    "(./my-handler); tests/test_scenario_cli.py runs a command of its own",
    "feedlab record amberdata --upstream wss://ws.amberdata.com/options": "needs the live service",
}

# Files the commands name that the reader is assumed to have: where the test gets them.
PLACEHOLDER_FILES = {
    "massive-2025-03-14.jsonl.gz": "recordings/massive-synthetic-seed7.jsonl.gz",
}
PLACEHOLDER_ARGS = {
    "scenarios/library/X.toml": "scenarios/library/massive-disconnect-storm.toml",
}

# `my.toml`, the reader's own scenario in the command examples: short enough for --realtime.
MY_SCENARIO = """\
name = "my-scenario"
vendor = "massive"
duration = "2s"
settle = "1s"

[client]
subscribe = ["Q.O:SPY250321C00560000"]

[[fault]]
kind = "close"
at = "1s"
code = 1011

[expect]
silent_loss = 0
"""

# Exit codes that the command's own comment does not state (`# exit 1: ...`).
EXIT_CODES = {"feedlab run found.toml": 1}

# What a script snippet must print to prove it worked, by a string only that snippet contains:
# (a regular expression over its output, whether it loops forever and is stopped once it matched).
SCRIPT_OUTPUT: dict[str, tuple[str, bool]] = {
    "WebSocketClient(": (r"EquityQuote\(", True),
    '"sec_type": "INDEX"': (r'"header":\s*\{[^}]*"type":\s*"TRADE"', True),
    '"x-api-key": "UAK-demo"': (r'"method":\s*"subscription"', False),
    'url="ws://127.0.0.1:8765/options"': (r"Quote\(", True),
    "open_replay(": (r"Quote\(", False),
    "mocks.background(": (r"closed with 1011\n\('Q\.O:SPY250321C00560000',\)", False),
}


# -- reading the README ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Snippet:
    lang: str  # the fence's tag; "" untagged; "indented" for a four-space block
    text: str
    line: int  # of its first line of code
    heading: str

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")[:40]
        return f"L{self.line}-{slug}"

    @property
    def kind(self) -> str:
        text = self.text
        first = text.lstrip().split("\n", 1)[0]
        if self.lang == "toml":
            return "toml"
        if self.lang == "python" or (
            self.lang == "indented" and re.match(r"(from|import|async|def) ", first)
        ):
            return "pytest" if re.search(r"^(async )?def test_", text, re.M) else "script"
        if commands(self):
            return "commands"
        if "-- feedlab --" in text:
            return "failure_report"
        if first.startswith("mocks/"):
            return "layout"
        return "unknown"


def read_snippets(path: Path = README) -> list[Snippet]:
    lines = path.read_text(encoding="utf-8").split("\n")
    snippets: list[Snippet] = []
    heading = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"```(\w*)\s*$", line)
        if fence:
            end = i + 1
            while not lines[end].startswith("```"):
                end += 1
            text = "\n".join(lines[i + 1 : end]) + "\n"
            snippets.append(Snippet(fence.group(1), text, i + 2, heading))
            i = end + 1
            continue
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("    ") and line.strip() and (i == 0 or not lines[i - 1].strip()):
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            while not lines[end - 1].strip():
                end -= 1
            text = "\n".join(x[4:] for x in lines[i:end]) + "\n"
            snippets.append(Snippet("indented", text, i + 1, heading))
            i = end
            continue
        i += 1
    return snippets


@dataclass(frozen=True)
class Command:
    text: str  # as written, continuation lines joined, without the comment
    argv: tuple[str, ...]
    comment: str

    @property
    def program(self) -> str:
        return "make" if self.argv[0] == "make" else "feedlab"

    @property
    def args(self) -> list[str]:
        """The feedlab (or make) arguments, after the program name."""
        return list(self.argv[1:])

    @property
    def key(self) -> str:
        """The text with `.venv/bin/` dropped, as the PARSE_ONLY and EXIT_CODES tables name it."""
        return self.text.removeprefix(".venv/bin/")


def commands(snippet: Snippet) -> list[Command]:
    if snippet.lang not in ("sh", "", "indented"):
        return []
    out = []
    joined = re.sub(r"\\\n\s*", "", snippet.text)
    for raw in joined.split("\n"):
        code, _, comment = raw.partition(" #")
        if code.split(" ", 1)[0] not in ("feedlab", ".venv/bin/feedlab", "make"):
            continue  # output shown after a command, or not a command at all
        argv = shlex.split(code, comments=True)
        if argv:
            out.append(Command(" ".join(code.split()), tuple(argv), comment.strip()))
    return out


SNIPPETS = read_snippets()


def of_kind(kind: str) -> list[object]:
    params: list[object] = []
    for s in SNIPPETS:
        if s.kind != kind:
            continue
        gap = next((reason for marker, reason in KNOWN_GAPS.items() if marker in s.text), None)
        marks = [pytest.mark.xfail(reason=f"known README gap: {gap}", strict=True)] if gap else []
        params.append(pytest.param(s, id=s.id, marks=marks))
    return params


def test_every_snippet_has_a_runner() -> None:
    kinds = [s.kind for s in SNIPPETS]
    unknown = [s.id for s in SNIPPETS if s.kind == "unknown"]
    assert unknown == [], f"README blocks this module cannot run: {unknown}"
    assert len(SNIPPETS) >= 20 and kinds.count("script") >= 5 and kinds.count("pytest") >= 4
    scripts = [s for s in SNIPPETS if s.kind == "script"]
    for marker in KNOWN_GAPS:  # stale entries go
        assert sum(marker in s.text for s in SNIPPETS) == 1, marker
    for marker in SCRIPT_OUTPUT:
        assert sum(marker in s.text for s in scripts) == 1, marker
    keys = {c.key for s in SNIPPETS for c in commands(s)}
    assert all(any(k.startswith(p) for k in keys) for p in PARSE_ONLY)
    assert set(EXIT_CODES) <= keys and set(COMMAND_FIXES) <= keys
    assert set(SNIPPET_FIXES) == set(KNOWN_GAPS)


# -- processes -------------------------------------------------------------------------------------


class Process:
    """A child process whose output is collected as it comes (so a wait never blocks on a
    full pipe, and a test can stop a program that runs forever once it has said enough)."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
        self.argv = argv
        self.popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout = ""
        self.stderr = ""
        self._lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._read, args=(self.popen.stderr, "stderr"), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: object, name: str) -> None:
        assert hasattr(stream, "readline")
        for line in iter(stream.readline, ""):
            with self._lock:
                setattr(self, name, getattr(self, name) + line)

    def wait_for(self, done: Callable[[str], bool], timeout: float) -> bool:
        """Wait until `done(stdout)` or the process ends; whether `done` came true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if done(self.stdout):
                    return True
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        for reader in self._readers:
            reader.join(1)
        return done(self.stdout)

    def finish(self, timeout: float) -> int:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.argv} did not finish in {timeout:g}s: {self}") from None
        for reader in self._readers:
            reader.join(5)
        return code

    def interrupt(self, timeout: float = 10) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.finish(timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)

    def __str__(self) -> str:
        return f"\n--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


def start_mocks(stack: ExitStack, text: str) -> str:
    """Serve a background mock for every default port `text` names; `text` rewritten to them."""
    import mocks

    for port, vendor in DEFAULT_PORTS.items():
        if f"127.0.0.1:{port}" in text:
            mock = stack.enter_context(mocks.background(vendor))
            text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{mock.port}")
    return text


# -- Python snippets -------------------------------------------------------------------------------


@pytest.mark.parametrize("snippet", of_kind("script"))
def test_python_snippet_runs(snippet: Snippet, processes: list[Process]) -> None:
    run_script(snippet.text, processes)


@pytest.mark.parametrize("marker", sorted(SNIPPET_FIXES))
def test_proposed_snippet_fix_runs(marker: str, processes: list[Process]) -> None:
    run_script(SNIPPET_FIXES[marker], processes)


def run_script(text: str, processes: list[Process]) -> None:
    expected = [v for marker, v in SCRIPT_OUTPUT.items() if marker in text]
    pattern, forever = expected[0] if expected else (r"\S", False)
    with ExitStack() as stack:
        text = start_mocks(stack, text)
        process = Process([sys.executable, "-c", text], ROOT)
        processes.append(process)
        matched = process.wait_for(lambda out: re.search(pattern, out) is not None, 20)
        if forever:
            assert process.popen.poll() is None, f"it ended instead of streaming: {process}"
            process.kill()
        else:
            assert process.finish(10) == 0, str(process)
        assert matched, f"no output matching {pattern!r}: {process}"


def run_inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run pytester's files the way a user's suite runs them, with this repository's scenarios:
    in a fresh process, as a user's suite is (in process, the official client's asyncio state
    from earlier tests leaked into the snippet's reconnect)."""
    (pytester.path / "scenarios").symlink_to(ROOT / "scenarios")
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning", *args
    )


@pytest.mark.parametrize("snippet", of_kind("pytest"))
def test_pytest_snippet_passes(snippet: Snippet, pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_snippet=snippet.text)
    tests = len(re.findall(r"^(?:async )?def test_", snippet.text, re.M))
    run_inner(pytester).assert_outcomes(passed=tests)


def fullmatch(pattern: str, text: str) -> tuple[str, ...]:
    match = re.fullmatch(pattern, text)
    assert match, f"{text!r} does not read like {pattern!r}"
    return match.groups()


@pytest.mark.parametrize("snippet", of_kind("failure_report"))
def test_failure_report_looks_as_shown(snippet: Snippet, pytester: pytest.Pytester) -> None:
    """Make the failure the block shows (the test and scenario it names, the seed) and compare."""
    lines = [line for line in snippet.text.splitlines() if line.strip()]
    header, fixture_line, reproduce = lines
    fixture, scenario = fullmatch(r"(\w+): seed \d+, scenario (\S+)", fixture_line)
    nodeid, seed = fullmatch(r"reproduce: pytest (\S+) --feedlab-seed (\d+)", reproduce)
    path, test_name = nodeid.split("::")
    (pytester.path / scenario).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "scenarios/library/massive-disconnect-storm.toml", pytester.path / scenario)
    (pytester.path / path).parent.mkdir(parents=True, exist_ok=True)
    (pytester.path / path).write_text(
        "import pytest\n\n\n"
        f"@pytest.mark.feedlab_scenario({Path(scenario).name!r})\n"
        f"def {test_name}({fixture}):\n"
        "    assert False\n"
    )
    result = run_inner(pytester, path, "--feedlab-seed", seed)
    result.assert_outcomes(failed=1)
    assert re.fullmatch(r"-+ feedlab -+", header)
    result.stdout.re_match_lines([r"-+ feedlab -+", re.escape(fixture_line), re.escape(reproduce)])


# -- TOML ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("snippet", of_kind("toml"))
def test_toml_snippet_loads(snippet: Snippet) -> None:
    from scenarios.model import parse_scenario

    text = snippet.text
    if "name =" not in text:
        # A fragment (the `[expect]` table chaos writes): in the smallest scenario around it.
        text = (
            'name = "fragment"\nvendor = "massive"\nduration = "3m"\n'
            f'[client]\nsubscribe = ["Q.O:SPY250321C00560000"]\n{text}'
        )
    scenario = parse_scenario(text, f"README.md:{snippet.line}")
    assert scenario.name


# -- commands --------------------------------------------------------------------------------------

COMMAND_SNIPPETS = of_kind("commands")


@pytest.mark.parametrize("snippet", COMMAND_SNIPPETS)
def test_commands_parse(snippet: Snippet) -> None:
    from mocks.cli import build_parser

    for command in commands(snippet):
        if command.program == "make":
            done = subprocess.run(["make", "-n", *command.args], cwd=ROOT, capture_output=True)
            assert done.returncode == 0, command.text
            continue
        args = [PLACEHOLDER_ARGS.get(a, a) for a in command.args]
        expanded: list[str] = []
        for arg in args:
            matches = sorted(glob.glob(arg, root_dir=ROOT)) if "*" in arg else [arg]
            assert matches, f"{command.text}: {arg} matches nothing"
            expanded.extend(matches)
        build_parser().parse_args(expanded)  # a UsageError fails the test


def workdir(tmp_path: Path) -> Path:
    """The reader's directory: the repository's scenarios and recordings, plus their own files."""
    for name in ("scenarios", "recordings", ".venv"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "my.toml").write_text(MY_SCENARIO)
    for name, source in PLACEHOLDER_FILES.items():
        shutil.copy(ROOT / source, tmp_path / name)
    return tmp_path


def with_port_zero(args: list[str]) -> list[str]:
    if "--port" in args:
        i = args.index("--port")
        return [*args[: i + 1], "0", *args[i + 2 :]]
    return [*args, "--port", "0"]


def parse_only(command: Command) -> str | None:
    """Why `command` is only parsed, or None: it runs."""
    return next((why for text, why in PARSE_ONLY.items() if command.key.startswith(text)), None)


def expected_exit(command: Command) -> int:
    if command.key in EXIT_CODES:
        return EXIT_CODES[command.key]
    stated = re.search(r"exit (\d)", command.comment)
    return int(stated.group(1)) if stated else 0


LONG_RUNNING = ("serve", "replay", "watch")  # stopped by the test once they have shown they work


def prepared(command: Command) -> tuple[Command, list[str]]:
    """The command as the test runs it: a proposed fix applied, placeholders filled in."""
    if command.key in COMMAND_FIXES:
        fixed = COMMAND_FIXES[command.key]
        command = Command(fixed, tuple(shlex.split(fixed)), command.comment)
    return command, [PLACEHOLDER_ARGS.get(a, a) for a in command.args]


def written_files(args: list[str]) -> list[str]:
    return [args[args.index(o) + 1] for o in ("--out", "--report") if o in args]


def reads_earlier_output(snippet: Snippet, index: int) -> bool:
    earlier = {f for c in commands(snippet)[:index] for f in written_files(prepared(c)[1])}
    return bool(earlier & set(prepared(commands(snippet)[index])[1]))


def starts_early(snippet: Snippet, index: int) -> bool:
    command = commands(snippet)[index]
    return (
        parse_only(command) is None
        and command.program == "feedlab"
        and command.args[0] not in LONG_RUNNING
        and not reads_earlier_output(snippet, index)
    )


Early = dict[tuple[int, int], tuple[Process, Path]]


@pytest.fixture(scope="module", autouse=True)
def early(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Early]:
    """The one-shot commands (`run`, `chaos`, `verify`) that need nothing from another command,
    started together when this module starts, each in its own directory, so that their seconds
    overlap with the other tests; `test_commands_run` checks them."""
    started: Early = {}
    for param in COMMAND_SNIPPETS:
        snippet = param.values[0]  # type: ignore[attr-defined]
        assert isinstance(snippet, Snippet)
        for index, command in enumerate(commands(snippet)):
            if starts_early(snippet, index):
                cwd = workdir(tmp_path_factory.mktemp("readme"))
                process = Process([str(FEEDLAB), *prepared(command)[1]], cwd)
                started[snippet.line, index] = (process, cwd)
    yield started
    for process, _ in started.values():
        process.kill()


def run_long_running(command: Command, cwd: Path, processes: list[Process]) -> None:
    command, args = prepared(command)
    if args[0] in ("serve", "replay"):
        vendors = [a for a in args[1:] if not a.startswith("-")][:1] if args[0] == "serve" else []
        listeners = 3 if vendors == ["all"] else 1
        process = Process([str(FEEDLAB), *with_port_zero(args)], cwd)
        processes.append(process)
        scheme = "wss" if "--tls" in args else "ws"
        listening = f" listening on {scheme}://"
        assert process.wait_for(lambda out: out.count(listening) >= listeners, 15), (
            f"{command.text}: not listening: {process}"
        )
        assert process.interrupt() == 0, f"{command.text}: {process}"
        if "--report" in args:
            assert (cwd / args[args.index("--report") + 1]).stat().st_size > 0
        return
    with ExitStack() as stack:  # watch
        url = start_mocks(stack, args[args.index("--url") + 1])
        args[args.index("--url") + 1] = url
        process = Process([str(FEEDLAB), *args], cwd)
        processes.append(process)
        event = process.wait_for(lambda out: '"symbol"' in out, 20)
        process.kill()
    assert event, f"{command.text}: no event: {process}"
    json.loads(next(x for x in process.stdout.splitlines() if '"symbol"' in x))


def check_one_shot(command: Command, process: Process, cwd: Path) -> None:
    command, args = prepared(command)
    assert process.finish(60) == expected_exit(command), f"{command.text}: {process}"
    written = ["--report"] + (["--out"] if expected_exit(command) == 1 else [])  # as documented
    for option in written:
        if option in args:
            assert (cwd / args[args.index(option) + 1]).is_file(), f"{command.text}: {process}"


@pytest.mark.parametrize("snippet", COMMAND_SNIPPETS)
def test_commands_run(
    snippet: Snippet, tmp_path: Path, processes: list[Process], early: Early
) -> None:
    """Every command that can run here runs, as the reader would type them in order (a command
    reading a file an earlier one wrote runs where that one did)."""
    cwd = workdir(tmp_path)
    wrote: dict[str, Path] = {}  # file name -> the directory it was written in
    ran = 0
    for index, command in enumerate(commands(snippet)):
        if parse_only(command):
            continue
        args = prepared(command)[1]
        if (snippet.line, index) in early:
            process, here = early[snippet.line, index]
            check_one_shot(command, process, here)
        else:
            here = next((wrote[a] for a in args if a in wrote), cwd)
            if args[0] in LONG_RUNNING:
                run_long_running(command, here, processes)
            else:
                process = Process([str(FEEDLAB), *args], here)
                processes.append(process)
                check_one_shot(command, process, here)
        wrote.update(dict.fromkeys(written_files(args), here))
        ran += 1
    if ran == 0:
        reasons = {c.key: parse_only(c) for c in commands(snippet)}
        pytest.skip(f"parse-only: {reasons}")


# -- the layout ------------------------------------------------------------------------------------


@pytest.mark.parametrize("snippet", of_kind("layout"))
def test_layout_names_files_that_exist(snippet: Snippet) -> None:
    folder = ""
    missing = []
    for line in snippet.text.splitlines():
        if not line.strip() or re.match(r"\s{10,}", line):
            continue  # a description's continuation line
        names = line.split("   ")[0].split()
        if not line.startswith(" "):
            folder = names[0]
            continue
        for name in names:
            if re.fullmatch(r"[\w./]+\.py|\w+/", name) and not (ROOT / folder / name).exists():
                missing.append(folder + name)
    assert missing == []
