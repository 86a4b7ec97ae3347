"""Typed events the Amberdata client delivers, and their decoding from pushed JSON-RPC results.

Wire schemas are strict about the types of documented fields and tolerant of new fields, so a
frame that contradicts the docs is counted and skipped rather than delivered half-understood.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from clients.amberdata.instruments import (
    DEFAULT_EXCHANGE,
    OHLCV,
    OPEN_INTERESTS,
    ORDER_SNAPSHOTS,
    TICKERS,
    TRADES,
    OptionContract,
    contract_or_none,
)
from clients.amberdata.invented import exchange_time_ns
from clients.common import Dropped, GapNotice, Rejected, Status

# ---------------------------------------------------------------------------------------------
# Events delivered to the application


@dataclass(frozen=True, slots=True)
class PriceLevel:
    price: float  # BTC per contract on Deribit, a fraction of the underlying
    amount: float  # contracts


@dataclass(frozen=True, slots=True)
class Greeks:
    delta: float | None
    gamma: float | None
    rho: float | None
    theta: float | None
    vega: float | None


@dataclass(frozen=True, slots=True)
class DayStats:
    """Rolling 24 h statistics; `price_change` in percent, null without trades."""

    volume: float | None
    volume_usd: float | None
    price_change: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True, slots=True)
class OptionMarket:
    """Fields shared by order-book snapshots and tickers. IVs are in percent on Deribit."""

    symbol: str
    sequence: int | None
    timestamp_ns: int  # exchange time where sent, else Amberdata's `timestamp`
    exchange: str
    contract: OptionContract | None  # None when the name is not Deribit-style
    snapshot_ns: int | None  # Amberdata's `timestamp`: when it took the snapshot
    underlying_price: float | None
    underlying_index: str | None
    stats: DayStats | None
    state: str | None
    open_interest: float | None
    min_price: float | None
    max_price: float | None
    mark_price: float | None
    mark_iv: float | None
    last_price: float | None
    interest_rate: float | None
    index_price: float | None
    greeks: Greeks | None
    estimated_delivery_price: float | None
    bid_iv: float | None
    best_bid_price: float | None
    best_bid_amount: float | None
    best_ask_price: float | None
    best_ask_amount: float | None
    ask_iv: float | None
    metadata: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class OrderBookSnapshot(OptionMarket):
    bids: tuple[PriceLevel, ...]
    asks: tuple[PriceLevel, ...]


@dataclass(frozen=True, slots=True)
class Ticker(OptionMarket):
    bid: float | None
    ask: float | None
    mid: float | None
    last: float | None
    bid_volume: float | None
    ask_volume: float | None
    base_volume: float | None
    quote_volume: float | None
    settlement_price: float | None


@dataclass(frozen=True, slots=True)
class Trade:
    symbol: str
    sequence: int | None  # `tradeSequence`
    timestamp_ns: int
    exchange: str
    contract: OptionContract | None
    trade_id: str | None
    price: float
    size: float
    is_buy_side: bool | None
    tick_direction: int | str | None
    mark_price: float | None
    iv: float | None
    index_price: float | None


@dataclass(frozen=True, slots=True)
class Ohlcv:
    symbol: str
    sequence: None
    timestamp_ns: int
    exchange: str
    contract: OptionContract | None
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: float | None


@dataclass(frozen=True, slots=True)
class OpenInterest:
    symbol: str
    sequence: None
    timestamp_ns: int
    exchange: str
    contract: OptionContract | None
    value: float | None


MarketEvent = OrderBookSnapshot | Ticker | Trade | Ohlcv | OpenInterest
Event = MarketEvent | GapNotice | Status | Rejected | Dropped


# ---------------------------------------------------------------------------------------------
# Wire schemas of pushed results: strict on the types of known fields, tolerant of new fields.


class _WireStats(msgspec.Struct):
    volume: float | None = None
    volume_usd: float | None = None
    price_change: float | None = None
    low: float | None = None
    high: float | None = None


class _WireGreeks(msgspec.Struct):
    delta: float | None = None
    gamma: float | None = None
    rho: float | None = None
    theta: float | None = None
    vega: float | None = None


class _WireMarket(msgspec.Struct, rename="camel"):
    instrument: str
    exchange: str | None = None
    timestamp: float | None = None
    exchange_timestamp: float | None = None
    exchange_timestamp_nanoseconds: int | None = None
    underlying_price: float | None = None
    underlying_index: str | None = None
    stats: _WireStats | None = None
    state: str | None = None
    open_interest: float | None = None
    min_price: float | None = None
    max_price: float | None = None
    mark_price: float | None = None
    mark_iv: float | None = None
    last_price: float | None = None
    interest_rate: float | None = None
    index_price: float | None = None
    greeks: _WireGreeks | None = None
    estimated_delivery_price: float | None = None
    bid_iv: float | None = None
    best_bid_price: float | None = None
    best_bid_amount: float | None = None
    best_ask_price: float | None = None
    best_ask_amount: float | None = None
    ask_iv: float | None = None
    sequence: int | None = None
    metadata: dict[str, Any] | None = None


class _WireSnapshot(_WireMarket):
    bids: list[tuple[float, float]] | None = None
    asks: list[tuple[float, float]] | None = None


class _WireTicker(_WireMarket):
    bid: float | None = None
    ask: float | None = None
    mid: float | None = None
    last: float | None = None
    bid_volume: float | None = None
    ask_volume: float | None = None
    base_volume: float | None = None
    quote_volume: float | None = None
    settlement_price: float | None = None


class _WireTrade(msgspec.Struct, rename="camel"):
    instrument: str
    price: float
    size: float
    exchange: str | None = None
    timestamp: float | None = None
    exchange_timestamp: float | None = None
    exchange_timestamp_nanoseconds: int | None = None
    is_buy_side: bool | None = None
    trade_id: str | int | None = None
    trade_sequence: int | None = None
    tick_direction: int | str | None = None
    mark_price: float | None = None
    iv: float | None = None
    index_price: float | None = None


class _WireOhlcv(msgspec.Struct):
    instrument: str
    timestamp: float
    exchange: str | None = None
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    volume: float | None = None


class _WireOpenInterest(msgspec.Struct):
    instrument: str
    timestamp: float
    exchange: str | None = None
    value: float | None = None


class _Undecodable(ValueError):
    """A pushed result that does not fit its stream's schema."""


