"""Heartbeat buffering above any storage backend.

Every agent beats every few seconds; a durable write per beat would cost an fsync
each (thousands of agents: most of the disk's time). :class:`BufferedHeartbeats`
wraps a backend: a beat is kept in memory and all beats are written in one
:meth:`Storage.write_heartbeats` every ``flush_seconds`` and at close. Reads of
sources show the buffered beat, so callers see the same as with write-through.
Losing the last few seconds of "last seen" in a crash is harmless.

Every other method is the backend's own. A second backend gets this for free: the
factory in ``migrated.console.storage`` puts it above whatever backend it opens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import structlog

from .interface import (
    Beat,
    CommandRecord,
    CommandWaiter,
    DiskInfo,
    EventRecord,
    KeyRecord,
    NewCommand,
    SourceRecord,
    Storage,
    TaskRecord,
)

log = structlog.get_logger(__name__)


class BufferedHeartbeats(Storage):
    """``backend`` with its heartbeats buffered. ``flush_seconds``: how often they are written."""

    def __init__(self, backend: Storage, *, flush_seconds: float = 5.0) -> None:
        self.backend = backend
        self._flush_every = flush_seconds
        self._pending: dict[str, Beat] = {}  # not yet handed to the backend
        self._writing: dict[str, Beat] = {}  # handed over, write not yet returned
        self._flush_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None

    @property  # type: ignore[override]
    def observe_write(self) -> Callable[[float], None] | None:
        return self.backend.observe_write

    @observe_write.setter
    def observe_write(self, fn: Callable[[float], None] | None) -> None:
        self.backend.observe_write = fn

    # -- the buffer

    async def open(self) -> None:
        await self.backend.open()
        self._flusher = asyncio.create_task(self._flush_loop(), name="heartbeat-flush")

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        try:
            await self.flush()
        finally:
            await self.backend.close()

    async def flush(self) -> None:
        """Write every buffered beat now. On failure they stay buffered for the next flush."""
        async with self._flush_lock:
            if not self._pending:
                return
            self._writing, self._pending = self._pending, {}
            try:
                await self.backend.write_heartbeats(self._writing)
            except BaseException:
                for sid, beat in self._writing.items():
                    self._pending.setdefault(sid, beat)  # a newer beat that came meanwhile wins
                raise
            finally:
                self._writing = {}

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self._flush_every)
            try:
                await self.flush()
            except Exception as exc:  # the beats stay buffered; the next round tries again
                log.warning("heartbeat flush failed", error=str(exc), pending=len(self._pending))

    def _buffered(self, source_id: str) -> Beat | None:
        return self._pending.get(source_id) or self._writing.get(source_id)

    def _with_beat(self, s: SourceRecord) -> SourceRecord:
        b = self._buffered(s.source_id)
        if b is None or (s.last_heartbeat is not None and s.last_heartbeat > b[0]):
            return s
        return replace(s, last_heartbeat=b[0], agent_version=b[1])

    async def record_heartbeat(self, source_id: str, agent_version: str, now: float) -> bool:
        if not await self.backend.source_exists(source_id):
            return False
        self._pending[source_id] = (now, agent_version)
        return True

    async def write_heartbeats(self, beats: Mapping[str, Beat]) -> None:
        await self.backend.write_heartbeats(beats)

    # -- sources: reads show the buffered beat; a (re)registration or removal drops it

    async def register_source(
        self, *, machine_id: str, hostname: str, os_name: str, agent_version: str,
        disks: tuple[DiskInfo, ...], registered_by: str, now: float,
    ) -> tuple[SourceRecord, bool]:
        rec, created = await self.backend.register_source(
            machine_id=machine_id, hostname=hostname, os_name=os_name, agent_version=agent_version,
            disks=disks, registered_by=registered_by, now=now)
        self._pending.pop(rec.source_id, None)
        return rec, created

    async def get_source(self, source_id: str) -> SourceRecord | None:
        s = await self.backend.get_source(source_id)
        return self._with_beat(s) if s is not None else None

    async def source_exists(self, source_id: str) -> bool:
        return await self.backend.source_exists(source_id)

    async def list_sources(self) -> list[SourceRecord]:
        return [self._with_beat(s) for s in await self.backend.list_sources()]

    async def remove_source(self, source_id: str) -> bool:
        removed = await self.backend.remove_source(source_id)
        self._pending.pop(source_id, None)
        return removed

    # -- everything else is the backend's

    async def create_key(self, role: str, name: str, now: float) -> KeyRecord:
        return await self.backend.create_key(role, name, now)

    async def get_key(self, secret_id: str) -> KeyRecord | None:
        return await self.backend.get_key(secret_id)

    async def list_keys(self) -> list[KeyRecord]:
        return await self.backend.list_keys()

    async def revoke_key(self, secret_id: str, now: float) -> KeyRecord | None:
        return await self.backend.revoke_key(secret_id, now)

    async def create_task(self, task: TaskRecord, *, unfinished_states: Iterable[str]) -> TaskRecord:
        return await self.backend.create_task(task, unfinished_states=unfinished_states)

    async def get_task(self, task_id: str) -> TaskRecord | None:
        return await self.backend.get_task(task_id)

    async def list_tasks(
        self, *, source_id: str | None = None, states: Iterable[str] | None = None,
        task_ids: Iterable[str] | None = None, limit: int = 100, offset: int = 0,
    ) -> tuple[list[TaskRecord], int]:
        return await self.backend.list_tasks(source_id=source_id, states=states, task_ids=task_ids,
                                             limit=limit, offset=offset)

    async def update_task(
        self, task_id: str, *, expect_state: str, changes: dict[str, Any],
        command: NewCommand | None = None, event: tuple[str, str, str] | None = None, now: float,
    ) -> tuple[TaskRecord, CommandRecord | None]:
        return await self.backend.update_task(task_id, expect_state=expect_state, changes=changes,
                                              command=command, event=event, now=now)

    async def due_scheduled_tasks(self, now: float) -> list[TaskRecord]:
        return await self.backend.due_scheduled_tasks(now)

    async def next_scheduled_time(self) -> float | None:
        return await self.backend.next_scheduled_time()

    def command_waiter(self, source_id: str) -> CommandWaiter:
        return self.backend.command_waiter(source_id)

    def wake_all(self) -> None:
        self.backend.wake_all()

    async def take_commands(
        self, source_id: str, now: float, visibility_seconds: float, limit: int = 20,
    ) -> tuple[list[CommandRecord], float | None]:
        return await self.backend.take_commands(source_id, now, visibility_seconds, limit)

    async def ack_command(
        self, source_id: str, command_id: str, result: str, message: str, now: float,
    ) -> tuple[CommandRecord | None, bool]:
        return await self.backend.ack_command(source_id, command_id, result, message, now)

    async def list_commands(self, task_id: str) -> list[CommandRecord]:
        return await self.backend.list_commands(task_id)

    async def count_pending_commands(self) -> int:
        return await self.backend.count_pending_commands()

    async def add_event(self, task_id: str, source_id: str, level: str, stage: str, message: str,
                        now: float) -> EventRecord:
        return await self.backend.add_event(task_id, source_id, level, stage, message, now)

    async def list_events(self, task_id: str, *, after_id: int = 0, limit: int = 100) -> list[EventRecord]:
        return await self.backend.list_events(task_id, after_id=after_id, limit=limit)

    async def task_state_counts(self) -> dict[str, int]:
        return await self.backend.task_state_counts()
