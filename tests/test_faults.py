"""Every vendor-neutral fault, observed by a client on the wire (the echo vendor of
tests/echo_vendor.py keeps the protocol out of the way), plus the fault file format."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import pairwise

import orjson
import pytest
import trio
import trio_websocket
import wsproto
import wsproto.events
from hypothesis import given
from hypothesis import strategies as st
from wsproto.utilities import LocalProtocolError

from clients.common import tcp_connector
from mocks.director import Director, corrupt
from mocks.faults import KINDS, Fault, FaultError, fault, parse_duration, parse_fault
from mocks.hub import Hub
from mocks.server import MockServer, _benign
from mocks.sim.actor import Market
from mocks.sim.events import OptionQuote
from mocks.sim.market import MarketSettings
from mocks.sim.rng import derive_rng
from mocks.sim.symbols import parse_occ
from mocks.transport import memory_pair
from tests.echo_vendor import EchoServer

TICKER = "O:SPY250321C00575000"


@asynccontextmanager
async def echo(
    faults: tuple[Fault, ...] = (), max_buffer: int = 50_000, activity: float = 1.0
) -> AsyncIterator[tuple[MockServer, Director]]:
    market = Market(MarketSettings(seed=2, activity=activity))
    hub = Hub(market)
    server = MockServer(EchoServer(hub), hub, market, seed=2, max_buffer=max_buffer)
    director = Director(server, faults, seed=2, parse_contract=parse_occ)
    async with trio.open_nursery() as nursery:
        await nursery.start(market.run)
        await nursery.start(server.run)
        await nursery.start(director.run)
        yield server, director
        nursery.cancel_scope.cancel()


async def subscribed(ws: trio_websocket.WebSocketConnection, *tickers: str) -> None:
    assert await ws.get_message() == "hello"
    for ticker in tickers or (TICKER,):
        await ws.send_message(ticker)
        assert (await ws.get_message()).startswith("subscribed")


async def quotes(ws: trio_websocket.WebSocketConnection, seconds: float) -> list[dict]:
    out = []
    with trio.move_on_after(seconds):
        while True:
            out.append(orjson.loads(await ws.get_message()))
    return out


# -- the format -----------------------------------------------------------------------------------


def test_durations() -> None:
    assert parse_duration("30s") == 30 and parse_duration("2m") == 120
    assert parse_duration("250ms") == 0.25 and parse_duration("1h") == 3600
    assert parse_duration(5) == 5.0
    for bad in ("soon", "-1s", True, "3 days"):
        with pytest.raises(FaultError):
            parse_duration(bad)


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({"at": "1s"}, "kind: missing"),
        ({"kind": "explode", "at": "1s"}, "unknown fault 'explode'"),
        ({"kind": "close"}, "at: missing"),
        ({"kind": "close", "at": "1s", "code": "x"}, "code: expected int"),
        ({"kind": "close", "at": "1s", "colour": 3}, "close takes no 'colour'"),
        ({"kind": "close", "at": "1s", "duration": "5s"}, "takes no duration"),
        ({"kind": "cut", "count": 3, "at": "1s"}, "count: goes with every"),
        ({"kind": "drop", "probability": 2}, "probability"),
        ({"kind": "corrupt", "at": "1s", "mode": "shred"}, "mode"),
        ({"kind": "close", "at": "1s", "connection": 0}, "connection"),
    ],
)
def test_bad_faults_name_the_key_and_problem(table: dict, needle: str) -> None:
    with pytest.raises(FaultError, match=needle):
        parse_fault(table)


def test_vendor_specific_kinds_are_refused_elsewhere() -> None:
    with pytest.raises(FaultError, match="upstream_outage is not something massive does"):
        parse_fault({"kind": "upstream_outage", "at": "1s"}, "massive")
    assert parse_fault({"kind": "upstream_outage", "at": "1s"}, "theta").kind == "upstream_outage"


@given(st.sampled_from(sorted(KINDS)), st.floats(0, 1e5), st.integers(1, 9))
def test_table_form_round_trips(kind: str, at: float, connection: int) -> None:
    made = parse_fault({"kind": kind, "at": at, "connection": connection})
    assert parse_fault(made.to_table()) == made


def test_every_param_has_a_default_so_a_kind_and_a_time_suffice() -> None:
    for kind in KINDS:
        made = fault(kind, at="1s")
        for param in KINDS[kind].params:
            assert made.param(param.name) == param.default


def test_schedules_are_seeded_and_reproducible() -> None:
    market = Market(MarketSettings())
    server = MockServer(EchoServer(Hub(market)), Hub(market), market)
    faults = [fault("close", every="2m", count=3), fault("cut", probability=0.01)]
    first = Director(server, faults, seed=4, horizon=3600)
    again = Director(server, faults, seed=4, horizon=3600)
    other = Director(server, faults, seed=5, horizon=3600)
    assert first.firing_times(0, faults[0]) == [120.0, 240.0, 360.0]
    poisson = first.firing_times(1, faults[1])
    assert poisson == again.firing_times(1, faults[1]) != other.firing_times(1, faults[1])
    assert 10 < len(poisson) < 70  # about 36 expected in an hour at 0.01/s


# -- bytes and WebSocket faults on the wire -------------------------------------------------------


async def test_latency_delays_every_frame(autojump_clock: trio.abc.Clock) -> None:
    async with echo() as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws)
        await director.inject(fault("latency", at=0, ms=1500.0, duration="1m"))
        before = trio.current_time()
        await ws.get_message()
        await ws.get_message()
        assert trio.current_time() - before >= 1.5


async def test_bandwidth_throttles(autojump_clock: trio.abc.Clock) -> None:
    async with echo() as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws)
        free = len(await quotes(ws, 60))
        await director.inject(fault("bandwidth", at=0, bytes_per_second=20.0, duration="2m"))
        throttled = len(await quotes(ws, 60))
        assert throttled < free / 2


async def test_stall_with_duration_goes_silent_then_resumes(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with echo() as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws)
        await director.inject(fault("stall", at=0, duration="30s"))
        start = trio.current_time()
        got = await quotes(ws, 25)
        assert len(got) <= 3  # what was already in the pipe
        with trio.fail_after(30):
            await ws.get_message()
        assert trio.current_time() - start >= 25


@pytest.mark.parametrize("kind", ["cut", "reset"])
async def test_cut_and_reset_are_1006(kind: str, autojump_clock: trio.abc.Clock) -> None:
    async with echo() as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws)
        await director.inject(fault(kind, at=0))
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await quotes(ws, 60)
        assert closed.value.reason.code == 1006
        await server.history[0].done.wait()
        assert server.ledger.connections[1].close_code == 1006


async def test_close_sends_the_code_and_reason(autojump_clock: trio.abc.Clock) -> None:
    async with echo() as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws)
        await director.inject(fault("close", at=0, code=4000, reason="go away"))
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await quotes(ws, 60)
        assert (closed.value.reason.code, closed.value.reason.reason) == (4000, "go away")


async def test_slice_still_delivers_whole_messages(autojump_clock: trio.abc.Clock) -> None:
    async with echo() as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws)
        await director.inject(fault("slice", at=0, bytes=3, delay_ms=10.0, duration="1m"))
        before = trio.current_time()
        quote = orjson.loads(await ws.get_message())
        assert quote["sym"] == TICKER
        assert trio.current_time() - before >= 0.01 * 20  # a ~80-byte frame in 3-byte pieces


async def test_withhold_pong_keeps_data_but_starves_pings(autojump_clock: trio.abc.Clock) -> None:
    async with echo() as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws)
        with trio.fail_after(5):
            await ws.ping(b"one")
        await director.inject(fault("withhold_pong", at=0, duration="1m"))
        with trio.move_on_after(10) as unanswered:
            await ws.ping(b"two")
        assert unanswered.cancelled_caught
        assert await quotes(ws, 5)  # data still flows


async def test_oversize_frame_makes_a_1mib_client_close_1009(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with echo() as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws)
        await director.inject(fault("oversize_frame", at=0))
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await quotes(ws, 30)
        assert closed.value.reason.code == 1009


async def test_fragment_splits_frames_on_the_wire(autojump_clock: trio.abc.Clock) -> None:
    """A raw wsproto client sees continuation frames (trio-websocket would reassemble them)."""
    async with echo() as (server, director):
        await director.inject(fault("fragment", at=0, size=4, duration="1m"))
        client, server_end = memory_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_stream, server_end, "raw")
            ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            await client.send_all(ws.send(wsproto.events.Request(host="x", target="/echo")))
            pieces: list[str] = []
            while not any(isinstance(p, str) and p.endswith("hello") for p in ["".join(pieces)]):
                ws.receive_data(await client.receive_some())
                for event in ws.events():
                    if isinstance(event, wsproto.events.TextMessage):
                        pieces.append(event.data)
                        assert len(event.data) <= 4
            assert len(pieces) > 1 and "".join(pieces) == "hello"
            nursery.cancel_scope.cancel()


async def test_restart_drops_refuses_then_serves(autojump_clock: trio.abc.Clock) -> None:
    async with echo() as (server, director):
        async with server.connect("ws://x/echo") as ws:
            await subscribed(ws)
            await director.inject(fault("restart", at=0, duration="20s"))
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await quotes(ws, 5)
            assert closed.value.reason.code == 1006
        with pytest.raises(
            (
                trio_websocket.HandshakeError,
                trio.BrokenResourceError,
                trio_websocket.ConnectionClosed,
                OSError,
            )
        ):
            async with server.connect("ws://x/echo") as refused:
                await refused.get_message()
        await trio.sleep(21)
        async with server.connect("ws://x/echo") as ws:
            await subscribed(ws)


# -- message faults on the wire -------------------------------------------------------------------


async def test_drop_removes_events_and_the_ledger_knows(autojump_clock: trio.abc.Clock) -> None:
    async with echo() as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws)
        await director.inject(fault("drop", at=0, events=3))
        got = await quotes(ws, 120)
        record = server.ledger.connections[1]
        assert record.counts["dropped"] == 3
        dropped = {e.sequence for e in record.events["dropped"]}
        received = {q["q"] for q in got}
        assert dropped.isdisjoint(received)
        # everything else routed arrived, except what was still in flight at the end
        missing = [
            e
            for e in record.events["routed"]
            if isinstance(e, OptionQuote) and e.sequence not in received | dropped
        ]
        assert all(e.ts_ns > got[-1]["t"] for e in missing)


async def test_duplicate_sends_twice(autojump_clock: trio.abc.Clock) -> None:
    async with echo() as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws)
        await director.inject(fault("duplicate", at=0, events=2))
        seqs = [q["q"] for q in await quotes(ws, 60)]
        assert len(seqs) - len(set(seqs)) == 2


async def test_reorder_lets_later_events_overtake(autojump_clock: trio.abc.Clock) -> None:
    async with echo() as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws)
        await director.inject(fault("reorder", at=0, events=1, by=2))
        seqs = [q["q"] for q in await quotes(ws, 60)]
        assert seqs != sorted(seqs) and sorted(seqs) == sorted(set(seqs))


async def test_a_held_event_is_never_behind_one_more_than_within_newer(
    autojump_clock: trio.abc.Clock,
) -> None:
    """`by` later events can take seconds on a quiet contract: found by `feedlab chaos --vendor
    theta --seed 9`, an event held for 6 s went out into a socket that had stalled meanwhile,
    older than anything a gap notice could be expected to cover."""
    async with echo() as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws)
        await director.inject(fault("reorder", at=0, events=1, by=10_000, within="1s"))
        got = await quotes(ws, 30)
        stamps = [q["t"] for q in got]
        late = next(i for i in range(1, len(stamps)) if stamps[i] < stamps[i - 1])
        assert 0 < stamps[late - 1] - stamps[late] <= 1_000_000_000  # ns: by 1 s at most
        assert len(stamps) - late > 10  # it did not wait for the 10,000 later events


async def test_a_held_event_waits_no_longer_than_within_on_a_quiet_contract(
    autojump_clock: trio.abc.Clock,
) -> None:
    """With no later event to pass it (a contract that quotes every few seconds), a held event
    goes out once it is `within` old: a reorder, not a delay of seconds (which a client's
    staleness check would take for a silent feed)."""
    async with echo(activity=0.2) as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws)
        await director.inject(fault("reorder", at=0, events=3, by=10_000, within="1s"))
        received: list[tuple[int, int]] = []  # (the quote's t, the market's time on receipt)
        with trio.move_on_after(120):
            while True:
                quote = orjson.loads(await ws.get_message())
                received.append((quote["t"], server.market.now_ns()))
        assert server.ledger.connections[1].counts["reordered"] == 3
        assert len(received) > 10
        gaps = [b[0] - a[0] for a, b in pairwise(received)]
        assert sorted(gaps)[len(gaps) // 2] > 2_000_000_000  # a quiet contract: seconds apart
        waits = [seen - t for t, seen in received]
        assert max(waits) <= 1_000_000_000 + 60_000_000  # within, and a tick or so


async def test_what_a_reorder_held_for_a_closed_connection_goes_nowhere(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Held events belong to their connection: they went out on the next one to take events
    (another client's, or a reconnect's, with events it had not subscribed to, or from before
    it existed)."""
    async with echo() as (server, director):
        async with server.connect("ws://x/echo") as ws:
            await subscribed(ws)
            await director.inject(fault("reorder", at=0, events=3, by=10_000, within="60s"))
            await quotes(ws, 5)
        assert server.ledger.connections[1].counts["reordered"] == 3
        async with server.connect("ws://x/echo") as ws:
            await subscribed(ws)
            opened_ns = server.market.now_ns()
            got = await quotes(ws, 10)
        assert got and all(q["t"] >= opened_ns for q in got)


