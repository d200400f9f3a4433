"""Deterministic raw disk images for benchmarks and the demo.

Three kinds (same arguments + same seed = byte-identical output, on any machine):

* **realistic** (default): ``--size`` bytes (default 2 GiB) made of runs of 1-64 MiB (multiples of
  4 KiB): about 45 % zero runs (left as holes: the file is sparse), 35 % random bytes (incompressible,
  like compressed or encrypted data), 20 % log-like text (compressible, zstd about 0.3-0.45). The run
  shares are exact to within one 4 KiB page; the order of the runs is shuffled.
* **modified** (``--modify PCT --from BASE``; without ``--from``: OUTPUT edited in place): a sparse
  copy of BASE with about PCT of its size rewritten with random bytes in regions of 4 KiB-1 MiB at
  4 KiB-aligned offsets (regions may land in zero runs, as new files on a disk do).
* **sparse** (``--sparse``, default 200 GiB): a file that is almost all holes, with a small realistic
  image (``--data``, default 64 MiB) at its start, middle and end: a huge disk with little on it.

Usage::

    python3 bench/gen_image.py /var/tmp/img/base.img --size 2GiB
    python3 bench/gen_image.py /var/tmp/img/mod.img --modify 1% --from /var/tmp/img/base.img
    python3 bench/gen_image.py /var/tmp/img/base.img --modify 1%      # edit in place (same inode)
    python3 bench/gen_image.py /var/tmp/img/huge.img --sparse --size 200GiB
    ... add --json for a machine-readable summary.

No numpy: random bytes come from ``random.Random(seed).randbytes`` (about 240 MB/s here).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
PAGE = 4 * KiB
CHUNK = 4 * MiB  # write granularity: bounds memory to a few MiB whatever the image size

SHARES = {"zero": 0.45, "random": 0.35, "text": 0.20}
RUN_MIN, RUN_MAX = 1 * MiB, 64 * MiB

_UNITS = {"": 1, "b": 1, "k": KiB, "kib": KiB, "m": MiB, "mib": MiB, "g": GiB, "gib": GiB, "t": 1024 * GiB,
          "tib": 1024 * GiB, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}  # fmt: skip


def parse_size(text: str) -> int:
    """``"2GiB"``, ``"256M"``, ``"4096"`` -> bytes (binary units for K/M/G/T, decimal for KB/MB/GB/TB)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 4096, 256MiB, 2GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_percent(text: str) -> float:
    """``"1%"`` or ``"1"`` -> 0.01."""
    value = float(text.strip().rstrip("%"))
    if not 0 < value <= 100:
        raise ValueError(f"percentage out of range (0, 100]: {text!r}")
    return value / 100


@dataclass
class ImageStats:
    path: str
    kind: str
    size: int
    seed: int
    bytes_by_kind: dict[str, int] = field(default_factory=dict)
    runs: int = 0
    seconds: float = 0.0


# -- realistic ----------------------------------------------------------------------------------

_VOCABULARY = (
    "GET POST PUT DELETE /api/v1/orders /api/v1/users /static/app.js /healthz 200 201 204 301 304 400 404 "
    "500 kernel: systemd[1]: Started Stopped Session user root nginx postgres redis cron sshd Accepted "
    "publickey for from port ssh2 INFO WARN ERROR DEBUG connection closed timeout retry backend upstream "
    "latency_ms bytes_sent request_id user_agent Mozilla/5.0 (X11; Linux x86_64) checkpoint complete "
    "wrote buffers vacuum analyze table index insert update select commit rollback eth0 link up down"
)
_WORDS = _VOCABULARY.split()


