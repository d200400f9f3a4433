"""The console's storage contract: records, errors, and the :class:`Storage` interface.

Everything the console keeps goes through :class:`Storage`: keys, sources,
tasks, the command queue, task events, and the long-poll wake-up. The API, the
scheduler and the web UI never touch SQL. Business rules (which state allows
which action, one unfinished task per source) live in ``service.py``; storage
offers the atomic primitives those rules need:

* :meth:`Storage.update_task` is a compare-and-set on the task state that can
  enqueue a command *in the same transaction*, so a state change and its
  command are durable together or not at all (nothing lost, nothing run twice
  across a crash or a second console process).
* :meth:`Storage.command_waiter` returns a waiter *before* the caller looks for
  commands; :meth:`Storage.update_task` wakes every waiter of the source after
  commit. Taking the waiter first means a command committed between "look" and
  "wait" is never missed. ``wakeup.LocalWakeups`` is the in-process half of
  this; a backend shared by several console processes (PostgreSQL with
  ``LISTEN/NOTIFY``) also wakes the other processes' waiters.
* Heartbeats: a backend only writes batches (:meth:`Storage.write_heartbeats`);
  ``heartbeats.BufferedHeartbeats`` sits above any backend, holds beats in
  memory and writes them every few seconds.

Every integer a backend stores or pages by must fit a signed 64-bit column:
:func:`check_int64` refuses anything else with :class:`OutOfRange` (a
``ValueError`` that names the parameter) before it reaches the database.

A backend is one module beside ``sqlite.py`` (docs/design.md, "Adding a storage
backend").
"""

from __future__ import annotations

import abc
import secrets
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from migrated.errors import (
    ConfigError,
    OutOfRange,  # the error tree's (a ValueError too): the API answers InvalidParameterValue
)

_ALNUM = string.ascii_letters + string.digits
_LOWER = string.ascii_lowercase + string.digits

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# a buffered heartbeat: (time, agent version)
Beat = tuple[float, str]


def new_id(prefix: str, n: int = 10) -> str:
    return prefix + "".join(secrets.choice(_LOWER) for _ in range(n))


def new_secret_id() -> str:
    return "AKID" + "".join(secrets.choice(_ALNUM) for _ in range(32))


def new_secret_key() -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(40))


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class KeyRecord:
    secret_id: str
    secret_key: str
    role: str  # admin | agent
    name: str
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class DiskInfo:
    name: str
    size_bytes: int
    mount_points: tuple[str, ...] = ()
    is_system: bool = False


@dataclass(frozen=True)
class SourceRecord:
    source_id: str
    machine_id: str
    hostname: str
    os_name: str
    agent_version: str
    disks: tuple[DiskInfo, ...]
    registered_by: str  # SecretId of the agent key that registered it
    registered_at: float
    last_heartbeat: float | None = None


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    source_id: str
    name: str
    description: str
    region: str
    target_type: str  # image | instance
    image_name: str
    target_instance_id: str
    target_ssh: str
    target_host_key: str
    bandwidth_limit_kbps: int
    checksum: bool
    disk_mapping: tuple[tuple[str, str], ...]  # (source disk, target disk)
    scheduled_at: float | None
    state: str
    stage: str = ""
    message: str = ""
    progress: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    image_id: str = ""  # the cloud image made from the target (image tasks, cloud enabled)
    image_state: str = ""  # "" | PENDING | CREATING | NORMAL | FAILED | SKIPPED (Tencent states as reported)
    # continuous sync (None = one-shot): the CreateTask parameters params.CONTINUOUS_PARAMS
    # {"RoundIntervalSeconds", "ReadLimitKBps", "Quiesce", "PreHook", "PostHook", "FreezeBudgetSeconds",
    # "SnapshotSize"}, each None when not given (older rows hold fewer keys: read with .get);
    # ModifyTaskRounds changes the first two
    continuous: dict[str, Any] | None = None
    ignore_checks: tuple[str, ...] = ()  # CreateTask IgnoreChecks: names from model.taskspec.CHECKS


