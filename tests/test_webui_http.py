"""The web UI's security plumbing over plain HTTP against a real console (127.0.0.1 port 0, real
SQLite): cookie flags, login CSRF, throttling, revoked keys, headers, same rules as the API."""

from __future__ import annotations

import asyncio
import json
import re
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.console_proc import ConsoleProcess, run_cli, write_config
from tests.console_support import HOST_KEY, Console, register, running_console, task_params

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "migrated" / "console" / "web"


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    async with running_console(tmp_path) as c:
        yield c


def http() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login_form(s: aiohttp.ClientSession, base: str) -> str:
    async with s.get(f"{base}/ui/login") as r:
        assert r.status == 200
        return re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)


async def login(s: aiohttp.ClientSession, base: str, sid: str, skey: str, **extra: str) -> aiohttp.ClientResponse:
    token = await login_form(s, base)
    data = {"csrf": token, "secret_id": sid, "secret_key": skey, "tz": "Europe/Berlin", **extra}
    async with s.post(f"{base}/ui/login", data=data, allow_redirects=False) as r:
        await r.read()
        return r


async def page_csrf(s: aiohttp.ClientSession, url: str) -> str:
    async with s.get(url) as r:
        assert r.status == 200, url
        return re.search(r'data-csrf="([^"]+)"', await r.text()).group(1)


async def test_login_sets_a_strict_httponly_cookie_and_no_secret(console: Console) -> None:
    async with http() as s:
        r = await login(s, console.url, console.admin_id, console.admin_key)
        assert r.status == 303 and r.headers["Location"] == "/ui/tasks"
        raw = [v for v in r.headers.getall("Set-Cookie") if v.startswith("migrated_session=")]
        assert len(raw) == 1
        flags = raw[0].lower()
        assert "httponly" in flags and "samesite=strict" in flags and "path=/ui" in flags
        assert console.admin_key not in raw[0]
        for path in ("/ui/tasks", "/ui/sources", "/ui/api/tasks", "/ui/api/sources"):
            async with s.get(f"{console.url}{path}") as p:
                assert p.status == 200
                assert console.admin_key not in await p.text()
                assert "default-src 'self'" in p.headers["Content-Security-Policy"]
                assert p.headers["X-Frame-Options"] == "DENY"
                assert p.headers["Cache-Control"] == "no-store"


async def test_login_needs_its_form_token(console: Console) -> None:
    async with http() as s:
        await login_form(s, console.url)  # has the cookie, but posts no token
        async with s.post(f"{console.url}/ui/login", allow_redirects=False,
                          data={"secret_id": console.admin_id, "secret_key": console.admin_key}) as r:
            assert r.status == 403
            assert "security token" in await r.text()
            assert "migrated_session" not in {c.key for c in s.cookie_jar}


async def test_failed_logins_are_throttled(console: Console) -> None:
    agent_id, agent_key = await console.new_key("agent", "a")
    async with http() as s:
        r = await login(s, console.url, agent_id, agent_key)  # an agent key is no admin
        assert r.status == 401
        for _ in range(4):  # failures 2..5 from this address (free_failures=5)
            r = await login(s, console.url, console.admin_id, "wrong-key")
            assert r.status == 401
        r = await login(s, console.url, console.admin_id, console.admin_key)
        assert r.status == 429, "even the right key waits once throttled"
        async with s.get(f"{console.url}/ui/tasks", allow_redirects=False) as p:
            assert p.status == 303 and p.headers["Location"].startswith("/ui/login")


async def test_after_login_only_ui_paths_are_followed(console: Console) -> None:
    async with http() as s:
        r = await login(s, console.url, console.admin_id, console.admin_key, next="https://evil.example/ui/x")
        assert r.headers["Location"] == "/ui/tasks"
    async with http() as s:
        r = await login(s, console.url, console.admin_id, console.admin_key, next="/ui/sources")
        assert r.headers["Location"] == "/ui/sources"


async def test_a_revoked_key_ends_its_sessions(console: Console) -> None:
    sid2, skey2 = await console.new_key("admin", "second-admin")
    async with http() as s:
        assert (await login(s, console.url, sid2, skey2)).status == 303
        async with s.get(f"{console.url}/ui/api/tasks") as r:
            assert r.status == 200
        await console.admin_call("RevokeKey", {"SecretId": sid2})
        async with s.get(f"{console.url}/ui/api/tasks") as r:
            assert r.status == 401
        async with s.get(f"{console.url}/ui/tasks", allow_redirects=False) as r:
            assert r.status == 303


