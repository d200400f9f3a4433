"""The PostgreSQL backend of :class:`~migrated.console.storage.interface.Storage` (``backend: postgresql``).

One asyncpg connection pool per console process: reads and writes are plain ``await``s on the
event loop (no storage thread), every write is one transaction on one pooled connection, and
``synchronous_commit=on`` is set on each connection, so a commit is durable when it returns
whatever the database's default says. Rows have the same shape as in ``sqlite.py`` (JSON kept as
text, the same row converters), so both backends answer the same.

Where SQLite relies on being the only writer of its file, this backend takes row locks or
transaction-scoped advisory locks instead: the compare-and-set of :meth:`update_task` locks the
task row (``FOR UPDATE``), "one unfinished task per source" and "one source per machine" hold
under an advisory lock on the source / machine, and :meth:`take_commands` marks deliveries in the
table with ``FOR UPDATE SKIP LOCKED`` and a non-durable commit (``synchronous_commit=off``: a mark
lost in a crash only means an early redelivery, which the contract allows; acks are durable).

Every write runs to its end in a task of its own, shielded from the caller: a request cancelled
(client gone) after the commit still wakes the source's long-polls, as the storage thread does in
``sqlite.py``.

Several console processes on one database: the long-poll wake-up crosses processes with
``LISTEN/NOTIFY``. :meth:`update_task` that queues a command also runs ``pg_notify`` on
:data:`NOTIFY_CHANNEL` with the source ID as payload *in the same transaction* (PostgreSQL
delivers it at commit, never for a rolled-back one). Each process holds one dedicated connection
(not from the pool) that ``LISTEN``s; a notification sets ``wakeup.LocalWakeups`` for that source,
as a local commit does. That connection is watched (asyncpg's termination callback, and a
``SELECT 1`` every ``listen_check_seconds``); when it is lost it is reopened with backoff
(``aio/retry.py``), and once it listens again every waiter of this process is woken once, so a
command queued during the gap is found at once rather than at the poll's timeout.

The schema is versioned: ``schema_version`` holds the version, :data:`MIGRATIONS` the numbered
steps, applied in one transaction at :meth:`open` under an advisory lock (two processes starting
together upgrade once). A database on a newer schema than this console knows is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import structlog

from migrated.aio.retry import Retry
from migrated.errors import ConfigError
from migrated.model.backoff import Backoff
from migrated.model.states import TaskState

from .interface import (
    Beat,
    CommandRecord,
    CommandWaiter,
    DiskInfo,
    EventRecord,
    KeyRecord,
    NewCommand,
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
from .sqlite import _TASK_COLUMNS, _command_from_row, _disks_json, _source_from_row, _task_from_row, _task_to_row
from .wakeup import LocalWakeups

T = TypeVar("T")

log = structlog.get_logger(__name__)

# LISTEN/NOTIFY: the channel a queued command is announced on (payload: the source ID), and the
# application_name of each process's listening connection (pg_stat_activity shows it)
NOTIFY_CHANNEL = "migrated_commands"
LISTENER_APPLICATION_NAME = "migrate-console listen"

_SCHEDULED = TaskState.SCHEDULED.value

# ---------------------------------------------------------------- schema

# numbered steps: step N leads from schema N-1 to N; a new step is appended, never edited
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, (
        """CREATE TABLE keys (
            seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
            secret_id TEXT PRIMARY KEY, secret_key TEXT NOT NULL, role TEXT NOT NULL, name TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL, revoked_at DOUBLE PRECISION)""",
        """CREATE TABLE sources (
            seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
            source_id TEXT PRIMARY KEY, machine_id TEXT NOT NULL UNIQUE, hostname TEXT NOT NULL,
            os_name TEXT NOT NULL, agent_version TEXT NOT NULL, disks TEXT NOT NULL,
            registered_by TEXT NOT NULL, registered_at DOUBLE PRECISION NOT NULL,
            last_heartbeat DOUBLE PRECISION)""",
        """CREATE TABLE tasks (
            task_id TEXT PRIMARY KEY, source_id TEXT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL,
            region TEXT NOT NULL, target_type TEXT NOT NULL, image_name TEXT NOT NULL,
            target_instance_id TEXT NOT NULL, target_ssh TEXT NOT NULL, target_host_key TEXT NOT NULL,
            bandwidth_limit_kbps BIGINT NOT NULL, checksum INTEGER NOT NULL, disk_mapping TEXT NOT NULL,
            scheduled_at DOUBLE PRECISION, state TEXT NOT NULL, stage TEXT NOT NULL, message TEXT NOT NULL,
            progress TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
            image_id TEXT NOT NULL DEFAULT '', image_state TEXT NOT NULL DEFAULT '',
            continuous TEXT NOT NULL DEFAULT '')""",
        "CREATE INDEX tasks_source ON tasks(source_id, state)",
        "CREATE INDEX tasks_sched ON tasks(state, scheduled_at)",
        "CREATE INDEX tasks_image ON tasks(image_name, region)",
        """CREATE TABLE commands (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, command_id TEXT NOT NULL UNIQUE,
            source_id TEXT NOT NULL, task_id TEXT NOT NULL, action TEXT NOT NULL, params TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL, delivered_at DOUBLE PRECISION,
            deliveries BIGINT NOT NULL DEFAULT 0, acked_at DOUBLE PRECISION,
            result TEXT NOT NULL DEFAULT '', message TEXT NOT NULL DEFAULT '')""",
        "CREATE INDEX commands_pending ON commands(source_id, seq) WHERE acked_at IS NULL",
        "CREATE INDEX commands_task ON commands(task_id, seq)",
        """CREATE TABLE events (
            event_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, task_id TEXT NOT NULL,
            source_id TEXT NOT NULL, time DOUBLE PRECISION NOT NULL, level TEXT NOT NULL,
            stage TEXT NOT NULL, message TEXT NOT NULL)""",
        "CREATE INDEX events_task ON events(task_id, event_id)",
    )),
    (2, ("ALTER TABLE tasks ADD COLUMN ignore_checks TEXT NOT NULL DEFAULT ''",)),  # CreateTask IgnoreChecks
)

SCHEMA_VERSION = MIGRATIONS[-1][0]

# pg_advisory_xact_lock keys: the schema upgrade, and per-row serialisation of the checks that
# SQLite gets from having one writer (two int4 keys: this namespace, then hashtext of the name)
_LOCK_NS = 0x6D696772  # "migr"
_LOCK_SCHEMA = 1

_KEY_COLS = "secret_id, secret_key, role, name, created_at, revoked_at"
_SOURCE_COLS = ("source_id, machine_id, hostname, os_name, agent_version, disks, registered_by, registered_at, "
                "last_heartbeat")
_TASK_COLS = ", ".join(_TASK_COLUMNS)


def safe_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (for messages and logs)."""
    try:
        u = urllib.parse.urlsplit(dsn)
    except ValueError:
        return "<unparsable DSN>"
    netloc = u.netloc
    if "@" in netloc:
        auth, _, hostport = netloc.rpartition("@")
        user, sep, _pw = auth.partition(":")
        netloc = f"{user}{':***' if sep else ''}@{hostport}"
    query = urllib.parse.urlencode([(k, "***" if k == "password" else v)
                                    for k, v in urllib.parse.parse_qsl(u.query, keep_blank_values=True)])
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, query, u.fragment))


