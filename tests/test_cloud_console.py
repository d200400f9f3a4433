"""The console with a ``cloud:`` section, against a FAKE Tencent Cloud.

The real Tencent Cloud cannot be reached from here, so the console's cloud calls go to
tests/fake_tencentcloud.py: a real aiohttp server on 127.0.0.1 port 0 that verifies the TC3
signature of every request with the SDK's own signing code and answers with the SDK models'
response shapes. The console itself is real (aiohttp on port 0, a real SQLite file), driven by
our signed ConsoleClient as an operator and an agent would.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from migrated.console.storage import SQLiteStorage
from migrated.errors import ConfigError, ConsoleError
from tests.console_support import Console, register, running_console, task_params
from tests.fake_tencentcloud import SECRET_ID, SECRET_KEY, FakeTencentCloud, instance, rule

R = "ap-guangzhou"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTencentCloud]:
    async with FakeTencentCloud() as f:
        f.security_groups["sg-open1234"] = [rule(0, port="22")]
        yield f


def creds_file(tmp_path: Path) -> str:
    p = tmp_path / "tencentcloud.yaml"
    p.write_text(f"secret_id: {SECRET_ID}\nsecret_key: {SECRET_KEY}\n")
    p.chmod(0o600)
    return str(p)


@asynccontextmanager
async def cloud_console(tmp_path: Path, fake: FakeTencentCloud, **extra: Any) -> AsyncIterator[Console]:
    cloud = {"credentials_file": creds_file(tmp_path), "endpoint": fake.endpoint, "image_poll_seconds": 0.02,
             **extra}
    async with running_console(tmp_path, cloud=cloud) as c:
        yield c


async def wait_image(admin: Any, tid: str) -> dict[str, Any]:
    for _ in range(500):
        (t,) = (await admin.call("DescribeTasks", {"TaskIds": [tid]}))["TaskSet"]
        if t["ImageState"] in ("NORMAL", "FAILED", "SKIPPED"):
            return t
        await asyncio.sleep(0.02)
    raise AssertionError(f"image of {tid} still {t['ImageState']}")


async def run_to_success(agent: Any, admin: Any, src: str, tid: str) -> None:
    await agent.call("Heartbeat", {"SourceId": src})
    await admin.call("StartTask", {"TaskId": tid})
    for state in ("transferring", "success"):
        await agent.call("ReportTaskProgress", {"SourceId": src, "TaskId": tid, "State": state})


async def events(admin: Any, tid: str) -> list[dict[str, Any]]:
    return (await admin.call("DescribeTaskEvents", {"TaskId": tid}))["EventSet"]


async def wait_event(admin: Any, tid: str, pred: Any) -> list[str]:
    """The task's event messages once one satisfies ``pred`` (or after 10 s): a cloud step records its
    event after the fake answered, so a test that reads the events at once races the console."""
    for _ in range(500):
        msgs = [e["Message"] for e in await events(admin, tid)]
        if any(pred(m) for m in msgs):
            break
        await asyncio.sleep(0.02)
    return msgs


async def test_instance_target_is_validated_with_errors_naming_it(tmp_path: Path, fake: FakeTencentCloud) -> None:
    async with cloud_console(tmp_path, fake) as c:
        sid, sk = await c.new_key("agent")
        async with c.client(sid, sk) as agent, c.client(c.admin_id, c.admin_key) as admin:
            src = await register(agent)
            tp = task_params(src, TargetInstanceId="ins-abc12345")
            with pytest.raises(ConsoleError) as ei:
                await admin.call("CreateTask", tp)
            assert ei.value.code == "InvalidParameter.TargetInstance"
            assert "instance ins-abc12345 does not exist in region ap-guangzhou" in ei.value.message

            fake.instances[(R, "ins-abc12345")] = instance("ins-abc12345", state="STOPPED", data_gb=(200,))
            with pytest.raises(ConsoleError) as ei:
                await admin.call("CreateTask", tp)
            assert ei.value.code == "FailedOperation.TargetInstance" and "is STOPPED, not RUNNING" in ei.value.message

            fake.instances[(R, "ins-abc12345")] = instance("ins-abc12345", data_gb=(50,))
            with pytest.raises(ConsoleError) as ei:
                await admin.call("CreateTask", tp)
            assert ei.value.code == "FailedOperation.TargetInstance"
            assert "source disk /dev/vdb needs 100 GB, the largest data disk left is 50 GB" in ei.value.message

            fake.fail["DescribeInstances"] = ("AuthFailure.UnauthorizedOperation", "no cvm:DescribeInstances")
            with pytest.raises(ConsoleError) as ei:
                await admin.call("CreateTask", tp)
            assert ei.value.code == "FailedOperation.CloudApi"
            assert "AuthFailure.UnauthorizedOperation" in ei.value.message and "RequestId" in ei.value.message
            del fake.fail["DescribeInstances"]

            fake.instances[(R, "ins-abc12345")] = instance("ins-abc12345", data_gb=(200,), sgs=("sg-closed12",))
            fake.security_groups["sg-closed12"] = [rule(0, port="80")]
            t = await admin.call("CreateTask", tp)
            assert t["State"] == "created"
            warn = [e for e in await events(admin, t["TaskId"]) if e["Level"] == "warning"]
            assert len(warn) == 1 and "TCP 22 on ins-abc12345" in warn[0]["Message"]
            (view,) = (await admin.call("DescribeTasks", {"TaskIds": [t["TaskId"]]}))["TaskSet"]
            assert (view["TargetInstanceId"], view["ImageId"], view["ImageState"]) == ("ins-abc12345", "", "")
    assert fake.bad_signatures == 0


async def test_image_task_gets_unique_name_and_its_image_made(tmp_path: Path, fake: FakeTencentCloud,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.instances[(R, "ins-relay001")] = instance("ins-relay001", name="do_not_delete_csm_instance",
                                                   data_gb=(200,))
    fake.add_image(R, "web01")  # the account already has an image of that name
    async with cloud_console(tmp_path, fake) as c:
        sid, sk = await c.new_key("agent")
        async with c.client(sid, sk) as agent, c.client(c.admin_id, c.admin_key) as admin:
            src = await register(agent)
            t = await admin.call("CreateTask", task_params(src, TargetType="image", ImageName="web01",
                                                           TargetInstanceId="ins-relay001"))
            tid = t["TaskId"]
            assert t["ImageName"] == f"web01-{tid}"
            await run_to_success(agent, admin, src, tid)
            view = await wait_image(admin, tid)
            assert view["ImageState"] == "NORMAL" and view["ImageId"].startswith("img-")
            img = fake.images[view["ImageId"]]
            assert (img["ImageName"], img["ImageState"]) == (f"web01-{tid}", "NORMAL")
            create = [p for a, _, p in fake.calls if a == "CreateImage"]
            # the task maps /dev/vda and /dev/vdb: a full image with the relay's data disk
            assert create == [{"InstanceId": "ins-relay001", "ImageName": f"web01-{tid}",
                               "ImageDescription": f"migrated {tid}", "DataDiskIds": ["disk-d0relay001"]}]
            msgs = await wait_event(admin, tid, lambda m: f"image {view['ImageId']} (web01-{tid}) is NORMAL" in m)
            assert any(f"image {view['ImageId']} (web01-{tid}) is NORMAL" in m for m in msgs)
            # the web UI's task page reads the same image ID
            page = await c.service.storage.get_task(tid)
            assert page is not None and page.image_id == view["ImageId"]
    assert SECRET_KEY not in caplog.text


async def test_create_image_failure_is_an_event_with_the_tencent_code(tmp_path: Path,
                                                                      fake: FakeTencentCloud) -> None:
    fake.instances[(R, "ins-relay001")] = instance("ins-relay001", data_gb=(200,))
    fake.fail["CreateImage"] = ("LimitExceeded.ImageQuota", "image quota exceeded")
    async with cloud_console(tmp_path, fake) as c:
        sid, sk = await c.new_key("agent")
        async with c.client(sid, sk) as agent, c.client(c.admin_id, c.admin_key) as admin:
            src = await register(agent)
            tid = (await admin.call("CreateTask", task_params(src, TargetType="image", ImageName="web01",
                                                              TargetInstanceId="ins-relay001")))["TaskId"]
            await run_to_success(agent, admin, src, tid)
            view = await wait_image(admin, tid)
            assert (view["State"], view["ImageState"], view["ImageId"]) == ("success", "FAILED", "")
            (err,) = [e for e in await events(admin, tid) if e["Level"] == "error"]
            assert "image creation failed" in err["Message"] and "LimitExceeded.ImageQuota" in err["Message"]
            assert "RequestId" in err["Message"]


async def test_image_job_resumes_after_a_restart(tmp_path: Path, fake: FakeTencentCloud) -> None:
    fake.instances[(R, "ins-relay001")] = instance("ins-relay001", data_gb=(200,))
    fake.image_polls_until_done = 10**6  # stays CREATING while the first console runs
    async with cloud_console(tmp_path, fake) as c:
        sid, sk = await c.new_key("agent")
        async with c.client(sid, sk) as agent, c.client(c.admin_id, c.admin_key) as admin:
            src = await register(agent)
            tid = (await admin.call("CreateTask", task_params(src, TargetType="image", ImageName="web01",
                                                              TargetInstanceId="ins-relay001")))["TaskId"]
            await run_to_success(agent, admin, src, tid)
            for _ in range(500):
                t = await c.service.storage.get_task(tid)
                if t is not None and t.image_state == "CREATING":
                    break
                await asyncio.sleep(0.02)
    fake.image_polls_until_done = 0
    async with cloud_console(tmp_path, fake) as c, c.client(c.admin_id, c.admin_key) as admin:
        view = await wait_image(admin, tid)
        assert view["ImageState"] == "NORMAL"
    assert fake.actions().count("CreateImage") == 1, "followed, not made twice"


async def test_cloud_off_calls_nothing_and_bad_credentials_stop_the_start(tmp_path: Path,
                                                                         fake: FakeTencentCloud) -> None:
    async with running_console(tmp_path) as c:
        sid, sk = await c.new_key("agent")
        async with c.client(sid, sk) as agent, c.client(c.admin_id, c.admin_key) as admin:
            src = await register(agent)
            t = await admin.call("CreateTask", task_params(src, TargetInstanceId="ins-nothere1"))
            assert t["State"] == "created"
    assert fake.calls == []
    loose = tmp_path / "loose.yaml"
    loose.write_text(f"secret_id: {SECRET_ID}\nsecret_key: {SECRET_KEY}\n")
    loose.chmod(0o644)
    with pytest.raises(ConfigError) as ei:
        async with running_console(tmp_path / "b", cloud={"credentials_file": str(loose)}):
            pass
    assert "chmod 600" in str(ei.value) and SECRET_KEY not in str(ei.value)


async def test_schema_1_database_is_upgraded(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema', '1');
        CREATE TABLE tasks (
            task_id TEXT PRIMARY KEY, source_id TEXT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL,
            region TEXT NOT NULL, target_type TEXT NOT NULL, image_name TEXT NOT NULL,
            target_instance_id TEXT NOT NULL, target_ssh TEXT NOT NULL, target_host_key TEXT NOT NULL,
            bandwidth_limit_kbps INTEGER NOT NULL, checksum INTEGER NOT NULL, disk_mapping TEXT NOT NULL,
            scheduled_at REAL, state TEXT NOT NULL, stage TEXT NOT NULL, message TEXT NOT NULL,
            progress TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL);
        INSERT INTO tasks VALUES ('task-old', 'src-1', 'web', '', 'ap-guangzhou', 'image', 'web01', '',
            'root@h', 'ssh-ed25519 AAAA', 0, 0, '[["/dev/vda","/dev/vda"]]', NULL, 'success', '', '', '{}', 1, 1);
    """)
    con.commit()
    con.close()
    store = SQLiteStorage(db)
    await store.open()
    try:
        t = await store.get_task("task-old")
        assert t is not None and (t.image_name, t.image_id, t.image_state) == ("web01", "", "")
        assert t.continuous is None and t.ignore_checks == ()
    finally:
        await store.close()
    # schema 4 added tasks.ignore_checks (CreateTask IgnoreChecks): an old file goes all the way up
    assert sqlite3.connect(db).execute("SELECT v FROM meta WHERE k='schema'").fetchone()[0] == "4"


