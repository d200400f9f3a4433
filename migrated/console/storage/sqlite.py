"""The SQLite backend of :class:`~migrated.console.storage.interface.Storage` (the embedded default).

WAL journal, ``synchronous=FULL`` (a commit is durable when it returns). Writes
go through one connection in one dedicated thread, so the event loop never
blocks on ``fsync``; reads use a second, read-only connection right on the
event loop (a WAL reader never waits for the writer, and a read costs far less
than a hop to another thread and back). Heartbeats arrive here in batches from
``heartbeats.BufferedHeartbeats`` above; the long-poll wake-up is
``wakeup.LocalWakeups`` (one console process per file).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

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
from .wakeup import LocalWakeups

T = TypeVar("T")

_SCHEDULED = TaskState.SCHEDULED.value

# ---------------------------------------------------------------- schema

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
    secret_id TEXT PRIMARY KEY, secret_key TEXT NOT NULL, role TEXT NOT NULL, name TEXT NOT NULL,
    created_at REAL NOT NULL, revoked_at REAL
);
CREATE TABLE IF NOT EXISTS sources (
    source_id TEXT PRIMARY KEY, machine_id TEXT NOT NULL UNIQUE, hostname TEXT NOT NULL,
    os_name TEXT NOT NULL, agent_version TEXT NOT NULL, disks TEXT NOT NULL,
    registered_by TEXT NOT NULL, registered_at REAL NOT NULL, last_heartbeat REAL
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, source_id TEXT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL,
    region TEXT NOT NULL, target_type TEXT NOT NULL, image_name TEXT NOT NULL,
    target_instance_id TEXT NOT NULL, target_ssh TEXT NOT NULL, target_host_key TEXT NOT NULL,
    bandwidth_limit_kbps INTEGER NOT NULL, checksum INTEGER NOT NULL, disk_mapping TEXT NOT NULL,
    scheduled_at REAL, state TEXT NOT NULL, stage TEXT NOT NULL, message TEXT NOT NULL,
    progress TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    image_id TEXT NOT NULL DEFAULT '', image_state TEXT NOT NULL DEFAULT '',
    continuous TEXT NOT NULL DEFAULT '',
    ignore_checks TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS tasks_source ON tasks(source_id, state);
CREATE INDEX IF NOT EXISTS tasks_sched ON tasks(state, scheduled_at);
CREATE TABLE IF NOT EXISTS commands (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, command_id TEXT NOT NULL UNIQUE, source_id TEXT NOT NULL,
    task_id TEXT NOT NULL, action TEXT NOT NULL, params TEXT NOT NULL, created_at REAL NOT NULL,
    delivered_at REAL, deliveries INTEGER NOT NULL DEFAULT 0, acked_at REAL,
    result TEXT NOT NULL DEFAULT '', message TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS commands_pending ON commands(source_id, acked_at, seq);
CREATE TABLE IF NOT EXISTS events (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, source_id TEXT NOT NULL,
    time REAL NOT NULL, level TEXT NOT NULL, stage TEXT NOT NULL, message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_task ON events(task_id, event_id);
"""

SCHEMA_VERSION = "4"

# schema upgrades, numbered steps applied in order to an older file at open (one transaction):
# version -> the statements that lead to the next; a newer file than SCHEMA_VERSION is refused
# (SchemaTooNew). A change to _SCHEMA gets a step here and SCHEMA_VERSION one up.
_MIGRATIONS = {
    "1": ("ALTER TABLE tasks ADD COLUMN image_id TEXT NOT NULL DEFAULT ''",
          "ALTER TABLE tasks ADD COLUMN image_state TEXT NOT NULL DEFAULT ''"),
    "2": ("ALTER TABLE tasks ADD COLUMN continuous TEXT NOT NULL DEFAULT ''",),
    "3": ("ALTER TABLE tasks ADD COLUMN ignore_checks TEXT NOT NULL DEFAULT ''",),
}

