"""Bad input at the command line, for every subcommand: exactly one line on stderr naming the file,
field or option and the problem, exit code 2, never a traceback (also as `python -m mocks.cli`,
where a second copy of the module once let errors through as tracebacks)."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mocks.cli import main

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "recordings" / "massive-synthetic-seed7.jsonl.gz"

GOOD_SCENARIO = """
name = "quick"
vendor = "massive"
duration = "40s"
[client]
subscribe = ["Q.O:SPY250321C00560000"]
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Bad files of every kind, by name."""
    made = {
        "missing.toml": None,
        "missing.jsonl": None,
        "malformed.toml": "name = \n",
        "wrongtype.toml": GOOD_SCENARIO.replace('"40s"', "[40]"),
        "unknownkey.toml": "colour = 1\n" + GOOD_SCENARIO,
        "badvendor.toml": GOOD_SCENARIO.replace('"massive"', '"nasdaq"'),
        "binary.toml": b"\xff\xfe\x00",
        "empty.jsonl": b"",
        "junk.jsonl": b"hello\n",
        "truncated.jsonl": b'{"format":',
        "notgzip.jsonl.gz": b"\x1f\x8b\x08garbage",
        "notrecording.jsonl": b'{"a": 1}\n',
        "cert.pem": b"not a certificate\n",
        "good.toml": GOOD_SCENARIO,
    }
    out: dict[str, str] = {}
    for name, content in made.items():
        path = tmp_path / name
        if isinstance(content, str):
            path.write_text(content)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        out[name] = str(path)
    (tmp_path / "adir").mkdir()
    out["adir"] = str(tmp_path / "adir")
    with gzip.open(SAMPLE) as sample:
        head = sample.read(3000)
    out["cutgzip.jsonl.gz"] = str(tmp_path / "cutgzip.jsonl.gz")
    Path(out["cutgzip.jsonl.gz"]).write_bytes(gzip.compress(head)[:-30])
    out["nodir"] = str(tmp_path / "no" / "such" / "out.jsonl")
    return out


# (argv with {file} placeholders, what the line must say). Every case names what is wrong.
CASES = [
    # serve
    ("serve nasdaq", "unknown vendor 'nasdaq'"),
    ("serve massive --port 70000", "--port"),
    ("serve massive --port -1", "--port"),
    ("serve massive --port x", "--port"),
    ("serve massive theta --port 9000", "--port takes one vendor"),
    ("serve massive --rate fast", "--rate"),
    ("serve massive --rate 0", "--rate"),
    ("serve massive --rate nan", "--rate"),
    ("serve massive --rate inf", "--rate"),
    ("serve massive --seed x", "--seed"),
    ("serve massive --market-hours sometimes", "--market-hours"),
    ("serve massive --start yesterday", "--start: not an ISO date-time: 'yesterday'"),
    ("serve massive --start 2025-03-14T09:30:00", "--start: needs a UTC offset"),
    ("serve massive --replay x.jsonl --start now", "--start does not go with --replay"),
    ("serve massive --scenario {good.toml} --rate max", "--rate max does not go with --scenario"),
    ("serve massive --report r.json", "--report goes with --scenario"),
    ("serve massive --scenario {missing.toml}", "missing.toml: file: cannot read it"),
    ("serve massive --scenario {malformed.toml}", "malformed.toml: toml: "),
    ("serve massive --scenario {wrongtype.toml}", "wrongtype.toml: duration: "),
    ("serve massive --scenario {adir}", "adir: file: cannot read it"),
    ("serve theta --scenario {badvendor.toml}", "badvendor.toml: vendor: "),
    ("serve massive --replay {empty.jsonl}", "empty.jsonl: line 1: empty file"),
    ("serve massive --replay {adir}", "adir: line 0: is a directory"),
    ("serve theta --replay " + str(SAMPLE), "a massive recording, not theta"),
    ("serve massive --record {adir}", "adir: is a directory"),
    ("serve massive --record {nodir}", "no such directory"),
    ("serve massive --record x.jsonl --replay y.jsonl", "--record and --replay"),
    ("serve massive --tls-cert {cert.pem}", "--tls-cert and --tls-key go together"),
    ("serve massive --tls-cert {cert.pem} --tls-key {cert.pem}", "cert.pem: no PEM certificate"),
    ("serve massive --tls-cert {missing.toml} --tls-key {cert.pem}", "missing.toml: cannot read"),
    ("serve massive --tls-ca-out ca.pem", "--tls-ca-out goes with --tls"),
    ("serve massive --tls --tls-ca-out {adir}", "adir: is a directory"),
    ("serve massive --tls --tls-ca-out {nodir}", "no such directory"),
    ("serve massive --tls --scenario {wrongtype.toml}", "wrongtype.toml: duration: "),
    # run
    ("run", "required: SCENARIO"),
    ("run {good.toml} --command ./handler --report out.html", "--report with --command: a .json"),
    ("run {good.toml} --command=", "--command: empty"),
    ("run {missing.toml}", "missing.toml: file: cannot read it"),
    ("run {malformed.toml}", "malformed.toml: toml: "),
    ("run {wrongtype.toml}", "wrongtype.toml: duration: "),
    ("run {unknownkey.toml}", "unknownkey.toml: colour: unknown key"),
    ("run {badvendor.toml}", "badvendor.toml: vendor: "),
    ("run {binary.toml}", "binary.toml: file: not UTF-8"),
    ("run {adir}", "adir: file: cannot read it"),
    ("run {wrongtype.toml} --seed -3", "--seed"),
    # record
    ("record massive --upstream http://x --out {nodir}", "--upstream must be a ws://"),
    ("record nasdaq --upstream ws://x --out o.jsonl", "invalid choice: 'nasdaq'"),
    ("record massive --upstream ws://x --out {adir}", "adir: is a directory"),
    ("record massive --upstream ws://x --out {nodir}", "no such directory"),
    ("record massive --upstream ws://x --out o.jsonl --listen nope", "--listen takes HOST:PORT"),
    ("record massive --upstream ws://x --out o.jsonl --redact (", "not a regular expression"),
    ("record massive --out o.jsonl", "required: --upstream"),
    ("record massive --upstream ws://x --out o.jsonl --tls-key {cert.pem}", "go together"),
    # replay
    ("replay", "required: FILE"),
    ("replay {missing.jsonl}", "missing.jsonl: line 0: no such file"),
    ("replay {empty.jsonl}", "empty.jsonl: line 1: empty file"),
    ("replay {truncated.jsonl}", "truncated.jsonl: line 1: header cut off"),
    ("replay {junk.jsonl}", "junk.jsonl: line 1: header is not JSON"),
    ("replay {notrecording.jsonl}", "notrecording.jsonl: line 1: not a feedlab-recording"),
    ("replay {notgzip.jsonl.gz}", "notgzip.jsonl.gz: "),
    ("replay {adir}", "adir: line 0: is a directory"),
    ("replay x.jsonl --port 99999", "--port"),
    ("replay x.jsonl --speed 0", "--speed"),
    ("replay x.jsonl --speed fast", "--speed"),
    ("replay {junk.jsonl} --tls-key {cert.pem}", "junk.jsonl: line 1"),
    # verify
    ("verify", "required: FILE"),
    ("verify {missing.jsonl}", "missing.jsonl: line 0: no such file"),
    ("verify {empty.jsonl}", "empty.jsonl: line 1: empty file"),
    ("verify {truncated.jsonl}", "truncated.jsonl: line 1: header cut off"),
    ("verify {junk.jsonl}", "junk.jsonl: line 1: header is not JSON"),
    ("verify {notgzip.jsonl.gz}", "notgzip.jsonl.gz: "),
    ("verify {adir}", "adir: line 0: is a directory"),
    ("verify " + str(SAMPLE) + " --max-problems x", "--max-problems"),
    # chaos
    ("chaos --vendor nasdaq --out c.toml", "invalid choice: 'nasdaq'"),
    ("chaos --vendor massive", "required: --out"),
    ("chaos --vendor massive --out {nodir}", "--out: no directory"),
    ("chaos --vendor massive --out c.toml --examples x", "--examples"),
    ("chaos --vendor massive --out c.toml --examples 0", "--examples"),
    ("chaos --vendor massive --out c.toml --duration soon", "--duration"),
    ("chaos --vendor massive --out c.toml --client nope", "--client: expected module:function"),
    ("chaos --vendor massive --out c.toml --client no.such:f", "--client: cannot import"),
    ("chaos --vendor massive --out c.toml --skip nope", "--skip: unknown fault kind 'nope'"),
    ("chaos --vendor massive --out c.toml --subscribe garbage", "--subscribe: "),
    ("chaos --vendor massive --out c.toml --subscribe garbage", "'garbage' is not CHANNEL.TICKER"),
    # watch (subscriptions and URLs are checked before anything connects)
    ("watch nasdaq Q.x", "invalid choice: 'nasdaq'"),
    ("watch massive", "required: SUBSCRIPTION"),
    ("watch massive Q.O:SPY251219C00650000 --url http://nope --api-key k", "--url must be"),
    ("watch massive Q.O:SPY251219C00650000 --url nope --api-key k", "--url must be"),
    ("watch massive Q.x --url ws://127.0.0.1:9 --api-key k", "'Q.x'"),
    ("watch theta option:quote:x --url ws://127.0.0.1:9", "'option:quote:x'"),
    ("watch amberdata nope --url ws://127.0.0.1:9 --api-key k", "'nope'"),
    # demo, and the command itself
    ("demo --seed x", "--seed"),
    ("demo extra", "unrecognized arguments: extra"),
    ("frobnicate", "invalid choice"),
    ("", "required"),
]


def _argv(template: str, files: dict[str, str]) -> list[str]:
    argv = template.split()
    for name, path in files.items():
        argv = [part.replace("{" + name + "}", path) for part in argv]
    return argv


@pytest.mark.parametrize(("template", "needle"), CASES, ids=[c[0] or "nothing" for c in CASES])
def test_bad_input_is_one_line_naming_the_problem_and_exit_2(
    template: str, needle: str, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _argv(template, files)
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("feedlab: error: ") and err.count("\n") == 1, err
    assert needle in err, err
    assert "Traceback" not in err + captured.out
    for name, path in files.items():  # a file named by the needle is named by its whole path
        if needle.startswith(name):
            assert path + needle[len(name) :] in err, err


@pytest.mark.parametrize(
    ("vendor", "subscription"),
    [
        ("massive", "Q.O:SPY251219C00650000"),
        ("amberdata", "market:options:order:snapshots:BTC-27JUN25-60000-C"),
    ],
)
def test_watch_without_a_key_is_bad_input(
    vendor: str,
    subscription: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No key anywhere is the user's mistake (exit 2), found before anything connects (a key
    the vendor refuses is the vendor's answer: exit 1)."""
    monkeypatch.delenv(f"{vendor.upper()}_API_KEY", raising=False)
    assert main(["watch", vendor, subscription, "--url", "ws://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"feedlab: error: no {vendor} API key: pass --api-key or set {vendor.upper()}_API_KEY\n"
    )


def test_a_truncated_gzip_recording_is_served_with_a_warning_not_refused(
    files: dict[str, str],
) -> None:
    # Cut off by a crash: still a recording up to its last whole line (verify reports it).
    from mocks.recording_cli import load

    assert load(files["cutgzip.jsonl.gz"]).truncated is not None


@pytest.mark.parametrize(
    "template",
    [
        "run {wrongtype.toml}",
        "replay {adir}",
        "serve massive --port 70000",
    ],
)
def test_as_a_command_too_one_line_and_exit_2(template: str, files: dict[str, str]) -> None:
    for command in (
        [sys.executable, "-m", "mocks.cli"],
        [str(Path(sys.executable).parent / "feedlab")],
    ):
        if not Path(command[0]).exists():
            continue
        done = subprocess.run(
            [*command, *_argv(template, files)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("feedlab: error: ") and done.stderr.count("\n") == 1
        assert "Traceback" not in done.stderr


def test_listening_beyond_loopback_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    from mocks.serve import is_loopback, warn_if_exposed

    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2", "[::1]"):
        assert is_loopback(host)
        warn_if_exposed(host)
    assert capsys.readouterr().err == ""
    for host, said in (
        ("0.0.0.0", "every interface"),
        ("::", "every interface"),
        ("10.1.2.3", "10.1.2.3"),
    ):
        assert not is_loopback(host)
        warn_if_exposed(host)
        err = capsys.readouterr().err
        assert err.startswith("feedlab: warning: listening on ") and said in err
        assert "reachable from other machines" in err


def test_every_server_binds_127_0_0_1_unless_told_otherwise() -> None:
    from mocks.cli import build_parser

    parser = build_parser()
    for argv in (["serve", "massive"], ["replay", "x.jsonl"]):
        assert parser.parse_args(argv).host == "127.0.0.1"
    record = parser.parse_args(["record", "massive", "--upstream", "ws://x", "--out", "o"])
    assert record.listen is None  # run_record then listens on 127.0.0.1
    import inspect

    from mocks import recording_cli
    from mocks.background import background

    assert "127.0.0.1" in inspect.getsource(recording_cli.run_record)
    assert inspect.signature(background).parameters["host"].default == "127.0.0.1"
