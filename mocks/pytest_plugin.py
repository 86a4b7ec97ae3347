"""feedlab's pytest plugin (entry point `pytest11: feedlab`): vendor mocks as fixtures.

* `massive_mock`, `theta_mock`, `amberdata_mock`: a mock on its own thread and the real clock,
  listening on 127.0.0.1 (a `mocks.background.BackgroundMock`), for synchronous, asyncio and Trio
  tests alike;
* `massive_sim`, `theta_sim`, `amberdata_sim`: a mock inside the test's own Trio run, over
  in-memory streams, in virtual time (a `SimMock`); tests that use one run under an autojump
  `MockClock` unless they ask for a clock fixture themselves;
* `@pytest.mark.feedlab_scenario("file.toml")` plays a scenario's faults on the test's mock;
* `--feedlab-seed N` (or `random`) seeds the mocks; a failing test's report gives its seed and the
  command that reproduces it;
* `feedlab_settings`: override it to configure the mocks (`background` keyword arguments).

Importing this module costs nothing beyond pytest itself (DESIGN.md: like Hypothesis' and
pytest-trio's plugins): Trio, the mocks and the clients load when a fixture first runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import random
import shlex
import traceback
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mocks.background import (
    DEFAULT_API_KEY,
    BackgroundMock,
    ConnectionSnapshot,
    PublishedRecord,
    SubscriptionKeeper,
    connection_snapshots,
    published_records,
)

if TYPE_CHECKING:
    import trio

    from mocks.director import Applied
    from mocks.faults import Fault
    from mocks.sim.market import MarketSettings
    from mocks.testing import MockService

MARKER = "feedlab_scenario"
SIM_FIXTURES = ("massive_sim", "theta_sim", "amberdata_sim")

# The built-in client of each vendor, by module and class. The plugin only connects a client to a
# mock; it shares no protocol code with either (DESIGN.md, principle 6).
_CLIENTS = {
    "massive": ("clients.massive", "MassiveClient"),
    "theta": ("clients.theta", "ThetaClient"),
    "amberdata": ("clients.amberdata", "AmberdataClient"),
}


# -- options, markers, seeds -----------------------------------------------------------------------

_SESSION_SEED = pytest.StashKey[int | None]()
_USES = pytest.StashKey[list["_Use"]]()
_SCENARIO = pytest.StashKey["_Scenario | None"]()


def _seed_option(text: str) -> str:
    if text != "random":
        try:
            int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer or 'random', got {text!r}"
            ) from None
    return text


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("feedlab", "feedlab vendor mocks")
    group.addoption(
        "--feedlab-seed",
        type=_seed_option,
        default=None,
        metavar="N",
        help="seed for the feedlab mocks (market data and faults); 'random' picks one for "
        "this session. Default: the scenario's seed, else 0.",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(path): play the faults of this feedlab scenario file (relative to the test "
        "file) on the test's mock fixture of the scenario's vendor",
    )
    option = config.getoption("feedlab_seed")
    if option == "random":
        config.stash[_SESSION_SEED] = random.SystemRandom().randrange(1_000_000)
    else:
        config.stash[_SESSION_SEED] = None if option is None else int(option)


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = config.stash.get(_SESSION_SEED, None)
    return None if seed is None else f"feedlab: --feedlab-seed {seed}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests with a `*_sim` fixture run in virtual time: pytest-trio takes the first `trio`
    marker with a `run`, and this one supplies an autojump clock when the test asks for none."""
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in SIM_FIXTURES):
            item.add_marker(pytest.mark.trio(run=_run_in_virtual_time), append=False)


def _run_in_virtual_time(
    fn: Callable[[], Any], *, clock: trio.abc.Clock | None = None, instruments: Any = ()
) -> Any:
    import trio
    import trio.testing

    if clock is None:
        clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(fn, clock=clock, instruments=instruments)


