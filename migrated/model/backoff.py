"""Retry delays for every loop of the daemon: exponential, capped, jittered, reset on success.

Pure: no asyncio, no clock, no global random state; the random source is passed in.

``next_delay()`` after the n-th consecutive failure (n from 0) returns a value in
``[d/2, d]`` with ``d = min(cap, initial * factor**n)`` ("equal jitter": never
zero, so a fleet of agents that lost the console at the same moment spreads out
but does not hammer it). ``reset()`` after a success starts again from ``initial``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float = 1.0
    factor: float = 2.0
    cap: float = 60.0
    random: Callable[[], float] = field(default=lambda: 0.5, repr=False)  # returns a float in [0, 1)
    failures: int = 0

    def __post_init__(self) -> None:
        if not (self.initial > 0 and self.factor >= 1 and self.cap >= self.initial):
            raise ValueError("backoff needs initial > 0, factor >= 1, cap >= initial")

    def ceiling(self) -> float:
        """The un-jittered delay for the current failure count."""
        try:
            d = self.initial * self.factor**self.failures
        except OverflowError:  # thousands of failures in a row: long past the cap
            return self.cap
        return min(d, self.cap)

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait before the next attempt."""
        d = self.ceiling()
        self.failures += 1
        return d / 2 + self.random() * d / 2

    def reset(self) -> None:
        self.failures = 0
