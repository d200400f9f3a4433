"""Can this process do what a cutover asks of it? Checked when a continuous task starts, so a
missing privilege is a clear error at once, not a failed cutover after hours of rounds.

The agent's hardened unit (systemd/migrated.service) runs as the ``migrated`` user with only
CAP_DAC_READ_SEARCH: enough to read the disks, not to freeze a filesystem (FIFREEZE needs
CAP_SYS_ADMIN) or take an LVM snapshot (lvm2 wants root). ``systemd/cutover.conf`` is the drop-in
that grants them; the messages here name it.

:func:`cutover_problem` is pure (the caller passes the capability mask and the mounts); the two
small readers below it do the I/O.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

CAP_SYS_ADMIN = 21
DROP_IN = ("install systemd/cutover.conf as /etc/systemd/system/migrated.service.d/cutover.conf "
           "(then systemctl daemon-reload && systemctl restart migrated)")


def effective_caps(status_text: str) -> int:
    """The CapEff mask from the text of /proc/<pid>/status (0 when absent)."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def cutover_problem(quiesce: str, caps: int, euid: int, mounts: Mapping[str, Sequence[str]]) -> str | None:
    """Why this process could not quiesce the source with ``quiesce``, or None if it can.

    ``mounts``: source disk -> mountpoints of the filesystems mounted from it (freeze needs
    CAP_SYS_ADMIN only when there is something to freeze)."""
    has_admin = bool(caps >> CAP_SYS_ADMIN & 1)
    if quiesce == "freeze":
        frozen = {d: m for d, m in mounts.items() if m}
        if frozen and not has_admin:
            what = "; ".join(f"{d} ({', '.join(m)})" for d, m in frozen.items())
            return (f"the cutover must freeze the filesystems mounted from {what}, and this agent lacks "
                    f"CAP_SYS_ADMIN (the hardened default unit): {DROP_IN}, or choose Quiesce hooks or none")
    elif quiesce == "lvm" and (euid != 0 or not has_admin):
        return (f"the cutover must take LVM snapshots, which needs root with CAP_SYS_ADMIN, and this agent "
                f"runs as uid {euid}{'' if has_admin else ' without CAP_SYS_ADMIN'}: {DROP_IN} with its "
                "LVM lines, or choose Quiesce freeze, hooks or none")
    return None


def own_caps() -> int:
    try:
        with open("/proc/self/status") as f:
            return effective_caps(f.read())
    except OSError:
        return 0


def mounts_of(disks: Sequence[str]) -> dict[str, list[str]]:
    from migrated.source.freeze import mounted_filesystems

    out: dict[str, list[str]] = {}
    for d in disks:
        try:
            out[d] = [m.mountpoint for m in mounted_filesystems(d)]
        except OSError:
            out[d] = []
    return out


def check_cutover(quiesce: str, disks: Sequence[str]) -> str | None:
    """:func:`cutover_problem` for this process and these source disks."""
    return cutover_problem(quiesce, own_caps(), os.geteuid(), mounts_of(disks))
