"""systemd readiness and watchdog notifications (the sd_notify protocol).

A datagram of ``KEY=VALUE`` lines sent to ``$NOTIFY_SOCKET`` (a filesystem path,
or ``@name`` for the abstract namespace). Outside systemd (no NOTIFY_SOCKET)
every call is a no-op, so the daemon runs the same in a terminal.

The daemon sends ``READY=1`` once the control socket is bound and its state is
loaded, ``STATUS=<one line>`` whenever the progress line changes, ``WATCHDOG=1``
from a loop on the event loop itself at half of ``$WATCHDOG_USEC`` (so a stuck
event loop stops the pings and systemd restarts us), and ``STOPPING=1`` on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import MutableMapping

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    """Sends sd_notify messages. ``address`` None means: not under systemd, do nothing."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._last_status: str | None = None

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True) -> Notifier:
        """Read NOTIFY_SOCKET / WATCHDOG_USEC / WATCHDOG_PID; by default remove them from the
        environment so that child processes (ssh, lsinitramfs...) do not talk to systemd as us."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        watchdog: int | None = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if usec and (not pid or pid == str(os.getpid())):
            try:
                watchdog = int(usec) if int(usec) > 0 else None
            except ValueError:
                watchdog = None
        if unset:
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                env.pop(key, None)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half the timeout systemd gave), or None."""
        return self.watchdog_usec / 2_000_000 if self.watchdog_usec else None

    def send(self, **fields: str) -> bool:
        """Send one message (``READY="1"`` -> ``READY=1``). Returns False if not sent; never raises."""
        if self.address is None:
            return False
        payload = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                # never block the event loop on a receiver that does not read (queue full)
                s.sendto(payload, socket.MSG_DONTWAIT, addr)
        except BlockingIOError:
            log.debug("sd_notify dropped: the notify socket's queue is full", notify_socket=self.address)
            return False
        except OSError as e:
            log.warning("sd_notify failed", notify_socket=self.address, error=str(e))
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send(READY="1", **({"STATUS": status} if status else {}))

    def status(self, line: str) -> bool:
        """STATUS=line (one line, only sent when it changed)."""
        line = line.replace("\n", " ")
        if line == self._last_status:
            return False
        self._last_status = line
        return self.send(STATUS=line)

    def stopping(self, status: str = "") -> bool:
        return self.send(STOPPING="1", **({"STATUS": status} if status else {}))

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")

    async def watchdog_loop(self) -> None:
        """Ping the watchdog from the event loop until cancelled (returns at once if no watchdog)."""
        interval = self.watchdog_interval
        if interval is None or not self.enabled:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

