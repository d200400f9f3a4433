"""Is a block device in use (mounted, a partition mounted, held by dm/md/LVM, swap)?

One implementation for both sides: it lives in the receiver (``migrated.transport.recv``, which
must stay a single stdlib file) and is re-exported here for the agent.
"""

from __future__ import annotations

import os
import stat

from migrated.transport.recv import device_in_use

__all__ = ["device_in_use", "in_use_reason"]


def in_use_reason(path: str) -> str | None:
    """Why the block device at ``path`` must not be written, or None (also None for non-devices)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return device_in_use(st.st_rdev)
