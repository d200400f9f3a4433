"""Control socket server: aiohttp on a Unix socket that only root and one group can use.

Socket safety (the supervisor recipe):

* The runtime directory (the socket's directory) is ``root:<group> 0750``
  (``0700`` without a group), so nobody else can even reach the socket.
* The socket is bound under a temporary name with the umask set so that it is
  born ``0660`` (``0600``), given its group, then renamed over the final name:
  the final path never exists with a wrong mode. (The umask is process-wide;
  this runs once at start-up before any other thread exists.)
* An existing socket is probed: if something answers, another daemon is alive
  and we refuse to start (:class:`DaemonAlreadyRunning`); if nothing answers it
  is stale and the rename replaces it.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog
from aiohttp import web

from migrated.control import API_VERSION, MAX_BPS
from migrated.errors import DaemonAlreadyRunning, MigratedError, OutOfRange, StateError, UsageError

log = structlog.get_logger(__name__)


class ControlBackend(Protocol):
    """What the daemon exposes on its socket. Methods raise MigratedError with a message for a person."""

    def status(self) -> dict[str, Any]: ...
    async def pause(self) -> dict[str, Any]: ...
    async def resume(self) -> dict[str, Any]: ...
    async def retry(self) -> dict[str, Any]: ...
    async def check(self) -> dict[str, Any]: ...
    async def set_bandwidth(self, bps: int | None) -> dict[str, Any]: ...
    async def cutover(self) -> dict[str, Any]: ...  # continuous tasks: cut over after the round in progress
    # continuous tasks: change the round interval (s) and/or the source read limit (bytes/s, 0 = none) live
    async def set_rounds(self, interval: float | None, read_limit_bps: int | None) -> dict[str, Any]: ...


def _error(status: int, code: str, message: str, exit_code: int = 2) -> web.Response:
    body = {"error": {"code": code, "message": message, "exit_code": exit_code}}
    return web.json_response(body, status=status)


def _status_for(e: MigratedError) -> int:
    if isinstance(e, StateError):
        return 409
    if isinstance(e, UsageError):
        return 400
    return 500 if not e.retryable else 503


MAX_BODY = 64 * 1024


def _short(value: object) -> str:
    """A client's value for a message: at most 40 characters of its repr."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


ROUTES: dict[str, str] = {
    "/v1/status": "GET",
    "/v1/pause": "POST",
    "/v1/resume": "POST",
    "/v1/retry": "POST",
    "/v1/check": "POST",
    "/v1/bandwidth": "POST",
    "/v1/cutover": "POST",
    "/v1/rounds": "POST",
}


