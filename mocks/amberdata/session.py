"""One Amberdata WebSocket connection, sans-I/O: JSON-RPC 2.0 calls in, replies and subscription
pushes out (protocols/amberdata.md).

Snapshots, tickers and open interest are periodic per subscription: the first push comes
`first_push_delay` after subscribing, the next ones on a grid of the interval so every connection
sees the same instants. Trades go out as the market's trades arrive; one-minute bars when their
minute closes.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from mocks.amberdata import invented, streams, wire
from mocks.amberdata.streams import Bar
from mocks.ratelimit import ACCEPT, CLOSE, RequestRate
from mocks.session import Action, Close, ConnectionInfo, Send
from mocks.sim.contracts import Kind, OptionContract, underlying
from mocks.sim.events import Event, OptionQuote, OptionTrade
from mocks.sim.rng import derive_rng
from mocks.sim.symbols import SymbolError, format_deribit, parse_deribit

if TYPE_CHECKING:
    from mocks.amberdata.server import AmberdataServer, Plan

SNAPSHOTS = "market:options:order:snapshots"
TICKERS = "market:options:tickers"
TRADES = "market:options:trades"
OHLCV = "market:options:ohlcv"
OPEN_INTERESTS = "market:options:open_interests"
STREAMS = (SNAPSHOTS, TICKERS, TRADES, OHLCV, OPEN_INTERESTS)
PERIODIC = (SNAPSHOTS, TICKERS, OPEN_INTERESTS)

# Documented error descriptions [doc].
WILDCARD = (
    "Wildcard subscription is not allowed for instruments. "
    "Please subscribe with each instrument name explicitly."
)
FORBIDDEN = "not authorized to access this resource"
SUBSCRIPTION_LIMIT = (
    "Max subscription limit reached on this connection. "
    "Please open additional connections to subscribe to more instruments."
)


def unsupported(stream: str) -> str:
    return f"subscription '{stream}' is not supported"


@dataclass(slots=True)
class Subscription:
    id: str
    stream: str
    contract: OptionContract
    instrument: str
    exchange: str
    order: int
    due: float | None = None  # the next periodic push, seconds of market time
    last_sequence: int = 0
    bar: Bar | None = None  # the open one-minute bar (ohlcv)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A connection the server will not serve: this text frame, then this close."""

    text: str
    code: int
    reason: str


class _Refused(Exception):
    """A subscribe the vendor answers with an error object."""

    def __init__(self, reply: wire.ErrorReply) -> None:
        self.reply = reply


