"""Massive's options WebSocket wire format, mock side: what clients send, what the server sends.

Everything the server sends is a JSON array of event objects; these Structs fix the field names,
their order (as in the vendor's samples) and their types, so a rendering mistake is a type error
rather than a silently different frame. Clients send one JSON object per message (text or binary).
Labels as in `shared/protocols/massive.md`: [doc] vendor docs, [src] the official client, [obs]
third-party reports. Invented texts live in `mocks.massive.invented`, not here.
"""

from __future__ import annotations

import msgspec

from mocks.sim.events import OptionTrade


class ClientRequest(msgspec.Struct, forbid_unknown_fields=False):
    """`{"action":"auth","params":"KEY"}` and friends [obs]; `params` is a comma-separated list."""

    action: str
    params: str = ""


class StatusEvent(msgspec.Struct, frozen=True):
    """`{"ev":"status","status":...,"message":...}` [obs]."""

    ev: str
    status: str
    message: str


def status(status: str, message: str) -> StatusEvent:
    return StatusEvent("status", status, message)


class QuoteEvent(msgspec.Struct, gc=False):
    """`Q`: field order of the vendor's sample [doc]. (Only scalars: the cyclic GC need not
    track the millions of them a fast feed makes.)"""

    ev: str
    sym: str
    bx: int
    ax: int
    bp: float
    ap: float
    bs: int
    ask_size: int = msgspec.field(name="as")
    t: int
    q: int


class TradeEvent(msgspec.Struct):
    """`T`: field order of the vendor's sample [doc]."""

    ev: str
    sym: str
    x: int
    p: float
    s: int
    c: list[int]
    t: int
    q: int


class AggregateEvent(msgspec.Struct):
    """`A` (per second) and `AM` (per minute) [doc]: `v` bar volume, `av` today's volume, `op`
    today's official open, `vw` bar VWAP, `o`/`c`/`h`/`l` bar prices, `a` today's VWAP, `z` average
    trade size in the bar, `s`/`e` window start and end in Unix ms."""

    ev: str
    sym: str
    v: int
    av: int
    op: float
    vw: float
    o: float
    c: float
    h: float
    l: float  # noqa: E741 - the vendor's field name
    a: float
    z: int
    s: int
    e: int


ServerEvent = StatusEvent | QuoteEvent | TradeEvent | AggregateEvent

# -- documented and observed status texts ------------------------------------------------------

CONNECTED = status("connected", "Connected Successfully")  # [obs]
AUTH_SUCCESS = status("auth_success", "authenticated")  # [obs]
AUTH_FAILED = status("auth_failed", "authentication failed")  # [obs]
AUTH_FAILED_PLAN = status(  # [obs] key valid, plan without websocket access to the market
    "auth_failed",
    "Your plan doesn't include websocket access. Visit https://massive.com/pricing to upgrade.",
)
AUTH_TIMEOUT = status("auth_timeout", "No authentication request received.")  # [obs]
INVALID_JSON = status("error", "Invalid JSON")  # [obs, 2019]
NOT_AUTHORIZED = status("error", "not authorized")  # [obs] a refused subscription
MAX_CONNECTIONS = status(  # [obs]
    "max_connections",
    "Maximum number of websocket connections exceeded. You have reached the connection limit "
    "for your account. Please contact support at https://polygon.io/contact to increase your "
    "limit.",
)


def subscribed(channel: str) -> StatusEvent:
    return status("success", f"subscribed to: {channel}")  # [obs]


def unsubscribed(channel: str) -> StatusEvent:
    return status("success", f"unsubscribed to: {channel}")  # [obs] sic: "unsubscribed to"


# -- channels [doc] ----------------------------------------------------------------------------

QUOTES, TRADES, SECOND_AGGREGATES, MINUTE_AGGREGATES = "Q", "T", "A", "AM"
CHANNELS = (QUOTES, TRADES, SECOND_AGGREGATES, MINUTE_AGGREGATES)
WILDCARD = "*"
WILDCARD_CHANNELS = frozenset({TRADES, SECOND_AGGREGATES, MINUTE_AGGREGATES})  # `Q.*` not offered
QUOTE_CONTRACTS_PER_CONNECTION = 1000  # [doc]

