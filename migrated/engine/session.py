"""The engine's library API: one SSH session per task, carrying several disks.

::

    async with open_session(endpoint) as session:
        result = await session.sync_disk("/dev/vdb", "/dev/vdb", SyncOptions(checksum=True),
                                         control, on_progress)

Running ``sync_disk`` again with the same source, target and state dir is an incremental
round: the source is re-read and only blocks that changed since the checkpoint are sent
(``SyncResult.bytes_changed``). ``control.request_stop()`` makes it flush, checkpoint and
raise ``Interrupted``; the next call resumes. ``verify_disk`` compares the target with what
the last complete pass recorded (the cutover's check); ``state_files`` names a disk's checkpoint
files. These three are all a caller (``migrated.engine.continuous``, the agent) needs: ``DiskSync``
and the receiver channel stay inside the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import asyncssh
import structlog

from migrated.engine.sync import DiskSync, SyncControl, SyncOptions, SyncResult, state_file_names
from migrated.errors import Interrupted, VerificationFailed
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
        async with self._disk(source_path, target_path, options, control, on_progress) as disk:
            try:
                return await disk.run()
            except Interrupted as e:
                e.result = getattr(disk, "last_result", None)  # type: ignore[attr-defined]
                raise

    async def verify_disk(self, source_path: str, target_path: str, options: SyncOptions,
                          read_from: str | None = None) -> int:
        """Compare every target block with the hash the last (final) pass recorded for the source.

        Used after a cutover: the source has been thawed and has moved on, so it cannot be re-read;
        the hash file the frozen final pass wrote is what the target must hold. With ``read_from``
        (the LVM snapshot the final pass read, still there), every block of it is read and hashed
        again and the target must equal *it*. Returns the number of blocks compared; raises
        VerificationFailed naming the first differing offsets. Reads the checkpoint/hash file (or the
        snapshot, read-only) and the target's hashes; writes nothing.
        """
        # the source is opened for its identity and size only (no block is read), or the snapshot
        # is opened to be hashed under the origin's identity
        options = dataclasses.replace(options, read_from=read_from)
        async with self._disk(source_path, target_path, options, None, None) as disk:
            blocks, bad = await disk.verify_recorded(reread=read_from is not None)
        if bad:
            first = ", ".join(str(b) for b in bad[:5])
            what = f"the snapshot {read_from}" if read_from else "the source as it was at the cutover"
            raise VerificationFailed(f"{len(bad)} blocks of {self.endpoint.label}:{target_path} differ from "
                                     f"{what} (first offsets: {first}); run the cutover again")
        return blocks

    def state_files(self, source_path: str, target_path: str) -> set[str]:
        """Names of the checkpoint files of this disk on this session's target, in the state dir."""
        return set(state_file_names(source_path, self.endpoint.label, target_path))

    @contextlib.asynccontextmanager
    async def _disk(self, source_path: str, target_path: str, options: SyncOptions, control: SyncControl | None,
                    on_progress: Callable[[DiskProgress], None] | None) -> AsyncIterator[DiskSync]:
        """One disk operation: the session's lock (one at a time), the source open (or its point-in-time
        copy, ``options.read_from``) and a receiver channel, closed with BYE unless the operation failed
        (an Interrupted run is a clean end)."""
        async with self._lock:
            read_from = options.read_from
            src = open_source_via(source_path, read_from) if read_from else open_source(source_path)
            try:
                chan = await RecvChannel.start(self.conn, await self.receiver_command(), self.endpoint.label)
                ok = False
                try:
                    yield DiskSync(chan, src, self.endpoint.label, target_path, options, control, on_progress,
                                   self._pool)
                    ok = True
                except Interrupted:
                    ok = True
                    raise
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
