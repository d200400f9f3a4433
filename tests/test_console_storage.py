"""The Storage contract, run against the SQLite backend on a real file. A second backend
(PostgreSQL) adds itself to ``BACKENDS`` and must pass the same tests."""

from __future__ import annotations

import asyncio
import os

import pytest

from migrated.console.storage import DiskInfo, NewCommand, SQLiteStorage, StorageConflict, TaskRecord

BACKENDS = ["sqlite"]


@pytest.fixture(params=BACKENDS)
async def store(request, tmp_path):
    s = SQLiteStorage(tmp_path / "c.db", heartbeat_flush_seconds=0.1)
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


async def test_file_is_private_and_wal(store, tmp_path):
    assert os.stat(tmp_path / "c.db").st_mode & 0o077 == 0
    assert (tmp_path / "c.db-wal").exists()


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


async def test_source_ownership_and_heartbeats_survive_reopen(store, tmp_path):
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
    reopened = SQLiteStorage(tmp_path / "c.db")
    await reopened.open()
    try:
        s = await reopened.get_source(sid)
        assert (s.last_heartbeat, s.agent_version, s.hostname) == (50.0, "3", "h2")
    finally:
        await reopened.close()
    await store.open()  # the fixture closes it again
