"""Make the synthetic sample recordings in this directory: each vendor's mock, seed 7, driven by
feedlab's built-in client for a minute of virtual market time, recorded by the mock itself
(`serve --record`'s recorder). Same seed, same bytes:

    .venv/bin/python recordings/make_samples.py            # rewrite all three
    .venv/bin/python recordings/make_samples.py massive    # one
"""

from __future__ import annotations

import gzip
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import trio.testing

from clients.amberdata import AmberdataClient
from clients.common import Backoff
from clients.massive import MassiveClient
from clients.theta import ThetaClient
from mocks.recorder import Redactor, WireRecorder, mock_header
from mocks.recording import RecordingWriter
from mocks.sim.market import MarketSettings
from mocks.testing import run_mock

HERE = Path(__file__).resolve().parent
SEED = 7
# Seconds of virtual market time. Off the whole second on purpose: heartbeats, index reports and
# OHLC bars fall on whole seconds, and a frame sent at the very instant the client stops would be
# ordered against the client's STOP/close by Trio's deadline heap (which breaks ties by object
# id, i.e. by memory layout): the file's bytes would then depend on PYTHONHASHSEED.
DURATION = 60.5
ACTIVITY = 4.0  # busier than the default market: batches of several events per frame
KEY = "UAK-sample-key-7"  # Massive and Amberdata both see it; the file must not


@dataclass(frozen=True)
class Sample:
    vendor: str
    subscriptions: tuple[str, ...]
    client: Callable[..., Any]

    @property
    def path(self) -> Path:
        return HERE / f"{self.vendor}-synthetic-seed{SEED}.jsonl.gz"


SAMPLES = {
    "massive": Sample(
        "massive",
        (
            "Q.O:SPY250321C00575000",
            "T.O:SPY250321C00575000",
            "Q.O:QQQ250321P00480000",
            "T.O:QQQ250321P00480000",
            "AM.O:SPY250321C00575000",
        ),
        MassiveClient,
    ),
    "theta": Sample(
        "theta",
        (
            "option:quote:SPY:20250321:575:C",
            "option:trade:SPY:20250321:575:C",
            "option:trade:QQQ:20250321:480:P",
            "index:price:SPX",
        ),
        ThetaClient,
    ),
    "amberdata": Sample(
        "amberdata",
        (
            "market:options:order:snapshots:BTC-28MAR25-60000-C",
            "market:options:trades:BTC-28MAR25-60000-C",
            "market:options:tickers:ETH-28MAR25-2500-P",
            "market:options:trades:ETH-28MAR25-2500-P",
        ),
        AmberdataClient,
    ),
}


async def record_sample(sample: Sample, out: Path, seed: int = SEED) -> list[Any]:
    """Run the mock and the client in this (virtual-time) Trio run; returns what the client
    delivered (the replay tests compare a replay's delivery with it)."""
    settings = MarketSettings(seed=seed, activity=ACTIVITY)
    redactor = Redactor(sample.vendor)
    writer = RecordingWriter(out, mock_header(sample.vendor, seed, settings.start, redactor))
    delivered: list[Any] = []
    # Theta request ids are process-wide and only grow; a sample's bytes must not depend on what
    # else ran in this process first, so its (fresh) terminal sees ids from 0. Safe: that
    # terminal has never seen an id, and the counter never goes back for anyone else after.
    saved_request_id = ThetaClient._next_request_id
    ThetaClient._next_request_id = 0
    try:
        async with run_mock(sample.vendor, market=settings) as mock:
            WireRecorder(writer, redactor).attach(mock.mock_server)
            client = sample.client(
                KEY,
                mock.url,
                connector=mock.connector,
                clock=lambda: mock.market.now_ns() / 1e9,
                backoff=Backoff(rng=random.Random(seed)),
            )
            async with client:
                await client.subscribe(*sample.subscriptions)
                with trio.move_on_after(DURATION):
                    async for event in client:
                        delivered.append(event)
            # The client has closed its connection; let the mock see the close frame.
            await trio.sleep(1.0)
            writer.end(mock.market.now())
    finally:
        ThetaClient._next_request_id = max(saved_request_id, ThetaClient._next_request_id)
        writer.close_file()
    return delivered


def pin_scheduler(seed: int) -> None:
    """Trio shuffles the order of tasks woken at the same instant; pin it so that lines written
    at one instant by different tasks keep their order from run to run (a private hook)."""
    import trio._core._run as trio_run

    trio_run._r.seed(seed)


def make(sample: Sample, out: Path | None = None, seed: int = SEED) -> tuple[Path, list[Any]]:
    """Record, then compress in one go: the recorder's timed sync flushes would otherwise make
    the gzip bytes (not the lines) differ from run to run."""
    out = out or sample.path
    plain = out.with_name(out.name.removesuffix(".gz") + ".tmp")
    pin_scheduler(seed)
    delivered = trio.run(
        record_sample, sample, plain, seed, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    with out.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(plain.read_bytes())
    plain.unlink()
    return out, delivered


def main(argv: list[str]) -> int:
    """`make_samples.py [VENDOR...] [--out-dir DIR]` (default: rewrite the shipped samples)."""
    out_dir: Path | None = None
    if "--out-dir" in argv:
        i = argv.index("--out-dir")
        out_dir = Path(argv[i + 1])
        argv = argv[:i] + argv[i + 2 :]
    for name in argv or list(SAMPLES):
        sample = SAMPLES[name]
        path, delivered = make(sample, out_dir / sample.path.name if out_dir else None)
        size = path.stat().st_size
        print(f"{path.name}: {size:,} bytes, {len(delivered)} events delivered")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
