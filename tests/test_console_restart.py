"""A console killed with SIGKILL and restarted on the same SQLite file, in the middle of queued,
delivered-but-unacked and scheduled commands: nothing lost, nothing run twice."""

from __future__ import annotations

import asyncio
import time

import pytest

from migrated.console.client import ConsoleClient
from tests.console_proc import ConsoleProcess, local_admin_key, write_config
from tests.console_support import register, task_params

pytestmark = pytest.mark.timeout(120)


async def test_kill9_restart_keeps_commands_and_schedules(tmp_path):
    db = tmp_path / "console.db"
    cfg = write_config(tmp_path, db, agents={"command_visibility_seconds": 1.0},
                       scheduler={"min_lead_seconds": 1, "tick_seconds": 0.2})
    a = local_admin_key(cfg, tmp_path / "admin.yaml")
    log = tmp_path / "console.log"

    first = ConsoleProcess(cfg, log).start()
    try:
        async with ConsoleClient(first.url, a["secret_id"], a["secret_key"]) as admin:
            k = await admin.call("CreateKey", {"Role": "agent", "Name": "fleet"})
            async with ConsoleClient(first.url, k["SecretId"], k["SecretKey"]) as agent:
                s1 = await register(agent, "m-1")
                s2 = await register(agent, "m-2")
                s3 = await register(agent, "m-3")
                # s1: a start that is delivered but never acked (the agent "crashed" before applying it)
                t1 = (await admin.call("CreateTask", task_params(s1)))["TaskId"]
                c1 = (await admin.call("StartTask", {"TaskId": t1}))["CommandId"]
                got = await agent.call("PollCommands", {"SourceId": s1, "WaitSeconds": 5})
                assert [c["CommandId"] for c in got["Commands"]] == [c1]
                # s3: a start that is queued and never polled
                t3 = (await admin.call("CreateTask", task_params(s3)))["TaskId"]
                c3 = (await admin.call("StartTask", {"TaskId": t3}))["CommandId"]
                # s2: a scheduled start that comes due while the console is down
                when = time.time() + 3
                at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when + 1))
                t2 = (await admin.call("CreateTask", task_params(s2, ScheduledStartTime=at)))["TaskId"]
    finally:
        first.kill9()

    await asyncio.sleep(max(0.0, when + 1.5 - time.time()))  # the scheduled time passes while it is down

    second = ConsoleProcess(cfg, log).start()
    try:
        async with ConsoleClient(second.url, a["secret_id"], a["secret_key"]) as admin, \
                ConsoleClient(second.url, k["SecretId"], k["SecretKey"]) as agent:
            # the scheduled start fired after the restart, once
            got2 = await agent.call("PollCommands", {"SourceId": s2, "WaitSeconds": 10})
            assert [(c["TaskId"], c["Action"]) for c in got2["Commands"]] == [(t2, "start")]
            c2 = got2["Commands"][0]["CommandId"]
            # the queued one is there, the unacked one comes again
            got3 = await agent.call("PollCommands", {"SourceId": s3, "WaitSeconds": 5})
            assert [c["CommandId"] for c in got3["Commands"]] == [c3]
            got1 = await agent.call("PollCommands", {"SourceId": s1, "WaitSeconds": 10})
            assert [c["CommandId"] for c in got1["Commands"]] == [c1]
            for src, cid in ((s1, c1), (s2, c2), (s3, c3)):
                await agent.call("AckCommand", {"SourceId": src, "CommandId": cid, "Result": "ok"})
            tasks = {t["TaskId"]: t["State"] for t in (await admin.call("DescribeTasks", {}))["TaskSet"]}
            assert tasks == {t1: "starting", t2: "starting", t3: "starting"}
    finally:
        second.kill9()

    third = ConsoleProcess(cfg, log).start()
    try:
        async with ConsoleClient(third.url, a["secret_id"], a["secret_key"]) as admin, \
                ConsoleClient(third.url, k["SecretId"], k["SecretKey"]) as agent:
            # acked commands survive as acked: nothing comes again, the schedule does not fire twice
            for src in (s1, s2, s3):
                assert (await agent.call("PollCommands", {"SourceId": src, "WaitSeconds": 1.5}))["Commands"] == []
            ev = (await admin.call("DescribeTaskEvents", {"TaskId": t2}))["EventSet"]
            assert sum("start by scheduler" in e["Message"] for e in ev) == 1
    finally:
        assert third.stop() == 0
