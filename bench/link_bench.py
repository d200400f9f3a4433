"""Real-filesystem and synthetic images over a rate-limited link: ``migrated sync`` against rsync, one run.

Usage (as root)::

    python3 bench/link_bench.py                                  # 2 GiB images, 100 Mbit/s and 1 Gbit/s
    python3 bench/link_bench.py --size 512MiB --json             # JSON on stdout (table on stderr)
    python3 bench/link_bench.py --rates none,100mbit             # "none": loopback, no limit, MTU 65536

What it does:

1. Builds (or reuses, same size + seed + machine) two base images in ``--workdir``
   (default /var/tmp/migrated-bench/link): **realfs** (``bench/realfs.py``: ``mkfs.ext4 -d`` of real
   libraries, docs, incompressible blobs and logs of this machine; about 52 % used) and **synthetic**
   (``bench/gen_image.py``: 45 % holes, 35 % random, 20 % text).
2. Re-executes itself in a private network namespace (``unshare --net``; only ``lo`` inside), starts a
   real OpenSSH sshd on 127.0.0.1 there (one cipher, no SSH compression, as in ``sync_bench.py``).
3. For each rate: sets ``lo`` to MTU 1500 with ``tc qdisc replace dev lo root tbf rate RATE burst 256kb
   latency 100ms`` (a burst under the MTU would drop every packet), then for each image:

   * **full** (target absent): ``rsync --whole-file``, ``rsync -z --whole-file``, ``migrated sync``;
   * **delta** (realfs: ``realfs.apply_fs_delta`` on the source, file operations through debugfs;
     synthetic: ``gen_image.modify_in_place``): ``rsync -z --inplace --no-whole-file`` and
     ``rsync --inplace --no-whole-file`` onto a ``cp`` of the base, ``migrated sync`` onto the target
     it wrote in the full phase (known target) and onto a ``cp`` of the base with an empty state dir
     (unknown target).

Every target is hashed (xxh3-128) and compared with the source (``ok``). Wire bytes are the growth of
``lo``'s tx counter in the namespace across the row (every packet both ways, counted once, after the
qdisc): the same measure for every tool. Ratios are against every rsync row of the same image, rate and
phase; the table shows them against ``rsync -z`` (the issue-12 reference for a link).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

from bench.gen_image import GiB, MiB, make_realistic, modify_in_place, parse_size, sparse_copy  # noqa: E402
from bench.realfs import apply_fs_delta, load_manifest, make_realfs  # noqa: E402
from bench.sync_bench import (  # noqa: E402
    NETNS_ENV,
    Row,
    file_hash,
    machine_info,
    migrated_argv,
    migrated_available,
    run_measured,
    say,
    warm,
)
from tests.sshd import CIPHER, LoopbackSshd  # noqa: E402

BURST = "256kb"
LATENCY = "100ms"
REFS = {"full": "rsync -z --whole-file", "delta": "rsync -z --inplace"}
GENERATOR = {"realfs": 1, "synthetic": 1}


@dataclass
class LinkRow(Row):
    image: str = ""
    link: str = ""
    vs: dict[str, dict[str, float | None]] = field(default_factory=dict)  # rsync tool -> time / wire ratio


def set_link(rate: str) -> dict[str, object]:
    """Shape this namespace's ``lo``: ``none`` = MTU 65536, no qdisc; else MTU 1500 + tbf at ``rate``."""
    subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True, check=False)
    if rate == "none":
        subprocess.run(["ip", "link", "set", "lo", "mtu", "65536"], check=True)
        return {"rate": "none", "mtu": 65536, "qdisc": "none"}
    subprocess.run(["ip", "link", "set", "lo", "mtu", "1500"], check=True)
    qdisc = ["tbf", "rate", rate, "burst", BURST, "latency", LATENCY]
    subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", *qdisc], check=True)
    return {"rate": rate, "mtu": 1500, "qdisc": " ".join(qdisc)}


