"""The recording commands of `feedlab`: `record` (a recording proxy), `replay` (serve a recording as
the vendor), `verify` (the drift detector), and `serve --record FILE` / `serve --replay FILE`.

`mocks.cli` wires them: `add_record_parser(sub)`, `add_replay_parser(sub)`,
`add_verify_parser(sub)` each add a subcommand whose `func(args)` returns the exit code;
`add_serve_options(serve)` adds the serve options and `serve_hooks(args)` runs `serve` when one of
them is given (it returns None otherwise). Bad input raises `mocks.cli.UsageError` with one line
(`<file>: line N: problem` for a bad recording). `python -m mocks.recording_cli` runs the three
subcommands on their own.
"""

from __future__ import annotations

import argparse
import functools
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import trio

from mocks.cli import UsageError, market_start, starts_now
from mocks.recorder import (
    RecordingProxy,
    Redactor,
    WireRecorder,
    flush_periodically,
    mock_header,
    utc_now_iso,
)
from mocks.recording import Header, Recording, RecordingError, RecordingWriter, read_recording
from mocks.tls import Tls, add_tls_options, tls_from_args
from mocks.vendors import VENDORS, vendor_spec

# -- argument types --------------------------------------------------------------------------------


def _speed(text: str) -> float | None:
    """--speed: a factor on the recorded timing, or `max` (as fast as the client reads)."""
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speed takes a factor or 'max', not {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("--speed must be a positive factor")
    return value


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"--listen takes HOST:PORT, not {text!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"--redact: not a regular expression: {exc}") from None
    return text


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return int(text)


def _seed(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(text)


# -- subcommands -----------------------------------------------------------------------------------


def add_record_parser(sub: Any) -> argparse.ArgumentParser:
    record: argparse.ArgumentParser = sub.add_parser(
        "record",
        help="a recording proxy: clients connect here, it relays to the vendor and records",
    )
    record.add_argument("vendor", choices=VENDORS, metavar="VENDOR")
    record.add_argument("--upstream", required=True, metavar="URL", help="ws:// or wss:// URL")
    record.add_argument(
        "--listen",
        type=_listen,
        default=None,
        metavar="HOST:PORT",
        help="where clients connect (default 127.0.0.1 and the vendor's mock port)",
    )
    record.add_argument("--out", required=True, metavar="FILE", help=".jsonl or .jsonl.gz")
    record.add_argument(
        "--redact",
        type=_regex,
        action="append",
        default=[],
        metavar="REGEX",
        help="also replace what this matches before writing (repeatable)",
    )
    add_tls_options(record)
    record.set_defaults(func=run_record)
    return record


def add_replay_parser(sub: Any) -> argparse.ArgumentParser:
    replay: argparse.ArgumentParser = sub.add_parser(
        "replay", help="serve a recording as the vendor, each client its own playback"
    )
    replay.add_argument("file", metavar="FILE")
    replay.add_argument("--host", default="127.0.0.1")
    replay.add_argument(
        "--port", type=_port, default=None, help="default: the vendor's; 0 picks a free port"
    )
    replay.add_argument(
        "--speed",
        type=_speed,
        default=1.0,
        metavar="X|max",
        help="divide the recorded gaps by X, or max: as fast as the client reads (default 1)",
    )
    replay.add_argument("--loop", action="store_true", help="start again at the end")
    replay.add_argument("--seed", type=_seed, default=0, help="for the core's own draws")
    replay.add_argument(
        "--api-key",
        action="append",
        default=[],
        dest="api_keys",
        metavar="KEY",
        help="accept only these keys (repeatable); default: any non-empty key",
    )
    add_tls_options(replay)
    replay.set_defaults(func=run_replay)
    return replay


def add_verify_parser(sub: Any) -> argparse.ArgumentParser:
    verify: argparse.ArgumentParser = sub.add_parser(
        "verify", help="check a recording against the vendor's wire schema and protocol rules"
    )
    verify.add_argument("files", nargs="+", metavar="FILE")
    verify.add_argument(
        "--max-problems",
        type=_seed,
        default=200,
        metavar="N",
        help="print at most N problems per file (all are counted; default 200)",
    )
    verify.set_defaults(func=run_verify)
    return verify


def add_serve_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--record", default=None, metavar="FILE", help="record every session (.jsonl[.gz])"
    )
    serve.add_argument(
        "--replay",
        default=None,
        metavar="FILE",
        help="serve this recording's data instead of the simulated market",
    )
    serve.add_argument(
        "--speed", type=_speed, default=1.0, metavar="X|max", help="with --replay (default 1)"
    )
    serve.add_argument("--loop", action="store_true", help="with --replay: start again at the end")
    serve.add_argument(
        "--redact",
        type=_regex,
        action="append",
        default=[],
        metavar="REGEX",
        help="with --record: also replace what this matches before writing",
    )


def serve_hooks(args: argparse.Namespace) -> int | None:
    """Run `feedlab serve` with --record or --replay; None when neither was given."""
    record, replay = getattr(args, "record", None), getattr(args, "replay", None)
    if record is None and replay is None:
        return None
    if record is not None and replay is not None:
        raise UsageError("--record and --replay do not go together")
    vendors: list[str] = list(args.vendors)
    if len(vendors) != 1 or vendors[0] not in VENDORS:
        raise UsageError(f"--{'record' if record else 'replay'} takes one vendor of {VENDORS}")
    vendor = vendors[0]
    if replay is not None:
        if getattr(args, "start", None) is not None:
            raise UsageError("--start does not go with --replay: a recording keeps its own time")
        recording = load(replay)
        if recording.vendor != vendor:
            raise UsageError(f"{replay}: line 1: a {recording.vendor} recording, not {vendor}")
        faults: tuple[Any, ...] = ()
        scenario_path = getattr(args, "scenario", None)
        if scenario_path is not None:
            faults = _scenario_faults(scenario_path, vendor)
        return _run_replay(args, recording, faults)
    if getattr(args, "scenario", None) is not None:
        raise UsageError("--record does not take --scenario")
    assert record is not None
    return _serve_recorded(args, vendor, Path(record))


# -- record ----------------------------------------------------------------------------------------


def _writable(path: Path) -> None:
    if not path.parent.is_dir():
        raise UsageError(f"{path}: no such directory: {path.parent}")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory")


def run_record(args: argparse.Namespace) -> int:
    from mocks.serve import url, warn_if_exposed

    upstream: str = args.upstream
    parts = urlsplit(upstream)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise UsageError(f"--upstream must be a ws:// or wss:// URL, not {upstream!r}")
    out = Path(args.out)
    _writable(out)
    spec = vendor_spec(args.vendor)
    host, port = args.listen or ("127.0.0.1", spec.default_port)
    warn_if_exposed(host)
    redactor = Redactor(args.vendor, args.redact)
    header = Header(
        vendor=args.vendor,
        source={"kind": "proxy", "upstream": redactor.url(upstream)},
        created=utc_now_iso(),
        redactions=redactor.describe(),
    )

    async def main(writer: RecordingWriter, proxy: RecordingProxy, tls: Tls | None) -> None:
        listen_ssl = None if tls is None else tls.context
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flush_periodically, writer)
                bound = await nursery.start(
                    functools.partial(proxy.serve, host, port, listen_ssl=listen_ssl)
                )
                served = url(host, bound, spec.path, tls=tls is not None)
                print(f"{args.vendor} recording on {served}", flush=True)
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()
        writer.end(proxy.now())

    with tls_from_args(args, host) as tls:  # bad TLS options fail before the file is made
        writer = RecordingWriter(out, header)
        proxy = RecordingProxy(args.vendor, upstream, writer, redactor)
        if tls is not None:
            print(tls.notice(), flush=True)
        try:
            trio.run(main, writer, proxy, tls)
        except OSError as exc:
            writer.close_file()
            print(f"feedlab: error: cannot listen: {exc.strerror or exc}", file=sys.stderr)
            return 2
        finally:
            writer.close_file()
    print(f"{out}: {writer.lines} lines, {proxy.connections} connections", file=sys.stderr)
    return 0


