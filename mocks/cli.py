"""The `feedlab` command.

Subcommands: `serve` (run vendor mocks for any client), `watch` (print a feed with the built-in
clients), `run` (play scenario files against a client and report), `record` / `replay` /
`verify` (recordings), `chaos` (randomised fault search), `demo` (what `make demo` runs).
Bad input gives one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import math
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import trio

from mocks.sim.clock import UTC
from mocks.sim.market import MarketSettings
from mocks.tls import TlsError, add_tls_options, tls_from_args
from mocks.vendors import VENDORS


class UsageError(Exception):
    """Bad input from the command line: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def whole_number(text: str) -> int:
    """An argparse type: 0, 1, 2, ... (seeds, counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0 to 65535): {text!r}")
    return int(text)


def _start(text: str) -> dt.datetime | str:
    """--start: an ISO date-time with its UTC offset, or `now`."""
    if text == "now":
        return text
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date-time: {text!r}") from None
    if value.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            f"needs a UTC offset (e.g. 2025-03-14T15:58:00-04:00): {text!r}"
        )
    return value


def starts_now(args: argparse.Namespace) -> bool:
    return getattr(args, "start", None) in (None, "now")


def market_start(args: argparse.Namespace) -> dt.datetime:
    """Where a served market's time begins: `--start`, or now (the only wall-clock read)."""
    return dt.datetime.now(UTC) if starts_now(args) else args.start


