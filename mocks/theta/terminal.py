"""The Theta Terminal as a sans-I/O core: one `ThetaTerminal` per served mock, one `ThetaSession`
per WebSocket connection.

The real terminal is a local program with one upstream session to Theta's servers. Its streams
belong to that upstream session, not to the WebSocket: they survive a client's reconnect, end only
with STOP, and are delivered to whichever client is connected now (one at a time; a newcomer
drops the old one) [re]. The terminal also owns the upstream link's state, which every message
header reports and which the `upstream_outage` fault takes down [doc/re].
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from mocks.hub import Hub
from mocks.ratelimit import ACCEPT, CLOSE, RequestRate
from mocks.session import Action, Close, ConnectionInfo, Send
from mocks.sim.clock import eastern_date_and_ms
from mocks.sim.contracts import OptionContract
from mocks.sim.events import Event, IndexPrice, OptionQuote, OptionTrade, UnderlyingTick
from mocks.sim.market import MarketSim
from mocks.sim.rng import derive_rng
from mocks.theta import codes, invented, wire
from mocks.theta.invented import ResubscribeLog
from mocks.theta.settings import PLANS, Plan, ThetaSettings
from mocks.theta.universe import build_universe
from mocks.theta.wire import (
    INDEX,
    MARKET_VALUE,
    OPTION,
    QUOTE,
    STOCK,
    TRADE,
    BadRequest,
    StopRequest,
    StreamKey,
)

VENDOR = "theta"
PATH = "/v1/events"

# Upstream link states every header carries [doc/re].
CONNECTED, DISCONNECTED = "CONNECTED", "DISCONNECTED"
# REQ_RESPONSE values [doc].
SUBSCRIBED, ERROR = "SUBSCRIBED", "ERROR"
MAX_STREAMS_REACHED, INVALID_PERMS = "MAX_STREAMS_REACHED", "INVALID_PERMS"

FULL_TRADE_STREAM = StreamKey(OPTION, TRADE, None)
QUOTES_AFTER_TRADE = 2  # [doc] "for options the next 2 NBBO quotes follow after the trade"
_HOUR_NS = 3_600_000_000_000
_MS_NS = 1_000_000


class _EasternDay:
    """`eastern_date_and_ms` for every message, with the time-zone conversion (costlier than the
    rest of a quote message) made once per hour: US Eastern's offset is whole hours and changes on
    a UTC hour boundary, so within one UTC hour the date is fixed and `ms_of_day` moves with the
    elapsed milliseconds. An hour where that does not hold is converted message by message."""

    __slots__ = ("_date", "_hour", "_ms", "_uniform")

    def __init__(self) -> None:
        self._hour: int | None = None
        self._date = self._ms = 0
        self._uniform = False

    def __call__(self, ts_ns: int) -> tuple[int, int]:
        hour, into = divmod(ts_ns, _HOUR_NS)
        if hour != self._hour:
            start = hour * _HOUR_NS
            self._hour = hour
            self._date, self._ms = eastern_date_and_ms(start)
            last_ms = _HOUR_NS // _MS_NS - 1
            self._uniform = eastern_date_and_ms(start + last_ms * _MS_NS) == (
                self._date,
                self._ms + last_ms,
            )
        if not self._uniform:
            return eastern_date_and_ms(ts_ns)
        return self._date, self._ms + into // _MS_NS


@dataclass(slots=True)
class _Ohlc:
    """A day's open/high/low/close as the terminal has seen it (invented.py: OHLC messages)."""

    date: int
    open: float
    high: float
    low: float
    close: float
    volume: int = 0
    count: int = 0

    def update(self, date: int, price: float, size: int) -> None:
        if date != self.date:
            self.date, self.open, self.high, self.low = date, price, price, price
            self.volume = self.count = 0
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.volume += size
        self.count += 1