def _serve_recorded(args: argparse.Namespace, vendor: str, out: Path) -> int:
    """`serve VENDOR --record FILE`: the mock, recording its own sessions in market time."""
    from mocks.serve import (
        FORGET_AFTER,
        close_all,
        long_running_server,
        server_collector,
        serving_market,
        start_market,
        url,
        warn_if_exposed,
    )
    from mocks.sim.market import MarketSettings

    _writable(out)
    settings = MarketSettings(
        seed=args.seed,
        start=market_start(args),
        always_open=getattr(args, "market_hours", "always") == "always",
        strict=getattr(args, "strict", False),
        total_rate=getattr(args, "rate", 0.0) or None,
        forget_after=FORGET_AFTER,
    )
    max_rate = getattr(args, "rate", 0.0) is None
    redactor = Redactor(vendor, getattr(args, "redact", []), args.api_keys)
    spec = vendor_spec(vendor)

    async def main(writer: RecordingWriter, tls: Tls | None) -> None:
        market = serving_market(settings, max_rate=max_rate, wall_clock=starts_now(args))
        with (
            trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
            server_collector(),
        ):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flush_periodically, writer)
                await start_market(nursery, market)
                server = long_running_server(
                    vendor, market, tuple(args.api_keys), args.seed, max_rate
                )
                WireRecorder(writer, redactor).attach(server)
                await nursery.start(server.run)
                port = spec.default_port if args.port is None else args.port
                context = None if tls is None else tls.context
                bound = await server.serve_tcp(args.host, port, ssl_context=context)
                served = url(args.host, bound, spec.path, tls=tls is not None)
                print(f"{vendor} listening on {served}", flush=True)
                async for _ in signals:
                    break
                await close_all([server])
                writer.end(market.now())
                nursery.cancel_scope.cancel()

    with tls_from_args(args, args.host) as tls:
        writer = RecordingWriter(out, mock_header(vendor, args.seed, settings.start, redactor))
        warn_if_exposed(args.host)
        if tls is not None:
            print(tls.notice(), flush=True)
        try:
            trio.run(main, writer, tls)
        except OSError as exc:
            print(f"feedlab: error: cannot listen: {exc.strerror or exc}", file=sys.stderr)
            return 2
        finally:
            writer.close_file()
    return 0


