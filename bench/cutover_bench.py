"""Cutover benchmark: a live 2 GiB ext4, incremental rounds, then a frozen final pass.

Usage (as root; a few minutes)::

    python3 bench/cutover_bench.py                          # 2 GiB, 3 rounds 15 s apart, markdown on stdout
    python3 bench/cutover_bench.py --size 512MiB --json     # JSON on stdout

What it does:

1. Makes a ``--size`` image in ``--workdir`` (default /var/tmp/migrated-cutover-bench), attaches it to
   a loop device, ``mkfs.ext4``, mounts it and fills it to ``--fill`` (default 40 %) with files
   (half random, half text).
2. Starts a writer process that changes about ``--change-rate`` (default 1 %) of the disk per minute:
   rewrites 256 KiB pieces of random files (fsync every few), creates and deletes small files.
3. Starts a real OpenSSH sshd on 127.0.0.1 (tests/sshd.py, aes128-gcm only) and runs
   ``migrated sync --continuous /dev/loopN 127.0.0.1:PORT:target.img --interval I --cutover-after R
   --json``: the full pass, R incremental rounds, the cutover (freeze of the mounted ext4, final pass,
   thaw, verification of every target block).
4. Reports each round (duration, bytes changed, bytes sent) and the cutover (downtime = freeze
   duration, final pass bytes), then checks the target: ``e2fsck -fn`` clean.

Cleans up (thaw, umount, losetup -d, sshd stop) even on failure. The image is kept for the next run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.sshd import CIPHER, LoopbackSshd  # noqa: E402

MiB = 1024 * 1024

WRITER = r"""
import os, random, sys, time
root, rate, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])   # rate: bytes/s
rng = random.Random(seed)
files = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(root, "fill")) for f in fs]
piece = 256 * 1024
n = 0
while True:
    t0 = time.monotonic()
    path = rng.choice(files)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(rng.randrange(0, max(1, size - piece)))
        f.write(rng.randbytes(piece))
        n += 1
        if n % 4 == 0:
            f.flush(); os.fsync(f.fileno())
    if n % 8 == 0:  # small files come and go
        small = os.path.join(root, "small", f"s{rng.randrange(64)}")
        if os.path.exists(small):
            os.unlink(small)
        else:
            with open(small, "wb") as f:
                f.write(rng.randbytes(rng.randrange(1, 16384)))
    time.sleep(max(0.0, piece / rate - (time.monotonic() - t0)))