@pytest.fixture
def feedlab_seed(request: pytest.FixtureRequest) -> int:
    """The seed of this test's mocks: `--feedlab-seed`, else the scenario's seed, else 0."""
    chosen = request.config.stash.get(_SESSION_SEED, None)
    if chosen is not None:
        return chosen
    scenario = _scenario(request.node)
    return 0 if scenario is None else scenario.seed


@pytest.fixture
def feedlab_settings() -> dict[str, Any]:
    """Keyword arguments for every feedlab mock fixture of a test (those of `mocks.background`:
    `market`, `api_keys`, `faults`, vendor settings). Override it to configure the mocks."""
    return {}


# -- scenarios -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scenario:
    path: Path
    vendor: str
    seed: int
    faults: tuple[Fault, ...]
    market: MarketSettings
    mock: dict[str, Any]  # the vendor's settings, api_keys, max_buffer
    horizon: float  # the scenario's duration: no fault fires later


def _scenario(item: pytest.Item) -> _Scenario | None:
    """The scenario of the item's marker, read once per test."""
    if _SCENARIO not in item.stash:
        marker = item.get_closest_marker(MARKER)
        item.stash[_SCENARIO] = None if marker is None else _read_marker(item, marker)
    return item.stash[_SCENARIO]


def _read_marker(item: pytest.Item, marker: pytest.Mark) -> _Scenario:
    if len(marker.args) != 1 or not isinstance(marker.args[0], str | Path) or marker.kwargs:
        raise _bad(f"{item.nodeid}: use @pytest.mark.{MARKER}('path/to/file.toml')")
    path = Path(marker.args[0])
    # Relative to the test file, the rootdir, then feedlab's own library, so that
    # "scenarios/library/massive-disconnect-storm.toml" works from any project's suite.
    installed = Path(__file__).resolve().parent.parent
    candidates = (
        [path]
        if path.is_absolute()
        else [item.path.parent / path, item.config.rootpath / path, installed / path]
    )
    for candidate in candidates:
        if candidate.is_file():
            return load_scenario_faults(candidate)
    tried = ", ".join(str(c) for c in candidates)
    raise _bad(f"{item.nodeid}: scenario file not found (tried {tried})")


def _bad(message: str) -> BaseException:
    """A scenario the test cannot run with: the test errors with this one line."""
    return pytest.fail.Exception(message, pytrace=False)


def load_scenario_faults(path: Path) -> _Scenario:
    """What the fixtures take from a scenario file (`scenarios.model`, the one format): vendor,
    seed, market, the mock's settings and the faults, played until the scenario's duration.
    `[client]`, `[[actor]]` and `[expect]` are for `feedlab run`; here the test is the client."""
    from mocks.sim.market import MarketSettings
    from scenarios.model import ScenarioError, load_scenario

    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        raise _bad(str(exc)) from None
    market = MarketSettings(seed=scenario.seed, start=scenario.start, **scenario.market)
    return _Scenario(
        path=path,
        vendor=scenario.vendor,
        seed=scenario.seed,
        faults=scenario.faults,
        market=market,
        mock=dict(scenario.mock),
        horizon=scenario.duration,
    )


# -- what the report says about a failing test -----------------------------------------------------


@dataclass
class _Use:
    """One feedlab fixture of a test: what to say when it fails."""

    fixture: str
    vendor: str
    seed: int
    scenario: _Scenario | None  # the scenario applied to this fixture's mock
    mock: BackgroundMock | None = None


def _note_use(request: pytest.FixtureRequest, use: _Use) -> None:
    uses = request.node.stash.setdefault(_USES, [])
    uses.append(use)


def _scenario_for(request: pytest.FixtureRequest, vendor: str) -> _Scenario | None:
    scenario = _scenario(request.node)
    if scenario is None or scenario.vendor != vendor:
        return None
    return scenario


def _settings_with(scenario: _Scenario | None, settings: dict[str, Any]) -> dict[str, Any]:
    """The scenario's market, mock settings and faults; `feedlab_settings` wins where both
    set something, and its faults play too."""
    if scenario is None:
        return dict(settings)
    return {
        "market": scenario.market,
        "horizon": scenario.horizon,
        **scenario.mock,
        **settings,
        "faults": (*scenario.faults, *settings.get("faults", ())),
    }


