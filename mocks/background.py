"""Background mocks: a vendor mock on its own thread and the real clock, for code that is not Trio.

    with mocks.background("massive") as mock:
        client = WebSocketClient(api_key=mock.api_key, feed=f"{mock.host}:{mock.port}", ...)
        ...
        mock.inject("close", code=1011)

Scripts, notebooks, other test runners and the pytest fixtures (`mocks.pytest_plugin`) all get
this same `BackgroundMock`. The mock runs in its own `trio.run` on a thread, listening on
127.0.0.1; every call from outside crosses into that run (`trio.from_thread`) and comes back with
plain data — snapshots — so asyncio, synchronous and Trio callers can all use it safely.

This module imports Trio and the mock machinery only when a mock starts: `import mocks` (and so
the pytest plugin) stays cheap.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import ssl

    import trio

    from mocks.director import Applied
    from mocks.faults import Fault
    from mocks.server import Connection
    from mocks.sim.events import Event
    from mocks.sim.market import MarketSettings
    from mocks.testing import MockService

T = TypeVar("T")

DEFAULT_API_KEY = "feedlab-test-key"
START_TIMEOUT = 30.0  # building the market takes a moment on a slow CI machine
STOP_TIMEOUT = 10.0


class MockFailed(RuntimeError):
    """The mock's thread raised, or did not start or stop in time; the cause is chained."""


# -- snapshots: plain data handed across threads -----------------------------------------------


@dataclass(frozen=True)
class ConnectionSnapshot:
    """One connection the mock accepted, open or finished, as it was when the snapshot was taken.

    `subscriptions` are in the vendor's own syntax (`Q.O:SPY250321C00560000`,
    `option:quote:SPXW:20240315:4800:C`, `market:options:trades:BTC-24JUN22-15000-P@deribit`); for
    a finished connection, what it held when it ended. Theta's streams belong to the terminal,
    not to a WebSocket: they are listed on the connection the terminal is serving them to."""

    number: int  # 1-based, in the order the mock accepted connections
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    remote: str
    opened_at: float  # seconds since the mock started (market time)
    closed_at: float | None
    close_code: int | None  # sent by the server (1006: dropped without a close frame)
    client_close_code: int | None
    subscriptions: tuple[str, ...]
    frames_sent: int
    frames_received: int
    events_sent: int

    @property
    def open(self) -> bool:
        return self.closed_at is None


@dataclass(frozen=True)
class PublishedRecord:
    """The ledger of one connection (`mocks.ledger`): market events by fate — routed to it,
    sent, and dropped / duplicated / reordered / corrupted by message faults."""

    number: int
    opened_at: float
    closed_at: float | None
    close_code: int | None
    client_close_code: int | None
    counts: dict[str, int]
    events: dict[str, tuple[Event, ...]]


def connection_snapshots(
    mock: MockService, held: dict[int, tuple[str, ...]]
) -> tuple[ConnectionSnapshot, ...]:
    """Every connection of `mock`; `held` has the subscriptions of connections no longer served."""
    subscriptions = _SUBSCRIPTIONS[mock.vendor]
    out = []
    for conn in mock.history:
        subs = held.get(conn.conn_id)
        if subs is None:
            subs = subscriptions(conn.session) if conn.open else ()
        out.append(
            ConnectionSnapshot(
                number=conn.conn_id,
                path=conn.info.path,
                query=dict(conn.info.query),
                headers=dict(conn.info.headers),
                remote=conn.info.remote,
                opened_at=conn.info.opened_at,
                closed_at=conn.closed_at,
                close_code=conn.close_code,
                client_close_code=conn.client_close_code,
                subscriptions=subs,
                frames_sent=conn.stats.frames_sent,
                frames_received=conn.stats.frames_received,
                events_sent=conn.stats.events_sent,
            )
        )
    return tuple(out)


def published_records(mock: MockService) -> dict[int, PublishedRecord]:
    return {
        number: PublishedRecord(
            number=record.number,
            opened_at=record.opened_at,
            closed_at=record.closed_at,
            close_code=record.close_code,
            client_close_code=record.client_close_code,
            counts=dict(record.counts),
            events={fate: tuple(events) for fate, events in record.events.items()},
        )
        for number, record in mock.ledger.connections.items()
    }


