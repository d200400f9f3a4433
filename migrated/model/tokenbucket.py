"""Token bucket for the bandwidth limit. Pure: no I/O, no clock of its own (the caller passes ``now``).

``reserve(n, now)`` takes ``n`` tokens (bytes) and returns how many seconds the caller must wait
before sending them. The rate can change at any time (``set_rate``); ``None`` means unlimited.
Debt is allowed (a frame larger than the burst still goes, later), so the long-run rate holds.
"""

from __future__ import annotations


class TokenBucket:
    def __init__(self, rate: float | None, now: float, burst: float | None = None) -> None:
        self._rate: float | None = None
        self._burst = 0.0
        self._fixed_burst = burst
        self._tokens = 0.0
        self._stamp = now
        self.set_rate(rate, now)
        self._tokens = self._burst  # start full

    @property
    def rate(self) -> float | None:
        return self._rate

    def set_rate(self, rate: float | None, now: float) -> None:
        """Change the rate (bytes/s) from ``now`` on; ``None`` or 0 = unlimited."""
        self._refill(now)
        if rate is not None and rate <= 0:
            rate = None
        self._rate = rate
        if rate is None:
            self._tokens = 0.0
            return
        # A burst of ~0.1 s keeps the rate smooth but lets whole frames through.
        self._burst = self._fixed_burst if self._fixed_burst is not None else max(rate / 10, 64 * 1024)
        self._tokens = min(self._tokens, self._burst)

    def _refill(self, now: float) -> None:
        if self._rate is not None and now > self._stamp:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = max(self._stamp, now)

    def reserve(self, n: int, now: float) -> float:
        """Take ``n`` tokens; return the seconds to wait before using them (0 when unlimited)."""
        if self._rate is None:
            return 0.0
        self._refill(now)
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate
