"""Reading the source does not evict the server's page cache, and does not fill it either.

The oracle is util-linux ``fincore`` (what an operator would run), not our own mincore wrapper:
pages of the source that were cached before the migration are still cached after it; pages that
only the migration read are gone again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from migrated.engine import SyncOptions, open_session
from migrated.source.disk import open_source
from tests.asshd import asyncssh_server  # noqa: F401 - the `sshd` fixture of this module
from tests.diskimg import MiB, assert_same
from tests.test_engine_api import endpoint

pytestmark = pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux fincore")


def cached_bytes(path: Path) -> int:
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def cold_file(path: Path, size: int) -> Path:
    """A file of random bytes on a real filesystem, written out and dropped from the page cache."""
    with open(path, "wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    if cached_bytes(path) != 0:
        pytest.skip(f"{path.parent} keeps files in memory (tmpfs?): page cache cannot be observed")
    return path


def warm(path: Path, offset: int, length: int) -> None:
    """Bring exactly [offset, offset+length) into the page cache (no readahead past it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        assert len(os.pread(fd, length, offset)) == length
    finally:
        os.close(fd)


def test_read_uncached_keeps_what_was_cached_and_drops_the_rest(tmp_path):
    src = cold_file(tmp_path / "src.img", 8 * MiB)
    warm(src, 2 * MiB, 1 * MiB)  # the server's hot data
    assert cached_bytes(src) == 1 * MiB
    disk = open_source(str(src))
    try:
        data = disk.read_uncached(0, 8 * MiB)
    finally:
        disk.close()
    assert cached_bytes(src) == 1 * MiB  # hot MiB kept, the 7 MiB only the read brought in dropped
    assert data == src.read_bytes()


async def test_a_sync_leaves_the_sources_page_cache_as_it_found_it(sshd, tmp_path):
    src = cold_file(tmp_path / "src.img", 16 * MiB)
    warm(src, 0, 3 * MiB)
    warm(src, 10 * MiB, 1 * MiB)
    assert cached_bytes(src) == 4 * MiB
    async with open_session(endpoint(sshd)) as s:
        await s.sync_disk(str(src), str(tmp_path / "dst.img"), SyncOptions(state_dir=tmp_path / "state"))
    assert cached_bytes(src) == 4 * MiB
    assert_same(src, tmp_path / "dst.img")