class SubscriptionKeeper:
    """Remembers what a connection was subscribed to once the vendor stops serving it: sessions
    forget their subscriptions when they close, and Theta's terminal moves its streams to the
    newest client. Installed as a wire observer and an accept hook of the mock server."""

    def __init__(self, mock: MockService) -> None:
        self.mock = mock
        self.held: dict[int, tuple[str, ...]] = {}
        self._subscriptions = _SUBSCRIPTIONS[mock.vendor]
        self._served = _SERVED[mock.vendor]
        mock.mock_server.observers.append(self)
        mock.mock_server.on_accept.append(self.accepted)

    def accepted(self, newcomer: Connection) -> None:
        # Theta's terminal has just handed its streams to the newcomer: record them for the
        # connection it served until now (before the newcomer can change them).
        for conn in self.mock.connections.values():
            known = conn is newcomer or conn.conn_id in self.held
            if not known and not self._served(conn.session):
                self.held[conn.conn_id] = self._subscriptions(conn.session)

    def opened(self, conn: Connection, now: float) -> None:
        pass

    def received(self, conn: Connection, message: str | bytes, now: float) -> None:
        pass

    def sent(self, conn: Connection, message: str | bytes, now: float) -> None:
        pass

    def closed(self, conn: Connection, now: float) -> None:
        # Called before the session releases its subscriptions.
        if conn.conn_id not in self.held:
            served = self._served(conn.session)
            self.held[conn.conn_id] = self._subscriptions(conn.session) if served else ()


# -- what each vendor's session is subscribed to, in the vendor's own syntax --------------------
# Mock side only: these read the mock sessions' own state (DESIGN.md, principle 6).


def _massive_subscriptions(session: Any) -> tuple[str, ...]:
    subs = [f"{channel}.{sym}" for channel, syms in session.subscriptions.items() for sym in syms]
    return (*subs, *(f"{channel}.*" for channel in sorted(session.wildcards)))


_THETA_STREAM_NAMES = {
    ("OPTION", "QUOTE"): "option:quote",
    ("OPTION", "TRADE"): "option:trade",
    ("OPTION", "MARKET_VALUE"): "option:market_value",
    ("STOCK", "QUOTE"): "stock:quote",
    ("STOCK", "TRADE"): "stock:trade",
    ("INDEX", "TRADE"): "index:price",
    ("INDEX", "MARKET_VALUE"): "index:market_value",
}


def _theta_subscriptions(session: Any) -> tuple[str, ...]:
    out = []
    for key in session.terminal.streams:
        name = _THETA_STREAM_NAMES[key.sec_type, key.req_type]
        target = key.target
        if target is None:
            out.append(f"{name}:*")
        elif isinstance(target, str):
            out.append(f"{name}:{target}")
        else:
            whole, milli = divmod(target.strike_milli, 1000)
            strike = str(whole) if milli == 0 else f"{whole}.{milli:03d}".rstrip("0")
            out.append(f"{name}:{target.root}:{target.expiration:%Y%m%d}:{strike}:{target.right}")
    return tuple(out)


def _amberdata_subscriptions(session: Any) -> tuple[str, ...]:
    return tuple(f"{s.stream}:{s.instrument}@{s.exchange}" for s in session.subscriptions.values())


_SUBSCRIPTIONS: dict[str, Callable[[Any], tuple[str, ...]]] = {
    "massive": _massive_subscriptions,
    "theta": _theta_subscriptions,
    "amberdata": _amberdata_subscriptions,
}

_SERVED: dict[str, Callable[[Any], bool]] = {
    "massive": lambda session: True,
    "theta": lambda session: bool(session.is_current),  # one client at a time
    "amberdata": lambda session: True,
}


# -- the background mock ---------------------------------------------------------------------------