@dataclass(frozen=True)
class CommandRecord:
    command_id: str
    source_id: str
    task_id: str
    action: str
    params: dict[str, Any]
    created_at: float
    delivered_at: float | None = None
    deliveries: int = 0
    acked_at: float | None = None
    result: str = ""
    message: str = ""


@dataclass(frozen=True)
class NewCommand:
    action: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EventRecord:
    event_id: int
    task_id: str
    source_id: str
    time: float
    level: str
    stage: str
    message: str


# ---------------------------------------------------------------- errors


class StorageConflict(Exception):
    """A compare-and-set lost: the row changed (or vanished) since the caller read it."""


class SchemaTooNew(ConfigError):
    """:meth:`Storage.open` found a database whose schema a newer console wrote: refused, never
    downgraded (the message names the config key of the database)."""


def check_int64(name: str, value: int, *, minimum: int = INT64_MIN) -> int:
    """``value`` if ``minimum <= value <= 2**63-1``, else :class:`OutOfRange` naming ``name``."""
    if not minimum <= value <= INT64_MAX:
        got = str(value) if value.bit_length() <= 128 else f"a {value.bit_length()}-bit number"
        raise OutOfRange(f"{name} must be between {minimum} and {INT64_MAX}, got {got}")
    return value


# ---------------------------------------------------------------- interface


class CommandWaiter(abc.ABC):
    @abc.abstractmethod
    async def wait(self, timeout: float) -> bool:
        """Wait until a command may be queued for the source, or ``timeout`` seconds. True if woken."""