# -- replay ----------------------------------------------------------------------------------------


def load(path: str) -> Recording:
    """A recording, or UsageError `<file>: line N: problem`. A file cut off by a crash is
    served up to its last whole line, with a warning."""
    try:
        recording = read_recording(path)
    except RecordingError as exc:
        raise UsageError(str(exc)) from None
    if recording.vendor not in VENDORS:
        raise UsageError(f"{path}: line 1: unknown vendor {recording.vendor!r}")
    return recording


def _scenario_faults(path: str, vendor: str) -> tuple[Any, ...]:
    from scenarios.model import ScenarioError, load_scenario

    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    if scenario.vendor != vendor:
        raise UsageError(f"{path}: vendor: the scenario is for {scenario.vendor}, not {vendor}")
    from mocks.replay import NOT_REPLAYED

    left_out = sorted({f.kind for f in scenario.faults if f.kind in NOT_REPLAYED})
    left_out += ["actor"] if scenario.actors else []
    if left_out:
        print(f"feedlab: warning: {path}: not played over a replay: {', '.join(left_out)}",
              file=sys.stderr)  # fmt: skip
    return tuple(scenario.faults)


def run_replay(args: argparse.Namespace) -> int:
    return _run_replay(args, load(args.file), ())


def _run_replay(args: argparse.Namespace, recording: Recording, faults: tuple[Any, ...]) -> int:
    """`feedlab replay FILE` and `feedlab serve VENDOR --replay FILE`: the recording served on
    TCP (wss:// with the TLS options) until SIGINT/SIGTERM."""
    from mocks.replay import build_timeline
    from mocks.serve import warn_if_exposed

    if recording.truncated is not None:
        print(f"feedlab: warning: {recording.path}: {recording.truncated}", file=sys.stderr)
    if not build_timeline(recording).frames:
        print(f"feedlab: warning: {recording.path}: no market data to play", file=sys.stderr)
    with tls_from_args(args, args.host) as tls:
        warn_if_exposed(args.host)
        if tls is not None:
            print(tls.notice(), flush=True)
        try:
            trio.run(_serve_replay, args, recording, faults, tls)
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            print(f"feedlab: error: cannot listen: {exc.strerror or exc}", file=sys.stderr)
            return 2
    return 0


async def _serve_replay(
    args: argparse.Namespace, recording: Recording, faults: tuple[Any, ...], tls: Tls | None
) -> None:
    from mocks.replay import open_replay
    from mocks.serve import close_all, url

    spec = vendor_spec(recording.vendor)
    port = spec.default_port if args.port is None else args.port
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_replay(
            recording,
            speed=args.speed,
            loop=args.loop,
            seed=args.seed,
            faults=faults,
            api_keys=tuple(args.api_keys),
        ) as service:
            context = None if tls is None else tls.context
            bound = await service.mock_server.serve_tcp(args.host, port, ssl_context=context)
            served = url(args.host, bound, spec.path, tls=tls is not None)
            print(f"{recording.vendor} listening on {served}", flush=True)
            async for _ in signals:
                break
            await close_all([service.mock_server])


# -- verify ----------------------------------------------------------------------------------------


def run_verify(args: argparse.Namespace) -> int:
    from mocks.verify import verify

    worst = 0
    for path in args.files:
        report = verify(load(path))
        lines = report.lines()
        problems, tail = lines[: len(report.problems)], lines[len(report.problems) :]
        for line in problems[: args.max_problems]:
            print(line)
        if len(problems) > args.max_problems:
            print(f"{path}: ... {len(problems) - args.max_problems} more problems not shown")
        for line in tail:
            print(line)
        if not report.ok:
            worst = 1
    return worst


# -- standalone ------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="feedlab", description="record, replay and verify vendor sessions")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add_record_parser(sub)
    add_replay_parser(sub)
    add_verify_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        code: int = args.func(args)
        return code
    except UsageError as exc:
        print(f"feedlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
