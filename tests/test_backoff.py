"""Backoff: exponential, capped, jittered into [d/2, d], reset on success."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migrated.model.backoff import Backoff


def test_grows_caps_and_resets() -> None:
    b = Backoff(initial=1, factor=2, cap=10, random=lambda: 1.0)
    assert [b.next_delay() for _ in range(6)] == [1, 2, 4, 8, 10, 10]
    b.reset()
    assert b.next_delay() == 1


def test_jitter_is_at_least_half() -> None:
    b = Backoff(initial=4, factor=2, cap=100, random=lambda: 0.0)
    assert [b.next_delay() for _ in range(3)] == [2, 4, 8]


@given(st.floats(0.01, 10), st.floats(1, 5), st.integers(0, 2000), st.integers(0, 2**32))
def test_always_within_bounds(initial: float, factor: float, failures: int, seed: int) -> None:
    rng = random.Random(seed)
    b = Backoff(initial=initial, factor=factor, cap=initial * 30, random=rng.random, failures=failures)
    d = b.next_delay()
    assert initial / 2 * (1 - 1e-9) <= d <= initial * 30 * (1 + 1e-9)


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(initial=0)
    with pytest.raises(ValueError):
        Backoff(initial=5, cap=1)
