"""A real console process (``migrate-console serve``) on a real PostgreSQL 15 server (tests/pg.py):
check-config, storage upgrade, and an agent's register / create / poll / ack round trip, then a
kill -9 and a restart that keeps the queued command. The password only ever travels in a file."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from migrated.console.client import ConsoleClient
from migrated.console.storage.postgresql import SCHEMA_VERSION
from tests.console_proc import ConsoleProcess, local_admin_key, run_cli, write_config
from tests.console_support import register, task_params
from tests.pg import pg_server  # noqa: F401 - the session fixture

pytestmark = pytest.mark.timeout(180)


def pg_config(tmp_path, server, db, **storage):
    return write_config(tmp_path, tmp_path / "unused.db", storage={
        "backend": "postgresql", "dsn": server.dsn(db), "password_file": str(server.password_file), **storage})


async def test_console_serves_agents_from_postgresql(pg_server, tmp_path):  # noqa: F811
    db = pg_server.create_database()
    cfg = pg_config(tmp_path, pg_server, db)
    r = run_cli("check-config", "--config", str(cfg))  # connects, changes nothing
    assert r.returncode == 0, r.stderr
    assert f"postgresql {pg_server.dsn(db)}, schema version 0: serve will upgrade it to {SCHEMA_VERSION})" \
        in r.stdout
    r = run_cli("storage", "upgrade", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert f"schema version {SCHEMA_VERSION}, up to date" in r.stdout  # a new database is created at the newest
    r = run_cli("check-config", "--config", str(cfg))
    assert r.returncode == 0 and f"postgresql {pg_server.dsn(db)}, schema version {SCHEMA_VERSION})" in r.stdout
    a = local_admin_key(cfg, tmp_path / "admin.yaml")
    log = tmp_path / "console.log"

    first = ConsoleProcess(cfg, log).start()
    try:
        async with ConsoleClient(first.url, a["secret_id"], a["secret_key"]) as admin:
            k = await admin.call("CreateKey", {"Role": "agent", "Name": "fleet"})
            async with ConsoleClient(first.url, k["SecretId"], k["SecretKey"]) as agent:
                s1 = await register(agent, "m-1")
                t1 = (await admin.call("CreateTask", task_params(s1)))["TaskId"]
                # a long-poll held before the command exists is woken by it
                poll = asyncio.create_task(agent.call("PollCommands", {"SourceId": s1, "WaitSeconds": 20}))
                c1 = (await admin.call("StartTask", {"TaskId": t1}))["CommandId"]
                got = await asyncio.wait_for(poll, 15)
                assert [(c["CommandId"], c["Action"]) for c in got["Commands"]] == [(c1, "start")]
                await agent.call("AckCommand", {"SourceId": s1, "CommandId": c1, "Result": "ok"})
                s2 = await register(agent, "m-2")
                t2 = (await admin.call("CreateTask", task_params(s2)))["TaskId"]
                c2 = (await admin.call("StartTask", {"TaskId": t2}))["CommandId"]  # queued, never polled
    finally:
        first.kill9()

    second = ConsoleProcess(cfg, log).start()
    try:
        async with ConsoleClient(second.url, k["SecretId"], k["SecretKey"]) as agent, \
                ConsoleClient(second.url, a["secret_id"], a["secret_key"]) as admin:
            got = await agent.call("PollCommands", {"SourceId": s2, "WaitSeconds": 5})
            assert [c["CommandId"] for c in got["Commands"]] == [c2], "the queued command survived kill -9"
            got = await agent.call("PollCommands", {"SourceId": s1, "WaitSeconds": 0})
            assert got["Commands"] == [], "the acked one never comes again"
            tasks = {t["TaskId"]: t["State"] for t in (await admin.call("DescribeTasks", {}))["TaskSet"]}
            assert tasks == {t1: "starting", t2: "starting"}
    finally:
        assert second.stop() == 0
    assert pg_server.password not in log.read_text(), "the password is never logged"


def test_check_config_names_the_key_of_a_bad_postgresql_setting(pg_server, tmp_path):  # noqa: F811
    db = pg_server.create_database()
    cfg = pg_config(tmp_path, pg_server, db, password_file=str(tmp_path / "missing"))
    r = run_cli("check-config", "--config", str(cfg))
    assert r.returncode != 0 and "storage.password_file: cannot read" in r.stderr, r.stderr
    cfg = pg_config(tmp_path, pg_server, "nosuchdb")
    r = run_cli("check-config", "--config", str(cfg))
    assert r.returncode != 0 and "storage.dsn: cannot connect to PostgreSQL" in r.stderr, r.stderr
    r = run_cli("serve", "--config", str(cfg))
    assert r.returncode != 0 and "storage.dsn: cannot connect to PostgreSQL" in r.stderr, r.stderr[-2000:]
    cfg = write_config(tmp_path, tmp_path / "unused.db", storage={
        "backend": "postgresql", "dsn": f"postgresql://migrated:{pg_server.password}@/x"})
    r = run_cli("check-config", "--config", str(cfg))
    assert r.returncode != 0 and "storage.dsn" in r.stderr and "must not hold a password" in r.stderr, r.stderr
    assert pg_server.password not in r.stderr


IDLE_ANSWER_EARLIEST = 20 * 0.75  # a held poll of WaitSeconds 20 is answered idle no earlier (service.py)


async def poll_held(url: str) -> None:
    """Return once the console at ``url`` holds a long-poll (its /metrics gauge; polled, no sleep for a guess)."""
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(url + "/metrics") as r:
                m = re.search(r"^migrate_console_longpolls_held (\S+)$", await r.text(), re.M)
            if m and float(m.group(1)) >= 1:
                return
            await asyncio.sleep(0.05)


async def test_two_console_processes_on_one_database_deliver_across_at_once(pg_server, tmp_path):  # noqa: F811
    """Two `migrate-console serve` processes on one database: an agent long-polls process B, an
    admin queues StartTask on process A, and the poll returns with the command before the
    earliest time B would answer it on its own (WaitSeconds 20, answered idle no earlier than
    0.75 of that: 15 s; at its end B looks again and would find the command, so the time is the
    check that a wake-up, not the timeout, delivered it). Then B's listening
    connection to the database is killed (pg_terminate_backend): a command queued on A afterwards
    still reaches a poll held on B, again before the poll's timeout."""
    import asyncpg

    from migrated.console.storage.postgresql import LISTENER_APPLICATION_NAME

    loop = asyncio.get_running_loop()
    db = pg_server.create_database()
    cfg = pg_config(tmp_path, pg_server, db)
    a = local_admin_key(cfg, tmp_path / "admin.yaml")
    proc_a = ConsoleProcess(cfg, tmp_path / "a.log").start()
    proc_b = None
    con = await asyncpg.connect(pg_server.dsn(db), password=pg_server.password)
    try:
        proc_b = ConsoleProcess(cfg, tmp_path / "b.log").start()
        listeners = "SELECT pid FROM pg_stat_activity WHERE application_name=$1 ORDER BY backend_start"
        assert len(await con.fetch(listeners, LISTENER_APPLICATION_NAME)) == 2, "one listener per process"
        async with ConsoleClient(proc_a.url, a["secret_id"], a["secret_key"]) as admin:
            k = await admin.call("CreateKey", {"Role": "agent", "Name": "fleet"})
            async with ConsoleClient(proc_b.url, k["SecretId"], k["SecretKey"]) as agent:
                s1 = await register(agent, "m-1")
                t1 = (await admin.call("CreateTask", task_params(s1)))["TaskId"]
                poll = asyncio.create_task(agent.call("PollCommands", {"SourceId": s1, "WaitSeconds": 20}))
                await poll_held(proc_b.url)  # B holds it: only a wake-up from A can answer it with the command
                t0 = loop.time()
                c1 = (await admin.call("StartTask", {"TaskId": t1}))["CommandId"]
                got = await poll
                assert loop.time() - t0 < IDLE_ANSWER_EARLIEST, "woken, not answered at the poll's end"
                assert [c["CommandId"] for c in got["Commands"]] == [c1], "A's command woke B's poll"
                await agent.call("AckCommand", {"SourceId": s1, "CommandId": c1, "Result": "ok"})

                # kill B's listening connection (A's is the older one); then queue on A again
                pid_b = (await con.fetch(listeners, LISTENER_APPLICATION_NAME))[1]["pid"]
                assert await con.fetchval("SELECT pg_terminate_backend($1)", pid_b) is True
                while True:  # B reconnects: a new listener backend (polled, never slept for)
                    pids = [row["pid"] for row in await con.fetch(listeners, LISTENER_APPLICATION_NAME)]
                    if len(pids) == 2 and pid_b not in pids:
                        break
                    await asyncio.sleep(0.05)
                s2 = await register(agent, "m-2")
                t2 = (await admin.call("CreateTask", task_params(s2)))["TaskId"]
                poll = asyncio.create_task(agent.call("PollCommands", {"SourceId": s2, "WaitSeconds": 20}))
                await poll_held(proc_b.url)
                t0 = loop.time()
                c2 = (await admin.call("StartTask", {"TaskId": t2}))["CommandId"]
                got = await poll
                assert loop.time() - t0 < IDLE_ANSWER_EARLIEST, "woken, not answered at the poll's end"
                assert [c["CommandId"] for c in got["Commands"]] == [c2], "delivered across after the reconnect"
    finally:
        await con.close()
        assert proc_a.stop() == 0
        if proc_b is not None:
            assert proc_b.stop() == 0
    assert "postgresql listening connection lost" in (tmp_path / "b.log").read_text()