class _StockBook:
    """Seeded draws that turn the underlying's moves into stock NBBO quotes and trades."""

    __slots__ = ("rng", "sequence")

    def __init__(self, seed: int, root: str) -> None:
        self.rng = derive_rng(seed, f"theta:stock:{root}")
        self.sequence = self.rng.randrange(1_000_000, 2**31 - 1)

    def draw(self, price: float) -> tuple[wire.QuoteBody, wire.TradeBody]:
        """Quote and trade bodies without their times (filled by the caller)."""
        rng = self.rng
        half = max(0.01, round(price * rng.uniform(*invented.STOCK_SPREAD_BPS) / 10_000, 2))
        bid = max(round(price - half, 2), 0.01)
        ask = max(round(price + half, 2), round(bid + 0.01, 2))
        venues, weights = zip(*codes.STOCK_QUOTE_EXCHANGES, strict=True)
        bid_x, ask_x = rng.choices(venues, weights, k=2)
        quote = wire.QuoteBody(
            0,
            100 * rng.randint(*invented.STOCK_QUOTE_LOTS),
            bid_x,
            bid,
            codes.QUOTE_REGULAR,
            100 * rng.randint(*invented.STOCK_QUOTE_LOTS),
            ask_x,
            ask,
            codes.QUOTE_REGULAR,
            0,
        )
        size = rng.randint(*invented.STOCK_TRADE_SIZES)
        trade_venues, trade_weights = zip(*codes.STOCK_TRADE_EXCHANGES, strict=True)
        self.sequence += 1
        trade = wire.TradeBody(
            0,
            wire.signed32(self.sequence),
            size,
            codes.TRADE_ODD_LOT if size < 100 else codes.TRADE_REGULAR,
            price,
            rng.choices(trade_venues, trade_weights)[0],
            0,
        )
        return quote, trade