class Storage(abc.ABC):
    """What the console keeps. Every method is safe to call concurrently from the event loop.

    A backend implements every abstract method; :meth:`record_heartbeat` has a write-through
    default, and ``BufferedHeartbeats`` (above the backend) replaces it with a buffered one.
    """

    # called with the seconds each write took, queueing included (for /metrics); None: not measured
    observe_write: Callable[[float], None] | None = None
    # Versioned schema: open() applies the backend's numbered upgrade steps the database lacks, in
    # one transaction, and refuses (SchemaTooNew) a database newer than it knows. After open():
    # the version the database is on, and the one it was on before if open() upgraded it.
    schema_version: int = 0
    schema_upgraded_from: int | None = None

    # lifecycle
    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    # keys
    @abc.abstractmethod
    async def create_key(self, role: str, name: str, now: float) -> KeyRecord: ...

    @abc.abstractmethod
    async def get_key(self, secret_id: str) -> KeyRecord | None: ...

    @abc.abstractmethod
    async def list_keys(self) -> list[KeyRecord]: ...

    @abc.abstractmethod
    async def revoke_key(self, secret_id: str, now: float) -> KeyRecord | None:
        """Revoke (idempotent); None when no such key."""

    # sources
    @abc.abstractmethod
    async def register_source(
        self, *, machine_id: str, hostname: str, os_name: str, agent_version: str,
        disks: tuple[DiskInfo, ...], registered_by: str, now: float,
    ) -> tuple[SourceRecord, bool]:
        """Insert or update the source of ``machine_id``; returns (record, created).
        ``last_heartbeat`` becomes ``now``.

        An existing source registered by another key moves to ``registered_by`` only when
        that other key is revoked or gone (key rotation); otherwise :class:`StorageConflict`.
        """

    @abc.abstractmethod
    async def get_source(self, source_id: str) -> SourceRecord | None: ...

    @abc.abstractmethod
    async def source_exists(self, source_id: str) -> bool:
        """Cheaper than :meth:`get_source` (asked on every heartbeat)."""

    @abc.abstractmethod
    async def list_sources(self) -> list[SourceRecord]:
        """Oldest registration first."""

    @abc.abstractmethod
    async def remove_source(self, source_id: str) -> bool:
        """Remove the source (True if it existed); its unacked commands are acked as errors."""

    @abc.abstractmethod
    async def write_heartbeats(self, beats: Mapping[str, Beat]) -> None:
        """Durably set ``last_heartbeat`` and ``agent_version`` of each source in ``beats``
        (source id -> (time, version)) in one write. Unknown sources are skipped, and a beat
        older than the stored ``last_heartbeat`` changes nothing (it never moves backwards)."""

    async def record_heartbeat(self, source_id: str, agent_version: str, now: float) -> bool:
        """Note that the source is alive; False when the source does not exist."""
        if not await self.source_exists(source_id):
            return False
        await self.write_heartbeats({source_id: (now, agent_version)})
        return True

    # tasks
    @abc.abstractmethod
    async def create_task(self, task: TaskRecord, *, unfinished_states: Iterable[str]) -> TaskRecord:
        """Insert ``task``; refuses (StorageConflict, message names the task) when the source
        already has a task in ``unfinished_states``. When an image name is taken by another
        task, ``-<task id>`` is appended to it. OutOfRange for an integer past 64 bits."""

    @abc.abstractmethod
    async def get_task(self, task_id: str) -> TaskRecord | None: ...

    @abc.abstractmethod
    async def list_tasks(
        self, *, source_id: str | None = None, states: Iterable[str] | None = None,
        task_ids: Iterable[str] | None = None, limit: int = 100, offset: int = 0,
    ) -> tuple[list[TaskRecord], int]:
        """Newest first; returns (page, total matching). OutOfRange for a negative ``limit`` or
        ``offset``, or one past 64 bits."""

    @abc.abstractmethod
    async def update_task(
        self, task_id: str, *, expect_state: str, changes: dict[str, Any],
        command: NewCommand | None = None, event: tuple[str, str, str] | None = None, now: float,
    ) -> tuple[TaskRecord, CommandRecord | None]:
        """Atomically: if the task is in ``expect_state``, apply ``changes`` (column names of
        TaskRecord), enqueue ``command`` for the task's source and add ``event`` (level, stage,
        message). StorageConflict when the state differs; ValueError for a column that does not
        exist or may not change; OutOfRange for an integer past 64 bits. Wakes the source's
        waiters (also when the caller was cancelled after the commit)."""

    @abc.abstractmethod
    async def due_scheduled_tasks(self, now: float) -> list[TaskRecord]:
        """Tasks in *scheduled* whose ``scheduled_at`` is at or before ``now``, earliest first."""

    @abc.abstractmethod
    async def next_scheduled_time(self) -> float | None:
        """The earliest ``scheduled_at`` of a *scheduled* task (None: none)."""

    # commands
    @abc.abstractmethod
    def command_waiter(self, source_id: str) -> CommandWaiter:
        """A waiter that a later :meth:`update_task` with a command for ``source_id`` wakes.
        Take it before looking for commands."""

    @abc.abstractmethod
    def wake_all(self) -> None:
        """Wake every waiter of this process (shutdown)."""

    @abc.abstractmethod
    async def take_commands(
        self, source_id: str, now: float, visibility_seconds: float, limit: int = 20,
    ) -> tuple[list[CommandRecord], float | None]:
        """Unacked commands that were never delivered or whose delivery is older than the
        visibility timeout, oldest first, marked delivered now. Also returns when the next
        in-flight command becomes due again (None if none). Delivery marks need not be
        durable: after a crash an unacked command may come again early, never not at all."""

    @abc.abstractmethod
    async def ack_command(
        self, source_id: str, command_id: str, result: str, message: str, now: float,
    ) -> tuple[CommandRecord | None, bool]:
        """(record, first_ack). Idempotent: a second ack returns the first one's record.
        Durable when it returns."""

    @abc.abstractmethod
    async def list_commands(self, task_id: str) -> list[CommandRecord]: ...

    @abc.abstractmethod
    async def count_pending_commands(self) -> int: ...

    # events
    @abc.abstractmethod
    async def add_event(self, task_id: str, source_id: str, level: str, stage: str, message: str,
                        now: float) -> EventRecord: ...

    @abc.abstractmethod
    async def list_events(self, task_id: str, *, after_id: int = 0, limit: int = 100) -> list[EventRecord]:
        """Events after ``after_id``, oldest first. OutOfRange for a negative ``limit``, or an
        ``after_id``/``limit`` past 64 bits."""

    @abc.abstractmethod
    async def task_state_counts(self) -> dict[str, int]: ...
