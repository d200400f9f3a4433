#!/usr/bin/env python3
"""Benchmark: N simulated agents (heartbeat + long-poll each) against one console process.

Starts ``migrate-console serve`` as a separate process on loopback with a fresh SQLite
file, registers N sources with one agent key, lets every agent heartbeat (interval as
configured, first beat jittered) and hold a PollCommands long-poll, then queues start
commands for a sample of sources at a steady rate and measures command delivery
latency: from just before the admin's StartTask request is sent to the moment the
agent's poll reply carrying that command is received (same process, same clock; it
includes the admin call, the durable commit and the wake-up).

Reports p50/p99/max delivery latency, the console's CPU (share of one core, from
/proc over the measurement window) and RSS, and the agents' error count::

    python3 bench/console_longpoll.py --agents 500 2000 [--commands 200] [--rate 10] [--json]

Not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from migrated.console.client import ConsoleClient  # noqa: E402
from migrated.errors import MigratedError  # noqa: E402

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
CLK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime


def cpu_pressure() -> float | None:
    """The machine's CPU pressure (PSI 'some' avg10, %): how often something waited for a CPU."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return float(line.split("avg10=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def _hist(text: str, name: str, le: float) -> tuple[int, int]:
    total = re.search(rf"^{name}_count (\S+)$", text, re.M)
    under = re.search(rf'^{name}_bucket{{le="{le}"}} (\S+)$', text, re.M)
    if not total or not under:
        return 0, 0
    n = int(float(total.group(1)))
    return n - int(float(under.group(1))), n


def hist_over(before: str, after: str, name: str, le: float) -> str:
    """'k of n': observations of a Prometheus histogram above the bucket ``le`` between two scrapes."""
    k0, n0 = _hist(before, name, le)
    k1, n1 = _hist(after, name, le)
    return f"{k1 - k0} of {n1 - n0}"


