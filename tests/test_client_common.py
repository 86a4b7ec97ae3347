"""What the clients share: backoff with full jitter, and sequence tracking."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from clients.common import Backoff, SequenceTracker, Verdict


def test_backoff_grows_is_capped_and_resets_after_a_stable_period() -> None:
    backoff = Backoff(initial=1.0, cap=8.0, stable_after=30.0, rng=random.Random(1))
    ceilings = []
    for _ in range(6):
        ceilings.append(min(8.0, 1.0 * 2**backoff.attempt))
        assert 0.0 <= backoff.next_delay() <= ceilings[-1]
    assert ceilings == [1, 2, 4, 8, 8, 8]
    backoff.connected(100.0)
    backoff.disconnected(120.0)  # 20 s up: not stable, keep backing off
    assert backoff.attempt == 6
    backoff.connected(200.0)
    backoff.disconnected(240.0)
    assert backoff.attempt == 0


def test_sparse_sequences_are_not_loss_and_repeats_are_duplicates() -> None:
    tracker = SequenceTracker()
    assert [tracker.observe("X", q) for q in (1, 2, 6, 9)] == [Verdict.NEW] * 4
    assert tracker.observe("X", 6) is Verdict.DUPLICATE
    assert tracker.observe("X", 7) is Verdict.REGRESSION
    assert tracker.observe("Y", 6) is Verdict.NEW  # per contract


def test_consecutive_mode_reports_gaps() -> None:
    tracker = SequenceTracker(consecutive=True)
    assert tracker.observe("X", 1) is Verdict.NEW
    assert tracker.observe("X", 3) is Verdict.GAP


def test_a_reused_number_on_another_event_is_a_regression_not_a_duplicate() -> None:
    tracker = SequenceTracker()
    assert tracker.observe("X", 5, fingerprint=1000) is Verdict.NEW
    assert tracker.observe("X", 8, fingerprint=1001) is Verdict.NEW
    assert tracker.observe("X", 5, fingerprint=1000) is Verdict.DUPLICATE
    assert tracker.observe("X", 5, fingerprint=1002) is Verdict.REGRESSION


@given(st.lists(st.integers(0, 50), max_size=200))
def test_every_number_is_new_once_then_duplicate(numbers: list[int]) -> None:
    tracker = SequenceTracker(window=1000)
    seen: set[int] = set()
    for n in numbers:
        verdict = tracker.observe("X", n)
        assert (verdict is Verdict.DUPLICATE) == (n in seen)
        seen.add(n)