def lo_drops() -> int:
    out = subprocess.run(["tc", "-s", "qdisc", "show", "dev", "lo"], capture_output=True, text=True,
                         check=False).stdout  # fmt: skip
    words = out.replace(",", " ").replace("(", " ").split()
    return int(words[words.index("dropped") + 1]) if "dropped" in words else 0


def ensure_base(kind: str, work: Path, size: int, seed: int) -> tuple[Path, dict[str, object]]:
    """The cached base image of ``kind`` and what it holds (rebuilt when size, seed or generator differ)."""
    base = work / f"{kind}-base.img"
    meta = work / f"{kind}-base.img.json"
    want = {"size": size, "seed": seed, "generator": GENERATOR[kind]}
    if base.exists() and meta.exists() and json.loads(meta.read_text()).get("key") == want:
        return base, json.loads(meta.read_text())["contents"]
    say(f"building {base} ({size / MiB:.0f} MiB, {kind})")
    start = time.monotonic()
    if kind == "realfs":
        contents: dict[str, object] = make_realfs(base, size, seed, workdir=work).summary()
    else:
        contents = {"bytes_by_kind": make_realistic(base, size, seed).bytes_by_kind}
    contents["build_s"] = round(time.monotonic() - start, 1)
    meta.write_text(json.dumps({"key": want, "contents": contents}))
    return base, contents


