"""Deliberately flawed clients: the bugs real feed handlers have, for the chaos search (or a
scenario's bounds) to find.

Each one is the built-in client of its vendor with one well-known mistake put back in, so that
everything else (parsing, keepalive, backoff) is the same and the flaw alone explains a failure.
They take the runner's factory signature, so a scenario (`factory = "scenarios.naive:NAME"`)
or `feedlab chaos --client scenarios.naive:NAME` names them. The flaw, and the faults that show it:

- `massive_forgets_subscriptions`: does not subscribe again after a reconnect (any drop);
- `massive_keeps_duplicates`: delivers a repeated `q` instead of dropping it (`duplicate`);
- `massive_no_gap_notice`: resubscribes but never says what it may have missed (any drop);
- `massive_forgets_aggregates`: resubscribes quotes and trades after a reconnect, not the
  aggregates (any drop; only `resubscribed_exactly` sees it: bars are outside the loss
  accounting);
- `massive_gives_up_at_once`: reconnects at once, five times, then raises, as the official
  Python client does (a `restart`: the port refuses for a while);
- `massive_retries_without_backoff`: retries every 100 ms for as long as it takes, the
  hand-written reconnect loop (a `restart`: only `failed_connects` sees it, since every
  attempt after the port comes back succeeds);
- `theta_reuses_request_ids`: numbers requests from 0 on every connection and trusts the
  terminal to restore its streams after an upstream outage (a drop, then an outage);
- `amberdata_keeps_old_ids`: routes pushes by the first connection's subscription ids after a
  reconnect (any drop);
- `amberdata_gives_up_on_503`: takes any HTTP answer to the upgrade for a refused key and
  stops (a `restart` answering 503, as a load balancer with no backend does).

They reach into the built-in clients' private methods on purpose: each override is the smallest
change that reintroduces the bug. Never use them for anything but demonstrations and tests.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from clients.amberdata.client import AmberdataClient
from clients.amberdata.client import _Connection as _AmberdataConnection
from clients.amberdata.client import _Session as _AmberdataSession
from clients.common import Backoff, Connector
from clients.massive.client import MassiveClient
from clients.massive.client import _Session as _MassiveSession
from clients.massive.wire import MarketEvent
from clients.theta.client import ThetaClient
from mocks.sim.rng import derive_seed

# -- Massive ----------------------------------------------------------------------------------


class _ForgetfulMassive(MassiveClient):
    """Subscribes once, on the first connection; a reconnect authenticates and then waits for
    data that never comes (the application still believes it is subscribed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ready_before: set[int] = set()

    def _kept_on_reconnect(self, subscription: str) -> bool:
        return False

    async def _become_ready(self, session: _MassiveSession) -> None:
        slot = session.slot
        if slot.index not in self._ready_before:
            self._ready_before.add(slot.index)
            await super()._become_ready(session)
            return
        remembered = slot.subscriptions
        slot.subscriptions = {s: v for s, v in remembered.items() if self._kept_on_reconnect(s)}
        try:
            await super()._become_ready(session)
        finally:
            slot.subscriptions = remembered


class _ForgetfulOfAggregates(_ForgetfulMassive):
    """Resubscribes quotes and trades after a reconnect, and forgets the aggregates (`A`, `AM`):
    the application goes on believing its bars will come."""

    def _kept_on_reconnect(self, subscription: str) -> bool:
        return subscription.split(".")[0] in ("Q", "T")


class _DuplicatingMassive(MassiveClient):
    """Hands every event to the application as it arrives: no duplicate filter."""

    async def _deliver(self, session: _MassiveSession, channel: str, event: MarketEvent) -> None:
        seconds = event.timestamp_ns / 1e9
        if session.last_event_time is None or seconds > session.last_event_time:
            session.last_event_time = seconds
        await self._emit(event)


class _SilentMassive(MassiveClient):
    """Reconnects and resubscribes, but the gap notice is never emitted: whatever the outage
    cost is lost without a word."""

    async def _finish_restore(self, session: _MassiveSession) -> None:
        session.restoring = session.restore_deadline = None
        session.slot.gap_since = None


def _massive(
    cls: type[MassiveClient],
    *,
    url: str,
    connector: Connector,
    api_key: str | None,
    clock: Callable[[], float],
    seed: int,
    **options: Any,
) -> MassiveClient:
    options.setdefault("backoff", Backoff(rng=random.Random(derive_seed(seed, "backoff"))))
    options.setdefault(
        "eviction_backoff",
        Backoff(initial=5.0, cap=300.0, rng=random.Random(derive_seed(seed, "eviction"))),
    )
    return cls(api_key or "KEY", url, connector=connector, clock=clock, **options)


def massive_forgets_subscriptions(
    *,
    url: str,
    connector: Connector,
    api_key: str | None,
    clock: Callable[[], float],
    seed: int,
    **options: Any,
) -> MassiveClient:
    """Massive client that does not resubscribe after a reconnect."""
    return _massive(
        _ForgetfulMassive,
        url=url,
        connector=connector,
        api_key=api_key,
        clock=clock,
        seed=seed,
        **options,
    )


def massive_forgets_aggregates(**arguments: Any) -> MassiveClient:
    """Massive client that resubscribes quotes and trades after a reconnect, not aggregates."""
    return _massive(_ForgetfulOfAggregates, **arguments)


def massive_keeps_duplicates(
    *,
    url: str,
    connector: Connector,
    api_key: str | None,
    clock: Callable[[], float],
    seed: int,
    **options: Any,
) -> MassiveClient:
    """Massive client that delivers an event sent twice twice."""
    return _massive(
        _DuplicatingMassive,
        url=url,
        connector=connector,
        api_key=api_key,
        clock=clock,
        seed=seed,
        **options,
    )


def massive_no_gap_notice(
    *,
    url: str,
    connector: Connector,
    api_key: str | None,
    clock: Callable[[], float],
    seed: int,
    **options: Any,
) -> MassiveClient:
    """Massive client that resubscribes after a reconnect but never emits a gap notice."""
    return _massive(
        _SilentMassive,
        url=url,
        connector=connector,
        api_key=api_key,
        clock=clock,
        seed=seed,
        **options,
    )


def massive_gives_up_at_once(**arguments: Any) -> MassiveClient:
    """Massive client with the official Python client's reconnect policy: at once, with no
    backoff, five times, then it raises (Amberdata's JS SDK does the same three times)."""
    arguments.setdefault("backoff", Backoff(initial=0.0, cap=0.0))
    arguments.setdefault("max_reconnects", 5)
    return _massive(MassiveClient, **arguments)


class _FixedDelay(Backoff):
    """The same delay before every attempt: `while True: try: connect() except: sleep(0.1)`."""

    def next_delay(self) -> float:
        self.attempt += 1
        return self.initial


def massive_retries_without_backoff(**arguments: Any) -> MassiveClient:
    """Massive client that retries every 100 ms, with no backoff and no limit: through a 20 s
    restart it knocks on the closed port about 200 times (the built-in client: 6)."""
    arguments.setdefault("backoff", _FixedDelay(initial=0.1, cap=0.1))
    return _massive(MassiveClient, **arguments)


# -- Theta ------------------------------------------------------------------------------------


class _ReusingTheta(ThetaClient):
    """Request ids count from 0 on every connection, the bug the Theta docs warn about: after a
    reconnect the terminal has seen those ids, so it no longer logs the streams for automatic
    resubscription. The client also trusts that automatic resubscription after an upstream
    outage instead of checking that data resumed, so the loss goes unnoticed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connection_request_id = 0

    def _take_request_id(self) -> int:  # type: ignore[override]
        req_id = self._connection_request_id
        self._connection_request_id += 1
        return req_id

    async def _connect_once(self) -> str:
        self._connection_request_id = 0
        return await super()._connect_once()

    async def _recover_after_outage(self) -> None:
        await self._emit_gap("upstream outage")


def theta_reuses_request_ids(
    *,
    url: str,
    connector: Connector,
    api_key: str | None,
    clock: Callable[[], float],
    seed: int,
    **options: Any,
) -> ThetaClient:
    """Theta client that reuses request ids on each connection and does not check that streams
    resume after an upstream outage."""
    options.setdefault("backoff", Backoff(rng=random.Random(derive_seed(seed, "backoff"))))
    return _ReusingTheta(api_key, url, connector=connector, clock=clock, **options)


# -- Amberdata --------------------------------------------------------------------------------


class _OldIdsAmberdata(AmberdataClient):
    """Remembers the subscription id each subscription got first and routes pushes by it
    forever. Amberdata hands out new ids on every connection, so after a reconnect every push
    carries an id the client does not know and is dropped as unsolicited."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._first_ids: dict[str, str] = {}

    async def _on_reply(
        self,
        connection: _AmberdataConnection,
        session: _AmberdataSession,
        reply: dict[str, Any],
    ) -> None:
        await super()._on_reply(connection, session, reply)
        for key, sub_id in list(session.id_by_key.items()):
            first = self._first_ids.setdefault(key, sub_id)
            if first != sub_id:
                del session.key_by_id[sub_id]
                session.key_by_id[first] = key
                session.id_by_key[key] = first


def _amberdata(
    cls: type[AmberdataClient],
    *,
    url: str,
    connector: Connector,
    api_key: str | None,
    clock: Callable[[], float],
    seed: int,
    **options: Any,
) -> AmberdataClient:
    options.setdefault("backoff", Backoff(rng=random.Random(derive_seed(seed, "backoff"))))
    return cls(api_key, url, connector=connector, clock=clock, **options)


def amberdata_keeps_old_ids(**arguments: Any) -> AmberdataClient:
    """Amberdata client that keeps the first connection's subscription ids after a reconnect."""
    return _amberdata(_OldIdsAmberdata, **arguments)


class _RejectionIsFatalAmberdata(AmberdataClient):
    """Every HTTP answer to the upgrade is taken for a refused key: a 503 from a load balancer
    whose backend is restarting stops the client for good."""

    @staticmethod
    def _refuses_the_key(status: int | None) -> bool:
        return True


def amberdata_gives_up_on_503(**arguments: Any) -> AmberdataClient:
    """Amberdata client that stops on any rejected upgrade, 503 included."""
    return _amberdata(_RejectionIsFatalAmberdata, **arguments)
