"""Replaying Massive recordings (`mocks.replay`): which frames are market data, and which of a
recorded batch a client gets.

A data frame is a JSON array of `Q`/`T`/`A`/`AM` events; its keys are the (channel, symbol) pairs
inside. A client that subscribed to every pair in a frame gets it byte for byte; one that
subscribed to some gets the same array with the other elements taken out, each remaining element
byte for byte. Wildcards (`T.*`, `A.*`, `AM.*`) cover every symbol of their channel.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import cast

import msgspec

from mocks.massive.session import MassiveSession
from mocks.massive.wire import CHANNELS
from mocks.recording import Record
from mocks.replay import DataFrame
from mocks.session import Session

_DATA = frozenset(CHANNELS)


class _Tag(msgspec.Struct):
    """Only what filtering needs of an event object."""

    ev: str = ""
    sym: str = ""


_raw_array = msgspec.json.Decoder(list[msgspec.Raw])
_tag = msgspec.json.Decoder(_Tag)
_tags = msgspec.json.Decoder(list[_Tag])
_request = msgspec.json.Decoder(dict[str, object])


def _data_tags(message: str | bytes) -> list[_Tag] | None:
    """The (ev, sym) of each element when the frame is market data; None otherwise."""
    try:
        tags = _tags.decode(message)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if not tags or any(t.ev not in _DATA for t in tags):
        return None  # status arrays and anything unexpected are the core's business
    return tags


class _Indexer:
    def client(self, record: Record) -> None:
        return None

    def server(self, record: Record) -> DataFrame | None:
        tags = _data_tags(record.data)
        if tags is None:
            return None
        keys: tuple[Hashable, ...] = tuple(dict.fromkeys((t.ev, t.sym) for t in tags))
        return DataFrame(record.t, record.conn, record.line, record.data, keys, len(tags))


class MassiveReplay:
    def indexer(self) -> _Indexer:
        return _Indexer()

    def is_subscribe(self, message: str | bytes) -> bool:
        try:
            request = _request.decode(message)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False
        return request.get("action") == "subscribe"

    def is_data(self, message: str | bytes) -> bool:
        return _data_tags(message) is not None

    def subscribed(self, session: Session) -> bool:
        assert isinstance(session, MassiveSession)
        return session.authenticated and (
            bool(session.wildcards) or any(session.subscriptions.values())
        )

    def identity(self, session: Session) -> str:
        assert isinstance(session, MassiveSession)
        return session.key or ""

    def select(self, session: Session, frame: DataFrame) -> str | bytes | None:
        assert isinstance(session, MassiveSession)
        if not session.authenticated:
            return None
        subs, wildcards = session.subscriptions, session.wildcards
        keys = cast(tuple[tuple[str, str], ...], frame.keys)
        wanted = [ch in wildcards or sym in subs[ch] for ch, sym in keys]
        if all(wanted):
            return frame.data
        if not any(wanted):
            return None
        keep = {key for key, ok in zip(keys, wanted, strict=True) if ok}
        parts = [
            bytes(raw)
            for raw in _raw_array.decode(frame.data)
            if ((tag := _tag.decode(raw)).ev, tag.sym) in keep
        ]
        out = b"[" + b",".join(parts) + b"]"
        return out.decode() if isinstance(frame.data, str) else out


RULES = MassiveReplay()
