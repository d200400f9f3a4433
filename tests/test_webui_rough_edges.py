"""The operators' rough edges of issue 10, over plain HTTP against a real console (127.0.0.1 port 0,
real SQLite): a finished task's message and stage, the ETA cell, tables in a scrolling box, an empty
image name, the configured schedule lead time, and limits in any unit shown as 20.0 MiB/s. What
only a browser can judge (layout at 480 px, colours) is in test_webui_narrow_browser.py."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.console_support import HOST_KEY, Console, register, running_console
from tests.test_webui_http import http, login, page_csrf

WEB = Path(__file__).resolve().parent.parent / "migrated" / "console" / "web"
TZ = "Europe/Berlin"  # what login() sends
INSTANCE_FORM = {"region": "ap-guangzhou", "name": "n1", "target_type": "instance", "target_instance": "ins-abc12345",
                 "ssh_endpoint": "root@203.0.113.7", "host_key": HOST_KEY, "disk-0-migrate": "on",
                 "disk-0-target": "/dev/vda"}


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    async with running_console(tmp_path) as c:
        yield c


def error_beside(body: str, field: str) -> str:
    m = re.search(rf'<p class="field-error" id="err-{re.escape(field)}" role="alert">([^<]*)</p>', body)
    return m.group(1) if m else ""


async def source(console: Console) -> str:
    agent_id, agent_key = await console.new_key("agent", "a")
    async with console.client(agent_id, agent_key) as agent:
        return await register(agent)


async def finished_and_failed(console: Console) -> tuple[str, str]:
    """Two tasks as the agent reports them: one succeeded (stage release), one failed."""
    agent_id, agent_key = await console.new_key("agent", "a")
    ids = []
    async with console.client(agent_id, agent_key) as agent:
        for machine, final in (("m-ok", "success"), ("m-bad", "failed")):
            src = await register(agent, machine)
            tid = (await console.admin_call("CreateTask", {
                "SourceId": src, "TaskName": f"t-{final}", "Region": "ap-guangzhou", "TargetType": "instance",
                "TargetInstanceId": "ins-abc12345", "TargetSsh": "root@203.0.113.7", "TargetHostKey": HOST_KEY,
            }))["TaskId"]
            await console.admin_call("StartTask", {"TaskId": tid})
            await agent.call("Heartbeat", {"SourceId": src})
            for state, stage, message in (("transferring", "transfer", ""),
                                          (final, "release" if final == "success" else "transfer",
                                           "2 disk(s) migrated" if final == "success" else "ssh: connection refused")):
                await agent.call("ReportTaskProgress", {"SourceId": src, "TaskId": tid, "State": state,
                                                        "Stage": stage, "Message": message})
            ids.append(tid)
    return ids[0], ids[1]


async def test_a_finished_task_says_finished_in_green_and_a_failure_stays_red(console: Console) -> None:
    ok_id, bad_id = await finished_and_failed(console)
    async with http() as s:
        await login(s, console.url, console.admin_id, console.admin_key)
        async with s.get(f"{console.url}/ui/api/tasks") as r:
            rows = {t["id"]: t for t in (await r.json())["tasks"]}
        assert rows[ok_id]["state"] == "success" and rows[ok_id]["stage"] == "Finished"  # not "Releasing target"
        assert rows[ok_id]["message"] == "2 disk(s) migrated" and rows[ok_id]["message_level"] == "ok"
        assert rows[bad_id]["state"] == "failed" and rows[bad_id]["stage"] == "Transferring data"
        assert rows[bad_id]["message_level"] == "error"
        async with s.get(f"{console.url}/ui/tasks") as r:
            html = await r.text()
        assert '<small class="msg msg-ok" data-f="message">2 disk(s) migrated</small>' in html
        assert '<small class="msg msg-error" data-f="message">ssh: connection refused</small>' in html
        assert "Releasing target" not in html
        async with s.get(f"{console.url}/ui/tasks/{ok_id}") as r:
            html = await r.text()
        assert '<p class="msg msg-ok" data-f="message">2 disk(s) migrated</p>' in html
        assert '<dd data-f="stage">Finished</dd>' in html
        # a success flash is green, an error flash red (the same rule as the message)
        csrf = await page_csrf(s, f"{console.url}/ui/tasks")
        async with s.post(f"{console.url}/ui/tasks/{bad_id}/retry", data={"csrf": csrf, "back": "/ui/tasks"}) as r:
            assert '<p class="flash flash-ok" role="status">Retry: sent' in await r.text()
        async with s.post(f"{console.url}/ui/tasks/{ok_id}/pause", data={"csrf": csrf, "back": "/ui/tasks"}) as r:
            assert '<p class="flash flash-error" role="alert">' in await r.text()
    css = (WEB / "static" / "app.css").read_text()
    assert re.search(r"\.msg-ok \{ color: var\(--ok\); \}", css)
    assert re.search(r"\.flash-ok \{[^}]*color: var\(--ok\)", css)


async def test_eta_and_rate_do_not_wrap_and_tables_scroll_in_their_box(console: Console) -> None:
    ok_id, _ = await finished_and_failed(console)
    async with http() as s:
        await login(s, console.url, console.admin_id, console.admin_key)
        for path, tables in (("/ui/tasks", ["tasks"]), ("/ui/sources", ["sources"]),
                             (f"/ui/tasks/{ok_id}", ["disk-progress", "events"])):
            async with s.get(f"{console.url}{path}") as r:
                html = await r.text()
            for table in tables:
                assert re.search(rf'<div class="table-scroll">\s*<table class="grid" id="{table}"', html), (path, table)
        async with s.get(f"{console.url}/ui/tasks") as r:
            html = await r.text()
        assert '<td data-f="eta" class="nowrap">' in html and '<td data-f="rate" class="nowrap">' in html
    css = (WEB / "static" / "app.css").read_text()
    assert ".table-scroll { max-width: 100%; overflow-x: auto; position: relative; }" in css
    assert re.search(r"\.nowrap[^{]*\{ white-space: nowrap;", css)


async def test_an_empty_image_name_is_flagged_with_the_other_errors(console: Console) -> None:
    src = await source(console)
    url = f"{console.url}/ui/sources/{src}/new-task"
    form = {**INSTANCE_FORM, "name": "", "target_type": "image", "image_name": ""}
    async with http() as s:
        await login(s, console.url, console.admin_id, console.admin_key)
        csrf = await page_csrf(s, url)
        async with s.post(url, data={**form, "csrf": csrf}) as r:
            body = await r.text()
            assert r.status == 400
        # before, only "name" was marked; the image name came up on the next try
        assert error_beside(body, "name") == "required"
        assert error_beside(body, "image_name") == "required for an image target: the name the new custom image gets"
        assert 'id="image_name" name="image_name" value="" maxlength="60" aria-invalid="true"' in body
        async with s.post(url, data={**form, "csrf": csrf, "name": "n1"}) as r:
            body = await r.text()
            assert r.status == 400
        assert error_beside(body, "image_name").startswith("required for an image target")
        # an instance target needs no image name
        async with s.post(url, data={**form, "csrf": csrf, "name": "n1", "target_type": "instance",
                                     "target_instance": "ins-abc12345"}) as r:
            assert r.status == 200 and "Task n1 created" in await r.text()
    assert (await console.service.storage.list_tasks())[1] == 1


def local_input(minutes_ahead: float) -> str:
    return (datetime.now(ZoneInfo(TZ)) + timedelta(minutes=minutes_ahead)).strftime("%Y-%m-%dT%H:%M")


@pytest.mark.parametrize(("lead", "words"), [(120, "at least 2 minutes from now"),
                                             (600, "at least 10 minutes from now"),
                                             (90, "at least 90 seconds from now"), (0, None)])
async def test_the_form_says_and_checks_the_configured_lead_time(tmp_path: Path, lead: int, words: str | None
                                                                ) -> None:
    async with running_console(tmp_path, scheduler={"min_lead_seconds": lead}) as console:
        src = await source(console)
        url = f"{console.url}/ui/sources/{src}/new-task"
        form = INSTANCE_FORM
        async with http() as s:
            await login(s, console.url, console.admin_id, console.admin_key)
            async with s.get(url) as r:
                html = await r.text()
            label = re.search(r'<label for="start_at">Scheduled start <small>\(([^)]*)\)</small>', html).group(1)
            assert label == ("optional" if words is None else f"optional; {words}")
            earliest = re.search(r'id="start_at" name="start_at" type="datetime-local" min="([^"]+)"', html).group(1)
            shown_min = datetime.strptime(earliest, "%Y-%m-%dT%H:%M").replace(tzinfo=ZoneInfo(TZ)).timestamp()
            assert abs(shown_min - (time.time() + lead)) < 120  # the picker's minimum, to the minute
            csrf = await page_csrf(s, url)
            if lead >= 120:  # too soon for this console, though well past the old "10 minutes" for lead 120
                async with s.post(url, data={**form, "csrf": csrf, "start_at": local_input(lead / 60 - 1.5)}) as r:
                    body = await r.text()
                    assert r.status == 400
                assert f"at least {lead / 60:g} minutes" in error_beside(body, "start_at")
            async with s.post(url, data={**form, "csrf": csrf, "start_at": local_input(lead / 60 + 3)}) as r:
                assert r.status == 200 and "Task n1 created" in await r.text()


async def test_limits_in_any_unit_are_shown_as_mib(console: Console) -> None:
    src = await source(console)
    url = f"{console.url}/ui/sources/{src}/new-task"
    form = {**INSTANCE_FORM, "bandwidth_mbps": "20MiB/s"}
    async with http() as s:
        await login(s, console.url, console.admin_id, console.admin_key)
        csrf = await page_csrf(s, url)
        async with s.post(url, data={**form, "csrf": csrf}, allow_redirects=False) as r:
            assert r.status == 303
            task_url = console.url + r.headers["Location"]
        tid = task_url.rsplit("/", 1)[1]
        assert (await console.service.storage.get_task(tid)).bandwidth_limit_kbps == 20480
        async with s.get(task_url) as r:
            html = await r.text()
        assert '<span id="bw-now">20.0 MiB/s</span>' in html
        assert 'name="bandwidth_mbps" size="10" spellcheck="false" value="20MiB/s"' in html
        assert "Mbit/s</span>" not in html
        for typed, kbps, shown in (("160Mbit", 19531, "19.1 MiB/s"), ("20480K", 20480, "20.0 MiB/s"),
                                   ("80", 9766, "9.5 MiB/s"), ("", 0, "unlimited")):
            async with s.post(f"{task_url}/bandwidth", data={"csrf": csrf, "bandwidth_mbps": typed}) as r:
                html = await r.text()
            assert "Bandwidth limit changed" in html, typed
            assert f'<span id="bw-now">{shown}</span>' in html
            assert (await console.service.storage.get_task(tid)).bandwidth_limit_kbps == kbps
        async with s.post(f"{task_url}/bandwidth", data={"csrf": csrf, "bandwidth_mbps": "20Q"}) as r:
            html = await r.text()
        assert "Bandwidth limit not changed: must be a number of Mbit/s or a rate with its unit" in html
