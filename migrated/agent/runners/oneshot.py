"""The one-shot runner: each disk synced once (``checksum`` verifies every block), then *success*."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from migrated.agent.runners import progress
from migrated.model.states import TaskState as S
from migrated.model.status import DiskProgress, format_bytes

if TYPE_CHECKING:
    from migrated.agent.runners.host import RunnerHost
    from migrated.agent.state import TaskRecord

log = structlog.get_logger(__name__)


async def sync_disks(host: RunnerHost, t: TaskRecord, session: Any, mapping: list[tuple[str, str]], control: Any,
                     options_cls: Any, disks: list[DiskProgress], done: set[str], state_dir: str) -> None:
    """Sync every disk of ``mapping`` not in ``done`` over ``session`` (open, task transferring)."""
    for i, (src, dst) in enumerate(mapping):
        if src in done:
            continue
        options = options_cls(checksum=t.settings.checksum, state_dir=state_dir,
                              bwlimit=host.bandwidth_bps)

        def on_progress(dp: DiskProgress, i: int = i) -> None:
            progress.on_progress(host, t, disks, i, dp)

        result = await session.sync_disk(src, dst, options, control, on_progress)
        disks[i].bytes_done = disks[i].bytes_total = result.bytes_total
        done.add(src)
        progress.store_progress(host, t, disks, done)
        log.info("disk done", task_id=t.task_id, source=src, target=dst,
                 sent=format_bytes(result.bytes_sent), verified=result.verified)
        host.event("info", f"disk {src} -> {dst} done: {format_bytes(result.bytes_total)}, "
                   f"sent {format_bytes(result.bytes_sent)} this run"
                   + (", every block verified" if result.verified else ""))


def finish(host: RunnerHost, t: TaskRecord, mapping: list[tuple[str, str]]) -> None:
    """Every disk synced and the session closed: *verifying* (when checksummed), *success*."""
    checksum = t.settings.checksum
    if checksum and S(t.state) is S.TRANSFERRING:
        host.set_state(S.VERIFYING, "verify", "every target block was compared with the source")
    host.set_state(S.SUCCESS, "release", f"{len(mapping)} disk(s) migrated" + (", verified" if checksum else ""))