# -- exchange ids ------------------------------------------------------------------------------
# Massive's numeric ids of the US options exchanges, by MIC (the vendor's /v3/reference/exchanges
# with asset_class=options). [obs] from third-party code built on that endpoint; the vendor's own
# 2021-22 samples show older ids (`x: 65`, `bx: 302`), so a live recording may correct these.
EXCHANGE_IDS: dict[str, int] = {
    "AMXO": 300,  # NYSE American Options
    "XBOX": 301,  # BOX Options
    "XCBO": 302,  # Cboe Options
    "EMLD": 303,  # MIAX Emerald
    "EDGO": 304,  # Cboe EDGX Options
    "GMNI": 307,  # Nasdaq GEMX
    "XISX": 308,  # Nasdaq ISE
    "MCRY": 309,  # Nasdaq MRX
    "XMIO": 312,  # MIAX Options
    "ARCO": 313,  # NYSE Arca Options
    "MPRL": 315,  # MIAX Pearl
    "XNDQ": 316,  # Nasdaq Options Market
    "SPHR": 318,  # MIAX Sapphire
    "XBXO": 319,  # Nasdaq BX Options
    "MXOP": 320,  # MEMX Options
    "C2OX": 322,  # Cboe C2 Options
    "XPHO": 323,  # Nasdaq PHLX
    "BATO": 325,  # Cboe BZX Options
}
OPRA_ID = 314  # the consolidated tape itself; what an unknown venue is reported as

# Massive's option trade condition ids (OPRA sale conditions, ids 201-248) [obs], by the market's
# neutral names. "regular" has no OPRA condition of its own: see `invented.REGULAR_CONDITIONS`.
CONDITION_IDS: dict[str, int] = {
    "auto_execution": 209,  # Automatic Execution
    "intermarket_sweep": 219,  # Intermarket Sweep Order
    "single_leg_auction": 227,  # Single Leg Auction Non ISO
    "floor": 231,  # Single Leg Floor Trade
    "multi_leg_auto": 232,  # Multi Leg auto-electronic trade
    "multi_leg_auction": 233,  # Multi Leg Auction
    "stock_option": 240,  # Stock Options auto-electronic trade
}


def exchange_id(mic: str) -> int:
    return EXCHANGE_IDS.get(mic, OPRA_ID)


def trade_event(symbol: str, trade: OptionTrade, conditions: list[int]) -> TradeEvent:
    return TradeEvent(
        "T",
        symbol,
        exchange_id(trade.exchange),
        float(trade.price),
        int(trade.size),
        conditions,
        trade.ts_ns // 1_000_000,
        trade.sequence,
    )


_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()


def encode(event: ServerEvent) -> bytes:
    """One event object, fields in the order of the vendor's samples."""
    return _encoder.encode(event)


def frame(encoded: list[bytes]) -> str:
    """A text frame: the JSON array of already encoded events."""
    return (b"[" + b",".join(encoded) + b"]").decode()


def batch_frame(events: list[QuoteEvent | msgspec.Raw]) -> str:
    """A text frame from events of which some are still to encode: one encoder call for the
    whole array (the same bytes as `frame` of each one encoded)."""
    return _encoder.encode(events).decode()


# The most bytes a quote event takes besides its symbol, which takes at most 6 per character (an
# escape): 64-bit integers take at most 20 characters, floats at most 24
# ("-2.2250738585072014e-308"). What lets a batch of quotes wait for its frame to be encoded
# (`MassiveSession._add`).
QUOTE_BYTES_BESIDES_SYMBOL = (
    len(_encoder.encode(QuoteEvent("Q", "", 0, 0, 0.0, 0.0, 0, 0, 0, 0)))
    - 6
    - 2 * 3
    + 6 * 20
    + 2 * 24
)


class BadRequest(Exception):
    """Well-formed JSON that is not a request object (no `action`, or a `params` not a string)."""


def decode_request(message: str | bytes) -> ClientRequest:
    """Raises `msgspec.DecodeError` for invalid JSON (or bytes not UTF-8), `BadRequest` for JSON
    that is not a request."""
    document = _json_decoder.decode(message)  # syntax first: `[1,` is invalid JSON, not a list
    try:
        return msgspec.convert(document, ClientRequest)
    except msgspec.ValidationError as exc:
        raise BadRequest(str(exc)) from None
