"""The agent's side of the console API: typed calls over any ``call(action, params)`` client
(``migrated.console.client.ConsoleClient`` in production).

Each method returns the console's ``Response`` object. Errors are those of the
client: :class:`ConsoleError` (an error answer; ``.code``) or
:class:`ConnectionFailed` (network, timeout, not a console).
"""

from __future__ import annotations

from typing import Any, Protocol

from migrated.model.status import TaskProgress


class Caller(Protocol):
    async def call(self, action: str, params: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]: ...


class AgentConsole:
    def __init__(self, client: Caller, *, agent_version: str = "") -> None:
        self.client = client
        self.agent_version = agent_version

    async def register(self, machine_id: str, hostname: str, os_name: str,
                       disks: list[dict[str, Any]]) -> dict[str, Any]:
        return await self.client.call("RegisterSource", {
            "MachineId": machine_id, "Hostname": hostname, "OsName": os_name,
            "AgentVersion": self.agent_version, "Disks": disks,
        })

    async def heartbeat(self, source_id: str) -> dict[str, Any]:
        return await self.client.call("Heartbeat", {"SourceId": source_id, "AgentVersion": self.agent_version})

    async def poll(self, source_id: str, wait: float) -> list[dict[str, Any]]:
        r = await self.client.call("PollCommands", {"SourceId": source_id, "WaitSeconds": wait},
                                   timeout=wait + 15)
        cmds = r.get("Commands") or []
        return [c for c in cmds if isinstance(c, dict)]

    async def ack(self, source_id: str, command_id: str, ok: bool, message: str = "") -> dict[str, Any]:
        return await self.client.call("AckCommand", {
            "SourceId": source_id, "CommandId": command_id, "Result": "ok" if ok else "error",
            "Message": message[:4000],
        })

    async def report_progress(self, source_id: str, p: TaskProgress) -> dict[str, Any]:
        return await self.client.call("ReportTaskProgress", {"SourceId": source_id, **p.to_api()})

    async def report_event(self, source_id: str, task_id: str, level: str, stage: str, message: str) -> None:
        await self.client.call("ReportTaskEvent", {"SourceId": source_id, "TaskId": task_id, "Level": level,
                                                   "Stage": stage[:32], "Message": message[:4000] or "-"})
