"""The operators' web UI end to end in headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright) against a real console: aiohttp on 127.0.0.1 port 0 with a real SQLite file. The agent's
side is played through the real signed API with an agent key (``migrated.console.client``)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from migrated.console.client import ConsoleClient
from tests.console_support import HOST_KEY, Console, register, running_console

playwright_api = pytest.importorskip("playwright.async_api")
async_playwright, expect = playwright_api.async_playwright, playwright_api.expect

CHROMIUM = os.environ.get("MIGRATED_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TZ = "Asia/Shanghai"  # the operator's zone: not the server's (UTC), so a wrong conversion shows
GiB = 1 << 30

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"{CHROMIUM} missing (apt-get install chromium)")
expect.set_options(timeout=20_000)  # waits for a condition (live polling every 2 s on a busy box), not a timing


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    async with running_console(tmp_path) as c:
        yield c


@pytest.fixture
async def agent(console: Console) -> AsyncIterator[tuple[ConsoleClient, str]]:
    sid, skey = await console.new_key("agent", "web01-agent")
    async with ConsoleClient(console.url, sid, skey) as client:
        source_id = await register(client, "web01")
        await client.call("Heartbeat", {"SourceId": source_id, "AgentVersion": "0.1.0"})
        yield client, source_id


@pytest.fixture
async def page(console: Console):
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1366, "height": 768}, timezone_id=TZ,
                                            base_url=console.url)
        pg = await context.new_page()
        errors: list[str] = []
        foreign: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("request", lambda r: None if r.url.startswith((console.url, "data:")) else foreign.append(r.url))
        yield pg
        await browser.close()
        assert not errors, f"JavaScript errors in the page: {errors}"
        assert not foreign, f"the UI loaded something from elsewhere: {foreign}"


async def fits_the_screen(page) -> None:
    """Readable on a laptop: nothing wider than the 1366 px window (no sideways scrolling)."""
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1366, f"{page.url} is {width} px wide"


async def log_in(page, console: Console) -> None:
    await page.goto("/ui/tasks")
    await expect(page).to_have_url(f"{console.url}/ui/login?next=/ui/tasks")
    await page.get_by_label("SecretId").fill(console.admin_id)
    await page.get_by_label("SecretKey").fill(console.admin_key)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(f"{console.url}/ui/tasks")


async def agent_takes(agent: ConsoleClient, source_id: str, action: str) -> dict:
    """Poll like the agent does, expect exactly one command ``action``, ack it."""
    r = await agent.call("PollCommands", {"SourceId": source_id, "WaitSeconds": 5})
    assert [c["Action"] for c in r["Commands"]] == [action]
    cmd = r["Commands"][0]
    await agent.call("AckCommand", {"SourceId": source_id, "CommandId": cmd["CommandId"], "Result": "ok"})
    return cmd


async def report(agent: ConsoleClient, source_id: str, task_id: str, state: str, done_gib: float,
                 rate: float = 0.0, eta: float | None = None) -> None:
    await agent.call("ReportTaskProgress", {
        "SourceId": source_id, "TaskId": task_id, "State": state, "Stage": "transfer",
        "Disks": [{"Name": "/dev/vda", "Target": "/dev/vda", "BytesTotal": 20 * GiB, "BytesDone": int(done_gib * GiB)},
                  {"Name": "/dev/vdb", "Target": "/dev/vdc", "BytesTotal": 100 * GiB, "BytesDone": 0}],
        "RateBps": rate, "EtaSeconds": eta})


def local_input(minutes_ahead: float) -> str:
    """A datetime-local value ``minutes_ahead`` from now in the operator's time zone."""
    return (datetime.now(ZoneInfo(TZ)) + timedelta(minutes=minutes_ahead)).strftime("%Y-%m-%dT%H:%M")


