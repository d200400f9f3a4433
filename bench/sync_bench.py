"""Side-by-side benchmark: ``migrated sync`` against rsync and a raw ``cat | ssh``, in one run.

Usage (as root; takes a few minutes at 2 GiB)::

    python3 bench/sync_bench.py                      # 2 GiB image, table on stdout
    python3 bench/sync_bench.py --size 512MiB --json # JSON on stdout (the table goes to stderr)

What it does, in order:

1. Generates ``base.img`` (realistic, ``--size``) in ``--workdir`` (default /var/tmp/migrated-bench),
   reused when it is already there with the same size and seed; copies it to ``src.img``.
2. Starts a real OpenSSH sshd on 127.0.0.1 (``tests/sshd.py``) that accepts only one cipher
   (aes128-gcm@openssh.com) and no SSH compression, so every tool pays the same transport.
3. **full** phase (source = base content, target absent): ``rsync --whole-file`` (the reference),
   ``cat src | ssh host 'cat > f'``, ``migrated sync`` to an empty target.
4. Rewrites about 1 % of ``src.img`` in place (``gen_image.modify_in_place``; same inode, as a disk
   changes between two syncs).
5. **delta** phase: ``rsync --inplace --no-whole-file`` onto a ``cp`` of base (the reference),
   ``migrated sync`` onto the target it wrote in step 3 (its checkpoint says what the target holds),
   and ``migrated sync`` onto a ``cp`` of base with an empty state dir (unknown target: it must ask the
   target for hashes).
6. **sparse** phase (``--sparse-size``, default 200GiB; ``--no-sparse`` skips): ``migrated sync`` of a
   mostly-holes image to an empty target, for peak RSS against source size.

Every target is hashed (xxh3-128) after its row and compared with the source: the ``ok`` column.
``migrated`` rows are skipped ("not available") while ``python3 -m migrated.cli.main sync`` does not
exist in this checkout.

How it measures (the same for every tool):

* **wall**: from spawning the command until it exits; warm page cache (the source is read once before
  each phase), ``sync`` before each row so one row's writeback does not land in the next.
* **wire**: the whole benchmark runs in a private network namespace (``unshare --net``; it re-executes
  itself there), so the loopback interface carries nothing but this benchmark's SSH connections.
  ``wire`` = growth of ``lo``'s tx byte counter in ``/proc/net/dev`` across the row: every byte of
  every packet in both directions (SSH framing, encryption, TCP/IP headers), counted once.
  ``--no-netns`` measures in the host namespace instead (then other loopback traffic is counted too).
* **sender RSS**: the sum of VmRSS over the command's whole process tree (e.g. rsync + ssh, or bash +
  cat + ssh), sampled every 0.1 s, peak; ``maxrss`` is the kernel's exact peak of the largest single
  process (GNU ``time -f %M``, i.e. ru_maxrss; a wrapper so that the RSS of this Python process from
  before exec does not count). **recv RSS**: the same sampled sum over the sshd session tree
  (sshd session processes + the remote rsync / cat / receiver).
* **sender CPU**: user + system seconds of the command's process tree (GNU ``time`` %U + %S): much less
  sensitive than wall time to other load on a shared machine.
* **recv CPU**: user + system seconds of the sshd session tree (sampled: the last value seen per
  process, so up to 0.1 s per process may be missed).
* ``--repeat N``: every row runs N times (interleaved); the table shows the median wall time, wire bytes
  and CPU with the wall-time range, and the peak RSS over all runs. Every run is in the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: python3 bench/sync_bench.py
    sys.path.insert(0, str(REPO))

from bench.gen_image import GiB, MiB, make_realistic, make_sparse, modify_in_place, parse_size, sparse_copy  # noqa: E402
from tests.sshd import CIPHER, LoopbackSshd  # noqa: E402

NETNS_ENV = "MIGRATED_BENCH_IN_NETNS"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# -- measuring ---------------------------------------------------------------------------------


def lo_tx_bytes() -> int:
    """Bytes sent on the loopback interface of this process's network namespace."""
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            return int(rest.split()[8])
    raise RuntimeError("no lo interface in /proc/net/dev")


