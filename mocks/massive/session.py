"""One Massive options WebSocket connection, sans-I/O: client messages and market events in,
frames and closes out (`mocks.session.Session`).

The conversation (`shared/protocols/massive.md`): the server speaks first (`connected`), the client
authenticates, then subscribes per channel (`Q`, `T`, `A`, `AM`) and contract. Market data goes out
in JSON arrays, batched: a frame leaves when it is full or `flush_interval` after its first event.
On the delayed feed trades (and the aggregates built from them) leave `delay` seconds late.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal

import msgspec

from mocks.massive import invented, wire
from mocks.massive.aggregates import MINUTE_MS, SECOND_MS, BarBuilder, DayTotals
from mocks.massive.wire import (
    MINUTE_AGGREGATES,
    QUOTES,
    SECOND_AGGREGATES,
    TRADES,
    ServerEvent,
    StatusEvent,
)
from mocks.ratelimit import ACCEPT, CLOSE, RequestRate
from mocks.session import Abort, Action, Close, ConnectionInfo, Send
from mocks.sim.contracts import OptionContract
from mocks.sim.events import Event, OptionQuote, OptionTrade
from mocks.sim.symbols import SymbolError, format_occ, parse_occ

if TYPE_CHECKING:
    from mocks.massive.server import MassiveServer

_AWAITING_AUTH, _AUTHENTICATED, _FINISHED = "awaiting_auth", "authenticated", "finished"
Ending = Literal["close", "abort"]


class MassiveSession:
    def __init__(self, server: MassiveServer, info: ConnectionInfo, delayed: bool) -> None:
        self.server = server
        self.info = info
        self.conn_id = info.conn_id
        self.delayed = delayed
        self.settings = server.settings
        self.state = _AWAITING_AUTH
        self.key: str | None = None
        self.opened_at = info.opened_at
        # channel -> subscribed symbol -> contract (None: not an option ticker, never streams)
        self.subscriptions: dict[str, dict[str, OptionContract | None]] = {
            channel: {} for channel in wire.CHANNELS
        }
        self.wildcards: set[str] = set()  # channels subscribed with `*`
        self._wanted: set[OptionContract] = set()  # what the hub routes to this connection
        self._wildcard_contracts: set[OptionContract] = set()
        self._symbols: dict[OptionContract, str] = {}
        # The contracts whose quotes stream, by key, with their symbol: subscribed on `Q` under
        # the symbol Massive prints (`publish` looks each quote up once). By key, not contract:
        # a contract hashes in Python, and the market's contract object is another connection's
        # (the first to watch it) after a reconnect, so each lookup also compared the fields.
        self._quoted: dict[str, str] = {}
        self._now = info.opened_at
        self._auth_deadline = info.opened_at + self.settings.auth_timeout
        self.requests = RequestRate(self.settings.request_limit, info.opened_at)
        self._ending: tuple[StatusEvent | None, Ending] | None = None
        # outbound batch: events encoded (Raw) or quotes whose encoding waits for the frame
        self._batch: list[wire.QuoteEvent | msgspec.Raw] = []
        self._batch_bytes = 0  # the frame's size: exact, or a bound while quotes wait (below)
        self._batch_waiting = 0  # quotes in the batch not encoded yet
        self._batch_events: list[Event] = []
        self._batch_since: float | None = None
        # the delayed feed's backlog: (release time, trade)
        self._backlog: deque[tuple[float, OptionTrade]] = deque()
        self._lag = server.settings.delay if delayed else 0.0
        self._day = DayTotals()
        self._bars = {
            SECOND_AGGREGATES: BarBuilder(SECOND_AGGREGATES, SECOND_MS),
            MINUTE_AGGREGATES: BarBuilder(MINUTE_AGGREGATES, MINUTE_MS),
        }

    # -- the Session protocol ----------------------------------------------------------------------

    def opened(self, now: float) -> list[Action]:
        self._now = now
        self._auth_deadline = now + self.settings.auth_timeout
        return [self._status_frame([wire.CONNECTED])]

    def received(self, message: str | bytes, now: float) -> list[Action]:
        self._now = now
        if self.state == _FINISHED:
            return []
        verdict = self.requests.admit(now)
        if verdict != ACCEPT:  # dropped unread
            if verdict == CLOSE:
                return self._end(invented.request_flood(), "close")
            limit = self.requests.limit
            return self._reply([invented.too_many_requests(limit.rate, limit.burst)])
        try:
            request = wire.decode_request(message)
        except wire.BadRequest as exc:
            return self._reply([invented.bad_request(str(exc))])
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return self._reply([wire.INVALID_JSON])  # (too deep to decode is invalid too)
        action = request.action
        if action == "auth":
            return self._auth(request.params, now)
        if action in ("subscribe", "unsubscribe"):
            if self.state != _AUTHENTICATED:
                return self._reply([invented.not_authenticated(action)])
            if action == "subscribe":
                return self._reply(self._subscribe(request.params))
            return self._reply(self._unsubscribe(request.params))
        return self._reply([invented.unknown_action(action)])

    def publish(self, events: Sequence[Event], now: float) -> list[Action]:
        self._now = now
        if self.state != _AUTHENTICATED:
            return []
        out: list[Action] = []
        # The hot loop of `--rate max`: one symbol lookup per quote, into the batch unencoded
        # (`_add`: the frame is encoded in one go); everything else takes the general path.
        # A quote event is rendered here only: the exchange ids are looked up inline.
        quoted, add = self._quoted.get, self._add
        quote, ids, opra = wire.QuoteEvent, wire.EXCHANGE_IDS, wire.OPRA_ID
        besides_symbol = wire.QUOTE_BYTES_BESIDES_SYMBOL
        for event in events:
            if type(event) is OptionQuote:
                sym = quoted(event.contract.key)
                if sym is not None:
                    item = quote(
                        "Q",
                        sym,
                        ids.get(event.bid_exchange, opra),
                        ids.get(event.ask_exchange, opra),
                        float(event.bid),
                        float(event.ask),
                        int(event.bid_size),
                        int(event.ask_size),
                        event.ts_ns // 1_000_000,
                        event.sequence,
                    )
                    add(item, besides_symbol + 6 * len(sym), event, out)
            elif isinstance(event, OptionTrade):
                if self.delayed:
                    release = self.server.market_time(event.ts_ns) + self._lag
                    self._backlog.append((release, event))
                else:
                    out += self._trade(event)
        if self.settings.flush_interval == 0:
            out += self._flush()
        return out

    def tick(self, now: float) -> list[Action]:
        self._now = now
        if self.state == _FINISHED:
            return []
        if self._ending is not None:
            return self._end(*self._ending)
        if self.state == _AWAITING_AUTH:
            if now >= self._auth_deadline:
                return self._end(wire.AUTH_TIMEOUT, "close")
            return []
        out: list[Action] = []
        backlog = self._backlog
        while backlog and backlog[0][0] <= now:
            out += self._trade(backlog.popleft()[1])
        out += self._due_bars(now)
        since = self._batch_since
        if since is not None and now >= since + self.settings.flush_interval:
            out += self._flush()
        return out

    def next_deadline(self) -> float | None:
        if self.state == _FINISHED:
            return None
        if self._ending is not None:
            return self._now
        if self.state == _AWAITING_AUTH:
            return self._auth_deadline
        times: list[float] = []
        if self._batch_since is not None:
            times.append(self._batch_since + self.settings.flush_interval)
        if self._backlog:
            times.append(self._backlog[0][0])
        for builder in self._bars.values():
            end_ms = builder.earliest_end_ms()
            if end_ms is not None:
                times.append(self._bar_due(end_ms))
        return min(times) if times else None

    def overflowed(self, now: float) -> list[Action]:
        """The runner has already dropped what did not fit; the policy decides the rest."""
        self._now = now
        policy = self.settings.slow_consumer
        if self.state == _FINISHED or policy == "drop":
            return []
        if policy == "abort":
            return self._end(None, "abort")
        return self._end(invented.slow_consumer(), "close")

    def closed(self, now: float) -> None:
        self._now = now
        self.state = _FINISHED
        for contract in self._wanted:
            self.server.hub.unwant(self.conn_id, contract)
        wanted, self._wanted = self._wanted, set()
        self.server.contracts_unwanted(self, wanted)
        self.server.forget(self)

    # -- orders from the server (faults, evictions) ------------------------------------------------

    def end_with(self, status: StatusEvent | None, how: Ending) -> None:
        """Finish this connection at its next tick: the status (if any), then close or abort."""
        if self.state != _FINISHED and self._ending is None:
            self._ending = (status, how)
            self.server.hub.poke(self.conn_id)

    @property
    def authenticated(self) -> bool:
        return self.state == _AUTHENTICATED

    @property
    def finished(self) -> bool:
        return self.state == _FINISHED or self._ending is not None

    def quote_contracts(self) -> int:
        return len(self.subscriptions[QUOTES])

    # -- the conversation --------------------------------------------------------------------------

    def _auth(self, key: str, now: float) -> list[Action]:
        if self.state == _AUTHENTICATED:
            return self._reply([invented.already_authenticated()])
        verdict = self.server.authenticate(self, key, now)
        if verdict == "ok":
            self.state = _AUTHENTICATED
            self.key = key
            return self._reply([wire.AUTH_SUCCESS])
        if verdict == "no_access":
            return self._end(wire.AUTH_FAILED_PLAN, "close")
        if verdict == "refused":
            return self._end(wire.MAX_CONNECTIONS, "close")
        return self._end(wire.AUTH_FAILED, "close")

    def _subscribe(self, params: str) -> list[StatusEvent]:
        replies: list[StatusEvent] = []
        over_limit: list[str] = []
        added: list[OptionContract] = []
        limit = self.server.quote_limit
        for channel, symbol, token in _channels(params):
            if len(symbol) > invented.MAX_SYMBOL_CHARS:
                replies.append(invented.symbol_too_long(token))
                continue
            if channel == QUOTES and self.delayed:
                replies.append(invented.quotes_not_on_delayed_feed())
                continue
            if symbol == wire.WILDCARD:
                if channel in wire.WILDCARD_CHANNELS:
                    self.wildcards.add(channel)
                    replies.append(wire.subscribed(token))
                else:
                    replies.append(invented.quote_wildcard_refused())
                continue
            symbols = self.subscriptions[channel]
            if channel == QUOTES and symbol not in symbols and len(symbols) >= limit:
                over_limit.append(token)
                continue
            contract = _contract(symbol)
            symbols[symbol] = contract
            if contract is not None:
                added.append(contract)
                if channel == QUOTES and self._symbol(contract) == symbol:
                    self._quoted[contract.key] = symbol
            replies.append(wire.subscribed(token))
        if over_limit:
            replies.append(invented.quote_limit_exceeded(limit, over_limit))
        self._update_wants(added)
        return replies

    def _unsubscribe(self, params: str) -> list[StatusEvent]:
        replies: list[StatusEvent] = []
        for channel, symbol, token in _channels(params):
            if len(symbol) > invented.MAX_SYMBOL_CHARS:  # never subscribed: see _subscribe
                replies.append(invented.symbol_too_long(token))
                continue
            if symbol == wire.WILDCARD:
                self.wildcards.discard(channel)
            else:
                contract = self.subscriptions[channel].pop(symbol, None)
                if contract is not None and channel in self._bars:
                    self._bars[channel].discard(contract)
                if contract is not None and channel == QUOTES and symbol == self._symbol(contract):
                    del self._quoted[contract.key]
            replies.append(wire.unsubscribed(token))
        if not self.wildcards & wire.WILDCARD_CHANNELS:
            self._wildcard_contracts.clear()
        self._update_wants(())
        return replies

    def _update_wants(self, added: Iterable[OptionContract]) -> None:
        if self.wildcards and not self._wildcard_contracts:
            self._wildcard_contracts = set(self.server.wildcard_contracts())
        needed = set(self._wildcard_contracts)
        for symbols in self.subscriptions.values():
            needed.update(c for c in symbols.values() if c is not None)
        hub = self.server.hub
        for contract in sorted(needed - self._wanted):
            hub.want(self.conn_id, contract)
        removed = self._wanted - needed
        for contract in sorted(removed):
            hub.unwant(self.conn_id, contract)
            self._symbols.pop(contract, None)
        self._wanted = needed
        self.server.contracts_wanted(self, added)
        if removed:
            self.server.contracts_unwanted(self, removed)

    def drop_wildcard_contracts(self, contracts: set[OptionContract]) -> None:
        """Nobody else subscribes to these any more: `T.*` no longer covers them."""
        if self._wildcard_contracts & contracts:
            self._wildcard_contracts -= contracts
            self._update_wants(())

    def add_wildcard_contract(self, contract: OptionContract) -> None:
        """Another connection subscribed a contract: `T.*` covers it too."""
        if self.wildcards and contract not in self._wildcard_contracts:
            self._wildcard_contracts.add(contract)
            if contract not in self._wanted:
                self._wanted.add(contract)
                self.server.hub.want(self.conn_id, contract)

    # -- market data -------------------------------------------------------------------------------

    def _symbol(self, contract: OptionContract) -> str:
        sym = self._symbols.get(contract)
        if sym is None:
            sym = self._symbols[contract] = format_occ(contract)
        return sym

    def _wants(self, channel: str, sym: str) -> bool:
        return channel in self.wildcards or sym in self.subscriptions[channel]

    def _trade(self, trade: OptionTrade) -> list[Action]:
        out: list[Action] = []
        sym = self._symbol(trade.contract)
        if self._wants(TRADES, sym):
            event = wire.trade_event(sym, trade, _conditions(trade.conditions))
            self._add_encoded(wire.encode(event), trade, out)
        channels = [ch for ch in self._bars if self._wants(ch, sym)]
        if channels:
            day = self._day.add(trade)
            for channel in channels:
                builder = self._bars[channel]
                finished = builder.add(trade, day)
                if finished is not None:
                    self._add_encoded(wire.encode(builder.render(sym, finished)), None, out)
        return out

    def _bar_due(self, end_ms: int) -> float:
        end = self.server.market_time(end_ms * 1_000_000)
        return end + self._lag + self.settings.aggregate_grace

    def _due_bars(self, now: float) -> list[Action]:
        # The same test as `next_deadline` uses: a rounding difference between the two would
        # leave a deadline in the past that `tick` never clears.
        def is_due(end_ms: int) -> bool:
            return self._bar_due(end_ms) <= now

        out: list[Action] = []
        for builder in self._bars.values():
            for contract, bar in builder.due(is_due):
                self._add_encoded(
                    wire.encode(builder.render(self._symbol(contract), bar)), None, out
                )
        return out

    # -- framing -----------------------------------------------------------------------------------

    def _add_encoded(self, encoded: bytes, event: Event | None, out: list[Action]) -> None:
        self._add(msgspec.Raw(encoded), len(encoded), event, out)

    def _add(
        self,
        item: wire.QuoteEvent | msgspec.Raw,
        size: int,
        event: Event | None,
        out: list[Action],
    ) -> None:
        """Batch one event, encoded (`size` its length) or a quote to encode with its frame
        (`size` the most it can take); frames that fill up go to `out`. Frames end where they
        would with every event encoded at once: only a frame that might overflow is measured."""
        batch = self._batch
        limit = self.settings.max_frame_bytes
        if batch and self._batch_bytes + size + 2 > limit:
            if self._batch_waiting or type(item) is not msgspec.Raw:
                item = self._encode_waiting(item)
                size = len(item)
            if self._batch_bytes + size + 2 > limit:
                out += self._flush()
                batch = self._batch
        if not batch:
            self._batch_since = self._now
        batch.append(item)
        self._batch_bytes += size + 1
        if type(item) is not msgspec.Raw:
            self._batch_waiting += 1
        if event is not None:
            self._batch_events.append(event)
        if len(batch) >= self.settings.max_batch_events:
            out += self._flush()

    def _encode_waiting(self, item: wire.QuoteEvent | msgspec.Raw) -> msgspec.Raw:
        """Encode the batch's waiting quotes and `item`, so the batch's size is exact."""
        if self._batch_waiting:
            encoded = [
                e if isinstance(e, msgspec.Raw) else msgspec.Raw(wire.encode(e))
                for e in self._batch
            ]
            self._batch[:] = encoded  # in place: `_add` holds the list
            self._batch_bytes = sum(len(e) + 1 for e in encoded)
            self._batch_waiting = 0
        return item if type(item) is msgspec.Raw else msgspec.Raw(wire.encode(item))

    def _flush(self) -> list[Action]:
        if not self._batch:
            return []
        action = Send(wire.batch_frame(self._batch), tuple(self._batch_events))
        self._batch, self._batch_events, self._batch_bytes = [], [], 0
        self._batch_waiting = 0
        self._batch_since = None
        return [action]

    def _status_frame(self, statuses: Sequence[ServerEvent]) -> Send:
        return Send(wire.frame([wire.encode(s) for s in statuses]))

    def _reply(self, statuses: Sequence[StatusEvent]) -> list[Action]:
        """Control replies go out at once, after the data already batched (order is kept); a long
        list of replies (1,000 subscriptions) is split to keep frames under the size limit."""
        if not statuses:
            return []
        out = self._flush()
        chunk: list[bytes] = []
        size = 0
        for s in statuses:
            encoded = wire.encode(s)
            if chunk and size + len(encoded) + 2 > self.settings.max_frame_bytes:
                out.append(Send(wire.frame(chunk)))
                chunk, size = [], 0
            chunk.append(encoded)
            size += len(encoded) + 1
        out.append(Send(wire.frame(chunk)))
        return out

    def _end(self, status: StatusEvent | None, how: Ending) -> list[Action]:
        out = self._flush()
        if status is not None:
            out.append(self._status_frame([status]))
        out.append(Close(invented.POLICY_CLOSE) if how == "close" else Abort())
        self.state = _FINISHED
        self._ending = None
        return out


def _channels(params: str) -> list[tuple[str, str, str]]:
    """(channel, symbol, token) for each token with a channel the options feed offers; others get
    no reply at all [obs]."""
    out = []
    for raw in params.split(","):
        token = raw.strip()
        channel, dot, symbol = token.partition(".")
        if dot and symbol and channel in wire.CHANNELS:
            out.append((channel, symbol, token))
    return out


def _contract(symbol: str) -> OptionContract | None:
    try:
        return parse_occ(symbol)
    except SymbolError:
        return None


def _conditions(names: tuple[str, ...]) -> list[int]:
    out: list[int] = []
    for name in names:
        code = wire.CONDITION_IDS.get(name)
        if code is not None:
            out.append(code)
        else:
            out.extend(invented.REGULAR_CONDITIONS)
    return out