class ThetaTerminal:
    """The terminal: streams, plans, the upstream link, and which WebSocket client is current."""

    vendor = VENDOR

    def __init__(self, hub: Hub, market: MarketSim, settings: ThetaSettings) -> None:
        self.hub = hub
        self.market = market
        self.settings = settings
        self.plans: dict[str, str] = {
            OPTION: settings.options_plan,
            STOCK: settings.stock_plan,
            INDEX: settings.index_plan,
        }
        self.quote_stream_limit = settings.quote_stream_limit
        self.trade_stream_limit = settings.trade_stream_limit
        self.current: ThetaSession | None = None
        # key -> id of the request that set the stream up
        self.streams: dict[StreamKey, int] = {}
        self.log: ResubscribeLog[StreamKey] = ResubscribeLog()
        self.lost_streams: list[StreamKey] = []  # ground truth: dropped at upstream recoveries
        self.upstream = CONNECTED
        self._counts: Counter[tuple[str, str]] = Counter()
        self._contract_refs: Counter[OptionContract] = Counter()
        self._root_refs: Counter[str] = Counter()
        self._universe: tuple[OptionContract, ...] | None = None
        self._outage_pending: float | None = None
        self._down_since_ns: int | None = None
        self._down_until: float | None = None
        self._outage_window_ns: tuple[int, int] | None = None
        self._heartbeat_stop_pending: float | None = None
        self.heartbeats_stopped_until = -math.inf
        self._owed: list[Action] = []  # for the current client: changes made between its steps
        self._last_quote: dict[OptionContract, OptionQuote] = {}
        self._quotes_owed: dict[OptionContract, int] = {}
        # Per contract, made once (the quote path runs for every quote): whether its quote and
        # market value streams are on (forgotten whenever a stream starts or stops), and its
        # quote messages' bytes up to the body for the upstream status they were made with.
        self._option_streams: dict[OptionContract, tuple[bool, bool]] = {}
        self._quote_prefixes: dict[OptionContract, tuple[str, bytes]] = {}
        self._date_and_ms = _EasternDay()
        self._option_ohlc: dict[OptionContract, _Ohlc] = {}
        self._ohlc_date = 0  # the latest day an option traded
        self._index_ohlc: dict[str, _Ohlc] = {}
        self._index_last_sent: dict[str, float] = {}
        self._stocks: dict[str, _StockBook] = {}
        market.on_forget(self._forget_contract)

    def _forget_contract(self, contract: OptionContract) -> None:
        """The market ended the contract's life (nobody wanted it for a while, `serve`): its
        quote state goes. Its day's OHLC stays until the next day (a few hundred bytes): a client
        back on it must not see the day's volume go down."""
        self._last_quote.pop(contract, None)
        self._quotes_owed.pop(contract, None)
        self._option_streams.pop(contract, None)
        self._quote_prefixes.pop(contract, None)

    # -- VendorServer ------------------------------------------------------------------------

    def accepts_path(self, path: str) -> bool:
        return path == PATH

    def open(self, info: ConnectionInfo, now: float) -> ThetaSession:
        session = ThetaSession(self, info, now)
        old = self.current
        if old is not None:
            self._detach(old.conn_id)
            old.evicted = True
            self.hub.poke(old.conn_id)
        self.current = session
        self._owed.clear()  # (the last client's)
        self._attach(session.conn_id)
        return session

    # -- faults and controls (scenarios) -------------------------------------------------------

    def evict(self, conn_id: int | None = None) -> None:
        """Drop the current client as a second client connecting would (close 1000); the
        streams stay with the terminal, as they do then."""
        old = self.current
        if old is None or (conn_id is not None and old.conn_id != conn_id):
            return
        self._detach(old.conn_id)
        old.evicted = True
        self.current = None
        self._owed.clear()
        self.hub.poke(old.conn_id)

    def upstream_outage(self, duration: float, at: float | None = None) -> None:
        """The terminal loses Theta's servers for `duration` seconds: the WebSocket stays open,
        heartbeats say DISCONNECTED, data stops; then the terminal resubscribes what it can.
        `at`: now, in market seconds, when it takes effect (`_take_effect`)."""
        self._outage_pending = max(duration, self._outage_pending or 0.0)
        self._take_effect(at)

    def heartbeat_stop(self, duration: float, at: float | None = None) -> None:
        """No STATUS messages for `duration` seconds (`at`: as for `upstream_outage`)."""
        self._heartbeat_stop_pending = max(duration, self._heartbeat_stop_pending or 0.0)
        self._take_effect(at)

    def _take_effect(self, at: float | None) -> None:
        """A change to the upstream link takes effect at `at`, and what the connected client is
        told of it goes out at its driver's next step. (Left to that step, a change made while
        no client's driver would take one, a restart at the same second, started when the next
        client came: `feedlab chaos --vendor theta --seed 17`, heartbeats stopped at 1 s for
        21 s were missing from 49 s to 70 s.) Without `at`, at the client's next step."""
        if at is not None:
            told = self.advance(at)  # (with the client's owed, which it returns)
            if self.current is None:
                return  # nobody to tell
            self._owed.extend(told)
        if self.current is not None:
            self.hub.poke(self.current.conn_id)

    def set_plan(
        self, *, options: Plan | None = None, stock: Plan | None = None, index: Plan | None = None
    ) -> None:
        for sec_type, plan in ((OPTION, options), (STOCK, stock), (INDEX, index)):
            if plan is not None:
                if plan not in PLANS:
                    raise ValueError(f"unknown Theta plan {plan!r}")
                self.plans[sec_type] = plan

    def set_stream_limits(self, quote: int | None, trade: int | None) -> None:
        """Per security type; None: the plan's limit."""
        self.quote_stream_limit, self.trade_stream_limit = quote, trade

    @property
    def upstream_down(self) -> bool:
        return self.upstream != CONNECTED

    # -- time: the upstream link and heartbeats -------------------------------------------------

    def advance(self, now: float) -> list[Action]:
        """Apply due state changes of the upstream link; what the current client is told."""
        out, self._owed = self._owed, []
        if self._outage_pending is not None:
            duration, self._outage_pending = self._outage_pending, None
            if self._down_until is None:
                self.upstream = DISCONNECTED
                self._down_since_ns = self.market.clock.unix_ns(now)
                if invented.STATE_ON_UPSTREAM_CHANGE:
                    out.append(Send(wire.state_message(self.upstream, "STOP")))
                self._down_until = now + duration
            else:
                self._down_until = max(self._down_until, now + duration)
        if self._down_until is not None and now >= self._down_until:
            assert self._down_since_ns is not None
            self._outage_window_ns = (
                self._down_since_ns,
                self.market.clock.unix_ns(self._down_until),
            )
            self._down_until = self._down_since_ns = None
            self.upstream = CONNECTED
            self._resubscribe()
            if invented.STATE_ON_UPSTREAM_CHANGE:
                out.append(Send(wire.state_message(self.upstream, "START")))
        if self._heartbeat_stop_pending is not None:
            until = now + self._heartbeat_stop_pending
            self._heartbeat_stop_pending = None
            self.heartbeats_stopped_until = max(self.heartbeats_stopped_until, until)
        return out

    def next_change(self) -> float | None:
        if self._outage_pending is not None or self._heartbeat_stop_pending is not None:
            return -math.inf
        return self._down_until

    def _resubscribe(self) -> None:
        """The upstream is back: restore the streams the replay log knows; the rest are gone."""
        lost = [key for key in self.streams if not self.log.restores(key)]
        for key in lost:
            self._remove(key)
        self.lost_streams.extend(lost)
        self._quotes_owed.clear()

    # -- requests ------------------------------------------------------------------------------

    def handle(self, message: str | bytes) -> list[Action]:
        request = wire.parse_request(message)
        if isinstance(request, BadRequest):
            if request.req_id != invented.UNREADABLE_REQ_ID:
                self.log.request(request.req_id)
            return [self._reply(ERROR, request.req_id)]
        if isinstance(request, StopRequest):
            self.log.request(request.req_id)
            for key in list(self.streams):
                self._remove(key)
            self.log.stop()
            self._quotes_owed.clear()
            if invented.STOP_REPLIES and request.req_id is not None:
                return [self._reply(SUBSCRIBED, request.req_id)]
            return []
        fresh = self.log.request(request.req_id)
        key = request.key
        if not request.add:
            if key in self.streams:
                self._remove(key)
            return [self._reply(SUBSCRIBED, request.req_id)]
        verdict = self._admit(key)
        if verdict == SUBSCRIBED:
            if key not in self.streams:
                self._add(key)
            self.streams[key] = request.req_id
            if fresh:
                self.log.subscribed(key, request.req_id)
        return [self._reply(verdict, request.req_id)]

    def refuse(self, message: str | bytes) -> Send:
        """A request over the client's rate: ERROR under its id, nothing else (invented.py)."""
        req_id = invented.UNREADABLE_REQ_ID
        if len(message) <= invented.REFUSED_ID_MAX_BYTES:
            read = wire.parse_request(message).req_id
            if read is not None:
                req_id = read
        return self._reply(ERROR, req_id)

    def _reply(self, response: str, req_id: int) -> Send:
        return Send(wire.req_response(self.upstream, response, req_id))

    def _admit(self, key: StreamKey) -> str:
        plan = PLANS[self.plans[key.sec_type]]
        if not plan.streaming:
            return INVALID_PERMS
        if key.bulk:
            return SUBSCRIBED if plan.full_trade_stream else INVALID_PERMS
        if key in self.streams:
            return SUBSCRIBED
        if key.req_type == TRADE:
            kind, limit = "trade", self.trade_stream_limit
            limit = plan.trade_streams if limit is None else limit
        else:
            kind, limit = "quote", self.quote_stream_limit
            limit = plan.quote_streams if limit is None else limit
        if self._counts[key.sec_type, kind] >= limit:
            return MAX_STREAMS_REACHED
        return SUBSCRIBED

    def _add(self, key: StreamKey) -> None:
        self._option_streams.clear()
        if not key.bulk:
            self._counts[key.sec_type, "trade" if key.req_type == TRADE else "quote"] += 1
        contracts, root = self._targets(key)
        conn = self.current.conn_id if self.current is not None else None
        for contract in contracts:
            self._contract_refs[contract] += 1
            if self._contract_refs[contract] == 1 and conn is not None:
                self.hub.want(conn, contract)
        if root is not None:
            self._root_refs[root] += 1
            if self._root_refs[root] == 1 and conn is not None:
                self.hub.want_root(conn, root)

    def _remove(self, key: StreamKey) -> None:
        del self.streams[key]
        self._option_streams.clear()
        self.log.unsubscribed(key)
        if not key.bulk:
            self._counts[key.sec_type, "trade" if key.req_type == TRADE else "quote"] -= 1
        contracts, root = self._targets(key)
        conn = self.current.conn_id if self.current is not None else None
        for contract in contracts:
            self._contract_refs[contract] -= 1
            if self._contract_refs[contract] <= 0:
                del self._contract_refs[contract]
                self._quotes_owed.pop(contract, None)
                if conn is not None:
                    self.hub.unwant(conn, contract)
        if root is not None:
            self._root_refs[root] -= 1
            if self._root_refs[root] <= 0:
                del self._root_refs[root]
                if conn is not None:
                    self.hub.unwant_root(conn, root)

    def _targets(self, key: StreamKey) -> tuple[Sequence[OptionContract], str | None]:
        if key.target is None:
            return self.universe(), None
        if isinstance(key.target, OptionContract):
            return (key.target,), None
        return (), key.target

    def universe(self) -> tuple[OptionContract, ...]:
        """The contracts the full trade stream watches (built once, at its first subscription)."""
        if self._universe is None:
            s = self.settings
            self._universe = build_universe(
                self.market,
                self.market.now,
                s.bulk_roots,
                s.bulk_expirations,
                s.bulk_strikes_each_side,
            )
        return self._universe

    def _attach(self, conn_id: int) -> None:
        for contract in self._contract_refs:
            self.hub.want(conn_id, contract)
        for root in self._root_refs:
            self.hub.want_root(conn_id, root)

    def _detach(self, conn_id: int) -> None:
        for contract in self._contract_refs:
            self.hub.unwant(conn_id, contract)
        for root in self._root_refs:
            self.hub.unwant_root(conn_id, root)

    def closed(self, session: ThetaSession) -> None:
        if self.current is session:
            self._detach(session.conn_id)
            self.current = None
            self._owed.clear()

    # -- data --------------------------------------------------------------------------------

    def render(self, events: Sequence[Event]) -> list[Action]:
        """Market events -> the current client's messages, one per frame."""
        if self.upstream != CONNECTED:
            return []
        out: list[Action] = []
        window = self._outage_window_ns
        bulk = FULL_TRADE_STREAM in self.streams
        for event in events:
            if window is not None and window[0] <= event.ts_ns < window[1]:
                continue  # made while the upstream was down, routed late
            if isinstance(event, OptionQuote):
                self._option_quote(event, out)
            elif isinstance(event, OptionTrade):
                self._option_trade(event, bulk, out)
            elif isinstance(event, UnderlyingTick):
                self._stock(event, out)
            else:
                self._index(event, out)
        return out

    def _option_quote(self, quote: OptionQuote, out: list[Action]) -> None:
        contract = quote.contract
        self._last_quote[contract] = quote
        wanted = self._option_streams.get(contract)
        if wanted is None:
            wanted = self._option_streams[contract] = (
                StreamKey(OPTION, QUOTE, contract) in self.streams,
                StreamKey(OPTION, MARKET_VALUE, contract) in self.streams,
            )
        wants_quote, wants_value = wanted
        owed = self._quotes_owed.get(contract, 0) if self._quotes_owed else 0
        if owed:
            if owed > 1:
                self._quotes_owed[contract] = owed - 1
            else:
                del self._quotes_owed[contract]
            out.append(self._quote_message(quote))
        elif wants_quote:
            out.append(self._quote_message(quote))
        if wants_value:
            date, ms = self._date_and_ms(quote.ts_ns)
            bid, ask, price = invented.market_value(quote.bid, quote.ask)
            message = wire.MarketValueMessage(
                wire.TypeFirstHeader(MARKET_VALUE, self.upstream),
                wire.option_contract(contract),
                wire.MarketValueBody(ms, date, bid, ask, price),
            )
            out.append(Send(wire.encode(message), (quote,)))

    def _quote_message(self, quote: OptionQuote) -> Send:
        # (What of it tells quotes apart: `quote_on_the_wire`.)
        date, ms = self._date_and_ms(quote.ts_ns)
        body = wire.QuoteBody(
            ms,
            quote.bid_size,
            codes.OPTION_EXCHANGES.get(quote.bid_exchange, 0),
            quote.bid,
            codes.QUOTE_NATIONAL_BBO,
            quote.ask_size,
            codes.OPTION_EXCHANGES.get(quote.ask_exchange, 0),
            quote.ask,
            codes.QUOTE_NATIONAL_BBO,
            date,
        )
        contract, upstream = quote.contract, self.upstream
        made = self._quote_prefixes.get(contract)
        if made is None or made[0] != upstream:
            prefix = wire.data_prefix(upstream, QUOTE, wire.option_contract(contract), "quote")
            made = self._quote_prefixes[contract] = (upstream, prefix)
        return Send(wire.with_body(made[1], body), (quote,))

    def _option_trade(self, trade: OptionTrade, bulk: bool, out: list[Action]) -> None:
        contract = trade.contract
        date, ms = self._date_and_ms(trade.ts_ns)
        if date > self._ohlc_date:
            # A new day: yesterday's OHLC would start over at the next trade anyway, and those
            # of contracts long forgotten would stay for good.
            self._option_ohlc = {c: o for c, o in self._option_ohlc.items() if o.date >= date}
            self._ohlc_date = date
        ohlc = self._option_ohlc.get(contract)
        if ohlc is None:
            ohlc = self._option_ohlc[contract] = _Ohlc(
                date, trade.price, trade.price, trade.price, trade.price
            )
        ohlc.update(date, trade.price, trade.size)
        if bulk:
            quote = self._last_quote.get(contract) or self.market.last_quote(contract)
            if quote is not None and quote.ts_ns <= trade.ts_ns:
                out.append(self._quote_message(quote))
            message = wire.OhlcMessage(
                wire.TypeFirstHeader("OHLC", self.upstream),
                wire.option_contract(contract),
                wire.OhlcBody(
                    ms, ohlc.open, ohlc.high, ohlc.low, ohlc.close, ohlc.volume, ohlc.count, date
                ),
            )
            out.append(Send(wire.encode(message)))
            self._quotes_owed[contract] = QUOTES_AFTER_TRADE
        elif StreamKey(OPTION, TRADE, contract) not in self.streams:
            return
        condition = codes.OPTION_TRADE_CONDITIONS.get(
            trade.conditions[0] if trade.conditions else "regular", codes.TRADE_REGULAR
        )
        body = wire.TradeBody(
            ms,
            wire.signed32(trade.sequence),
            trade.size,
            condition,
            trade.price,
            codes.OPTION_EXCHANGES.get(trade.exchange, 0),
            date,
        )
        trade_message = wire.TradeMessage(
            wire.DataHeader(self.upstream, TRADE), wire.option_contract(contract), body
        )
        out.append(Send(wire.encode(trade_message), (trade,)))

    def _stock(self, tick: UnderlyingTick, out: list[Action]) -> None:
        root = tick.root
        wants_quote = StreamKey(STOCK, QUOTE, root) in self.streams
        wants_trade = StreamKey(STOCK, TRADE, root) in self.streams
        if not (wants_quote or wants_trade):
            return
        book = self._stocks.get(root)
        if book is None:
            book = self._stocks[root] = _StockBook(self.market.settings.seed, root)
        quote, trade = book.draw(tick.price)
        date, ms = self._date_and_ms(tick.ts_ns)
        contract = wire.root_contract(STOCK, root)
        if wants_quote:
            quote.ms_of_day, quote.date = ms, date
            message = wire.QuoteMessage(wire.DataHeader(self.upstream, QUOTE), contract, quote)
            out.append(Send(wire.encode(message), (tick,)))
        if wants_trade:
            trade.ms_of_day, trade.date = ms, date
            trade_message = wire.TradeMessage(
                wire.DataHeader(self.upstream, TRADE), contract, trade
            )
            out.append(Send(wire.encode(trade_message), (tick,)))

    def _index(self, report: IndexPrice, out: list[Action]) -> None:
        root, price = report.root, report.price
        date, ms = self._date_and_ms(report.ts_ns)
        if ms == invented.INDEX_OPEN_MS or self._index_last_sent.get(root) == price:
            return
        wants_trade = StreamKey(INDEX, TRADE, root) in self.streams
        wants_value = StreamKey(INDEX, MARKET_VALUE, root) in self.streams
        if not (wants_trade or wants_value):
            return
        self._index_last_sent[root] = price
        ohlc = self._index_ohlc.get(root)
        if ohlc is None:
            ohlc = self._index_ohlc[root] = _Ohlc(date, price, price, price, price)
        ohlc.update(date, price, 0)
        contract = wire.root_contract(INDEX, root)
        if wants_trade:
            header = wire.TypeFirstHeader(TRADE, self.upstream)
            body = wire.TradeBody(ms, 0, 0, 0, price, codes.INDEX_EXCHANGE, date)
            out.append(Send(wire.encode(wire.TradeMessage(header, contract, body)), (report,)))
            ohlc_message = wire.OhlcMessage(
                wire.TypeFirstHeader("OHLC", self.upstream),
                contract,
                wire.OhlcBody(ms, ohlc.open, ohlc.high, ohlc.low, ohlc.close, 0, ohlc.count, date),
            )
            out.append(Send(wire.encode(ohlc_message)))
        if wants_value:
            value = wire.MarketValueMessage(
                wire.TypeFirstHeader(MARKET_VALUE, self.upstream),
                contract,
                wire.IndexMarketValueBody(ms, date, price),
            )
            out.append(Send(wire.encode(value), (report,)))