def _ppid_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class TreeRssSampler(threading.Thread):
    """Peak of the summed RSS of the descendants of each root pid (root included iff asked), and the CPU
    seconds those processes used (last value seen per process: up to one interval per process is lost)."""

    def __init__(self, roots: dict[str, tuple[int, bool]], interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.interval = interval
        self.peaks = dict.fromkeys(roots, 0)
        self._ticks: dict[str, dict[int, int]] = {name: {} for name in roots}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def sample(self) -> None:
        children = _ppid_map()
        for name, (root, include_root) in self.roots.items():
            pids, todo = [], list(children.get(root, []))
            while todo:
                pid = todo.pop()
                pids.append(pid)
                todo.extend(children.get(pid, []))
            if include_root:
                pids.append(root)
            self.peaks[name] = max(self.peaks[name], sum(_rss(p) for p in pids))
            ticks = self._ticks[name]
            for p in pids:
                ticks[p] = max(ticks.get(p, 0), _cpu_ticks(p))

    def cpu_seconds(self, name: str) -> float:
        return round(sum(self._ticks[name].values()) / CLOCK_TICKS, 2)

    def stop(self) -> dict[str, int]:
        self._halt.set()
        self.join()
        return self.peaks


@dataclass
class Run:
    """One measured execution of a command."""

    wall_s: float = 0.0
    wire_bytes: int = 0
    sender_rss: int = 0
    sender_maxrss: int = 0
    sender_cpu_s: float = 0.0
    recv_rss: int = 0
    recv_cpu_s: float = 0.0
    status: str = "ok"
    error: str = ""
    tool_report: dict | None = None


@dataclass
class Row:
    """One tool in one phase; with ``--repeat N``: median wall and wire over its runs, peak RSS over all."""

    phase: str
    tool: str
    status: str = "ok"  # ok | not available | FAILED ... | MISMATCH
    wall_s: float = 0.0
    wire_bytes: int = 0
    sender_rss: int = 0
    sender_maxrss: int = 0
    sender_cpu_s: float = 0.0
    recv_rss: int = 0
    recv_cpu_s: float = 0.0
    source_bytes: int = 0
    verified: bool = False
    time_vs_ref: float | None = None
    wire_vs_ref: float | None = None
    cpu_vs_ref: float | None = None  # (sender + receiver CPU) / the same for rsync: robust to machine load
    argv: list[str] = field(default_factory=list)
    tool_report: dict | None = None
    error: str = ""
    runs: list[Run] = field(default_factory=list)

    def add(self, run: Run) -> None:
        self.runs.append(run)
        if run.status != "ok" and self.status == "ok":
            self.status, self.error = run.status, run.error
        ok = [r for r in self.runs if r.status == "ok"] or self.runs
        self.wall_s = statistics.median(r.wall_s for r in ok)
        self.wire_bytes = int(statistics.median(r.wire_bytes for r in ok))
        self.sender_rss = max(r.sender_rss for r in self.runs)
        self.sender_maxrss = max(r.sender_maxrss for r in self.runs)
        self.sender_cpu_s = statistics.median(r.sender_cpu_s for r in ok)
        self.recv_cpu_s = statistics.median(r.recv_cpu_s for r in ok)
        self.recv_rss = max(r.recv_rss for r in self.runs)
        self.tool_report = run.tool_report


def _parse_report(stdout: str) -> dict | None:
    """The tool's ``--json`` summary: all of stdout, or else its last line that parses as an object."""
    for text in (stdout, *reversed(stdout.strip().splitlines())):
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def run_measured(name: str, argv: list[str], *, sshd: LoopbackSshd, env: dict[str, str], timeout: float,
                 log_dir: Path, guard: Callable[[], str | None] | None = None) -> Run:  # fmt: skip
    """Run ``argv`` and measure it (see the module docstring). A non-zero exit gives status FAILED.

    ``guard`` is polled twice a second; when it returns a message the command's process group is killed
    (used to stop a run that fills the disk).
    """
    run = Run()
    stem = log_dir / name.replace(" ", "_").replace("|", "").replace("/", "").replace("(", "").replace(")", "")
    out_path, err_path, time_out = (stem.with_suffix(x) for x in (".out", ".err", ".maxrss"))
    os.sync()
    wire0 = lo_tx_bytes()
    start = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        # GNU time reports the exact kernel peak RSS (ru_maxrss) of the largest process in the tree; the
        # wait4 rusage of our own child would include the RSS of this Python process from before exec.
        argv = ["/usr/bin/time", "-f", "%M %U %S", "-o", str(time_out), *argv]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                start_new_session=True)  # fmt: skip
        assert sshd.pid is not None
        sampler = TreeRssSampler({"sender": (proc.pid, False), "recv": (sshd.pid, False)})  # not: time itself
        sampler.start()
        next_guard = start + 0.5
        while True:
            try:
                status = proc.wait(timeout=0.02)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            problem = f"timed out after {timeout:.0f} s" if now > start + timeout else None
            if problem is None and guard is not None and now > next_guard:
                next_guard = now + 0.5
                problem = guard()
            if problem:
                run.error = problem
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                status = -9
                break
    run.wall_s = round(time.monotonic() - start, 3)
    peaks = sampler.stop()
    time.sleep(0.2)  # let the TCP teardown finish
    run.wire_bytes = lo_tx_bytes() - wire0
    run.sender_rss, run.recv_rss = peaks["sender"], peaks["recv"]
    run.recv_cpu_s = sampler.cpu_seconds("recv")
    try:
        maxrss_kib, user_s, sys_s = time_out.read_text().split()[-3:]
        run.sender_maxrss = int(maxrss_kib) * 1024
        run.sender_cpu_s = round(float(user_s) + float(sys_s), 2)
    except (OSError, ValueError):
        pass
    if status != 0:
        run.status = f"FAILED rc={status}"
        run.error = (run.error + " " + err_path.read_text(errors="replace")[-600:]).strip()
    run.tool_report = _parse_report(out_path.read_text(errors="replace"))
    return run