def _text_pool(rng: random.Random, size: int = 4 * MiB) -> bytes:
    """Log-like lines, built once per image: the source every text run is cut from."""
    lines: list[str] = []
    total = 0
    t = 1_700_000_000
    while total < size:
        t += rng.randint(0, 3)
        words = " ".join(rng.choices(_WORDS, k=rng.randint(6, 16)))
        line = f"{t}.{rng.randint(0, 999999):06d} host{rng.randint(1, 40):02d} {words} id={rng.getrandbits(48):012x}\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def _text_bytes(rng: random.Random, pool: bytes, length: int, stamp: str) -> bytes:
    """``length`` bytes of text cut from ``pool`` at random offsets; each 64 KiB piece is stamped, so no
    two pieces of the image are identical (a real disk rarely repeats whole blocks)."""
    out = bytearray()
    piece = 64 * KiB
    while len(out) < length:
        n = min(piece, length - len(out))
        off = rng.randrange(0, len(pool) - n)
        chunk = bytearray(pool[off : off + n])
        tag = f"#{stamp}:{len(out)}\n".encode()[:n]
        chunk[: len(tag)] = tag
        out += chunk
    return bytes(out)


def plan_runs(size: int, rng: random.Random) -> list[tuple[str, int]]:
    """(kind, length) runs covering ``size`` bytes, kind shares as in :data:`SHARES`, shuffled."""
    runs: list[tuple[str, int]] = []
    remaining = size
    kinds = list(SHARES.items())
    for i, (kind, share) in enumerate(kinds):
        budget = remaining if i == len(kinds) - 1 else min(remaining, (int(size * share) // PAGE) * PAGE)
        remaining -= budget
        while budget > 0:
            length = min(budget, rng.randrange(RUN_MIN // PAGE, RUN_MAX // PAGE + 1) * PAGE)
            runs.append((kind, length))
            budget -= length
    rng.shuffle(runs)
    return runs


def make_realistic(path: Path, size: int = 2 * GiB, seed: int = 1) -> ImageStats:
    """Write a realistic image to ``path`` (replaced if present). Zero runs are holes."""
    start = time.monotonic()
    rng = random.Random(seed)
    pool = _text_pool(rng)
    runs = plan_runs(size, rng)
    stats = ImageStats(str(path), "realistic", size, seed, dict.fromkeys(SHARES, 0), len(runs))
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        offset = 0
        for kind, length in runs:
            stats.bytes_by_kind[kind] += length
            if kind == "zero":
                f.seek(length, os.SEEK_CUR)
            else:
                done = 0
                while done < length:
                    n = min(CHUNK, length - done)
                    if kind == "random":
                        f.write(rng.randbytes(n))
                    else:
                        f.write(_text_bytes(rng, pool, n, f"{seed}:{offset + done}"))
                    done += n
            offset += length
        f.truncate(size)
    os.replace(tmp, path)
    stats.seconds = round(time.monotonic() - start, 2)
    return stats


# -- modified -----------------------------------------------------------------------------------


def sparse_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` keeping holes (GNU cp --sparse=always)."""
    if shutil.which("cp") is None:
        raise FileNotFoundError("cp not found")
    subprocess.run(["cp", "--sparse=always", "--", str(src), str(dst)], check=True)


def modify_in_place(path: Path, fraction: float = 0.01, seed: int = 2) -> tuple[int, int]:
    """Rewrite about ``fraction`` of ``path`` (same inode) with random bytes in 4 KiB-1 MiB regions at
    page-aligned offsets. Returns (bytes written, regions). Same size + fraction + seed = same edits."""
    size = path.stat().st_size
    rng = random.Random(seed)
    budget = -(-int(size * fraction) // PAGE) * PAGE
    written = regions = 0
    with open(path, "r+b") as f:
        while written < budget:
            left = -(-(budget - written) // PAGE) * PAGE  # rounded up to a page
            length = min(rng.randrange(1, 256 + 1) * PAGE, left)
            offset = rng.randrange(0, (size - length) // PAGE + 1) * PAGE
            f.seek(offset)
            f.write(rng.randbytes(length))
            written += length
            regions += 1
    return written, regions


def make_modified(base: Path, path: Path, fraction: float = 0.01, seed: int = 2) -> ImageStats:
    """Copy ``base`` to ``path`` (sparse) and :func:`modify_in_place` the copy."""
    start = time.monotonic()
    tmp = path.with_name(path.name + ".partial")
    sparse_copy(base, tmp)
    written, regions = modify_in_place(tmp, fraction, seed)
    os.replace(tmp, path)
    return ImageStats(str(path), "modified", base.stat().st_size, seed, {"rewritten": written}, regions,
                      round(time.monotonic() - start, 2))  # fmt: skip


# -- sparse -------------------------------------------------------------------------------------


def make_sparse(path: Path, size: int = 200 * GiB, data: int = 64 * MiB, seed: int = 3) -> ImageStats:
    """A ``size``-byte file of holes with a ``data``-byte realistic image at its start, middle and end."""
    start = time.monotonic()
    if size < 3 * data:
        raise ValueError(f"sparse size {size} must be at least 3 x data ({data})")
    tmp = path.with_name(path.name + ".partial")
    piece = path.with_name(path.name + ".piece")
    inner = make_realistic(piece, data, seed)
    try:
        blob_offsets = [0, (size // 2) // PAGE * PAGE, size - data]
        with open(tmp, "wb") as out, open(piece, "rb") as src:
            for off in blob_offsets:
                src.seek(0)
                out.seek(off)
                while chunk := src.read(CHUNK):
                    if chunk.count(0) == len(chunk):
                        out.seek(len(chunk), os.SEEK_CUR)
                    else:
                        out.write(chunk)
            out.truncate(size)
    finally:
        piece.unlink(missing_ok=True)
    os.replace(tmp, path)
    data_bytes = {k: 3 * v for k, v in inner.bytes_by_kind.items() if k != "zero"}
    data_bytes["zero"] = size - sum(data_bytes.values())
    return ImageStats(str(path), "sparse", size, seed, data_bytes, 3 * inner.runs,
                      round(time.monotonic() - start, 2))  # fmt: skip


# -- CLI ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("output", type=Path, help="image file to write (replaced if it exists)")
    p.add_argument("--size", type=parse_size, help="image size (realistic: 2GiB, sparse: 200GiB)")
    p.add_argument("--seed", type=int, help="RNG seed (default 1 realistic, 2 modify, 3 sparse)")
    p.add_argument(
        "--modify", type=parse_percent, metavar="PCT",
        help="rewrite about PCT (e.g. 1%%) of a copy of --from, or of OUTPUT in place",
    )
    p.add_argument("--from", dest="base", type=Path, help="base image for --modify")
    p.add_argument("--sparse", action="store_true", help="mostly-holes image (default 200GiB)")
    p.add_argument("--data", type=parse_size, default=64 * MiB, help="--sparse: realistic data per blob")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.modify is not None and args.base is None and not args.output.is_file():
        print(f"gen_image: --modify without --from edits OUTPUT in place, and it does not exist: {args.output}",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.modify is not None and args.sparse:
        p.error("--modify and --sparse do not go together")
    if args.base is not None and not args.base.is_file():
        print(f"gen_image: base image not found: {args.base}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.modify is not None and args.base is None:
        seed = 2 if args.seed is None else args.seed
        begin = time.monotonic()
        written, regions = modify_in_place(args.output, args.modify, seed)
        stats = ImageStats(str(args.output), "modified in place", args.output.stat().st_size, seed,
                           {"rewritten": written}, regions, round(time.monotonic() - begin, 2))  # fmt: skip
    elif args.modify is not None:
        stats = make_modified(args.base, args.output, args.modify, 2 if args.seed is None else args.seed)
    elif args.sparse:
        stats = make_sparse(args.output, args.size or 200 * GiB, args.data, 3 if args.seed is None else args.seed)
    else:
        stats = make_realistic(args.output, args.size or 2 * GiB, 1 if args.seed is None else args.seed)
    if args.json:
        print(json.dumps(asdict(stats)))
    else:
        parts = ", ".join(f"{k} {v / MiB:.1f} MiB" for k, v in stats.bytes_by_kind.items())
        print(f"{stats.path}: {stats.kind}, {stats.size / MiB:.0f} MiB, {stats.runs} runs/regions ({parts}), "
              f"{stats.seconds} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