class BackgroundMock:
    """A vendor mock served on 127.0.0.1 from its own thread; `background(...)` runs one for a
    `with` block. Arguments as for `background`."""

    def __init__(
        self,
        vendor: str,
        *,
        seed: int = 0,
        market: MarketSettings | None = None,
        faults: Sequence[Fault] = (),
        api_keys: Sequence[str] = (),
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: bool = False,
        **options: Any,
    ) -> None:
        self.vendor = vendor
        self.tls = tls
        self.ca_path: Path | None = None  # with `tls`: the throwaway CA's certificate, to trust
        self.seed = seed
        self.host = host
        self.port = port  # the bound port once started
        # A key the mock accepts: the one asked for, else the first configured, else any key
        # (with no `api_keys` every vendor mock is open).
        keys = tuple(api_keys)
        self.api_key = api_key or (keys[0] if keys else DEFAULT_API_KEY)
        if keys and self.api_key not in keys:
            keys = (*keys, self.api_key)
        if market is not None:
            market = dataclasses.replace(market, seed=seed)
        else:  # a real-clock mock: the market starts now, as `feedlab serve` does
            import datetime

            from mocks.sim.market import MarketSettings  # here: the plugin imports us cheaply

            market = MarketSettings(seed=seed, start=datetime.datetime.now(datetime.UTC))
        self._args: dict[str, Any] = {
            **options,
            "seed": seed,
            "market": market,
            "faults": tuple(faults),
            "api_keys": keys,
        }
        self.path = ""
        self.failure: BaseException | None = None
        self.failure_reported = False  # shown already (the pytest plugin): do not raise it again
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._mock: MockService | None = None
        self._keeper: SubscriptionKeeper | None = None
        self._ca_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """Where a client connects: `ws://127.0.0.1:PORT/<the vendor's path>` (`wss://` with
        `tls`)."""
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}{self.path}"

    def client_ssl_context(self) -> ssl.SSLContext:
        """With `tls`: an SSL context for clients that trusts this mock's throwaway CA."""
        import ssl

        if self.ca_path is None:
            raise MockFailed(f"the {self.vendor} mock serves TLS only with tls=True, once started")
        return ssl.create_default_context(cafile=str(self.ca_path))

    # -- life cycle ----------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self._thread = threading.Thread(
            target=self._thread_main, name=f"feedlab-{self.vendor}-mock", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            self.failure = MockFailed(f"the {self.vendor} mock did not start in {timeout:g}s")
        if self.failure is not None:
            self.stop()
            raise MockFailed(f"the {self.vendor} mock failed to start") from self.failure

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop serving, close every connection and the port, and join the thread."""
        import trio

        thread = self._thread
        if thread is None:
            return
        if self._token is not None and self._stop is not None:
            try:
                self._cross(functools.partial(trio.from_thread.run_sync, self._stop.set))
            except trio.RunFinishedError:
                pass  # the run already ended (it failed); `failure` says why
        thread.join(timeout)
        if thread.is_alive():
            raise MockFailed(f"the {self.vendor} mock thread did not stop in {timeout:g}s")
        self._thread = None
        if self._ca_dir is not None:
            self._ca_dir.cleanup()
            self._ca_dir = None

    @property
    def problem(self) -> BaseException | None:
        """What went wrong inside the mock, if anything: its thread died (`failure`), or a
        connection hit a bug of the mock (the server ends that connection, serves the others
        and keeps the error). Either must fail the test that ran into it."""
        if self.failure is not None:
            return self.failure
        errors = self._connection_errors()
        return errors[0] if errors else None

    def check(self) -> None:
        """Raise `MockFailed` if something went wrong inside the mock (see `problem`)."""
        problem = self.problem
        if problem is not None:
            raise MockFailed(f"the {self.vendor} mock failed") from problem

    def _connection_errors(self) -> tuple[BaseException, ...]:
        import trio

        thread, mock = self._thread, self._mock
        if thread is None or not thread.is_alive() or mock is None:
            return ()  # once the run has ended, run_mock has raised them: `failure`
        server = mock.mock_server
        try:
            return self._cross(
                functools.partial(trio.from_thread.run_sync, lambda: tuple(server.errors))
            )
        except trio.RunFinishedError:
            return ()

    def _check_thread(self) -> None:
        if self.failure is not None:
            raise MockFailed(f"the {self.vendor} mock failed") from self.failure

    def __enter__(self) -> BackgroundMock:
        self.start()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        problem = self.problem if exc is not None else None
        self.stop()
        if exc is not None and problem is not None:
            exc.add_note(f"the {self.vendor} mock had failed too: {problem!r}")
        if exc is None and not self.failure_reported:
            self.check()

    # -- the thread --------------------------------------------------------------------------------

    def _thread_main(self) -> None:
        import trio

        try:
            trio.run(self._serve)
        except BaseException as exc:  # handed to the caller's thread by check()/stop()
            self.failure = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        import trio

        from mocks.serve import LIVE_RESOLUTION
        from mocks.testing import run_mock

        self._stop = trio.Event()
        # A real-clock mock is a live feed, as `feedlab serve` is: events leave as they fall due.
        args = {"market_resolution": LIVE_RESOLUTION, **self._args}
        async with run_mock(self.vendor, **args) as mock:
            context = None
            if self.tls:
                from mocks.tls import CA_FILE_NAME, generate

                self._ca_dir = tempfile.TemporaryDirectory(prefix="feedlab-tls-")
                tls = generate(self.host, Path(self._ca_dir.name) / CA_FILE_NAME)
                context, self.ca_path = tls.context, tls.ca_path
            self.port = await mock.serve_tcp(self.host, self.port, ssl_context=context)
            self.path = mock.path
            self._mock = mock
            self._keeper = SubscriptionKeeper(mock)
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()

    # -- calls into the mock's thread --------------------------------------------------------------

    def _cross(self, call: Callable[..., T]) -> T:
        """Run `call(trio_token=...)` (a `trio.from_thread` function) from a thread Trio allows."""
        import trio

        call = functools.partial(call, trio_token=self._token)
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            return call()
        # The caller is a Trio task of another run (a Trio test): Trio refuses a blocking call
        # from inside a run, so make it from a helper thread. It takes milliseconds.
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(1, "feedlab-call") as pool:
            return pool.submit(call).result()

    def _run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        import trio

        self._check_thread()
        try:
            return self._cross(functools.partial(trio.from_thread.run, fn, *args))
        except trio.RunFinishedError:
            self._check_thread()
            raise

    def _run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        import trio

        self._check_thread()
        try:
            return self._cross(functools.partial(trio.from_thread.run_sync, fn, *args))
        except trio.RunFinishedError:
            self._check_thread()
            raise

    def _service(self) -> MockService:
        if self._mock is None:
            raise MockFailed(f"the {self.vendor} mock is not running")
        return self._mock

    # -- what tests use ----------------------------------------------------------------------------

    def inject(self, kind: str, **params: Any) -> Applied:
        """Apply a fault now (any kind of `mocks.faults.KINDS`): `inject("close", code=1011)`;
        `connection=N` targets the N-th accepted connection, `contract=...` one contract."""
        service = self._service()
        return self._run(functools.partial(service.inject, kind, **params))

    @property
    def connections(self) -> tuple[ConnectionSnapshot, ...]:
        """Every connection so far, open and finished, in the order they were accepted."""
        service = self._service()
        keeper = self._keeper
        assert keeper is not None
        return self._run_sync(lambda: connection_snapshots(service, dict(keeper.held)))

    @property
    def published(self) -> dict[int, PublishedRecord]:
        """The ledger by connection number: what the mock routed, sent, dropped, ..."""
        return self._run_sync(published_records, self._service())

    @property
    def applied(self) -> tuple[Applied, ...]:
        """Every fault fired so far (scheduled ones and `inject`ed ones), with market times."""
        service = self._service()
        return self._run_sync(lambda: tuple(service.director.applied))

    def call(self, fn: Callable[[MockService], T]) -> T:
        """Run `fn(service)` in the mock's thread, for what the properties above do not show.
        Return plain data: the mock's objects must not be touched from another thread."""
        return self._run_sync(fn, self._service())


