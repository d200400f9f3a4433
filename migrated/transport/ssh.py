"""The SSH transport (asyncssh): connection, receiver start-up, framed channel.

Host keys are ALWAYS verified: from a known_hosts file or from pinned key strings
("ssh-ed25519 AAAA..."). There is no code path that passes ``known_hosts=None``.
Keepalives are on; aes128-gcm is preferred (about 1.6x chacha20 here); channels use a
16 MiB window and 128 KiB packets (measured best, see /work/shared/TESTING.md).

``RecvChannel`` speaks the framed protocol of ``migrated.transport.recv`` over the
receiver's stdin/stdout: requests that expect an answer are queued in order (the receiver
answers strictly in order), a reader task matches answers to them, and any ERROR frame,
malformed frame or lost connection fails every waiter with a MigratedError.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from migrated.errors import AuthError, ConfigError, ConnectionFailed, ProtocolError, TargetError, UsageError
from migrated.transport import recv as wire

WINDOW = 16 * 1024 * 1024
MAX_PKTSIZE = 128 * 1024
CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
           "aes128-ctr", "aes256-ctr"]


@dataclass(frozen=True)
class SshEndpoint:
    """Where the target is and how to trust it. Exactly one trust source is used:
    ``host_keys`` (pinned public keys) if given, else the ``known_hosts`` file
    (default ``~/.ssh/known_hosts``)."""

    host: str
    port: int = 22
    username: str | None = None
    identity_files: tuple[str, ...] = ()
    known_hosts: str | None = None
    host_keys: tuple[str, ...] = ()
    connect_timeout: float = 20.0
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 4
    recv_command: str | None = None  # None/"auto": installed migrated-recv, else upload; "upload"; or a command

    @property
    def label(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{user}{self.host}:{self.port}"


def parse_target(spec: str) -> tuple[str | None, str, int, str]:
    """Parse ``[user@]host[:port]:/path`` (host may be ``[v6addr]``) into (user, host, port, path)."""
    user = None
    rest = spec
    at, colon = rest.find("@"), rest.find(":")
    if at >= 0 and (colon < 0 or at < colon):
        user, rest = rest[:at], rest[at + 1:]
        if not user:
            raise UsageError(f"target {spec!r}: empty user name before '@'")
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise UsageError(f"target {spec!r}: unclosed '[' in host")
        host, rest = rest[1:end], rest[end + 1:]
        if not rest.startswith(":"):
            raise UsageError(f"target {spec!r}: expected ':' after the host")
        rest = rest[1:]
    else:
        if ":" not in rest:
            raise UsageError(f"target {spec!r} must look like [user@]host[:port]:/path")
        host, rest = rest.split(":", 1)
    port = 22
    head, sep, tail = rest.partition(":")
    if sep and head.isdigit():
        port, rest = int(head), tail
    if not host or not rest:
        raise UsageError(f"target {spec!r} must look like [user@]host[:port]:/path")
    if not 0 < port < 65536:
        raise UsageError(f"target {spec!r}: port {port} out of range")
    return user, host, port, rest


def _trust(ep: SshEndpoint):
    if ep.host_keys:
        keys = []
        for k in ep.host_keys:
            try:
                keys.append(asyncssh.import_public_key(k))
            except (asyncssh.KeyImportError, ValueError) as e:
                raise ConfigError(f"pinned host key {k[:30]!r}... is not a valid public key: {e}") from None
        return (keys, [], [])
    path = ep.known_hosts or os.path.expanduser("~/.ssh/known_hosts")
    if not os.path.exists(path):
        raise AuthError(f"cannot verify the host key of {ep.label}: known_hosts file {path} does not exist "
                        "(pass --known-hosts FILE or --host-key 'ssh-ed25519 AAAA...')")
    try:
        return asyncssh.read_known_hosts(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"known_hosts file {path} cannot be read: {e}") from None


def _client_keys(ep: SshEndpoint):
    if not ep.identity_files:
        return ()  # asyncssh default: ~/.ssh/id_* and the ssh-agent
    keys = []
    for f in ep.identity_files:
        if not os.path.exists(f):
            raise ConfigError(f"identity file {f} does not exist")
        try:
            keys.append(asyncssh.read_private_key(f))
        except (asyncssh.KeyImportError, OSError, ValueError) as e:
            raise ConfigError(f"identity file {f} cannot be loaded: {e}") from None
    return keys


async def connect(ep: SshEndpoint) -> asyncssh.SSHClientConnection:
    """Open a verified SSH connection or raise AuthError/ConnectionFailed/ConfigError."""
    known_hosts = _trust(ep)
    kwargs = {}
    if ep.identity_files:
        kwargs["client_keys"] = _client_keys(ep)
    if ep.username:
        kwargs["username"] = ep.username
    try:
        return await asyncio.wait_for(asyncssh.connect(
            ep.host, ep.port, known_hosts=known_hosts,
            encryption_algs=CIPHERS, compression_algs=None,
            keepalive_interval=ep.keepalive_interval, keepalive_count_max=ep.keepalive_count_max,
            connect_timeout=ep.connect_timeout, **kwargs), ep.connect_timeout + 5)
    except asyncssh.HostKeyNotVerifiable as e:
        raise AuthError(f"host key of {ep.label} is not trusted ({e.reason}); check it and add it to "
                        "known_hosts or pin it with --host-key") from None
    except asyncssh.PermissionDenied:
        raise AuthError(f"{ep.label} refused our credentials; check the user and --identity") from None
    except asyncssh.DisconnectError as e:
        raise ConnectionFailed(f"SSH to {ep.label} failed: {e.reason}") from None
    except (TimeoutError, OSError) as e:
        if isinstance(e, ConnectionRefusedError):
            reason = f"connection refused (is sshd listening on port {ep.port}?)"
        elif isinstance(e, TimeoutError):
            reason = f"no answer within {ep.connect_timeout:.0f} s"
        else:
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise ConnectionFailed(f"cannot connect to {ep.label}: {reason}") from None


RECV_SOURCE = Path(wire.__file__)


async def receiver_command(conn: asyncssh.SSHClientConnection, ep: SshEndpoint) -> str:
    """Decide how to start the receiver on the target, uploading recv.py over SFTP when needed."""
    mode = ep.recv_command or "auto"
    if mode not in ("auto", "upload"):
        return mode
    if mode == "auto":
        r = await conn.run("command -v migrated-recv", check=False)
        if r.exit_status == 0:
            return "migrated-recv"
    data = RECV_SOURCE.read_bytes()
    name = f".migrated-recv-{hashlib.sha256(data).hexdigest()[:16]}.py"
    try:
        async with conn.start_sftp_client() as sftp:
            if not await sftp.exists(name) or (await sftp.stat(name)).size != len(data):
                tmp = f"{name}.{os.getpid()}.part"
                async with sftp.open(tmp, "wb") as f:
                    await f.write(data)
                await sftp.posix_rename(tmp, name)
    except (asyncssh.SFTPError, asyncssh.ChannelOpenError) as e:
        raise TargetError(f"cannot upload the receiver to {ep.label} over SFTP: {e}") from None
    return f"python3 {shlex.quote(name)}"


class RecvChannel:
    """One receiver process on the target, spoken to in frames."""

    def __init__(self, process: asyncssh.SSHClientProcess, label: str) -> None:
        self._proc = process
        self._label = label
        self._pending: collections.deque[tuple[int, asyncio.Future[bytes]]] = collections.deque()
        self._failure: BaseException | None = None
        self._stderr = bytearray()
        self._reader = asyncio.create_task(self._read_loop())
        self._errtask = asyncio.create_task(self._read_stderr())

    @classmethod
    async def start(cls, conn: asyncssh.SSHClientConnection, command: str, label: str) -> RecvChannel:
        try:
            proc = await conn.create_process(command, encoding=None, window=WINDOW, max_pktsize=MAX_PKTSIZE)
        except (asyncssh.Error, OSError) as e:
            raise ConnectionFailed(f"cannot start the receiver on {label}: {e}") from None
        # Keep a few MiB queued so the SSH window never runs dry between our drains.
        proc.stdin.channel.set_write_buffer_limits(high=4 * 1024 * 1024, low=1024 * 1024)
        return cls(proc, label)

    async def _read_stderr(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                chunk = await self._proc.stderr.read(4096)
                if not chunk:
                    return
                self._stderr += chunk
                del self._stderr[:-4096]

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        while self._pending:
            _, fut = self._pending.popleft()
            if not fut.done():
                fut.set_exception(self._failure)

    async def _exit_reason(self) -> str:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._errtask, 2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._proc.wait_closed(), 2)
        status = self._proc.exit_status
        err = self._stderr.decode("utf-8", "replace").strip().splitlines()
        tail = err[-1] if err else ""
        if status is None:
            return "connection lost"
        return f"receiver exited with status {status}" + (f": {tail}" if tail else "")

    async def _read_loop(self) -> None:
        stdout = self._proc.stdout
        try:
            while True:
                try:
                    hdr = await stdout.readexactly(wire.HEADER.size)
                except asyncio.IncompleteReadError as e:
                    if e.partial or self._pending or self._failure is None:
                        reason = await self._exit_reason()
                        if self._proc.exit_status is None:
                            self._fail(ConnectionFailed(f"connection to {self._label} lost: {reason}"))
                        elif self._proc.exit_status in (126, 127):
                            self._fail(TargetError(f"cannot run the receiver on {self._label}: {reason} "
                                                   "(install python3 or migrated-recv there)"))
                        else:
                            self._fail(ProtocolError(f"{self._label}: {reason}"))
                    return
                try:
                    ftype, length = wire.parse_header(hdr)
                except ValueError as e:
                    self._fail(ProtocolError(f"receiver on {self._label} sent a bad frame: {e}"))
                    return
                payload = await stdout.readexactly(length) if length else b""
                if ftype == wire.T_ERROR:
                    try:
                        err = wire.parse_json(payload)
                        kind, msg = err.get("kind"), str(err.get("message"))
                    except ValueError:
                        kind, msg = "protocol", repr(payload[:200])
                    cls = TargetError if kind == "target" else ProtocolError
                    self._fail(cls(f"receiver on {self._label}: {msg}"))
                    return
                if not self._pending:
                    self._fail(ProtocolError(f"receiver on {self._label} sent an unexpected frame {ftype:#x}"))
                    return
                want, fut = self._pending.popleft()
                if ftype != want:
                    self._fail(ProtocolError(
                        f"receiver on {self._label} answered frame {ftype:#x}, expected {want:#x}"))
                    if not fut.done():
                        fut.set_exception(self._failure)  # type: ignore[arg-type]
                    return
                if not fut.done():
                    fut.set_result(payload)
        except asyncio.IncompleteReadError:
            self._fail(ConnectionFailed(f"connection to {self._label} lost mid-frame"))
        except (asyncssh.Error, OSError) as e:
            self._fail(ConnectionFailed(f"connection to {self._label} lost: {e}"))
        except asyncio.CancelledError:
            self._fail(ConnectionFailed("receiver channel closed"))
            raise

    def check(self) -> None:
        if self._failure is not None:
            raise self._failure

    def send(self, frame: bytes | memoryview) -> None:
        """Queue whole frames that get no answer (WRITE, ZERO). Never a partial frame: requests
        from other tasks may be queued between two calls."""
        self.check()
        try:
            self._proc.stdin.write(frame)
        except (asyncssh.Error, OSError, BrokenPipeError) as e:
            self._fail(ConnectionFailed(f"connection to {self._label} lost: {e}"))
            raise self._failure from None  # type: ignore[misc]

    def request(self, frame: bytes, answer_type: int) -> asyncio.Future[bytes]:
        """Queue a frame whose answer (of ``answer_type``) resolves the returned future."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # an unawaited failure is not noise
        self.send(frame)
        self._pending.append((answer_type, fut))
        return fut

    async def drain(self) -> None:
        self.check()
        try:
            await self._proc.stdin.drain()
        except (asyncssh.Error, OSError, BrokenPipeError) as e:
            self._fail(ConnectionFailed(f"connection to {self._label} lost: {e}"))
        self.check()

    async def close(self, *, bye: bool = True) -> None:
        if bye and self._failure is None:
            with contextlib.suppress(Exception):
                fut = self.request(wire.pack_frame(wire.T_BYE), wire.T_BYE_OK)
                await asyncio.wait_for(fut, 5)
        with contextlib.suppress(Exception):
            self._proc.stdin.write_eof()
        self._proc.close()
        self._reader.cancel()
        self._errtask.cancel()
        for t in (self._reader, self._errtask):
            with contextlib.suppress(BaseException):
                await t
