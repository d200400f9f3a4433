"""``migrated register --console URL`` against a real console process: the agent's console client
posts to the URL as given, and the console answers its API only at ``/``, so a wrong path fails with
a clear message and saves nothing (before, the path was dropped and the wrong URL saved)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from migrated.console.client import ConsoleClient
from migrated.errors import ConnectionFailed, ConsoleError, UsageError
from tests.agent_world import call
from tests.conftest import cli, repo_env
from tests.console_proc import ConsoleProcess, run_cli, write_config


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[ConsoleProcess, dict[str, str], dict[str, str]]]:
    proc = ConsoleProcess(write_config(tmp_path, tmp_path / "console.db"), tmp_path / "console.log").start()
    try:
        r = run_cli("keys", "create", "--local", "--config", str(proc.config), "--role", "admin", "--name", "ops",
                    "--json")
        assert r.returncode == 0, r.stderr
        admin = json.loads(r.stdout[r.stdout.index("{"):])
        agent_key = call(proc.url, admin, "CreateKey", {"Role": "agent", "Name": "fleet"})
        yield proc, admin, agent_key
    finally:
        proc.stop()


def agent_config(tmp_path: Path, agent_key: dict[str, str]) -> Path:
    creds = tmp_path / "credentials"
    creds.write_text(yaml.safe_dump({"secret_id": agent_key["SecretId"], "secret_key": agent_key["SecretKey"]}))
    creds.chmod(0o600)
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    cfg = tmp_path / "migrated.yaml"
    cfg.write_text(yaml.safe_dump({
        "credentials_file": str(creds), "state_dir": str(tmp_path / "state"),
        "control": {"socket": str(tmp_path / "run" / "control.sock"), "group": None},
        "ssh_identity": str(tmp_path / "id_ed25519"), "disks": [str(disk)],
    }))
    return cfg


def register(cfg: Path, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli("migrated"), "register", "--config", str(cfg), "--console", url],
                          env=repo_env(), capture_output=True, text=True, timeout=60)


def saved(tmp_path: Path) -> list[str]:
    state = tmp_path / "state"
    return sorted(p.name for p in state.rglob("*")) if state.exists() else []


def test_register_with_a_wrong_path_fails_and_saves_nothing(tmp_path: Path, console) -> None:
    proc, admin, agent_key = console
    cfg = agent_config(tmp_path, agent_key)
    for wrong in (f"{proc.url}/wrong/path", f"{proc.url}/ui/", f"{proc.url}/healthz"):
        r = register(cfg, wrong)
        assert r.returncode != 0, (wrong, r.stdout)
        assert "Import source server successfully" not in r.stdout
        assert "no console API at path" in r.stderr and "serves its API at '/'" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
        assert saved(tmp_path) == [], f"{wrong}: saved {saved(tmp_path)}"
    assert call(proc.url, admin, "DescribeSources", {})["TotalCount"] == 0, "nothing was registered"
    # the console's own URL, with or without its slash, registers and is saved as given
    for good in (proc.url, proc.url + "/"):
        r = register(cfg, good)
        assert r.returncode == 0, r.stderr
        assert "Import source server successfully (source src-" in r.stdout
        assert json.loads((tmp_path / "state" / "source.json").read_text())["console"] == good


def test_the_client_posts_to_the_path_it_was_given(tmp_path: Path, console) -> None:
    proc, admin, _ = console

    async def go() -> None:
        async with ConsoleClient(proc.url + "/", admin["SecretId"], admin["SecretKey"]) as c:
            assert c.url == proc.url + "/"
            assert (await c.call("DescribeSources", {}))["TotalCount"] == 0
        async with ConsoleClient(proc.url + "/api", admin["SecretId"], admin["SecretKey"]) as c:
            assert c.url == proc.url + "/api"
            with pytest.raises(ConsoleError) as ei:
                await c.call("DescribeSources", {})
            assert ei.value.code == "InvalidAction" and "no console API at path '/api'" in str(ei.value)
            assert not ei.value.retryable
        # a server that is no console (here: the console's plain 404 without the API's headers)
        async with aiohttp.ClientSession() as s, s.post(proc.url + "/api", data=b"{}") as r:
            assert r.status == 404 and "Response" not in await r.text()
        with pytest.raises(UsageError, match=r"no \?query"):
            ConsoleClient(proc.url + "/?x=1", admin["SecretId"], admin["SecretKey"])

    asyncio.run(go())


def test_a_plain_404_names_the_path_problem() -> None:
    from aiohttp import web

    async def go() -> None:
        app = web.Application()  # no routes: every path answers a plain 404, as a proxy might
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with ConsoleClient(f"http://127.0.0.1:{port}/migrate", "AKIDx", "key") as c:
                with pytest.raises(ConnectionFailed, match=r"HTTP 404, no console API at this URL; the console "
                                                            r"serves its API at its root \(e\.g\. http://127"):
                    await c.call("DescribeSources", {})
        finally:
            await runner.cleanup()

    asyncio.run(go())
