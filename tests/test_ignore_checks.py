"""CreateTask ``IgnoreChecks`` (named pre-migration checks the agent skips) through each way to set
it: the signed API, `migrate-console tasks create --ignore-check` against a real console process,
and the web form over HTTP. The names come from one list (model.taskspec.CHECKS); any other name is
a clear error that lists them."""

from __future__ import annotations

import asyncio
import html as htmllib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from migrated.console.client import ConsoleClient, ConsoleError
from migrated.model.taskspec import CHECKS, TaskSpec
from tests.console_proc import run_cli
from tests.console_support import HOST_KEY, Console, register, running_console, task_params
from tests.test_console_cli import ok, served  # noqa: F401 - `served` is a fixture
from tests.test_webui_cutover import error_beside, new_task_form
from tests.test_webui_http import http, login, page_csrf


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    async with running_console(tmp_path) as c:
        yield c


async def test_api_stores_the_names_and_sends_them_to_the_agent(console: Console) -> None:
    sid, sk = await console.new_key("agent")
    async with console.client(sid, sk) as agent, console.client(console.admin_id, console.admin_key) as admin:
        src = await register(agent)
        for bad, words in ((["selinux", "virtio"], "parameter IgnoreChecks.1: unknown check 'virtio'"),
                           (["disks", "disks"], "each check may be named once")):
            with pytest.raises(ConsoleError) as ei:
                await admin.call("CreateTask", task_params(src, IgnoreChecks=bad))
            assert ei.value.code == "InvalidParameterValue" and words in ei.value.message
        with pytest.raises(ConsoleError) as ei:
            await admin.call("CreateTask", task_params(src, IgnoreChecks=["virtio"]))
        assert f"known checks: {', '.join(CHECKS)}" in ei.value.message
        with pytest.raises(ConsoleError) as ei:
            await admin.call("CreateTask", task_params(src, IgnoreChecks="all"))
        assert ei.value.code == "InvalidParameter" and "IgnoreChecks" in ei.value.message

        tid = (await admin.call("CreateTask", task_params(src, IgnoreChecks=["selinux", "clock_skew"])))["TaskId"]
        (view,) = (await admin.call("DescribeTasks", {"TaskIds": [tid]}))["TaskSet"]
        assert view["IgnoreChecks"] == ["selinux", "clock_skew"]
        await admin.call("StartTask", {"TaskId": tid})
        (start,) = (await agent.call("PollCommands", {"SourceId": src, "WaitSeconds": 1}))["Commands"]
        assert start["Task"]["IgnoreChecks"] == ["selinux", "clock_skew"]
        assert TaskSpec.from_api(start["Task"]).ignore_checks == ("selinux", "clock_skew")
        await agent.call("AckCommand", {"SourceId": src, "CommandId": start["CommandId"], "Result": "ok"})
        await agent.call("ReportTaskProgress", {"SourceId": src, "TaskId": tid, "State": "failed"})
        await admin.call("DeleteTask", {"TaskId": tid})

        other = (await admin.call("CreateTask", task_params(src)))["TaskId"]
        (view,) = (await admin.call("DescribeTasks", {"TaskIds": [other]}))["TaskSet"]
        assert view["IgnoreChecks"] == []


def test_cli_ignore_check_is_repeatable_and_names_are_checked(served, tmp_path) -> None:  # noqa: F811
    proc, creds, _ = served
    c = ["--credentials", str(creds)]
    agent_key = json.loads(ok("keys", "create", "--role", "agent", "--name", "fleet", "--json", *c))

    async def agent_registers() -> str:
        async with ConsoleClient(proc.url, agent_key["SecretId"], agent_key["SecretKey"]) as a:
            return await register(a, "web01")

    src = asyncio.run(agent_registers())
    create = ["tasks", "create", "--source", src, "--name", "t", "--region", "ap-guangzhou", "--target-type",
              "image", "--image-name", "img", "--target-ssh", "root@203.0.113.7", "--target-host-key", HOST_KEY, *c]
    r = run_cli(*create, "--ignore-check", "selinux", "--ignore-check", "virtio")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "--ignore-check 'virtio': unknown check; known checks: " + ", ".join(CHECKS) in r.stderr
    assert "virtio_drivers" in ok("tasks", "create", "--help")

    res = json.loads(ok(*create, "--ignore-check", "selinux", "--ignore-check", "target_capacity", "--json"))
    shown = ok("tasks", "show", res["TaskId"], *c)
    assert "Skip checks   selinux, target_capacity" in shown
    (view,) = json.loads(ok("tasks", "list", "--json", *c))["TaskSet"]
    assert view["IgnoreChecks"] == ["selinux", "target_capacity"]


async def test_web_form_offers_every_check_and_refuses_other_names(console: Console) -> None:
    url, base = await new_task_form(console)
    async with http() as s:
        await login(s, console.url, console.admin_id, console.admin_key)
        async with s.get(url) as r:
            page = await r.text()
        for name in CHECKS:
            assert f'name="ignore_check" value="{name}" id="ignore-check-{name}">' in page

        csrf = await page_csrf(s, url)
        form = [*base.items(), ("csrf", csrf), ("ignore_check", "disks"), ("ignore_check", "no_such_check")]
        async with s.post(url, data=form) as r:
            body = await r.text()
            assert r.status == 400
        assert error_beside(body, "ignore_checks").startswith("unknown check 'no_such_check'; known checks: ")
        assert 'value="disks" id="ignore-check-disks" checked' in body, "what was ticked is kept"
        _, total = await console.service.storage.list_tasks()
        assert total == 0

        form = [*base.items(), ("csrf", csrf), ("ignore_check", "selinux"), ("ignore_check", "target_receiver")]
        async with s.post(url, data=form, allow_redirects=False) as r:
            assert r.status == 303, await r.text()
            task_url = f"{console.url}{r.headers['Location']}"
        (view,) = (await console.admin_call("DescribeTasks", {"TaskIds": [task_url.rsplit("/", 1)[1]]}))["TaskSet"]
        assert view["IgnoreChecks"] == ["selinux", "target_receiver"]
        async with s.get(task_url) as r:
            page = htmllib.unescape(await r.text())
        assert '<dd id="ignore-checks">selinux, target_receiver</dd>' in page
