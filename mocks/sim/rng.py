"""Seeded randomness: every actor draws from its own `random.Random`, derived from (seed, name).

Deriving instead of sharing one generator is what makes a run independent of Trio's scheduling
order: two actors never interleave draws from the same stream.
"""

from __future__ import annotations

import hashlib
import random


def derive_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def derive_rng(seed: int, name: str) -> random.Random:
    """A generator that depends only on the run's seed and the drawing actor's name."""
    return random.Random(derive_seed(seed, name))
