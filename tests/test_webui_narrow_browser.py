"""What only a browser can judge (headless Chromium, as in test_webui_browser.py): at 480 px the pages
do not scroll sideways, a wide table scrolls inside its own box, the ETA stays on one line, and a
finished task's summary is green while a failure stays red. Screenshots go to test-artifacts/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.console_support import HOST_KEY, Console, register, running_console
from tests.test_webui_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    TZ,
    agent,  # noqa: F401  (fixture)
    async_playwright,
    expect,
    log_in,
    report,
)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing (apt-get install chromium)")
WIDTH = 480
GREEN, RED = "rgb(18, 122, 58)", "rgb(180, 35, 24)"  # --ok and --bad in app.css


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    async with running_console(tmp_path) as c:
        yield c


@pytest.fixture
async def narrow(console: Console):
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": WIDTH, "height": 900}, timezone_id=TZ,
                                            base_url=console.url)
        pg = await context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        yield pg
        await browser.close()
        assert not errors, f"JavaScript errors in the page: {errors}"


async def no_sideways_page_scroll(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"narrow-{name}.png"), full_page=True)
    width = await page.evaluate("document.documentElement.scrollWidth")
    wide = await page.evaluate(f"""[...document.querySelectorAll('body *')].filter(
        e => e.getBoundingClientRect().right > {WIDTH} && !e.closest('.table-scroll')).slice(0, 5).map(
        e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))""")
    assert width <= WIDTH, f"{page.url} is {width} px wide at a {WIDTH} px window: {wide}"


async def stays_inside(page, selector: str) -> None:
    """Nothing inside ``selector`` sticks out of its right edge."""
    out = await page.locator(selector).evaluate("""box => {
        const edge = box.getBoundingClientRect().right + 0.5;
        return [...box.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right > edge)
            .map(e => e.tagName + '#' + e.id + ' ' + Math.round(e.getBoundingClientRect().right)); }""")
    assert not out, f"sticks out of {selector}: {out}"


async def scrolls_in_its_box(page, table_id: str, *, wider: bool = True) -> None:
    """The table's box ends inside the window; a table ``wider`` than it scrolls inside the box."""
    box = page.locator(f".table-scroll:has(> #{table_id})")
    sizes = await box.evaluate("b => [b.clientWidth, b.scrollWidth, b.getBoundingClientRect().right]")
    client, scroll, right = sizes
    assert right <= WIDTH, f"#{table_id}: the box ends at {right} px"
    if not wider and scroll <= client:
        return  # it happens to fit
    assert client < scroll, f"#{table_id}: box {client} px, table {scroll} px: expected a wider table"
    await box.evaluate("b => { b.scrollLeft = b.scrollWidth; }")
    assert await box.evaluate("b => b.scrollLeft") > 0, f"#{table_id} does not scroll inside its box"


async def one_line(locator) -> bool:
    return await locator.evaluate("""el => {
        const r = document.createRange(); r.selectNodeContents(el);
        const tops = new Set([...r.getClientRects()].map(x => Math.round(x.top)));
        return tops.size === 1; }""")


async def test_pages_at_480px(console: Console, agent, narrow) -> None:  # noqa: F811
    client, source_id = agent
    page = narrow
    tasks = {}
    for name, final in (("done-task", "success"), ("broken-task", "failed"), ("running-task", "transferring")):
        src = source_id if final == "transferring" else await register(client, name)  # one unfinished task each
        await client.call("Heartbeat", {"SourceId": src})
        tid = (await console.admin_call("CreateTask", {
            "SourceId": src, "TaskName": name, "Region": "ap-guangzhou", "TargetType": "instance",
            "TargetInstanceId": "ins-abc12345", "TargetSsh": "root@203.0.113.7", "TargetHostKey": HOST_KEY}))["TaskId"]
        tasks[name] = tid
        await console.admin_call("StartTask", {"TaskId": tid})
        await report(client, src, tid, "transferring", 6, rate=50 * (1 << 20), eta=4000)
        if final != "transferring":
            await client.call("ReportTaskProgress", {
                "SourceId": src, "TaskId": tid, "State": final,
                "Stage": "release" if final == "success" else "transfer",
                "Message": "2 disk(s) migrated" if final == "success" else "ssh: connection refused"})
    await log_in(page, console)

    table = page.locator("#tasks")
    done = table.locator(f'tr[data-task-id="{tasks["done-task"]}"]')
    broken = table.locator(f'tr[data-task-id="{tasks["broken-task"]}"]')
    running = table.locator(f'tr[data-task-id="{tasks["running-task"]}"]')
    await expect(done.locator('[data-f="stage"]')).to_have_text("Finished")
    await expect(done.locator('[data-f="message"]')).to_have_css("color", GREEN)
    await expect(broken.locator('[data-f="message"]')).to_have_css("color", RED)
    await expect(running.locator('[data-f="eta"]')).to_have_text("1:06:40")
    assert await one_line(running.locator('[data-f="eta"]')), "the ETA wraps"
    assert await one_line(running.locator('[data-f="rate"]')), "the rate wraps"
    await no_sideways_page_scroll(page, "tasks")
    await scrolls_in_its_box(page, "tasks")

    await page.goto("/ui/sources")
    await expect(page.locator("#sources")).to_contain_text("web01.example")
    await no_sideways_page_scroll(page, "sources")
    await scrolls_in_its_box(page, "sources")

    await page.goto(f"/ui/tasks/{tasks['running-task']}")
    await expect(page.locator("#disk-progress")).to_contain_text("/dev/vdb")
    assert await one_line(page.locator('.overall [data-f="eta"]'))
    await no_sideways_page_scroll(page, "task")
    await stays_inside(page, "dl.settings")
    await stays_inside(page, ".overall")
    await scrolls_in_its_box(page, "disk-progress", wider=False)
    await scrolls_in_its_box(page, "events", wider=False)

    await page.goto(f"/ui/tasks/{tasks['done-task']}")
    await expect(page.locator('p[data-f="message"]')).to_have_css("color", GREEN)
    await expect(page.locator('.overall [data-f="stage"]')).to_have_text("Finished")
    await no_sideways_page_scroll(page, "task-done")

    await page.goto(f"/ui/sources/{source_id}/new-task")
    await expect(page.get_by_role("heading", name="New migration task")).to_be_visible()
    await no_sideways_page_scroll(page, "new-task")
