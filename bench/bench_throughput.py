"""Benchmark: wire throughput of `feedlab serve VENDOR --rate max` against a bare asyncio
`websockets` server, and the overhead of the fault layer (issue 9, items 1, 2, 3 and 6).

Three processes per measurement, as a user would run them: the server (the real
`feedlab serve VENDOR --port 0 --rate max`, or the bare server), and one measuring client, an
asyncio `websockets` client that subscribes as the vendor's clients do, parses every frame with
orjson and counts events, messages and bytes over a fixed window after a warm-up. The bare server
sends frames captured from the mock itself in the same run (so frame sizes and shapes match), in
a loop, with no per-message work at all; for Massive, the captured events in pre-encoded
100-event batches, as the issue defines its baseline (the mock's own frames carry up to 500).
Rounds alternate bare and mock; the best of each counts.

1. Massive: 1,000 quote contracts, batched frames: events/s. Target >= 0.8 of bare.
2. Theta: 100 option quote streams, one message per frame: messages/s. Target >= 0.8.
3. Amberdata: order-book snapshots (about 2 KB each): MB/s. Target >= 0.8.
6. The fault layer (the `Link` byte-fault wrapper, the director's `MessageFaults` filter and the
   director task) with no fault active, against the same server without any of it: Massive
   events/s and Theta messages/s. Target >= 0.95.

Prints every figure and exits 0: CI never decides anything on wall-clock speed.

    .venv/bin/python bench/bench_throughput.py [--rounds 3] [--warmup 1.5] [--window 3]
        [--only massive,theta,amberdata,layer]

Profile the mock side with FEEDLAB_BENCH_PROFILE=DIR: each mock server runs under cProfile
and writes DIR/<label>-<round>.prof.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
FEEDLAB = [PYTHON, "-m", "mocks.cli"]
CAPTURE_FRAMES = 400  # frames the bare server loops over
BARE_BATCH = {"massive": 100}  # events per frame of the bare Massive server (the figure)
MB = 1_000_000

# What the clients subscribe to. Any well-formed contract streams on the mock.
MASSIVE_QUOTES = [
    f"Q.O:SPY{exp}{right}{strike * 1000:08d}"
    for exp in ("250321", "250418", "250516", "250620")
    for strike in range(500, 625)
    for right in ("C", "P")
]
THETA_STREAMS = [
    {"root": "SPY", "expiration": 20250321, "strike": strike * 1000, "right": right}
    for strike in range(550, 600)
    for right in ("C", "P")
]
AMBERDATA_INSTRUMENTS = [
    f"BTC-28MAR25-{strike}-{right}" for strike in range(60000, 110000, 1000) for right in "CP"
]


# -- the measuring client ------------------------------------------------------------------------


@dataclass
class Counts:
    seconds: float = 0.0
    frames: int = 0
    messages: int = 0  # JSON objects: events in a Massive array, one per frame elsewhere
    bytes: int = 0


async def _massive_conversation(ws: Any) -> None:
    await ws.recv()  # connected
    await ws.send(orjson.dumps({"action": "auth", "params": "bench"}).decode())
    await ws.recv()  # auth_success
    params = ",".join(MASSIVE_QUOTES)
    await ws.send(orjson.dumps({"action": "subscribe", "params": params}).decode())


async def _theta_conversation(ws: Any) -> None:
    for req_id, contract in enumerate(THETA_STREAMS, 1):
        request = {
            "msg_type": "STREAM",
            "sec_type": "OPTION",
            "req_type": "QUOTE",
            "add": True,
            "id": req_id,
            "contract": contract,
        }
        await ws.send(orjson.dumps(request).decode())


async def _amberdata_conversation(ws: Any) -> None:
    for request_id, instrument in enumerate(AMBERDATA_INSTRUMENTS, 1):
        request = {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "subscribe",
            "params": [
                "market:options:order:snapshots",
                {"instrument": instrument, "exchange": "deribit"},
            ],
        }
        await ws.send(orjson.dumps(request).decode())


CONVERSATIONS = {
    "massive": _massive_conversation,
    "theta": _theta_conversation,
    "amberdata": _amberdata_conversation,
}


async def measure(
    vendor: str,
    url: str,
    conversation: bool,
    warmup: float,
    window: float,
    capture: Path | None,
) -> Counts:
    """Connect, subscribe (unless the server is the bare one), read for `warmup` seconds, then
    count for `window` seconds. With `capture`, also keep the first frames after the warm-up."""
    from websockets.asyncio.client import connect

    headers = {"x-api-key": "bench"} if vendor == "amberdata" else {}
    counts = Counts()
    captured: list[bytes] = []
    async with connect(
        url, compression=None, max_size=None, additional_headers=headers, open_timeout=30
    ) as ws:
        if conversation:
            await CONVERSATIONS[vendor](ws)
        loads, clock = orjson.loads, time.perf_counter
        end_warmup = clock() + warmup
        while clock() < end_warmup:
            loads(await ws.recv(decode=False))
        start = clock()
        end = start + window
        frames = messages = size = 0
        while True:
            data = await ws.recv(decode=False)
            doc = loads(data)
            frames += 1
            messages += len(doc) if type(doc) is list else 1
            size += len(data)
            if capture is not None and len(captured) < CAPTURE_FRAMES:
                captured.append(data)
            if clock() >= end:
                break
        counts = Counts(clock() - start, frames, messages, size)
    if capture is not None:
        capture.write_bytes(orjson.dumps([frame.decode() for frame in captured]))
    return counts


def client_main(args: argparse.Namespace) -> None:
    counts = asyncio.run(
        measure(args.vendor, args.url, args.conversation, args.warmup, args.window, args.capture)
    )
    print(orjson.dumps(counts.__dict__).decode(), flush=True)


# -- the bare server -----------------------------------------------------------------------------


async def bare_serve(frames_path: Path) -> None:
    """Send the captured frames, pre-encoded, in a loop to whoever connects; read nothing."""
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    frames = [frame.encode() for frame in orjson.loads(frames_path.read_bytes())]

    async def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                for frame in frames:
                    await ws.send(frame, text=True)

    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"bare listening on ws://127.0.0.1:{port}/", flush=True)
        await asyncio.Future()


# -- the fault layer on and off, in-process ------------------------------------------------------


def layer_main(vendor: str, layer: bool) -> None:
    """`feedlab serve VENDOR --rate max` as `mocks.serve` builds it, with the fault layer (what
    a scenario installs, with no fault in it) or without any of it (no `Link`, no filter)."""
    import trio

    import mocks.server
    from mocks.director import Director
    from mocks.hub import Hub
    from mocks.serve import MAX_RATE_RESOLUTION
    from mocks.server import MockServer
    from mocks.sim.actor import Market
    from mocks.sim.market import MarketSettings
    from mocks.transport import Link, direct_socket, send_direct
    from mocks.vendors import vendor_spec

    class NoLink(Link):
        """No byte-fault layer: reads go straight to the stream, writes as `Link` writes when
        no switch is on (`send_direct`, or `write_now` from the feed), without looking at the
        switches."""

        def __init__(self, stream: trio.abc.Stream, rng: Any = None) -> None:
            super().__init__(stream, rng)
            self._direct = functools.partial(send_direct, stream, direct_socket(stream))
            setattr(self, "receive_some", stream.receive_some)  # noqa: B010 - instance beats class

        @property
        def can_write_now(self) -> bool:
            return self._socket is not None and not self.holding

        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            if self.holding:  # what `write_now` could not write goes first
                await self.flush()
            await self._direct(data)

    if not layer:
        setattr(mocks.server, "Link", NoLink)  # noqa: B010 - what the server wraps streams in

    async def main() -> None:
        market = Market(MarketSettings(seed=0), max_rate=True, resolution=MAX_RATE_RESOLUTION)
        spec = vendor_spec(vendor)
        async with trio.open_nursery() as nursery:
            await nursery.start(market.run)
            hub = Hub(market)
            core = spec.create_server(hub, market.sim)
            server = MockServer(core, hub, market, backpressure=True, keep_events=False)
            if layer:
                await nursery.start(Director(server, (), seed=0).run)
            else:
                server.faults = None
            await nursery.start(server.run)
            port = await server.serve_tcp("127.0.0.1", 0)
            print(f"{vendor} listening on ws://127.0.0.1:{port}{spec.path}", flush=True)
            with trio.open_signal_receiver(signal.SIGINT) as signals:
                async for _ in signals:
                    break
            nursery.cancel_scope.cancel()

    trio.run(main)


# -- the orchestra -------------------------------------------------------------------------------


class Server:
    """A server subprocess; `url` from the line it prints when it listens."""

    def __init__(self, argv: Sequence[str], profile: Path | None = None) -> None:
        if profile is not None:
            argv = [PYTHON, "-m", "cProfile", "-o", str(profile), *argv[1:]]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if " listening on " not in line:
            self.stop()
            raise RuntimeError(f"server did not start: {argv} printed {line!r}")
        self.url = line.split(" listening on ", 1)[1].strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # cProfile writes its file on the way out
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run_client(
    vendor: str,
    url: str,
    conversation: bool,
    args: argparse.Namespace,
    capture: Path | None = None,
) -> Counts:
    argv = [PYTHON, __file__, "client", vendor, url, "--warmup", str(args.warmup)]
    argv += ["--window", str(args.window)]
    if conversation:
        argv.append("--conversation")
    if capture is not None:
        argv += ["--capture", str(capture)]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"client failed: {out.stderr.strip().splitlines()[-1:]}")
    return Counts(**orjson.loads(out.stdout.strip().splitlines()[-1]))


def profile_path(args: argparse.Namespace, label: str, round_: int) -> Path | None:
    directory = os.environ.get("FEEDLAB_BENCH_PROFILE")
    if not directory:
        return None
    Path(directory).mkdir(parents=True, exist_ok=True)
    return Path(directory) / f"{label}-{round_}.prof"


def serve_and_measure(
    label: str,
    argv: Sequence[str],
    vendor: str,
    conversation: bool,
    args: argparse.Namespace,
    round_: int,
    capture: Path | None = None,
) -> Counts:
    server = Server(argv, profile_path(args, label, round_))
    try:
        return run_client(vendor, server.url, conversation, args, capture)
    finally:
        server.stop()


def mock_argv(vendor: str) -> list[str]:
    return [*FEEDLAB, "serve", vendor, "--port", "0", "--rate", "max", "--seed", "1"]


def bare_argv(frames: Path) -> list[str]:
    return [PYTHON, __file__, "bare", str(frames)]


def layer_argv(vendor: str, layer: bool) -> list[str]:
    return [PYTHON, __file__, "layer", vendor, "on" if layer else "off"]


UNITS: dict[str, tuple[str, Callable[[Counts], float]]] = {
    "events": ("events/s", lambda c: c.messages / c.seconds),
    "messages": ("messages/s", lambda c: c.messages / c.seconds),
    "MB": ("MB/s", lambda c: c.bytes / c.seconds / MB),
}


def compare(
    title: str,
    unit: str,
    target: float,
    baseline: tuple[str, list[Counts]],
    measured: tuple[str, list[Counts]],
) -> None:
    name, rate = UNITS[unit]
    base = max(rate(c) for c in baseline[1])
    best = max(rate(c) for c in measured[1])
    sample = max(measured[1], key=rate)
    per_frame = sample.messages / max(sample.frames, 1)
    frame_bytes = sample.bytes / max(sample.frames, 1)
    width = max(len(baseline[0]), len(measured[0])) + 1
    print(f"-- {title}")
    print(f"   {baseline[0] + ':':<{width}} {base:14,.2f} {name}")
    print(f"   {measured[0] + ':':<{width}} {best:14,.2f} {name}")
    print(f"   frames: {per_frame:,.1f} messages and {frame_bytes:,.0f} bytes each on average")
    verdict = "met" if best / base >= target else "NOT met"
    print(f"   ratio {best / base:.2f}, target >= {target} ({verdict})", flush=True)


def rebatch(frames_path: Path, size: int) -> None:
    """Rewrite captured array frames as frames of `size` events each (the same events, each
    encoded as the mock encoded it: orjson and msgspec both write the shortest round-trip float)."""
    events = [
        event for frame in orjson.loads(frames_path.read_bytes()) for event in orjson.loads(frame)
    ]
    batches = [events[i : i + size] for i in range(0, len(events) - size + 1, size)]
    frames_path.write_bytes(orjson.dumps([orjson.dumps(batch).decode() for batch in batches]))


def vendor_figure(
    vendor: str, unit: str, title: str, target: float, args: argparse.Namespace, tmp: Path
) -> None:
    frames = tmp / f"{vendor}-frames.json"
    mock: list[Counts] = []
    bare: list[Counts] = []
    baseline = "bare asyncio websockets, captured frames"
    for round_ in range(args.rounds):
        capture = frames if round_ == 0 else None
        mock.append(
            serve_and_measure(vendor, mock_argv(vendor), vendor, True, args, round_, capture)
        )
        if capture is not None and vendor in BARE_BATCH:
            # The baseline: the same events in pre-encoded batches of its size.
            rebatch(frames, BARE_BATCH[vendor])
            baseline = (
                f"bare asyncio websockets, captured events in {BARE_BATCH[vendor]}-event frames"
            )
        bare.append(serve_and_measure("bare", bare_argv(frames), vendor, False, args, round_))
    compare(title, unit, target, (baseline, bare), (f"feedlab serve {vendor} --rate max", mock))


def layer_figure(vendor: str, unit: str, args: argparse.Namespace) -> None:
    with_layer: list[Counts] = []
    without: list[Counts] = []
    for round_ in range(args.rounds):
        without.append(
            serve_and_measure(
                f"{vendor}-nolayer", layer_argv(vendor, False), vendor, True, args, round_
            )
        )
        with_layer.append(
            serve_and_measure(
                f"{vendor}-layer", layer_argv(vendor, True), vendor, True, args, round_
            )
        )
    compare(
        f"6. fault layer, no fault active: {vendor}",
        unit,
        0.95,
        ("without Link, filter, director", without),
        ("with Link, MessageFaults, director", with_layer),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="role")
    client = sub.add_parser("client")
    client.add_argument("vendor", choices=sorted(CONVERSATIONS))
    client.add_argument("url")
    client.add_argument("--conversation", action="store_true")
    client.add_argument("--warmup", type=float, default=1.5)
    client.add_argument("--window", type=float, default=3.0)
    client.add_argument("--capture", type=Path)
    bare = sub.add_parser("bare")
    bare.add_argument("frames", type=Path)
    layer = sub.add_parser("layer")
    layer.add_argument("vendor", choices=sorted(CONVERSATIONS))
    layer.add_argument("state", choices=("on", "off"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--only", default="massive,theta,amberdata,layer")
    args = parser.parse_args(argv)
    if args.role == "client":
        client_main(args)
        return
    if args.role == "bare":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(bare_serve(args.frames))
        return
    if args.role == "layer":
        layer_main(args.vendor, args.state == "on")
        return

    import tempfile

    only = set(args.only.split(","))
    print(
        f"best of {args.rounds} rounds; {args.warmup} s warm-up, {args.window} s counted; "
        "client: asyncio websockets + orjson, one process",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        if "massive" in only:
            vendor_figure(
                "massive",
                "events",
                "1. Massive, 1,000 quote contracts, batched",
                0.8,
                args,
                Path(tmp),
            )
        if "theta" in only:
            vendor_figure(
                "theta",
                "messages",
                "2. Theta, 100 quote streams, one message per frame",
                0.8,
                args,
                Path(tmp),
            )
        if "amberdata" in only:
            vendor_figure(
                "amberdata", "MB", "3. Amberdata, order-book snapshots", 0.8, args, Path(tmp)
            )
        if "layer" in only:
            layer_figure("massive", "events", args)
            layer_figure("theta", "messages", args)


if __name__ == "__main__":
    main()