async def test_operator_flow_in_a_real_browser(console: Console, agent, page) -> None:
    client, source_id = agent
    await log_in(page, console)

    # Sources: the registered server is online, with its OS, disks and agent version
    await page.get_by_role("navigation").get_by_role("link", name="Sources").click()
    row = page.locator(f'tr[data-source-id="{source_id}"]')
    await expect(row.locator('[data-f="status"]')).to_have_text("Online")
    await expect(row).to_contain_text("web01.example")
    await expect(row).to_contain_text("Debian 12")
    await expect(row).to_contain_text("/dev/vda 20.0 GiB")
    await expect(row).to_contain_text("/dev/vdb 100.0 GiB")
    await expect(row).to_contain_text("0.1.0")
    await fits_the_screen(page)

    # Create a task from the row; the form changes with the target type
    await row.get_by_role("link", name="Create task").click()
    await expect(page.get_by_role("heading", name="New migration task")).to_be_visible()
    await page.locator("input[name=target_type][value=instance]").check()
    await expect(page.get_by_label("Target instance ID")).to_be_visible()
    await expect(page.get_by_label("Image name")).to_be_hidden()
    await page.locator("input[name=target_type][value=image]").check()
    await expect(page.get_by_label("Image name")).to_be_visible()
    # an image task may name its relay instance (docs/cloud.md): the field stays, labelled as such
    await expect(page.get_by_label("Target instance ID")).to_be_visible()
    await expect(page.get_by_text("the relay instance the image is made from")).to_be_visible()
    # default disk mapping: the system disk and disks with a mounted filesystem
    assert await page.locator("#disk-0-migrate").is_checked()  # /dev/vda, system
    assert await page.locator("#disk-1-migrate").is_checked()  # /dev/vdb, /data
    assert not await page.locator("#disk-2-migrate").is_checked()  # /dev/vdc, nothing mounted
    await fits_the_screen(page)

    await page.get_by_label("Destination region").fill("ap-guangzhou")
    await page.get_by_label("Task name").fill("web01-move")
    await page.get_by_label("Description (optional)").fill("move web01 to Guangzhou")
    await page.get_by_label("Image name").fill("web01-image")
    await page.get_by_label("Target SSH endpoint").fill("root@203.0.113.7:22")
    await page.get_by_label("Target SSH host key").fill(HOST_KEY)
    await page.locator("#disk-1-target").fill("/dev/vdc")
    await page.get_by_label("Bandwidth limit").fill("80")
    await page.get_by_label("Checksum verification").check()
    too_soon = local_input(5)
    await page.get_by_label("Scheduled start").fill(too_soon)
    await page.get_by_role("button", name="Create task").click()

    # refused: the error sits beside the schedule field, every value is kept
    err = page.locator("#err-start_at")
    await expect(err).to_contain_text("at least 10 minutes")
    await expect(page.get_by_label("Scheduled start")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_label("Scheduled start")).to_have_value(too_soon)
    await expect(page.get_by_label("Task name")).to_have_value("web01-move")
    await expect(page.get_by_label("Target SSH host key")).to_have_value(HOST_KEY)
    await expect(page.locator("#disk-1-target")).to_have_value("/dev/vdc")
    await expect(page.get_by_label("Checksum verification")).to_be_checked()
    assert (await console.service.storage.list_tasks())[1] == 0, "a refused form created nothing"

    # a valid schedule (40 min ahead, in the operator's zone)
    later = local_input(40)
    await page.get_by_label("Scheduled start").fill(later)
    await page.get_by_role("button", name="Create task").click()
    await expect(page.locator(".flash-ok")).to_contain_text("Task web01-move created")
    task_id = page.url.rsplit("/", 1)[1]
    rec = await console.service.storage.get_task(task_id)
    assert rec is not None and rec.state == "scheduled"
    assert rec.target_type == "image" and rec.image_name == "web01-image" and rec.checksum
    assert rec.disk_mapping == (("/dev/vda", "/dev/vda"), ("/dev/vdb", "/dev/vdc"))
    assert rec.bandwidth_limit_kbps == 9766  # 80 Mbit/s in KiB/s
    typed = datetime.strptime(later, "%Y-%m-%dT%H:%M").replace(tzinfo=ZoneInfo(TZ))
    assert rec.scheduled_at == typed.timestamp(), "the schedule was read in the operator's time zone"
    await expect(page.locator("dl.settings")).to_contain_text(typed.strftime("%Y-%m-%d %H:%M:00 CST"))
    await expect(page.locator("dl.settings")).to_contain_text("web01-image")
    await expect(page.locator("dl.settings")).to_contain_text("/dev/vdb → /dev/vdc")

    # Tasks list: only the actions the state allows
    await page.get_by_role("navigation").get_by_role("link", name="Tasks").click()
    trow = page.locator(f'tr[data-task-id="{task_id}"]')
    await expect(trow.locator('[data-f="state_label"]')).to_have_text("Scheduled")
    await expect(trow.locator('[data-f="stage"]')).to_have_text(f"starts {typed:%Y-%m-%d %H:%M}:00 CST")
    await expect(trow.get_by_role("button", name="Start task web01-move")).to_be_visible()
    await expect(trow.get_by_role("button", name="Pause task web01-move")).to_be_hidden()
    await expect(trow.get_by_role("button", name="Retry task web01-move")).to_be_hidden()

    # start it early (keyboard: focus the button and press Enter)
    await trow.get_by_role("button", name="Start task web01-move").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator(".flash-ok")).to_contain_text("Start: sent")
    await expect(trow.locator('[data-f="state_label"]')).to_have_text("Starting")
    await expect(trow.get_by_role("button", name="Start task web01-move")).to_be_hidden()
    cmd = await agent_takes(client, source_id, "start")
    assert cmd["Task"]["TaskId"] == task_id

    # progress moves live, without a reload (the marker survives)
    await page.evaluate("window.__noReload = true")
    await report(client, source_id, task_id, "transferring", 6, rate=50 * (1 << 20), eta=1800)
    await expect(trow.locator('[data-f="state_label"]')).to_have_text("Transferring")
    await expect(trow.locator('[data-f="percent"]')).to_have_text("5.0%")  # 6 of 120 GiB
    await expect(trow.locator('[data-f="rate"]')).to_have_text("50.0 MiB/s")
    await expect(trow.locator('[data-f="eta"]')).to_have_text("30:00")
    await expect(trow.locator('[data-f="stage"]')).to_have_text("Transferring data")
    await expect(trow.get_by_role("button", name="Pause task web01-move")).to_be_visible()
    await report(client, source_id, task_id, "transferring", 18, rate=60 * (1 << 20), eta=1500)
    await expect(trow.locator('[data-f="percent"]')).to_have_text("15.0%")
    await expect(trow.locator('progress[data-f="fraction"]')).to_have_js_property("value", 0.15)
    assert await page.evaluate("window.__noReload === true"), "the page reloaded"
    await fits_the_screen(page)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "tasks.png"), full_page=True)

    # pause: the console queues it; the agent flushes and reports paused
    await trow.get_by_role("button", name="Pause task web01-move").click()
    await expect(page.locator(".flash-ok")).to_contain_text("Pause: sent")
    await agent_takes(client, source_id, "pause")
    await report(client, source_id, task_id, "paused", 18)
    await expect(trow.locator('[data-f="state_label"]')).to_have_text("Paused")
    await expect(trow.locator('[data-f="rate"]')).to_have_text("—")
    await expect(trow.get_by_role("button", name="Pause task web01-move")).to_be_hidden()
    await expect(trow.get_by_role("button", name="Resume task web01-move")).to_be_visible()
    await expect(trow.get_by_role("link", name="Delete task web01-move")).to_be_visible()

    # task detail: settings, per-disk progress, event log
    await trow.get_by_role("link", name="web01-move", exact=True).click()
    await expect(page.locator("#disk-progress")).to_contain_text("/dev/vdb")
    await expect(page.locator("#disk-progress tbody tr").first).to_contain_text("90.0%")  # 18 of 20 GiB
    await expect(page.locator("#events")).to_contain_text("task created (scheduled)")
    await expect(page.locator("#events")).to_contain_text("transferring -> paused")
    await expect(page.locator('[data-f="image_id"]')).to_have_text("not created yet")
    await fits_the_screen(page)

    # the bandwidth limit changes on a paused (or running) task; the agent is told at once
    # (shown as every program shows a limit; it was "80.0 Mbit/s" and "40.0 Mbit/s" before issue 10)
    await expect(page.locator("#bw-now")).to_have_text("9.5 MiB/s")
    await expect(page.get_by_label("New limit")).to_have_value("9766KiB/s")  # reads back exactly
    await page.get_by_label("New limit").fill("40")  # a bare number is still Mbit/s
    await page.get_by_role("button", name="Set limit").click()
    await expect(page.locator(".flash-ok")).to_contain_text("Bandwidth limit changed")
    await expect(page.locator("#bw-now")).to_have_text("4.8 MiB/s")
    cmd = await agent_takes(client, source_id, "set-bandwidth")
    assert cmd["Params"] == {"BandwidthLimitKBps": 4883}
    await page.get_by_label("New limit").fill("lots")
    await page.get_by_role("button", name="Set limit").click()
    await expect(page.locator(".flash-error")).to_contain_text("must be a number of Mbit/s")

    # delete asks first; cancel keeps the task
    await page.get_by_role("link", name="Delete task web01-move").click()
    await expect(page.get_by_role("heading", name="Delete task web01-move?")).to_be_visible()
    await page.get_by_role("link", name="Cancel").click()
    await expect(page).to_have_url(f"{console.url}/ui/tasks/{task_id}")
    await page.get_by_role("link", name="Delete task web01-move").click()
    await page.get_by_role("button", name="Delete task").click()
    await expect(page).to_have_url(f"{console.url}/ui/tasks")
    await expect(page.locator(".flash-ok")).to_contain_text("Delete: sent")
    await expect(page.locator(f'tr[data-task-id="{task_id}"]')).to_have_count(0)
    assert (await console.service.storage.get_task(task_id)).state == "deleted"
    await agent_takes(client, source_id, "delete")


