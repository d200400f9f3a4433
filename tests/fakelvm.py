"""A labelled FAKE lvm2 (``lvs``, ``lvcreate``, ``lvremove``) for the ``--quiesce lvm`` tests.

Why a fake: device-mapper does not work on the CI machine (no /dev/mapper/control, ``dmsetup
version`` fails), so real LVM volumes and snapshots cannot exist here. These scripts stand in for
lvm2's command-line interface, as far as migrated uses it, over a real loop device:

* the "origin logical volume" ``VG/LV`` is a loop device (with a mounted ext4 in the tests);
* ``lvcreate --snapshot ... --name NAME VG/LV`` makes a *real point-in-time copy*: it freezes the
  origin's mounted filesystem (``fsfreeze``, as device-mapper's suspend does), copies the device
  (O_DIRECT) to an image file, thaws, and attaches the copy read-only (``losetup -r``); that loop
  device is the snapshot's ``lv_path``. A hard link of the copy is kept in ``kept/`` so a test can
  inspect exactly what the snapshot held after it was removed;
* ``lvremove --force VG/NAME`` detaches the loop device and deletes the copy;
* ``lvs --noheadings [--separator S] -o FIELDS NAME...`` answers vg_name, lv_name, origin, lv_path
  for ``VG``, ``VG/LV`` or a device path.

Every invocation (and the freeze/thaw around the copy) is appended to ``log.jsonl`` with a
timestamp. Control files in the fake's directory: ``fail-create`` (lvcreate fails with its
content as lvm2's message; ``fail-create-LV``: only for that volume), ``short-copy`` (the copy is
1 MiB short: a broken snapshot). :func:`add_volume` adds more volumes to the same fake VG.

Differences from real LVM (said plainly): the copy takes time proportional to the volume (a real
snapshot is copy-on-write and instant), and the copy never runs out of space.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve()


def install(root: Path, vg: str, lv: str, origin: str) -> Path:
    """Set up the fake in ``root`` for the volume ``vg/lv`` backed by the device ``origin``;
    returns the directory to put first on PATH."""
    bindir = root / "bin"
    bindir.mkdir(parents=True)
    (root / "snaps").mkdir()
    (root / "kept").mkdir()
    (root / "config.json").write_text(json.dumps({"vg": vg, "volumes": {lv: origin}}))
    for name in ("lvs", "lvcreate", "lvremove"):
        p = bindir / name
        p.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(SCRIPT.parent.parent)!r})\n"
                     f"from tests.fakelvm import main\nsys.exit(main({str(root)!r}, {name!r}, sys.argv[1:]))\n")
        p.chmod(0o755)
    return bindir


def add_volume(root: Path, lv: str, origin: str) -> None:
    cfg = json.loads((root / "config.json").read_text())
    cfg["volumes"][lv] = origin
    (root / "config.json").write_text(json.dumps(cfg))


def read_log(root: Path) -> list[dict]:
    p = root / "log.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


# ------------------------------------------------------------------ the commands


def _log(root: Path, **entry: object) -> None:
    with open(root / "log.jsonl", "a") as f:
        f.write(json.dumps({"t": time.time(), **entry}) + "\n")


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=300)


def _volumes(root: Path) -> list[dict]:
    cfg = json.loads((root / "config.json").read_text())
    vols = [{"vg_name": cfg["vg"], "lv_name": lv, "origin": "", "lv_path": dev} for lv, dev in cfg["volumes"].items()]
    for p in sorted((root / "snaps").glob("*.json")):
        s = json.loads(p.read_text())
        vols.append({"vg_name": cfg["vg"], "lv_name": s["name"], "origin": s["origin"], "lv_path": s["loop"]})
    return vols


def _select(vols: list[dict], name: str) -> list[dict] | None:
    if name.startswith("/"):
        real = os.path.realpath(name)
        return [v for v in vols if os.path.realpath(v["lv_path"]) == real] or None
    vg, _, lv = name.partition("/")
    got = [v for v in vols if v["vg_name"] == vg and (not lv or v["lv_name"] == lv)]
    return got or None


def lvs(root: Path, argv: list[str]) -> int:
    sep, fields, names, headings = " ", ["lv_name", "vg_name"], [], True
    it = iter(argv)
    for a in it:
        if a == "--noheadings":
            headings = False
        elif a == "--separator":
            sep = next(it)
        elif a in ("-o", "--options"):
            fields = next(it).split(",")
        elif a.startswith("-"):
            print(f"fake lvs: option {a} not supported", file=sys.stderr)
            return 3
        else:
            names.append(a)
    vols = _volumes(root)
    rows: list[dict] = []
    for n in names or [""]:
        got = _select(vols, n) if n else vols
        if got is None:
            print(f'  Failed to find logical volume "{n}"' if "/" in n and not n.startswith("/")
                  else f'  "{n}": Invalid path for Logical Volume.', file=sys.stderr)
            return 5
        rows += got
    if headings:
        print("  " + sep.join(f.upper() for f in fields))
    for r in rows:
        print("  " + sep.join(r.get(f, "") for f in fields))
    return 0


def lvcreate(root: Path, argv: list[str]) -> int:
    cfg = json.loads((root / "config.json").read_text())
    if "--snapshot" not in argv or "--name" not in argv:
        print("fake lvcreate: only --snapshot --name NAME VG/LV is supported", file=sys.stderr)
        return 3
    name = argv[argv.index("--name") + 1]
    vg, _, lv = argv[-1].partition("/")
    if vg != cfg["vg"] or lv not in cfg["volumes"]:
        print(f'  Failed to find logical volume "{argv[-1]}"', file=sys.stderr)
        return 5
    origin = cfg["volumes"][lv]
    for fail in (root / "fail-create", root / f"fail-create-{lv}"):
        if fail.exists():
            print(fail.read_text().strip(), file=sys.stderr)
            return 5
    if (root / "snaps" / f"{name}.json").exists():
        print(f'  Logical Volume "{name}" already exists in volume group "{cfg["vg"]}"', file=sys.stderr)
        return 5
    image = root / "snaps" / f"{name}.img"
    mnt = _run("findmnt", "-n", "-o", "TARGET", "--source", origin).stdout.split()
    size = int(_run("blockdev", "--getsize64", origin).stdout)
    count = size // (1024 * 1024) - (1 if (root / "short-copy").exists() else 0)
    if mnt:
        _log(root, cmd="freezing", mountpoint=mnt[0], lv=lv)  # before: a watcher counts freezes begun
        _run("fsfreeze", "-f", mnt[0])
        _log(root, cmd="freeze", mountpoint=mnt[0], lv=lv)
    try:
        r = _run("dd", f"if={origin}", f"of={image}", "bs=1M", f"count={count}", "iflag=direct",
                 "status=none")
    finally:
        if mnt:
            _run("fsfreeze", "-u", mnt[0])
            _log(root, cmd="thaw", mountpoint=mnt[0], lv=lv)
    if r.returncode != 0:
        print(f"fake lvcreate: copy failed: {r.stderr}", file=sys.stderr)
        image.unlink(missing_ok=True)
        return 5
    loop = _run("losetup", "-r", "-f", "--show", str(image)).stdout.strip()
    kept = root / "kept" / f"{name}-{len(list((root / 'kept').iterdir()))}.img"
    os.link(image, kept)
    (root / "snaps" / f"{name}.json").write_text(json.dumps({"name": name, "origin": lv, "loop": loop,
                                                             "image": str(image), "kept": str(kept)}))
    print(f'  Logical volume "{name}" created.')
    return 0


def lvremove(root: Path, argv: list[str]) -> int:
    cfg = json.loads((root / "config.json").read_text())
    names = [a for a in argv if not a.startswith("-")]
    for n in names:
        vg, _, lv = n.partition("/")
        meta = root / "snaps" / f"{lv}.json"
        if vg != cfg["vg"] or not meta.exists():
            print(f'  Failed to find logical volume "{n}"', file=sys.stderr)
            return 5
        s = json.loads(meta.read_text())
        r = _run("losetup", "-d", s["loop"])
        if r.returncode != 0:
            print(f"  Logical volume {n} in use: {r.stderr.strip()}", file=sys.stderr)
            return 5
        Path(s["image"]).unlink(missing_ok=True)
        meta.unlink()
        print(f'  Logical volume "{lv}" successfully removed.')
    return 0


def main(root: str, cmd: str, argv: list[str]) -> int:
    r = Path(root)
    started = time.time()
    rc = {"lvs": lvs, "lvcreate": lvcreate, "lvremove": lvremove}[cmd](r, argv)
    _log(r, cmd=cmd, argv=argv, rc=rc, started=started)
    return rc
