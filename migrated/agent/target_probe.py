"""The target checks' I/O: connect to the task's target with the engine's SSH transport
(pinned host key), size its disks, and start ``migrated-recv --version`` there."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from migrated.agent.checks import TargetInfo
from migrated.errors import ConnectionFailed
from migrated.transport.ssh import SshEndpoint, connect, receiver_command

_SIZE = ('p={p}; if [ -b "$p" ]; then echo "block $(blockdev --getsize64 "$p")"; '
         'elif [ -e "$p" ]; then echo "file $(stat -c %s "$p")"; else echo missing; fi')


class SshTargetProbe:
    def __init__(self, endpoint: SshEndpoint) -> None:
        self.endpoint = endpoint

    async def probe(self, target_paths: Sequence[str]) -> TargetInfo:
        info = TargetInfo()
        conn = await connect(self.endpoint)
        try:
            for path in target_paths:
                r = await conn.run(_SIZE.format(p=shlex.quote(path)), check=False)
                words = str(r.stdout or "").split()
                if words[:1] == ["block"] and len(words) == 2 and words[1].isdigit():
                    info.disk_sizes[path] = int(words[1])
                elif words[:1] == ["file"]:
                    info.files.add(path)
                elif path.startswith("/dev/"):
                    info.disk_sizes[path] = None
                else:
                    info.files.add(path)  # a raw image file the receiver creates
            try:
                cmd = await receiver_command(conn, self.endpoint)
                r = await conn.run(f"{cmd} --version", check=False)
                if r.exit_status == 0:
                    info.receiver_version = str(r.stdout or "").strip() or "?"
                else:
                    info.receiver_error = str(r.stderr or r.stdout or f"exit {r.exit_status}").strip()[:300]
            except ConnectionFailed:
                raise
            except Exception as e:  # upload refused, no python3...
                info.receiver_error = str(e)[:300]
        finally:
            conn.close()
            await conn.wait_closed()
        return info