def dsn_has_password(dsn: str) -> bool:
    u = urllib.parse.urlsplit(dsn)
    auth = u.netloc.rpartition("@")[0] if "@" in u.netloc else ""
    return ":" in auth or any(k == "password" for k, _ in urllib.parse.parse_qsl(u.query))


def read_password(password_file: str = "", password_credential: str = "") -> str | None:
    """The password from ``password_file``, or from the systemd credential ``password_credential``
    ($CREDENTIALS_DIRECTORY/NAME, the unit's ``LoadCredential=``); None when neither is set.
    One trailing newline is dropped. Errors name the config key."""
    if password_credential:
        creds = os.environ.get("CREDENTIALS_DIRECTORY", "")
        if not creds:
            raise ConfigError(f"credential {password_credential!r}: $CREDENTIALS_DIRECTORY is not set "
                              "(run under systemd with LoadCredential=, or use password_file)",
                              path="storage.password_credential")
        path, key = Path(creds) / password_credential, "storage.password_credential"
    elif password_file:
        path, key = Path(password_file), "storage.password_file"
    else:
        return None
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", path=key) from None
    return text[:-1] if text.endswith("\n") else text


def _refuse_newer(have: int) -> None:
    if have > SCHEMA_VERSION:
        raise SchemaTooNew(f"the database is on schema version {have}, this console knows up to "
                           f"{SCHEMA_VERSION}: run the newer console (or restore the database)", path="storage.dsn")


