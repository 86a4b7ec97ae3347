"""Every Amberdata behaviour the mock invents, in one place (protocols/amberdata.md, items [inv]).

Nothing here is documented by Amberdata or seen in its own clients; each item is our best guess,
kept together so a live recording can correct it without hunting through the protocol code.
"""

from __future__ import annotations

import datetime as dt
import math

from mocks.sim.contracts import OptionContract
from mocks.sim.symbols import format_deribit

# -- connection and authentication ----------------------------------------------------------------

# A bad or missing key: the upgrade is accepted, the documented text frame is sent, then this close.
AUTH_CLOSE_CODE = 1008
AUTH_CLOSE_REASON = "invalid api key"
# A missing key is rendered as an empty one in the documented text: `invalid api key ''`.
MISSING_KEY = ""
# The header wins when both the `x-api-key` header and the query parameter are present.
KEY_HEADER_WINS = True

# One connection more than the plan allows: a text frame, then the same policy-violation close.
CONNECTION_LIMIT_TEXT = (
    "Max connection limit reached for this api key. Please close unused connections."
)
CONNECTION_LIMIT_CLOSE_CODE = 1008
CONNECTION_LIMIT_CLOSE_REASON = "connection limit"

# The client reads slower than the feed: the server gives up on it.
SLOW_CONSUMER_CLOSE_CODE = 1011
SLOW_CONSUMER_CLOSE_REASON = "slow consumer"

# Enterprise (`UAK`, and any key without a known prefix) limits are "custom": these are defaults.
ENTERPRISE_CONNECTIONS = 100
ENTERPRISE_SUBSCRIPTIONS = 1000

# The requests a client may send per connection (`mocks.ratelimit`); Amberdata documents none.
# Every subscription is a request of its own, so the burst takes the enterprise default of 1,000
# subscriptions at once plus as many unsubscriptions (a client rolling its instruments, or
# resubscribing everything after a reconnect); 100 a second after that is far above what anyone
# subscribing by hand or by schedule sends. Raise them with `enterprise_subscriptions`.
REQUEST_RATE = 100.0  # requests per second, sustained
REQUEST_BURST = 2_000
REFUSALS_BEFORE_CLOSE = 1_000
# A refused request gets the documented error shape with the HTTP code for the case, under its
# own id (a batch: one such error per call in it; a notification: nothing, as JSON-RPC says);
# after REFUSALS_BEFORE_CLOSE refusals in one flood, the error and then this close.
TOO_MANY_REQUESTS_CODE = 429
FLOOD_CLOSE_CODE = 1008
FLOOD_CLOSE_REASON = "too many requests"


def too_many_requests_description(rate: float, burst: int) -> str:
    return f"too many requests: at most {rate:g} per second (bursts of {burst}); request dropped"


# -- JSON-RPC where Amberdata documents nothing: JSON-RPC 2.0 standard errors ---------------------

PARSE_ERROR = (-32700, "Parse error")
INVALID_REQUEST = (-32600, "Invalid Request")
METHOD_NOT_FOUND = (-32601, "Method not found")
INVALID_PARAMS = (-32602, "Invalid params")

# Unsubscribing an id this connection does not have answers `false`, not an error.
UNKNOWN_UNSUBSCRIBE_RESULT = False
# Subscribing twice to the same (stream, instrument, exchange) returns the existing id.
DUPLICATE_SUBSCRIBE_RETURNS_EXISTING = True


def missing_instrument_description(stream: str) -> str:
    """The vendor's JS sample subscribes without an instrument; options need one [doc], the words
    of the refusal are ours."""
    return (
        f"subscription '{stream}' requires an instrument and an exchange, "
        'e.g. {"instrument":"BTC-24JUN22-15000-P","exchange":"deribit"}'
    )


def missing_exchange_description(stream: str) -> str:
    return f"subscription '{stream}' requires an exchange"


def unsupported_exchange_description(exchange: str) -> str:
    return f"exchange '{exchange}' is not supported"


def unknown_instrument_description(instrument: str, exchange: str) -> str:
    return f"instrument '{instrument}' is not supported on exchange '{exchange}'"


# -- streams --------------------------------------------------------------------------------------

# The vendor doc marks `exchange` OPTIONAL; Deribit is assumed when it is left out.
DEFAULT_EXCHANGE = "deribit"
# All three exchanges are served from one simulated book, named in Deribit's syntax.
EXCHANGES = ("deribit", "okex", "bybit")
# okex/bybit may publish IV as a fraction rather than percent (unverified): percent everywhere.
IV_SCALE = {"deribit": 100.0, "okex": 100.0, "bybit": 100.0}

# Periodic streams: the first message this long after subscribing, then on a grid of the interval
# (from the run's start), so every connection sees the same snapshot instants.
FIRST_PUSH_DELAY = 0.25  # seconds
SNAPSHOT_INTERVAL = 1.0
TICKER_INTERVAL = 1.0
OPEN_INTEREST_INTERVAL = 10.0
# One bar per closed UTC minute that had trades; a minute without trades sends no bar.
OHLCV_BAR_SECONDS = 60
# `timestamp` is the snapshot instant; `exchangeTimestamp` (+ nanoseconds) the last book change or
# trade at or before it. (The documented sample has it 15 s *after* `timestamp`, unexplained.)
# Deepest book rendered per side, the best level included.
BOOK_DEPTH = 12

# `sequence` of snapshots and tickers: strictly increasing per instrument and the same on every
# connection at the same instant. It moves by SEQUENCE_PER_EVENT for every book change or trade
# (the market's per-contract sequence) and by one per millisecond in between.
SEQUENCE_BASE = 37_000_000_000
SEQUENCE_PER_EVENT = 1_000_000

# Deribit trade ids are per-exchange counters; ours are per contract, offset by a seeded base.
TRADE_ID_SPAN = 10**9

# Index = forward discounted at this annual basis (the sample: F 60041.9, index 56942.12, T 0.56).
BASIS_PER_YEAR = 0.09
INTEREST_RATE = 0.0

# Deribit's price band around the mark.
PRICE_BAND = 0.015
MIN_PRICE = 0.0001


def deribit_expiry(contract: OptionContract) -> str:
    """`24JUN22`: day not zero-padded, as in Deribit's instrument names."""
    return format_deribit(contract).split("-")[1]


def underlying_index(contract: OptionContract) -> str:
    """The future the option is valued on; Deribit lists quarterlies (the last Friday of March,
    June, September, December); other expiries use the synthetic forward `SYN.<root>-<expiry>`."""
    exp = contract.expiration
    name = f"{contract.root}-{deribit_expiry(contract)}"
    last_friday = exp.weekday() == 4 and (exp + dt.timedelta(days=7)).month != exp.month
    return name if exp.month % 3 == 0 and last_friday else f"SYN.{name}"


def index_price(forward: float, years: float) -> float:
    return forward * math.exp(-BASIS_PER_YEAR * max(years, 0.0))


def price_band(mark_price: float, tick: float) -> tuple[float, float]:
    """(minPrice, maxPrice): Deribit clamps orders to a band around the mark."""
    low = math.floor((mark_price - PRICE_BAND) / tick) * tick
    high = math.ceil((mark_price + PRICE_BAND) / tick) * tick
    return max(MIN_PRICE, round(low, 4)), round(max(high, tick), 4)


# Tick direction as Deribit numbers it: 0 plus, 1 zero-plus, 2 minus, 3 zero-minus.
PLUS, ZERO_PLUS, MINUS, ZERO_MINUS = 0, 1, 2, 3
