"""Console storage: the interface, its backends by name, and heartbeat buffering above them.

* ``interface.py``: the records, the errors and the :class:`Storage` contract.
* ``heartbeats.py``: :class:`BufferedHeartbeats`, above any backend.
* ``wakeup.py``: the in-process long-poll wake-up a backend uses.
* ``sqlite.py``: the SQLite backend (the embedded default).
* ``postgresql.py``: the PostgreSQL backend (asyncpg, imported when it opens: the
  ``[postgresql]`` extra).

:func:`create_storage` opens a backend by its name in :data:`BACKENDS` with heartbeat
buffering on top; that is what the console runs. Callers import everything from here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .heartbeats import BufferedHeartbeats
from .interface import (
    INT64_MAX,
    Beat,
    CommandRecord,
    CommandWaiter,
    DiskInfo,
    EventRecord,
    KeyRecord,
    NewCommand,
    OutOfRange,
    SchemaTooNew,
    SourceRecord,
    Storage,
    StorageConflict,
    TaskRecord,
    check_int64,
    new_id,
    new_secret_id,
    new_secret_key,
)
from .postgresql import PostgreSQLBackend
from .sqlite import SCHEMA_VERSION, SQLiteBackend

# backend name (the console config's storage.backend) -> the class, called with that backend's options
BACKENDS: dict[str, Callable[..., Storage]] = {
    "sqlite": SQLiteBackend,
    "postgresql": PostgreSQLBackend,
}


def create_storage(backend: str, *, heartbeat_flush_seconds: float = 5.0, **options: Any) -> BufferedHeartbeats:
    """The backend called ``backend`` (``options`` are its own, e.g. ``path`` for sqlite) with
    heartbeat buffering above it."""
    try:
        cls = BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown storage backend {backend!r}; known: {', '.join(sorted(BACKENDS))}") from None
    return BufferedHeartbeats(cls(**options), flush_seconds=heartbeat_flush_seconds)


class SQLiteStorage(BufferedHeartbeats):
    """The SQLite backend with heartbeat buffering: ``create_storage("sqlite", path=path)`` as a class."""

    def __init__(self, path: str | os.PathLike[str], *, heartbeat_flush_seconds: float = 5.0) -> None:
        backend = SQLiteBackend(path)
        super().__init__(backend, flush_seconds=heartbeat_flush_seconds)
        self.path = backend.path


__all__ = [
    "BACKENDS",
    "INT64_MAX",
    "SCHEMA_VERSION",
    "Beat",
    "BufferedHeartbeats",
    "CommandRecord",
    "CommandWaiter",
    "DiskInfo",
    "EventRecord",
    "KeyRecord",
    "NewCommand",
    "OutOfRange",
    "PostgreSQLBackend",
    "SQLiteBackend",
    "SQLiteStorage",
    "SchemaTooNew",
    "SourceRecord",
    "Storage",
    "StorageConflict",
    "TaskRecord",
    "check_int64",
    "create_storage",
    "new_id",
    "new_secret_id",
    "new_secret_key",
]