"""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def say(msg: str) -> None:
    print(f"cutover_bench: {msg}", file=sys.stderr, flush=True)


def fill(root: Path, nbytes: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    (root / "fill").mkdir(exist_ok=True)
    (root / "small").mkdir(exist_ok=True)
    text = b"".join(rng.choice([b"lorem ", b"ipsum ", b"dolor ", b"sit ", b"amet\n", b"migrated "])
                    for _ in range(1 << 20))
    done, i = 0, 0
    while done < nbytes:
        size = min(nbytes - done, rng.randint(1, 16) * MiB)
        data = rng.randbytes(size) if i % 2 else (text * (size // len(text) + 1))[:size]
        (root / "fill" / f"f{i:04d}").write_bytes(data)
        done += size
        i += 1
    os.sync()


def parse_size(text: str) -> int:
    from migrated.model.plan import parse_size as ps

    return ps(text)


def run(args: argparse.Namespace) -> dict:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    size = parse_size(args.size)
    image, mnt, target = work / "src.img", work / "src.mnt", work / "target.img"
    mnt.mkdir(exist_ok=True)
    state = work / "state"
    for p in (target,):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    sh("rm", "-rf", str(state))
    with open(image, "wb") as f:
        f.truncate(0)
        f.truncate(size)
    loop = sh("losetup", "-f", "--show", str(image)).stdout.strip()
    mounted = False
    writer = None
    try:
        sh("mkfs.ext4", "-q", "-F", loop)
        sh("mount", loop, str(mnt))
        mounted = True
        say(f"filling {args.fill:.0f} % of {args.size} on {loop}")
        fill(mnt, int(size * args.fill / 100))
        rate = size * args.change_rate / 100 / 60
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(mnt), str(rate), "5"])
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with LoopbackSshd(work / "sshd", set_env={"PYTHONPATH": str(REPO)}, extra_config=[f"Ciphers {CIPHER}"]) as srv:
            argv = [sys.executable, "-m", "migrated.cli.main", "sync", "--identity", str(srv.client_key),
                    "--known-hosts", str(srv.known_hosts), "--state-dir", str(state), "--json",
                    loop, srv.target(str(target)), "--continuous", "--interval", str(args.interval),
                    "--cutover-after", str(args.rounds), "--freeze-budget", str(args.freeze_budget)]
            say(f"writer changes {rate / 1e6:.2f} MB/s ({args.change_rate} %/min); running: {' '.join(argv[2:])}")
            t0 = time.monotonic()
            p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600)
            wall = time.monotonic() - t0
            sys.stderr.write(p.stderr)
            if p.returncode != 0:
                raise SystemExit(f"migrated sync failed with {p.returncode}")
            result = json.loads(p.stdout.strip().splitlines()[-1])
        writable = subprocess.run([sys.executable, "-c", f"open({str(mnt / 'after')!r}, 'w').write('x')"],
                                  timeout=30).returncode == 0
    finally:
        if writer is not None:
            writer.kill()
            writer.wait()
        if mounted:
            sh("fsfreeze", "-u", str(mnt), check=False)
            sh("umount", str(mnt), check=False)
        sh("losetup", "-d", loop, check=False)
    fsck = sh("e2fsck", "-fn", str(target), check=False)
    target.unlink()
    return {"size": size, "fill_percent": args.fill, "change_rate_percent_per_min": args.change_rate,
            "interval": args.interval, "wall_seconds": round(wall, 1), "source_writable_after": writable,
            "fsck_clean": fsck.returncode == 0, "result": result}


def render(r: dict) -> str:
    res = r["result"]
    rows = ["| round | seconds | changed MiB | sent MiB |", "|---|---|---|---|"]
    for rd in res["rounds"]:
        name = "full pass" if rd["index"] == 0 else str(rd["index"])
        rows.append(f"| {name} | {rd['duration']:.1f} | {rd['bytes_changed'] / MiB:.1f} | "
                    f"{rd['bytes_sent'] / MiB:.1f} |")
    c = res["cutover"]
    rows.append(f"| **final (frozen)** | {c['final_seconds']:.2f} | {c['final_changed'] / MiB:.1f} | "
                f"{c['final_sent'] / MiB:.1f} |")
    s = res["summary"] or {}
    lines = [
        f"Disk {r['size'] / MiB / 1024:.1f} GiB ext4, {r['fill_percent']:.0f} % full, writer changing "
        f"{r['change_rate_percent_per_min']} %/min, rounds {r['interval']} s apart.",
        "",
        *rows,
        "",
        f"- **downtime (freeze) {c['downtime']:.2f} s**, {c['attempts']} attempt(s); target verified: "
        f"{c['verified']} ({c['blocks_verified']} blocks); e2fsck -fn clean: {r['fsck_clean']}; "
        f"source writable right after: {r['source_writable_after']}",
        f"- last forecast before the cutover: {s.get('forecast_final') or 0:.2f} s ({s.get('message', '')})",
        f"- wall time of the whole run: {r['wall_seconds']} s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="2GiB")
    p.add_argument("--fill", type=float, default=40.0, help="percent of the disk filled with files")
    p.add_argument("--change-rate", type=float, default=1.0, help="percent of the disk changed per minute")
    p.add_argument("--interval", type=float, default=15.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--freeze-budget", type=float, default=30.0)
    p.add_argument("--workdir", default="/var/tmp/migrated-cutover-bench")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("run as root (loop devices, mount, freeze, sshd)")
    r = run(args)
    print(json.dumps(r) if args.json else render(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
