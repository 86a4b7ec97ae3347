"""A Trio client for Theta Data's Theta Terminal streaming WebSocket (ws://127.0.0.1:25520/v1/events).

The terminal is a local Java program that holds the streams for us: a stream belongs to the
terminal, not to the WebSocket, so it survives our reconnects and ends only with `add:false` or
`{"msg_type":"STOP"}`. The terminal's own link to Theta's servers can drop while our WebSocket stays
open (heartbeats then say DISCONNECTED); on its return the terminal resubscribes by itself, but
only streams whose request ids were unique and increasing. Wire facts: `shared/protocols/theta.md`.

What this client does about it:
- request ids come from one counter for the whole process and never repeat;
- every REQ_RESPONSE is matched to its request; a refusal becomes a `Rejected` event and the stream
  is dropped from the subscription set (re-subscribing it after every reconnect would only be
  refused again);
- no STATUS for `heartbeat_timeout` seconds -> the WebSocket is replaced;
- an upstream outage -> `Status` events, and once the upstream is back every stream must show data
  within `resume_timeout` or it is subscribed again with a new id; then one `GapNotice`;
- after a WebSocket reconnect every stream is subscribed again with new ids (the safe, documented
  way: the terminal may have been restarted). The terminal answers SUBSCRIBED for a stream it
  already has; if it ever delivered such a stream twice, the duplicate filter below drops the copy;
- duplicates are never delivered: trades by their sequence, quotes / market values / OHLC / index
  prices (which have no sequence) when identical in every field to the last one delivered for the
  same contract. Only the immediate repeat is dropped: an older value coming back (A, B, A) may be
  a real change back and is delivered. A quote is state, so dropping an exact repeat loses nothing;
- `{"msg_type":"STOP"}` on orderly close, so no stream outlives the program.

Layout: `wire` (syntax, requests, time, events, reply schemas), `client` (`ThetaClient`),
`watch` (the CLI's printer), `invented` (assumptions no source confirms).
"""

from clients.theta.client import ClientStats, ThetaClient
from clients.theta.invented import LIVE_URL, VENDOR
from clients.theta.watch import event_fields, watch
from clients.theta.wire import (
    BULK_TRADES,
    Contract,
    Event,
    IndexPrice,
    MarketData,
    Ohlc,
    OptionMarketValue,
    OptionQuote,
    OptionTrade,
    Quote,
    StockQuote,
    StockTrade,
    Subscription,
    Trade,
    eastern_to_unix_ns,
    format_strike,
    parse_strike,
    parse_subscription,
    streams_for,
)

__all__ = [
    "BULK_TRADES",
    "LIVE_URL",
    "VENDOR",
    "ClientStats",
    "Contract",
    "Event",
    "IndexPrice",
    "MarketData",
    "Ohlc",
    "OptionMarketValue",
    "OptionQuote",
    "OptionTrade",
    "Quote",
    "StockQuote",
    "StockTrade",
    "Subscription",
    "ThetaClient",
    "Trade",
    "eastern_to_unix_ns",
    "event_fields",
    "format_strike",
    "parse_strike",
    "parse_subscription",
    "streams_for",
    "watch",
]