class Console:
    def __init__(self, workdir: Path, heartbeat: float) -> None:
        self.workdir = workdir
        self.config = workdir / "console.yaml"
        self.config.write_text(yaml.safe_dump({
            "listen": {"host": "127.0.0.1", "port": 0},
            "storage": {"path": str(workdir / "console.db")},
            "agents": {"heartbeat_interval_seconds": heartbeat},
            "log": {"level": "warning", "format": "json"},
        }))
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.env = env
        creds = workdir / "admin.yaml"
        subprocess.run([sys.executable, "-m", "migrated.console.cli", "keys", "create", "--local", "--config",
                        str(self.config), "--role", "admin", "--name", "bench", "--save", str(creds)],
                       check=True, env=env, capture_output=True)
        self.admin = yaml.safe_load(creds.read_text())
        self.log = open(workdir / "console.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "migrated.console.cli", "serve", "--config",
                                      str(self.config)], stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (https?://\S+)", line)
        if not m:
            raise SystemExit(f"console did not start: {(workdir / 'console.log').read_text()[-2000:]}")
        self.url = m.group(1)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Agent:
    def __init__(self, client: ConsoleClient, idx: int, heartbeat: float) -> None:
        self.c = client
        self.idx = idx
        self.heartbeat = heartbeat
        self.source_id = ""
        self.received: dict[str, float] = {}  # task id -> monotonic time received
        self.errors = 0

    async def register(self) -> None:
        r = await self.c.call("RegisterSource", {
            "MachineId": f"bench-{self.idx}", "Hostname": f"bench-{self.idx}", "OsName": "Linux",
            "AgentVersion": "bench", "Disks": [{"Name": "/dev/vda", "SizeBytes": 1 << 30, "MountPoints": ["/"],
                                                "IsSystem": True}]})
        self.source_id = r["SourceId"]

    async def beat_loop(self) -> None:
        await asyncio.sleep(random.uniform(0, self.heartbeat))
        while True:
            try:
                await self.c.call("Heartbeat", {"SourceId": self.source_id, "AgentVersion": "bench"})
            except MigratedError:
                self.errors += 1
            await asyncio.sleep(self.heartbeat)

    async def poll_loop(self) -> None:
        while True:
            try:
                r = await self.c.call("PollCommands", {"SourceId": self.source_id, "WaitSeconds": 30}, timeout=45)
            except MigratedError:
                self.errors += 1
                await asyncio.sleep(1)
                continue
            now = time.monotonic()
            for cmd in r["Commands"]:
                self.received.setdefault(cmd["TaskId"], now)
                try:
                    await self.c.call("AckCommand", {"SourceId": self.source_id, "CommandId": cmd["CommandId"],
                                                     "Result": "ok"})
                except MigratedError:
                    self.errors += 1


async def run_one(n: int, commands: int, rate: float, heartbeat: float, settle: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="console-bench-") as d:
        console = Console(Path(d), heartbeat)
        try:
            conn = aiohttp.TCPConnector(limit=0, force_close=False)
            async with aiohttp.ClientSession(connector=conn) as session:
                admin = ConsoleClient(console.url, console.admin["secret_id"], console.admin["secret_key"],
                                      session=session)
                key = await admin.call("CreateKey", {"Role": "agent", "Name": "bench"})
                agents = [Agent(ConsoleClient(console.url, key["SecretId"], key["SecretKey"], session=session),
                                i, heartbeat) for i in range(n)]
                t0 = time.monotonic()
                sem = asyncio.Semaphore(50)

                async def reg(a: Agent) -> None:
                    async with sem:
                        await a.register()

                await asyncio.gather(*(reg(a) for a in agents))
                t_reg = time.monotonic() - t0
                sample = random.sample(agents, min(commands, n))
                task_of: dict[str, Agent] = {}
                for a in sample:
                    r = await admin.call("CreateTask", {
                        "SourceId": a.source_id, "TaskName": f"bench-{a.idx}", "Region": "ap-guangzhou",
                        "TargetType": "instance", "TargetInstanceId": "ins-bench0001",
                        "TargetSsh": "root@127.0.0.1:22", "TargetHostKey": HOST_KEY})
                    task_of[r["TaskId"]] = a
                loops = [asyncio.create_task(a.poll_loop()) for a in agents]
                loops += [asyncio.create_task(a.beat_loop()) for a in agents]
                await asyncio.sleep(settle)  # every agent holds a poll; heartbeats are spread out

                async with session.get(console.url + "/metrics") as resp:
                    before = await resp.text()
                cpu0, wall0 = proc_cpu_seconds(console.proc.pid), time.monotonic()
                psi0 = cpu_pressure()
                self_cpu0 = time.process_time()
                sent: dict[str, float] = {}
                start_errors = 0
                pending = []
                start_ms: list[float] = []

                async def start(tid: str) -> None:
                    t = time.monotonic()
                    await admin.call("StartTask", {"TaskId": tid})
                    start_ms.append((time.monotonic() - t) * 1000)

                for tid in task_of:
                    sent[tid] = time.monotonic()
                    pending.append(asyncio.create_task(start(tid)))
                    await asyncio.sleep(1 / rate)
                for p in pending:
                    try:
                        await p
                    except MigratedError:
                        start_errors += 1
                deadline = time.monotonic() + 35
                while time.monotonic() < deadline and not all(tid in a.received for tid, a in task_of.items()):
                    await asyncio.sleep(0.1)
                cpu1, wall1 = proc_cpu_seconds(console.proc.pid), time.monotonic()
                psi1 = cpu_pressure()
                load1 = os.getloadavg()[0]
                self_cpu1 = time.process_time()
                lat = [(a.received[tid] - sent[tid]) * 1000 for tid, a in task_of.items() if tid in a.received]
                async with session.get(console.url + "/metrics") as resp:
                    text = await resp.text()
                m = re.search(r"^migrate_console_longpolls_held (\S+)$", text, re.M)
                polls_held = int(float(m.group(1))) if m else -1
                lag_over_100ms = hist_over(before, text, "migrate_console_loop_lag_seconds", 0.1)
                writes_over_100ms = hist_over(before, text, "migrate_console_storage_write_seconds", 0.1)
                gcs = []
                for gen in ("0", "1", "2"):
                    tot = re.search(rf'^migrate_console_gc_pause_seconds_sum{{generation="{gen}"}} (\S+)$', text, re.M)
                    cnt = re.search(rf'^migrate_console_gc_pause_seconds_count{{generation="{gen}"}} (\S+)$', text,
                                    re.M)
                    if tot and cnt:
                        gcs.append(f"gen{gen} {int(float(cnt.group(1)))}x {float(tot.group(1)):.2f}s")
                gc_full = ", ".join(gcs) or "?"
                for t in loops:
                    t.cancel()
                await asyncio.gather(*loops, return_exceptions=True)
                return {
                    "agents": n,
                    "register_seconds": round(t_reg, 1),
                    "commands": len(task_of),
                    "delivered": len(lat),
                    "p50_ms": round(pct(lat, 50), 1),
                    "p99_ms": round(pct(lat, 99), 1),
                    "max_ms": round(max(lat), 1) if lat else None,
                    "start_call_p50_ms": round(pct(start_ms, 50), 1),
                    "start_call_p99_ms": round(pct(start_ms, 99), 1),
                    "console_cpu_pct": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 1),
                    "console_rss_mib": round(proc_rss_mib(console.proc.pid), 1),
                    "bench_cpu_pct": round(100 * (self_cpu1 - self_cpu0) / (wall1 - wall0), 1),
                    "polls_held": polls_held,
                    "loop_lag_over_100ms": lag_over_100ms,
                    "storage_writes_over_100ms": writes_over_100ms,
                    "gc_pauses": gc_full,
                    "agent_errors": sum(a.errors for a in agents) + start_errors,
                    "window_seconds": round(wall1 - wall0, 1),
                    "machine_cpu_pressure_pct": [psi0, psi1],
                    "machine_load1": round(load1, 1),
                }
        finally:
            console.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--commands", type=int, default=200, help="commands queued per run (one per sampled source)")
    ap.add_argument("--rate", type=float, default=10.0, help="commands per second")
    ap.add_argument("--heartbeat", type=float, default=10.0, help="heartbeat interval, seconds")
    ap.add_argument("--settle", type=float, default=12.0, help="seconds of steady state before measuring")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # the simulated agents share one process: keep its own GC pauses out of the measurement
    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 10, 1000)
    results = []
    for n in args.agents:
        r = asyncio.run(run_one(n, args.commands, args.rate, args.heartbeat, args.settle))
        results.append(r)
        if not args.json:
            print(f"N={r['agents']:5d}  delivered {r['delivered']}/{r['commands']}  p50 {r['p50_ms']} ms  "
                  f"p99 {r['p99_ms']} ms  max {r['max_ms']} ms  (StartTask call p50 {r['start_call_p50_ms']} "
                  f"p99 {r['start_call_p99_ms']} ms)  console CPU {r['console_cpu_pct']}% of a core  "
                  f"RSS {r['console_rss_mib']} MiB  bench CPU {r['bench_cpu_pct']}%  held {r['polls_held']}  "
                  f"loop lag >100ms {r['loop_lag_over_100ms']}  writes >100ms {r['storage_writes_over_100ms']}  "
                  f"GC {r['gc_pauses']}  "
                  f"errors {r['agent_errors']}  (register {r['register_seconds']} s)  "
                  f"machine: load {r['machine_load1']}, "
                  f"CPU pressure {r['machine_cpu_pressure_pct']}%", flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
