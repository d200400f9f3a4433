"""A control server with a small in-memory backend, for the control-socket tests.

``python -m tests.control_helper SOCKET GROUP [LOG_FORMAT]`` serves until SIGTERM and prints
``ready`` once the socket is bound. The real daemon is tested end to end elsewhere.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import Any

from migrated.control.server import ControlServer
from migrated.errors import StateError
from migrated.model.states import Action, ActionDenied, TaskState, check_action
from migrated.model.status import DiskProgress, TaskProgress


class MemoryBackend:
    def __init__(self) -> None:
        self.task = TaskProgress(
            task_id="task-42", state=TaskState.TRANSFERRING.value, stage="transfer",
            disks=[DiskProgress("/dev/vdb", "/dev/vdb", 10 << 30, 4 << 30, bytes_sent=1 << 30)],
            rate_bps=100 << 20, eta_seconds=61.0, updated_at=time.time(),
        )
        self.bandwidth: int | None = None

    def status(self) -> dict[str, Any]:
        return {
            "source_id": "src-test",
            "console": {"endpoint": "https://console.test", "online": True, "last_heartbeat": time.time() - 3,
                        "last_error": "", "clock_skew": 0.4},
            "task": self.task.to_dict(),
            "bandwidth_bps": self.bandwidth,
        }

    def _act(self, action: Action, new: TaskState) -> dict[str, Any]:
        try:
            check_action(action, TaskState(self.task.state))
        except ActionDenied as e:
            raise StateError(str(e)) from None
        self.task.state = new.value
        return {"message": f"task {self.task.task_id} {new.value}", "task": self.task.to_dict()}

    async def pause(self) -> dict[str, Any]:
        return self._act(Action.PAUSE, TaskState.PAUSED)

    async def resume(self) -> dict[str, Any]:
        return self._act(Action.START, TaskState.TRANSFERRING)

    async def retry(self) -> dict[str, Any]:
        return self._act(Action.RETRY, TaskState.TRANSFERRING)

    async def check(self) -> dict[str, Any]:
        return {"checks": [{"name": "selinux", "result": "pass", "message": "SELinux is disabled"}]}

    async def set_bandwidth(self, bps: int | None) -> dict[str, Any]:
        self.bandwidth = bps
        return {"message": f"bandwidth {bps or 'unlimited'}", "bandwidth_bps": bps}


async def serve(path: str, group: str | None) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with ControlServer(path, group, MemoryBackend()):
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    from migrated import logs

    logs.configure("warning", sys.argv[3] if len(sys.argv) > 3 else "console")  # optional 3rd arg: log format
    asyncio.run(serve(sys.argv[1], None if sys.argv[2] == "-" else sys.argv[2]))