_TASK_COLUMNS = (
    "task_id", "source_id", "name", "description", "region", "target_type", "image_name",
    "target_instance_id", "target_ssh", "target_host_key", "bandwidth_limit_kbps", "checksum",
    "disk_mapping", "scheduled_at", "state", "stage", "message", "progress", "created_at", "updated_at",
    "image_id", "image_state", "continuous", "ignore_checks",
)


def _task_from_row(row: sqlite3.Row) -> TaskRecord:
    d = dict(row)
    d["checksum"] = bool(d["checksum"])
    d["disk_mapping"] = tuple((a, b) for a, b in json.loads(d["disk_mapping"]))
    d["progress"] = json.loads(d["progress"])
    d["continuous"] = json.loads(d["continuous"]) if d.get("continuous") else None
    d["ignore_checks"] = tuple(json.loads(d["ignore_checks"])) if d.get("ignore_checks") else ()
    return TaskRecord(**d)


def _task_to_row(t: TaskRecord) -> dict[str, Any]:
    return {
        "task_id": t.task_id, "source_id": t.source_id, "name": t.name, "description": t.description,
        "region": t.region, "target_type": t.target_type, "image_name": t.image_name,
        "target_instance_id": t.target_instance_id, "target_ssh": t.target_ssh,
        "target_host_key": t.target_host_key,
        "bandwidth_limit_kbps": check_int64("bandwidth_limit_kbps", t.bandwidth_limit_kbps),
        "checksum": int(t.checksum), "disk_mapping": json.dumps([list(p) for p in t.disk_mapping]),
        "scheduled_at": t.scheduled_at, "state": t.state, "stage": t.stage, "message": t.message,
        "progress": json.dumps(t.progress), "created_at": t.created_at, "updated_at": t.updated_at,
        "image_id": t.image_id, "image_state": t.image_state,
        "continuous": json.dumps(t.continuous) if t.continuous is not None else "",
        "ignore_checks": json.dumps(list(t.ignore_checks)) if t.ignore_checks else "",
    }


def _source_from_row(row: sqlite3.Row) -> SourceRecord:
    d = dict(row)
    d["disks"] = tuple(
        DiskInfo(x["name"], x["size_bytes"], tuple(x.get("mount_points", ())), bool(x.get("is_system")))
        for x in json.loads(d["disks"])
    )
    return SourceRecord(**d)


def _disks_json(disks: tuple[DiskInfo, ...]) -> str:
    return json.dumps([
        {"name": d.name, "size_bytes": d.size_bytes, "mount_points": list(d.mount_points), "is_system": d.is_system}
        for d in disks
    ])


def _command_from_row(row: sqlite3.Row) -> CommandRecord:
    d = dict(row)
    d.pop("seq")
    d["params"] = json.loads(d["params"])
    return CommandRecord(**d)


