"""Everything the Theta mock does that no source documents: our own choices, in one place.

Each item carries the [inv] label of `shared/protocols/theta.md` (or is a gap that file leaves
open). A live recording of a real terminal that shows otherwise should correct it here, and
nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K")

# -- reading requests --------------------------------------------------------------------------

# [inv] A request the terminal cannot read at all (not JSON even leniently, not an object, or its
# `id` unreadable) is answered REQ_RESPONSE ERROR with this req_id; a request whose id was
# readable but whose other fields were not gets ERROR with its own id.
UNREADABLE_REQ_ID = -1

# [inv] Missing fields take the Java defaults of the terminal's Gson-mapped request class: a
# STREAM without `add` unsubscribes, one without `id` is request 0.
DEFAULT_ADD = False
DEFAULT_ID = 0

# [inv] `msg_type`, `sec_type` and `req_type` are Java enum names: case-sensitive. A combination
# the terminal has no stream for (OPTION OHLC, STREAM_BULK of quotes) is answered ERROR.

# [inv] STOP gets no reply [protocol file: "its reply is undocumented"].
STOP_REPLIES = False

# [inv] `add:false` for a stream that is not active is still answered SUBSCRIBED (the terminal
# acknowledges unsubscriptions with SUBSCRIBED [re]; it does not check that the stream existed).

# -- plans -------------------------------------------------------------------------------------

# [inv] What counts against the plan's stream limits: QUOTE and MARKET_VALUE streams are quote
# streams, TRADE streams (index price streams included) trade streams, counted per security type
# against that type's plan. The full trade stream counts against neither.
# [inv] Pro's limit on per-contract trade streams is not documented; the mock uses Standard's.
PRO_TRADE_STREAMS = 20_000
# [inv] Lowering a limit or a plan later does not end streams already active.

# -- the one-client rule -------------------------------------------------------------------------

# [re] A second WebSocket client takes over; the first gets a close frame with code 1000. The reason
# text is the ThetaDataDx reimplementation's; the real terminal's is unknown.
EVICTION_CLOSE_CODE = 1000
EVICTION_CLOSE_REASON = "replaced by a new client connection"

# [inv] When the client reads slower than the feed and the outbound buffer fills, the terminal
# drops what does not fit and keeps the connection (no message says so).

# -- the request rate ----------------------------------------------------------------------------

# [inv] The requests a client may send per connection (`mocks.ratelimit`); the terminal documents
# no limit. Theta's requests are one per stream, so the burst must take a whole Pro account's
# worth at once: 20K quote and 20K trade option streams plus stock and index streams, all sent
# again (with new ids) after every DISCONNECTED status or reconnect; 1,000 a second after that
# leaves room for a client that rolls whole chains as the money moves. Only a client stuck in a
# send loop meets these numbers.
REQUEST_RATE = 1_000.0  # requests per second, sustained
REQUEST_BURST = 50_000
REFUSALS_BEFORE_CLOSE = 5_000
# [inv] A refused request is not acted on and its id does not count as seen (it never reaches the
# resubscription log below): REQ_RESPONSE ERROR under its id, which is read only from a frame of
# a request's size (a longer one gets UNREADABLE_REQ_ID: refusing must stay cheap). After
# REFUSALS_BEFORE_CLOSE refusals in one flood: that ERROR, then this close.
REFUSED_ID_MAX_BYTES = 4096
FLOOD_CLOSE_CODE = 1008
FLOOD_CLOSE_REASON = "too many requests"

# -- the upstream link ---------------------------------------------------------------------------

# [inv] The terminal sends STATE STOP when its upstream link drops and STATE START when it is back
# (the STATE message is known [re]; when it is sent is not).
STATE_ON_UPSTREAM_CHANGE = True

# [inv] Requests that arrive while the upstream is down are accepted (SUBSCRIBED, header status
# DISCONNECTED) and start streaming on recovery, under the resubscription rule below.

# [inv] `heartbeat_stop` stops only the STATUS messages; data and replies go on.

# [doc: "Failure to increment the ID for each request will prevent the terminal from
# automatically resubscribing to streams you previously requested"; inv: exactly which streams].
# The mock's rule: the terminal keeps a replay log of requests by id. On upstream recovery it
# resubscribes the streams in that log, and no other. A request enters the log only if its id is
# greater than every id the terminal has seen before (unique and increasing). A request that
# reuses an id already in the log also evicts the stream logged under it: the terminal cannot
# tell which stream the id means. Every readable id counts as seen (refused requests, STOP and
# unsubscriptions included) for the terminal's whole life; STOP empties the log, not the memory of
# ids. A stream that is not in the log at recovery is gone: no data, no message, and it no longer
# counts against the limits. Resubscriptions are not answered with REQ_RESPONSE [protocol: inv].


@dataclass
class ResubscribeLog(Generic[K]):
    """Which streams the terminal would restore after an upstream outage (the rule above)."""

    by_id: dict[int, K] = field(default_factory=dict)
    id_of: dict[K, int] = field(default_factory=dict)
    highest: int | None = None

    def request(self, req_id: int | None) -> bool:
        """Note a request id; True when it is unique and increasing (a stream it sets up logs)."""
        if req_id is None:
            return False
        fresh = self.highest is None or req_id > self.highest
        if req_id in self.by_id:
            self.id_of.pop(self.by_id.pop(req_id), None)
        if self.highest is None or req_id > self.highest:
            self.highest = req_id
        return fresh

    def subscribed(self, key: K, req_id: int) -> None:
        """A stream was set up (or asked for again) by a fresh request."""
        old = self.id_of.get(key)
        if old is not None:
            del self.by_id[old]
        self.by_id[req_id] = key
        self.id_of[key] = req_id

    def unsubscribed(self, key: K) -> None:
        req_id = self.id_of.pop(key, None)
        if req_id is not None:
            del self.by_id[req_id]

    def stop(self) -> None:
        self.by_id.clear()
        self.id_of.clear()

    def restores(self, key: K) -> bool:
        return key in self.id_of


# -- what the data messages carry ----------------------------------------------------------------

# [inv] MARKET_VALUE from the NBBO: market_price the midpoint, market_bid/market_ask one cent
# outside the quote (the documented sample: bid 110.2 / ask 110.5 -> 110.19 / 110.51 / 110.35).
MARKET_VALUE_OUTSIDE = 0.01


def market_value(bid: float, ask: float) -> tuple[float, float, float]:
    """(market_bid, market_ask, market_price)."""
    return (
        round(max(bid - MARKET_VALUE_OUTSIDE, 0.0), 2),
        round(ask + MARKET_VALUE_OUTSIDE, 2),
        round((bid + ask) / 2.0, 2),
    )


# [inv] OHLC messages. Index: one after each price report (the samples show the pair with the
# same ms_of_day [doc]); open/high/low/close over the reports the terminal has seen since the
# US Eastern day began, volume 0, count the number of those reports. Full trade stream: the OHLC
# before each trade counts that contract's trades seen since the Eastern day began, this one
# included (volume the sum of sizes, count the trades).

# [inv] A contract in both the full trade stream and a per-contract TRADE (or QUOTE) stream gets
# each trade (and each quote) once, in the full stream's form.

# [doc: "normally no 9:30:00 index price report, only 9:30:01"] The terminal drops an index
# report stamped exactly 09:30:00.000 Eastern, if the market makes one; the next report goes out
# only if its price differs from the last one sent.
INDEX_OPEN_MS = (9 * 3600 + 30 * 60) * 1000

# [inv] Stock quotes and trades are derived from the simulated underlying: every move of the
# price is one NBBO quote around it and one trade at it. Spread: a few basis points, at least a
# cent; sizes in round lots of 100 shares (quotes) and 1-500 shares (trades; under 100 is an
# odd lot, condition ODD_LOT); venues drawn by rough market share; bid/ask condition REGULAR.
STOCK_SPREAD_BPS = (0.5, 3.0)
STOCK_QUOTE_LOTS = (1, 20)
STOCK_TRADE_SIZES = (1, 500)
