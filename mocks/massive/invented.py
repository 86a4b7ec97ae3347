"""Everything the Massive mock does that no source documents: our own choices, in one place.

Each item carries the [inv] label of `shared/protocols/massive.md`. A live recording that shows
what the real service does should correct it here, and nowhere else.
"""

from __future__ import annotations

from mocks.massive.wire import StatusEvent, status

# [inv] How long a connection may stay without an `auth` request before `auth_timeout`.
AUTH_TIMEOUT_SECONDS = 10.0

# [inv] The close code after `auth_failed`, `auth_timeout`, `max_connections`, `slow_consumer`
# and `force_disconnect`. 1008 (policy violation) is what two reports show for max_connections.
POLICY_CLOSE = 1008

# [inv] The delayed feed is served on the same port under this path (the real service uses
# another host, `delayed.massive.com`); `WebSocketClient(feed="127.0.0.1:PORT/delayed")` gets it.
DELAYED_PATH = "/delayed/options"
DELAY_SECONDS = 15 * 60.0  # [doc] "15-minute delayed"

# [inv] Batching: neither the batch size nor the flush interval is documented.
# A frame leaves with the market batch that filled it (no wait for company): the batches are the
# market's ticks (every 1 ms at most under `serve`, 50 ms in scenarios) and grow with the load.
FLUSH_INTERVAL = 0.0  # seconds an event may wait for company before its frame goes out
MAX_BATCH_EVENTS = 500
MAX_FRAME_BYTES = 256 * 1024  # the official client refuses frames over 1 MiB [src]

# [inv] An aggregate window is closed this long after its end when no later trade closed it
# first, so trades routed a little late still land in their bar.
AGGREGATE_GRACE = 0.1

# [inv] `A`/`AM` carry today's totals (`av`, `op`, `a`); the mock counts the trades this connection
# has received for the contract since the US Eastern day began or since it subscribed, whichever
# is later, so that every connection's numbers depend only on its own stream (determinism).

# [inv] An OPRA "regular" sale has no condition id of its own at Massive; the mock sends `c: []`.
REGULAR_CONDITIONS: list[int] = []

# [inv] What `T.*` / `A.*` / `AM.*` stream: the market only simulates contracts someone watches,
# so a wildcard covers every contract any connection of this server subscribes to, while one
# does, plus a small default universe (near-the-money SPY and QQQ contracts of the next two
# Friday expirations).
WILDCARD_ROOTS = ("SPY", "QQQ")
WILDCARD_EXPIRATIONS = 2
WILDCARD_STRIKES_EACH_SIDE = 2

# [inv] A subscription that names something not parseable as an option ticker (`T.O:garbage`)
# under a known prefix is acknowledged like an unknown contract, and never streams.


# [inv] The request rate a connection may keep up (`mocks.ratelimit`): nothing documents a limit
# on client messages. Generous, so that no legitimate client meets it: the official client sends
# a whole change of subscriptions in one request, but a client may as well send one request per
# channel, and a connection set up that way (1,000 quote contracts and their trades) is 2,000
# requests at once, again after every reconnect; 100 a second after that leaves room for a
# client that rolls whole chains as the money moves. A refused request gets `too_many_requests`
# and is dropped; after `REFUSALS_BEFORE_CLOSE` refusals in one flood, `request_flood` and close
# 1008 (POLICY_CLOSE).
REQUEST_RATE = 100.0  # requests per second, sustained
REQUEST_BURST = 2_000
REFUSALS_BEFORE_CLOSE = 1_000


def too_many_requests(rate: float, burst: int) -> StatusEvent:
    """[inv] A request over the connection's rate: dropped, the connection stays open."""
    return status(
        "error",
        f"too many requests: at most {rate:g} per second (bursts of {burst}); request dropped",
    )


def request_flood() -> StatusEvent:
    """[inv] The last words to a connection that kept flooding; the status name
    `force_disconnect` is the official client's [src] for a connection the server ends."""
    return status(
        "force_disconnect",
        "Your connection was closed because it kept sending too many requests.",
    )


def already_authenticated() -> StatusEvent:
    """[inv] A second `auth` on an authenticated connection; the connection stays open."""
    return status("error", "already authenticated")


def not_authenticated(action: str) -> StatusEvent:
    """[inv] `subscribe`/`unsubscribe` before `auth`; the connection stays open."""
    return status("error", f"not authenticated: authenticate before {action}")


def unknown_action(action: str) -> StatusEvent:
    """[inv] An `action` other than auth/subscribe/unsubscribe; the connection stays open."""
    return status("error", f"unknown action: {action}")


def bad_request(detail: str) -> StatusEvent:
    """[inv] Valid JSON that is not a request object (no `action`, `params` not a string)."""
    return status("error", f"Invalid request: {detail}")


MAX_SYMBOL_CHARS = 64  # [inv] longer than any ticker ("O:" + a 21-character OCC symbol)
SYMBOL_CHARS_SHOWN = 40


def symbol_too_long(token: str) -> StatusEvent:
    """[inv] A subscription token whose symbol is far longer than any ticker: refused with an
    error that shows its beginning only, so a reply never outgrows the request (a 1 MiB token
    echoed in `subscribed to: ...` would make a reply the vendor's client refuses to read)."""
    return status(
        "error",
        f"invalid subscription: {token[:SYMBOL_CHARS_SHOWN]}... ({len(token)} characters)",
    )


QUOTE_LIMIT_NAMES_SHOWN = 20  # [inv] how many refused channels the limit error lists


def quote_limit_exceeded(limit: int, refused: list[str]) -> StatusEvent:
    """[inv] Quote subscriptions beyond the per-connection limit: one error naming the limit and
    the refused channels; everything within the limit stays subscribed."""
    shown = ",".join(refused[:QUOTE_LIMIT_NAMES_SHOWN])
    more = len(refused) - QUOTE_LIMIT_NAMES_SHOWN
    tail = f" and {more} more" if more > 0 else ""
    return status(
        "error",
        f"Maximum of {limit} option contracts per connection for quotes exceeded; "
        f"not subscribed to: {shown}{tail}",
    )


def slow_consumer() -> StatusEvent:
    """[inv] text; the status name `slow_consumer` is from the official client [src]."""
    return status(
        "slow_consumer",
        "Your connection was closed because it could not keep up with the data stream.",
    )


def force_disconnect() -> StatusEvent:
    """[inv] text; the status name `force_disconnect` is from the official client [src]."""
    return status("force_disconnect", "Your connection was closed by the server.")


def quotes_not_on_delayed_feed() -> StatusEvent:
    """[inv] `Q` on the delayed feed, where quotes are not offered [doc]: the observed refusal."""
    return status("error", "not authorized")


def quote_wildcard_refused() -> StatusEvent:
    """[inv] `Q.*` is not offered [doc]; the mock answers with the observed refusal text."""
    return status("error", "not authorized")