class PostgreSQLBackend(Storage):
    """A PostgreSQL database, through a pool of asyncpg connections.

    ``dsn``: ``postgresql://user@host:port/db`` or ``postgresql:///db?host=/run/postgresql``,
    without a password; the password comes from ``password_file`` or the systemd credential
    ``password_credential`` (or libpq's own ``~/.pgpass``/``PGPASSWORD``, which asyncpg reads).
    """

    def __init__(self, dsn: str, *, password_file: str = "", password_credential: str = "",
                 pool_size: int = 10, connect_timeout: float = 10.0, listen_check_seconds: float = 10.0) -> None:
        if dsn_has_password(dsn):
            raise ConfigError("has a password in it; put the password in password_file instead", path="storage.dsn")
        self.dsn = dsn
        self._password_file = password_file
        self._password_credential = password_credential
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._pool: Any = None  # asyncpg.Pool
        self._wakeups = LocalWakeups()
        self._listen_check_seconds = listen_check_seconds
        self._listener: Any = None  # the asyncpg.Connection that LISTENs
        self._listener_lost = asyncio.Event()
        self._listening: asyncio.Task[None] | None = None
        self.listener_reconnects = 0  # how often the listening connection was reopened
        self._writes: set[asyncio.Task[Any]] = set()
        self.observe_write: Callable[[float], None] | None = None
        self.schema_version = 0
        self.schema_upgraded_from: int | None = None

    # -- plumbing

    async def _connecting(self, connect: Callable[..., Awaitable[T]], *,
                          application_name: str = "migrate-console", **kw: Any) -> T:
        """``connect(dsn, ...)`` (asyncpg's pool or connection) with the password, the settings
        every connection gets, and a failure as a ConfigError naming ``storage.dsn``."""
        import asyncpg  # the optional dependency: pip install 'migrated[postgresql]'

        password = read_password(self._password_file, self._password_credential)
        try:
            return await connect(
                self.dsn, password=password, timeout=self._connect_timeout, command_timeout=60,
                server_settings={"synchronous_commit": "on", "application_name": application_name}, **kw)
        except (TimeoutError, OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ConfigError(f"cannot connect to PostgreSQL at {safe_dsn(self.dsn)}: "
                              f"{type(exc).__name__}: {exc}", path="storage.dsn") from None

    async def open(self) -> None:
        import asyncpg

        pool = await self._connecting(asyncpg.create_pool, min_size=1, max_size=self._pool_size)
        try:
            async with pool.acquire() as con:
                try:
                    self.schema_upgraded_from, self.schema_version = await self._migrate(con)
                except asyncpg.PostgresError as exc:  # e.g. no CREATE privilege on the database
                    raise ConfigError(f"cannot set up the console's schema in {safe_dsn(self.dsn)}: "
                                      f"{type(exc).__name__}: {exc}", path="storage.dsn") from None
            await self._listen()
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        self._listening = asyncio.get_running_loop().create_task(self._keep_listening(), name="pg-listen")

    # -- LISTEN/NOTIFY

    async def _listen(self) -> None:
        """Open the listening connection and LISTEN on it (ConfigError when it cannot connect)."""
        import asyncpg

        con = await self._connecting(asyncpg.connect, application_name=LISTENER_APPLICATION_NAME)
        try:
            lost = asyncio.Event()
            con.add_termination_listener(lambda _con: lost.set())
            await con.add_listener(NOTIFY_CHANNEL, self._notified)
        except BaseException:
            con.terminate()
            raise
        self._listener, self._listener_lost = con, lost

    def _notified(self, _con: Any, _pid: int, _channel: str, payload: str) -> None:
        self._wakeups.notify(payload)

    @property
    def listener_pid(self) -> int | None:
        """The server process ID of the listening connection (None while it is down)."""
        con = self._listener
        return con.get_server_pid() if con is not None and not con.is_closed() else None

    async def _listener_alive(self) -> bool:
        """Wait up to ``listen_check_seconds`` for a loss; then ask the connection once."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._listen_check_seconds):
                await self._listener_lost.wait()
        if self._listener_lost.is_set() or self._listener.is_closed():
            return False
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._listener.execute("SELECT 1")
        except Exception:  # any failure of the check means: reconnect
            return False
        return True

    async def _keep_listening(self) -> None:
        retry = Retry(Backoff(initial=0.2, factor=2.0, cap=10.0, random=random.random))
        while True:
            if await self._listener_alive():
                continue
            log.warning("postgresql listening connection lost; reconnecting", dsn=safe_dsn(self.dsn))
            old, self._listener = self._listener, None
            old.terminate()
            await retry.call(self._listen, retry_on=Exception,
                             on_retry=lambda e, delay: log.warning("postgresql listen reconnect failed",
                                                                   reason=str(e), retry_in=round(delay, 2)))
            self.listener_reconnects += 1
            log.info("postgresql listening connection back", dsn=safe_dsn(self.dsn))
            # anything queued while nobody listened was announced to no one here: every poll looks again
            self._wakeups.notify_all()

    async def check(self) -> int:
        """Connect once and read the schema version (0: no tables yet) without changing anything;
        SchemaTooNew for a newer one. What ``check-config`` does."""
        import asyncpg

        con = await self._connecting(asyncpg.connect)
        try:
            have = 0
            if await con.fetchval("SELECT to_regclass('schema_version') IS NOT NULL"):
                have = await con.fetchval("SELECT max(version) FROM schema_version") or 0
        finally:
            await con.close()
        _refuse_newer(have)
        return int(have)

    @staticmethod
    async def _migrate(con: Any) -> tuple[int | None, int]:
        """Apply the steps past the database's version: (the version before if upgraded, the version now)."""
        async with con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock($1, $2)", _LOCK_NS, _LOCK_SCHEMA)
            await con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            have = await con.fetchval("SELECT max(version) FROM schema_version") or 0
            _refuse_newer(have)
            if have == SCHEMA_VERSION:
                return None, have
            for number, statements in MIGRATIONS:
                if number > have:
                    for stmt in statements:
                        await con.execute(stmt)
            await con.execute("DELETE FROM schema_version")
            await con.execute("INSERT INTO schema_version(version) VALUES ($1)", SCHEMA_VERSION)
        return (have or None), SCHEMA_VERSION  # a new database is created, not upgraded

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        listening, self._listening = self._listening, None
        if listening is not None:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.close(), self._connect_timeout)
            if not listener.is_closed():
                listener.terminate()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        await pool.close()

    def _p(self) -> Any:
        if self._pool is None:
            raise RuntimeError("storage is not open")
        return self._pool

    async def _write(self, fn: Callable[[Any], Awaitable[T]], *, durable: bool = True,
                     after: Callable[[T], None] | None = None) -> T:
        """``fn(connection)`` in one transaction, run to its end even if the caller is cancelled;
        ``after(result)`` runs right after the commit (the wake-ups)."""
        pool = self._p()
        t0 = time.monotonic()

        async def go() -> T:
            async with pool.acquire() as con, con.transaction():
                if not durable:
                    await con.execute("SET LOCAL synchronous_commit = off")
                out = await fn(con)
            if after is not None:
                after(out)
            return out

        task = asyncio.get_running_loop().create_task(go())
        self._writes.add(task)
        task.add_done_callback(self._write_done)
        try:
            return await asyncio.shield(task)
        finally:
            if self.observe_write is not None:
                self.observe_write(time.monotonic() - t0)

    def _write_done(self, task: asyncio.Task[Any]) -> None:
        self._writes.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that went away already has its answer (none)

    @staticmethod
    async def _lock(con: Any, name: str) -> None:
        await con.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_NS, name)

    # -- keys

    async def create_key(self, role: str, name: str, now: float) -> KeyRecord:
        rec = KeyRecord(new_secret_id(), new_secret_key(), role, name, now)

        async def go(con: Any) -> None:
            await con.execute("INSERT INTO keys(secret_id, secret_key, role, name, created_at) VALUES ($1,$2,$3,$4,$5)",
                              rec.secret_id, rec.secret_key, rec.role, rec.name, rec.created_at)

        await self._write(go)
        return rec

    @staticmethod
    async def _get_key(con: Any, secret_id: str) -> KeyRecord | None:
        row = await con.fetchrow(f"SELECT {_KEY_COLS} FROM keys WHERE secret_id=$1", secret_id)
        return KeyRecord(**dict(row)) if row else None

    async def get_key(self, secret_id: str) -> KeyRecord | None:
        return await self._get_key(self._p(), secret_id)

    async def list_keys(self) -> list[KeyRecord]:
        rows = await self._p().fetch(f"SELECT {_KEY_COLS} FROM keys ORDER BY created_at, seq")
        return [KeyRecord(**dict(r)) for r in rows]

    async def revoke_key(self, secret_id: str, now: float) -> KeyRecord | None:
        async def go(con: Any) -> KeyRecord | None:
            await con.execute("UPDATE keys SET revoked_at=$1 WHERE secret_id=$2 AND revoked_at IS NULL", now, secret_id)
            return await self._get_key(con, secret_id)

        return await self._write(go)

    # -- sources

    async def register_source(
        self, *, machine_id: str, hostname: str, os_name: str, agent_version: str,
        disks: tuple[DiskInfo, ...], registered_by: str, now: float,
    ) -> tuple[SourceRecord, bool]:
        async def go(con: Any) -> tuple[SourceRecord, bool]:
            await self._lock(con, "machine:" + machine_id)
            row = await con.fetchrow(f"SELECT {_SOURCE_COLS} FROM sources WHERE machine_id=$1 FOR UPDATE", machine_id)
            if row is not None:
                old = _source_from_row(row)
                old_key = await self._get_key(con, old.registered_by)
                if old.registered_by != registered_by and old_key is not None and old_key.active:
                    raise StorageConflict(
                        f"machine {machine_id} is registered as {old.source_id} by another key that is "
                        "still active; revoke that key first to move the source to this one"
                    )
                source_id, created = old.source_id, False
                await con.execute(
                    "UPDATE sources SET hostname=$1, os_name=$2, agent_version=$3, disks=$4, registered_by=$5, "
                    "last_heartbeat=$6 WHERE source_id=$7",
                    hostname, os_name, agent_version, _disks_json(disks), registered_by, now, source_id,
                )
            else:
                source_id, created = new_id("src-"), True
                await con.execute(
                    "INSERT INTO sources(source_id, machine_id, hostname, os_name, agent_version, disks, "
                    "registered_by, registered_at, last_heartbeat) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
                    source_id, machine_id, hostname, os_name, agent_version, _disks_json(disks),
                    registered_by, now, now,
                )
            row = await con.fetchrow(f"SELECT {_SOURCE_COLS} FROM sources WHERE source_id=$1", source_id)
            return _source_from_row(row), created

        return await self._write(go)

    async def get_source(self, source_id: str) -> SourceRecord | None:
        row = await self._p().fetchrow(f"SELECT {_SOURCE_COLS} FROM sources WHERE source_id=$1", source_id)
        return _source_from_row(row) if row else None

    async def list_sources(self) -> list[SourceRecord]:
        rows = await self._p().fetch(f"SELECT {_SOURCE_COLS} FROM sources ORDER BY registered_at, seq")
        return [_source_from_row(r) for r in rows]

    async def remove_source(self, source_id: str) -> bool:
        async def go(con: Any) -> bool:
            status = await con.execute("DELETE FROM sources WHERE source_id=$1", source_id)
            await con.execute("UPDATE commands SET acked_at=$1, result='error', message='source removed' "
                              "WHERE source_id=$2 AND acked_at IS NULL", time.time(), source_id)
            return status != "DELETE 0"

        return await self._write(go)

    async def source_exists(self, source_id: str) -> bool:
        return await self._p().fetchval("SELECT 1 FROM sources WHERE source_id=$1", source_id) is not None

    async def write_heartbeats(self, beats: Mapping[str, Beat]) -> None:
        if not beats:
            return
        ids = list(beats)
        times = [beats[s][0] for s in ids]
        versions = [beats[s][1] for s in ids]

        async def go(con: Any) -> None:
            await con.execute(
                "UPDATE sources SET last_heartbeat=b.t, agent_version=b.v "
                "FROM unnest($1::text[], $2::float8[], $3::text[]) AS b(sid, t, v) "
                "WHERE sources.source_id=b.sid AND (sources.last_heartbeat IS NULL OR sources.last_heartbeat<=b.t)",
                ids, times, versions,
            )

        await self._write(go)

    # -- tasks

    async def create_task(self, task: TaskRecord, *, unfinished_states: Iterable[str]) -> TaskRecord:
        states = list(unfinished_states)
        _task_to_row(task)  # OutOfRange before anything is sent

        async def go(con: Any) -> TaskRecord:
            t = task
            await self._lock(con, "source:" + t.source_id)
            row = await con.fetchrow("SELECT task_id, state FROM tasks WHERE source_id=$1 AND state = ANY($2::text[])",
                                     t.source_id, states)
            if row is not None:
                raise StorageConflict(
                    f"source {t.source_id} already has unfinished task {row['task_id']} ({row['state']}); "
                    "finish or delete it first"
                )
            if t.image_name:
                await self._lock(con, f"image:{t.region}:{t.image_name}")
                if await con.fetchval("SELECT 1 FROM tasks WHERE image_name=$1 AND region=$2", t.image_name, t.region):
                    t = replace(t, image_name=f"{t.image_name}-{t.task_id}")
            row_d = _task_to_row(t)
            marks = ",".join(f"${i + 1}" for i in range(len(_TASK_COLUMNS)))
            await con.execute(f"INSERT INTO tasks({_TASK_COLS}) VALUES ({marks})", *[row_d[c] for c in _TASK_COLUMNS])
            return t

        return await self._write(go)

    @staticmethod
    async def _get_task(con: Any, task_id: str, *, lock: bool = False) -> TaskRecord | None:
        row = await con.fetchrow(f"SELECT {_TASK_COLS} FROM tasks WHERE task_id=$1{' FOR UPDATE' if lock else ''}",
                                 task_id)
        return _task_from_row(row) if row else None

    async def get_task(self, task_id: str) -> TaskRecord | None:
        return await self._get_task(self._p(), task_id)

    async def list_tasks(
        self, *, source_id: str | None = None, states: Iterable[str] | None = None,
        task_ids: Iterable[str] | None = None, limit: int = 100, offset: int = 0,
    ) -> tuple[list[TaskRecord], int]:
        check_int64("limit", limit, minimum=0)
        check_int64("offset", offset, minimum=0)
        where: list[str] = []
        args: list[Any] = []
        if source_id is not None:
            args.append(source_id)
            where.append(f"source_id=${len(args)}")
        if states is not None:
            args.append(list(states))
            where.append(f"state = ANY(${len(args)}::text[])")
        if task_ids is not None:
            args.append(list(task_ids))
            where.append(f"task_id = ANY(${len(args)}::text[])")
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        pool = self._p()
        n = len(args)
        async with pool.acquire() as con, con.transaction(readonly=True, isolation="repeatable_read"):
            total = await con.fetchval(f"SELECT COUNT(*) FROM tasks {clause}", *args)
            rows = await con.fetch(
                f'SELECT {_TASK_COLS} FROM tasks {clause} ORDER BY created_at DESC, task_id COLLATE "C" '
                f"LIMIT ${n + 1} OFFSET ${n + 2}", *args, limit, offset)
        return [_task_from_row(r) for r in rows], int(total)

    async def update_task(
        self, task_id: str, *, expect_state: str, changes: dict[str, Any],
        command: NewCommand | None = None, event: tuple[str, str, str] | None = None, now: float,
    ) -> tuple[TaskRecord, CommandRecord | None]:
        bad = set(changes) - set(_TASK_COLUMNS) | ({"task_id", "source_id"} & set(changes))
        if bad:
            raise ValueError(f"cannot change task columns {sorted(bad)}")

        async def go(con: Any) -> tuple[TaskRecord, CommandRecord | None]:
            cur = await self._get_task(con, task_id, lock=True)
            if cur is None:
                raise StorageConflict(f"task {task_id} does not exist")
            if cur.state != expect_state:
                raise StorageConflict(f"task {task_id} is {cur.state}, not {expect_state}")
            new = replace(cur, **changes, updated_at=now)
            row_d = _task_to_row(new)
            cols = [c for c in _TASK_COLUMNS if c != "task_id"]
            sets = ",".join(f"{c}=${i + 1}" for i, c in enumerate(cols))
            await con.execute(f"UPDATE tasks SET {sets} WHERE task_id=${len(cols) + 1}",
                              *[row_d[c] for c in cols], task_id)
            cmd = None
            if command is not None:
                cmd = CommandRecord(new_id("cmd-", 12), cur.source_id, task_id, command.action,
                                    dict(command.params), now)
                await con.execute(
                    "INSERT INTO commands(command_id, source_id, task_id, action, params, created_at) "
                    "VALUES ($1,$2,$3,$4,$5,$6)",
                    cmd.command_id, cmd.source_id, cmd.task_id, cmd.action, json.dumps(cmd.params), now,
                )
                # delivered to every LISTENing process at commit (and never if this rolls back)
                await con.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, cmd.source_id)
            if event is not None:
                await con.execute("INSERT INTO events(task_id, source_id, time, level, stage, message) "
                                  "VALUES ($1,$2,$3,$4,$5,$6)", task_id, cur.source_id, now, *event)
            return new, cmd

        def wake(out: tuple[TaskRecord, CommandRecord | None]) -> None:
            if out[1] is not None:
                self._wakeups.notify(out[1].source_id)

        return await self._write(go, after=wake)

    async def due_scheduled_tasks(self, now: float) -> list[TaskRecord]:
        rows = await self._p().fetch(
            f"SELECT {_TASK_COLS} FROM tasks WHERE state=$1 AND scheduled_at<=$2 "
            'ORDER BY scheduled_at, task_id COLLATE "C"', _SCHEDULED, now)
        return [_task_from_row(r) for r in rows]

    async def next_scheduled_time(self) -> float | None:
        return await self._p().fetchval("SELECT MIN(scheduled_at) FROM tasks WHERE state=$1", _SCHEDULED)

    # -- commands

    def command_waiter(self, source_id: str) -> CommandWaiter:
        return self._wakeups.waiter(source_id)

    def wake_all(self) -> None:
        self._wakeups.notify_all()

    async def take_commands(
        self, source_id: str, now: float, visibility_seconds: float, limit: int = 20,
    ) -> tuple[list[CommandRecord], float | None]:
        # The earliest in-flight delivery is read before the marks (the commands delivered now are
        # not "in flight" in this answer, as in sqlite.py). SKIP LOCKED: a command another poll is
        # marking right now is not handed out twice.
        cutoff = now - visibility_seconds

        async def go(con: Any) -> tuple[list[Any], float | None]:
            in_flight = await con.fetchval(
                "SELECT MIN(delivered_at) FROM commands WHERE source_id=$1 AND acked_at IS NULL AND delivered_at>$2",
                source_id, cutoff)
            rows = await con.fetch(
                "WITH due AS (SELECT seq FROM commands WHERE source_id=$1 AND acked_at IS NULL "
                "AND (delivered_at IS NULL OR delivered_at<=$2) ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED) "
                "UPDATE commands c SET delivered_at=$4, deliveries=c.deliveries+1 FROM due "
                "WHERE c.seq=due.seq RETURNING c.*",
                source_id, cutoff, limit, now)
            return sorted(rows, key=lambda r: r["seq"]), in_flight

        rows, in_flight = await self._write(go, durable=False)
        return [_command_from_row(r) for r in rows], (in_flight + visibility_seconds if in_flight is not None else None)

    async def ack_command(
        self, source_id: str, command_id: str, result: str, message: str, now: float,
    ) -> tuple[CommandRecord | None, bool]:
        async def go(con: Any) -> tuple[CommandRecord | None, bool]:
            row = await con.fetchrow("UPDATE commands SET acked_at=$1, result=$2, message=$3 "
                                     "WHERE command_id=$4 AND source_id=$5 AND acked_at IS NULL RETURNING *",
                                     now, result, message, command_id, source_id)
            if row is not None:
                return _command_from_row(row), True
            row = await con.fetchrow("SELECT * FROM commands WHERE command_id=$1 AND source_id=$2",
                                     command_id, source_id)
            return (_command_from_row(row) if row else None), False

        return await self._write(go)

    async def list_commands(self, task_id: str) -> list[CommandRecord]:
        rows = await self._p().fetch("SELECT * FROM commands WHERE task_id=$1 ORDER BY seq", task_id)
        return [_command_from_row(r) for r in rows]

    async def count_pending_commands(self) -> int:
        return int(await self._p().fetchval("SELECT COUNT(*) FROM commands WHERE acked_at IS NULL"))

    # -- events

    async def add_event(self, task_id: str, source_id: str, level: str, stage: str, message: str,
                        now: float) -> EventRecord:
        async def go(con: Any) -> int:
            return await con.fetchval("INSERT INTO events(task_id, source_id, time, level, stage, message) "
                                      "VALUES ($1,$2,$3,$4,$5,$6) RETURNING event_id",
                                      task_id, source_id, now, level, stage, message)

        eid = await self._write(go)
        return EventRecord(int(eid), task_id, source_id, now, level, stage, message)

    async def list_events(self, task_id: str, *, after_id: int = 0, limit: int = 100) -> list[EventRecord]:
        check_int64("after_id", after_id)
        check_int64("limit", limit, minimum=0)
        rows = await self._p().fetch(
            "SELECT event_id, task_id, source_id, time, level, stage, message FROM events "
            "WHERE task_id=$1 AND event_id>$2 ORDER BY event_id LIMIT $3", task_id, after_id, limit)
        return [EventRecord(**dict(r)) for r in rows]

    async def task_state_counts(self) -> dict[str, int]:
        rows = await self._p().fetch("SELECT state, COUNT(*) AS n FROM tasks GROUP BY state")
        return {r["state"]: int(r["n"]) for r in rows}
