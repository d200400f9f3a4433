"""The Storage contract, run against every backend in ``BACKENDS`` (SQLite on a real file, and a
real PostgreSQL 15 server from tests/pg.py with a database of its own per test), each with
heartbeat buffering above it as the console runs it, and bare where the test is about the
backend's own part. A new backend adds its name to ``BACKENDS`` and its options to
``backend_options`` and must pass the same tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

import pytest

from migrated.console import storage as storage_pkg
from migrated.console.config import StorageConfig, parse_config
from migrated.console.storage import (
    INT64_MAX,
    SCHEMA_VERSION,
    DiskInfo,
    NewCommand,
    OutOfRange,
    PostgreSQLBackend,
    SchemaTooNew,
    SQLiteBackend,
    SQLiteStorage,
    Storage,
    StorageConflict,
    TaskRecord,
    create_storage,
)
from migrated.errors import ConfigError
from tests.pg import PgServer, pg_server  # noqa: F401 - the session fixture

BACKENDS = ["sqlite", "postgresql"]

_PG_DATABASES: dict[Path, tuple[PgServer, str]] = {}  # a test's tmp_path -> its server and database


def backend_options(name: str, tmp_path: Path) -> dict[str, Any]:
    """What ``create_storage`` needs for the backend ``name`` in a test: the same each call, so a
    second call reopens what the first one wrote."""
    if name == "postgresql":
        server, db = _PG_DATABASES[tmp_path]
        return {"dsn": server.dsn(db), "password_file": str(server.password_file)}
    return {"sqlite": {"path": tmp_path / "c.db"}}[name]


def open_again(name: str, tmp_path: Path, *, flush_seconds: float = 0.1) -> Storage:
    return create_storage(name, heartbeat_flush_seconds=flush_seconds, **backend_options(name, tmp_path))


@pytest.fixture(params=BACKENDS)
def backend_name(request, tmp_path) -> str:
    if request.param == "postgresql":  # the server starts on first use; each test gets a database
        server = request.getfixturevalue("pg_server")
        _PG_DATABASES[tmp_path] = (server, server.create_database())
    return request.param


@pytest.fixture
async def store(backend_name, tmp_path):
    s = open_again(backend_name, tmp_path)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def bare(backend_name, tmp_path):
    """The backend alone: no heartbeat buffer above it."""
    s = storage_pkg.BACKENDS[backend_name](**backend_options(backend_name, tmp_path))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def task(tid: str, source: str, state: str = "created", image: str = "") -> TaskRecord:
    return TaskRecord(task_id=tid, source_id=source, name=tid, description="", region="ap-guangzhou",
                      target_type="image" if image else "instance", image_name=image, target_instance_id="",
                      target_ssh="root@h", target_host_key="ssh-ed25519 AAAA", bandwidth_limit_kbps=0,
                      checksum=False, disk_mapping=(("/dev/vda", "/dev/vda"),), scheduled_at=None, state=state)


async def source(store, key_id: str, machine: str = "m1") -> str:
    s, created = await store.register_source(machine_id=machine, hostname="h", os_name="", agent_version="1",
                                             disks=(DiskInfo("/dev/vda", 10, ("/",), True),),
                                             registered_by=key_id, now=1.0)
    assert created
    return s.source_id


async def test_sqlite_file_is_private_and_wal(tmp_path):
    store = SQLiteStorage(tmp_path / "c.db", heartbeat_flush_seconds=0.1)
    await store.open()
    try:
        assert os.stat(tmp_path / "c.db").st_mode & 0o077 == 0
        assert (tmp_path / "c.db-wal").exists()
    finally:
        await store.close()


async def test_no_lost_wakeup_and_visibility(store):
    k = await store.create_key("agent", "a", 1.0)
    sid = await source(store, k.secret_id)
    await store.create_task(task("t1", sid), unfinished_states=["created"])
    waiter = store.command_waiter(sid)  # taken before the command exists
    _, cmd = await store.update_task("t1", expect_state="created", changes={"state": "starting"},
                                     command=NewCommand("start"), now=10.0)
    assert await asyncio.wait_for(waiter.wait(5), 6) is True
    got, nxt = await store.take_commands(sid, now=10.0, visibility_seconds=30)
    assert [c.command_id for c in got] == [cmd.command_id] and nxt is None
    got, nxt = await store.take_commands(sid, now=20.0, visibility_seconds=30)
    assert got == [] and nxt == 40.0, "in flight: due again at delivery + visibility"
    got, _ = await store.take_commands(sid, now=41.0, visibility_seconds=30)
    assert [(c.command_id, c.deliveries) for c in got] == [(cmd.command_id, 2)]
    _, first = await store.ack_command(sid, cmd.command_id, "ok", "", 42.0)
    again, first2 = await store.ack_command(sid, cmd.command_id, "error", "late", 43.0)
    assert (first, first2, again.result) == (True, False, "ok")
    assert (await store.take_commands(sid, now=100.0, visibility_seconds=30)) == ([], None)
    assert await store.command_waiter(sid).wait(0.05) is False


async def test_compare_and_set_and_task_rules(store):
    k = await store.create_key("agent", "a", 1.0)
    sid = await source(store, k.secret_id)
    await store.create_task(task("t1", sid, image="img"), unfinished_states=["created"])
    with pytest.raises(StorageConflict, match="t1"):
        await store.create_task(task("t2", sid), unfinished_states=["created"])
    await store.update_task("t1", expect_state="created", changes={"state": "deleted"}, now=2.0)
    with pytest.raises(StorageConflict):
        await store.update_task("t1", expect_state="created", changes={"state": "starting"}, now=3.0)
    t3 = await store.create_task(task("t3", sid, image="img"), unfinished_states=["created"])
    assert t3.image_name == "img-t3"
    page, total = await store.list_tasks(source_id=sid, states=["deleted"])
    assert total == 1 and page[0].task_id == "t1"


async def test_source_ownership_and_heartbeats_survive_reopen(store, backend_name, tmp_path):
    a = await store.create_key("agent", "a", 1.0)
    b = await store.create_key("agent", "b", 1.0)
    sid = await source(store, a.secret_id)
    with pytest.raises(StorageConflict):
        await store.register_source(machine_id="m1", hostname="h", os_name="", agent_version="1", disks=(),
                                    registered_by=b.secret_id, now=2.0)
    await store.revoke_key(a.secret_id, 3.0)
    s, created = await store.register_source(machine_id="m1", hostname="h2", os_name="", agent_version="2",
                                             disks=(), registered_by=b.secret_id, now=4.0)
    assert (s.source_id, created, s.registered_by) == (sid, False, b.secret_id)
    assert await store.record_heartbeat(sid, "3", 50.0) is True
    assert await store.record_heartbeat("src-none", "3", 50.0) is False
    assert (await store.get_source(sid)).last_heartbeat == 50.0
    await store.close()
    reopened = open_again(backend_name, tmp_path)
    await reopened.open()
    try:
        s = await reopened.get_source(sid)
        assert (s.last_heartbeat, s.agent_version, s.hostname) == (50.0, "3", "h2")
    finally:
        await reopened.close()
    await store.open()  # the fixture closes it again


async def test_paging_schedule_events_and_counts(store):
    k = await store.create_key("agent", "a", 1.0)
    sids = [await source(store, k.secret_id, machine=f"m{i}") for i in range(3)]
    for i, sid in enumerate(sids):
        await store.create_task(replace(task(f"t{i}", sid), created_at=float(i)), unfinished_states=["created"])
    page, total = await store.list_tasks(limit=2)
    assert ([t.task_id for t in page], total) == (["t2", "t1"], 3), "newest first"
    page, total = await store.list_tasks(limit=2, offset=2)
    assert ([t.task_id for t in page], total) == (["t0"], 3)
    page, total = await store.list_tasks(task_ids=["t0", "t2", "nope"])
    assert sorted(t.task_id for t in page) == ["t0", "t2"] and total == 2
    # scheduled starts are rows: due ones earliest first, and the next time to wake for
    assert await store.next_scheduled_time() is None
    for tid, at in (("t0", 30.0), ("t1", 20.0)):
        await store.update_task(tid, expect_state="created", changes={"state": "scheduled", "scheduled_at": at},
                                now=2.0)
    assert await store.next_scheduled_time() == 20.0
    assert [t.task_id for t in await store.due_scheduled_tasks(25.0)] == ["t1"]
    assert [t.task_id for t in await store.due_scheduled_tasks(30.0)] == ["t1", "t0"]
    assert await store.task_state_counts() == {"created": 1, "scheduled": 2}
    # events: oldest first, after an id, a limit
    ids = [(await store.add_event("t2", sids[2], "info", "", f"e{i}", 3.0 + i)).event_id for i in range(4)]
    assert [e.message for e in await store.list_events("t2")] == ["e0", "e1", "e2", "e3"]
    assert [e.message for e in await store.list_events("t2", after_id=ids[1], limit=1)] == ["e2"]
    assert await store.list_events("t0") == []


async def test_removing_a_source_settles_its_commands_and_wake_all(store):
    k = await store.create_key("agent", "a", 1.0)
    sid = await source(store, k.secret_id)
    await store.create_task(task("t1", sid), unfinished_states=["created"])
    _, cmd = await store.update_task("t1", expect_state="created", changes={"state": "starting"},
                                     command=NewCommand("start", {"X": 1}), now=2.0)
    assert await store.count_pending_commands() == 1
    assert [(c.action, c.params) for c in await store.list_commands("t1")] == [("start", {"X": 1})]
    waiters = [store.command_waiter(sid), store.command_waiter("src-other")]
    store.wake_all()
    assert [await w.wait(5) for w in waiters] == [True, True]
    assert await store.remove_source(sid) is True and await store.remove_source(sid) is False
    assert await store.count_pending_commands() == 0
    (c,) = await store.list_commands("t1")
    assert (c.command_id, c.result, c.message) == (cmd.command_id, "error", "source removed")
    assert await store.take_commands(sid, now=3.0, visibility_seconds=30) == ([], None)


# ---------------------------------------------------------------- integers past 64 bits


async def test_out_of_range_integers_are_refused_by_name(store):
    """Offset 2**63 used to reach SQLite and come back as OverflowError (an InternalError)."""
    k = await store.create_key("agent", "a", 1.0)
    sid = await source(store, k.secret_id)
    for kwargs, name in [({"offset": 2**63}, "offset"), ({"limit": 2**63}, "limit"), ({"offset": -1}, "offset"),
                         ({"limit": -1}, "limit"), ({"offset": 10**400}, "offset")]:
        with pytest.raises(OutOfRange, match=f"^{name} must be between"):
            await store.list_tasks(**kwargs)
    with pytest.raises(OutOfRange, match=r"got a 16610-bit number$"):  # no 5,000-digit message
        await store.list_tasks(offset=10**5000)
    assert await store.list_tasks(offset=INT64_MAX, limit=INT64_MAX) == ([], 0), "the largest values still page"
    with pytest.raises(OutOfRange, match=r"^after_id"):
        await store.list_events("t1", after_id=2**63)
    with pytest.raises(OutOfRange, match=r"^limit"):
        await store.list_events("t1", limit=2**64)
    assert isinstance(OutOfRange("x"), ValueError)
    with pytest.raises(OutOfRange, match=r"^bandwidth_limit_kbps"):
        await store.create_task(replace(task("t1", sid), bandwidth_limit_kbps=2**63), unfinished_states=["created"])
    await store.create_task(task("t1", sid), unfinished_states=["created"])
    with pytest.raises(OutOfRange, match=r"^bandwidth_limit_kbps"):
        await store.update_task("t1", expect_state="created", changes={"bandwidth_limit_kbps": 2**70}, now=2.0)
    assert (await store.get_task("t1")).bandwidth_limit_kbps == 0, "nothing was written"


# ---------------------------------------------------------------- heartbeats: the backend's part


async def test_backend_writes_heartbeats_forward_only(bare):
    k = await bare.create_key("agent", "a", 1.0)
    sid = await source(bare, k.secret_id)
    await bare.write_heartbeats({sid: (50.0, "2"), "src-none": (50.0, "2")})
    s = await bare.get_source(sid)
    assert (s.last_heartbeat, s.agent_version) == (50.0, "2")
    await bare.write_heartbeats({sid: (40.0, "1")})
    s = await bare.get_source(sid)
    assert (s.last_heartbeat, s.agent_version) == (50.0, "2"), "an older beat never moves it back"
    await bare.write_heartbeats({})
    # without a buffer above it, a beat is written at once
    assert await bare.record_heartbeat(sid, "3", 60.0) is True
    assert await bare.record_heartbeat("src-none", "3", 60.0) is False
    assert (await bare.get_source(sid)).last_heartbeat == 60.0
    assert await bare.source_exists(sid) and not await bare.source_exists("src-none")


# ---------------------------------------------------------------- heartbeats: the buffer above


async def test_buffer_holds_beats_until_a_flush_and_reads_show_them(backend_name, tmp_path):
    store = open_again(backend_name, tmp_path, flush_seconds=3600)  # no timed flush during the test
    await store.open()
    try:
        k = await store.create_key("agent", "a", 1.0)
        sid = await source(store, k.secret_id)
        other = await source(store, k.secret_id, machine="m2")
        assert await store.record_heartbeat(sid, "2", 50.0) is True
        assert (await store.backend.get_source(sid)).last_heartbeat == 1.0, "not written per beat"
        s = await store.get_source(sid)
        assert (s.last_heartbeat, s.agent_version) == (50.0, "2")
        listed = {x.source_id: x.last_heartbeat for x in await store.list_sources()}
        assert listed == {sid: 50.0, other: 1.0}
        await store.flush()
        s = await store.backend.get_source(sid)
        assert (s.last_heartbeat, s.agent_version) == (50.0, "2")
        # a registration drops the buffered beat: it carries its own time
        assert await store.record_heartbeat(sid, "2", 55.0)
        s, created = await store.register_source(machine_id="m1", hostname="h", os_name="", agent_version="4",
                                                 disks=(), registered_by=k.secret_id, now=60.0)
        assert not created
        await store.flush()
        s = await store.get_source(sid)
        assert (s.last_heartbeat, s.agent_version) == (60.0, "4")
        # a removal drops it too, and a beat of a removed source is refused
        assert await store.record_heartbeat(other, "2", 70.0)
        assert await store.remove_source(other) is True
        assert await store.record_heartbeat(other, "2", 71.0) is False
        await store.flush()
        assert await store.get_source(other) is None
    finally:
        await store.close()


async def test_a_failed_flush_keeps_the_beats(backend_name, tmp_path):
    store = open_again(backend_name, tmp_path, flush_seconds=3600)
    await store.open()
    try:
        k = await store.create_key("agent", "a", 1.0)
        sid = await source(store, k.secret_id)
        assert await store.record_heartbeat(sid, "2", 50.0)
        await store.backend.close()  # the backend goes away under the buffer
        with pytest.raises(RuntimeError):
            await store.flush()
        await store.backend.open()
        assert (await store.get_source(sid)).last_heartbeat == 50.0, "still buffered, still shown"
        await store.flush()
        assert (await store.backend.get_source(sid)).last_heartbeat == 50.0
    finally:
        await store.close()


async def test_the_timed_flush_writes_beats(store):
    k = await store.create_key("agent", "a", 1.0)
    sid = await source(store, k.secret_id)
    assert await store.record_heartbeat(sid, "2", 50.0)
    for _ in range(500):  # the fixture flushes every 0.1 s: poll for the write, up to 25 s
        if (await store.backend.get_source(sid)).last_heartbeat == 50.0:
            break
        await asyncio.sleep(0.05)
    assert (await store.backend.get_source(sid)).last_heartbeat == 50.0


def test_backends_by_name(tmp_path):
    assert set(BACKENDS) == set(storage_pkg.BACKENDS), "every backend runs this contract suite"
    with pytest.raises(ValueError, match="unknown storage backend 'nope'; known: postgresql, sqlite"):
        create_storage("nope")
    s = create_storage("sqlite", path=tmp_path / "x.db", heartbeat_flush_seconds=1.0)
    assert isinstance(s.backend, storage_pkg.SQLiteBackend)
    # the console config accepts exactly the backends there are
    assert get_args(StorageConfig.model_fields["backend"].annotation) == tuple(storage_pkg.BACKENDS)


# ---------------------------------------------------------------- schema versions, both backends


async def test_schema_is_versioned_and_a_newer_one_is_refused(backend_name, tmp_path):
    """A fresh database gets the newest schema, a reopen changes nothing, and a database a newer
    console upgraded is refused by name (before: SQLite said only "schema version 9")."""
    opts = backend_options(backend_name, tmp_path)
    bare = storage_pkg.BACKENDS[backend_name](**opts)
    await bare.open()
    try:
        assert bare.schema_upgraded_from is None and bare.schema_version >= 1, "created, not upgraded"
        await bare.create_key("admin", "a", 1.0)
    finally:
        await bare.close()
    await bare.open()  # reopened: no upgrade, the data is there
    try:
        assert bare.schema_upgraded_from is None and len(await bare.list_keys()) == 1
    finally:
        await bare.close()
    newer = bare.schema_version + 1
    if backend_name == "sqlite":
        import sqlite3

        with sqlite3.connect(opts["path"]) as db:
            db.execute("UPDATE meta SET v=? WHERE k='schema'", (str(newer),))
        key = "storage.path"
    else:
        import asyncpg

        server, _ = _PG_DATABASES[tmp_path]
        con = await asyncpg.connect(opts["dsn"], password=server.password)
        await con.execute("UPDATE schema_version SET version=$1", newer)
        await con.close()
        key = "storage.dsn"
    with pytest.raises(SchemaTooNew, match=f"^{key}: .*schema version {newer}, this console knows up to"):
        await storage_pkg.BACKENDS[backend_name](**opts).open()
    assert isinstance(SchemaTooNew("x"), ConfigError)


async def test_sqlite_upgrades_an_old_file_in_numbered_steps(tmp_path):
    import sqlite3

    db = sqlite3.connect(tmp_path / "c.db")
    db.executescript("CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);"
                     "INSERT INTO meta VALUES ('schema', '1');"
                     "CREATE TABLE tasks (task_id TEXT PRIMARY KEY, source_id TEXT NOT NULL, name TEXT NOT NULL,"
                     " description TEXT NOT NULL, region TEXT NOT NULL, target_type TEXT NOT NULL,"
                     " image_name TEXT NOT NULL, target_instance_id TEXT NOT NULL, target_ssh TEXT NOT NULL,"
                     " target_host_key TEXT NOT NULL, bandwidth_limit_kbps INTEGER NOT NULL,"
                     " checksum INTEGER NOT NULL, disk_mapping TEXT NOT NULL, scheduled_at REAL,"
                     " state TEXT NOT NULL, stage TEXT NOT NULL, message TEXT NOT NULL, progress TEXT NOT NULL,"
                     " created_at REAL NOT NULL, updated_at REAL NOT NULL);")
    db.close()
    bare = SQLiteBackend(tmp_path / "c.db")
    await bare.open()
    try:
        assert (bare.schema_upgraded_from, bare.schema_version) == (1, int(SCHEMA_VERSION))
        await bare.create_task(task("t1", "src-x"), unfinished_states=["created"])
        assert (await bare.get_task("t1")).continuous is None
    finally:
        await bare.close()


async def test_postgresql_upgrades_an_old_database_in_numbered_steps(pg_server):  # noqa: F811
    import asyncpg

    from migrated.console.storage.postgresql import MIGRATIONS

    db = pg_server.create_database()
    con = await asyncpg.connect(pg_server.dsn(db), password=pg_server.password)
    try:  # a database as the first schema left it, with a task in it
        for stmt in MIGRATIONS[0][1]:
            await con.execute(stmt)
        await con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL); "
                          "INSERT INTO schema_version VALUES (1)")
        await con.execute("INSERT INTO tasks VALUES ('t1','src-x','t1','','r','instance','','','root@h','k',0,0,"
                          "'[]',NULL,'created','','','{}',1,1,'','','')")
    finally:
        await con.close()
    store = PostgreSQLBackend(pg_server.dsn(db), password_file=str(pg_server.password_file))
    await store.open()
    try:
        assert (store.schema_upgraded_from, store.schema_version) == (1, MIGRATIONS[-1][0])
        assert (await store.get_task("t1")).ignore_checks == ()
    finally:
        await store.close()


# ---------------------------------------------------------------- PostgreSQL: connecting


def test_postgresql_dsn_with_a_password_is_refused():
    for dsn in ("postgresql://u:secret@h/db", "postgresql://u@h/db?password=secret"):
        with pytest.raises(ConfigError, match=r"^storage\.dsn: has a password in it") as e:
            PostgreSQLBackend(dsn)
        assert "secret" not in str(e.value)


async def test_postgresql_bad_dsn_unreachable_server_and_password_errors_name_the_key(pg_server, tmp_path,  # noqa: F811
                                                                                     monkeypatch):
    db = pg_server.create_database()
    cases = [
        ({"dsn": f"postgresql://migrated@/{db}?host={tmp_path}"}, "storage.dsn", "cannot connect to PostgreSQL"),
        ({"dsn": "postgresql://migrated@127.0.0.1:1/x"}, "storage.dsn", "cannot connect to PostgreSQL"),
        ({"dsn": pg_server.dsn(db), "password_file": str(tmp_path / "none")}, "storage.password_file",
         "cannot read"),
        ({"dsn": pg_server.dsn("nosuchdb"), "password_file": str(pg_server.password_file)}, "storage.dsn",
         "nosuchdb"),
    ]
    bad = tmp_path / "wrong"
    bad.write_text("wrong-password\n")
    cases.append(({"dsn": pg_server.dsn(db), "password_file": str(bad)}, "storage.dsn", "password"))
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cases.append(({"dsn": pg_server.dsn(db), "password_credential": "pg"}, "storage.password_credential",
                  "CREDENTIALS_DIRECTORY is not set"))
    for opts, key, words in cases:
        with pytest.raises(ConfigError, match=f"^{key}: ") as e:
            await PostgreSQLBackend(**opts, connect_timeout=5).open()
        assert words in str(e.value) and "wrong-password" not in str(e.value), str(e.value)
    # systemd's LoadCredential=pg:/path puts the file in $CREDENTIALS_DIRECTORY
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "pg").write_text(pg_server.password + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    store = PostgreSQLBackend(pg_server.dsn(db), password_credential="pg")
    await store.open()
    try:
        assert await store.list_keys() == []
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def two_pg_backends(server: PgServer) -> AsyncIterator[tuple[PostgreSQLBackend, PostgreSQLBackend]]:
    """Two backends (two console processes' pools) open on one new database."""
    db = server.create_database()
    a, b = (PostgreSQLBackend(server.dsn(db), password_file=str(server.password_file)) for _ in range(2))
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_postgresql_two_backends_on_one_database_share_commands_and_cas(pg_server):  # noqa: F811
    """Two pools on one database (two console processes) never both win a compare-and-set nor
    both take one command."""
    async with two_pg_backends(pg_server) as (a, b):
        k = await a.create_key("agent", "a", 1.0)
        sid = await source(a, k.secret_id)
        await a.create_task(task("t1", sid), unfinished_states=["created"])
        results = await asyncio.gather(
            *(s.update_task("t1", expect_state="created", changes={"state": "starting"},
                            command=NewCommand("start"), now=2.0) for s in (a, b, a, b)),
            return_exceptions=True)
        assert sum(not isinstance(r, BaseException) for r in results) == 1
        assert all(isinstance(r, StorageConflict) for r in results if isinstance(r, BaseException))
        got = await asyncio.gather(*(s.take_commands(sid, now=3.0, visibility_seconds=30) for s in (a, b)))
        assert sorted(len(cmds) for cmds, _ in got) == [0, 1]


async def test_postgresql_a_command_queued_through_one_backend_wakes_the_polls_of_another(pg_server):  # noqa: F811
    """LISTEN/NOTIFY: a waiter of process B is woken by a command queued through process A; a
    command for another source wakes it not; and after B's listening connection is killed
    (pg_terminate_backend), B reconnects, wakes its waiters once, and later commands wake it again."""
    async with two_pg_backends(pg_server) as (a, b):
        k = await a.create_key("agent", "a", 1.0)
        sid, other = await source(a, k.secret_id, "m1"), await source(a, k.secret_id, "m2")
        await a.create_task(task("t1", sid), unfinished_states=["created"])
        await a.create_task(task("t2", other), unfinished_states=["created"])
        waiter, quiet = b.command_waiter(sid), b.command_waiter("src-nobody")
        await a.update_task("t1", expect_state="created", changes={"state": "starting"},
                            command=NewCommand("start"), now=2.0)
        assert await waiter.wait(20) is True, "B's poll is woken by A's command, well before its timeout"
        await a.update_task("t2", expect_state="created", changes={"state": "starting"},
                            command=NewCommand("start"), now=2.0)
        waiter = b.command_waiter(sid)
        await a.update_task("t1", expect_state="starting", changes={"state": "running"}, now=3.0)  # no command
        assert await waiter.wait(0.3) is False and await quiet.wait(0) is False

        pid = b.listener_pid
        assert pid is not None
        waiter = b.command_waiter(sid)  # held across the loss: woken once B listens again
        assert await a._p().fetchval("SELECT pg_terminate_backend($1)", pid) is True
        assert await waiter.wait(20) is True
        assert b.listener_reconnects == 1 and b.listener_pid not in (None, pid)
        waiter = b.command_waiter(sid)
        await a.update_task("t1", expect_state="running", changes={"state": "stopping"},
                            command=NewCommand("stop"), now=4.0)
        assert await waiter.wait(20) is True, "a command queued after the reconnect wakes B at once"


async def test_postgresql_a_write_whose_caller_is_cancelled_still_lands_and_wakes(pg_server):  # noqa: F811
    """A request cancelled (client gone) once its write began: on PostgreSQL the write runs in a
    shielded task, so the command is queued all the same and the long-polls are woken. (SQLite
    promises this only once the commit happened: a write still queued for its thread is dropped.)"""
    store = PostgreSQLBackend(pg_server.dsn(pg_server.create_database()), password_file=str(pg_server.password_file))
    await store.open()
    try:
        k = await store.create_key("agent", "a", 1.0)
        sid = await source(store, k.secret_id)
        await store.create_task(task("t1", sid), unfinished_states=["created"])
        waiter = store.command_waiter(sid)
        call = asyncio.create_task(store.update_task("t1", expect_state="created", changes={"state": "starting"},
                                                     command=NewCommand("start"), now=2.0))
        await asyncio.sleep(0)  # the write is handed to its task
        call.cancel()
        assert await waiter.wait(10) is True
        assert (await store.get_task("t1")).state == "starting" and await store.count_pending_commands() == 1
    finally:
        await store.close()


@pytest.mark.parametrize(("storage", "needle"), [
    ({"backend": "postgresql"}, "storage.dsn: backend postgresql needs a dsn"),
    ({"backend": "postgresql", "dsn": "mysql://u@h/db"}, "storage.dsn: must start with postgresql://"),
    ({"backend": "postgresql", "dsn": "postgresql://u:hunter2@h/db"}, "storage.dsn: must not hold a password"),
    ({"backend": "postgresql", "dsn": "postgresql://u@h/db?password=hunter2"}, "storage.dsn: must not hold"),
    ({"backend": "postgresql", "dsn": "postgresql://u@h/db", "password_file": "/a", "password_credential": "b"},
     "storage.password_credential: give password_file or password_credential, not both"),
    ({"backend": "postgresql", "dsn": "postgresql://u@h/db", "password_credential": "../x"},
     "storage.password_credential"),
    ({"dsn": "postgresql://u@h/db"}, "storage.dsn: only for backend postgresql (backend is sqlite)"),
])
def test_postgresql_config_errors_name_the_key_and_never_echo_a_password(storage, needle):
    with pytest.raises(ConfigError) as ei:
        parse_config({"storage": storage})
    assert needle in str(ei.value) and "hunter2" not in str(ei.value), str(ei.value)


def test_postgresql_config_hands_its_options_to_the_backend():
    cfg = parse_config({"storage": {"backend": "postgresql", "dsn": "postgresql://migrate@db/migrate",
                                    "password_credential": "db-password", "pool_size": 4}})
    store = create_storage(cfg.storage.backend, **cfg.storage.backend_options())
    assert isinstance(store.backend, PostgreSQLBackend) and store.backend.dsn == "postgresql://migrate@db/migrate"
    assert cfg.storage.describe() == "postgresql postgresql://migrate@db/migrate"


async def test_two_stores_on_one_database_start_each_due_task_exactly_once(backend_name, tmp_path):
    """Scheduled starts with two console processes on one database: two schedulers, each on its
    own storage object, claim the same due tasks at once; every task is started by exactly one of
    them, with one start command. A claim of a task that is no longer scheduled (started, failed
    and waiting for a person) does nothing."""
    from migrated.console.scheduler import Scheduler
    from migrated.console.service import ConsoleService

    a, b = open_again(backend_name, tmp_path), open_again(backend_name, tmp_path)
    await a.open()
    await b.open()
    try:
        k = await a.create_key("agent", "a", 1.0)
        tids = []
        for i in range(6):
            sid = await source(a, k.secret_id, f"m{i}")
            await a.create_task(task(f"t{i}", sid), unfinished_states=["created"])
            await a.update_task(f"t{i}", expect_state="created", changes={"state": "scheduled", "scheduled_at": 5.0},
                                now=2.0)
            tids.append(f"t{i}")
        cfg = parse_config(None)
        sa, sb = (Scheduler(ConsoleService(s, cfg, clock=lambda: 10.0)) for s in (a, b))
        for _round in range(3):  # ticking together again finds nothing left to start
            got_a, got_b = await asyncio.gather(sa.run_once(), sb.run_once())
            assert not set(got_a) & set(got_b), "no task started by both"
            if _round == 0:
                assert sorted(got_a + got_b) == tids
            else:
                assert got_a == got_b == []
        for tid in tids:
            cmds = await b.list_commands(tid)
            assert [c.action for c in cmds] == ["start"], tid
            assert (await b.get_task(tid)).state == "starting"
        # a stale due record: the task started, then failed; the scheduler must not start it again
        stale = await a.get_task("t0")
        await a.update_task("t0", expect_state="starting", changes={"state": "failed"}, now=11.0)
        assert await sb.claim(replace(stale, state="scheduled")) is None
        assert (await a.get_task("t0")).state == "failed" and len(await a.list_commands("t0")) == 1
    finally:
        await a.close()
        await b.close()