async def test_actions_follow_the_api_rules(console: Console) -> None:
    agent_id, agent_key = await console.new_key("agent", "a")
    agent = console.client(agent_id, agent_key)
    try:
        src = await register(agent)
        t = await console.admin_call("CreateTask", {
            "SourceId": src, "TaskName": "t1", "Region": "ap-guangzhou", "TargetType": "image", "ImageName": "i1",
            "TargetSsh": "root@203.0.113.7", "TargetHostKey": HOST_KEY})
        task_id = t["TaskId"]
        async with http() as s:
            await login(s, console.url, console.admin_id, console.admin_key)
            csrf = await page_csrf(s, f"{console.url}/ui/tasks")
            # pause is not allowed for a created task: refused with the API's words, nothing changes
            async with s.post(f"{console.url}/ui/tasks/{task_id}/pause", data={"csrf": csrf}) as r:
                body = await r.text()
                assert "cannot pause a task that is created" in body
            assert (await console.service.storage.get_task(task_id)).state == "created"
            # the JSON the page polls offers only what the state allows
            async with s.get(f"{console.url}/ui/api/tasks") as r:
                row = (await r.json())["tasks"][0]
                assert row["allowed"] == ["start", "delete"]
            # the CSRF token also works as a header (for scripts), and an unknown action is 404
            async with s.post(f"{console.url}/ui/tasks/{task_id}/explode", headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 404
            # the confirmation page knows a created task has touched nothing (states.NOT_STARTED)
            async with s.get(f"{console.url}/ui/tasks/{task_id}/delete") as r:
                page = await r.text()
                assert "It has not started, so nothing on the source or the target is touched." in page
                assert "drops its checkpoint" not in page
            async with s.post(f"{console.url}/ui/tasks/{task_id}/delete", headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 200 and "Delete: sent" in await r.text()
            assert (await console.service.storage.get_task(task_id)).state == "deleted"
            async with s.get(f"{console.url}/ui/tasks/{task_id}") as r:
                assert r.status == 404
    finally:
        await agent.close()


async def test_starting_a_task_of_an_offline_source_says_so(tmp_path: Path) -> None:
    async with running_console(tmp_path, agents={"heartbeat_interval_seconds": 0.05, "offline_after_missed": 1}) as c:
        agent_id, agent_key = await c.new_key("agent", "a")
        async with c.client(agent_id, agent_key) as agent:
            src = await register(agent)
        t = await c.admin_call("CreateTask", {
            "SourceId": src, "TaskName": "t1", "Region": "ap-guangzhou", "TargetType": "image", "ImageName": "i1",
            "TargetSsh": "root@203.0.113.7", "TargetHostKey": HOST_KEY})
        await asyncio.sleep(0.2)  # no heartbeat: the source is offline now
        async with http() as s:
            await login(s, c.url, c.admin_id, c.admin_key)
            csrf = await page_csrf(s, f"{c.url}/ui/tasks")
            async with s.post(f"{c.url}/ui/tasks/{t['TaskId']}/start", data={"csrf": csrf}) as r:
                assert "is offline; start the agent on it" in await r.text()
        assert (await c.service.storage.get_task(t["TaskId"])).state == "created"


async def test_cookies_do_not_cross_to_the_api(console: Console) -> None:
    """The signed API at POST / ignores the UI's cookie: a logged-in browser cannot call it unsigned."""
    async with http() as s:
        await login(s, console.url, console.admin_id, console.admin_key)
        s.cookie_jar.update_cookies(s.cookie_jar.filter_cookies(URL(console.url + "/ui/")), URL(console.url + "/"))
        async with s.post(f"{console.url}/", json={}, headers={"X-TC-Action": "DescribeTasks"}) as r:
            body = await r.json()
            assert "Error" in body["Response"] and "TaskSet" not in body["Response"]


def test_no_external_assets_and_package_data_is_declared() -> None:
    for f in [*WEB.glob("templates/*.html"), *WEB.glob("static/*")]:
        text = f.read_text()
        assert not re.search(r"""(src|href)=["'](https?:)?//""", text), f"{f.name} loads something external"
        assert "@import" not in text and "url(http" not in text, f.name
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["migrated"]
    assert "console/web/static/*" in data and "console/web/templates/*" in data
    assert (WEB / "static" / "app.js").exists() and (WEB / "templates" / "base.html").exists()


async def test_delete_page_of_a_running_task_offers_nothing(console: Console) -> None:
    agent_id, agent_key = await console.new_key("agent", "a")
    async with console.client(agent_id, agent_key) as agent:
        src = await register(agent)
        t = await console.admin_call("CreateTask", {
            "SourceId": src, "TaskName": "t1", "Region": "ap-guangzhou", "TargetType": "image", "ImageName": "i1",
            "TargetSsh": "root@203.0.113.7", "TargetHostKey": HOST_KEY})
        await console.admin_call("StartTask", {"TaskId": t["TaskId"]})
        await agent.call("ReportTaskProgress", {"SourceId": src, "TaskId": t["TaskId"], "State": "transferring"})
    async with http() as s:
        await login(s, console.url, console.admin_id, console.admin_key)
        async with s.get(f"{console.url}/ui/tasks/{t['TaskId']}/delete") as r:
            body = await r.text()
        assert "cannot delete a task that is transferring; delete is allowed when" in body
        assert 'action="/ui/tasks/' not in body.split("<main", 1)[1]  # no delete form on the page


async def test_the_served_program_has_the_ui_and_a_restart_logs_out(tmp_path: Path) -> None:
    """``migrate-console serve`` (a real subprocess) serves the UI; sessions do not outlive the process."""
    cfg = write_config(tmp_path, tmp_path / "console.db")
    r = await asyncio.to_thread(run_cli, "keys", "create", "--local", "--config", str(cfg), "--role", "admin",
                                "--name", "ops", "--json")
    assert r.returncode == 0, r.stderr
    key = json.loads(r.stdout[r.stdout.index("{"):])
    proc = await asyncio.to_thread(ConsoleProcess(cfg, tmp_path / "console.log").start)
    try:
        async with http() as s:
            async with s.get(proc.url + "/", allow_redirects=False) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/ui/tasks"
            assert (await login(s, proc.url, key["SecretId"], key["SecretKey"])).status == 303
            async with s.get(proc.url + "/ui/sources") as resp:
                assert resp.status == 200 and "Source servers" in await resp.text()
                css = re.search(r'href="(/ui/static/app\.css[^"]*)"', await resp.text()).group(1)
            async with s.get(proc.url + css) as resp:
                assert resp.status == 200 and resp.content_type == "text/css"
            assert await asyncio.to_thread(proc.stop) == 0
            proc = await asyncio.to_thread(ConsoleProcess(cfg, tmp_path / "console.log").start)
            async with s.get(proc.url + "/ui/tasks", allow_redirects=False) as resp:
                assert resp.status == 303 and resp.headers["Location"].startswith("/ui/login")
    finally:
        await asyncio.to_thread(proc.stop)


async def test_create_form_shows_the_consoles_refusals_beside_fields(console: Console) -> None:
    agent_id, agent_key = await console.new_key("agent", "a")
    async with console.client(agent_id, agent_key) as agent:
        src = await register(agent)
    url = f"{console.url}/ui/sources/{src}/new-task"
    base = {"region": "ap-guangzhou", "name": "n1", "target_type": "instance", "ssh_endpoint": "root@203.0.113.7",
            "host_key": HOST_KEY, "disk-0-migrate": "on", "disk-0-target": "/dev/vda"}

    def error_beside(body: str, field: str) -> str:
        m = re.search(rf'<p class="field-error" id="err-{re.escape(field)}" role="alert">([^<]*)</p>', body)
        return m.group(1) if m else ""

    async with http() as s:
        await login(s, console.url, console.admin_id, console.admin_key)
        csrf = await page_csrf(s, url)
        # pydantic rules of CreateTask: several at once, each beside its field
        bad = {**base, "csrf": csrf, "region": "Guangzhou", "name": "", "ssh_endpoint": "nohost",
               "bandwidth_mbps": "fast"}
        async with s.post(url, data=bad) as r:
            body = await r.text()
            assert r.status == 400
        assert error_beside(body, "region") == "must be a region such as ap-guangzhou"
        assert error_beside(body, "name") == "required"
        assert error_beside(body, "ssh_endpoint").startswith("must be user@host:port")
        assert error_beside(body, "bandwidth_mbps").startswith("must be a number of Mbit/s")
        assert 'value="Guangzhou"' in body and 'value="nohost"' in body  # kept as typed
        # the service's own rule: an instance target needs its ID
        async with s.post(url, data={**base, "csrf": csrf}) as r:
            body = await r.text()
        assert "required when TargetType is instance" in error_beside(body, "target_instance")
        # created; a second task for the same source is refused above the form (no single field)
        async with s.post(url, data={**base, "csrf": csrf, "target_instance": "ins-abc12345"}) as r:
            assert r.status == 200 and "Task n1 created" in await r.text()
        async with s.post(url, data={**base, "csrf": csrf, "target_instance": "ins-abc12345"}) as r:
            body = await r.text()
            assert r.status == 400
        m = re.search(r'<p class="flash flash-error" role="alert" id="form-error">([^<]*)</p>', body)
        assert m and "unfinished" in m.group(1), body[:3000]
    _, total = await console.service.storage.list_tasks()
    assert total == 1


def _cutover_form(html: str, task_id: str) -> str:
    i = html.index(f'action="/ui/tasks/{task_id}/cutover"')
    return html[html.rindex("<form", 0, i):html.index(">", i) + 1]


async def test_cutover_button_only_while_syncing(console: Console) -> None:
    agent_id, agent_key = await console.new_key("agent", "a")
    agent = console.client(agent_id, agent_key)
    try:
        src = await register(agent)
        task_id = (await console.admin_call("CreateTask", {
            "SourceId": src, "TaskName": "t1", "Region": "ap-guangzhou", "TargetType": "image", "ImageName": "i1",
            "TargetSsh": "root@203.0.113.7", "TargetHostKey": HOST_KEY, "ContinuousSync": True}))["TaskId"]
        async with http() as s:
            await login(s, console.url, console.admin_id, console.admin_key)
            async with s.get(f"{console.url}/ui/tasks/{task_id}") as r:
                html = await r.text()
            assert " hidden" in _cutover_form(html, task_id), "no cutover for a created task"
            assert "Incremental sync until cutover" in html
            await console.admin_call("StartTask", {"TaskId": task_id})
            for state in ("transferring", "syncing"):
                await agent.call("ReportTaskProgress", {
                    "SourceId": src, "TaskId": task_id, "State": state, "Stage": "rounds", "Round": 2,
                    "RoundChangedBytes": 3 << 20, "ForecastSeconds": 0.5, "LagSeconds": 12.0})
            async with s.get(f"{console.url}/ui/tasks") as r:
                html = await r.text()
            assert " hidden" not in _cutover_form(html, task_id)
            assert "Syncing (rounds)" in html and "round 2, changed 3.0 MiB per round, lag 00:12" in html
            async with s.get(f"{console.url}/ui/api/tasks") as r:
                row = (await r.json())["tasks"][0]
            assert row["allowed"] == ["pause", "cutover"] and row["rounds"].startswith("round 2")
            csrf = await page_csrf(s, f"{console.url}/ui/tasks")
            async with s.post(f"{console.url}/ui/tasks/{task_id}/cutover", data={"csrf": csrf}) as r:
                assert r.status == 200 and "Cutover: sent" in await r.text()
        polled = await agent.call("PollCommands", {"SourceId": src, "WaitSeconds": 1})
        assert [c["Action"] for c in polled["Commands"]][-1] == "cutover"
    finally:
        await agent.close()


async def test_what_an_agent_reported_cannot_break_the_pages(console: Console) -> None:
    """RegisterSource once took a disk SizeBytes of 4,000 digits, and from then on /ui/sources and the
    new-task page answered 500 for everyone (OverflowError in format_bytes). The API now refuses it
    (63 bits); a size stored before that, and a progress of NaN / infinity, still render."""
    from migrated.console.storage import DiskInfo
    from migrated.errors import ConsoleError

    aid, akey = await console.new_key("agent")
    async with console.client(aid, akey) as agent:
        with pytest.raises(ConsoleError) as ei:
            await agent.call("RegisterSource", {"MachineId": "m-huge", "Hostname": "huge", "Disks": [
                {"Name": "/dev/vda", "SizeBytes": int("9" * 4000), "IsSystem": True}]})
        assert ei.value.code == "InvalidParameterValue" and "Disks.0.SizeBytes" in ei.value.message
    storage = console.service.storage
    src, _ = await storage.register_source(
        machine_id="m-old", hostname="old", os_name="", agent_version="", registered_by=aid, now=time.time(),
        disks=(DiskInfo("/dev/vda", int("9" * 4000), ("/",), True), DiskInfo("/dev/vdb", 2**63 - 1, (), False)))
    await storage.record_heartbeat(src.source_id, "", time.time())
    tid = (await console.admin_call("CreateTask", task_params(src.source_id)))["TaskId"]
    await storage.update_task(tid, expect_state="created", now=time.time(), changes={"state": "transferring",
        "progress": {"Disks": [{"Name": "/dev/vda", "BytesTotal": int("9" * 4000), "BytesDone": 1}],
                     "RateBps": float("inf"), "EtaSeconds": float("nan"), "LagSeconds": float("inf"),
                     "Round": 3, "ForecastSeconds": float("nan"), "DowntimeSeconds": float("inf"),
                     "UpdatedAt": time.time()}})
    async with http() as s:
        await login(s, console.url, console.admin_id, console.admin_key)
        for path in ("/ui/sources", "/ui/api/sources", f"/ui/sources/{src.source_id}/new-task", "/ui/tasks",
                     "/ui/api/tasks", f"/ui/tasks/{tid}", f"/ui/api/tasks/{tid}"):
            async with s.get(f"{console.url}{path}") as r:
                assert r.status == 200, (path, r.status, (await r.text())[:500])
                if "/api/" in path:  # strict JSON: no NaN / Infinity
                    json.loads(await r.text(), parse_constant=lambda c, p=path: pytest.fail(f"{p}: {c}"))
