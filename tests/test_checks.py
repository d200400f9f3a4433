"""Pre-migration checks: the decisions as tables, the probe on a fake tree, ignore_checks, `migrated check`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from migrated.agent.checks import (
    Disk,
    Result,
    SystemProbe,
    TargetInfo,
    TargetPlan,
    disks_from_lsblk,
    evaluate_clock_skew,
    evaluate_disks,
    evaluate_selinux,
    evaluate_target_capacity,
    evaluate_virtio,
    run_checks,
)
from migrated.config import Config, parse_config
from migrated.errors import AuthError
from tests.conftest import cli, repo_env

BLK = "kernel/drivers/block/virtio_blk.ko"
PCI = "kernel/drivers/virtio/virtio_pci.ko"
NET = "kernel/drivers/net/virtio_net.ko"


@pytest.mark.parametrize(("builtin", "initrd", "result", "words"), [
    ([BLK, PCI, NET], [], Result.PASS, "built into the kernel"),
    ([], [f"usr/lib/modules/6.1/{BLK}.xz", f"usr/lib/modules/6.1/{PCI}.zst"], Result.PASS, "virtio_net is not"),
    ([PCI], ["usr/lib/modules/6.1/kernel/drivers/scsi/virtio_scsi.ko"], Result.PASS, "in the initramfs"),
    ([PCI], ["etc/hostname"], Result.FAIL, "update-initramfs -u"),
    ([], [], Result.FAIL, "virtio_pci, virtio_blk not built in"),
    (None, None, Result.WARN, "could not read"),
])
def test_virtio(builtin, initrd, result: Result, words: str) -> None:
    r = evaluate_virtio(builtin, initrd, "6.1")
    assert r.result is result and words in r.message, r.message


@pytest.mark.parametrize(("enforce", "config", "result"), [
    (None, None, Result.PASS),
    ("0", "SELINUX=permissive\n", Result.PASS),
    ("1", "SELINUX=enforcing\n", Result.WARN),
])
def test_selinux(enforce, config, result: Result) -> None:
    assert evaluate_selinux(enforce, config).result is result


@pytest.mark.parametrize(("skew", "result", "words"), [
    (None, Result.WARN, "not compared"),
    (0.3, Result.PASS, "within 0.3 s"),
    (-90.0, Result.WARN, "timedatectl"),
    (400.0, Result.WARN, "400 s behind the console"),
    (-400.0, Result.WARN, "400 s ahead of the console"),
    (3 * 86400.0, Result.FAIL, "72 hours behind"),
])
def test_clock_skew(skew, result: Result, words: str) -> None:
    r = evaluate_clock_skew(skew, 60)
    assert r.result is result and words in r.message


LSBLK = {"blockdevices": [
    {"name": "zram0", "path": "/dev/zram0", "size": 0, "type": "disk", "mountpoints": ["[SWAP]"]},
    {"name": "vda", "path": "/dev/vda", "size": 40 << 30, "type": "disk", "mountpoints": [None], "children": [
        {"name": "vda1", "path": "/dev/vda1", "size": 1 << 30, "type": "part", "mountpoints": ["/boot"]},
        {"name": "vda2", "path": "/dev/vda2", "size": 39 << 30, "type": "part", "mountpoints": ["/"]}]},
    {"name": "vdb", "path": "/dev/vdb", "size": 20 << 30, "type": "disk", "mountpoints": ["/data"]},
    {"name": "vdc", "path": "/dev/vdc", "size": 5 << 30, "type": "disk", "mountpoints": [None]},
    {"name": "sr0", "path": "/dev/sr0", "size": 1 << 20, "type": "rom", "mountpoints": [None]},
]}


def test_disks_from_lsblk_pick_system_and_mounted() -> None:
    disks = disks_from_lsblk(LSBLK)
    assert [d.path for d in disks] == ["/dev/zram0", "/dev/vda", "/dev/vdb", "/dev/vdc"]
    r = evaluate_disks(disks)
    assert r.result is Result.PASS
    assert "2 disk(s)" in r.message and "/dev/vda 40.0 GiB (system)" in r.message and "/dev/vdb" in r.message
    assert "vdc" not in r.message and "zram" not in r.message


def test_no_system_disk_fails() -> None:
    r = evaluate_disks([Disk("/dev/vdb", 1 << 30, ("/data",))])
    assert r.result is Result.FAIL and "root filesystem" in r.message
    assert evaluate_disks(None).result is Result.FAIL


def test_target_capacity() -> None:
    ok = evaluate_target_capacity([("/dev/vda", 10, "/dev/vdb", 10)])
    assert ok.result is Result.PASS
    small = evaluate_target_capacity([("/dev/vda", 2 << 30, "/dev/vdb", 1 << 30), ("/dev/vdc", 1, "/dev/x", None)])
    assert small.result is Result.FAIL
    assert "grow it by 1.0 GiB" in small.message and "/dev/x does not exist" in small.message


class FakeProbe(SystemProbe):
    def kernel(self) -> str:
        return "6.1"

    def initramfs_listing(self, kernel: str) -> list[str] | None:
        return None

    def disks(self) -> list[Disk] | None:
        return disks_from_lsblk(LSBLK)


class Target:
    def __init__(self, info: TargetInfo | None = None, error: Exception | None = None) -> None:
        self.info, self.error = info, error

    async def probe(self, target_paths: Sequence[str]) -> TargetInfo:
        if self.error:
            raise self.error
        assert self.info is not None
        return self.info


async def test_run_checks_on_a_fake_tree(tmp_path: Path) -> None:
    (tmp_path / "lib/modules/6.1").mkdir(parents=True)
    (tmp_path / "lib/modules/6.1/modules.builtin").write_text(f"{BLK}\n{PCI}\n{NET}\n")
    (tmp_path / "sys/fs/selinux").mkdir(parents=True)
    (tmp_path / "sys/fs/selinux/enforce").write_text("1\n")
    results = {r.name: r for r in await run_checks(Config(), FakeProbe(str(tmp_path)), clock_skew=1.0)}
    assert results["virtio_drivers"].result is Result.PASS
    assert results["selinux"].result is Result.WARN
    assert results["clock_skew"].result is Result.PASS
    assert results["disks"].result is Result.PASS
    assert results["target_ssh"].result is Result.SKIP
    assert list(results) == ["virtio_drivers", "selinux", "clock_skew", "disks", "target_ssh", "target_capacity",
                             "target_receiver"]


async def test_ignore_checks_by_name_and_all(tmp_path: Path) -> None:
    cfg = parse_config("ignore_checks: [selinux, disks]\n")
    results = {r.name: r for r in await run_checks(cfg, FakeProbe(str(tmp_path)))}
    assert results["selinux"].result is Result.SKIP and "ignore_checks" in results["selinux"].message
    assert results["disks"].result is Result.SKIP
    assert results["virtio_drivers"].result is Result.WARN  # empty tree: nothing readable
    everything = await run_checks(Config(), FakeProbe(str(tmp_path)), ignore="all")
    assert {r.result for r in everything} == {Result.SKIP}


async def test_target_checks(tmp_path: Path) -> None:
    plan = TargetPlan(disks=(("/dev/vda", 40 << 30, "/dev/vdb"),))
    good = Target(TargetInfo(disk_sizes={"/dev/vdb": 50 << 30}, receiver_version="1"))
    r = {x.name: x for x in await run_checks(Config(), FakeProbe(str(tmp_path)), target=good, plan=plan)}
    assert (r["target_ssh"].result, r["target_capacity"].result, r["target_receiver"].result) == (
        Result.PASS, Result.PASS, Result.PASS)
    bad = Target(error=AuthError("host key of 10.0.0.5:22 does not match the pinned key"))
    r = {x.name: x for x in await run_checks(Config(), FakeProbe(str(tmp_path)), target=bad, plan=plan)}
    assert r["target_ssh"].result is Result.FAIL and "pinned key" in r["target_ssh"].message
    assert r["target_capacity"].result is Result.SKIP


def test_migrated_check_command(tmp_path: Path) -> None:
    cfg = tmp_path / "m.yaml"
    cfg.write_text("ignore_checks: [virtio_drivers]\n")
    r = subprocess.run([*cli("migrated"), "check", "--config", str(cfg), "--json"], env=repo_env(),
                       capture_output=True, text=True, timeout=120)
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["virtio_drivers"]["result"] == "skip"
    assert checks["disks"]["result"] in ("pass", "fail")
    assert r.returncode == (9 if any(c["result"] == "fail" for c in checks.values()) else 0), r.stderr
