"""Replaying Theta Terminal recordings (`mocks.replay`): which messages are market data, and
which a client gets.

Quote, trade, OHLC and market-value messages are data; STATUS heartbeats, REQ_RESPONSE and STATE
come from the terminal core. A data message goes to the terminal's current client when one of
the terminal's streams would have produced it: the contract's own stream, the full trade stream
(`STREAM_BULK`) for every option quote, trade and OHLC, an index's price stream for its OHLC —
and only while the terminal's upstream link is up (an `upstream_outage` fault silences it).
"""

from __future__ import annotations

from typing import Any, cast

import msgspec

from mocks.recording import Record
from mocks.replay import DataFrame
from mocks.session import Session
from mocks.sim.symbols import SymbolError, from_theta
from mocks.theta.terminal import CONNECTED, FULL_TRADE_STREAM, ThetaSession
from mocks.theta.wire import (
    INDEX,
    MARKET_VALUE,
    OPTION,
    QUOTE,
    TRADE,
    StreamKey,
    StreamRequest,
    parse_request,
)

OHLC = "OHLC"
DATA_TYPES = frozenset({QUOTE, TRADE, OHLC, MARKET_VALUE})


class _Header(msgspec.Struct):
    type: str = ""


class _Peek(msgspec.Struct):
    header: _Header = msgspec.field(default_factory=_Header)
    contract: dict[str, Any] | None = None


_peek = msgspec.json.Decoder(_Peek)


def _key(message: str | bytes) -> tuple[str, str, object] | None:
    """(message type, security type, contract or root) of a data message; None otherwise."""
    try:
        peek = _peek.decode(message)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    kind = peek.header.type
    if kind not in DATA_TYPES or peek.contract is None:
        return None
    contract = peek.contract
    sec_type = str(contract.get("security_type", ""))
    target: object
    if sec_type == OPTION:
        try:
            target = from_theta(
                contract.get("root"),
                contract.get("expiration"),
                contract.get("strike"),
                contract.get("right"),
            )
        except SymbolError:
            return None
    else:
        target = str(contract.get("root", ""))
    return kind, sec_type, target


class _Indexer:
    def client(self, record: Record) -> None:
        return None

    def server(self, record: Record) -> DataFrame | None:
        key = _key(record.data)
        if key is None:
            return None
        events = 0 if key[0] == OHLC else 1
        return DataFrame(record.t, record.conn, record.line, record.data, (key,), events)


class ThetaReplay:
    def indexer(self) -> _Indexer:
        return _Indexer()

    def is_subscribe(self, message: str | bytes) -> bool:
        request = parse_request(message)
        return isinstance(request, StreamRequest) and request.add

    def is_data(self, message: str | bytes) -> bool:
        return _key(message) is not None

    def subscribed(self, session: Session) -> bool:
        assert isinstance(session, ThetaSession)
        return session.is_current and bool(session.terminal.streams)

    def identity(self, session: Session) -> str:
        return "terminal"  # the terminal has one client at a time, and its streams outlive it

    def select(self, session: Session, frame: DataFrame) -> str | bytes | None:
        assert isinstance(session, ThetaSession)
        terminal = session.terminal
        if not session.is_current or terminal.upstream != CONNECTED:
            return None
        kind, sec_type, target = cast(tuple[str, str, Any], frame.keys[0])
        streams = terminal.streams
        bulk = sec_type == OPTION and FULL_TRADE_STREAM in streams
        if kind == OHLC:
            wanted = bulk if sec_type == OPTION else StreamKey(INDEX, TRADE, target) in streams
        elif kind == MARKET_VALUE:
            wanted = StreamKey(sec_type, MARKET_VALUE, target) in streams
        else:
            wanted = bulk or StreamKey(sec_type, kind, target) in streams
        return frame.data if wanted else None


RULES = ThetaReplay()