class AmberdataSession:
    def __init__(
        self,
        server: AmberdataServer,
        info: ConnectionInfo,
        key: str,
        plan: Plan | None,
        *,
        refusal: Refusal | None = None,
    ) -> None:
        self.server = server
        self.info = info
        self.key = key
        self.plan = plan  # None: the connection was refused
        self.refusal = refusal
        self.subscriptions: dict[str, Subscription] = {}
        self._by_contract: dict[OptionContract, list[Subscription]] = {}
        self._ids = derive_rng(server.seed, f"amberdata:subscription-ids:{info.conn_id}")
        self._order = 0
        self._done = False
        # The earliest push due (`next_deadline`, asked after every step of the connection):
        # lowered by a new subscription or bar, worked out again over every subscription only
        # after a push or an unsubscription that may have moved it later (1,000 subscriptions
        # on one connection, subscribed one message each, made that a million looks). A bar
        # closed by a trade of the next minute leaves it early: the tick it brings (at once,
        # the bar's end has passed) finds nothing due and works it out again.
        self._deadline: float | None = None
        self._deadline_stale = False
        self.requests = RequestRate(server.settings.request_limit, info.opened_at)

    # -- Session ---------------------------------------------------------------------------------

    def opened(self, now: float) -> list[Action]:
        if self.refusal is None:
            return []
        self._done = True
        return [Send(self.refusal.text), Close(self.refusal.code, self.refusal.reason)]

    def received(self, message: str | bytes, now: float) -> list[Action]:
        if self._done:
            return []
        verdict = self.requests.admit(now)
        if verdict != ACCEPT:
            out = self._refuse(message)
            if verdict == CLOSE:
                self._done = True
                out.append(Close(invented.FLOOD_CLOSE_CODE, invented.FLOOD_CLOSE_REASON))
            return out
        try:
            obj = wire.decode_json(message)
        except msgspec.DecodeError:
            return [Send(wire.encode(wire.standard_error(None, invented.PARSE_ERROR)))]
        if isinstance(obj, list):
            if not obj:
                return [Send(wire.encode(wire.standard_error(None, invented.INVALID_REQUEST)))]
            replies = [r for r in (self._call(item, now) for item in obj) if r is not None]
            return [Send(wire.encode(replies))] if replies else []
        reply = self._call(obj, now)
        return [] if reply is None else [Send(wire.encode(reply))]

    def publish(self, events: Sequence[Event], now: float) -> list[Action]:
        if self._done:
            return []
        out: list[Action] = []
        for event in events:
            if isinstance(event, OptionQuote):
                inst = self.server.instruments.get(event.contract)
                if inst is not None:
                    inst.apply_quote(event)
            elif isinstance(event, OptionTrade):
                out.extend(self._trade(event))
        return out

    def tick(self, now: float) -> list[Action]:
        if self._done:
            return []
        self._deadline_stale = True
        due: list[tuple[float, int, Subscription]] = []
        for sub in self.subscriptions.values():
            when = self._due(sub)
            if when is not None and when <= now:
                due.append((when, sub.order, sub))
        out: list[Action] = []
        for when, _, sub in sorted(due, key=lambda d: (d[0], d[1])):
            if sub.stream == OHLCV:
                out.extend(self._close_bar(sub))
            else:
                out.extend(self._periodic(sub, when, now))
        return out

    def next_deadline(self) -> float | None:
        if self._done:
            return None
        if self._deadline_stale:
            dues = [self._due(sub) for sub in self.subscriptions.values()]
            self._deadline = min((d for d in dues if d is not None), default=None)
            self._deadline_stale = False
        return self._deadline

    def _due(self, sub: Subscription) -> float | None:
        """When the subscription's next push is due: a periodic one's, or its bar's end."""
        if sub.due is not None:
            return sub.due
        return None if sub.bar is None else self._bar_end(sub.bar)

    def _lower_deadline(self, when: float) -> None:
        if not self._deadline_stale and (self._deadline is None or when < self._deadline):
            self._deadline = when

    def overflowed(self, now: float) -> list[Action]:
        self._done = True
        return [Close(invented.SLOW_CONSUMER_CLOSE_CODE, invented.SLOW_CONSUMER_CLOSE_REASON)]

    def closed(self, now: float) -> None:
        self._done = True
        for contract in list(self._by_contract):
            self.server.hub.unwant(self.info.conn_id, contract)
        self._by_contract.clear()
        self.subscriptions.clear()
        self.server.release(self)

    # -- JSON-RPC --------------------------------------------------------------------------------

    def _refuse(self, message: str | bytes) -> list[Action]:
        """A message over the connection's rate, dropped: 429 under each call's id (invented.py)."""
        limit = self.requests.limit
        description = invented.too_many_requests_description(limit.rate, limit.burst)
        try:
            obj = wire.decode_json(message)
        except msgspec.DecodeError:
            obj = None  # unreadable: answered under id null, as a parse error is
        calls = obj if isinstance(obj, list) and obj else [obj]
        replies: list[wire.Reply] = [
            wire.vendor_error(wire.usable_id(call), description, invented.TOO_MANY_REQUESTS_CODE)
            for call in calls
            if not (isinstance(call, dict) and "id" not in call)  # a notification gets nothing
        ]
        if not replies:
            return []
        batch = isinstance(obj, list) and bool(obj)
        return [Send(wire.encode(replies if batch else replies[0]))]

    def _call(self, obj: Any, now: float) -> wire.Reply | None:
        """One request of a message (or of a batch); None for a notification."""
        try:
            request = wire.to_request(obj)
        except msgspec.ValidationError:
            return wire.standard_error(wire.usable_id(obj), invented.INVALID_REQUEST)
        notification = request.id is msgspec.UNSET
        request_id: wire.RequestId = None if request.id is msgspec.UNSET else request.id
        if request.jsonrpc is not msgspec.UNSET and request.jsonrpc != "2.0":
            reply: wire.Reply = wire.standard_error(request_id, invented.INVALID_REQUEST)
        elif request.method == "subscribe":
            reply = self._subscribe(request_id, request.params, now)
        elif request.method == "unsubscribe":
            reply = self._unsubscribe(request_id, request.params)
        else:
            reply = wire.standard_error(request_id, invented.METHOD_NOT_FOUND)
        return None if notification else reply

    def _subscribe(self, request_id: wire.RequestId, params: Any, now: float) -> wire.Reply:
        if not isinstance(params, list) or not params or not isinstance(params[0], str):
            return wire.standard_error(request_id, invented.INVALID_PARAMS)
        stream = params[0]
        if stream not in STREAMS:
            return wire.vendor_error(request_id, unsupported(stream))
        if stream in self.server.faults.forbidden_streams:
            return wire.vendor_error(request_id, FORBIDDEN, 403)
        if len(params) < 2 or params[1] is None:
            return wire.vendor_error(request_id, invented.missing_instrument_description(stream))
        options = params[1]
        if not isinstance(options, dict):
            return wire.standard_error(request_id, invented.INVALID_PARAMS)
        try:
            contract, instrument, exchange = self._target(request_id, stream, options)
        except _Refused as refused:
            return refused.reply
        if invented.DUPLICATE_SUBSCRIBE_RETURNS_EXISTING:
            # (The contract's own, not every subscription: a client subscribing 1,000 at once
            # made that a million comparisons.)
            for sub in self._by_contract.get(contract, ()):
                if sub.stream == stream and sub.exchange == exchange:
                    return wire.result_reply(request_id, sub.id)
        assert self.plan is not None
        if len(self.subscriptions) >= self.plan.subscriptions:
            return wire.vendor_error(request_id, SUBSCRIPTION_LIMIT)
        sub_id = str(uuid.UUID(int=self._ids.getrandbits(128), version=4))
        self._order += 1
        sub = Subscription(sub_id, stream, contract, instrument, exchange, self._order)
        if stream in PERIODIC:
            sub.due = now + self.server.settings.first_push_delay
            self._lower_deadline(sub.due)
        self.subscriptions[sub_id] = sub
        self._by_contract.setdefault(contract, []).append(sub)
        if self.server.hub.want(self.info.conn_id, contract):  # (idempotent)
            inst = self.server.instrument(contract, now)
            mark = self.server.market.mark(contract)
            if mark is not None:
                inst.prime(mark)
        # else the market never produces it (`--strict`, expired): acknowledged, and no
        # instrument, which nothing would ever forget.
        return wire.result_reply(request_id, sub_id)

    def _target(
        self, request_id: wire.RequestId, stream: str, options: dict[str, Any]
    ) -> tuple[OptionContract, str, str]:
        instrument = options.get("instrument")
        if instrument is None or instrument == "":
            raise _Refused(
                wire.vendor_error(request_id, invented.missing_instrument_description(stream))
            )
        if not isinstance(instrument, str):
            raise _Refused(wire.standard_error(request_id, invented.INVALID_PARAMS))
        if "*" in instrument:
            raise _Refused(wire.vendor_error(request_id, WILDCARD))
        exchange = options.get("exchange")
        if exchange is None or exchange == "":
            if self.server.settings.require_exchange:
                raise _Refused(
                    wire.vendor_error(request_id, invented.missing_exchange_description(stream))
                )
            exchange = invented.DEFAULT_EXCHANGE
        if not isinstance(exchange, str):
            raise _Refused(wire.standard_error(request_id, invented.INVALID_PARAMS))
        exchange = exchange.lower()
        if exchange not in invented.EXCHANGES:
            raise _Refused(
                wire.vendor_error(request_id, invented.unsupported_exchange_description(exchange))
            )
        try:
            contract = parse_deribit(instrument)
        except SymbolError:
            contract = None
        if contract is None or underlying(contract.root).kind is not Kind.CRYPTO:
            raise _Refused(
                wire.vendor_error(
                    request_id, invented.unknown_instrument_description(instrument, exchange)
                )
            )
        return contract, format_deribit(contract), exchange

    def _unsubscribe(self, request_id: wire.RequestId, params: Any) -> wire.Reply:
        if not isinstance(params, list) or not params or not isinstance(params[0], str):
            return wire.standard_error(request_id, invented.INVALID_PARAMS)
        sub = self.subscriptions.pop(params[0], None)
        if sub is None:
            return wire.result_reply(request_id, invented.UNKNOWN_UNSUBSCRIBE_RESULT)
        if self._due(sub) == self._deadline:  # (it may be later now)
            self._deadline_stale = True
        subs = self._by_contract[sub.contract]
        subs.remove(sub)
        if not subs:
            del self._by_contract[sub.contract]
            self.server.hub.unwant(self.info.conn_id, sub.contract)
        return wire.result_reply(request_id, True)

    # -- pushes ----------------------------------------------------------------------------------

    def _send(
        self, sub: Subscription, result: wire.StreamResult, events: tuple[Event, ...] = ()
    ) -> Send:
        return Send(wire.encode(wire.push(sub.id, result)), events=events)

    def _periodic(self, sub: Subscription, when: float, now: float) -> list[Action]:
        settings = self.server.settings
        interval = {
            SNAPSHOTS: settings.snapshot_interval,
            TICKERS: settings.ticker_interval,
            OPEN_INTERESTS: settings.open_interest_interval,
        }[sub.stream]
        # The next instant on the grid after both the one due and now: a late tick skips, it
        # does not send a backlog.
        sub.due = (math.floor(max(when, now) / interval) + 1) * interval
        mark = self.server.market.mark(sub.contract)
        inst = self.server.instruments.get(sub.contract)
        if mark is None or inst is None:
            return []  # the market never produces data for it (strict mode, expired)
        # Whole milliseconds, as printed: a client recomputing the greeks from `timestamp` gets
        # the same time to expiry as the server did.
        ts_ns = self.server.market.clock.unix_ns(when) // 1_000_000 * 1_000_000
        if sub.stream == OPEN_INTERESTS:
            inst.prime(mark)
            return [
                self._send(sub, streams.open_interest(inst, sub.exchange, sub.instrument, ts_ns))
            ]
        sequence = max(inst.sequence(ts_ns), sub.last_sequence + 1)
        sub.last_sequence = sequence
        fields = streams.market_fields(inst, mark, sub.exchange, sub.instrument, ts_ns, sequence)
        if sub.stream == SNAPSHOTS:
            return [self._send(sub, streams.order_snapshot(inst, fields))]
        return [self._send(sub, streams.ticker(inst, fields))]

    def _trade(self, event: OptionTrade) -> list[Action]:
        subs = self._by_contract.get(event.contract)
        inst = self.server.instruments.get(event.contract)
        if not subs or inst is None:
            return []
        mark = self.server.market.mark(event.contract)
        facts = inst.apply_trade(event, mark)
        out: list[Action] = []
        for sub in subs:
            if sub.stream == TRADES:
                result = streams.trade(inst, event, facts, mark, sub.exchange, sub.instrument)
                out.append(self._send(sub, result, (event,)))
            elif sub.stream == OHLCV:
                minute = streams.minute_of(event.ts_ns)
                if sub.bar is not None and sub.bar.start_ns != minute:
                    out.extend(self._close_bar(sub))
                if sub.bar is None:
                    sub.bar = Bar(minute, event.price, event.price, event.price, event.price, 0)
                    self._lower_deadline(self._bar_end(sub.bar))
                sub.bar.add(event.price, event.size)
        return out

    def _bar_end(self, bar: Bar) -> float:
        end_ns = bar.start_ns + invented.OHLCV_BAR_SECONDS * 1_000_000_000
        return self.server.market.clock.t_of(end_ns)

    def _close_bar(self, sub: Subscription) -> list[Action]:
        bar, sub.bar = sub.bar, None
        if bar is None:
            return []
        return [self._send(sub, streams.ohlcv(bar, sub.exchange, sub.instrument))]