async def test_csrf_missing_is_refused_and_logout_sends_to_login(console: Console, agent, page) -> None:
    _client, source_id = agent
    r = await console.admin_call("CreateTask", {
        "SourceId": source_id, "TaskName": "t1", "Region": "ap-guangzhou", "TargetType": "instance",
        "TargetInstanceId": "ins-abc12345", "TargetSsh": "root@203.0.113.7", "TargetHostKey": HOST_KEY})
    task_id = r["TaskId"]
    # keyboard only: the SecretId field has the focus, Tab moves on, Enter submits
    await page.goto("/ui/tasks")
    await expect(page.locator("#secret_id")).to_be_focused()  # autofocus lands before we type
    await page.keyboard.type(console.admin_id)
    await page.keyboard.press("Tab")
    await expect(page.locator("#secret_key")).to_be_focused()
    await page.keyboard.type(console.admin_key)
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(f"{console.url}/ui/tasks")
    # the first Tab reaches "Skip to content", which jumps past the header
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("main")).to_be_focused()
    await page.goto("/ui/sources")
    await expect(page.locator(f'tr[data-source-id="{source_id}"]')).to_contain_text("t1 Created")
    await page.goto("/ui/tasks")
    trow = page.locator(f'tr[data-task-id="{task_id}"]')
    await expect(trow.locator('[data-f="state_label"]')).to_have_text("Created")

    # a form without its CSRF token changes nothing
    await trow.locator('form[data-action="start"] input[name="csrf"]').evaluate("e => e.remove()")
    async with page.expect_response(f"**/ui/tasks/{task_id}/start") as resp:
        await trow.get_by_role("button", name="Start task t1").click()
    assert (await resp.value).status == 403
    await expect(page.locator("main")).to_contain_text("security token is missing")
    assert (await console.service.storage.get_task(task_id)).state == "created"
    # a wrong token neither
    await page.goto("/ui/tasks")
    await trow.locator('form[data-action="start"] input[name="csrf"]').evaluate("e => e.value = 'forged'")
    await trow.get_by_role("button", name="Start task t1").click()
    await expect(page.get_by_role("heading", name="Refused")).to_be_visible()
    assert (await console.service.storage.get_task(task_id)).state == "created"

    # the session cookie is HttpOnly and SameSite=Strict; no secret key reached the browser
    cookies = {c["name"]: c for c in await page.context.cookies()}
    s = cookies["migrated_session"]
    assert s["httpOnly"] and s["sameSite"] == "Strict"
    await page.goto("/ui/tasks")
    assert console.admin_key not in await page.content()

    # log out: pages redirect to the login page, the polled JSON says 401
    await page.get_by_role("button", name="Log out").click()
    await expect(page).to_have_url(f"{console.url}/ui/login")
    for path in ("/ui/tasks", "/ui/sources", f"/ui/tasks/{task_id}"):
        await page.goto(path)
        await expect(page).to_have_url(f"{console.url}/ui/login?next={path}")
    resp = await page.request.get("/ui/api/tasks")
    assert resp.status == 401
    # the old cookie is dead server-side, even if replayed
    ctx = page.context
    await ctx.add_cookies([{**s, "sameSite": "Strict"}])
    await page.goto("/ui/tasks")
    await expect(page).to_have_url(f"{console.url}/ui/login?next=/ui/tasks")
    await asyncio.sleep(0)  # nothing left running