def _rate(text: str) -> float | None:
    """--rate: events per second in total, or `max` (as fast as clients drain)."""
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--rate takes events per second or 'max', not {text!r}"
        ) from None
    if not 0 < value < math.inf:  # also refuses nan
        raise argparse.ArgumentTypeError(f"--rate must be a positive number, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="feedlab", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="serve vendor mocks on the real clock for any client")
    serve.add_argument("vendors", nargs="+", metavar="VENDOR", help=f"{', '.join(VENDORS)} or all")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port",
        type=_port,
        default=None,
        help="port (one vendor only; 0 picks a free port); default: the vendor's",
    )
    serve.add_argument(
        "--seed", type=whole_number, default=None, help="default 0; with --scenario, the file's"
    )
    serve.add_argument(
        "--start",
        type=_start,
        default=None,
        metavar="DATETIME|now",
        help="market time at the start, with its UTC offset (default: now; with --scenario, "
        "the file's start)",
    )
    serve.add_argument(
        "--rate",
        type=_rate,
        default=0.0,
        metavar="EVENTS_PER_S|max",
        help="total events per second offered, or max (default: natural rates)",
    )
    serve.add_argument(
        "--api-key",
        action="append",
        default=[],
        dest="api_keys",
        metavar="KEY",
        help="accept only these keys (repeatable); default: any non-empty key",
    )
    serve.add_argument(
        "--market-hours",
        choices=("always", "real"),
        default=None,
        help="always: data at any hour (default, or the scenario's); real: follow the exchanges",
    )
    serve.add_argument(
        "--strict",
        action="store_true",
        help="expired contracts are acknowledged but never stream, as live",
    )
    # -- scenarios (issue 6) --
    serve.add_argument(
        "--scenario",
        default=None,
        metavar="FILE",
        help="play this scenario's faults and actors against the clients, timed from a client's "
        "first subscription; on exit print what the server saw",
    )
    serve.add_argument(
        "--report", default=None, metavar="FILE", help="with --scenario: the server's view as JSON"
    )
    add_tls_options(serve)

    watch = sub.add_parser("watch", help="print a vendor's events with the built-in client")
    watch.add_argument("vendor", choices=VENDORS)
    watch.add_argument("subscriptions", nargs="+", metavar="SUBSCRIPTION")
    watch.add_argument("--url", default=None, help="default: the live service")
    watch.add_argument("--api-key", default=None)
    watch.add_argument("--json", action="store_true", help="JSON lines even on a terminal")

    run = sub.add_parser("run", help="play scenario files against a client; exit 1 if any fails")
    run.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario .toml files")
    run.add_argument("--seed", type=whole_number, default=None, help="instead of each file's")
    run.add_argument(
        "--report", default=None, metavar="FILE", help="write the report(s): .json or .html"
    )
    run.add_argument(
        "--realtime", action="store_true", help="the real clock over TCP on 127.0.0.1 (slow)"
    )
    run.add_argument(
        "--command",
        default=None,
        dest="client_command",  # `command` names the subcommand
        metavar="CMD",
        help="instead of a built-in client: this shell command, any language ({url} is the "
        "mock's URL); the real clock; the server judges what it can count",
    )

    from mocks import recording_cli  # here, not at the top: it imports UsageError from us

    recording_cli.add_serve_options(serve)
    recording_cli.add_record_parser(sub)
    recording_cli.add_replay_parser(sub)
    recording_cli.add_verify_parser(sub)

    from scenarios import chaos  # light: Hypothesis and the runner load only when it runs

    chaos_parser = sub.add_parser(
        "chaos", help="search random fault schedules for one that breaks a client; write it"
    )
    chaos.add_arguments(chaos_parser)
    chaos_parser.set_defaults(func=chaos.main)

    demo = sub.add_parser("demo", help="run the market for a virtual trading hour and summarise")
    demo.add_argument("--seed", type=whole_number, default=7)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "serve":
            return _serve(args)
        if args.command == "watch":
            return _watch(args)
        if args.command == "run":
            from scenarios.cli import run_command

            return run_command(
                args.scenarios, args.seed, args.report, args.realtime, args.client_command
            )
        if args.command == "demo":
            from mocks.demo import run_demo

            return run_demo(seed=args.seed, out=sys.stdout)
        if hasattr(args, "func"):  # record, replay, verify, chaos
            code: int = args.func(args)
            return code
    except (UsageError, TlsError) as exc:
        print(f"feedlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted(args.command)
    except BaseExceptionGroup as group:  # Ctrl-C inside Trio's nurseries comes out wrapped
        if group.split(KeyboardInterrupt)[1] is not None:
            raise
        return _interrupted(args.command)
    raise AssertionError(f"unhandled command {args.command!r}")


def _interrupted(command: str) -> int:
    """A server stopped with Ctrl-C did its job; a run, a search or a check cut short did not
    finish and must not read as passed (128 + SIGINT, as shells report it)."""
    return 130 if command in ("run", "chaos", "demo", "verify") else 0


def _serve(args: argparse.Namespace) -> int:
    from mocks.recording_cli import serve_hooks
    from mocks.serve import FORGET_AFTER, serve_forever, warn_if_exposed

    given_seed, given_hours = args.seed, args.market_hours  # None: not given
    args.seed = 0 if given_seed is None else given_seed
    args.market_hours = given_hours or "always"
    recorded_or_replayed = serve_hooks(args)  # --record FILE / --replay FILE [--scenario S]
    if recorded_or_replayed is not None:
        return recorded_or_replayed

    if args.scenario is not None or args.report is not None:
        from scenarios.cli import serve_command

        if args.scenario is None:
            raise UsageError("--report goes with --scenario")
        if len(args.vendors) != 1:
            raise UsageError("--scenario takes one vendor")
        if args.rate is None:
            raise UsageError("--rate max does not go with --scenario; give events per second")
        market: dict[str, object] = {}  # what the command line says instead of the file
        if given_hours is not None:
            market["always_open"] = given_hours == "always"
        if args.rate:
            market["total_rate"] = args.rate
        if args.strict:
            market["strict"] = True
        with tls_from_args(args, args.host) as tls:
            warn_if_exposed(args.host)
            if tls is not None:
                print(tls.notice(), flush=True)
            return serve_command(
                args.vendors[0],
                args.scenario,
                args.report,
                args.host,
                args.port,
                None if tls is None else tls.context,
                seed=given_seed,
                start=None if args.start is None else market_start(args),
                market=market,
                api_keys=tuple(args.api_keys),
            )

    names: list[str] = []
    for name in args.vendors:
        chosen = list(VENDORS) if name == "all" else [name]
        for vendor in chosen:
            if vendor not in VENDORS:
                raise UsageError(f"unknown vendor {name!r}; choose from {', '.join(VENDORS)}, all")
            if vendor not in names:
                names.append(vendor)
    if args.port not in (None, 0) and len(names) > 1:
        raise UsageError("--port takes one vendor; with several, omit it or use --port 0")
    settings = MarketSettings(
        seed=args.seed,
        start=market_start(args),
        always_open=args.market_hours == "always",
        strict=args.strict,
        total_rate=args.rate or None,
        forget_after=FORGET_AFTER,
    )
    with tls_from_args(args, args.host) as tls:
        warn_if_exposed(args.host)
        if tls is not None:
            print(tls.notice(), flush=True)
        try:
            trio.run(
                functools.partial(
                    serve_forever,
                    names,
                    args.host,
                    args.port,
                    settings,
                    tuple(args.api_keys),
                    args.rate is None,
                    None if tls is None else tls.context,
                    wall_clock=starts_now(args),
                )
            )
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            print(f"feedlab: error: cannot listen: {exc.strerror or exc}", file=sys.stderr)
            return 2
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside Trio's nursery groups: their messages are the news."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _watch(args: argparse.Namespace) -> int:
    import importlib
    from urllib.parse import urlsplit

    module = importlib.import_module(f"clients.{args.vendor}")
    table = sys.stdout.isatty() and not args.json
    url = args.url or module.LIVE_URL
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise UsageError(f"--url must be a ws:// or wss:// URL, not {url!r}")
    key_env = getattr(module, "API_KEY_ENV", None)  # Theta's terminal needs none
    if key_env and args.api_key is None and not os.environ.get(key_env):
        raise UsageError(f"no {args.vendor} API key: pass --api-key or set {key_env}")
    try:
        trio.run(
            lambda: module.watch(
                list(args.subscriptions), url=url, api_key=args.api_key, out=sys.stdout, table=table
            )
        )
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `feedlab watch ... | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a client error is the user's news, not a traceback
        leaves = _leaves(exc)
        # The clients check subscriptions before they connect: a ValueError is a bad argument.
        bad_input = all(isinstance(leaf, ValueError) for leaf in leaves)
        text = "; ".join(str(leaf) or type(leaf).__name__ for leaf in leaves)
        print(f"feedlab: error: {' '.join(text.split())}", file=sys.stderr)
        return 2 if bad_input else 1
    return 0


if __name__ == "__main__":
    # `python -m mocks.cli`: run the imported module's `main`, not this `__main__` copy, so that
    # the UsageError the subcommands import from `mocks.cli` is the one caught here.
    from mocks.cli import main as _main

    sys.exit(_main())
