"""The web UI's "Advanced: rounds and cutover" fieldset and the task page's rounds form, over plain
HTTP against a real console (127.0.0.1 port 0, real SQLite): field errors beside the fields with the
values kept, what is stored, what the task page shows, the live change of the rounds."""

from __future__ import annotations

import html as htmllib
import re

from migrated.console.web.forms import form_to_params
from tests.console_support import HOST_KEY, Console, register
from tests.test_webui_forms import good_form
from tests.test_webui_http import console, http, login, page_csrf  # noqa: F401 - `console` is a fixture


def error_beside(body: str, field: str) -> str:
    m = re.search(rf'<p class="field-error" id="err-{re.escape(field)}" role="alert">([^<]*)</p>', body)
    return htmllib.unescape(m.group(1)) if m else ""


def flash(body: str) -> str:
    return " ".join(htmllib.unescape(m) for m in re.findall(r'class="flash flash-\w+"[^>]*>([^<]*)<', body))


def test_form_fields_map_to_the_api_parameters() -> None:
    params, errors = form_to_params("src-1", good_form(continuous=True, read_limit_mib="2.5", quiesce="hooks",
                                                       pre_hook="systemctl stop app", freeze_budget="45"), "UTC")
    assert errors == {}
    assert {k: params[k] for k in ("ReadLimitKBps", "Quiesce", "PreHook", "FreezeBudgetSeconds")} == {
        "ReadLimitKBps": 2560, "Quiesce": "hooks", "PreHook": "systemctl stop app", "FreezeBudgetSeconds": 45}
    _, errors = form_to_params("src-1", good_form(pre_hook="true", freeze_budget="9"), "UTC")
    assert set(errors) == {"pre_hook", "freeze_budget"}
    assert errors["pre_hook"].startswith("only for incremental sync until cutover")
    _, errors = form_to_params("src-1", good_form(continuous=True, read_limit_mib="lots", freeze_budget="1m"), "UTC")
    assert errors == {"read_limit_mib": "must be a number of MiB/s up to 102400 (0 or empty: no limit)",
                      "freeze_budget": "must be a whole number of seconds"}
    params, errors = form_to_params("src-1", good_form(continuous=True, quiesce="lvm", snapshot_size="20%ORIGIN"),
                                    "UTC")
    assert errors == {} and (params["Quiesce"], params["SnapshotSize"]) == ("lvm", "20%ORIGIN")
    params, _ = form_to_params("src-1", good_form(continuous=True, quiesce="lvm"), "UTC")
    assert "SnapshotSize" not in params, "empty: the agent's default"
    _, errors = form_to_params("src-1", good_form(snapshot_size="2G"), "UTC")
    assert errors["snapshot_size"].startswith("only for incremental sync until cutover")


