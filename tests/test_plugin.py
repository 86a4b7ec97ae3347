"""The pytest plugin, run the way a user's suite runs it: inner test files in pytest's `pytester`,
the plugin loaded through its `pytest11` entry point. Real-clock fixtures serve 127.0.0.1 from a
thread (every wait bounded); `*_sim` fixtures run in virtual time."""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CALL = "O:SPY250321C00560000"
STORM = Path(__file__).parents[1] / "scenarios" / "library" / "massive-disconnect-storm.toml"


def feedlab_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("feedlab-")]


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # In process, `mocks` is imported already: pytest cannot assertion-rewrite it again.
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning", *args
    )
    assert feedlab_threads() == []  # every mock thread joined at teardown
    return result


def test_official_massive_client_reconnects_after_an_injected_close(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        f"""
        import asyncio
        from pathlib import Path

        import pytest
        from massive import WebSocketClient

        from mocks.sim.market import MarketSettings

        CALL = "{CALL}"


        @pytest.fixture
        def feedlab_settings():
            return {{"market": MarketSettings(activity=30.0)}}


        class Enough(Exception):
            pass


        def test_reconnects(massive_mock):
            Path("port").write_text(str(massive_mock.port))
            batches = []

            async def main():
                client = WebSocketClient(
                    api_key=massive_mock.api_key,
                    feed=f"{{massive_mock.host}}:{{massive_mock.port}}",
                    market="options",
                    secure=False,
                    subscriptions=[f"Q.{{CALL}}", f"T.{{CALL}}"],
                )

                async def handle(messages):
                    batches.append(messages)
                    if len(batches) == 1:
                        massive_mock.inject("close", code=1011)
                    elif len(massive_mock.connections) == 2 and len(batches) >= 4:
                        raise Enough

                await asyncio.wait_for(client.connect(handle), 10)

            with pytest.raises(Enough):
                asyncio.run(main())
            first, second = massive_mock.connections
            assert first.close_code == 1011 and not first.open
            assert second.close_code is None  # the client closed it, at the end
            assert set(second.subscriptions) == set(first.subscriptions) == {{
                f"Q.{{CALL}}", f"T.{{CALL}}"
            }}
            assert massive_mock.published[2].counts["sent"] > 0
        """
    )
    run(pytester).assert_outcomes(passed=1)
    port = int((pytester.path / "port").read_text())
    with pytest.raises(ConnectionRefusedError):  # the port is closed with the mock
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_plain_websockets_asyncio_client_against_theta_and_a_sync_one_against_amberdata(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import asyncio
        import json

        import pytest
        import websockets
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        STREAM = {
            "msg_type": "STREAM", "sec_type": "OPTION", "req_type": "QUOTE", "add": True,
            "id": 0,
            "contract": {"root": "SPXW", "expiration": 20250321, "strike": 5600000, "right": "C"},
        }
        SUBSCRIBE = {
            "jsonrpc": "2.0", "id": 1, "method": "subscribe",
            "params": [
                "market:options:order:snapshots",
                {"instrument": "BTC-28MAR25-60000-C", "exchange": "deribit"},
            ],
        }


        def test_asyncio_websockets_against_theta(theta_mock):
            async def main():
                async with websockets.connect(theta_mock.url) as ws:
                    await ws.send(json.dumps(STREAM))
                    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    while True:
                        message = json.loads(await asyncio.wait_for(ws.recv(), 5))
                        if message["header"]["type"] == "QUOTE":
                            break
                    theta_mock.inject("close", code=1001)
                    with pytest.raises(ConnectionClosed) as closed:
                        while True:
                            await asyncio.wait_for(ws.recv(), 5)
                    return reply, message, closed.value.rcvd.code

            reply, quote, code = asyncio.run(main())
            assert reply["header"]["response"] == "SUBSCRIBED"
            assert quote["contract"]["root"] == "SPXW" and code == 1001
            [conn] = theta_mock.connections
            assert conn.subscriptions == ("option:quote:SPXW:20250321:5600:C",)
            assert conn.close_code == 1001
            assert theta_mock.published[1].counts["sent"] >= 1


        def test_sync_websockets_against_amberdata(amberdata_mock):
            headers = {"x-api-key": amberdata_mock.api_key}
            with connect(amberdata_mock.url, additional_headers=headers) as ws:
                ws.send(json.dumps(SUBSCRIBE))
                reply = json.loads(ws.recv(5))
                push = json.loads(ws.recv(5))
                amberdata_mock.inject("cut")
                with pytest.raises(ConnectionClosed):
                    while True:
                        ws.recv(5)
            assert push["params"]["subscription"] == reply["result"]
            assert push["params"]["result"]["instrument"] == "BTC-28MAR25-60000-C"
            [conn] = amberdata_mock.connections
            assert conn.close_code == 1006
            assert conn.subscriptions == (
                "market:options:order:snapshots:BTC-28MAR25-60000-C@deribit",
            )
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_trio_test_with_a_real_clock_mock(pytester: pytest.Pytester) -> None:
    """Calls from a Trio task (another Trio run) into the mock's run go through a helper thread."""
    pytester.makepyfile(
        f"""
        import json

        import pytest
        import trio
        import trio_websocket


        @pytest.mark.trio
        async def test_trio_websocket_client(massive_mock):
            async with trio_websocket.open_websocket_url(massive_mock.url) as ws:
                await ws.get_message()
                await ws.send_message(json.dumps({{"action": "auth", "params": "k"}}))
                await ws.get_message()
                await ws.send_message(json.dumps({{"action": "subscribe", "params": "Q.{CALL}"}}))
                await ws.get_message()
                massive_mock.inject("close", code=4000, reason="bye")
                with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
            assert closed.value.reason.code == 4000
            assert massive_mock.connections[0].subscriptions == ("Q.{CALL}",)
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_sim_fixtures_run_in_virtual_time_with_the_built_in_client_or_a_stream(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        f"""
        import json

        import pytest
        import trio
        import trio.testing
        import trio_websocket

        from clients.common import GapNotice
        from clients.massive import Quote


        async def test_built_in_client_reconnects(massive_sim):
            assert isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
            quotes, gaps = [], []
            async with massive_sim.client() as client:
                await client.subscribe("Q.{CALL}")
                async for event in client:
                    if isinstance(event, GapNotice):
                        gaps.append(event)
                    elif isinstance(event, Quote):
                        quotes.append(event)
                        if len(quotes) == 1:
                            await massive_sim.inject("close", code=1011)
                        if gaps and len(quotes) >= 3:
                            break
            first, second = massive_sim.connections
            assert first.close_code == 1011 and second.subscriptions == ("Q.{CALL}",)
            assert gaps[0].start <= massive_sim.clock()
            await trio.sleep(3600)  # an hour of market, at once


        @pytest.mark.feedlab_scenario("{STORM}")
        async def test_a_library_scenario_in_virtual_time(massive_sim):
            gaps = []
            async with massive_sim.client() as client:
                await client.subscribe("Q.{CALL}")
                async for event in client:
                    if isinstance(event, GapNotice):
                        gaps.append(event)
                    if massive_sim.service.market.now() > 120:
                        break
            kinds = [a.fault.kind for a in massive_sim.applied]
            assert kinds == ["close", "cut", "close"] and len(gaps) == 3
            connections = massive_sim.connections
            assert [c.close_code for c in connections] == [1011, 1006, 1001, None]
            assert {{c.subscriptions for c in connections}} == {{("Q.{CALL}",)}}


        async def test_a_trio_client_on_a_raw_stream(theta_sim, nursery):
            stream = await theta_sim.open_stream()
            ws = await trio_websocket.wrap_client_stream(nursery, stream, "localhost", "/v1/events")
            await ws.send_message(json.dumps({{"msg_type": "STOP"}}))
            status = json.loads(await ws.get_message())
            assert status["header"]["type"] == "STATUS"
            assert [c.path for c in theta_sim.connections] == ["/v1/events"]
            await ws.aclose()


        async def test_the_connector(amberdata_sim, autojump_clock):
            headers = [(b"x-api-key", amberdata_sim.api_key.encode())]
            async with amberdata_sim.connector(amberdata_sim.url, headers) as ws:
                request = {{"jsonrpc": "2.0", "id": 1, "method": "unsubscribe", "params": ["x"]}}
                await ws.send_message(json.dumps(request))
                assert json.loads(await ws.get_message())["result"] is False
            assert autojump_clock.current_time() < 1
        """
    )
    # No trio_mode here: using a *_sim fixture makes the test a Trio test in virtual time.
    run(pytester).assert_outcomes(passed=4)


SCENARIO = """
name = "auth-fails-once"
vendor = "massive"
seed = 7
duration = "1m"

[client]
subscribe = ["Q.O:SPY250321C00560000"]

[[fault]]
at = "0s"
kind = "auth_failure"
"""

SCENARIO_TESTS = """
import json

import pytest
from websockets.sync.client import connect


def auth_status(mock):
    with connect(mock.url) as ws:
        ws.recv(5)
        ws.send(json.dumps({"action": "auth", "params": mock.api_key}))
        return json.loads(ws.recv(5))[0]["status"]


@pytest.mark.feedlab_scenario("auth-fails-once.toml")
def test_scenario_applies(massive_mock, feedlab_seed):
    assert auth_status(massive_mock) == "auth_failed"
    assert auth_status(massive_mock) == "auth_success"
    assert [a.fault.kind for a in massive_mock.applied] == ["auth_failure"]
    assert massive_mock.seed == feedlab_seed


def test_no_scenario_no_faults(massive_mock):
    assert auth_status(massive_mock) == "auth_success"


@pytest.mark.feedlab_scenario("auth-fails-once.toml")
def test_fails(massive_mock):
    assert massive_mock.applied, "the scenario's fault fired"
    assert False, "the client under test got it wrong"


@pytest.mark.feedlab_scenario("auth-fails-once.toml")
def test_wrong_vendor(theta_mock):
    pass


@pytest.mark.feedlab_scenario("bad.toml")
def test_bad_scenario(massive_mock):
    pass
"""


def test_scenario_marker_and_seed_in_the_failure_report(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", **{"auth-fails-once": SCENARIO})
    bad = SCENARIO.replace('kind = "auth_failure"', 'kind = "close"\ncode = "x"')
    pytester.makefile(".toml", bad=bad)
    pytester.makepyfile(test_scenarios=SCENARIO_TESTS)
    result = run(pytester, "--feedlab-seed", "42")
    result.assert_outcomes(passed=2, failed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*--feedlab-seed 42*",  # the header
            "*_ test_fails _*",
            "*the client under test got it wrong*",
            "*- feedlab -*",
            "massive_mock: seed 42, scenario auth-fails-once.toml",
            "reproduce: pytest test_scenarios.py::test_fails --feedlab-seed 42",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_wrong_vendor*",
            "feedlab_scenario('auth-fails-once.toml') needs a fixture to play on: the test uses"
            " none of massive_mock, massive_sim",
            "*ERROR at setup of test_bad_scenario*",
            "*bad.toml: fault[[]0[]].code: *",
        ]
    )
    assert "During handling" not in result.stdout.str()


def test_the_scenario_seed_is_the_default_and_reproduces(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", **{"auth-fails-once": SCENARIO})
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.feedlab_scenario("auth-fails-once.toml")
        def test_seed(massive_mock, feedlab_seed):
            assert feedlab_seed == massive_mock.seed == 7
            assert False
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["reproduce: pytest test_the_scenario_seed*::test_seed --feedlab-seed 7"]
    )
    result = run(pytester, "--feedlab-seed", "random")
    result.assert_outcomes(failed=1)
    seed = next(line for line in result.outlines if line.startswith("feedlab: --feedlab-seed"))
    result.stdout.fnmatch_lines([f"reproduce: *{seed.removeprefix('feedlab: ')}"])


def test_a_bug_in_the_mock_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import time

        from websockets.sync.client import connect


        class Exploding:
            def opened(self, conn, now): pass
            def received(self, conn, message, now): raise RuntimeError("exploded on purpose")
            def sent(self, conn, message, now): pass
            def closed(self, conn, now): pass


        def test_mock_crashes(massive_mock):
            massive_mock.call(lambda service: service.mock_server.observers.append(Exploding()))
            with connect(massive_mock.url) as ws:
                ws.send("{}")
                deadline = time.monotonic() + 5
                while massive_mock.problem is None and time.monotonic() < deadline:
                    time.sleep(0.01)
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)  # failed in the call, and not once more at teardown
    result.stdout.fnmatch_lines(
        ["*the massive mock failed:*", "*RuntimeError: exploded on purpose*", "reproduce: *"]
    )


def test_the_plugin_is_registered_through_its_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    run(pytester).stdout.fnmatch_lines(["plugins: *feedlab-0.1.0*"])
    run(pytester, "--help").stdout.fnmatch_lines(["*--feedlab-seed=N*"])
    run(pytester, "--markers").stdout.fnmatch_lines(["@pytest.mark.feedlab_scenario(path):*"])


def test_importing_the_plugin_loads_no_trio_and_no_mock(pytester: pytest.Pytester) -> None:
    code = (
        "import sys, mocks.pytest_plugin; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('trio', 'trio_websocket', "
        "'clients', 'websockets') or m in ('mocks.testing', 'mocks.server')]; print(heavy)"
    )
    result = pytester.run(sys.executable, "-c", code, timeout=30)
    assert result.outlines == ["[]"], result.outlines


def test_fixtures_serve_wss_when_feedlab_settings_ask_for_tls(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import json

        import pytest
        from websockets.sync.client import connect


        @pytest.fixture
        def feedlab_settings():
            return {"tls": True}


        def test_wss(massive_mock):
            assert massive_mock.url.startswith("wss://")
            with connect(massive_mock.url, ssl=massive_mock.client_ssl_context()) as ws:
                connected = json.loads(ws.recv(5))
                ws.send(json.dumps({"action": "auth", "params": massive_mock.api_key}))
                authed = json.loads(ws.recv(5))
            assert connected[0]["status"] == "connected"
            assert authed[0]["status"] == "auth_success"
        """
    )
    run(pytester).assert_outcomes(passed=1)
