"""The Theta Terminal's WebSocket wire format, mock side: reading requests, rendering replies.

Requests are read leniently (`mocks.theta.lenient`) and then checked field by field, so a request
the terminal cannot act on becomes a `BadRequest` that carries its id when the id was readable.
Everything the terminal sends is one JSON object per frame; the msgspec Structs below fix each
message's field names, their order (as in the vendor's samples) and their types [doc]. Clients
must not depend on key order [doc: the samples differ], but the mock keeps the samples' order.
Labels as in `shared/protocols/theta.md`; invented choices live in `mocks.theta.invented`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

from mocks.sim.contracts import OptionContract
from mocks.sim.symbols import SymbolError, from_theta
from mocks.theta import invented
from mocks.theta.lenient import LenientError, loads

OPTION, STOCK, INDEX = "OPTION", "STOCK", "INDEX"
QUOTE, TRADE, MARKET_VALUE = "QUOTE", "TRADE", "MARKET_VALUE"

# What `STREAM` can ask for, by security type [doc]. INDEX TRADE is the price report stream.
STREAMS: dict[str, frozenset[str]] = {
    OPTION: frozenset({QUOTE, TRADE, MARKET_VALUE}),
    STOCK: frozenset({QUOTE, TRADE}),
    INDEX: frozenset({TRADE, MARKET_VALUE}),
}

_ROOT = re.compile(r"[A-Z][A-Z0-9.]{0,9}")


# -- requests (client -> terminal) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamKey:
    """One stream of the terminal. `target` is an option contract, a stock or index root, or None
    for the full trade stream (`STREAM_BULK`)."""

    sec_type: str
    req_type: str
    target: OptionContract | str | None

    @property
    def bulk(self) -> bool:
        return self.target is None


@dataclass(frozen=True, slots=True)
class StreamRequest:
    req_id: int
    key: StreamKey
    add: bool


@dataclass(frozen=True, slots=True)
class StopRequest:
    req_id: int | None  # STOP needs no id [doc]; one that comes along still counts as used


@dataclass(frozen=True, slots=True)
class BadRequest:
    req_id: int  # invented.UNREADABLE_REQ_ID when the id itself could not be read
    reason: str


Request = StreamRequest | StopRequest | BadRequest


def parse_request(message: str | bytes) -> Request:
    try:
        body = loads(message)
    except LenientError as exc:
        return BadRequest(invented.UNREADABLE_REQ_ID, f"unreadable: {exc}")
    except RecursionError:  # nesting deeper than the reader's recursion allows (fuzzing)
        return BadRequest(invented.UNREADABLE_REQ_ID, "unreadable: nested too deeply")
    if not isinstance(body, dict):
        return BadRequest(invented.UNREADABLE_REQ_ID, "not an object")
    raw_id = body.get("id")
    req_id = invented.DEFAULT_ID if raw_id is None else as_int(raw_id)
    msg_type = body.get("msg_type")
    if msg_type == "STOP":
        return StopRequest(None if raw_id is None else req_id)
    if req_id is None:
        return BadRequest(invented.UNREADABLE_REQ_ID, f"unreadable id {raw_id!r}")
    if msg_type not in ("STREAM", "STREAM_BULK"):
        return BadRequest(req_id, f"unknown msg_type {msg_type!r}")
    raw_add = body.get("add")
    add = invented.DEFAULT_ADD if raw_add is None else as_bool(raw_add)
    if add is None:
        return BadRequest(req_id, f"unreadable add {raw_add!r}")
    sec_type, req_type = body.get("sec_type"), body.get("req_type")
    if msg_type == "STREAM_BULK":
        if (sec_type, req_type) != (OPTION, TRADE):
            return BadRequest(req_id, f"no full stream of {sec_type} {req_type}")
        return StreamRequest(req_id, StreamKey(OPTION, TRADE, None), add)
    if not isinstance(sec_type, str) or req_type not in STREAMS.get(sec_type, ()):
        return BadRequest(req_id, f"no {sec_type} {req_type} stream")
    contract = body.get("contract")
    if not isinstance(contract, dict):
        return BadRequest(req_id, "no contract")
    target = _target(sec_type, contract)
    if isinstance(target, str) and target.startswith("!"):
        return BadRequest(req_id, target[1:])
    return StreamRequest(req_id, StreamKey(sec_type, str(req_type), target), add)


def _target(sec_type: str, contract: dict[str, Any]) -> OptionContract | str:
    """The contract or root a request names; a string starting with "!" is the reason it is bad."""
    # v3 reimplementations call the root `symbol` [re]; the documented name is `root` [doc].
    root = contract.get("root", contract.get("symbol"))
    if isinstance(root, bool) or not isinstance(root, str | int):
        return f"!bad root {root!r}"
    if sec_type != OPTION:
        root_s = str(root).strip().upper()
        return root_s if _ROOT.fullmatch(root_s) else f"!bad root {root!r}"
    expiration, strike = as_int(contract.get("expiration")), as_int(contract.get("strike"))
    if expiration is None or strike is None:
        return f"!bad expiration or strike in {contract!r}"
    try:
        return from_theta(root, expiration, strike, contract.get("right"))
    except SymbolError as exc:
        return f"!{exc}"


def as_int(value: object) -> int | None:
    """Gson's getAsInt, leniently: ints, integral floats, and either written as a string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def as_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


