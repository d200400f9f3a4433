"""Client of the daemon's control socket (used by migratectl and the tests).

Errors: :class:`DaemonNotRunning` when nothing listens (no socket, refused),
:class:`ControlAccessDenied` when the socket or its directory is not ours to
use, and for an error answer the error class the daemon named (same message,
same exit code), falling back to :class:`MigratedError`.
"""

from __future__ import annotations

import errno
import json
from typing import Any

import aiohttp

from migrated import errors
from migrated.errors import ControlAccessDenied, DaemonNotRunning, MigratedError, ProtocolError

_NOT_RUNNING_HINT = "is migrated running? (systemctl status migrated)"


class ControlClient:
    def __init__(self, socket_path: str, *, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        connector = aiohttp.UnixConnector(path=self.socket_path)
        try:
            async with aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as session, session.request(method, f"http://migrated{path}", json=body) as resp:
                raw = await resp.read()
        except aiohttp.ClientConnectorError as e:
            raise self._connect_error(e.os_error) from None
        except (aiohttp.ClientError, TimeoutError) as e:
            raise DaemonNotRunning(
                f"the daemon did not answer on {self.socket_path} ({type(e).__name__}); {_NOT_RUNNING_HINT}"
            ) from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise ProtocolError(f"the daemon answered {path} with something that is not JSON") from None
        if not isinstance(data, dict):
            raise ProtocolError(f"the daemon answered {path} with a JSON {type(data).__name__}, not an object")
        if "error" in data:
            err = data["error"] if isinstance(data["error"], dict) else {}
            raise _rebuild(err)
        return data

    def _connect_error(self, e: OSError) -> MigratedError:
        if e.errno in (errno.EACCES, errno.EPERM):
            return ControlAccessDenied(
                f"permission denied on {self.socket_path}: run migratectl as root or as a member of the "
                "daemon's group (control.group, default 'migrated')"
            )
        if e.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR):
            return DaemonNotRunning(f"the migrated daemon is not running (nothing at {self.socket_path}); "
                                    f"{_NOT_RUNNING_HINT}")
        return DaemonNotRunning(f"cannot connect to {self.socket_path}: {e.strerror}; {_NOT_RUNNING_HINT}")

    async def status(self) -> dict[str, Any]:
        return await self.request("GET", "/v1/status")

    async def pause(self) -> dict[str, Any]:
        return await self.request("POST", "/v1/pause")

    async def resume(self) -> dict[str, Any]:
        return await self.request("POST", "/v1/resume")

    async def retry(self) -> dict[str, Any]:
        return await self.request("POST", "/v1/retry")

    async def check(self) -> dict[str, Any]:
        return await self.request("POST", "/v1/check")

    async def cutover(self) -> dict[str, Any]:
        return await self.request("POST", "/v1/cutover")

    async def set_bandwidth(self, bps: int | None) -> dict[str, Any]:
        return await self.request("POST", "/v1/bandwidth", {"bps": bps})

    async def set_rounds(self, interval: float | None = None, read_limit_bps: int | None = None) -> dict[str, Any]:
        """Continuous task: round interval in seconds and/or source read limit in bytes/s (0 = unlimited)."""
        body: dict[str, Any] = {}
        if interval is not None:
            body["interval_seconds"] = interval
        if read_limit_bps is not None:
            body["read_limit_bps"] = read_limit_bps
        return await self.request("POST", "/v1/rounds", body)


def _rebuild(err: dict[str, Any]) -> MigratedError:
    code = str(err.get("code", "MigratedError"))
    message = str(err.get("message", "the daemon reported an error without a message"))
    cls = getattr(errors, code, None)
    if isinstance(cls, type) and issubclass(cls, MigratedError) and cls not in (
        errors.ConfigError, errors.ConsoleError
    ):
        try:
            return cls(message)
        except TypeError:
            pass
    out = MigratedError(f"{code}: {message}")
    exit_code = err.get("exit_code")
    if isinstance(exit_code, int) and exit_code in {int(c) for c in errors.ExitCode}:
        out.exit_code = errors.ExitCode(exit_code)
    return out
