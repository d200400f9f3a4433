"""Scheduled starts: a task in state *scheduled* whose time has come is started.

Every ``tick_seconds`` the scheduler asks storage for due tasks and claims each
(:meth:`Scheduler.claim`): one :meth:`Storage.update_task` that is a
compare-and-set from *scheduled* to *starting* and queues the start command in
the same transaction (PostgreSQL: the task row is locked ``FOR UPDATE`` and its
state checked under that lock; SQLite: ``BEGIN IMMEDIATE``). The loser of the
compare-and-set does nothing: it never re-reads the task and tries again (which
a person's StartTask does, and which could start a task a second time once the
winner's start has already failed or paused it). So:

* a start whose time passed while the console was down fires on the first tick
  after it comes back (the due time is a row in storage, not a timer in memory);
* a start fires exactly once, with any number of console processes on one
  database ticking together, or a crash between the tick and the commit.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from migrated.console.service import CMD_START, ConsoleService
from migrated.console.storage import CommandRecord, NewCommand, StorageConflict, TaskRecord
from migrated.model.states import TaskState, transition

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
            cmd = await self.claim(t)
            if cmd is not None:
                log.info("scheduled start", task_id=t.task_id, command_id=cmd.command_id)
                started.append(t.task_id)
        return started

    async def claim(self, t: TaskRecord) -> CommandRecord | None:
        """Start the due task ``t`` if it is still *scheduled*: its start command, or None when
        another console process (or a person, or a delete) changed it first."""
        old, new = TaskState.SCHEDULED, TaskState.STARTING
        event = ("info", "", f"start by scheduler: {old.value} -> {new.value}: {transition(old, new)}")
        try:
            _, cmd = await self.service.storage.update_task(
                t.task_id, expect_state=old.value, changes={"state": new.value}, command=NewCommand(CMD_START),
                event=event, now=self.service.clock())
        except StorageConflict:
            return None
        return cmd

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