def pytest_runtest_setup(item: pytest.Item) -> None:
    scenario = _scenario(item)
    if scenario is None:
        return
    names = [f"{scenario.vendor}_mock", f"{scenario.vendor}_sim"]
    if not any(name in getattr(item, "fixturenames", ()) for name in names):
        pytest.fail(
            f"{MARKER}({scenario.path.name!r}) needs a fixture to play on: the test uses none "
            f"of {', '.join(names)}",
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    uses = item.stash.get(_USES, [])
    if not uses:
        return report
    for use in uses:
        mock = use.mock
        if mock is None or mock.failure_reported:
            continue
        problem = mock.problem
        if problem is None:
            continue
        # A bug inside the mock: the test fails with the mock's traceback, once.
        mock.failure_reported = True
        text = "".join(traceback.format_exception(problem))
        if report.passed:
            report.outcome = "failed"
            report.longrepr = f"the {use.vendor} mock failed:\n{text}"
        else:
            report.sections.append((f"feedlab: the {use.vendor} mock failed", text))
    if report.failed:
        report.sections.append(("feedlab", _reproduce(item, uses)))
    return report


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _reproduce(item: pytest.Item, uses: list[_Use]) -> str:
    lines = []
    for use in uses:
        line = f"{use.fixture}: seed {use.seed}"
        if use.scenario is not None:
            line += f", scenario {_shown(use.scenario.path, item.config.rootpath)}"
        lines.append(line)
    seeds = sorted({use.seed for use in uses})
    command = f"pytest {shlex.quote(item.nodeid)} --feedlab-seed {seeds[0]}"
    if item.config.invocation_params.dir != item.config.rootpath:
        command = f"cd {shlex.quote(str(item.config.rootpath))} && {command}"
    lines.append(f"reproduce: {command}")
    return "\n".join(lines) + "\n"


# -- the real-clock fixtures -----------------------------------------------------------------------


def _background_mock(
    request: pytest.FixtureRequest, vendor: str, seed: int, settings: dict[str, Any]
) -> Iterator[BackgroundMock]:
    scenario = _scenario_for(request, vendor)
    use = _Use(f"{vendor}_mock", vendor, seed, scenario)
    _note_use(request, use)
    mock = BackgroundMock(vendor, seed=seed, **_settings_with(scenario, settings))
    use.mock = mock
    with mock:
        yield mock


@pytest.fixture
def massive_mock(
    request: pytest.FixtureRequest, feedlab_seed: int, feedlab_settings: dict[str, Any]
) -> Iterator[BackgroundMock]:
    """The Massive mock on 127.0.0.1, its own thread, the real clock (`.url`, `.api_key`)."""
    yield from _background_mock(request, "massive", feedlab_seed, feedlab_settings)


@pytest.fixture
def theta_mock(
    request: pytest.FixtureRequest, feedlab_seed: int, feedlab_settings: dict[str, Any]
) -> Iterator[BackgroundMock]:
    """The Theta Terminal mock on 127.0.0.1, its own thread, the real clock."""
    yield from _background_mock(request, "theta", feedlab_seed, feedlab_settings)


@pytest.fixture
def amberdata_mock(
    request: pytest.FixtureRequest, feedlab_seed: int, feedlab_settings: dict[str, Any]
) -> Iterator[BackgroundMock]:
    """The Amberdata mock on 127.0.0.1, its own thread, the real clock."""
    yield from _background_mock(request, "amberdata", feedlab_seed, feedlab_settings)


# -- the virtual-time fixtures ---------------------------------------------------------------------


@dataclass
class SimMock:
    """A vendor mock in the test's own Trio run, over in-memory streams (the `*_sim` fixtures).

    `connector` is what the built-in clients (and any client built on trio-websocket) take to
    reach it; `open_stream()` gives a raw byte stream for a client that speaks WebSocket itself;
    `client(**kw)` makes the vendor's built-in client already pointed here."""

    vendor: str
    service: MockService
    seed: int
    api_key: str
    _nursery: trio.Nursery
    _keeper: SubscriptionKeeper = field(repr=False)

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def connector(self) -> Any:
        return self.service.connector

    def clock(self) -> float:
        """Market time as Unix seconds: the clock to give a client, so that the times in its
        gap notices are market times."""
        return self.service.market.now_ns() / 1e9

    def client(self, **overrides: Any) -> Any:
        """The built-in client (`clients.<vendor>`) connected to this mock, its reconnect
        jitter seeded from the test's seed; any constructor argument can be overridden."""
        import clients.common

        module_name, class_name = _CLIENTS[self.vendor]
        client_class = getattr(importlib.import_module(module_name), class_name)
        arguments: dict[str, Any] = {
            "api_key": self.api_key,
            "url": self.url,
            "connector": self.connector,
            "clock": self.clock,
            "backoff": clients.common.Backoff(rng=random.Random(self.seed)),
        }
        arguments.update(overrides)
        return client_class(**arguments)

    async def open_stream(self) -> trio.abc.Stream:
        """A byte stream to the mock, as a TCP connection would be: the WebSocket handshake
        and everything after it are the caller's."""
        from mocks.transport import memory_pair

        client_end, server_end = memory_pair()
        self._nursery.start_soon(self.service.mock_server.handle_stream, server_end, "memory")
        return client_end

    async def inject(self, kind: str, **params: Any) -> Applied:
        """Apply a fault now: `await sim.inject("close", code=1011)`."""
        return await self.service.inject(kind, **params)

    @property
    def connections(self) -> tuple[ConnectionSnapshot, ...]:
        return connection_snapshots(self.service, dict(self._keeper.held))

    @property
    def published(self) -> dict[int, PublishedRecord]:
        return published_records(self.service)

    @property
    def applied(self) -> tuple[Applied, ...]:
        return tuple(self.service.director.applied)


@asynccontextmanager
async def _sim_mock(
    request: pytest.FixtureRequest, vendor: str, seed: int, settings: dict[str, Any]
) -> AsyncIterator[SimMock]:
    import trio

    from mocks.testing import run_mock

    scenario = _scenario_for(request, vendor)
    _note_use(request, _Use(f"{vendor}_sim", vendor, seed, scenario))
    options = _settings_with(scenario, settings)
    keys = tuple(options.pop("api_keys", ()))
    api_key = options.pop("api_key", None) or (keys[0] if keys else DEFAULT_API_KEY)
    if keys and api_key not in keys:
        keys = (*keys, api_key)
    market = options.pop("market", None)
    if market is not None:
        market = dataclasses.replace(market, seed=seed)
    async with (
        run_mock(vendor, seed=seed, market=market, api_keys=keys, **options) as service,
        trio.open_nursery() as nursery,
    ):
        yield SimMock(vendor, service, seed, api_key, nursery, SubscriptionKeeper(service))
        nursery.cancel_scope.cancel()


@pytest.fixture
async def massive_sim(
    request: pytest.FixtureRequest, feedlab_seed: int, feedlab_settings: dict[str, Any]
) -> AsyncIterator[SimMock]:
    """The Massive mock in this Trio run, virtual time."""
    async with _sim_mock(request, "massive", feedlab_seed, feedlab_settings) as sim:
        yield sim


@pytest.fixture
async def theta_sim(
    request: pytest.FixtureRequest, feedlab_seed: int, feedlab_settings: dict[str, Any]
) -> AsyncIterator[SimMock]:
    """The Theta Terminal mock in this Trio run, virtual time."""
    async with _sim_mock(request, "theta", feedlab_seed, feedlab_settings) as sim:
        yield sim


@pytest.fixture
async def amberdata_sim(
    request: pytest.FixtureRequest, feedlab_seed: int, feedlab_settings: dict[str, Any]
) -> AsyncIterator[SimMock]:
    """The Amberdata mock in this Trio run, virtual time."""
    async with _sim_mock(request, "amberdata", feedlab_seed, feedlab_settings) as sim:
        yield sim
