"""The one retry loop (``migrated/aio/retry.py``): backoff that grows, caps and resets on success,
bounded or endless attempts, errors it must not retry, early wake, clean cancellation. The waits
are recorded by an injected sleep (no real time passes), except where cancellation is tested."""

from __future__ import annotations

import asyncio

import pytest

from migrated.aio.retry import Retry, sleep_or_wake
from migrated.errors import ConsoleError, MigratedError, UsageError
from migrated.model.backoff import Backoff


class Flaky:
    """Fails with the given errors in order, then returns the call count."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors, self.calls = list(errors), 0

    async def __call__(self) -> int:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.calls


def recording_retry(cap: float = 10) -> tuple[Retry, list[float]]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return Retry(Backoff(initial=1, factor=2, cap=cap, random=lambda: 1.0), sleep=sleep), waits


def err(n: int = 0) -> MigratedError:
    return MigratedError(f"away {n}")


async def test_retries_for_ever_with_growing_capped_waits_and_resets_on_success() -> None:
    retry, waits = recording_retry(cap=10)
    seen: list[tuple[str, float]] = []
    flaky = Flaky(*(err(i) for i in range(6)))
    assert await retry.call(flaky, retry_on=MigratedError, on_retry=lambda e, d: seen.append((str(e), d))) == 7
    assert waits == [1, 2, 4, 8, 10, 10]
    assert seen == [(f"away {i}", w) for i, w in enumerate(waits)]
    # the success reset the backoff: the next failure waits `initial` again
    assert await retry.call(Flaky(err()), retry_on=MigratedError) == 2
    assert waits[-1] == 1


async def test_bounded_attempts_raise_the_last_error() -> None:
    retry, waits = recording_retry()
    flaky = Flaky(err(1), err(2), err(3), err(4))
    with pytest.raises(MigratedError, match="away 3"):
        await retry.call(flaky, retry_on=MigratedError, attempts=3)
    assert flaky.calls == 3 and waits == [1, 2]


async def test_an_error_that_says_no_retry_is_raised_at_once() -> None:
    retry, waits = recording_retry()
    permanent = ConsoleError("AuthFailure.SecretIdNotFound", "no such key")
    flaky = Flaky(err(), permanent)
    with pytest.raises(ConsoleError) as info:
        await retry.call(flaky, retry_on=MigratedError, should_retry=lambda e: not isinstance(e, ConsoleError))
    assert info.value is permanent and flaky.calls == 2 and waits == [1]


async def test_other_errors_pass_through() -> None:
    retry, waits = recording_retry()
    with pytest.raises(UsageError):
        await retry.call(Flaky(UsageError("bad")), retry_on=ConsoleError)
    assert waits == []
    with pytest.raises(ValueError):
        await retry.call(Flaky(err()), retry_on=MigratedError, attempts=0)


async def test_max_sleep_caps_the_wait_but_on_retry_sees_the_delay() -> None:
    retry, waits = recording_retry(cap=60)
    seen: list[float] = []
    await retry.call(Flaky(err(), err(), err()), retry_on=MigratedError, max_sleep=3,
                     on_retry=lambda e, d: seen.append(d))
    assert seen == [1, 2, 4] and waits == [1, 2, 3]


async def test_failed_ends_early_when_woken() -> None:
    retry = Retry(Backoff(initial=3600, factor=2, cap=3600, random=lambda: 1.0))
    wake = asyncio.Event()
    wake.set()  # already set: the hour's wait ends at once, and the event is cleared
    assert await retry.failed(err(), wake=wake) == 3600
    assert not wake.is_set()
    wake.set()
    await sleep_or_wake(3600, wake)
    assert not wake.is_set()


async def test_cancel_during_a_wait_stops_the_loop_at_once() -> None:
    retry = Retry(Backoff(initial=3600, factor=2, cap=3600, random=lambda: 1.0))  # real sleep, an hour
    waiting = asyncio.Event()
    flaky = Flaky(*(err(i) for i in range(10)))
    task = asyncio.create_task(retry.call(flaky, retry_on=MigratedError, on_retry=lambda e, d: waiting.set()))
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert flaky.calls == 1


async def test_cancel_during_an_attempt_is_not_retried() -> None:
    retry, waits = recording_retry()
    started = asyncio.Event()
    calls = 0

    async def hang() -> None:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(retry.call(hang, retry_on=BaseException))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1 and waits == []


def test_the_agent_has_one_retry_loop() -> None:
    """Every backoff wait of the agent goes through Retry: no loop of its own draws delays."""
    from tests.conftest import REPO

    for p in (REPO / "migrated" / "agent").rglob("*.py"):
        text = p.read_text()
        assert ".next_delay(" not in text and "asyncio.wait_for(wake" not in text, p


def test_the_docs_say_equal_jitter() -> None:
    """Each wait is in [d/2, d] (test_backoff.py): that is equal jitter, not full jitter (0..d)."""
    from tests.conftest import REPO

    b = Backoff(initial=8, factor=2, cap=8, random=lambda: 0.0)
    assert b.next_delay() == 4  # never below half: not full jitter
    for rel in ("docs/agent.md", "docs/design.md", "migrated/config.py", "migrated/model/backoff.py",
                "migrated/aio/retry.py"):
        assert "full jitter" not in (REPO / rel).read_text().lower(), rel
    assert "equal jitter" in (REPO / "docs" / "agent.md").read_text()