def file_hash(path: Path) -> str:
    import xxhash

    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(8 * MiB):
            pass


# -- the benchmark -----------------------------------------------------------------------------


def migrated_available(env: dict[str, str]) -> bool:
    run = subprocess.run([sys.executable, "-m", "migrated.cli.main", "sync", "--help"], env=env,
                         capture_output=True, text=True, check=False)  # fmt: skip
    return run.returncode == 0 and "--state-dir" in run.stdout


def migrated_argv(sshd: LoopbackSshd, src: Path, target: Path, state_dir: Path) -> list[str]:
    return [sys.executable, "-m", "migrated.cli.main", "sync", "--identity", str(sshd.client_key),
            "--known-hosts", str(sshd.known_hosts), "--state-dir", str(state_dir), "--json", "--quiet",
            str(src), sshd.target(str(target))]  # fmt: skip


def git_commit() -> str:
    """The checkout's commit (with "+dirty" when it has uncommitted changes): which engine was measured."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine_info() -> dict[str, object]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024

    def version(argv: list[str]) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, check=False)
        except OSError:
            return "?"
        return (r.stdout or r.stderr).splitlines()[0].strip() if (r.stdout or r.stderr) else "?"

    return {
        "cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem / GiB, 1), "kernel": platform.release(),
        "python": platform.python_version(), "rsync": version(["rsync", "--version"]),
        "ssh": version(["ssh", "-V"]), "load_before": os.getloadavg(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": git_commit(),
    }  # fmt: skip


def run_bench(args: argparse.Namespace) -> dict[str, object]:
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    tdir = work / "target"
    for d in (logs, tdir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    have_migrated = migrated_available(env)
    say(f"migrated sync available: {have_migrated}")
    machine = machine_info()

    base, src = work / "base.img", work / "src.img"
    meta = work / "base.img.json"
    want = {"size": args.size, "seed": args.seed, "generator": 1}
    if not base.exists() or not meta.exists() or json.loads(meta.read_text()) != want:
        say(f"generating {base} ({args.size / MiB:.0f} MiB)")
        make_realistic(base, args.size, args.seed)
        meta.write_text(json.dumps(want))
    sparse_copy(base, src)
    size = src.stat().st_size

    def make_delta_source() -> str:
        """Edit src (already holding base's content) in place; returns the new content's hash."""
        written, regions = modify_in_place(src, args.modify, args.seed + 1)
        say(f"modified {written / MiB:.1f} MiB of the source in {regions} regions")
        warm(src)
        return file_hash(src)

    rows: dict[tuple[str, str], Row] = {}
    sshd = LoopbackSshd(
        work / "sshd",
        set_env={"PYTHONPATH": str(REPO)},  # a receiver started as python3 -m ... runs this checkout
        extra_config=[f"Ciphers {CIPHER}", "Compression no"],
    )
    with sshd:
        rsh = sshd.rsync_rsh()
        ssh_cmd = shlex.join(sshd.ssh_argv())
        remote = f"{sshd.user}@{sshd.host}"
        own_target, own_state = tdir / "migrated.img", work / "state-own"

        def measure(phase: str, tool: str, argv: list[str] | None, target: Path, expect: str | None,
                    rep: int, source_size: int = size, guard: Callable[[], str | None] | None = None,
                    skip_reason: str = "not available") -> Row:
            """Run one row once; ``expect`` is the source's hash, or None to check only the target's size.
            ``argv`` None: the row is skipped with ``skip_reason``."""
            r = rows.setdefault((phase, tool), Row(phase, tool, source_bytes=source_size))
            if argv is None:
                r.status = skip_reason
                say(f"{phase:6} {tool:28} {skip_reason}")
                return r
            r.argv = argv
            run = run_measured(f"{phase}-{tool}-{rep}", argv, sshd=sshd, env=env, timeout=args.timeout,
                               log_dir=logs, guard=guard)  # fmt: skip
            if run.status == "ok":
                if expect is None:
                    ok = target.exists() and target.stat().st_size == source_size
                else:
                    ok = target.exists() and file_hash(target) == expect
                r.verified = ok if not r.runs else (r.verified and ok)
                if not ok:
                    run.status = "MISMATCH"
            r.add(run)
            say(f"{phase:6} {tool:28} {run.status}, {run.wall_s:.2f} s, wire {run.wire_bytes / MiB:.1f} MiB, "
                f"sender RSS {run.sender_rss / MiB:.0f} MiB {run.error[:200]}")  # fmt: skip
            return r

        def mig(source: Path, target: Path, state: Path) -> list[str] | None:
            return migrated_argv(sshd, source, target, state) if have_migrated else None

        # -- full: target absent -----------------------------------------------------------------
        warm(src)
        expect = file_hash(src)
        for rep in range(args.repeat):
            t = tdir / "rsync-whole.img"
            measure("full", "rsync --whole-file", ["rsync", "-I", "--whole-file", "-e", rsh, str(src),
                                                   f"{remote}:{t}"], t, expect, rep)  # fmt: skip
            t.unlink(missing_ok=True)
            t = tdir / "cat.img"
            pipeline = f"cat {shlex.quote(str(src))} | {ssh_cmd} {shlex.quote('cat > ' + shlex.quote(str(t)))}"
            measure("full", "cat | ssh cat", ["bash", "-c", pipeline], t, expect, rep)
            t.unlink(missing_ok=True)
            own_target.unlink(missing_ok=True)
            shutil.rmtree(own_state, ignore_errors=True)
            full_own = measure("full", "migrated sync", mig(src, own_target, own_state), own_target, expect, rep)

        # -- delta: about 1 % of the source rewritten in place ----------------------------------
        expect = make_delta_source()
        for rep in range(args.repeat):
            t = tdir / "rsync-inplace.img"
            sparse_copy(base, t)
            measure("delta", "rsync --inplace", ["rsync", "-I", "--inplace", "--no-whole-file", "-e", rsh,
                                                 str(src), f"{remote}:{t}"], t, expect, rep)  # fmt: skip
            t.unlink()
            own_ok = have_migrated and full_own.status == "ok"
            if own_ok and rep > 0:
                # put the own target back to "synced from base" (untimed): source back to base, sync,
                # then the same edit again: exactly the state the first repetition started from
                say("resetting the own target to the base content (untimed)")
                sparse_copy(base, src)
                reset = run_measured(f"delta-reset-{rep}", migrated_argv(sshd, src, own_target, own_state),
                                     sshd=sshd, env=env, timeout=args.timeout, log_dir=logs)  # fmt: skip
                own_ok = reset.status == "ok"
                expect = make_delta_source()
            measure("delta", "migrated sync (own target)", mig(src, own_target, own_state) if own_ok else None,
                    own_target, expect, rep,
                    skip_reason="not available" if not have_migrated else "skipped: its full copy failed")
            t = tdir / "migrated-unknown.img"
            sparse_copy(base, t)
            unknown_state = work / "state-unknown"
            shutil.rmtree(unknown_state, ignore_errors=True)
            measure("delta", "migrated sync (unknown tgt)", mig(src, t, unknown_state), t, expect, rep)
            t.unlink(missing_ok=True)

        # -- sparse: a huge, mostly-holes source (RSS must not grow with the disk) ----------------
        if args.sparse_size:
            huge = work / "sparse.img"
            if not huge.exists() or huge.stat().st_size != args.sparse_size:
                say(f"generating {huge} ({args.sparse_size / GiB:.0f} GiB sparse)")
                make_sparse(huge, args.sparse_size)
            t = tdir / "sparse.img"
            sparse_state = work / "state-sparse"
            shutil.rmtree(sparse_state, ignore_errors=True)
            # hashing 200 GiB (mostly holes) takes minutes: by default only the size is checked
            expect = file_hash(huge) if have_migrated and args.verify_sparse else None
            allowed = huge.stat().st_blocks * 512 + 2 * GiB

            def disk_guard() -> str | None:
                used = t.stat().st_blocks * 512 if t.exists() else 0
                if used > allowed:
                    return f"target allocated {used / GiB:.1f} GiB (holes written as data?): stopped"
                return None

            measure("sparse", "migrated sync", mig(huge, t, sparse_state), t, expect, 0,
                    source_size=args.sparse_size, guard=disk_guard)  # fmt: skip
            t.unlink(missing_ok=True)

    ordered = list(rows.values())
    for r in ordered:  # ratios against rsync in the same phase
        ref = rows.get((r.phase, "rsync --whole-file" if r.phase == "full" else "rsync --inplace"))
        if ref and ref.status == "ok" and r.status == "ok" and ref.wall_s > 0:
            r.time_vs_ref = round(r.wall_s / ref.wall_s, 3)
            r.wire_vs_ref = round(r.wire_bytes / ref.wire_bytes, 3) if ref.wire_bytes else None
            ref_cpu = ref.sender_cpu_s + ref.recv_cpu_s
            r.cpu_vs_ref = round((r.sender_cpu_s + r.recv_cpu_s) / ref_cpu, 3) if ref_cpu else None
    shutil.rmtree(tdir, ignore_errors=True)
    machine["load_after"] = os.getloadavg()
    return {
        "size": args.size, "modify": args.modify, "repeat": args.repeat, "cipher": CIPHER,
        "netns": os.environ.get(NETNS_ENV) == "1", "machine": machine,
        "rows": [asdict(r) for r in ordered],
        "targets": check_targets(ordered, size=args.size, sparse=args.sparse_size),
    }  # fmt: skip


TARGETS = [
    # (phase, tool, metric, limit, description)
    ("full", "migrated sync", "time_vs_ref", 0.6, "full copy <= 0.6x rsync --whole-file"),
    ("delta", "migrated sync (own target)", "time_vs_ref", 0.5, "delta onto own target <= 0.5x rsync --inplace"),
    ("delta", "migrated sync (unknown tgt)", "time_vs_ref", 1.0, "delta onto unknown target <= 1.0x rsync --inplace"),
    ("delta", "migrated sync (own target)", "wire_vs_ref", 1.5, "delta wire bytes (own) <= 1.5x rsync"),
    ("delta", "migrated sync (unknown tgt)", "wire_vs_ref", 1.5, "delta wire bytes (unknown) <= 1.5x rsync"),
    ("full", "migrated sync", "sender_rss", 150e6, "peak RSS <= 150 MB (full copy, {size})"),
    ("sparse", "migrated sync", "sender_rss", 150e6, "peak RSS <= 150 MB (sparse {sparse})"),
]


def _gib(n: int) -> str:
    return f"{n / GiB:g} GiB" if n >= GiB else f"{n / MiB:g} MiB"


def check_targets(rows: list[Row], *, size: int, sparse: int) -> list[dict[str, object]]:
    out = []
    for phase, tool, metric, limit, text in TARGETS:
        r = next((x for x in rows if x.phase == phase and x.tool == tool), None)
        value = getattr(r, metric) if r and r.status == "ok" else None
        text = text.format(size=_gib(size), sparse=_gib(sparse))
        out.append({"target": text, "value": value, "limit": limit,
                    "met": None if value is None else value <= limit})  # fmt: skip
    return out


def recompute(result: dict[str, object]) -> dict[str, object]:
    """Fill ratios that an older results.json lacks (from its own numbers)."""
    rows = {(r["phase"], r["tool"]): r for r in result["rows"]}  # type: ignore[union-attr]
    for r in rows.values():
        ref = rows.get((r["phase"], "rsync --whole-file" if r["phase"] == "full" else "rsync --inplace"))
        if r.get("cpu_vs_ref") is None and ref and r["status"] == "ok" and ref["status"] == "ok":
            ref_cpu = ref["sender_cpu_s"] + ref.get("recv_cpu_s", 0)
            if ref_cpu:
                r["cpu_vs_ref"] = round((r["sender_cpu_s"] + r.get("recv_cpu_s", 0)) / ref_cpu, 3)
    return result


def render(result: dict[str, object]) -> str:
    def mib(b: int) -> str:
        return f"{b / MiB:.1f}"

    def x(v: float | None) -> str:
        return "" if v is None else f"{v:.2f}x"

    lines = [
        "| phase | tool | wall s (range) | MB/s | wire MiB | time vs rsync | wire vs rsync | CPU s send / recv "
        "| CPU vs rsync | sender RSS MiB (1 proc) | recv RSS MiB | ok |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["rows"]:  # type: ignore[union-attr]
        tool = r["tool"].replace("|", "\\|")
        if r["status"] == "not available" or r["status"].startswith("skipped"):
            lines.append(f"| {r['phase']} | {tool} | {r['status']} | | | | | | | | | |")
            continue
        rate = r["source_bytes"] / r["wall_s"] / 1e6 if r["wall_s"] else 0
        walls = [run["wall_s"] for run in r["runs"]]
        spread = f" ({min(walls):.2f}-{max(walls):.2f})" if len(walls) > 1 else ""
        ok = "yes" if r["verified"] else r["status"]
        lines.append(
            f"| {r['phase']} | {tool} | {r['wall_s']:.2f}{spread} | {rate:.0f} | {mib(r['wire_bytes'])} | "
            f"{x(r['time_vs_ref'])} | {x(r['wire_vs_ref'])} | {r['sender_cpu_s']:.2f} / {r.get('recv_cpu_s', 0):.2f} | "
            f"{x(r.get('cpu_vs_ref'))} | "
            f"{mib(r['sender_rss'])} ({mib(r['sender_maxrss'])}) | {mib(r['recv_rss'])} | {ok} |"
        )
    lines += ["", "| issue-2 target | measured | met |", "|---|---:|---|"]
    for t in result["targets"]:  # type: ignore[union-attr]
        v = t["value"]
        shown = "n/a" if v is None else (f"{v / 1e6:.0f} MB" if t["limit"] > 1000 else f"{v:.2f}x")
        met = {None: "not measured", True: "yes", False: "NO"}[t["met"]]
        lines.append(f"| {t['target']} | {shown} | {met} |")
    return "\n".join(lines)


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=parse_size, default=2 * GiB, help="realistic image size (default 2GiB)")
    p.add_argument("--modify", type=float, default=0.01, help="fraction rewritten for the delta (default 0.01)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp/migrated-bench"))
    p.add_argument("--sparse-size", type=parse_size, default=200 * GiB, help="sparse source size (default 200GiB)")
    p.add_argument("--no-sparse", dest="sparse_size", action="store_const", const=0, help="skip the sparse row")
    p.add_argument("--verify-sparse", action="store_true", help="hash the whole sparse target (slow)")
    p.add_argument("--repeat", type=int, default=1, help="runs per row; the table shows medians (default 1)")
    p.add_argument("--timeout", type=float, default=1800, help="per-row timeout in seconds")
    p.add_argument("--no-netns", action="store_true", help="do not enter a private network namespace")
    p.add_argument("--json", action="store_true", help="JSON result on stdout (table on stderr)")
    p.add_argument("--render", type=Path, metavar="RESULTS_JSON", help="only print the table of a saved run")
    args = p.parse_args(argv)
    if args.render:
        print(render(recompute(json.loads(args.render.read_text()))))
        return 0
    if os.geteuid() != 0:
        print("sync_bench: run as root (sshd needs /run/sshd and privilege separation)", file=sys.stderr)
        return 2
    if not args.no_netns and os.environ.get(NETNS_ENV) != "1":
        if shutil.which("unshare") is None:
            print("sync_bench: unshare not found (util-linux); use --no-netns", file=sys.stderr)
            return 2
        os.environ[NETNS_ENV] = "1"
        script = [sys.executable, str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv)]
        os.execvp("unshare", ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                              *script])  # fmt: skip
    result = run_bench(args)
    table = render(result)
    (args.workdir / "results.json").write_text(json.dumps(result, indent=2))
    (args.workdir / "results.md").write_text(table + "\n")
    if args.json:
        print(table, file=sys.stderr)
        print(json.dumps(result, indent=2))
    else:
        print(table)
    say(f"results in {args.workdir / 'results.json'} and results.md")
    return 0 if all(r["status"] == "ok" or r["status"] == "not available" for r in result["rows"]) else 1  # type: ignore[union-attr]


if __name__ == "__main__":
    raise SystemExit(main())