async def test_failure_reason_retry_and_a_source_going_offline(tmp_path: Path) -> None:
    # heartbeats every 3 s, offline after 2 missed: the page must notice without a reload
    async with running_console(tmp_path, agents={"heartbeat_interval_seconds": 3.0, "offline_after_missed": 2}) as c:
        sid, skey = await c.new_key("agent", "a")
        async with ConsoleClient(c.url, sid, skey) as client, async_playwright() as p:
            src = await register(client, "db02")
            await client.call("Heartbeat", {"SourceId": src})
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await (await browser.new_context(timezone_id=TZ, base_url=c.url)).new_page()
            await log_in(page, c)
            await expect(page.locator("[data-empty]")).to_be_visible()
            r = await c.admin_call("CreateTask", {
                "SourceId": src, "TaskName": "db02-move", "Region": "ap-shanghai", "TargetType": "instance",
                "TargetInstanceId": "ins-abc12345", "TargetSsh": "root@203.0.113.9", "TargetHostKey": HOST_KEY})
            task_id = r["TaskId"]
            # a task created elsewhere appears in the open list by itself
            await expect(page.locator(f'tr[data-task-id="{task_id}"]')).to_contain_text("db02-move")
            await expect(page.locator("[data-empty]")).to_be_hidden()
            await client.call("Heartbeat", {"SourceId": src})
            await c.admin_call("StartTask", {"TaskId": task_id})
            await agent_takes(client, src, "start")
            await report(client, src, task_id, "transferring", 2)

            await page.goto(f"/ui/tasks/{task_id}")
            await expect(page.locator('#task [data-f="state_label"]').first).to_have_text("Transferring")
            await expect(page.locator("dl.settings")).to_contain_text("ins-abc12345")

            reason = "target disk /dev/vdb is 10.0 GiB, smaller than the source disk (100.0 GiB)"
            await client.call("ReportTaskProgress", {"SourceId": src, "TaskId": task_id, "State": "failed",
                                                     "Stage": "init", "Message": reason})
            await expect(page.locator('#task [data-f="state_label"]').first).to_have_text("Failed")
            await expect(page.locator('#task > p[data-f="message"]')).to_have_text(reason)
            await expect(page.locator("#events tr.ev-error")).to_contain_text(reason)
            await expect(page.get_by_role("button", name="Retry task db02-move")).to_be_visible()
            await expect(page.get_by_role("button", name="Pause task db02-move")).to_be_hidden()

            await client.call("Heartbeat", {"SourceId": src})
            await page.get_by_role("button", name="Retry task db02-move").click()
            await expect(page.locator(".flash-ok")).to_contain_text("Retry: sent")
            await expect(page.locator('#task [data-f="state_label"]').first).to_have_text("Starting")
            await agent_takes(client, src, "retry")

            # the agent stops beating: the sources page turns the row offline by itself
            await client.call("Heartbeat", {"SourceId": src})
            await page.goto("/ui/sources")
            row = page.locator(f'tr[data-source-id="{src}"]')
            await expect(row.locator('[data-f="status"]')).to_have_text("Online")
            await expect(row.locator('[data-f="status"]')).to_have_text("Offline", timeout=30_000)
            await expect(row).to_have_class("offline")
            # the task it was running says why nothing moves
            await page.goto(f"/ui/tasks/{task_id}")
            await expect(page.locator('#task > p[data-f="message"]')).to_contain_text("source server is offline")
            await expect(page.locator('#task [data-f="rate"]')).to_have_text("—")
            await browser.close()


