"""One retry loop for everything that talks to something that may be away: the daemon's heartbeat,
command poll and progress report loops, its transfer retries, and cloud API calls.

Built on the pure :class:`migrated.model.backoff.Backoff` (exponential, capped, equal jitter:
each wait is in ``[d/2, d]``), which restarts from ``initial`` after a success. Cancellation is
clean: a cancel during an attempt or a wait propagates at once (``CancelledError`` is never
retried, even with ``retry_on=BaseException``), and nothing is left running.

Two ways to use it::

    retry = Retry(Backoff(initial=1, factor=2, cap=60, random=rng.random))

    # 1. the helper runs the attempts: forever (the daemon's loops) ...
    r = await retry.call(lambda: console.heartbeat(sid), retry_on=MigratedError,
                         on_retry=lambda e, delay: log.warning("retrying", reason=str(e), retry_in=delay))
    # ... or a bounded number of times, only for errors that say a retry can help (a cloud call):
    r = await retry.call(once, retry_on=CloudError, should_retry=lambda e: e.retryable, attempts=4)

    # 2. a loop that decides itself what counts as success (the reporter, the transfer driver):
    retry.reset()                                      # after a success (or progress)
    await retry.failed(e, on_retry, wake=interrupt)    # one backoff wait; `wake` ends it early

``sleep`` is injectable (tests pass one that records the delays instead of waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from migrated.model.backoff import Backoff

T = TypeVar("T")

OnRetry = Callable[[BaseException, float], None]  # (the error, the delay before the next attempt)


async def sleep_or_wake(seconds: float, wake: asyncio.Event | None = None) -> None:
    """Sleep ``seconds``, ending early when ``wake`` is set (and clearing it)."""
    if wake is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), seconds)
    wake.clear()


class Retry:
    """The retry state of one loop: its backoff, reset on success."""

    def __init__(self, backoff: Backoff, *, sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.backoff = backoff
        self._sleep = sleep

    def reset(self) -> None:
        """A success: the next failure waits ``initial`` again."""
        self.backoff.reset()

    async def failed(self, error: BaseException, on_retry: OnRetry | None = None, *,
                     max_sleep: float | None = None, wake: asyncio.Event | None = None) -> float:
        """One failure: take the next delay, tell ``on_retry``, wait it (at most ``max_sleep``;
        ending early when ``wake`` is set); return the delay."""
        delay = self.backoff.next_delay()
        if on_retry is not None:
            on_retry(error, delay)
        wait = delay if max_sleep is None else min(delay, max_sleep)
        if self._sleep is not None:
            await self._sleep(wait)
        else:
            await sleep_or_wake(wait, wake)
        return delay

    async def call(self, attempt: Callable[[], Awaitable[T]], *,
                   retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
                   should_retry: Callable[[BaseException], bool] | None = None,
                   on_retry: OnRetry | None = None, attempts: int | None = None,
                   max_sleep: float | None = None) -> T:
        """Await ``attempt()`` until it returns; an error of ``retry_on`` (that ``should_retry``
        accepts) is retried after a backoff wait, at most ``attempts`` tries in all (None: for ever);
        any other error, or the last one, is raised as it is. A success resets the backoff."""
        if attempts is not None and attempts < 1:
            raise ValueError("attempts must be at least 1")
        tries = 0
        while True:
            tries += 1
            try:
                result = await attempt()
            except retry_on as e:
                if isinstance(e, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                    raise  # a cancel is never retried, whatever retry_on says
                if (should_retry is not None and not should_retry(e)) or (attempts is not None and tries >= attempts):
                    raise
                await self.failed(e, on_retry, max_sleep=max_sleep)
                continue
            self.reset()
            return result
