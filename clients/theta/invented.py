"""What the Theta client assumes where no source says [inv in protocols/theta.md], in one place so
that a live recording of a real terminal can correct it."""

from __future__ import annotations

VENDOR = "theta"
LIVE_URL = "ws://127.0.0.1:25520/v1/events"  # the terminal's, v2 and v3 alike [doc]

HEARTBEAT_TIMEOUT = 3.0  # STATUS comes once a second [doc]; three missed ones mean a dead socket
RESUME_TIMEOUT = 5.0  # the terminal reconnects upstream after ~2 s [re] and resubscribes by itself
REPLY_TIMEOUT = 10.0  # how long a batch of (re)subscriptions may wait for its REQ_RESPONSEs
EVICTION_CLOSE_CODE = 1000  # a second WebSocket client drops the first with a normal close [re]
UPSTREAM_UP = "CONNECTED"  # any other status (DISCONNECTED, UNVERIFIED, ERROR): no data
REFUSALS = frozenset({"ERROR", "MAX_STREAMS_REACHED", "INVALID_PERMS"})
