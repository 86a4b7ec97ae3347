"""What the Massive client assumes that no source documents ([inv] in
shared/protocols/massive.md): one place, so that a live recording can correct it."""

from __future__ import annotations

SUBSCRIPTIONS_PER_MESSAGE = 1000
"""How many subscriptions one subscribe/unsubscribe message carries (no documented limit)."""

UNNAMED_ERROR_REFUSES_OLDEST_PENDING = True
"""A refusal such as `"not authorized"` names no subscription. We assume the server answers each
channel of a subscribe request in order, so an unnamed error while acknowledgements are pending
refuses the oldest unacknowledged subscription."""

CLOSING_STATUSES = frozenset(
    {"max_connections", "slow_consumer", "force_disconnect", "auth_timeout"}
)
"""Statuses after which the server drops the socket; if it does not within `close_timeout`, we
drop it ourselves."""
