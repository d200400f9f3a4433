"""The cutover options of CreateTask (Quiesce, PreHook, PostHook, FreezeBudgetSeconds, SnapshotSize) and the live
change of a continuous task's rounds (ModifyTaskRounds): the pydantic rules (table tests), the SQLite
round trip, and the API on a real console with a real SQLite file (the agent side is played by
hand with PollCommands, as in test_console_api.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydantic import ValidationError

from migrated.console import params as P
from migrated.console.storage import SQLiteStorage
from migrated.errors import ConsoleError
from tests.console_support import HOST_KEY, register, running_console, task_params
from tests.test_console_storage import source, task

BASE = {"SourceId": "src-1", "TaskName": "t", "Region": "ap-guangzhou", "TargetType": "image",
        "ImageName": "img", "TargetSsh": "root@203.0.113.7", "TargetHostKey": HOST_KEY}


def refusal(**over: object) -> tuple[str, str]:
    with pytest.raises(ValidationError) as ei:
        P.CreateTask.model_validate({**BASE, **over})
    return P.validation_error(ei.value)


@pytest.mark.parametrize("over, code, words", [
    ({"ContinuousSync": True, "Quiesce": "snapshot"}, "InvalidParameterValue",
     "parameter Quiesce: unknown quiesce method 'snapshot'; choose freeze, hooks, none, lvm"),
    ({"ContinuousSync": True, "Quiesce": "hooks"}, "InvalidParameterValue",
     "parameter PreHook: required when Quiesce is hooks"),
    ({"ContinuousSync": True, "Quiesce": "lvm", "SnapshotSize": "lots"}, "InvalidParameterValue",
     "parameter SnapshotSize: 'lots' is not a snapshot size: use a size like 2G or 512M, or 20%ORIGIN"),
    ({"ContinuousSync": True, "Quiesce": "lvm", "SnapshotSize": "20%"}, "InvalidParameterValue",
     "parameter SnapshotSize: '20%' is not a snapshot size"),
    ({"ContinuousSync": True, "Quiesce": "lvm", "SnapshotSize": "2G\n"}, "InvalidParameterValue",
     "parameter SnapshotSize"),
    ({"ContinuousSync": True, "Quiesce": "lvm", "SnapshotSize": "2G; rm -rf /"}, "InvalidParameterValue",
     "parameter SnapshotSize"),
    ({"ContinuousSync": True, "Quiesce": "lvm", "SnapshotSize": ""}, "InvalidParameterValue",
     "parameter SnapshotSize"),
    ({"ContinuousSync": True, "Quiesce": "lvm", "SnapshotSize": "1" * 40}, "InvalidParameterValue",
     "parameter SnapshotSize: String should have at most 32 characters"),
    ({"ContinuousSync": True, "Quiesce": "lvm", "SnapshotSize": 2}, "InvalidParameter", "parameter SnapshotSize"),
    ({"ContinuousSync": True, "SnapshotSize": "2G"}, "InvalidParameterValue",
     "parameter SnapshotSize: only with Quiesce lvm"),
    ({"ContinuousSync": True, "Quiesce": "freeze", "SnapshotSize": "2G"}, "InvalidParameterValue",
     "parameter SnapshotSize: only with Quiesce lvm"),
    ({"SnapshotSize": "2G"}, "InvalidParameterValue", "parameter SnapshotSize: only for a task with ContinuousSync"),
    ({"Quiesce": "lvm"}, "InvalidParameterValue",
     "parameter Quiesce: only for a task with ContinuousSync or ConsistentFinish true"),
    ({"ContinuousSync": True, "FreezeBudgetSeconds": 0}, "InvalidParameterValue", "parameter FreezeBudgetSeconds"),
    ({"ContinuousSync": True, "FreezeBudgetSeconds": 601}, "InvalidParameterValue",
     "parameter FreezeBudgetSeconds: Input should be less than or equal to 600"),
    ({"ContinuousSync": True, "FreezeBudgetSeconds": "30"}, "InvalidParameter", "parameter FreezeBudgetSeconds"),
    ({"ContinuousSync": True, "PreHook": "systemctl stop app\nrm -rf /"}, "InvalidParameterValue",
     "parameter PreHook: must be one line without NUL, CR or LF"),
    ({"ContinuousSync": True, "PostHook": "start\x00app"}, "InvalidParameterValue", "parameter PostHook: must be one"),
    ({"ContinuousSync": True, "PreHook": "x" * (P.MAX_HOOK_CHARS + 1)}, "InvalidParameterValue",
     f"parameter PreHook: String should have at most {P.MAX_HOOK_CHARS} characters"),
    ({"ContinuousSync": True, "PreHook": "   "}, "InvalidParameterValue", "parameter PreHook: must not be blank"),
    ({"ContinuousSync": True, "PreHook": ""}, "InvalidParameterValue", "parameter PreHook"),
    ({"Quiesce": "freeze"}, "InvalidParameterValue",
     "parameter Quiesce: only for a task with ContinuousSync or ConsistentFinish true"),
    ({"PreHook": "true"}, "InvalidParameterValue",
     "parameter PreHook: only for a task with ContinuousSync or ConsistentFinish true"),
    ({"ReadLimitKBps": 100}, "InvalidParameterValue", "parameter ReadLimitKBps: only for a task with ContinuousSync"),
    # a one-shot task with a consistent finish takes the cutover options, not the round ones
    ({"ConsistentFinish": True, "RoundIntervalSeconds": 30}, "InvalidParameterValue",
     "parameter RoundIntervalSeconds: only for a task with ContinuousSync true"),
    ({"ConsistentFinish": True, "ReadLimitKBps": 100}, "InvalidParameterValue",
     "parameter ReadLimitKBps: only for a task with ContinuousSync true"),
    ({"ConsistentFinish": True, "ContinuousSync": True}, "InvalidParameterValue",
     "parameter ConsistentFinish: a ContinuousSync task always ends with a cutover"),
    ({"ConsistentFinish": True, "Quiesce": "hooks"}, "InvalidParameterValue", "parameter PreHook: required"),
    ({"ContinuousSync": True, "HookTimeoutSeconds": 60}, "InvalidParameterValue",
     "parameter HookTimeoutSeconds: only with PreHook or PostHook"),
    ({"ContinuousSync": True, "PreHook": "true", "HookTimeoutSeconds": 0}, "InvalidParameterValue",
     "parameter HookTimeoutSeconds"),
    ({"ContinuousSync": True, "PreHook": "true", "HookTimeoutSeconds": 3601}, "InvalidParameterValue",
     "parameter HookTimeoutSeconds"),
    ({"ContinuousSync": True, "Freeze": True}, "UnknownParameter", "unknown parameter Freeze"),
])
def test_create_task_cutover_options_refused_with_the_parameter_named(over, code, words):
    got_code, message = refusal(**over)
    assert got_code == code and words in message, message


def test_create_task_cutover_options_accepted():
    finish = P.CreateTask.model_validate({**BASE, "ConsistentFinish": True, "Quiesce": "freeze",
                                         "FreezeBudgetSeconds": 20, "PreHook": "systemctl stop app",
                                         "HookTimeoutSeconds": 900})
    assert (finish.ConsistentFinish, finish.ContinuousSync, finish.FreezeBudgetSeconds) == (True, False, 20)
    assert finish.HookTimeoutSeconds == 900
    p = P.CreateTask.model_validate({**BASE, "ContinuousSync": True, "Quiesce": "hooks",
                                     "PreHook": "systemctl stop app", "PostHook": "systemctl start app",
                                     "FreezeBudgetSeconds": 600})
    assert (p.Quiesce, p.PreHook, p.PostHook, p.FreezeBudgetSeconds) == (
        "hooks", "systemctl stop app", "systemctl start app", 600)
    # hooks around a freeze are fine too; everything optional
    assert P.CreateTask.model_validate({**BASE, "ContinuousSync": True, "PostHook": "true"}).Quiesce is None
    assert P.CreateTask.model_validate({**BASE, "ContinuousSync": True, "Quiesce": "none"}).Quiesce == "none"
    # an LVM snapshot, with the agent's default size or a given one (hooks around it are fine too)
    lvm = P.CreateTask.model_validate({**BASE, "ContinuousSync": True, "Quiesce": "lvm"})
    assert (lvm.Quiesce, lvm.SnapshotSize) == ("lvm", None)
    lvm = P.CreateTask.model_validate({**BASE, "ContinuousSync": True, "Quiesce": "lvm", "SnapshotSize": "20%ORIGIN",
                                       "PreHook": "systemctl stop app", "PostHook": "systemctl start app"})
    assert (lvm.Quiesce, lvm.SnapshotSize, lvm.PreHook) == ("lvm", "20%ORIGIN", "systemctl stop app")


@pytest.mark.parametrize("size", ["2G", "512M", "512", "1.5T", "100k", "20%ORIGIN", "50%FREE", "10%VG",
                                  "lots", "20%", "2 G", "2G\n", "-1G", "2GiB", "20%origin", "1" * 40])
def test_console_and_agent_accept_the_same_snapshot_sizes(size):
    """The console's SnapshotSize rule is the agent's (--snapshot-size): one shared function, so a
    size the console accepts never fails on the source, and the other way round."""
    from migrated.engine.continuous import ContinuousOptions
    from migrated.errors import MigratedError

    try:
        ContinuousOptions(quiesce="lvm", snapshot_size=size).validate()
        agent_ok = True
    except MigratedError:
        agent_ok = False
    try:
        P.CreateTask.model_validate({**BASE, "ContinuousSync": True, "Quiesce": "lvm", "SnapshotSize": size})
        console_ok = True
    except ValidationError:
        console_ok = False
    assert console_ok == agent_ok
    assert console_ok == (size in {"2G", "512M", "512", "1.5T", "100k", "20%ORIGIN", "50%FREE", "10%VG"})


@pytest.mark.parametrize("params, words", [
    ({"TaskId": "t"}, "parameter RoundIntervalSeconds: give RoundIntervalSeconds and/or ReadLimitKBps"),
    ({"TaskId": "t", "RoundIntervalSeconds": -1}, "parameter RoundIntervalSeconds"),
    ({"TaskId": "t", "RoundIntervalSeconds": 86401}, "parameter RoundIntervalSeconds"),
    ({"TaskId": "t", "ReadLimitKBps": 1.5}, "parameter ReadLimitKBps"),
    ({"TaskId": "t", "Interval": 3}, "unknown parameter Interval"),
])
def test_modify_task_rounds_params(params, words):
    with pytest.raises(ValidationError) as ei:
        P.ModifyTaskRounds.model_validate(params)
    assert words in P.validation_error(ei.value)[1]


async def test_cutover_options_survive_a_reopen_and_old_rows_read(tmp_path):
    store = SQLiteStorage(tmp_path / "c.db", heartbeat_flush_seconds=0.1)
    await store.open()
    k = await store.create_key("agent", "a", 1.0)
    sid = await source(store, k.secret_id)
    opts = {"RoundIntervalSeconds": 30, "ReadLimitKBps": None, "Quiesce": "lvm", "PreHook": "sv stop 'a b'",
            "PostHook": "sv start \"a b\" # ü", "FreezeBudgetSeconds": 45, "SnapshotSize": "20%ORIGIN"}
    await store.create_task(replace(task("t1", sid), continuous=opts), unfinished_states=["created"])
    await store.update_task("t1", expect_state="created", now=2.0,
                            changes={"continuous": {**opts, "RoundIntervalSeconds": 5, "ReadLimitKBps": 0}})
    # a row written before the cutover options existed holds only the two round keys
    await store.create_task(replace(task("t0", sid, state="success"),
                                    continuous={"RoundIntervalSeconds": 7, "ReadLimitKBps": None}),
                            unfinished_states=["starting"])
    await store.close()
    store = SQLiteStorage(tmp_path / "c.db", heartbeat_flush_seconds=0.1)
    await store.open()
    try:
        t1 = await store.get_task("t1")
        assert t1 is not None and t1.continuous == {**opts, "RoundIntervalSeconds": 5, "ReadLimitKBps": 0}
        t0 = await store.get_task("t0")
        assert t0 is not None and t0.continuous == {"RoundIntervalSeconds": 7, "ReadLimitKBps": None}
        # an old row reads as "no snapshot size given" (the agent's default) in the views
        from migrated.console.service import ConsoleService
        assert ConsoleService.agent_task_view(t0)["SnapshotSize"] is None
        assert ConsoleService.agent_task_view(t1)["SnapshotSize"] == "20%ORIGIN"
    finally:
        await store.close()


@pytest.fixture
async def console(tmp_path):
    async with running_console(tmp_path, agents={"command_visibility_seconds": 1.0}) as c:
        yield c


async def test_api_cutover_options_and_live_rounds(console):
    sid, sk = await console.new_key("agent")
    async with console.client(sid, sk) as agent, console.client(console.admin_id, console.admin_key) as admin:
        src = await register(agent)
        hooks = {"Quiesce": "hooks", "PreHook": "systemctl stop app", "PostHook": "systemctl start app",
                 "FreezeBudgetSeconds": 20}
        # an agent key cannot create a task (so cannot set hooks that run as root on a source)
        with pytest.raises(ConsoleError) as ei:
            await agent.call("CreateTask", task_params(src, ContinuousSync=True, **hooks))
        assert ei.value.code.startswith("UnauthorizedOperation") or "admin key" in ei.value.message, ei.value
        with pytest.raises(ConsoleError) as ei:
            await admin.call("CreateTask", task_params(src, ContinuousSync=True, Quiesce="hooks"))
        assert ei.value.code == "InvalidParameterValue" and "PreHook" in ei.value.message
        tid = (await admin.call("CreateTask", task_params(src, ContinuousSync=True, RoundIntervalSeconds=60,
                                                          **hooks)))["TaskId"]
        (view,) = (await admin.call("DescribeTasks", {"TaskIds": [tid]}))["TaskSet"]
        assert {k: view[k] for k in hooks} == hooks
        assert (view["RoundIntervalSeconds"], view["ReadLimitKBps"]) == (60, None)

        # created: stored, nothing to send yet; the start command carries the new value
        r = await admin.call("ModifyTaskRounds", {"TaskId": tid, "RoundIntervalSeconds": 10})
        assert (r["RoundIntervalSeconds"], r["ReadLimitKBps"], r["CommandId"]) == (10, None, None)
        await admin.call("StartTask", {"TaskId": tid})
        (start,) = (await agent.call("PollCommands", {"SourceId": src, "WaitSeconds": 1}))["Commands"]
        assert {k: start["Task"][k] for k in hooks} == hooks
        assert start["Task"]["RoundIntervalSeconds"] == 10
        await agent.call("AckCommand", {"SourceId": src, "CommandId": start["CommandId"], "Result": "ok"})

        # running: stored and sent to the agent at once
        await agent.call("ReportTaskProgress", {"SourceId": src, "TaskId": tid, "State": "transferring"})
        r = await admin.call("ModifyTaskRounds", {"TaskId": tid, "RoundIntervalSeconds": 3, "ReadLimitKBps": 2048})
        assert r["CommandId"]
        (cmd,) = (await agent.call("PollCommands", {"SourceId": src, "WaitSeconds": 1}))["Commands"]
        assert (cmd["Action"], cmd["Params"]) == ("set-rounds", {"RoundIntervalSeconds": 3, "ReadLimitKBps": 2048})
        r = await admin.call("ModifyTaskRounds", {"TaskId": tid, "ReadLimitKBps": 0})
        (cmd,) = (await agent.call("PollCommands", {"SourceId": src, "WaitSeconds": 1}))["Commands"]
        assert cmd["Params"] == {"ReadLimitKBps": 0}, "only what changed is sent"
        (view,) = (await admin.call("DescribeTasks", {"TaskIds": [tid]}))["TaskSet"]
        assert (view["RoundIntervalSeconds"], view["ReadLimitKBps"], view["PreHook"]) == (3, 0, "systemctl stop app")
        events = [e["Message"] for e in (await admin.call("DescribeTaskEvents", {"TaskId": tid}))["EventSet"]]
        assert "RoundIntervalSeconds 10 -> 3, ReadLimitKBps None -> 2048 by test-admin" in events, events

        # the agent reports what it applies (also a change made with migratectl on the source)
        await agent.call("ReportTaskProgress", {"SourceId": src, "TaskId": tid, "State": "syncing",
                                                "Round": 2, "RoundIntervalSeconds": 45.0, "ReadLimitKBps": 0})
        (view,) = (await admin.call("DescribeTasks", {"TaskIds": [tid]}))["TaskSet"]
        assert (view["Progress"]["RoundIntervalSeconds"], view["Progress"]["ReadLimitKBps"]) == (45.0, 0)

        await agent.call("ReportTaskProgress", {"SourceId": src, "TaskId": tid, "State": "verifying"})
        await agent.call("ReportTaskProgress", {"SourceId": src, "TaskId": tid, "State": "success"})
        with pytest.raises(ConsoleError) as ei:
            await admin.call("ModifyTaskRounds", {"TaskId": tid, "RoundIntervalSeconds": 5})
        assert ei.value.code == "FailedOperation.ActionDenied" and "task that is success" in ei.value.message

        # a one-shot task: a clear error
        await admin.call("DeleteTask", {"TaskId": tid})
        one = (await admin.call("CreateTask", task_params(src)))["TaskId"]
        with pytest.raises(ConsoleError) as ei:
            await admin.call("ModifyTaskRounds", {"TaskId": one, "RoundIntervalSeconds": 5})
        assert ei.value.code == "FailedOperation.NotContinuous"
        assert "not a continuous task (created without ContinuousSync)" in ei.value.message
        (view,) = (await admin.call("DescribeTasks", {"TaskIds": [one]}))["TaskSet"]
        assert view["Quiesce"] is None and view["PreHook"] is None and view["ContinuousSync"] is False
        assert view["ConsistentFinish"] is False

        # a one-shot task with a consistent finish: its cutover options reach the agent; no rounds to change
        await admin.call("DeleteTask", {"TaskId": one})
        fin = (await admin.call("CreateTask", task_params(src, ConsistentFinish=True, Quiesce="freeze",
                                                          FreezeBudgetSeconds=12, PostHook="systemctl start app",
                                                          HookTimeoutSeconds=900)))["TaskId"]
        (view,) = (await admin.call("DescribeTasks", {"TaskIds": [fin]}))["TaskSet"]
        assert (view["ContinuousSync"], view["ConsistentFinish"], view["FreezeBudgetSeconds"]) == (False, True, 12)
        with pytest.raises(ConsoleError) as ei:
            await admin.call("ModifyTaskRounds", {"TaskId": fin, "RoundIntervalSeconds": 5})
        assert ei.value.code == "FailedOperation.NotContinuous"
        await admin.call("StartTask", {"TaskId": fin})
        cmds = (await agent.call("PollCommands", {"SourceId": src, "WaitSeconds": 1}))["Commands"]
        start = [c for c in cmds if c["Action"] == "start"][-1]
        assert (start["Task"]["ContinuousSync"], start["Task"]["ConsistentFinish"]) == (False, True)
        assert (start["Task"]["Quiesce"], start["Task"]["FreezeBudgetSeconds"]) == ("freeze", 12)
        # what the agent makes of it (its own spec reader)
        from migrated.agent.runners.continuous import _options
        from migrated.agent.state import TaskRecord as AgentTask

        copts = _options(AgentTask(task_id=fin, spec=start["Task"], state="starting"))
        assert (copts.hook_timeout, copts.freeze_budget, copts.post_hook) == (900.0, 12.0, "systemctl start app")


async def test_api_lvm_quiesce_reaches_the_agent(console):
    """Quiesce lvm and SnapshotSize: refused with the parameter named, stored, shown by DescribeTasks,
    and in the start command's task spec the agent gets from PollCommands, which the agent's own
    spec reader turns into an LVM-snapshot cutover of that size."""
    from migrated.agent.runners.continuous import _options
    from migrated.agent.state import TaskRecord

    sid, sk = await console.new_key("agent")
    async with console.client(sid, sk) as agent, console.client(console.admin_id, console.admin_key) as admin:
        src = await register(agent)
        for over, words in [({"Quiesce": "lvm", "SnapshotSize": "20 percent"},
                             "parameter SnapshotSize: '20 percent' is not a snapshot size"),
                            ({"SnapshotSize": "2G"}, "parameter SnapshotSize: only with Quiesce lvm"),
                            ({"Quiesce": "hooks", "PreHook": "true", "SnapshotSize": "2G"},
                             "parameter SnapshotSize: only with Quiesce lvm")]:
            with pytest.raises(ConsoleError) as ei:
                await admin.call("CreateTask", task_params(src, ContinuousSync=True, **over))
            assert ei.value.code == "InvalidParameterValue" and words in ei.value.message, ei.value
        _, total = await console.service.storage.list_tasks()
        assert total == 0, "nothing stored for a refused request"

        # without a size: null, and the agent uses its default
        tid = (await admin.call("CreateTask", task_params(src, ContinuousSync=True, Quiesce="lvm")))["TaskId"]
        (view,) = (await admin.call("DescribeTasks", {"TaskIds": [tid]}))["TaskSet"]
        assert (view["Quiesce"], view["SnapshotSize"]) == ("lvm", None)
        await admin.call("DeleteTask", {"TaskId": tid})

        tid = (await admin.call("CreateTask", task_params(src, ContinuousSync=True, Quiesce="lvm",
                                                          SnapshotSize="20%ORIGIN", FreezeBudgetSeconds=15)))["TaskId"]
        (view,) = (await admin.call("DescribeTasks", {"TaskIds": [tid]}))["TaskSet"]
        assert (view["Quiesce"], view["SnapshotSize"], view["FreezeBudgetSeconds"]) == ("lvm", "20%ORIGIN", 15)
        await admin.call("StartTask", {"TaskId": tid})
        (start,) = (await agent.call("PollCommands", {"SourceId": src, "WaitSeconds": 1}))["Commands"]
        spec = start["Task"]
        assert (spec["ContinuousSync"], spec["Quiesce"], spec["SnapshotSize"]) == (True, "lvm", "20%ORIGIN")
        copts = _options(TaskRecord(task_id=tid, spec=spec, state="starting"))
        copts.validate()
        assert (copts.quiesce, copts.snapshot_size, copts.freeze_budget) == ("lvm", "20%ORIGIN", 15.0)


def test_console_cli_cutover_options_and_set_rounds(tmp_path):
    """`migrate-console tasks create --continuous --quiesce ... --pre-hook @FILE`, `tasks show`,
    `tasks set-rounds` as real processes against a real console process."""
    import asyncio
    import json

    from migrated.console.client import ConsoleClient
    from tests.console_proc import ConsoleProcess, run_cli, write_config

    cfg = write_config(tmp_path, tmp_path / "console.db")
    proc = ConsoleProcess(cfg, tmp_path / "console.log").start()
    try:
        creds = tmp_path / "admin.yaml"
        r = run_cli("keys", "create", "--local", "--config", str(cfg), "--role", "admin", "--name", "ops",
                    "--save", str(creds), "--endpoint", proc.url)
        assert r.returncode == 0, r.stderr
        c = ["--credentials", str(creds)]
        agent_key = json.loads(run_cli("keys", "create", "--role", "agent", "--name", "a", "--json", *c).stdout)

        async def registers() -> str:
            async with ConsoleClient(proc.url, agent_key["SecretId"], agent_key["SecretKey"]) as a:
                return await register(a, "web01")

        src = asyncio.run(registers())
        hook = tmp_path / "pre-hook"
        hook.write_text("mysql -p'$ecret' -e 'FLUSH TABLES WITH READ LOCK'\n")
        create = ["tasks", "create", "--source", src, "--name", "t", "--region", "ap-guangzhou", "--target-type",
                  "image", "--image-name", "img", "--target-ssh", "root@203.0.113.7", "--target-host-key", HOST_KEY,
                  *c]
        r = run_cli(*create, "--quiesce", "hooks")
        assert r.returncode == 2 and "--quiesce" in r.stderr and "need --continuous" in r.stderr, r.stderr
        r = run_cli(*create, "--continuous", "--quiesce", "hooks")
        assert r.returncode != 0 and "parameter PreHook: required when Quiesce is hooks" in r.stderr, r.stderr
        r = run_cli(*create, "--continuous", "--pre-hook", f"@{tmp_path / 'missing'}")
        assert r.returncode == 2 and "--pre-hook @" in r.stderr and "cannot read" in r.stderr, r.stderr
        r = run_cli(*create, "--continuous", "--quiesce", "hooks", "--pre-hook", f"@{hook}", "--post-hook",
                    "systemctl start app", "--freeze-budget", "90", "--round-interval", "30", "--json")
        assert r.returncode == 0, r.stderr
        task_id = json.loads(r.stdout)["TaskId"]
        shown = run_cli("tasks", "show", task_id, *c).stdout
        assert "every 30 s" in shown and "quiesce hooks, freeze budget 90 s, pre hook set, post hook set" in shown
        assert "$ecret" not in shown, "the plain view does not print hook commands"
        view = json.loads(run_cli("tasks", "show", task_id, "--json", *c).stdout)
        assert view["PreHook"] == "mysql -p'$ecret' -e 'FLUSH TABLES WITH READ LOCK'"
        r = run_cli("tasks", "set-rounds", task_id, *c)
        assert r.returncode == 2 and "give --round-interval and/or --read-limit" in r.stderr
        r = run_cli("tasks", "set-rounds", task_id, "--round-interval", "5", "--read-limit", "1024", *c)
        assert r.returncode == 0, r.stderr
        assert f"task {task_id}: a round every 5 s, source read limit 1.0 MiB/s" in r.stdout
        assert "every 5 s, source read limit 1.0 MiB/s" in run_cli("tasks", "show", task_id, *c).stdout

        # --quiesce lvm --snapshot-size, on a second source (one unfinished task per source)
        async def registers2() -> str:
            async with ConsoleClient(proc.url, agent_key["SecretId"], agent_key["SecretKey"]) as a:
                return await register(a, "web02")

        src2 = asyncio.run(registers2())
        create2 = [*create[:3], src2, *create[4:]]
        r = run_cli(*create2, "--snapshot-size", "2G")
        assert r.returncode == 2 and "--snapshot-size need --continuous" in r.stderr, r.stderr
        r = run_cli(*create2, "--continuous", "--snapshot-size", "2G")
        assert r.returncode != 0 and "parameter SnapshotSize: only with Quiesce lvm" in r.stderr, r.stderr
        r = run_cli(*create2, "--continuous", "--quiesce", "lvm", "--snapshot-size", "20", "--json")
        assert r.returncode == 0, r.stderr  # 20 MiB, as lvcreate reads a size without a unit
        assert run_cli("tasks", "delete", json.loads(r.stdout)["TaskId"], *c).returncode == 0
        r = run_cli(*create2, "--continuous", "--quiesce", "lvm", "--snapshot-size", "20%", "--json")
        assert r.returncode != 0 and "parameter SnapshotSize: '20%' is not a snapshot size" in r.stderr, r.stderr
        r = run_cli(*create2, "--continuous", "--quiesce", "lvm", "--snapshot-size", "20%ORIGIN", "--json")
        assert r.returncode == 0, r.stderr
        lvm_id = json.loads(r.stdout)["TaskId"]
        assert "quiesce lvm (snapshot size 20%ORIGIN), freeze budget 30 s" in run_cli("tasks", "show", lvm_id,
                                                                                      *c).stdout
        view = json.loads(run_cli("tasks", "show", lvm_id, "--json", *c).stdout)
        assert (view["Quiesce"], view["SnapshotSize"]) == ("lvm", "20%ORIGIN")
        assert run_cli("tasks", "delete", lvm_id, *c).returncode == 0

        # a one-shot task with a consistent finish
        r = run_cli(*create2, "--consistent-finish", "--round-interval", "30")
        assert r.returncode == 2 and "a consistent finish has no rounds" in r.stderr, r.stderr
        r = run_cli(*create2, "--consistent-finish", "--continuous")
        assert r.returncode == 2 and "always ends with a cutover" in r.stderr, r.stderr
        r = run_cli(*create2, "--consistent-finish", "--freeze-budget", "15", "--json")
        assert r.returncode == 0, r.stderr
        shown = run_cli("tasks", "show", json.loads(r.stdout)["TaskId"], *c).stdout
        assert "Finish        consistent: cutover right after the full pass" in shown, shown
        assert "quiesce freeze, freeze budget 15 s" in shown and "Continuous" not in shown, shown
    finally:
        assert proc.stop() == 0