class SQLiteBackend(Storage):
    """One SQLite file, written by one console process."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None  # the writer: used only in the storage thread
        self._rdb: sqlite3.Connection | None = None  # the reader: used only on the event loop thread
        self._wakeups = LocalWakeups()
        self._delivered: dict[str, tuple[float, int]] = {}  # command id -> (last delivery, deliveries), unacked
        # called with the seconds each storage-thread call took, queueing included (for /metrics)
        self.observe_write: Callable[[float], None] | None = None

    # -- plumbing

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        new = not self.path.exists()
        if new:
            # the file holds secret keys: create it private
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.row_factory = sqlite3.Row
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"{self.path}: cannot use WAL journal (got {mode})")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(_SCHEMA)
        row = db.execute("SELECT v FROM meta WHERE k='schema'").fetchone()
        self.schema_upgraded_from = None
        if row is not None and row[0].isdigit() and int(row[0]) > int(SCHEMA_VERSION):
            db.close()
            raise SchemaTooNew(f"{self.path} is on schema version {row[0]}, this console knows up to "
                               f"{SCHEMA_VERSION}: run the newer console (or restore the file)", path="storage.path")
        if row is None:
            db.execute("INSERT INTO meta(k, v) VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif row[0] in _MIGRATIONS:
            self.schema_upgraded_from = int(row[0])
            version = row[0]
            db.execute("BEGIN IMMEDIATE")  # one transaction: an upgrade lands whole or not at all
            try:
                while version in _MIGRATIONS:
                    for stmt in _MIGRATIONS[version]:
                        db.execute(stmt)
                    version = str(int(version) + 1)
                db.execute("UPDATE meta SET v=? WHERE k='schema'", (version,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            row = (version,)
        if row is not None and row[0] != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"{self.path}: schema version {row[0]}, this console knows {SCHEMA_VERSION}")
        self.schema_version = int(SCHEMA_VERSION)
        self._db = db

    def _reader(self) -> sqlite3.Connection:
        if self._rdb is None:
            raise RuntimeError("storage is not open")
        return self._rdb

    def _writer(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("storage is not open")
        t0 = time.monotonic()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            if self.observe_write is not None:
                self.observe_write(time.monotonic() - t0)

    @contextlib.contextmanager
    def _tx(self):  # runs in the storage thread
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-db")
        await self._run(self._connect)
        # WAL readers never wait for the writer's fsync: reads run right on the event loop,
        # which saves a thread hop (and a GIL hand-over) on every request
        rdb = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        rdb.row_factory = sqlite3.Row
        rdb.execute("PRAGMA query_only=ON")
        self._rdb = rdb

    async def close(self) -> None:
        if self._executor is not None:
            await self._run(self._close_db)
            if self._rdb is not None:
                self._rdb.close()
                self._rdb = None
            self._executor.shutdown(wait=True)
            self._executor = None

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- keys

    async def create_key(self, role: str, name: str, now: float) -> KeyRecord:
        rec = KeyRecord(new_secret_id(), new_secret_key(), role, name, now)

        def go() -> None:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO keys(secret_id, secret_key, role, name, created_at) VALUES (?,?,?,?,?)",
                    (rec.secret_id, rec.secret_key, rec.role, rec.name, rec.created_at),
                )

        await self._run(go)
        return rec

    @staticmethod
    def _get_key(db: sqlite3.Connection, secret_id: str) -> KeyRecord | None:
        row = db.execute("SELECT * FROM keys WHERE secret_id=?", (secret_id,)).fetchone()
        return KeyRecord(**dict(row)) if row else None

    async def get_key(self, secret_id: str) -> KeyRecord | None:
        return self._get_key(self._reader(), secret_id)

    async def list_keys(self) -> list[KeyRecord]:
        def go() -> list[KeyRecord]:
            db = self._reader()
            return [KeyRecord(**dict(r)) for r in db.execute("SELECT * FROM keys ORDER BY created_at")]

        return go()

    async def revoke_key(self, secret_id: str, now: float) -> KeyRecord | None:
        def go() -> KeyRecord | None:
            with self._tx() as db:
                db.execute("UPDATE keys SET revoked_at=? WHERE secret_id=? AND revoked_at IS NULL", (now, secret_id))
            return self._get_key(self._writer(), secret_id)

        return await self._run(go)

    # -- sources

    async def register_source(
        self, *, machine_id: str, hostname: str, os_name: str, agent_version: str,
        disks: tuple[DiskInfo, ...], registered_by: str, now: float,
    ) -> tuple[SourceRecord, bool]:
        def go() -> tuple[SourceRecord, bool]:
            with self._tx() as db:
                row = db.execute("SELECT * FROM sources WHERE machine_id=?", (machine_id,)).fetchone()
                if row is not None:
                    old = _source_from_row(row)
                    old_key = self._get_key(db, old.registered_by)
                    if old.registered_by != registered_by and old_key is not None and old_key.active:
                        raise StorageConflict(
                            f"machine {machine_id} is registered as {old.source_id} by another key that is "
                            "still active; revoke that key first to move the source to this one"
                        )
                    db.execute(
                        "UPDATE sources SET hostname=?, os_name=?, agent_version=?, disks=?, registered_by=?, "
                        "last_heartbeat=? WHERE source_id=?",
                        (hostname, os_name, agent_version, _disks_json(disks), registered_by, now, old.source_id),
                    )
                    created = False
                    source_id = old.source_id
                else:
                    source_id = new_id("src-")
                    db.execute(
                        "INSERT INTO sources(source_id, machine_id, hostname, os_name, agent_version, disks, "
                        "registered_by, registered_at, last_heartbeat) VALUES (?,?,?,?,?,?,?,?,?)",
                        (source_id, machine_id, hostname, os_name, agent_version, _disks_json(disks),
                         registered_by, now, now),
                    )
                    created = True
                row = db.execute("SELECT * FROM sources WHERE source_id=?", (source_id,)).fetchone()
            return _source_from_row(row), created

        return await self._run(go)

    async def get_source(self, source_id: str) -> SourceRecord | None:
        def go() -> SourceRecord | None:
            db = self._reader()
            row = db.execute("SELECT * FROM sources WHERE source_id=?", (source_id,)).fetchone()
            return _source_from_row(row) if row else None

        return go()

    async def list_sources(self) -> list[SourceRecord]:
        def go() -> list[SourceRecord]:
            db = self._reader()
            rows = db.execute("SELECT * FROM sources ORDER BY registered_at").fetchall()
            return [_source_from_row(r) for r in rows]

        return go()

    async def remove_source(self, source_id: str) -> bool:
        def go() -> bool:
            with self._tx() as db:
                n = db.execute("DELETE FROM sources WHERE source_id=?", (source_id,)).rowcount
                db.execute("UPDATE commands SET acked_at=?, result='error', message='source removed' "
                           "WHERE source_id=? AND acked_at IS NULL", (time.time(), source_id))
            return n > 0

        return await self._run(go)

    async def source_exists(self, source_id: str) -> bool:
        return self._reader().execute("SELECT 1 FROM sources WHERE source_id=?", (source_id,)).fetchone() is not None

    async def write_heartbeats(self, beats: Mapping[str, Beat]) -> None:
        if not beats:
            return
        # one statement, not executemany: every sqlite3 step releases and re-takes the GIL, and with a
        # busy event loop each re-take can wait a whole switch interval (thousands of rows: seconds)
        batch = json.dumps([[sid, t, v] for sid, (t, v) in beats.items()])

        def go() -> None:
            with self._tx() as db:
                db.execute(
                    "UPDATE sources SET last_heartbeat=json_extract(j.value, '$[1]'), "
                    "agent_version=json_extract(j.value, '$[2]') "
                    "FROM json_each(?) AS j WHERE sources.source_id=json_extract(j.value, '$[0]') "
                    "AND (sources.last_heartbeat IS NULL OR sources.last_heartbeat<=json_extract(j.value, '$[1]'))",
                    (batch,),
                )

        await self._run(go)

    # -- tasks

    async def create_task(self, task: TaskRecord, *, unfinished_states: Iterable[str]) -> TaskRecord:
        states = list(unfinished_states)

        def go() -> TaskRecord:
            t = task
            with self._tx() as db:
                marks = ",".join("?" * len(states))
                row = db.execute(
                    f"SELECT task_id, state FROM tasks WHERE source_id=? AND state IN ({marks})",
                    (t.source_id, *states),
                ).fetchone()
                if row is not None:
                    raise StorageConflict(
                        f"source {t.source_id} already has unfinished task {row['task_id']} ({row['state']}); "
                        "finish or delete it first"
                    )
                if t.image_name:
                    taken = db.execute("SELECT 1 FROM tasks WHERE image_name=? AND region=?",
                                       (t.image_name, t.region)).fetchone()
                    if taken:
                        t = replace(t, image_name=f"{t.image_name}-{t.task_id}")
                row_d = _task_to_row(t)
                db.execute(
                    f"INSERT INTO tasks({','.join(_TASK_COLUMNS)}) VALUES ({','.join('?' * len(_TASK_COLUMNS))})",
                    [row_d[c] for c in _TASK_COLUMNS],
                )
            return t

        return await self._run(go)

    @staticmethod
    def _get_task(db: sqlite3.Connection, task_id: str) -> TaskRecord | None:
        row = db.execute("SELECT * FROM tasks WHERE task_id=?", (task_id,)).fetchone()
        return _task_from_row(row) if row else None

    async def get_task(self, task_id: str) -> TaskRecord | None:
        return self._get_task(self._reader(), task_id)

    async def list_tasks(
        self, *, source_id: str | None = None, states: Iterable[str] | None = None,
        task_ids: Iterable[str] | None = None, limit: int = 100, offset: int = 0,
    ) -> tuple[list[TaskRecord], int]:
        check_int64("limit", limit, minimum=0)
        check_int64("offset", offset, minimum=0)
        where: list[str] = []
        args: list[Any] = []
        if source_id is not None:
            where.append("source_id=?")
            args.append(source_id)
        if states is not None:
            st = list(states)
            where.append(f"state IN ({','.join('?' * len(st))})")
            args.extend(st)
        if task_ids is not None:
            ids = list(task_ids)
            where.append(f"task_id IN ({','.join('?' * len(ids))})")
            args.extend(ids)
        clause = ("WHERE " + " AND ".join(where)) if where else ""

        def go() -> tuple[list[TaskRecord], int]:
            db = self._reader()
            total = db.execute(f"SELECT COUNT(*) FROM tasks {clause}", args).fetchone()[0]
            rows = db.execute(
                f"SELECT * FROM tasks {clause} ORDER BY created_at DESC, task_id LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
            return [_task_from_row(r) for r in rows], total

        return go()

    async def update_task(
        self, task_id: str, *, expect_state: str, changes: dict[str, Any],
        command: NewCommand | None = None, event: tuple[str, str, str] | None = None, now: float,
    ) -> tuple[TaskRecord, CommandRecord | None]:
        bad = set(changes) - set(_TASK_COLUMNS) | ({"task_id", "source_id"} & set(changes))
        if bad:
            raise ValueError(f"cannot change task columns {sorted(bad)}")

        def go() -> tuple[TaskRecord, CommandRecord | None]:
            with self._tx() as db:
                cur = self._get_task(db, task_id)
                if cur is None:
                    raise StorageConflict(f"task {task_id} does not exist")
                if cur.state != expect_state:
                    raise StorageConflict(f"task {task_id} is {cur.state}, not {expect_state}")
                new = replace(cur, **changes, updated_at=now)
                row_d = _task_to_row(new)
                cols = [c for c in _TASK_COLUMNS if c != "task_id"]
                db.execute(f"UPDATE tasks SET {','.join(c + '=?' for c in cols)} WHERE task_id=?",
                           [row_d[c] for c in cols] + [task_id])
                cmd = None
                if command is not None:
                    cmd = CommandRecord(new_id("cmd-", 12), cur.source_id, task_id, command.action,
                                        dict(command.params), now)
                    db.execute(
                        "INSERT INTO commands(command_id, source_id, task_id, action, params, created_at) "
                        "VALUES (?,?,?,?,?,?)",
                        (cmd.command_id, cmd.source_id, cmd.task_id, cmd.action, json.dumps(cmd.params), now),
                    )
                if event is not None:
                    db.execute("INSERT INTO events(task_id, source_id, time, level, stage, message) "
                               "VALUES (?,?,?,?,?,?)", (task_id, cur.source_id, now, *event))
            if cmd is not None:
                # wake the source's polls from here, right after the commit: this runs even when
                # the request that queued the command was cancelled (client gone) meanwhile
                loop.call_soon_threadsafe(self._wakeups.notify, cur.source_id)
            return new, cmd

        loop = asyncio.get_running_loop()
        return await self._run(go)

    async def due_scheduled_tasks(self, now: float) -> list[TaskRecord]:
        def go() -> list[TaskRecord]:
            db = self._reader()
            rows = db.execute(
                "SELECT * FROM tasks WHERE state=? AND scheduled_at<=? ORDER BY scheduled_at", (_SCHEDULED, now)
            ).fetchall()
            return [_task_from_row(r) for r in rows]

        return go()

    async def next_scheduled_time(self) -> float | None:
        def go() -> float | None:
            db = self._reader()
            return db.execute("SELECT MIN(scheduled_at) FROM tasks WHERE state=?", (_SCHEDULED,)).fetchone()[0]

        return go()

    # -- commands

    def command_waiter(self, source_id: str) -> CommandWaiter:
        return self._wakeups.waiter(source_id)

    def wake_all(self) -> None:
        self._wakeups.notify_all()

    async def take_commands(
        self, source_id: str, now: float, visibility_seconds: float, limit: int = 20,
    ) -> tuple[list[CommandRecord], float | None]:
        # Delivery marks live in memory, not in the file: marking costs no write (no fsync on the
        # delivery path), and losing them in a crash only means that every unacked command is
        # delivered again at once after the restart, which the agent handles (it ignores IDs it
        # has applied). Acks, which must never be lost, are durable writes.
        cutoff = now - visibility_seconds
        rows = self._reader().execute(
            "SELECT * FROM commands WHERE source_id=? AND acked_at IS NULL ORDER BY seq", (source_id,)
        ).fetchall()
        out: list[CommandRecord] = []
        next_due: float | None = None
        for r in rows:
            cid = r["command_id"]
            when, count = self._delivered.get(cid, (None, 0))
            if when is not None and when > cutoff:
                due = when + visibility_seconds
                next_due = due if next_due is None else min(next_due, due)
                continue
            if len(out) >= limit:
                continue
            self._delivered[cid] = (now, count + 1)
            out.append(replace(_command_from_row(r), delivered_at=now, deliveries=count + 1))
        return out, next_due

    async def ack_command(
        self, source_id: str, command_id: str, result: str, message: str, now: float,
    ) -> tuple[CommandRecord | None, bool]:
        def go() -> tuple[CommandRecord | None, bool]:
            with self._tx() as db:
                row = db.execute("SELECT * FROM commands WHERE command_id=? AND source_id=?",
                                 (command_id, source_id)).fetchone()
                if row is None:
                    return None, False
                if row["acked_at"] is not None:
                    return _command_from_row(row), False
                db.execute("UPDATE commands SET acked_at=?, result=?, message=? WHERE command_id=?",
                           (now, result, message, command_id))
                row = db.execute("SELECT * FROM commands WHERE command_id=?", (command_id,)).fetchone()
            return _command_from_row(row), True

        rec, first = await self._run(go)
        if rec is not None:
            self._delivered.pop(command_id, None)
        return rec, first

    async def list_commands(self, task_id: str) -> list[CommandRecord]:
        def go() -> list[CommandRecord]:
            db = self._reader()
            rows = db.execute("SELECT * FROM commands WHERE task_id=? ORDER BY seq", (task_id,)).fetchall()
            return [_command_from_row(r) for r in rows]

        return go()

    async def count_pending_commands(self) -> int:
        def go() -> int:
            db = self._reader()
            return db.execute("SELECT COUNT(*) FROM commands WHERE acked_at IS NULL").fetchone()[0]

        return go()

    # -- events

    async def add_event(self, task_id: str, source_id: str, level: str, stage: str, message: str,
                        now: float) -> EventRecord:
        def go() -> EventRecord:
            with self._tx() as db:
                cur = db.execute("INSERT INTO events(task_id, source_id, time, level, stage, message) "
                                 "VALUES (?,?,?,?,?,?)", (task_id, source_id, now, level, stage, message))
                eid = cur.lastrowid
            return EventRecord(int(eid or 0), task_id, source_id, now, level, stage, message)

        return await self._run(go)

    async def list_events(self, task_id: str, *, after_id: int = 0, limit: int = 100) -> list[EventRecord]:
        check_int64("after_id", after_id)
        check_int64("limit", limit, minimum=0)

        def go() -> list[EventRecord]:
            db = self._reader()
            rows = db.execute(
                "SELECT * FROM events WHERE task_id=? AND event_id>? ORDER BY event_id LIMIT ?",
                (task_id, after_id, limit),
            ).fetchall()
            return [EventRecord(**dict(r)) for r in rows]

        return go()

    async def task_state_counts(self) -> dict[str, int]:
        def go() -> dict[str, int]:
            db = self._reader()
            return {r[0]: r[1] for r in db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state")}

        return go()