def test_cloud_config_errors_name_the_key() -> None:
    from migrated.console.config import parse_config

    assert parse_config({}).cloud is None
    assert parse_config({"cloud": {}}).cloud is not None
    with pytest.raises(ConfigError, match=r"cloud\.endpoint"):
        parse_config({"cloud": {"endpoint": "ftp://cvm.example"}})
    with pytest.raises(ConfigError, match=r"cloud\.secret_key: unknown key"):
        parse_config({"cloud": {"secret_key": "never in the main config"}})


async def test_image_from_an_earlier_attempt_is_adopted_and_relay_terminated(tmp_path: Path,
                                                                             fake: FakeTencentCloud) -> None:
    fake.instances[(R, "ins-relay001")] = instance("ins-relay001", name="do_not_delete_csm_instance",
                                                   data_gb=(200,))
    fake.instances[(R, "ins-users001")] = instance("ins-users001", name="production", data_gb=(200,))
    async with cloud_console(tmp_path, fake, terminate_relay=True) as c:
        sid, sk = await c.new_key("agent")
        async with c.client(sid, sk) as agent, c.client(c.admin_id, c.admin_key) as admin:
            src = await register(agent)
            tid = (await admin.call("CreateTask", task_params(src, TargetType="image", ImageName="web01",
                                                              TargetInstanceId="ins-relay001")))["TaskId"]
            # a console that crashed after CreateImage, before recording the ImageId
            earlier = fake.add_image(R, "web01", "CREATING", description=f"migrated {tid}")
            await run_to_success(agent, admin, src, tid)
            view = await wait_image(admin, tid)
            assert (view["ImageId"], view["ImageState"]) == (earlier, "NORMAL")
            assert "CreateImage" not in fake.actions()
            for _ in range(500):
                if (R, "ins-relay001") not in fake.instances:
                    break
                await asyncio.sleep(0.02)
            assert (R, "ins-relay001") not in fake.instances
            msgs = await wait_event(admin, tid, lambda m: m == "relay instance ins-relay001 terminated")
            assert "relay instance ins-relay001 terminated" in msgs

            # a user's own machine as the "relay": the image is made, the machine is left alone
            await admin.call("DeleteTask", {"TaskId": tid})
            tid2 = (await admin.call("CreateTask", task_params(src, TargetType="image", ImageName="web02",
                                                               TargetInstanceId="ins-users001")))["TaskId"]
            await run_to_success(agent, admin, src, tid2)
            assert (await wait_image(admin, tid2))["ImageState"] == "NORMAL"
            for _ in range(500):
                warn = [e for e in await events(admin, tid2) if e["Level"] == "warning"]
                if warn:
                    break
                await asyncio.sleep(0.02)
            assert "not 'do_not_delete_csm_instance'" in warn[0]["Message"] and "left running" in warn[0]["Message"]
            assert (R, "ins-users001") in fake.instances and fake.actions().count("TerminateInstances") == 1