@contextmanager
def background(
    vendor: str,
    *,
    seed: int = 0,
    market: MarketSettings | None = None,
    faults: Sequence[Fault] = (),
    api_keys: Sequence[str] = (),
    api_key: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: bool = False,
    **options: Any,
) -> Iterator[BackgroundMock]:
    """Serve `vendor`'s mock on `host` (a free port unless `port`) for the `with` block.

    `seed` seeds the market and the faults (a `market` given with its own seed gets this one);
    `faults` play on the mock's clock from the start; `api_keys` (default: any key works) and
    `**options` go to the vendor (`MassiveSettings`, `ThetaSettings`, `AmberdataSettings` fields).
    `tls=True` serves `wss://` with a certificate from a throwaway CA: `.ca_path` is its file and
    `.client_ssl_context()` a context that trusts it.
    On exit every connection and the port are closed and the thread is joined; if the mock's
    thread failed, `MockFailed` is raised with the cause.
    """
    from mocks.vendors import VENDORS

    if vendor not in VENDORS:
        raise ValueError(f"unknown vendor {vendor!r}; choose from {', '.join(VENDORS)}")
    mock = BackgroundMock(
        vendor,
        seed=seed,
        market=market,
        faults=faults,
        api_keys=api_keys,
        api_key=api_key,
        host=host,
        port=port,
        tls=tls,
        **options,
    )
    with mock:
        yield mock
