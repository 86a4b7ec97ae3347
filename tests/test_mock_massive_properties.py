"""Property tests of the Massive mock: framing keeps every event once and in order within the
size limits, rendering round-trips, and subscription replies follow the channel rules."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from mocks.hub import Hub
from mocks.massive import MassiveSession, create_server
from mocks.massive.aggregates import SECOND_MS, BarBuilder, DayTotals
from mocks.massive.wire import EXCHANGE_IDS
from mocks.session import ConnectionInfo, Send
from mocks.sim.contracts import OptionContract
from mocks.sim.events import OptionQuote, OptionTrade
from mocks.sim.exchanges import TRADE_CONDITIONS, US_OPTIONS_MICS
from mocks.sim.market import MarketSim
from mocks.sim.symbols import format_occ

CONTRACT = OptionContract("SPY", dt.date(2025, 12, 19), 650_000, "C")
SYMBOL = format_occ(CONTRACT)
T0_NS = 1_741_959_000_000_000_000


def _session(**options: Any) -> MassiveSession:
    market = MarketSim()
    server = create_server(Hub(market), market, **options)
    session = server.open(ConnectionInfo(1, "/options"), 0.0)
    session.opened(0.0)
    session.received('{"action":"auth","params":"k"}', 0.0)
    session.received(f'{{"action":"subscribe","params":"Q.{SYMBOL},T.{SYMBOL}"}}', 0.0)
    return session


prices = st.integers(min_value=0, max_value=500_000).map(lambda c: c / 100)
sizes = st.integers(min_value=0, max_value=100_000)
mics = st.sampled_from(US_OPTIONS_MICS)


@st.composite
def quotes(draw: st.DrawFn, seq: int) -> OptionQuote:
    return OptionQuote(
        T0_NS + draw(st.integers(0, 10**12)),
        CONTRACT,
        draw(prices),
        draw(prices),
        draw(sizes),
        draw(sizes),
        draw(mics),
        draw(mics),
        seq,
    )


@st.composite
def trades(draw: st.DrawFn, seq: int) -> OptionTrade:
    names = [n for n, _ in TRADE_CONDITIONS]
    conditions = tuple(draw(st.lists(st.sampled_from(names), min_size=1, max_size=2)))
    return OptionTrade(
        T0_NS + draw(st.integers(0, 10**12)),
        CONTRACT,
        draw(prices),
        draw(sizes),
        draw(mics),
        conditions,
        seq,
    )


@given(
    kinds=st.lists(st.booleans(), max_size=120),
    data=st.data(),
    max_batch=st.integers(1, 50),
    max_bytes=st.integers(300, 5000),
)
def test_frames_keep_every_event_once_in_order_within_limits(
    kinds: list[bool], data: st.DataObject, max_batch: int, max_bytes: int
) -> None:
    events: list[OptionQuote | OptionTrade] = [
        data.draw(quotes(i)) if is_quote else data.draw(trades(i))
        for i, is_quote in enumerate(kinds)
    ]
    session = _session(max_batch_events=max_batch, max_frame_bytes=max_bytes, flush_interval=0.1)
    actions = session.publish(events, 1.0) + session.tick(1.1)
    sends = [a for a in actions if isinstance(a, Send)]
    decoded = [orjson.loads(a.data) for a in sends]
    assert all(isinstance(a.data, str) and len(a.data.encode()) <= max_bytes for a in sends)
    assert all(1 <= len(frame) <= max_batch for frame in decoded)
    assert [m["q"] for frame in decoded for m in frame] == list(range(len(events)))
    assert [e for a in sends for e in a.events] == events
    for message, event in zip((m for f in decoded for m in f), events, strict=True):
        assert message["t"] == event.ts_ns // 1_000_000 and message["sym"] == SYMBOL
        if isinstance(event, OptionQuote):
            assert message["ev"] == "Q"
            assert (message["bp"], message["ap"]) == (event.bid, event.ask)
            assert (message["bs"], message["as"]) == (event.bid_size, event.ask_size)
            assert message["bx"] == EXCHANGE_IDS[event.bid_exchange]
            assert message["ax"] == EXCHANGE_IDS[event.ask_exchange]
        else:
            assert message["ev"] == "T"
            assert (message["p"], message["s"]) == (event.price, event.size)
            assert message["x"] == EXCHANGE_IDS[event.exchange]
            assert all(200 < c < 250 for c in message["c"])


prefixes = st.sampled_from(["Q", "T", "A", "AM", "ZZ", "XQ", "FMV", "q", ""])
symbols = st.sampled_from([SYMBOL, "O:QQQ250321P00480000", "*", "O:bad", "AAPL"])


@given(st.lists(st.tuples(prefixes, symbols), max_size=30))
def test_subscribe_replies_once_per_known_channel_and_never_to_unknown_ones(
    tokens: list[tuple[str, str]],
) -> None:
    session = _session()
    params = ",".join(f"{p}.{s}" if p else s for p, s in tokens)
    actions = session.received(orjson.dumps({"action": "subscribe", "params": params}), 1.0)
    replies = [m for a in actions if isinstance(a, Send) for m in orjson.loads(a.data)]
    known = [(p, s) for p, s in tokens if p in ("Q", "T", "A", "AM")]
    assert len(replies) == len(known)
    for (prefix, symbol), reply in zip(known, replies, strict=True):
        if (prefix, symbol) == ("Q", "*"):
            assert reply["status"] == "error"
        else:
            assert reply == {
                "ev": "status",
                "status": "success",
                "message": f"subscribed to: {prefix}.{symbol}",
            }


bar_steps = st.lists(
    st.one_of(
        st.tuples(st.just("trade"), st.integers(0, 3), st.integers(0, 10_000)),  # contract, ms
        st.tuples(st.just("discard"), st.integers(0, 3), st.just(0)),
        st.tuples(st.just("due"), st.just(0), st.integers(0, 12_000)),  # bars ending by then
    ),
    max_size=60,
)


@given(bar_steps)
def test_bars_keep_their_earliest_end_and_come_due_as_a_full_scan_finds(
    steps: list[tuple[str, int, int]],
) -> None:
    builder = BarBuilder("A", SECOND_MS)
    day = DayTotals()
    contracts = [
        OptionContract("SPY", dt.date(2025, 3, 21), 570_000 + i * 1000, "C") for i in range(4)
    ]
    clock = 0  # trades in time order, as a session gets them
    for step, n, ms in steps:
        if step == "trade":
            clock = max(clock, ms)
            trade = OptionTrade(clock * 1_000_000, contracts[n], 1.0, 1, "CBOE", (), 1)
            builder.add(trade, day.add(trade))
        elif step == "discard":
            builder.discard(contracts[n])
        else:
            expected = sorted(
                ((c, b) for c, b in builder._open.items() if b.start_ms + SECOND_MS <= ms),
                key=lambda cb: (cb[1].start_ms, cb[0]),
            )
            assert builder.due(lambda end, ms=ms: end <= ms) == expected
        starts = [b.start_ms for b in builder._open.values()]
        assert builder.earliest_end_ms() == (min(starts) + SECOND_MS if starts else None)


THREE = [OptionContract("SPY", dt.date(2025, 12, 19), 650_000 + i * 5_000, "C") for i in range(3)]
subscription_steps = st.lists(
    st.tuples(
        st.sampled_from(["subscribe", "unsubscribe"]),
        st.sampled_from(["Q", "T", "A"]),
        st.integers(0, 2),
    ),
    max_size=20,
)


@given(subscription_steps)
def test_quotes_stream_for_exactly_the_contracts_subscribed_on_q(
    steps: list[tuple[str, str, int]],
) -> None:
    session = _session()
    session.received(f'{{"action":"unsubscribe","params":"Q.{SYMBOL},T.{SYMBOL}"}}', 0.0)
    on_q: set[str] = set()
    for action, channel, n in steps:
        symbol = format_occ(THREE[n])
        session.received(f'{{"action":"{action}","params":"{channel}.{symbol}"}}', 0.0)
        if channel == "Q":
            (on_q.add if action == "subscribe" else on_q.discard)(symbol)
    events = [
        OptionQuote(T0_NS + i, c, 1.0, 1.1, 1, 1, "XCBO", "XCBO", i) for i, c in enumerate(THREE)
    ]
    frames = [a for a in session.publish(events, 1.0) if isinstance(a, Send)]
    streamed = {e["sym"] for f in frames for e in orjson.loads(f.data) if e["ev"] == "Q"}
    assert streamed == on_q