async def test_cutover_fieldset_errors_stored_options_and_live_rounds(console: Console) -> None:  # noqa: F811
    agent_id, agent_key = await console.new_key("agent", "a")
    async with console.client(agent_id, agent_key) as agent:
        src = await register(agent)
        other = await register(agent, "machine-2")
    url = f"{console.url}/ui/sources/{src}/new-task"
    base = {"region": "ap-guangzhou", "name": "n1", "target_type": "image", "image_name": "img",
            "ssh_endpoint": "root@203.0.113.7", "host_key": HOST_KEY, "disk-0-migrate": "on",
            "disk-0-target": "/dev/vda", "continuous": "on", "round_interval": "20"}
    async with http() as s:
        await login(s, console.url, console.admin_id, console.admin_key)
        async with s.get(url) as r:
            page = await r.text()
        fieldset = page[page.index('<fieldset id="cutover-options"'):]
        fieldset = fieldset[:fieldset.index("</fieldset>")]
        assert "Advanced: rounds and cutover" in fieldset and "data-for-continuous" in fieldset
        for name in ("round_interval", "read_limit_mib", "quiesce", "snapshot_size", "pre_hook", "post_hook",
                     "freeze_budget"):
            assert f'name="{name}"' in fieldset, name
        assert "Runs as root on the source server" in fieldset
        assert '<option value="lvm">LVM snapshot of the source volume' in fieldset
        csrf = await page_csrf(s, url)

        # the API's rules, beside their fields, with what was typed kept
        bad = {**base, "csrf": csrf, "quiesce": "hooks", "freeze_budget": "900", "read_limit_mib": "3"}
        async with s.post(url, data=bad) as r:
            body = await r.text()
            assert r.status == 400
        assert error_beside(body, "freeze_budget") == "Input should be less than or equal to 600"
        assert 'value="900"' in body and 'value="3"' in body and 'value="20"' in body
        assert '<option value="hooks" selected>' in body
        async with s.post(url, data={**bad, "freeze_budget": "60"}) as r:
            body = await r.text()
        assert error_beside(body, "pre_hook").startswith("required when Quiesce is hooks")
        async with s.post(url, data={**bad, "freeze_budget": "60", "pre_hook": "stop\nrm -rf /"}) as r:
            body = await r.text()
        assert error_beside(body, "pre_hook").startswith("must be one line without NUL, CR or LF")
        async with s.post(url, data={**base, "csrf": csrf, "continuous": "", "post_hook": "true"}) as r:
            body = await r.text()
        assert error_beside(body, "post_hook").startswith("only for incremental sync until cutover")
        assert error_beside(body, "round_interval").startswith("only for incremental sync until cutover")
        _, total = await console.service.storage.list_tasks()
        assert total == 0

        good = {**bad, "freeze_budget": "60", "pre_hook": "systemctl stop 'my app'",
                "post_hook": 'systemctl start "my app"'}
        async with s.post(url, data=good, allow_redirects=False) as r:
            assert r.status == 303
            task_url = f"{console.url}{r.headers['Location']}"
        task_id = task_url.rsplit("/", 1)[1]
        (view,) = (await console.admin_call("DescribeTasks", {"TaskIds": [task_id]}))["TaskSet"]
        assert {k: view[k] for k in ("RoundIntervalSeconds", "ReadLimitKBps", "Quiesce", "PreHook", "PostHook",
                                     "FreezeBudgetSeconds")} == {
            "RoundIntervalSeconds": 20, "ReadLimitKBps": 3072, "Quiesce": "hooks",
            "PreHook": "systemctl stop 'my app'", "PostHook": 'systemctl start "my app"', "FreezeBudgetSeconds": 60}
        async with s.get(task_url) as r:
            page = htmllib.unescape(await r.text())
        assert "a round every 20 s, source read limit 3.0 MiB/s" in page
        assert "quiesce: hooks only; freeze budget 60 s" in page
        assert "<code class=\"wrap\">systemctl stop 'my app'</code>" in page
        assert 'id="rounds-form"' in page

        # the rounds changed from the task page: stored, and shown
        csrf = await page_csrf(s, task_url)
        async with s.post(f"{task_url}/rounds", data={"csrf": csrf, "round_interval": "5"}) as r:
            body = htmllib.unescape(await r.text())
        assert "Rounds changed" in flash(body) and "a round every 5 s, source read limit 3.0 MiB/s" in body
        async with s.post(f"{task_url}/rounds", data={"csrf": csrf, "read_limit_mib": "0"}) as r:
            body = htmllib.unescape(await r.text())
        assert "a round every 5 s, source read limit unlimited" in body
        (view,) = (await console.admin_call("DescribeTasks", {"TaskIds": [task_id]}))["TaskSet"]
        assert (view["RoundIntervalSeconds"], view["ReadLimitKBps"]) == (5, 0)
        for data, words in [({"round_interval": "soon"}, "Rounds not changed: must be a whole number of seconds"),
                            ({"round_interval": "90000"}, "Rounds not changed: Input should be less than or equal"),
                            ({}, "Rounds not changed: enter seconds between rounds and/or a read limit")]:
            async with s.post(f"{task_url}/rounds", data={"csrf": csrf, **data}) as r:
                assert words in flash(await r.text()), words
        # no CSRF token: refused, nothing changed
        async with s.post(f"{task_url}/rounds", data={"round_interval": "7"}) as r:
            assert r.status == 403
        (view,) = (await console.admin_call("DescribeTasks", {"TaskIds": [task_id]}))["TaskSet"]
        assert view["RoundIntervalSeconds"] == 5

        # a one-shot task: no rounds form, and a post is a clear error
        one = (await console.admin_call("CreateTask", {
            "SourceId": other, "TaskName": "one", "Region": "ap-guangzhou", "TargetType": "image",
            "ImageName": "i2", "TargetSsh": "root@203.0.113.7", "TargetHostKey": HOST_KEY}))["TaskId"]
        async with s.get(f"{console.url}/ui/tasks/{one}") as r:
            assert 'id="rounds-form"' not in await r.text()
        async with s.post(f"{console.url}/ui/tasks/{one}/rounds", data={"csrf": csrf, "round_interval": "5"}) as r:
            assert "is not a continuous task" in flash(await r.text())