def run_link_bench(args: argparse.Namespace) -> dict[str, object]:
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    tdir, logs = work / "targets", work / "logs"
    shutil.rmtree(tdir, ignore_errors=True)
    tdir.mkdir()
    logs.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    have_migrated = migrated_available(env)
    machine = machine_info()
    bases = {kind: ensure_base(kind, work, args.size, args.seed) for kind in args.images}
    for kind, (_, contents) in bases.items():
        say(f"{kind} image: {json.dumps(contents)}")
    rows: list[LinkRow] = []
    deltas: dict[str, object] = {}
    links: list[dict[str, object]] = []
    sshd = LoopbackSshd(work / "sshd", set_env={"PYTHONPATH": str(REPO)},
                        extra_config=[f"Ciphers {CIPHER}", "Compression no"])  # fmt: skip
    with sshd:
        rsh = sshd.rsync_rsh()
        remote = f"{sshd.user}@{sshd.host}"
        try:
            for rate in args.rates:
                link = set_link(rate)
                drops0 = lo_drops()
                for kind, (base, _) in bases.items():
                    src = work / f"{kind}-src.img"
                    sparse_copy(base, src)

                    def measure(phase: str, tool: str, argv: list[str] | None, target: Path, expect: str,
                                kind: str = kind, rate: str = rate) -> LinkRow:  # fmt: skip
                        row = LinkRow(phase, tool, image=kind, link=rate, source_bytes=args.size)
                        rows.append(row)
                        if argv is None:
                            row.status = "not available"
                            return row
                        row.argv = argv
                        name = f"{kind}-{rate}-{phase}-{tool}"
                        run = run_measured(name, argv, sshd=sshd, env=env, timeout=args.timeout, log_dir=logs)
                        if run.status == "ok":
                            row.verified = target.exists() and file_hash(target) == expect
                            if not row.verified:
                                run.status = "MISMATCH"
                        row.add(run)
                        say(f"{kind:9} {rate:8} {phase:5} {tool:30} {run.status}, {run.wall_s:.2f} s, "
                            f"wire {run.wire_bytes / MiB:.1f} MiB {run.error[:200]}")  # fmt: skip
                        return row

                    def rsync(*flags: str, source: Path = src) -> list[str]:
                        return ["rsync", "-I", *flags, "-e", rsh, str(source)]

                    own, own_state = tdir / f"{kind}-migrated.img", work / f"state-{kind}-own"
                    warm(src)
                    expect = file_hash(src)
                    for tool, flags in (("rsync --whole-file", ["--whole-file"]),
                                        ("rsync -z --whole-file", ["-z", "--whole-file"])):  # fmt: skip
                        t = tdir / f"{kind}-rsync.img"
                        measure("full", tool, [*rsync(*flags), f"{remote}:{t}"], t, expect)
                        t.unlink(missing_ok=True)
                    own.unlink(missing_ok=True)
                    shutil.rmtree(own_state, ignore_errors=True)
                    mig = migrated_argv(sshd, src, own, own_state) if have_migrated else None
                    full_own = measure("full", "migrated sync", mig, own, expect)

                    if kind == "realfs":
                        delta = apply_fs_delta(src, args.delta, args.seed + 1, base=load_manifest(base)).summary()
                    else:
                        written, regions = modify_in_place(src, args.delta, args.seed + 1)
                        delta = {"rewritten_bytes": written, "regions": regions}
                    deltas[kind] = delta
                    say(f"{kind} delta: {json.dumps(delta)}")
                    warm(src)
                    expect = file_hash(src)
                    for tool, flags in (("rsync -z --inplace", ["-z", "--inplace", "--no-whole-file"]),
                                        ("rsync --inplace", ["--inplace", "--no-whole-file"])):  # fmt: skip
                        t = tdir / f"{kind}-rsync.img"
                        sparse_copy(base, t)
                        measure("delta", tool, [*rsync(*flags), f"{remote}:{t}"], t, expect)
                        t.unlink(missing_ok=True)
                    ok = have_migrated and full_own.status == "ok"
                    measure("delta", "migrated sync (known target)",
                            migrated_argv(sshd, src, own, own_state) if ok else None, own, expect)  # fmt: skip
                    t, state = tdir / f"{kind}-unknown.img", work / f"state-{kind}-unknown"
                    sparse_copy(base, t)
                    shutil.rmtree(state, ignore_errors=True)
                    measure("delta", "migrated sync (unknown target)",
                            migrated_argv(sshd, src, t, state) if have_migrated else None, t, expect)  # fmt: skip
                    t.unlink(missing_ok=True)
                    own.unlink(missing_ok=True)
                link["qdisc_drops"] = lo_drops() - drops0
                links.append(link)
        finally:
            set_link("none")
    add_ratios(rows)
    shutil.rmtree(tdir, ignore_errors=True)
    machine["load_after"] = os.getloadavg()
    return {
        "size": args.size, "delta": args.delta, "seed": args.seed, "cipher": CIPHER, "rates": args.rates,
        "netns": os.environ.get(NETNS_ENV) == "1", "machine": machine, "links": links,
        "images": {kind: contents for kind, (_, contents) in bases.items()}, "deltas": deltas,
        "rows": [asdict(r) for r in rows], "targets": check_targets(rows),
    }  # fmt: skip


def add_ratios(rows: list[LinkRow]) -> None:
    """Each row against every rsync row of its image, rate and phase; ``*_vs_ref`` against :data:`REFS`."""
    for r in rows:
        if r.status != "ok":
            continue
        for ref in rows:
            same = (ref.image, ref.link, ref.phase) == (r.image, r.link, r.phase)
            if not same or not ref.tool.startswith("rsync") or ref.status != "ok" or not ref.wall_s:
                continue
            r.vs[ref.tool] = {"time": round(r.wall_s / ref.wall_s, 3),
                              "wire": round(r.wire_bytes / ref.wire_bytes, 3) if ref.wire_bytes else None}  # fmt: skip
        main = r.vs.get(REFS[r.phase])
        if main:
            r.time_vs_ref, r.wire_vs_ref = main["time"], main["wire"]


#: issue 12's targets that this bench measures: (rate, phase, tool, metric, limit)
TARGETS = [
    ("100mbit", "full", "migrated sync", "time_vs_ref", 0.9),
    ("100mbit", "full", "migrated sync", "wire_vs_ref", 0.9),
    ("100mbit", "delta", "migrated sync (known target)", "time_vs_ref", 0.8),
]


