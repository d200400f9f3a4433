"""Scheduled starts: a task in state *scheduled* whose time has come is started.

Every ``tick_seconds`` the scheduler asks storage for due tasks and starts each
through :meth:`ConsoleService.start_scheduled`, the same path a person's
StartTask takes. The start is a compare-and-set from *scheduled* to *starting*
that queues the start command in the same transaction, so:

* a start whose time passed while the console was down fires on the first tick
  after it comes back (the due time is a row in storage, not a timer in memory);
* a start fires once, even with two console processes or a crash between the
  tick and the commit (the loser of the compare-and-set does nothing).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from migrated.console.service import ConsoleService

log = structlog.get_logger(__name__)


class Scheduler:
    def __init__(self, service: ConsoleService, *, tick_seconds: float = 1.0) -> None:
        self.service = service
        self.tick = tick_seconds
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> list[str]:
        """Start every due task; returns the IDs started."""
        started = []
        for t in await self.service.storage.due_scheduled_tasks(self.service.clock()):
            res = await self.service.start_scheduled(t.task_id)
            if res is not None:
                log.info("scheduled start", task_id=t.task_id, command_id=res["CommandId"])
                started.append(t.task_id)
        return started

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a storage hiccup must not end scheduling; the next tick tries again
                log.exception("scheduler tick failed")
            await asyncio.sleep(self.tick)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