async def new_task_form(console: Console, **boxes: str) -> tuple[str, dict[str, str]]:  # noqa: F811
    """A registered source's new-task URL and a valid form for it (plus ``boxes``)."""
    agent_id, agent_key = await console.new_key("agent", "a")
    async with console.client(agent_id, agent_key) as agent:
        src = await register(agent)
    return f"{console.url}/ui/sources/{src}/new-task", {
        "region": "ap-guangzhou", "name": "n1", "target_type": "image", "image_name": "img",
        "ssh_endpoint": "root@203.0.113.7", "host_key": HOST_KEY, "disk-0-migrate": "on",
        "disk-0-target": "/dev/vda", **boxes}


async def test_lvm_snapshot_option_on_the_form_and_the_task_page(console: Console) -> None:  # noqa: F811
    """Quiesce "LVM snapshot" and its size: the API's refusals beside the snapshot-size field with
    what was typed kept, what is stored, and what the task page shows."""
    url, base = await new_task_form(console, continuous="on")
    async with http() as s:
        await login(s, console.url, console.admin_id, console.admin_key)
        csrf = await page_csrf(s, url)
        async with s.post(url, data={**base, "csrf": csrf, "quiesce": "lvm", "snapshot_size": "20 percent"}) as r:
            body = await r.text()
            assert r.status == 400
        assert error_beside(body, "snapshot_size").startswith(
            "'20 percent' is not a snapshot size: use a size like 2G or 512M, or 20%ORIGIN")
        assert '<option value="lvm" selected>' in body and 'value="20 percent"' in body
        async with s.post(url, data={**base, "csrf": csrf, "snapshot_size": "2G"}) as r:
            body = await r.text()
            assert r.status == 400
        assert error_beside(body, "snapshot_size").startswith("only with Quiesce lvm")
        _, total = await console.service.storage.list_tasks()
        assert total == 0

        async with s.post(url, data={**base, "csrf": csrf, "quiesce": "lvm", "snapshot_size": "20%ORIGIN"},
                          allow_redirects=False) as r:
            assert r.status == 303, await r.text()
            task_url = f"{console.url}{r.headers['Location']}"
        (view,) = (await console.admin_call("DescribeTasks", {"TaskIds": [task_url.rsplit("/", 1)[1]]}))["TaskSet"]
        assert (view["Quiesce"], view["SnapshotSize"]) == ("lvm", "20%ORIGIN")
        async with s.get(task_url) as r:
            page = htmllib.unescape(await r.text())
        assert "quiesce: LVM snapshot (snapshot size 20%ORIGIN); freeze budget 30 s" in page


async def test_consistent_finish_on_the_form_and_the_task_page(console: Console) -> None:  # noqa: F811
    """The "Consistent finish" box: with the cutover options it makes a one-shot task that cuts over
    right after its full pass; a round setting with it is refused beside that field; the task page
    says so and offers no rounds form."""
    url, base = await new_task_form(console, consistent_finish="on")
    async with http() as s:
        await login(s, console.url, console.admin_id, console.admin_key)
        csrf = await page_csrf(s, url)
        async with s.post(url, data={**base, "csrf": csrf, "round_interval": "30"}) as r:
            body = await r.text()
            assert r.status == 400
        assert error_beside(body, "round_interval").startswith("only for a task with ContinuousSync true")
        assert 'name="consistent_finish" id="consistent_finish" checked' in body
        async with s.post(url, data={**base, "csrf": csrf, "continuous": "on"}) as r:
            body = await r.text()
            assert r.status == 400
        assert "always ends with a cutover" in error_beside(body, "consistent_finish")
        async with s.post(url, data={**base, "csrf": csrf, "hook_timeout": "900"}) as r:
            body = await r.text()
            assert r.status == 400
        assert error_beside(body, "hook_timeout").startswith("only with PreHook or PostHook")
        async with s.post(url, data={**base, "csrf": csrf, "freeze_budget": "12", "post_hook": "systemctl start app",
                                     "hook_timeout": "900"}, allow_redirects=False) as r:
            assert r.status == 303, await r.text()
            task_url = f"{console.url}{r.headers['Location']}"
        (view,) = (await console.admin_call("DescribeTasks", {"TaskIds": [task_url.rsplit("/", 1)[1]]}))["TaskSet"]
        assert (view["ContinuousSync"], view["ConsistentFinish"], view["FreezeBudgetSeconds"]) == (False, True, 12)
        assert view["HookTimeoutSeconds"] == 900
        async with s.get(task_url) as r:
            page = htmllib.unescape(await r.text())
        assert "Consistent finish" in page and "a cutover right after the full pass" in page
        assert "quiesce: freeze (default); freeze budget 12 s" in page
        assert "Hook timeout" in page and "900 s" in page
        assert 'id="rounds-form"' not in page
