"""bench/realfs.py and bench/link_bench.py: the real-filesystem image holds what it says, the delta changes
what it says, both deterministic for a seed; the link bench runs end to end (no timing assertions)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gen_image import MiB
from bench.realfs import apply_fs_delta, build_tree, debugfs_read, load_manifest, make_realfs
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("mkfs.ext4") is None or shutil.which("debugfs") is None,
                                reason="needs e2fsprogs (mkfs.ext4 -d, debugfs)")  # fmt: skip


def test_tree_selection_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = build_tree(tmp_path / "a", 8 * MiB, seed=3)
    b = build_tree(tmp_path / "b", 8 * MiB, seed=3)
    c = build_tree(tmp_path / "c", 8 * MiB, seed=4)
    assert a.paths == b.paths and a.digest == b.digest
    assert a.paths != c.paths
    for rel in a.paths[::50]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert {k: v.files > 0 for k, v in a.kinds.items()} == {"libs": True, "docs": True, "blobs": True, "logs": True}
    # the manifest's counts are the tree's files
    on_disk = sorted(str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert on_disk == a.paths
    assert sum(k.bytes for k in a.kinds.values()) == sum((tmp_path / "a" / p).stat().st_size for p in a.paths)
    # real files of this machine, copied as they are
    lib = next(p for p in a.paths if p.startswith("usr/lib/"))
    assert (tmp_path / "a" / lib).read_bytes() == Path("/" + lib).read_bytes()


def test_image_holds_the_tree_and_the_delta_changes_what_it_says(tmp_path: Path) -> None:
    img = tmp_path / "fs.img"
    man = make_realfs(img, 64 * MiB, seed=1)
    assert img.stat().st_size == 64 * MiB
    assert img.stat().st_blocks * 512 < 64 * MiB  # free space stays holes
    used = sum(k.bytes for k in man.kinds.values())
    assert 0.4 * 64 * MiB < used < 0.6 * 64 * MiB
    assert subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True, check=False).returncode == 0
    lib = next(p for p in man.paths if p.startswith("usr/lib/"))
    assert debugfs_read(img, "/" + lib) == Path("/" + lib).read_bytes()
    assert load_manifest(img).paths == man.paths

    twin = tmp_path / "twin.img"
    shutil.copyfile(img, twin)
    delta = apply_fs_delta(img, 0.05, seed=2)
    apply_fs_delta(twin, 0.05, seed=2, base=man)
    assert img.read_bytes() == twin.read_bytes()  # same content + seed = the same operations, the same bytes
    assert subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True, check=False).returncode == 0
    assert all(delta.ops[op].files > 0 for op in ("new", "rewritten", "deleted", "appended")), delta.ops
    total = sum(s.bytes for s in delta.ops.values())
    assert 0.9 * 0.05 * used <= total <= 0.05 * used * 1.1 + 4 * MiB  # about the fraction asked
    for path in delta.paths["deleted"]:
        assert debugfs_read(img, path) is None
    for path in delta.paths["new"]:
        assert debugfs_read(img, path) is not None
    assert sum(len(debugfs_read(img, p) or b"") for p in delta.paths["new"]) == delta.ops["new"].bytes
    for path in delta.paths["rewritten"]:
        new = debugfs_read(img, path)
        old = Path(path).read_bytes() if path.startswith("/usr/") else None
        assert new is not None
        if old is not None:
            assert len(new) == len(old) and new != old
    grown = 0
    for path in delta.paths["appended"]:
        new = debugfs_read(img, path) or b""
        rel = path.lstrip("/")
        assert len(new) > man.sizes[rel]
        grown += len(new) - man.sizes[rel]
    assert grown == delta.ops["appended"].bytes
    # untouched files are still there, unchanged
    touched = {p for ps in delta.paths.values() for p in ps}
    keep = [p for p in man.paths if p.startswith("usr/") and "/" + p not in touched][:5]
    for rel in keep:
        assert debugfs_read(img, "/" + rel) == Path("/" + rel).read_bytes()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="the link bench starts sshd, tc and a network namespace: root only")
def test_link_bench_end_to_end_small(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(REPO / "bench/link_bench.py"), "--size", "16MiB", "--rates", "200mbit",
         "--json", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result["netns"] is True
    assert result["links"] == [{"rate": "200mbit", "mtu": 1500, "qdisc": "tbf rate 200mbit burst 256kb latency 100ms",
                                "qdisc_drops": result["links"][0]["qdisc_drops"]}]  # fmt: skip
    assert set(result["images"]) == {"realfs", "synthetic"}
    assert result["images"]["realfs"]["kinds"]["libs"]["files"] > 0
    assert result["deltas"]["realfs"]["ops"]["deleted"]["files"] > 0
    rows = {(r["image"], r["phase"], r["tool"]): r for r in result["rows"]}
    tools = {
        "full": ["rsync --whole-file", "rsync -z --whole-file", "migrated sync"],
        "delta": ["rsync -z --inplace", "rsync --inplace", "migrated sync (known target)",
                  "migrated sync (unknown target)"],
    }  # fmt: skip
    assert len(rows) == len(result["rows"]) == 2 * 7
    for image in ("realfs", "synthetic"):
        for phase, names in tools.items():
            for tool in names:
                r = rows[image, phase, tool]
                assert r["link"] == "200mbit"
                assert r["status"] == "ok" and r["verified"], r  # every copy byte-identical to its source
                assert r["wire_bytes"] > 0
                ref = "rsync -z --whole-file" if phase == "full" else "rsync -z --inplace"
                assert set(r["vs"]) >= {ref} and r["time_vs_ref"] == r["vs"][ref]["time"]
        # a whole-file copy without compression sends at least the image
        assert rows[image, "full", "rsync --whole-file"]["wire_bytes"] >= 16 * MiB
    assert (tmp_path / "results.md").read_text().startswith("| image | link | phase | tool |")
