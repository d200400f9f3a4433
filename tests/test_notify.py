"""sd_notify against our own NOTIFY_SOCKET (path and abstract '@' addresses)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from pathlib import Path

import pytest

from migrated.agent.notify import Notifier


def listen(address: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + address[1:] if address.startswith("@") else address)
    s.settimeout(5)
    return s


def messages(s: socket.socket) -> list[dict[str, str]]:
    out = []
    s.setblocking(False)
    try:
        while True:
            data = s.recv(4096).decode()
            out.append(dict(line.split("=", 1) for line in data.split("\n")))
    except BlockingIOError:
        pass
    return out


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_ready_status_stopping(kind: str, tmp_path: Path) -> None:
    address = str(tmp_path / "notify") if kind == "path" else f"@migrated-test-{uuid.uuid4().hex}"
    with listen(address) as s:
        env = {"NOTIFY_SOCKET": address}
        n = Notifier.from_environ(env)
        assert env == {}  # children do not inherit it
        assert n.ready("control socket bound")
        assert n.status("transferring 41%")
        assert not n.status("transferring 41%")  # unchanged line is not resent
        assert n.stopping()
        assert messages(s) == [
            {"READY": "1", "STATUS": "control socket bound"},
            {"STATUS": "transferring 41%"},
            {"STOPPING": "1"},
        ]


def test_without_systemd_everything_is_a_no_op() -> None:
    n = Notifier.from_environ({})
    assert not n.enabled and not n.ready() and n.watchdog_interval is None


def test_watchdog_for_another_pid_is_ignored(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "n"), "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}
    assert Notifier.from_environ(env).watchdog_interval is None
    env = {"NOTIFY_SOCKET": str(tmp_path / "n"), "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_environ(env).watchdog_interval == 2.0


async def test_watchdog_pings_from_the_event_loop(tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    with listen(address) as s:
        n = Notifier.from_environ({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "20000"})  # ping every 10 ms
        task = asyncio.create_task(n.watchdog_loop())
        loop = asyncio.get_running_loop()
        s.setblocking(True)
        for _ in range(3):
            data = await loop.run_in_executor(None, s.recv, 100)
            assert data == b"WATCHDOG=1"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_unreachable_socket_does_not_raise(tmp_path: Path) -> None:
    assert not Notifier(str(tmp_path / "nobody-listens")).ready()


def test_a_full_queue_never_blocks(tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    with listen(address):  # bound but never read
        n = Notifier(address)
        results = [n.watchdog() for _ in range(5000)]  # would hang here if sends blocked
        assert results[0] and not results[-1]
