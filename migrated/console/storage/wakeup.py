"""The in-process half of the long-poll wake-up, for any backend.

``waiter(source)`` hands out a waiter on the source's current event; ``notify(source)``
sets that event and forgets it, so the next waiter gets a fresh one. A waiter taken
before a notify is always woken by it, which is what :meth:`Storage.command_waiter`
promises. A backend shared by several console processes calls ``notify`` when another
process tells it (PostgreSQL: ``LISTEN/NOTIFY``) as well as after its own commits.
Use it on the event loop thread only (from another thread: ``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio

from .interface import CommandWaiter


class _EventWaiter(CommandWaiter):
    def __init__(self, event: asyncio.Event) -> None:
        self._event = event

    async def wait(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await self._event.wait()
            return True
        except TimeoutError:
            return False


class LocalWakeups:
    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def waiter(self, source_id: str) -> CommandWaiter:
        ev = self._events.get(source_id)
        if ev is None:
            ev = self._events[source_id] = asyncio.Event()
        return _EventWaiter(ev)

    def notify(self, source_id: str) -> None:
        ev = self._events.pop(source_id, None)
        if ev is not None:
            ev.set()

    def notify_all(self) -> None:
        for sid in list(self._events):
            self.notify(sid)
