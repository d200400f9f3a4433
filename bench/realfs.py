"""A real-filesystem benchmark image: ext4 made from files of this machine, and a delta made by file operations.

* :func:`build_tree` picks files deterministically (same seed + same machine = same selection) from
  ``/usr/lib`` (libraries), ``/usr/share/doc`` and ``/usr/share/man`` (docs), and adds generated
  incompressible blobs (``srv/blobs``) and log files (``var/log``), up to a byte budget.
* :func:`make_realfs` runs ``mkfs.ext4 -d TREE IMG SIZE`` on a sparse file (free space stays holes),
  with a UUID and directory hash seed derived from the seed, then removes the tree.
* :func:`apply_fs_delta` changes that filesystem with ``debugfs -w -f CMDS IMG`` (no mount, no root):
  new files, rewritten files (rm + write: a new inode, like an editor or a package upgrade writing a
  temp file and renaming it), deleted files, and appended logs. debugfs has no append, so an appended
  log is written again whole under its name (its old blocks are freed, the longer file gets new ones).
  The image is edited in place (same inode), as a disk changes between two syncs.

Usage::

    python3 bench/realfs.py /var/tmp/rf/base.img --size 2GiB           # build
    python3 bench/realfs.py /var/tmp/rf/base.img --delta 1%            # change it in place
    ... add --json for the manifest (what was taken / what changed: file counts, bytes by kind).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

from bench.gen_image import GiB, MiB, _text_bytes, _text_pool, parse_percent, parse_size  # noqa: E402

#: where the real files come from, by kind
SOURCES = {"libs": ["/usr/lib"], "docs": ["/usr/share/doc", "/usr/share/man"]}
#: shares of the used bytes, by kind
USED_SHARES = {"libs": 0.60, "docs": 0.12, "blobs": 0.25, "logs": 0.03}
USED_FRACTION = 0.52  # of the image size: 2 GiB -> about 1.1 GB of files
MAX_FILE = 32 * MiB
BLOB_MIN, BLOB_MAX = 256 * 1024, 16 * MiB
GENERATOR = 1  # bump when the selection or layout changes (cached images are rebuilt)


@dataclass
class KindStats:
    files: int = 0
    bytes: int = 0


@dataclass
class TreeManifest:
    """What the image holds (or what a delta changed): per kind, file count and bytes."""

    seed: int
    budget: int
    kinds: dict[str, KindStats] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)  # relative paths in the image, sorted
    digest: str = ""  # sha256 of the sorted paths: the same for the same selection
    sizes: dict[str, int] = field(default_factory=dict)  # relative path -> bytes

    def summary(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("paths")
        d.pop("sizes")
        d["files"] = len(self.paths)
        d["bytes"] = sum(k.bytes for k in self.kinds.values())
        return d


def _candidates(roots: list[str]) -> list[tuple[str, int]]:
    """(absolute path, size) of the regular, readable files under ``roots``, sorted by path."""
    out: list[tuple[str, int]] = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in filenames:
                p = os.path.join(dirpath, name)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if not (0 < st.st_size <= MAX_FILE) or (st.st_mode & 0o170000) != 0o100000:
                    continue
                if not os.access(p, os.R_OK):
                    continue
                out.append((p, st.st_size))
    out.sort()
    return out


def _blocks(size: int) -> int:
    return -(-size // 4096) * 4096


def build_tree(tree: Path, used: int, seed: int = 1) -> TreeManifest:
    """Fill ``tree`` (created; must not exist) with about ``used`` bytes of files (see the module doc)."""
    rng = random.Random(seed)
    tree.mkdir(parents=True)
    man = TreeManifest(seed, used, {k: KindStats() for k in USED_SHARES})
    paths: list[str] = []
    for kind, roots in SOURCES.items():
        budget = int(used * USED_SHARES[kind])
        files = _candidates(roots)
        rng.shuffle(files)
        charged = 0  # what the files take on disk (whole 4 KiB blocks): the budget is of blocks
        for src, size in files:
            if charged + _blocks(size) > budget:
                continue
            rel = src.lstrip("/")
            dst = tree / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(src, dst)
            except OSError:
                continue
            man.kinds[kind].files += 1
            man.kinds[kind].bytes += dst.stat().st_size
            paths.append(rel)
            man.sizes[rel] = dst.stat().st_size
            charged += _blocks(size)
            if charged >= budget * 0.995:
                break
    (tree / "srv/blobs").mkdir(parents=True)
    budget = int(used * USED_SHARES["blobs"])
    while man.kinds["blobs"].bytes < budget:
        n = min(rng.randrange(BLOB_MIN, BLOB_MAX + 1), budget - man.kinds["blobs"].bytes)
        rel = f"srv/blobs/blob-{man.kinds['blobs'].files:04d}.bin"
        (tree / rel).write_bytes(rng.randbytes(n))
        man.kinds["blobs"].files += 1
        man.kinds["blobs"].bytes += n
        paths.append(rel)
        man.sizes[rel] = n
    (tree / "var/log").mkdir(parents=True)
    pool = _text_pool(rng, 1 * MiB)
    budget = int(used * USED_SHARES["logs"])
    count = max(4, min(32, budget // MiB))
    for i in range(count):
        rel = f"var/log/app-{i:02d}.log"
        data = _text_bytes(rng, pool, budget // count, f"log{i}")
        (tree / rel).write_bytes(data)
        man.kinds["logs"].files += 1
        man.kinds["logs"].bytes += len(data)
        paths.append(rel)
        man.sizes[rel] = len(data)
    man.paths = sorted(paths)
    man.digest = hashlib.sha256("\n".join(man.paths).encode()).hexdigest()[:16]
    return man


def _mkfs(tree: Path, image: Path, size: int, seed: int) -> None:
    fs_uuid = str(uuid.UUID(int=random.Random(seed).getrandbits(128), version=4))
    tmp = image.with_name(image.name + ".partial")
    tmp.unlink(missing_ok=True)
    with open(tmp, "wb") as f:
        f.truncate(size)
    env = dict(os.environ, E2FSPROGS_FAKE_TIME="1700000000")
    run = subprocess.run(
        ["mkfs.ext4", "-F", "-q", "-b", "4096", "-U", fs_uuid, "-E", f"hash_seed={fs_uuid},root_owner=0:0",
         "-L", "benchroot", "-d", str(tree), str(tmp), f"{size // 1024}k"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if run.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"mkfs.ext4 -d failed: {run.stderr.strip()[-800:]}")
    os.replace(tmp, image)


def make_realfs(image: Path, size: int = 2 * GiB, seed: int = 1, used: int | None = None,
                workdir: Path | None = None) -> TreeManifest:  # fmt: skip
    """Build the tree, ``mkfs.ext4 -d`` it into ``image`` (``size`` bytes, sparse), remove the tree.
    The manifest is also written next to the image as ``IMAGE.manifest.json`` (paths included)."""
    used = int(size * USED_FRACTION) if used is None else used
    with tempfile.TemporaryDirectory(prefix="realfs-tree-", dir=workdir or image.parent) as tmp:
        man = build_tree(Path(tmp) / "root", used, seed)
        _mkfs(Path(tmp) / "root", image, size, seed)
    image.with_name(image.name + ".manifest.json").write_text(json.dumps(asdict(man)))
    return man


def load_manifest(image: Path) -> TreeManifest:
    d = json.loads(image.with_name(image.name + ".manifest.json").read_text())
    d["kinds"] = {k: KindStats(**v) for k, v in d["kinds"].items()}
    return TreeManifest(**d)


# -- the delta ---------------------------------------------------------------------------------

#: shares of the delta budget, by operation
DELTA_SHARES = {"new": 0.40, "rewritten": 0.30, "deleted": 0.20, "appended": 0.10}


@dataclass
class DeltaManifest:
    """What :func:`apply_fs_delta` did: per operation, files and bytes, and the paths it touched."""

    seed: int
    budget: int
    ops: dict[str, KindStats] = field(default_factory=dict)
    paths: dict[str, list[str]] = field(default_factory=dict)  # op -> image paths ("/srv/new/..."), sorted

    def summary(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("paths")
        return d


def debugfs_read(image: Path, path: str) -> bytes | None:
    """The content of ``path`` in the ext4 ``image`` (read-only debugfs), or None when it does not exist."""
    run = subprocess.run(["debugfs", "-R", f"cat {path}", str(image)], capture_output=True, check=False)
    if b"File not found" in run.stderr or b"not found by ext2_lookup" in run.stderr:
        return None
    return run.stdout


def _rewrite(data: bytes, rng: random.Random) -> bytes:
    """The same file after an upgrade: about a quarter of it (4 KiB-aligned pieces) replaced."""
    out = bytearray(data)
    page = 4096
    pages = max(1, len(out) // page)
    for _ in range(max(1, pages // 4)):
        i = rng.randrange(pages) * page
        n = min(page, len(out) - i)
        out[i : i + n] = rng.randbytes(n)
    return bytes(out)


def apply_fs_delta(image: Path, fraction: float = 0.01, seed: int = 2,
                   base: TreeManifest | None = None) -> DeltaManifest:  # fmt: skip
    """Change about ``fraction`` of the files' bytes of ``image`` in place with file operations through
    ``debugfs -w``. ``base``: the manifest of the image's content (default: the one :func:`make_realfs`
    wrote next to ``image``; pass it for a copy). Same content + fraction + seed = the same operations."""
    base = load_manifest(image) if base is None else base
    used = sum(k.bytes for k in base.kinds.values())
    budget = int(used * fraction)
    rng = random.Random(seed)
    man = DeltaManifest(seed, budget, {k: KindStats() for k in DELTA_SHARES}, {k: [] for k in DELTA_SHARES})
    existing = [p for p in base.paths if not p.startswith("var/log/")]
    rng.shuffle(existing)
    logs = [p for p in base.paths if p.startswith("var/log/")]
    cmds: list[str] = []
    with tempfile.TemporaryDirectory(prefix="realfs-delta-", dir=image.parent) as tmp:
        staged = 0

        def stage(data: bytes) -> str:
            nonlocal staged
            staged += 1
            local = Path(tmp) / f"f{staged:05d}"
            local.write_bytes(data)
            return str(local)

        def put(path: str, data: bytes, replace: bool) -> None:
            parent, name = path.rsplit("/", 1)
            cmds.append(f"cd {parent or '/'}")
            if replace:
                cmds.append(f"rm {name}")
            cmds.append(f"write {stage(data)} {name}")

        # deleted and rewritten: distinct existing files (never the same file twice)
        for op in ("deleted", "rewritten"):
            share = int(budget * DELTA_SHARES[op])
            skipped: list[str] = []
            while existing and man.ops[op].bytes < share * 0.99:
                rel = existing.pop()
                if man.ops[op].bytes + base.sizes[rel] > share:
                    skipped.append(rel)  # too big for what is left of the share: the next op may take it
                    continue
                path = "/" + rel
                data = debugfs_read(image, path) if op == "rewritten" else None
                size = len(data) if data is not None else base.sizes[rel]
                if op == "deleted":
                    cmds.append(f"rm {path}")
                else:
                    assert data is not None
                    put(path, _rewrite(data, rng), replace=True)
                man.ops[op].files += 1
                man.ops[op].bytes += size
                man.paths[op].append(path)
            existing += reversed(skipped)
        # new: a new directory of incompressible and text files
        cmds += ["cd /srv", "mkdir new"]
        pool = _text_pool(rng, 1 * MiB)
        share = int(budget * DELTA_SHARES["new"])
        while man.ops["new"].bytes < share:
            i = man.ops["new"].files
            n = max(1, min(rng.randrange(16 * 1024, 4 * MiB), share - man.ops["new"].bytes))
            data = rng.randbytes(n) if i % 2 == 0 else _text_bytes(rng, pool, n, f"new{i}")
            path = f"/srv/new/file-{i:04d}" + (".bin" if i % 2 == 0 else ".txt")
            put(path, data, replace=False)
            man.ops["new"].files += 1
            man.ops["new"].bytes += n
            man.paths["new"].append(path)
        # appended: every log grows by its part of the share
        share = int(budget * DELTA_SHARES["appended"])
        for i, rel in enumerate(logs):
            path = "/" + rel
            old = debugfs_read(image, path) or b""
            n = max(1, share // len(logs))
            put(path, old + _text_bytes(rng, pool, n, f"append{i}"), replace=True)
            man.ops["appended"].files += 1
            man.ops["appended"].bytes += n
            man.paths["appended"].append(path)
        cmdfile = Path(tmp) / "cmds"
        cmdfile.write_text("\n".join(cmds) + "\n")
        run = subprocess.run(["debugfs", "-w", "-f", str(cmdfile), str(image)], capture_output=True, text=True,
                             check=False)  # fmt: skip
    # debugfs exits 0 even when a command fails: its errors are lines that are not echoed commands
    errors = [line for line in run.stderr.splitlines()
              if line.strip() and not line.startswith("debugfs") and "Allocated inode" not in line]  # fmt: skip
    if run.returncode != 0 or errors:
        raise RuntimeError(f"debugfs -w failed: {' / '.join(errors)[-800:] or run.stderr[-800:]}")
    for op in man.paths:
        man.paths[op].sort()
    return man


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("image", type=Path)
    p.add_argument("--size", type=parse_size, default=2 * GiB, help="image size (default 2GiB)")
    p.add_argument("--used", type=parse_size, help=f"bytes of files (default {USED_FRACTION:.0%} of --size)")
    p.add_argument("--seed", type=int, help="default 1 for the image, 2 for the delta")
    p.add_argument("--delta", type=parse_percent, metavar="PCT", help="change about PCT of IMAGE's file bytes in place")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    start = time.monotonic()
    if args.delta is not None:
        summary = apply_fs_delta(args.image, args.delta, 2 if args.seed is None else args.seed).summary()
    else:
        args.image.parent.mkdir(parents=True, exist_ok=True)
        summary = make_realfs(args.image, args.size, 1 if args.seed is None else args.seed, args.used).summary()
    summary["seconds"] = round(time.monotonic() - start, 2)
    print(json.dumps(summary) if args.json else summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