class ThetaSession:
    """One WebSocket client of the terminal. Only the current client is served."""

    def __init__(self, terminal: ThetaTerminal, info: ConnectionInfo, now: float) -> None:
        self.terminal = terminal
        self.info = info
        self.conn_id = info.conn_id
        self.evicted = False
        self.flooded = False  # closed for too many requests
        self.next_heartbeat = now + terminal.settings.heartbeat_interval
        self.requests = RequestRate(terminal.settings.request_limit, now)

    @property
    def is_current(self) -> bool:
        return self.terminal.current is self and not self.flooded

    def opened(self, now: float) -> list[Action]:
        return self.terminal.advance(now) if self.is_current else []

    def received(self, message: str | bytes, now: float) -> list[Action]:
        if not self.is_current:
            return []
        verdict = self.requests.admit(now)
        if verdict == ACCEPT:
            return [*self.terminal.advance(now), *self.terminal.handle(message)]
        out = [*self.terminal.advance(now), self.terminal.refuse(message)]
        if verdict == CLOSE:
            self.flooded = True
            out.append(Close(invented.FLOOD_CLOSE_CODE, invented.FLOOD_CLOSE_REASON))
        return out

    def publish(self, events: Sequence[Event], now: float) -> list[Action]:
        if not self.is_current:
            return []
        return [*self.terminal.advance(now), *self.terminal.render(events)]

    def tick(self, now: float) -> list[Action]:
        if self.evicted:
            return [Close(invented.EVICTION_CLOSE_CODE, invented.EVICTION_CLOSE_REASON)]
        if not self.is_current:
            return []
        out = self.terminal.advance(now)
        if now >= self.next_heartbeat:
            if now >= self.terminal.heartbeats_stopped_until:
                out.append(Send(wire.status_message(self.terminal.upstream)))
            interval = self.terminal.settings.heartbeat_interval
            self.next_heartbeat += interval
            if self.next_heartbeat <= now:  # woken late: keep the phase, skip the missed beats
                self.next_heartbeat += math.ceil((now - self.next_heartbeat) / interval) * interval
                if self.next_heartbeat <= now:
                    self.next_heartbeat += interval
        return out

    def next_deadline(self) -> float | None:
        if self.evicted:
            return -math.inf
        if not self.is_current:
            return None
        change = self.terminal.next_change()
        return self.next_heartbeat if change is None else min(change, self.next_heartbeat)

    def overflowed(self, now: float) -> list[Action]:
        return []  # invented.py: the terminal drops what does not fit and keeps the client

    def closed(self, now: float) -> None:
        self.terminal.closed(self)


QuoteOnTheWire = tuple[int, float, float, int, int, int, int]  # ms, bid, ask, sizes, exchanges


def quote_on_the_wire(quote: OptionQuote) -> QuoteOnTheWire:
    """What a QUOTE message tells of a quote (`ThetaTerminal._quote_message`): no sequence
    number, the time to the millisecond, the exchanges as Theta's codes. Two quotes of a
    contract alike in these are one message twice on the wire, which a client cannot tell
    from a duplicate (`scenarios.ground_truth` counts them as one event)."""
    exchanges = codes.OPTION_EXCHANGES
    return (
        quote.ts_ns // 1_000_000,
        quote.bid,
        quote.ask,
        quote.bid_size,
        quote.ask_size,
        exchanges.get(quote.bid_exchange, 0),
        exchanges.get(quote.ask_exchange, 0),
    )
