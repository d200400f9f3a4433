"""The console API end to end: a real console on 127.0.0.1 port 0 with a real SQLite file,
driven by the official Tencent Cloud SDK clients (sync and async) and by our ConsoleClient."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from migrated.errors import ConsoleError
from tests.console_support import DISKS, HOST_KEY, register, running_console, task_params


@pytest.fixture
async def console(tmp_path):
    async with running_console(tmp_path, agents={"command_visibility_seconds": 1.0}) as c:
        yield c


async def sdk_call(client, action, params):
    return (await asyncio.to_thread(client.call_json, action, params))["Response"]


async def sdk_error(client, action, params) -> TencentCloudSDKException:
    with pytest.raises(TencentCloudSDKException) as ei:
        await asyncio.to_thread(client.call_json, action, params)
    return ei.value


async def test_every_action_with_the_official_sdk(console):
    admin = console.sdk()
    k = await sdk_call(admin, "CreateKey", {"Role": "agent", "Name": "fleet"})
    assert k["SecretId"].startswith("AKID") and len(k["SecretKey"]) >= 32
    keys = await sdk_call(admin, "DescribeKeys", {})
    assert {x["Name"]: x["Status"] for x in keys["KeySet"]} == {"test-admin": "active", "fleet": "active"}
    assert all("SecretKey" not in x for x in keys["KeySet"])

    agent = console.sdk(k["SecretId"], k["SecretKey"])
    reg = {"MachineId": "m-1", "Hostname": "web01", "OsName": "Debian 12", "AgentVersion": "0.1.0", "Disks": DISKS}
    src = (await sdk_call(agent, "RegisterSource", reg))["SourceId"]
    again = await sdk_call(agent, "RegisterSource", {**reg, "AgentVersion": "0.1.1"})
    assert again["SourceId"] == src, "RegisterSource is idempotent per MachineId"
    assert again["HeartbeatIntervalSeconds"] == 10

    # the async SDK client (httpx) against the same console
    async with console.sdk_async(k["SecretId"], k["SecretKey"]) as aagent:
        hb = (await aagent.call_and_deserialize("Heartbeat", {"SourceId": src, "AgentVersion": "0.1.1"}))["Response"]
    assert abs(hb["ServerTime"] - time.time()) < 5 and hb["HeartbeatIntervalSeconds"] == 10

    srcs = await sdk_call(admin, "DescribeSources", {})
    (s,) = srcs["SourceSet"]
    assert (s["SourceId"], s["Status"], s["AgentVersion"], s["Hostname"]) == (src, "online", "0.1.1", "web01")
    assert [d["Name"] for d in s["Disks"]] == ["/dev/vda", "/dev/vdb", "/dev/vdc"]

    # image target; the default disk mapping is the system disk and every mounted disk
    t = await sdk_call(admin, "CreateTask", task_params(src, TargetType="image", ImageName="web01-img",
                                                        TargetInstanceId="", Description="move web01"))
    tid = t["TaskId"]
    assert (t["State"], t["ImageName"]) == ("created", "web01-img")
    desc = await sdk_call(admin, "DescribeTasks", {"TaskIds": [tid]})
    (task,) = desc["TaskSet"]
    assert task["DiskMapping"] == [{"Source": "/dev/vda", "Target": "/dev/vda"},
                                   {"Source": "/dev/vdb", "Target": "/dev/vdb"}]
    assert task["AllowedActions"] == ["start", "delete"]
    assert (await sdk_call(admin, "DescribeTasks", {"SourceId": src, "States": ["created"]}))["TotalCount"] == 1
    assert (await sdk_call(admin, "DescribeTasks", {"States": ["paused"]}))["TotalCount"] == 0

    started = await sdk_call(admin, "StartTask", {"TaskId": tid})
    assert started["State"] == "starting" and started["CommandId"]
    polled = await sdk_call(agent, "PollCommands", {"SourceId": src, "WaitSeconds": 5})
    (cmd,) = polled["Commands"]
    assert (cmd["CommandId"], cmd["Action"], cmd["TaskId"]) == (started["CommandId"], "start", tid)
    assert cmd["Task"]["TargetHostKey"] == HOST_KEY and cmd["Task"]["BandwidthLimitKBps"] == 20480
    assert cmd["Task"]["Checksum"] is True and cmd["Task"]["ImageName"] == "web01-img"
    ack = {"SourceId": src, "CommandId": cmd["CommandId"], "Result": "ok", "Message": "started"}
    assert (await sdk_call(agent, "AckCommand", ack))["Result"] == "ok"
    assert (await sdk_call(agent, "AckCommand", {**ack, "Message": "again"}))["Result"] == "ok", "ack is idempotent"

    prog = {"SourceId": src, "TaskId": tid, "State": "transferring", "Stage": "transfer",
            "Disks": [{"Name": "/dev/vda", "Target": "/dev/vda", "BytesTotal": 1000, "BytesDone": 250,
                       "BytesSent": 100}], "RateBps": 1e6, "EtaSeconds": 12.5, "Message": ""}
    assert (await sdk_call(agent, "ReportTaskProgress", prog))["State"] == "transferring"
    ev = await sdk_call(agent, "ReportTaskEvent", {"SourceId": src, "TaskId": tid, "Level": "warning",
                                                   "Stage": "transfer", "Message": "slow disk"})
    assert ev["EventId"] > 0

    bw = await sdk_call(admin, "ModifyTaskBandwidth", {"TaskId": tid, "BandwidthLimitKBps": 1024})
    assert bw["BandwidthLimitKBps"] == 1024 and bw["CommandId"]
    pause = await sdk_call(admin, "PauseTask", {"TaskId": tid})
    assert pause["State"] == "transferring", "stays transferring until the agent reports paused"
    polled = await sdk_call(agent, "PollCommands", {"SourceId": src, "WaitSeconds": 1})
    assert [(c["Action"], c["Params"]) for c in polled["Commands"]] == [
        ("set-bandwidth", {"BandwidthLimitKBps": 1024}), ("pause", {})]
    assert polled["Commands"][0]["Task"]["BandwidthLimitKBps"] == 1024
    for c in polled["Commands"]:
        await sdk_call(agent, "AckCommand", {"SourceId": src, "CommandId": c["CommandId"], "Result": "ok"})
    await sdk_call(agent, "ReportTaskProgress", {**prog, "State": "paused"})

    (task,) = (await sdk_call(admin, "DescribeTasks", {"TaskIds": [tid]}))["TaskSet"]
    assert task["State"] == "paused" and task["Progress"]["Percent"] == 25.0
    assert task["Progress"]["BytesDone"] == 250 and task["Progress"]["EtaSeconds"] == 12.5
    assert task["AllowedActions"] == ["start", "retry", "delete"]

    retry = await sdk_call(admin, "RetryTask", {"TaskId": tid})
    assert retry["State"] == "starting"
    await sdk_call(agent, "ReportTaskProgress", {**prog, "State": "failed", "Message": "target unreachable"})
    deleted = await sdk_call(admin, "DeleteTask", {"TaskId": tid})
    assert deleted["State"] == "deleted" and deleted["CommandId"], "the agent must drop its checkpoint"
    polled = await sdk_call(agent, "PollCommands", {"SourceId": src, "WaitSeconds": 1})
    assert [c["Action"] for c in polled["Commands"]] == ["retry", "delete"]

    events = (await sdk_call(admin, "DescribeTaskEvents", {"TaskId": tid}))["EventSet"]
    text = "\n".join(e["Message"] for e in events)
    assert "slow disk" in text and "target unreachable" in text and "transferring -> paused" in text
    assert [e["EventId"] for e in events] == sorted(e["EventId"] for e in events)

    # the same image name again: the new task's ID is appended
    t2 = await sdk_call(admin, "CreateTask", task_params(src, TargetType="image", ImageName="web01-img",
                                                         TargetInstanceId=""))
    assert t2["ImageName"] == f"web01-img-{t2['TaskId']}"
    await sdk_call(admin, "DeleteTask", {"TaskId": t2["TaskId"]})

    assert (await sdk_call(admin, "RemoveSource", {"SourceId": src}))["SourceId"] == src
    assert (await sdk_call(admin, "DescribeSources", {}))["TotalCount"] == 0
    revoked = await sdk_call(admin, "RevokeKey", {"SecretId": k["SecretId"]})
    assert revoked["Status"] == "revoked"
    err = await sdk_error(agent, "Heartbeat", {"SourceId": src})
    assert err.code == "AuthFailure.SecretIdNotFound"


async def test_our_client_and_its_errors(console):
    sid, sk = await console.new_key("agent")
    async with console.client(sid, sk) as agent:
        src = await register(agent)
        # identical calls in the same second are fine: our client signs a nonce
        for _ in range(3):
            await agent.call("Heartbeat", {"SourceId": src})
        with pytest.raises(ConsoleError) as ei:
            await agent.call("Heartbeat", {"SourceId": "src-nope"})
        assert ei.value.code == "ResourceNotFound.Source" and not ei.value.retryable
        assert "src-nope" in ei.value.message and ei.value.request_id
    from migrated.console.client import ConsoleClient
    from migrated.errors import ConnectionFailed

    async with ConsoleClient("http://127.0.0.1:9", sid, sk, timeout=5) as dead:
        with pytest.raises(ConnectionFailed) as ce:
            await dead.call("Heartbeat", {"SourceId": src})
        assert ce.value.retryable


# ------------------------------------------------------------------ auth and bad requests


async def raw_post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, str, dict]:
    async with aiohttp.ClientSession() as s, s.post(url + "/", data=body, headers=headers) as r:
        return r.status, r.headers["Content-Type"], json.loads(await r.read())


def error_of(reply: dict) -> tuple[str, str]:
    err = reply["Response"]["Error"]
    assert reply["Response"]["RequestId"]
    return err["Code"], err["Message"]


async def test_auth_failures_with_the_sdk(console):
    e = await sdk_error(console.sdk("AKIDunknown000000000000000000000000", "x" * 40), "DescribeKeys", {})
    assert e.code == "AuthFailure.SecretIdNotFound"
    e = await sdk_error(console.sdk(console.admin_id, "wrong-key"), "DescribeKeys", {})
    assert e.code == "AuthFailure.SignatureFailure"
    e = await sdk_error(console.sdk(service="cvm"), "DescribeKeys", {})
    assert e.code == "AuthFailure.InvalidAuthorization" and "'cvm'" in e.message
    e = await sdk_error(console.sdk(), "NoSuchThing", {})
    assert e.code == "InvalidAction"


async def test_signature_expire_missing_headers_replay(console):
    c = console.client(console.admin_id, console.admin_key)
    headers, body = c.signed_request("DescribeKeys", {}, timestamp=int(time.time()) - 1000)
    status, ctype, reply = await raw_post(console.url, headers, body)
    assert (status, ctype) == (200, "application/json")
    code, msg = error_of(reply)
    assert code == "AuthFailure.SignatureExpire" and "clock" in msg

    headers, body = c.signed_request("DescribeKeys", {})
    for missing, want in [("X-TC-Action", "MissingParameter"), ("X-TC-Timestamp", "MissingParameter"),
                          ("X-TC-Version", "MissingParameter"), ("Authorization", "AuthFailure.InvalidAuthorization"),
                          ("X-TC-Nonce", "AuthFailure.InvalidAuthorization")]:
        h = {k: v for k, v in headers.items() if k != missing}
        code, msg = error_of((await raw_post(console.url, h, body))[2])
        assert code == want, (missing, code, msg)
        assert missing in msg or missing.lower() in msg

    bad = dict(headers, Authorization="Basic dXNlcjpwYXNz")
    assert error_of((await raw_post(console.url, bad, body))[2])[0] == "AuthFailure.InvalidAuthorization"
    tampered = body.replace(b"{}", b'{"X":1}')
    assert error_of((await raw_post(console.url, headers, tampered))[2])[0] == "AuthFailure.SignatureFailure"

    ok = await raw_post(console.url, headers, body)
    assert "KeySet" in ok[2]["Response"]
    code, _ = error_of((await raw_post(console.url, headers, body))[2])
    assert code == "AuthFailure.ReplayedRequest"
    # our client signs X-TC-Action: the captured request cannot be re-sent as another action
    code, _ = error_of((await raw_post(console.url, dict(headers, **{"X-TC-Action": "RevokeKey"}), body))[2])
    assert code == "AuthFailure.SignatureFailure"
    headers, body = c.signed_request("DescribeKeys", {})
    code, msg = error_of((await raw_post(console.url, dict(headers, **{"X-TC-Version": "2017-03-12"}), body))[2])
    assert code == "NoSuchVersion" and "2026-11-01" in msg
    await c.close()


async def test_body_cap_bad_json_and_wrong_types(console):
    c = console.client(console.admin_id, console.admin_key)
    big = {"Name": "x" * (2 << 20), "Role": "admin"}
    with pytest.raises(ConsoleError) as ei:
        await c.call("CreateKey", big)
    assert ei.value.code == "RequestSizeLimitExceeded"

    # a correctly signed body that is not JSON
    from migrated.model import tc3

    for raw, want in [(b"{not json", "the body is not valid JSON"), (b"[1,2]", "must be a JSON object")]:
        h = tc3.sign_headers(secret_id=console.admin_id, secret_key=console.admin_key, service="migrate",
                             host=c.host, action="DescribeKeys", version="2026-11-01",
                             timestamp=int(time.time()), body=raw, nonce=raw.hex())
        status, ctype, reply = await raw_post(console.url, h, raw)
        code, msg = error_of(reply)
        assert (status, ctype, code) == (200, "application/json", "InvalidParameter") and want in msg

    cases = [
        ("CreateKey", {"Name": "x"}, "MissingParameter", "Role"),
        ("CreateKey", {"Role": "root", "Name": "x"}, "InvalidParameterValue", "Role"),
        ("CreateKey", {"Role": "admin", "Name": 5}, "InvalidParameter", "Name"),
        ("CreateKey", {"Role": "admin", "Name": "x", "Color": "red"}, "UnknownParameter", "Color"),
        ("DescribeTasks", {"Limit": "10"}, "InvalidParameter", "Limit"),
        ("DescribeTasks", {"Limit": True}, "InvalidParameter", "Limit"),
        ("DescribeTasks", {"States": ["running"]}, "InvalidParameterValue", "States"),
        ("DescribeTasks", {"TaskIds": "task-1"}, "InvalidParameter", "TaskIds"),
        ("CreateTask", task_params("src-x", TargetSsh="203.0.113.7"), "InvalidParameterValue", "TargetSsh"),
        ("CreateTask", task_params("src-x", TargetHostKey="not a key"), "InvalidParameterValue", "TargetHostKey"),
        ("CreateTask", task_params("src-x", Checksum="yes"), "InvalidParameter", "Checksum"),
        ("CreateTask", task_params("src-x", DiskMapping=[{"Source": "/dev/vda"}]), "MissingParameter",
         "DiskMapping.0.Target"),
    ]
    for action, params, code, name in cases:
        with pytest.raises(ConsoleError) as ei:
            await c.call(action, params)
        assert (ei.value.code, name in ei.value.message) == (code, True), (action, params, ei.value)

    sid, sk = await console.new_key("agent")
    async with console.client(sid, sk) as agent:
        with pytest.raises(ConsoleError) as ei:
            await agent.call("RegisterSource", {"MachineId": "m", "Hostname": "h",
                                                "Disks": [{"Name": "/dev/vda", "SizeBytes": -1}]})
        assert ei.value.code == "InvalidParameterValue" and "Disks.0.SizeBytes" in ei.value.message
        with pytest.raises(ConsoleError) as ei:
            await agent.call("PollCommands", {"SourceId": "src-x", "WaitSeconds": 31})
        assert ei.value.code == "InvalidParameterValue" and "WaitSeconds" in ei.value.message
    await c.close()


async def test_roles_and_ownership(console):
    a_id, a_key = await console.new_key("agent", "a")
    b_id, b_key = await console.new_key("agent", "b")
    async with console.client(a_id, a_key) as a, console.client(b_id, b_key) as b, \
            console.client(console.admin_id, console.admin_key) as admin:
        src = await register(a, "machine-a")
        with pytest.raises(ConsoleError) as ei:
            await a.call("CreateTask", task_params(src))
        assert ei.value.code == "AuthFailure.UnauthorizedOperation" and "admin key" in ei.value.message
        with pytest.raises(ConsoleError) as ei:
            await admin.call("Heartbeat", {"SourceId": src})
        assert ei.value.code == "AuthFailure.UnauthorizedOperation"
        for action, params in [("Heartbeat", {"SourceId": src}),
                               ("PollCommands", {"SourceId": src}),
                               ("AckCommand", {"SourceId": src, "CommandId": "cmd-x", "Result": "ok"})]:
            with pytest.raises(ConsoleError) as ei:
                await b.call(action, params)
            assert ei.value.code == "AuthFailure.UnauthorizedOperation", action
        # b cannot take over a machine while a's key is live; after a is revoked it can (key rotation)
        with pytest.raises(ConsoleError) as ei:
            await register(b, "machine-a")
        assert ei.value.code == "FailedOperation.MachineOwnedByOtherKey"
        await admin.call("RevokeKey", {"SecretId": a_id})
        with pytest.raises(ConsoleError) as ei:
            await a.call("Heartbeat", {"SourceId": src})
        assert ei.value.code == "AuthFailure.SecretIdNotFound", "a revoked key stops at once"
        assert await register(b, "machine-a") == src
        await b.call("Heartbeat", {"SourceId": src})
        with pytest.raises(ConsoleError) as ei:
            await admin.call("RevokeKey", {"SecretId": console.admin_id})
        assert ei.value.code == "FailedOperation.LastAdminKey"


# ------------------------------------------------------------------ task rules


async def test_task_rules(console):
    sid, sk = await console.new_key("agent")
    async with console.client(sid, sk) as agent, console.client(console.admin_id, console.admin_key) as admin:
        src = await register(agent)
        tid = (await admin.call("CreateTask", task_params(src)))["TaskId"]
        with pytest.raises(ConsoleError) as ei:
            await admin.call("PauseTask", {"TaskId": tid})
        assert ei.value.code == "FailedOperation.ActionDenied"
        assert "cannot pause a task that is created; pause is allowed when syncing, transferring" in ei.value.message
        with pytest.raises(ConsoleError) as ei:
            await admin.call("CreateTask", task_params(src, TaskName="second"))
        assert ei.value.code == "ResourceInUse.Source" and tid in ei.value.message
        with pytest.raises(ConsoleError) as ei:
            await admin.call("RemoveSource", {"SourceId": src})
        assert ei.value.code == "ResourceInUse.Source"
        with pytest.raises(ConsoleError) as ei:
            await agent.call("ReportTaskProgress", {"SourceId": src, "TaskId": tid, "State": "success"})
        assert ei.value.code == "FailedOperation.IllegalStateTransition"
        assert "from created to success" in ei.value.message
        with pytest.raises(ConsoleError) as ei:
            await admin.call("CreateTask", task_params(src, TargetType="image", TargetInstanceId=""))
        assert ei.value.code == "MissingParameter" and "ImageName" in ei.value.message
        await admin.call("DeleteTask", {"TaskId": tid})
        with pytest.raises(ConsoleError) as ei:
            await admin.call("StartTask", {"TaskId": tid})
        assert ei.value.code == "FailedOperation.ActionDenied" and "deleted" in ei.value.message

        soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 300))
        with pytest.raises(ConsoleError) as ei:
            await admin.call("CreateTask", task_params(src, ScheduledStartTime=soon))
        assert ei.value.code == "InvalidParameterValue" and "at least 10 minutes" in ei.value.message
        later = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 3600))
        t = await admin.call("CreateTask", task_params(src, ScheduledStartTime=later))
        assert t["State"] == "scheduled"
        (view,) = (await admin.call("DescribeTasks", {"TaskIds": [t["TaskId"]]}))["TaskSet"]
        assert view["ScheduledStartTime"] == later + "Z"
        with pytest.raises(ConsoleError) as ei:
            await admin.call("CreateTask", task_params(src, DiskMapping=[{"Source": "/dev/sdz", "Target": "/dev/vda"}]))
        assert "DiskMapping.0.Source" in ei.value.message and "/dev/sdz" in ei.value.message


async def test_start_refused_while_source_offline(tmp_path):
    async with running_console(tmp_path, agents={"heartbeat_interval_seconds": 0.2}) as c:
        sid, sk = await c.new_key("agent")
        async with c.client(sid, sk) as agent, c.client(c.admin_id, c.admin_key) as admin:
            src = await register(agent)
            tid = (await admin.call("CreateTask", task_params(src)))["TaskId"]
            await asyncio.sleep(1.0)
            with pytest.raises(ConsoleError) as ei:
                await admin.call("StartTask", {"TaskId": tid})
            assert ei.value.code == "FailedOperation.SourceOffline" and src in ei.value.message


# ------------------------------------------------------------------ long-poll, redelivery, offline


async def test_long_poll_returns_when_a_command_is_queued(console):
    sid, sk = await console.new_key("agent")
    async with console.client(sid, sk) as agent, console.client(console.admin_id, console.admin_key) as admin:
        src = await register(agent)
        tid = (await admin.call("CreateTask", task_params(src)))["TaskId"]
        t0 = time.monotonic()
        poll = asyncio.create_task(agent.call("PollCommands", {"SourceId": src, "WaitSeconds": 30}))
        await asyncio.sleep(0.5)
        assert not poll.done(), "nothing queued yet: the poll is held"
        started = await admin.call("StartTask", {"TaskId": tid})
        res = await poll
        elapsed = time.monotonic() - t0
        assert [c["CommandId"] for c in res["Commands"]] == [started["CommandId"]]
        assert elapsed < 30, "returned when the command was queued, not at the end of the wait"


async def test_unacked_commands_are_redelivered_acked_ones_are_not(console):
    sid, sk = await console.new_key("agent")
    async with console.client(sid, sk) as agent, console.client(console.admin_id, console.admin_key) as admin:
        src = await register(agent)
        tid = (await admin.call("CreateTask", task_params(src)))["TaskId"]
        cid = (await admin.call("StartTask", {"TaskId": tid}))["CommandId"]
        first = await agent.call("PollCommands", {"SourceId": src, "WaitSeconds": 5})
        assert [c["CommandId"] for c in first["Commands"]] == [cid]
        # not acked: after the visibility timeout (1 s here) it comes again, within this held poll
        again = await agent.call("PollCommands", {"SourceId": src, "WaitSeconds": 10})
        assert [c["CommandId"] for c in again["Commands"]] == [cid]
        await agent.call("AckCommand", {"SourceId": src, "CommandId": cid, "Result": "ok"})
        after = await agent.call("PollCommands", {"SourceId": src, "WaitSeconds": 2})
        assert after["Commands"] == []
        with pytest.raises(ConsoleError) as ei:
            await agent.call("AckCommand", {"SourceId": src, "CommandId": "cmd-unknown", "Result": "ok"})
        assert ei.value.code == "ResourceNotFound.Command"


async def test_offline_after_three_missed_beats(tmp_path):
    async with running_console(tmp_path, agents={"heartbeat_interval_seconds": 0.2}) as c:
        sid, sk = await c.new_key("agent")
        async with c.client(sid, sk) as agent:
            src = await register(agent)
            hb = await agent.call("Heartbeat", {"SourceId": src})
            assert hb["HeartbeatIntervalSeconds"] == 0.2
            beat = time.monotonic()

            async def status() -> str:
                return (await c.admin_call("DescribeSources", {"SourceIds": [src]}))["SourceSet"][0]["Status"]

            assert await status() == "online"
            deadline = time.monotonic() + 30
            while (st := await status()) == "online" and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert st == "offline"
            assert time.monotonic() - beat >= 3 * 0.2  # not before three beats were missed
            await agent.call("Heartbeat", {"SourceId": src})
            assert await status() == "online"


async def test_concurrent_agents_each_get_their_own_commands(console):
    sid, sk = await console.new_key("agent", "fleet")
    n = 40
    clients = [console.client(sid, sk) for _ in range(n)]
    admin = console.client(console.admin_id, console.admin_key)
    try:
        srcs = await asyncio.gather(*(register(cl, f"m-{i}") for i, cl in enumerate(clients)))
        assert len(set(srcs)) == n
        polls = [asyncio.create_task(cl.call("PollCommands", {"SourceId": s, "WaitSeconds": 20}))
                 for cl, s in zip(clients, srcs, strict=True)]
        await asyncio.sleep(0.3)
        tids = [(await admin.call("CreateTask", task_params(s, TaskName=f"t{i}")))["TaskId"]
                for i, s in enumerate(srcs)]
        cmds = await asyncio.gather(*(admin.call("StartTask", {"TaskId": t}) for t in tids))
        results = await asyncio.gather(*polls)
        for tid, cmd, res in zip(tids, cmds, results, strict=True):
            assert [(c["CommandId"], c["TaskId"]) for c in res["Commands"]] == [(cmd["CommandId"], tid)]
    finally:
        for cl in clients:
            await cl.close()
        await admin.close()


async def test_healthz_and_metrics(console):
    async with aiohttp.ClientSession() as s:
        async with s.get(console.url + "/healthz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        sid, sk = await console.new_key("agent")
        async with console.client(sid, sk) as agent:
            await register(agent)
            poll = asyncio.create_task(agent.call("PollCommands", {"SourceId": (await register(agent, "m2")),
                                                                   "WaitSeconds": 3}))
            await asyncio.sleep(0.5)
            async with s.get(console.url + "/metrics") as r:
                text = await r.text()
            await poll
    assert 'migrate_console_sources{status="online"} 2.0' in text
    assert "migrate_console_longpolls_held 1.0" in text
    assert 'migrate_console_tasks{state="created"} 0.0' in text
    assert 'migrate_console_request_seconds_count{action="RegisterSource"}' in text


async def test_concurrent_starts_queue_one_command(console):
    sid, sk = await console.new_key("agent")
    async with console.client(sid, sk) as agent, console.client(console.admin_id, console.admin_key) as admin:
        src = await register(agent)
        tid = (await admin.call("CreateTask", task_params(src)))["TaskId"]
        results = await asyncio.gather(*(admin.call("StartTask", {"TaskId": tid}) for _ in range(8)),
                                       return_exceptions=True)
        ok = [r for r in results if isinstance(r, dict)]
        refused = [r for r in results if isinstance(r, ConsoleError)]
        assert len(ok) == 1 and len(refused) == 7
        assert all(r.code == "FailedOperation.ActionDenied" for r in refused)
        got = await agent.call("PollCommands", {"SourceId": src, "WaitSeconds": 1})
        assert [c["CommandId"] for c in got["Commands"]] == [ok[0]["CommandId"]]


async def test_client_recovers_from_a_skewed_clock(console):
    from migrated.console.client import ConsoleClient

    skewed = ConsoleClient(console.url, console.admin_id, console.admin_key, clock=lambda: time.time() - 3600)
    async with skewed:
        r = await skewed.call("DescribeKeys", {})
        assert r["TotalCount"] == 1
        assert 3590 < skewed.clock_offset < 3610, "learnt from the console's Date header"
        await skewed.call("DescribeSources", {})  # the offset is kept
    wrong_key = ConsoleClient(console.url, console.admin_id, "wrong", clock=lambda: time.time() - 3600)
    async with wrong_key:
        with pytest.raises(ConsoleError) as ei:
            await wrong_key.call("DescribeKeys", {})
        assert ei.value.code == "AuthFailure.SignatureFailure"


async def test_scheduled_start_fires_at_its_time_once(tmp_path):
    async with running_console(tmp_path, scheduler={"min_lead_seconds": 1, "tick_seconds": 0.2}) as c:
        sid, sk = await c.new_key("agent")
        async with c.client(sid, sk) as agent, c.client(c.admin_id, c.admin_key) as admin:
            s1, s2 = await register(agent, "m-1"), await register(agent, "m-2")
            at = time.time() + 2.5
            iso_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z"
            t1 = (await admin.call("CreateTask", task_params(s1, ScheduledStartTime=iso_at)))["TaskId"]
            t2 = (await admin.call("CreateTask", task_params(s2, ScheduledStartTime=iso_at)))["TaskId"]
            # t2 is started by hand before its time: the scheduler must not start it again
            early = await admin.call("StartTask", {"TaskId": t2})
            got = await agent.call("PollCommands", {"SourceId": s1, "WaitSeconds": 15})
            assert time.time() >= at - 0.01, "not before its time"
            assert [(x["TaskId"], x["Action"]) for x in got["Commands"]] == [(t1, "start")]
            await asyncio.sleep(1.0)  # a few scheduler ticks past the time
            got2 = await agent.call("PollCommands", {"SourceId": s2, "WaitSeconds": 1})
            assert [x["CommandId"] for x in got2["Commands"]] == [early["CommandId"]]
            events = (await admin.call("DescribeTaskEvents", {"TaskId": t2}))["EventSet"]
            assert not any("by scheduler" in e["Message"] for e in events)


async def test_continuous_task_cutover_only_while_syncing(console):
    """ContinuousSync tasks: the agent gets the options; CutoverTask is refused until the task is
    syncing (rounds running), then queues a `cutover` command; round/lag/forecast/downtime come back."""
    sid, sk = await console.new_key("agent")
    async with console.client(sid, sk) as agent, console.client(console.admin_id, console.admin_key) as admin:
        src = await register(agent)
        with pytest.raises(ConsoleError) as ei:
            await admin.call("CreateTask", task_params(src, RoundIntervalSeconds=5))
        assert ei.value.code == "InvalidParameterValue" and "ContinuousSync" in ei.value.message
        tid = (await admin.call("CreateTask", task_params(src, ContinuousSync=True, RoundIntervalSeconds=5,
                                                          ReadLimitKBps=2048)))["TaskId"]
        for state in ("created", "starting", "transferring"):
            if state == "starting":
                await admin.call("StartTask", {"TaskId": tid})
            if state == "transferring":
                await agent.call("ReportTaskProgress", {"SourceId": src, "TaskId": tid, "State": "transferring"})
            with pytest.raises(ConsoleError) as ei:
                await admin.call("CutoverTask", {"TaskId": tid})
            assert ei.value.code == "FailedOperation.ActionDenied"
            assert f"cannot cutover a task that is {state}; cutover is allowed when syncing" in ei.value.message
        polled = await agent.call("PollCommands", {"SourceId": src, "WaitSeconds": 1})
        (start,) = polled["Commands"]
        assert start["Task"]["ContinuousSync"] is True
        assert (start["Task"]["RoundIntervalSeconds"], start["Task"]["ReadLimitKBps"]) == (5, 2048)
        await agent.call("AckCommand", {"SourceId": src, "CommandId": start["CommandId"], "Result": "ok"})

        rounds = {"SourceId": src, "TaskId": tid, "State": "syncing", "Stage": "rounds", "Phase": "waiting",
                  "Round": 3, "RoundChangedBytes": 4096, "LagSeconds": 7.5, "ForecastSeconds": 1.25,
                  "Advice": "not-converging", "Convergence": "not converging: 4.1 MB/s changing, 1.0 MB/s sent"}
        await agent.call("ReportTaskProgress", rounds)
        (view,) = (await admin.call("DescribeTasks", {"TaskIds": [tid]}))["TaskSet"]
        assert view["State"] == "syncing" and view["AllowedActions"] == ["pause", "cutover"]
        p = view["Progress"]
        assert (p["Round"], p["RoundChangedBytes"], p["LagSeconds"], p["ForecastSeconds"]) == (3, 4096, 7.5, 1.25)
        assert p["Convergence"].startswith("not converging")

        cut = await admin.call("CutoverTask", {"TaskId": tid})
        assert cut["State"] == "syncing" and cut["CommandId"], "stays syncing until the agent reports verifying"
        (cmd,) = (await agent.call("PollCommands", {"SourceId": src, "WaitSeconds": 1}))["Commands"]
        assert (cmd["Action"], cmd["TaskId"]) == ("cutover", tid)
        await agent.call("ReportTaskProgress", {**rounds, "State": "verifying"})
        await agent.call("ReportTaskProgress", {**rounds, "State": "success", "DowntimeSeconds": 0.42})
        (view,) = (await admin.call("DescribeTasks", {"TaskIds": [tid]}))["TaskSet"]
        assert view["State"] == "success" and view["Progress"]["DowntimeSeconds"] == 0.42
        with pytest.raises(ConsoleError) as ei:
            await admin.call("CutoverTask", {"TaskId": tid})
        assert "cannot cutover a task that is success" in ei.value.message
        with pytest.raises(ConsoleError) as ei:
            await agent.call("ReportTaskProgress", {**rounds, "Advice": "maybe"})
        assert ei.value.code == "InvalidParameterValue" and "Advice" in ei.value.message
