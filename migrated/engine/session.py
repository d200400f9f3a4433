"""The engine's library API: one SSH session per task, carrying several disks.

::

    async with open_session(endpoint) as session:
        result = await session.sync_disk("/dev/vdb", "/dev/vdb", SyncOptions(checksum=True),
                                         control, on_progress)

Running ``sync_disk`` again with the same source, target and state dir is an incremental
round: the source is re-read and only blocks that changed since the checkpoint are sent
(``SyncResult.bytes_changed``). ``control.request_stop()`` makes it flush, checkpoint and
raise ``Interrupted``; the next call resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import asyncssh
import structlog

from migrated.engine.sync import DiskSync, SyncControl, SyncOptions, SyncResult
from migrated.errors import Interrupted
from migrated.model.status import DiskProgress
from migrated.source import open_source, open_source_via
from migrated.transport.ssh import RecvChannel, SshEndpoint, connect, receiver_command

log = structlog.get_logger(__name__)


class Session:
    """A verified SSH connection to one target host. Disks are synced one at a time."""

    def __init__(self, conn: asyncssh.SSHClientConnection, endpoint: SshEndpoint, workers: int = 2) -> None:
        self.conn = conn
        self.endpoint = endpoint
        self._recv_cmd: str | None = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="migrated-io")
        self._lock = asyncio.Lock()

    async def receiver_command(self) -> str:
        if self._recv_cmd is None:
            self._recv_cmd = await receiver_command(self.conn, self.endpoint)
        return self._recv_cmd

    async def sync_disk(self, source_path: str, target_path: str, options: SyncOptions | None = None,
                        control: SyncControl | None = None,
                        on_progress: Callable[[DiskProgress], None] | None = None) -> SyncResult:
        """Sync one disk; see the module docstring. Raises a MigratedError subclass on failure."""
        options = options or SyncOptions()
        options.validate()
        async with self._lock:
            src = open_source_via(source_path, options.read_from) if options.read_from else open_source(source_path)
            try:
                chan = await RecvChannel.start(self.conn, await self.receiver_command(), self.endpoint.label)
                ok = False
                try:
                    disk = DiskSync(chan, src, self.endpoint.label, target_path, options, control, on_progress,
                                    self._pool)
                    try:
                        result = await disk.run()
                    except Interrupted as e:
                        e.result = getattr(disk, "last_result", None)  # type: ignore[attr-defined]
                        ok = True
                        raise
                    ok = True
                    return result
                finally:
                    await chan.close(bye=ok)
            finally:
                src.close()

    async def close(self) -> None:
        self.conn.close()
        with contextlib.suppress(Exception):
            await self.conn.wait_closed()
        self._pool.shutdown(wait=False, cancel_futures=True)


@contextlib.asynccontextmanager
async def open_session(endpoint: SshEndpoint, *, workers: int = 2) -> AsyncIterator[Session]:
    """Connect (host key verified) and yield a Session; closes the connection on exit."""
    conn = await connect(endpoint)
    session = Session(conn, endpoint, workers=workers)
    try:
        yield session
    finally:
        await session.close()
