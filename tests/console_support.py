"""Helpers for the console tests: a real console (aiohttp on 127.0.0.1 port 0, a real SQLite
file) and the official Tencent Cloud SDK clients pointed at it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from tencentcloud.common import credential
from tencentcloud.common.common_client import CommonClient
from tencentcloud.common.common_client_async import CommonClient as AsyncCommonClient
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile

from migrated.console.app import SERVICE, create_app
from migrated.console.client import ConsoleClient
from migrated.console.config import API_VERSION, parse_config
from migrated.console.config import SERVICE as SERVICE_NAME
from migrated.console.params import CreateKey
from migrated.console.service import ConsoleService

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def sdk_profile(port: int) -> ClientProfile:
    hp = HttpProfile(protocol="http", endpoint=f"127.0.0.1:{port}", reqTimeout=60)
    return ClientProfile(httpProfile=hp)


@dataclass
class Console:
    port: int
    url: str
    service: ConsoleService
    admin_id: str
    admin_key: str
    db_path: Path

    def sdk(self, secret_id: str | None = None, secret_key: str | None = None,
            service: str = SERVICE_NAME) -> CommonClient:
        cred = credential.Credential(secret_id or self.admin_id, secret_key or self.admin_key)
        return CommonClient(service, API_VERSION, cred, "ap-guangzhou", profile=sdk_profile(self.port))

    def sdk_async(self, secret_id: str | None = None, secret_key: str | None = None) -> AsyncCommonClient:
        cred = credential.Credential(secret_id or self.admin_id, secret_key or self.admin_key)
        return AsyncCommonClient(SERVICE_NAME, API_VERSION, cred, "ap-guangzhou", profile=sdk_profile(self.port))

    async def admin_call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """Through the official sync SDK client, off the event loop."""
        out = await asyncio.to_thread(self.sdk().call_json, action, params)
        return out["Response"]

    def client(self, secret_id: str, secret_key: str) -> ConsoleClient:
        return ConsoleClient(self.url, secret_id, secret_key)

    async def new_key(self, role: str, name: str = "k") -> tuple[str, str]:
        r = await self.admin_call("CreateKey", {"Role": role, "Name": name})
        return r["SecretId"], r["SecretKey"]


def console_config(db_path: Path, **sections: dict[str, Any]):
    data: dict[str, Any] = {"storage": {"path": str(db_path), "heartbeat_flush_seconds": 0.2}}
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    return parse_config(data)


@contextlib.asynccontextmanager
async def running_console(tmp_path: Path, **sections: dict[str, Any]) -> AsyncIterator[Console]:
    db = tmp_path / "console.db"
    cfg = console_config(db, **sections)
    app = create_app(cfg)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    svc = app[SERVICE]
    k = await svc.create_key(None, CreateKey(Role="admin", Name="test-admin"))
    try:
        yield Console(port, f"http://127.0.0.1:{port}", svc, k["SecretId"], k["SecretKey"], db)
    finally:
        await runner.cleanup()


DISKS = [
    {"Name": "/dev/vda", "SizeBytes": 20 << 30, "MountPoints": ["/", "/boot"], "IsSystem": True},
    {"Name": "/dev/vdb", "SizeBytes": 100 << 30, "MountPoints": ["/data"], "IsSystem": False},
    {"Name": "/dev/vdc", "SizeBytes": 1 << 30, "MountPoints": [], "IsSystem": False},
]


async def register(agent: ConsoleClient, machine: str = "machine-1") -> str:
    r = await agent.call("RegisterSource", {"MachineId": machine, "Hostname": f"{machine}.example",
                                            "OsName": "Debian 12", "AgentVersion": "0.1.0", "Disks": DISKS})
    return r["SourceId"]


def task_params(source_id: str, **over: Any) -> dict[str, Any]:
    p = {"SourceId": source_id, "TaskName": "web01", "Region": "ap-guangzhou", "TargetType": "instance",
         "TargetInstanceId": "ins-abc12345", "TargetSsh": "root@203.0.113.7:22", "TargetHostKey": HOST_KEY,
         "BandwidthLimitKBps": 20480, "Checksum": True}
    p.update(over)
    return p


def wait_until(pred, timeout: float = 10.0, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()