# -- replies (terminal -> client) --------------------------------------------------------------


class StatusHeader(msgspec.Struct):
    status: str
    type: str = "STATUS"


class StatusMessage(msgspec.Struct):
    """`{"header":{"status":"CONNECTED","type":"STATUS"}}` once a second [doc]."""

    header: StatusHeader


class ReqResponseHeader(msgspec.Struct):
    type: str
    status: str
    response: str
    req_id: int


class ReqResponseMessage(msgspec.Struct):
    header: ReqResponseHeader


class StateHeader(msgspec.Struct):
    type: str
    status: str
    state: str


class StateMessage(msgspec.Struct):
    header: StateHeader


class DataHeader(msgspec.Struct):
    """Option and stock quotes and trades: `status` first, as in those samples [doc]."""

    status: str
    type: str


class TypeFirstHeader(msgspec.Struct):
    """Index prices, OHLC and market value: `type` first, as in those samples [doc]."""

    type: str
    status: str


class OptionContractBody(msgspec.Struct):
    security_type: str
    root: str
    expiration: int
    strike: int  # 1/10 of a cent [doc]
    right: str


class RootContractBody(msgspec.Struct):
    security_type: str
    root: str


ContractBody = OptionContractBody | RootContractBody


class QuoteBody(msgspec.Struct, gc=False):
    ms_of_day: int
    bid_size: int
    bid_exchange: int
    bid: float
    bid_condition: int
    ask_size: int
    ask_exchange: int
    ask: float
    ask_condition: int
    date: int


class TradeBody(msgspec.Struct):
    """Exactly these seven fields [doc]; `sequence` is a signed 32-bit value."""

    ms_of_day: int
    sequence: int
    size: int
    condition: int
    price: float
    exchange: int
    date: int


class OhlcBody(msgspec.Struct):
    ms_of_day: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    count: int
    date: int


class MarketValueBody(msgspec.Struct):
    ms_of_day: int
    date: int
    market_bid: float
    market_ask: float
    market_price: float


class IndexMarketValueBody(msgspec.Struct):
    """For an index only `market_price` [doc]."""

    ms_of_day: int
    date: int
    market_price: float


class QuoteMessage(msgspec.Struct):
    header: DataHeader
    contract: ContractBody
    quote: QuoteBody


class TradeMessage(msgspec.Struct):
    header: DataHeader | TypeFirstHeader
    contract: ContractBody
    trade: TradeBody


class OhlcMessage(msgspec.Struct):
    header: TypeFirstHeader
    contract: ContractBody
    ohlc: OhlcBody


class MarketValueMessage(msgspec.Struct):
    header: TypeFirstHeader
    contract: ContractBody
    market_value: MarketValueBody | IndexMarketValueBody


_encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> str:
    """One text frame."""
    return _encoder.encode(message).decode()


def data_prefix(status: str, req_type: str, contract: ContractBody, section: str) -> bytes:
    """A data message's bytes up to its body, `{"header":{...},"contract":{...},"quote":`: made
    once per contract and status, so each message encodes only its body (`with_body` gives the
    same bytes as `encode` of the whole message)."""
    header, body = _encoder.encode(DataHeader(status, req_type)), _encoder.encode(contract)
    return b'{"header":%s,"contract":%s,"%s":' % (header, body, section.encode())


def with_body(prefix: bytes, body: msgspec.Struct) -> str:
    return (prefix + _encoder.encode(body) + b"}").decode()


def status_message(status: str) -> str:
    return encode(StatusMessage(StatusHeader(status)))


def req_response(status: str, response: str, req_id: int) -> str:
    return encode(ReqResponseMessage(ReqResponseHeader("REQ_RESPONSE", status, response, req_id)))


def state_message(status: str, state: str) -> str:
    return encode(StateMessage(StateHeader("STATE", status, state)))


def option_contract(contract: OptionContract) -> OptionContractBody:
    exp = contract.expiration
    return OptionContractBody(
        OPTION,
        contract.root,
        exp.year * 10000 + exp.month * 100 + exp.day,
        contract.strike_milli,
        contract.right,
    )


def root_contract(sec_type: str, root: str) -> RootContractBody:
    return RootContractBody(sec_type, root)


def signed32(sequence: int) -> int:
    """The market's sequence as the terminal's Java `int`: it wraps and may be negative [doc]."""
    return (sequence + 2**31) % 2**32 - 2**31