def check_targets(rows: list[LinkRow]) -> list[dict[str, object]]:
    out = []
    for rate, phase, tool, metric, limit in TARGETS:
        for r in rows:
            if (r.link, r.phase, r.tool) == (rate, phase, tool):
                value = getattr(r, metric) if r.status == "ok" else None
                text = f"{r.image} {phase} at {rate}: {tool} {metric.split('_')[0]} <= {limit}x {REFS[phase]}"
                out.append({"target": text, "value": value, "limit": limit,
                            "met": None if value is None else value <= limit})  # fmt: skip
    return out


def render(result: dict[str, object]) -> str:
    def x(v: float | None) -> str:
        return "" if v is None else f"{v:.2f}x"

    lines = [
        "| image | link | phase | tool | wall s | wire MiB | time vs rsync -z | wire vs rsync -z | time vs rsync "
        "| wire vs rsync | CPU s send / recv | ok |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    plain = {"full": "rsync --whole-file", "delta": "rsync --inplace"}
    for r in result["rows"]:  # type: ignore[union-attr]
        head = f"| {r['image']} | {r['link']} | {r['phase']} | {r['tool']} |"
        if r["status"] == "not available":
            lines.append(f"{head} not available | | | | | | | |")
            continue
        p = r["vs"].get(plain[r["phase"]], {})
        ok = "yes" if r["verified"] else r["status"]
        lines.append(f"{head} {r['wall_s']:.2f} | {r['wire_bytes'] / MiB:.1f} | {x(r['time_vs_ref'])} | "
                     f"{x(r['wire_vs_ref'])} | {x(p.get('time'))} | {x(p.get('wire'))} | "
                     f"{r['sender_cpu_s']:.2f} / {r['recv_cpu_s']:.2f} | {ok} |")  # fmt: skip
    lines += ["", "| issue-12 target | measured | met |", "|---|---:|---|"]
    for t in result["targets"]:  # type: ignore[union-attr]
        met = {None: "not measured", True: "yes", False: "NO"}[t["met"]]
        lines.append(f"| {t['target']} | {x(t['value']) or 'n/a'} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=parse_size, default=2 * GiB, help="size of both images (default 2GiB)")
    p.add_argument("--delta", type=float, default=0.01,
                   help="realfs: fraction of file bytes changed; synthetic: of the image (default 0.01)")  # fmt: skip
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rates", type=lambda s: s.split(","), default=["100mbit", "1gbit"],
                   help="comma-separated tc rates, 'none' for unlimited loopback (default 100mbit,1gbit)")  # fmt: skip
    p.add_argument("--images", type=lambda s: s.split(","), default=["realfs", "synthetic"])
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp/migrated-bench/link"))
    p.add_argument("--timeout", type=float, default=1800, help="per-row timeout in seconds")
    p.add_argument("--json", action="store_true", help="JSON result on stdout (table on stderr)")
    p.add_argument("--render", type=Path, metavar="RESULTS_JSON", help="only print the table of a saved run")
    args = p.parse_args(argv)
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return 0
    if bad := [k for k in args.images if k not in GENERATOR]:
        p.error(f"unknown image kind(s): {bad} (realfs, synthetic)")
    if os.geteuid() != 0:
        print("link_bench: run as root (sshd, tc and a network namespace)", file=sys.stderr)
        return 2
    if os.environ.get(NETNS_ENV) != "1":
        os.environ[NETNS_ENV] = "1"
        script = [sys.executable, str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv)]
        os.execvp("unshare", ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                              *script])  # fmt: skip
    result = run_link_bench(args)
    table = render(result)
    (args.workdir / "results.json").write_text(json.dumps(result, indent=2))
    (args.workdir / "results.md").write_text(table + "\n")
    print(table, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result, indent=2))
    ok = all(r["status"] in ("ok", "not available") for r in result["rows"])  # type: ignore[union-attr]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
