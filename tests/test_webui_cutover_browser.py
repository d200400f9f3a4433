"""The "Advanced: rounds and cutover" fieldset and the rounds form in headless Chromium against a real
console (fixtures of test_webui_browser.py): the fieldset is usable only with incremental sync
ticked, a refusal sits beside its field with every value kept, the task page shows the options and
changes the rounds, and the settings the agent reports appear live."""

from __future__ import annotations

import pytest

from tests.console_support import HOST_KEY, Console
from tests.test_webui_browser import (  # noqa: F401 - fixtures
    CHROMIUM,
    agent,
    console,
    expect,
    fits_the_screen,
    log_in,
    page,
)

pytestmark = pytest.mark.skipif(not __import__("shutil").which(CHROMIUM), reason=f"{CHROMIUM} missing")


async def test_cutover_options_in_a_real_browser(console: Console, agent, page) -> None:  # noqa: F811
    client, source_id = agent
    await log_in(page, console)
    await page.goto(f"/ui/sources/{source_id}/new-task")
    fieldset = page.locator("#cutover-options")
    await expect(fieldset).to_contain_text("Advanced: rounds and cutover")
    await expect(page.get_by_label("Freeze budget")).to_be_disabled()  # one-shot task: means nothing
    # a consistent finish takes the cutover options, not the round ones
    await page.get_by_label("Consistent finish").check()
    await expect(page.get_by_label("Freeze budget")).to_be_enabled()
    await expect(page.get_by_label("Seconds between rounds")).to_be_disabled()
    await page.get_by_label("Consistent finish").uncheck()
    await expect(page.get_by_label("Freeze budget")).to_be_disabled()
    await page.get_by_label("Incremental sync until cutover").check()
    await expect(page.get_by_label("Freeze budget")).to_be_enabled()
    await expect(page.get_by_label("Seconds between rounds")).to_be_enabled()
    await fits_the_screen(page)

    await page.get_by_label("Destination region").fill("ap-guangzhou")
    await page.get_by_label("Task name").fill("rounds")
    await page.get_by_label("Image name").fill("rounds-image")
    await page.get_by_label("Target SSH endpoint").fill("root@203.0.113.7:22")
    await page.get_by_label("Target SSH host key").fill(HOST_KEY)
    await page.get_by_label("Seconds between rounds").fill("30")
    await page.get_by_label("Source read limit during the rounds").fill("5")
    await page.get_by_label("Quiesce the source for the final pass").select_option("hooks")
    await page.get_by_label("Freeze budget").fill("45")
    await page.get_by_role("button", name="Create task").click()

    await expect(page.locator("#err-pre_hook")).to_contain_text("required when Quiesce is hooks")
    await expect(page.get_by_label("Pre hook")).to_have_attribute("aria-invalid", "true")
    await expect(page.get_by_label("Freeze budget")).to_have_value("45")
    await expect(page.get_by_label("Seconds between rounds")).to_have_value("30")
    await expect(page.get_by_label("Quiesce the source for the final pass")).to_have_value("hooks")
    await expect(page.get_by_label("Incremental sync until cutover")).to_be_checked()

    await page.get_by_label("Pre hook").fill("systemctl stop app")
    await page.get_by_label("Post hook").fill("systemctl start app")
    await page.get_by_role("button", name="Create task").click()
    await expect(page.locator(".flash-ok")).to_contain_text("Task rounds created")
    task_id = page.url.rsplit("/", 1)[1]
    settings = page.locator("dl.settings")
    await expect(settings).to_contain_text("a round every 30 s, source read limit 5.0 MiB/s")
    await expect(settings).to_contain_text("quiesce: hooks only; freeze budget 45 s")
    await expect(settings).to_contain_text("systemctl stop app")

    # change the rounds from the task page
    await page.locator("#rounds-form").get_by_label("Seconds between rounds").fill("7")
    await page.locator("#rounds-form").get_by_role("button", name="Change rounds").click()
    await expect(page.locator(".flash-ok")).to_contain_text("Rounds changed")
    await expect(settings).to_contain_text("a round every 7 s, source read limit 5.0 MiB/s")

    # what the agent applies shows up live (the page polls)
    await console.admin_call("StartTask", {"TaskId": task_id})
    await client.call("ReportTaskProgress", {"SourceId": source_id, "TaskId": task_id, "State": "transferring",
                                             "RoundIntervalSeconds": 7.0, "ReadLimitKBps": 5120})
    await expect(page.locator('#rounds-settings [data-f="rounds_settings"]')).to_have_text(
        "a round every 7 s, source read limit 5.0 MiB/s")
