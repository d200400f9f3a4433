"""Durable file writes: checkpoints, credentials, daemon state.

``atomic_write`` follows the classic recipe (borg's SaveFile): write a temp file
in the same directory with the final mode from the start, fsync it, rename it
over the target, fsync the directory. A reader sees the old file or the new
one, never a torn one, even across a power cut.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(os.fspath(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably; the file has ``mode`` from birth."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_private_file(path: str | os.PathLike[str]) -> bytes:
    """Read a file that holds secrets; refuse it when group/others can read it."""
    from migrated.errors import ConfigError

    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError(f"file not found: {p}") from None
    if st.st_mode & 0o077:
        raise ConfigError(f"{p} is readable by group or others (mode {st.st_mode & 0o777:o}); chmod 600 it")
    return p.read_bytes()