def _event_time_ns(
    exchange_ms: float | None, nanoseconds: int | None, timestamp_ms: float | None
) -> int:
    if exchange_ms is not None:
        return exchange_time_ns(exchange_ms, nanoseconds)
    if timestamp_ms is not None:
        return round(timestamp_ms * 1000) * 1000
    raise _Undecodable("no timestamp")


def _market_fields(wire: _WireMarket, exchange: str) -> dict[str, Any]:
    stats, greeks = wire.stats, wire.greeks
    return {
        "symbol": wire.instrument,
        "sequence": wire.sequence,
        "timestamp_ns": _event_time_ns(
            wire.exchange_timestamp, wire.exchange_timestamp_nanoseconds, wire.timestamp
        ),
        "exchange": wire.exchange or exchange,
        "contract": contract_or_none(wire.instrument),
        "snapshot_ns": None if wire.timestamp is None else round(wire.timestamp * 1000) * 1000,
        "underlying_price": wire.underlying_price,
        "underlying_index": wire.underlying_index,
        "stats": None
        if stats is None
        else DayStats(stats.volume, stats.volume_usd, stats.price_change, stats.low, stats.high),
        "state": wire.state,
        "open_interest": wire.open_interest,
        "min_price": wire.min_price,
        "max_price": wire.max_price,
        "mark_price": wire.mark_price,
        "mark_iv": wire.mark_iv,
        "last_price": wire.last_price,
        "interest_rate": wire.interest_rate,
        "index_price": wire.index_price,
        "greeks": None
        if greeks is None
        else Greeks(greeks.delta, greeks.gamma, greeks.rho, greeks.theta, greeks.vega),
        "estimated_delivery_price": wire.estimated_delivery_price,
        "bid_iv": wire.bid_iv,
        "best_bid_price": wire.best_bid_price,
        "best_bid_amount": wire.best_bid_amount,
        "best_ask_price": wire.best_ask_price,
        "best_ask_amount": wire.best_ask_amount,
        "ask_iv": wire.ask_iv,
        "metadata": wire.metadata,
    }


def decode_result(stream: str, result: object, exchange: str = DEFAULT_EXCHANGE) -> MarketEvent:
    """The typed event for one pushed `result` of `stream` (the JSON already parsed).

    `exchange` fills in when the result omits it. Raises ValueError when the result does not
    fit the stream's documented shape.
    """
    try:
        if stream == ORDER_SNAPSHOTS:
            snap = msgspec.convert(result, _WireSnapshot)
            return OrderBookSnapshot(
                **_market_fields(snap, exchange),
                bids=tuple(PriceLevel(p, a) for p, a in snap.bids or ()),
                asks=tuple(PriceLevel(p, a) for p, a in snap.asks or ()),
            )
        if stream == TICKERS:
            tick = msgspec.convert(result, _WireTicker)
            return Ticker(
                **_market_fields(tick, exchange),
                bid=tick.bid,
                ask=tick.ask,
                mid=tick.mid,
                last=tick.last,
                bid_volume=tick.bid_volume,
                ask_volume=tick.ask_volume,
                base_volume=tick.base_volume,
                quote_volume=tick.quote_volume,
                settlement_price=tick.settlement_price,
            )
        if stream == TRADES:
            trade = msgspec.convert(result, _WireTrade)
            return Trade(
                symbol=trade.instrument,
                sequence=trade.trade_sequence,
                timestamp_ns=_event_time_ns(
                    trade.exchange_timestamp, trade.exchange_timestamp_nanoseconds, trade.timestamp
                ),
                exchange=trade.exchange or exchange,
                contract=contract_or_none(trade.instrument),
                trade_id=None if trade.trade_id is None else str(trade.trade_id),
                price=trade.price,
                size=trade.size,
                is_buy_side=trade.is_buy_side,
                tick_direction=trade.tick_direction,
                mark_price=trade.mark_price,
                iv=trade.iv,
                index_price=trade.index_price,
            )
        if stream == OHLCV:
            bar = msgspec.convert(result, _WireOhlcv)
            return Ohlcv(
                symbol=bar.instrument,
                sequence=None,
                timestamp_ns=round(bar.timestamp * 1000) * 1000,
                exchange=bar.exchange or exchange,
                contract=contract_or_none(bar.instrument),
                open=bar.open,
                high=bar.high,
                low=bar.low,
                close=bar.close,
                volume=bar.volume,
            )
        if stream == OPEN_INTERESTS:
            oi = msgspec.convert(result, _WireOpenInterest)
            return OpenInterest(
                symbol=oi.instrument,
                sequence=None,
                timestamp_ns=round(oi.timestamp * 1000) * 1000,
                exchange=oi.exchange or exchange,
                contract=contract_or_none(oi.instrument),
                value=oi.value,
            )
    except (msgspec.ValidationError, OverflowError) as exc:
        raise _Undecodable(f"{stream}: {exc}") from exc
    raise ValueError(f"unknown stream {stream!r}")