async def test_sequence_jump_and_regression(autojump_clock: trio.abc.Clock) -> None:
    async with echo() as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws)
        before = [q["q"] for q in await quotes(ws, 10)]
        await director.inject(fault("sequence_jump", at=0, by=100_000))
        after = [q["q"] for q in await quotes(ws, 10)]
        assert after[0] - before[-1] > 100_000
        await director.inject(fault("sequence_regression", at=0, by=50))
        more = [q["q"] for q in await quotes(ws, 10)]
        assert more[0] < after[-1]


async def test_a_regressed_duplicate_carries_one_number_on_both_copies(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A duplicate and a sequence regression on the same event: both copies go out with the
    regressed number, so a client that drops repeats by number can drop the second (found by
    `feedlab chaos --vendor massive --seed 3`: only one copy changed, two events in all but
    their number, which the ground truth then counted as a duplicate delivered)."""
    async with echo() as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws)
        before = [q["q"] for q in await quotes(ws, 5)]
        await director.inject(fault("duplicate", at=0))
        await director.inject(fault("sequence_regression", at=0, by=50))
        got = await quotes(ws, 20)
        seqs = [q["q"] for q in got]
        (repeated,) = [s for s in set(seqs) if seqs.count(s) == 2]
        i = seqs.index(repeated)
        assert seqs[i + 1] == repeated and got[i] == got[i + 1]
        assert repeated < before[-1]  # the regressed number, on both copies


async def test_corrupt_modes(autojump_clock: trio.abc.Clock) -> None:
    async with echo() as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws)
        await director.inject(fault("corrupt", at=0, mode="invalid_json"))
        frames = []
        with trio.move_on_after(10):
            while True:
                frames.append(await ws.get_message())
        broken = []
        for frame in frames:
            try:
                orjson.loads(frame)
            except orjson.JSONDecodeError:
                broken.append(frame)
        assert len(broken) == 1
        assert server.ledger.connections[1].counts["corrupted"] == 1


def test_corrupt_wrong_type_and_missing_field() -> None:
    rng = derive_rng(0, "t")
    frame = '[{"ev":"Q","sym":"O:X","bp":1.5,"q":7}]'
    missing = orjson.loads(corrupt(frame, "missing_field", rng))[0]
    assert len(missing) == 3
    original = orjson.loads(frame)[0]
    wrong = orjson.loads(corrupt(frame, "wrong_type", rng))[0]
    changed = [k for k in original if type(original[k]) is not type(wrong[k])]
    assert len(changed) == 1 and wrong.keys() == original.keys()


async def test_stale_repeats_old_prices(autojump_clock: trio.abc.Clock) -> None:
    async with echo() as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws)
        await director.inject(fault("stale", at=0, duration="5m"))
        got = await quotes(ws, 240)
        assert len(got) > 20
        assert len({(q["bp"], q["ap"]) for q in got}) == 1
        assert len({q["q"] for q in got}) == len(got)  # still new events


async def test_contract_targeted_fault_spares_the_others(autojump_clock: trio.abc.Clock) -> None:
    other = "O:SPY250321P00575000"
    async with echo() as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws, TICKER, other)
        await director.inject(fault("drop", at=0, probability=1.0, duration="1m", contract=other))
        got = await quotes(ws, 50)
        assert got and {q["sym"] for q in got} == {TICKER}


async def test_scheduled_faults_fire_at_their_times(autojump_clock: trio.abc.Clock) -> None:
    plan = (fault("close", at="30s", code=4001),)
    async with echo(plan) as (server, director), server.connect("ws://x/echo") as ws:
        start = trio.current_time()
        await subscribed(ws)
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await quotes(ws, 60)
        assert closed.value.reason.code == 4001
        assert trio.current_time() - start == pytest.approx(30, abs=0.1)
        assert [a.time for a in director.applied] == [pytest.approx(30)]


async def test_network_conditions_follow_reconnects(autojump_clock: trio.abc.Clock) -> None:
    async with echo() as (server, director):
        await director.inject(fault("latency", at=0, ms=2000.0, duration="5m"))
        async with server.connect("ws://x/echo") as ws:  # opened after the fault began
            before = trio.current_time()
            assert await ws.get_message() == "hello"
            assert trio.current_time() - before >= 2.0
        await trio.sleep(300)
        async with server.connect("ws://x/echo") as ws:  # after it ended
            before = trio.current_time()
            await ws.get_message()
            assert trio.current_time() - before < 0.5


def refused_by_the_port(exc: BaseException) -> bool:
    """Whether a failed connect was refused because nobody listened: ECONNREFUSED somewhere
    in its causes (trio-websocket wraps it in HandshakeError, OSError and an exception group
    over TCP; the in-memory connector in a HandshakeError)."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        e = pending.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError):
            return True
        if isinstance(e, BaseExceptionGroup):
            pending.extend(e.exceptions)
        pending.extend(c for c in (e.__cause__, e.__context__) if c is not None)
    return False


async def test_restart_closes_the_tcp_port_and_opens_the_same_one_after() -> None:
    """Real clock, TCP: while a restart is under way nobody listens, so the kernel refuses a
    connect (a port that accepted and reset instead keeps trio-websocket waiting out its
    connect timeout); the same port serves again afterwards."""
    async with echo() as (server, director):
        port = await server.serve_tcp("127.0.0.1", 0)
        url = f"ws://127.0.0.1:{port}/echo"
        async with trio_websocket.open_websocket_url(url) as ws:
            await subscribed(ws)
            await director.inject(fault("restart", at=0, duration="1s"))
            with pytest.raises(trio_websocket.ConnectionClosed):
                await quotes(ws, 5)
        with pytest.raises(trio_websocket.HandshakeError) as refused:
            async with trio_websocket.open_websocket_url(url, connect_timeout=30):
                pass
        assert refused_by_the_port(refused.value)
        while server.refusing:
            await trio.sleep(0.05)
        async with trio_websocket.open_websocket_url(url, connect_timeout=30) as ws:
            await subscribed(ws)


async def test_a_restart_within_a_restart_keeps_the_port_closed_until_both_end(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with echo() as (server, director):
        await director.inject(fault("restart", at=0, duration="20s"))
        await trio.sleep(5)
        await director.inject(fault("restart", at=0, duration="5s"))
        await trio.sleep(6)  # the second one is over, the first is not
        with pytest.raises(trio_websocket.HandshakeError) as refused:
            async with server.connect("ws://x/echo"):
                pass
        assert refused_by_the_port(refused.value)
        await trio.sleep(10)
        async with server.connect("ws://x/echo") as ws:
            await subscribed(ws)


async def test_restart_answering_503_rejects_the_upgrade(autojump_clock: trio.abc.Clock) -> None:
    async with echo() as (server, director):
        await director.inject(fault("restart", at=0, duration="20s", answer="503"))
        await trio.sleep(1)
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with server.connect("ws://x/echo"):
                pass
        assert rejected.value.status_code == 503
        await trio.sleep(20)
        async with server.connect("ws://x/echo") as ws:
            await subscribed(ws)


async def test_restart_answering_none_leaves_the_handshake_to_the_clients_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A wedged server: the connect is accepted and the upgrade never answered, so only the
    connector's handshake timeout ends the wait (10 s, as the built-in clients' over TCP)."""
    async with echo() as (server, director):
        await director.inject(fault("restart", at=0, duration="30s", answer="none"))
        await trio.sleep(1)
        before = trio.current_time()
        with pytest.raises(trio_websocket.ConnectionTimeout):
            async with server.connect("ws://x/echo"):
                pass
        assert trio.current_time() - before == pytest.approx(10.0)
        await trio.sleep(20)
        async with server.connect("ws://x/echo") as ws:
            await subscribed(ws)


async def test_restart_answering_503_over_tcp_is_an_http_rejection() -> None:
    async with echo() as (server, director):
        port = await server.serve_tcp("127.0.0.1", 0)
        await director.inject(fault("restart", at=0, duration="30s", answer="503"))
        await trio.sleep(0.05)
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with tcp_connector(f"ws://127.0.0.1:{port}/echo", []):
                pass
        assert rejected.value.status_code == 503


async def test_the_tcp_connector_gives_up_on_a_server_that_never_answers() -> None:
    """Real clock, TCP, a restart answering none: the port accepts and holds the connection
    unanswered until the client lets go. trio-websocket's own connect_timeout (0.12) raises
    only once the server lets go, so the built-in clients' connector keeps its own deadline."""
    async with echo() as (server, director):
        port = await server.serve_tcp("127.0.0.1", 0)
        await director.inject(fault("restart", at=0, duration="60s", answer="none"))
        await trio.sleep(0.05)
        with trio.move_on_after(30) as hung:  # a hang guard, not a speed bound
            with pytest.raises(trio_websocket.ConnectionTimeout) as failed:
                async with tcp_connector(
                    f"ws://127.0.0.1:{port}/echo", [], connect_timeout=0.5
                ):
                    pass
        assert not hung.cancelled_caught, "the connector waited for the server to let go"
        assert not refused_by_the_port(failed.value) and server.down == "none"


def test_restart_answers_are_checked() -> None:
    with pytest.raises(FaultError, match="answer: expected refused, none or 503, got 'later'"):
        fault("restart", at=0, answer="later")


async def test_restart_ends_even_a_stalled_connection(autojump_clock: trio.abc.Clock) -> None:
    async with echo() as (server, director):
        async with server.connect("ws://x/echo") as ws:
            await subscribed(ws)
            await director.inject(fault("stall", at=0))  # no duration: never resumes
            await director.inject(fault("restart", at=0, duration="10s"))
            with pytest.raises(trio_websocket.ConnectionClosed):
                await quotes(ws, 30)
        await trio.sleep(11)
        async with server.connect("ws://x/echo") as ws:
            await subscribed(ws)


def test_network_endings_are_benign_and_bugs_are_not() -> None:
    """A client's ping that races the server's close makes wsproto refuse the pong
    (LocalProtocolError): an ending, not a bug. A session's own exception is a bug."""
    pong = LocalProtocolError("Event Pong cannot be sent in state ConnectionState.LOCAL_CLOSING")
    assert _benign(pong) and _benign(BaseExceptionGroup("x", [pong, trio.BrokenResourceError()]))
    assert not _benign(ZeroDivisionError()) and not _benign(ExceptionGroup("x", [KeyError()]))


async def test_a_bug_on_one_connection_spares_the_others(autojump_clock: trio.abc.Clock) -> None:
    async with echo() as (server, _director), server.connect("ws://x/echo") as healthy:
        await subscribed(healthy)
        async with server.connect("ws://x/echo") as doomed:
            await subscribed(doomed)
            await doomed.send_message("O:NOT-A-TICKER")  # the echo session raises SymbolError
            with pytest.raises(trio_websocket.ConnectionClosed):
                await quotes(doomed, 30)
        await trio.sleep(1)  # the server side finishes after the client saw the close
        assert len(server.errors) == 1
        assert await quotes(healthy, 10)


def test_auth_failure_takes_a_number_of_attempts() -> None:
    made = parse_fault({"kind": "auth_failure", "at": "1m", "attempts": 3}, "massive")
    assert made.param("attempts") == 3


async def test_burst_multiplies_what_the_client_receives(autojump_clock: trio.abc.Clock) -> None:
    async with echo() as (server, director), server.connect("ws://x/echo") as ws:
        await subscribed(ws)
        before = len(await quotes(ws, 60))
        await director.inject(fault("burst", at=0, factor=10.0, duration="1m"))
        during = len(await quotes(ws, 60))
        after = len(await quotes(ws, 60))
        assert during > 5 * before and during > 5 * after
        assert director.applied[-1].note == "x10 for 60s"
