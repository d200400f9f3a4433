"""bench/gen_image.py makes the images the benchmark and the demo promise: deterministic, shaped, sparse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.gen_image import PAGE, MiB, make_modified, make_realistic, make_sparse, parse_percent, parse_size
from tests.conftest import REPO


def _zero_pages(data: bytes) -> int:
    zero = bytes(PAGE)
    return sum(data[i : i + PAGE] == zero for i in range(0, len(data), PAGE))


def test_realistic_image_is_deterministic_shaped_and_sparse(tmp_path: Path) -> None:
    a = make_realistic(tmp_path / "a.img", 96 * MiB, seed=7)
    make_realistic(tmp_path / "b.img", 96 * MiB, seed=7)
    make_realistic(tmp_path / "c.img", 96 * MiB, seed=8)
    data = (tmp_path / "a.img").read_bytes()
    assert len(data) == 96 * MiB
    assert data == (tmp_path / "b.img").read_bytes()
    assert data != (tmp_path / "c.img").read_bytes()
    assert a.bytes_by_kind["zero"] == pytest.approx(0.45 * len(data), abs=PAGE)
    assert a.bytes_by_kind["random"] == pytest.approx(0.35 * len(data), abs=PAGE)
    # the zero runs are all-zero pages on read, and holes on disk
    assert _zero_pages(data) * PAGE >= a.bytes_by_kind["zero"]
    assert (tmp_path / "a.img").stat().st_blocks * 512 < len(data) - a.bytes_by_kind["zero"] + 4 * MiB


def test_modified_copy_differs_in_about_the_asked_fraction(tmp_path: Path) -> None:
    make_realistic(tmp_path / "base.img", 64 * MiB, seed=1)
    stats = make_modified(tmp_path / "base.img", tmp_path / "mod.img", 0.02, seed=5)
    base, mod = (tmp_path / "base.img").read_bytes(), (tmp_path / "mod.img").read_bytes()
    changed_pages = sum(base[i : i + PAGE] != mod[i : i + PAGE] for i in range(0, len(base), PAGE))
    assert stats.bytes_by_kind["rewritten"] >= 0.02 * len(base)
    # regions may overlap, so at most what was written, and at least half of it is new
    assert 0.01 * len(base) <= changed_pages * PAGE <= stats.bytes_by_kind["rewritten"]


def test_sparse_image_is_huge_but_small_on_disk(tmp_path: Path) -> None:
    stats = make_sparse(tmp_path / "huge.img", 20 * 1024 * MiB, data=4 * MiB)
    st = (tmp_path / "huge.img").stat()
    assert st.st_size == 20 * 1024 * MiB == stats.size
    assert st.st_blocks * 512 <= 16 * MiB
    with open(tmp_path / "huge.img", "rb") as f:
        f.seek(st.st_size - 4 * MiB)
        tail = f.read()
    assert tail.count(0) < len(tail)  # data at the very end too


def test_cli_parses_units_and_rejects_bad_input(tmp_path: Path) -> None:
    assert parse_size("2GiB") == 2 << 30
    assert parse_size("256M") == 256 << 20
    assert parse_percent("1%") == 0.01
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")
    run = subprocess.run(
        [sys.executable, str(REPO / "bench/gen_image.py"), str(tmp_path / "x.img"), "--modify", "1%",
         "--from", str(tmp_path / "missing.img")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert "base image not found" in run.stderr


def test_modify_in_place_equals_modified_copy(tmp_path: Path) -> None:
    make_realistic(tmp_path / "base.img", 16 * MiB, seed=1)
    make_modified(tmp_path / "base.img", tmp_path / "copy.img", 0.05, seed=9)
    inode = (tmp_path / "base.img").stat().st_ino
    run = subprocess.run([sys.executable, str(REPO / "bench/gen_image.py"), str(tmp_path / "base.img"),
                          "--modify", "5%", "--seed", "9"], capture_output=True, text=True, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "base.img").stat().st_ino == inode
    assert (tmp_path / "base.img").read_bytes() == (tmp_path / "copy.img").read_bytes()