def make_app(backend: ControlBackend) -> web.Application:
    @web.middleware
    async def errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        expected = ROUTES.get(request.path)
        if expected is None:
            return _error(404, "NotFound", f"no such endpoint {request.path}; known: {', '.join(ROUTES)}")
        if request.method != expected:
            return _error(405, "MethodNotAllowed", f"{request.path} takes {expected}, not {request.method}")
        try:
            return await handler(request)
        except MigratedError as e:
            return _error(_status_for(e), type(e).__name__, e.message, int(e.exit_code))
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "UsageError", f"the request body is over {MAX_BODY} bytes")
        except web.HTTPException:
            raise
        except Exception as e:  # a bug: say so, keep serving
            log.exception("control request failed", path=request.path)
            return _error(500, "InternalError", f"{type(e).__name__}: {e}", 1)

    async def body(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError as e:  # UnicodeDecodeError and too many digits included
            raise UsageError(f"request body is not JSON: {str(e)[:200]}") from None
        except RecursionError:
            raise UsageError("request body is not JSON: nested too deeply") from None
        if not isinstance(data, dict):
            raise UsageError("request body must be a JSON object")
        return data

    async def status(_r: web.Request) -> web.Response:
        return web.json_response({"api_version": API_VERSION, **backend.status()})

    def simple(fn: Callable[[], Awaitable[dict[str, Any]]]):
        async def handler(request: web.Request) -> web.Response:
            extra = await body(request)
            if extra:
                raise UsageError(f"{request.path} takes no parameters; got {', '.join(map(str, extra))}")
            return web.json_response(await fn())
        return handler

    async def bandwidth(request: web.Request) -> web.Response:
        data = await body(request)
        unknown = set(data) - {"bps"}
        if unknown or "bps" not in data:
            raise UsageError('body must be {"bps": <bytes per second, 0 or null for unlimited>}')
        bps = data["bps"]
        if bps is not None and (isinstance(bps, bool) or not isinstance(bps, int) or not 0 <= bps <= MAX_BPS):
            kind = OutOfRange if isinstance(bps, int) and bps > MAX_BPS else UsageError
            raise kind(f"bps must be a whole number 0-{MAX_BPS} (100 GiB/s) or null; got {_short(bps)}")
        return web.json_response(await backend.set_bandwidth(bps or None))

    async def rounds(request: web.Request) -> web.Response:
        data = await body(request)
        unknown = set(data) - {"interval_seconds", "read_limit_bps"}
        if unknown or not data:
            raise UsageError('body must be {"interval_seconds": <seconds>, "read_limit_bps": <bytes per second, '
                             '0 for unlimited>} (either or both)' + (f"; unknown: {', '.join(sorted(unknown))}"
                                                                    if unknown else ""))
        interval, limit = data.get("interval_seconds"), data.get("read_limit_bps")
        if interval is not None and (isinstance(interval, bool) or not isinstance(interval, int | float)
                                     or not 0 <= interval <= 86400):  # NaN fails the comparison too
            raise UsageError(f"interval_seconds must be a number of seconds 0-86400; got {_short(interval)}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_BPS):
            kind = OutOfRange if isinstance(limit, int) and limit > MAX_BPS else UsageError
            raise kind(f"read_limit_bps must be a whole number 0-{MAX_BPS} (0 = unlimited); got {_short(limit)}")
        return web.json_response(await backend.set_rounds(interval, limit))

    app = web.Application(middlewares=[errors], client_max_size=MAX_BODY)
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/pause", simple(backend.pause))
    app.router.add_post("/v1/resume", simple(backend.resume))
    app.router.add_post("/v1/retry", simple(backend.retry))
    app.router.add_post("/v1/check", simple(backend.check))
    app.router.add_post("/v1/bandwidth", bandwidth)
    if hasattr(backend, "cutover"):
        app.router.add_post("/v1/cutover", simple(backend.cutover))
    if hasattr(backend, "set_rounds"):
        app.router.add_post("/v1/rounds", rounds)
    return app


def _socket_alive(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError as e:
            if e.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
                return False
            raise
        return True


def prepare_runtime_dir(directory: str, gid: int | None) -> None:
    """Create/fix the socket's directory: ``root:gid 0750`` (``0700`` without a group)."""
    mode = 0o750 if gid is not None else 0o700
    os.makedirs(directory, mode=mode, exist_ok=True)
    st = os.stat(directory)
    if gid is not None and st.st_gid != gid and os.geteuid() == 0:
        os.chown(directory, -1, gid)
    if st.st_mode & 0o777 != mode:
        os.chmod(directory, mode)


def group_id(group: str | None) -> int | None:
    """The gid of ``control.group`` (None: no group); UsageError naming the fix if it does not exist."""
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise UsageError(
            f"control.group: group {group!r} does not exist; create it (groupadd {group}) "
            "or set control.group: null for root-only access"
        ) from None


def bind_control_socket(path: str, group: str | None) -> socket.socket:
    """Return a listening Unix socket at ``path`` created with the right mode from birth."""
    gid = group_id(group)
    directory = os.path.dirname(path)
    prepare_runtime_dir(directory, gid)
    if os.path.lexists(path):
        if _socket_alive(path):
            raise DaemonAlreadyRunning(f"another migrated daemon is running: {path} answers; stop it first")
        log.info("replacing stale control socket", socket=path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o117 if gid is not None else 0o177)
    try:
        sock.bind(tmp)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    try:
        if gid is not None and os.stat(tmp).st_gid != gid:  # under systemd Group= makes it ours already
            os.chown(tmp, -1, gid)
        sock.listen(64)
        os.rename(tmp, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return sock


class ControlServer:
    """``async with ControlServer(path, group, backend):`` serves until the block exits."""

    def __init__(self, path: str, group: str | None, backend: ControlBackend) -> None:
        self.path = path
        self.group = group
        self.backend = backend
        self._runner: web.AppRunner | None = None
        self._inode: int | None = None

    async def start(self) -> None:
        sock = bind_control_socket(self.path, self.group)
        self._inode = os.stat(self.path).st_ino
        self._runner = web.AppRunner(make_app(self.backend), access_log=None, handle_signals=False,
                                    shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.SockSite(self._runner, sock)
        await site.start()
        log.info("control socket ready", socket=self.path, group=self.group)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._inode:  # only remove our own socket
                os.unlink(self.path)

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()
