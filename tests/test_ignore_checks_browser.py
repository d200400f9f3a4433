"""The new-task page's "Pre-migration checks to skip" in headless Chromium: the boxes are there,
labelled by check name, a ticked one reaches the task, and the task page lists it. Saves
test-artifacts/create-ignore-checks.png (the fieldset) to look at."""

from __future__ import annotations

from migrated.model.taskspec import CHECKS
from tests.console_support import HOST_KEY, Console
from tests.test_webui_browser import ARTIFACTS, agent, console, expect, fits_the_screen, log_in, page  # noqa: F401


async def test_skip_checks_on_the_form_in_a_real_browser(console: Console, agent, page) -> None:  # noqa: F811
    _client, source_id = agent
    await log_in(page, console)
    await page.goto(f"/ui/sources/{source_id}/new-task")
    boxes = page.locator("#ignore-checks input[type=checkbox]")
    await expect(boxes).to_have_count(len(CHECKS))
    for name in CHECKS:
        assert not await page.get_by_label(name, exact=True).is_checked()
    await fits_the_screen(page)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.locator("#ignore-checks").screenshot(path=str(ARTIFACTS / "create-ignore-checks.png"))

    await page.get_by_label("Destination region").fill("ap-guangzhou")
    await page.get_by_label("Task name").fill("skip-some")
    await page.get_by_label("Image name").fill("skip-image")
    await page.get_by_label("Target SSH endpoint").fill("root@203.0.113.7:22")
    await page.get_by_label("Target SSH host key").fill(HOST_KEY)
    await page.get_by_label("selinux", exact=True).check()
    await page.get_by_label("clock_skew", exact=True).check()
    await page.get_by_role("button", name="Create task").click()
    await expect(page.locator(".flash-ok")).to_contain_text("Task skip-some created")
    rec = await console.service.storage.get_task(page.url.rsplit("/", 1)[1])
    assert rec is not None and rec.ignore_checks == ("selinux", "clock_skew")
    await expect(page.locator("#ignore-checks")).to_have_text("selinux, clock_skew")
