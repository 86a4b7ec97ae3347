"""Benchmark: `feedlab replay --speed max` of batched Massive frames to one client over TCP.

Prints events per second for the replay (the vendor core answering auth and subscribe, then the
recording streamed through the per-client playback, subscription filter and the mock's
connection driver) and for a bare loop that sends the same recorded frames on a plain
trio-websocket server, measured in the same run, and the ratio of the two. The client is the same
trio-websocket reader for both and only counts. No assertion: a benchmark informs, CI decides
nothing on wall-clock speed.

    .venv/bin/python bench/bench_replay.py [--frames 400] [--batch 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import trio
import trio_websocket

from mocks.massive import wire
from mocks.recording import Header, RecordingWriter, read_recording
from mocks.replay import build_timeline, open_replay

SYMBOLS = [f"O:SPY250321C00{strike:03d}000" for strike in range(560, 580)]
RECEIVE_BUFFER = 1 << 18


def make_recording(path: Path, frames: int, batch: int) -> int:
    """A Massive session: the conversation, then `frames` frames of `batch` quotes each."""
    writer = RecordingWriter(path, Header("massive", {"kind": "bench"}, "2025-03-14T13:30:00Z"))
    writer.open(0.0, 1, "/options", {}, {})
    writer.message(0.0, 1, "server", '[{"ev":"status","status":"connected","message":"x"}]')
    writer.message(0.0, 1, "client", '{"action":"auth","params":"REDACTED"}')
    subscribe = ",".join(f"Q.{s}" for s in SYMBOLS)
    writer.message(
        0.0, 1, "client", msgspec.json.encode({"action": "subscribe", "params": subscribe}).decode()
    )
    encoder = msgspec.json.Encoder()
    sequence = 1_000_000
    for n in range(frames):
        events = []
        for i in range(batch):
            sequence += 1
            quote = wire.QuoteEvent(
                "Q", SYMBOLS[i % len(SYMBOLS)], 302, 323, 5.04, 5.32, 11, 180,
                1741959000000 + n, sequence,
            )  # fmt: skip
            events.append(encoder.encode(quote))
        writer.message(0.001 * (n + 1), 1, "server", wire.frame(events))
    writer.end(frames * 0.001 + 1)
    return frames * batch


async def receive(url: str, data_frames: int, conversation: bool) -> float:
    """Connect, (auth and subscribe), then read `data_frames` data frames; seconds taken from
    the first data frame to the last."""
    async with trio_websocket.open_websocket_url(url, receive_buffer_size=RECEIVE_BUFFER) as ws:
        if conversation:
            await ws.get_message()
            await ws.send_message('{"action":"auth","params":"k"}')
            await ws.get_message()
            subscribe = ",".join(f"Q.{s}" for s in SYMBOLS)
            await ws.send_message(
                msgspec.json.encode({"action": "subscribe", "params": subscribe}).decode()
            )
            await ws.get_message()
        await ws.get_message()
        start = time.perf_counter()
        for _ in range(data_frames - 1):
            await ws.get_message()
        return time.perf_counter() - start


async def bench_replay(path: Path, data_frames: int) -> float:
    async with open_replay(path, speed=None) as service:
        port = await service.serve_tcp()
        return await receive(f"ws://127.0.0.1:{port}/options", data_frames, True)


async def bench_bare(path: Path, data_frames: int) -> float:
    """Read the same recording, and send its data frames to whoever connects."""
    frames = [f.data for f in build_timeline(read_recording(path)).frames]

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        for frame in frames:
            await ws.send_message(frame)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
        seconds = await receive(f"ws://127.0.0.1:{server.port}/", data_frames, False)
        nursery.cancel_scope.cancel()
    return seconds


def best(
    run: Callable[[Path, int], Awaitable[float]], path: Path, frames: int, rounds: int
) -> float:
    return min(trio.run(run, path, frames) for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl"
        events = make_recording(path, args.frames, args.batch)
        # The timed part starts at the first data frame: count the rest.
        counted = events - args.batch
        bare = best(bench_bare, path, args.frames, args.rounds)
        replay = best(bench_replay, path, args.frames, args.rounds)
    bare_rate, replay_rate = counted / bare, counted / replay
    print(f"frames: {args.frames} x {args.batch} quotes ({events:,} events), best of {args.rounds}")
    print(f"bare loop (read + send the same frames): {bare_rate:12,.0f} events/s")
    print(f"feedlab replay --speed max:              {replay_rate:12,.0f} events/s")
    print(f"ratio replay / bare loop:                {replay_rate / bare_rate:12.2f}")
    print("targets: >= 500,000 events/s and >= 0.8 of the bare loop")


if __name__ == "__main__":
    main()