async def test_cutover_button_appears_only_while_syncing(console: Console, agent, page) -> None:
    client, source_id = agent
    task_id = (await console.admin_call("CreateTask", {
        "SourceId": source_id, "TaskName": "rounds", "Region": "ap-guangzhou", "TargetType": "image",
        "ImageName": "rounds-img", "TargetSsh": "root@203.0.113.7", "TargetHostKey": HOST_KEY,
        "ContinuousSync": True}))["TaskId"]
    await log_in(page, console)
    trow = page.locator(f'tr[data-task-id="{task_id}"]')
    cutover = trow.get_by_role("button", name="Cutover task rounds")
    await expect(trow.get_by_role("button", name="Start task rounds")).to_be_visible()
    await expect(cutover).to_be_hidden()
    await console.admin_call("StartTask", {"TaskId": task_id})
    await agent_takes(client, source_id, "start")
    await report(client, source_id, task_id, "transferring", 5)
    await expect(trow.locator('[data-f="state_label"]')).to_have_text("Transferring")
    await expect(cutover).to_be_hidden()
    # the full pass is done: rounds; the live list shows the round line and offers the cutover
    await client.call("ReportTaskProgress", {
        "SourceId": source_id, "TaskId": task_id, "State": "syncing", "Stage": "rounds", "Round": 3,
        "RoundChangedBytes": 12 << 20, "LagSeconds": 41.0, "ForecastSeconds": 1.5, "Advice": "keep-going"})
    await expect(trow.locator('[data-f="state_label"]')).to_have_text("Syncing (rounds)")
    await expect(trow.locator('[data-f="rounds"]')).to_have_text(
        "round 3, changed 12.0 MiB per round, lag 00:41, forecast of the final pass 1.5 s")
    await expect(cutover).to_be_visible()
    await cutover.click()
    await expect(page.locator("main")).to_contain_text(f"Cutover: sent to task {task_id}")
    await agent_takes(client, source_id, "cutover")
    await client.call("ReportTaskProgress", {"SourceId": source_id, "TaskId": task_id, "State": "verifying",
                                             "Stage": "cutover"})
    await expect(trow.locator('[data-f="state_label"]')).to_have_text("Verifying")
    await expect(cutover).to_be_hidden()
