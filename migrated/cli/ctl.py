"""``migratectl``: talk to the running daemon over its control socket.

::

    migratectl status [--json] [--watch [SECONDS]]
    migratectl pause | resume | retry | cutover
    migratectl check [--json]
    migratectl bandwidth RATE        # 20MiB/s, 20480K, 160Mbit, 1.5G; a bare number is bytes/s; 0 or unlimited
    migratectl set [--round-interval 30s] [--read-limit 20MiB]   # continuous task, live

Exit codes (docs/exit-codes.md): 0 done; 2 bad arguments or an action the
task's state does not allow; 3 the daemon reported a connection problem;
7 the daemon is not running; 8 not allowed to use the socket (not root, not in
the daemon's group); 9 ``check`` found a failed check; 1 anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from migrated.cli.options import add_common_options, configure_logging
from migrated.config import DEFAULT_CONFIG_PATH, ControlConfig, load_config
from migrated.control.client import ControlClient
from migrated.errors import ExitCode, MigratedError, UsageError
from migrated.model import bandwidth
from migrated.model.status import (
    TaskProgress,
    continuous_line,
    format_bytes,
    format_duration,
    rounds_settings_line,
)


def parse_rate(text: str, what: str = "bandwidth") -> int | None:
    """'50M' -> 52428800 bytes/s, '160Mbit' -> 20000000; a bare number is bytes/s (as it always was);
    '0' / 'unlimited' -> None (no limit). Units: :mod:`migrated.model.bandwidth`."""
    try:
        return bandwidth.parse_rate(text, bandwidth.BYTES) or None
    except bandwidth.RateError as e:
        raise UsageError(f"{what}: {e}") from None


_SECONDS = {"": 1, "S": 1, "M": 60, "H": 3600}


def parse_seconds(text: str, what: str = "--round-interval") -> float:
    """'30', '30s', '2m', '1h' -> seconds (0-86400)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([SMH]?)", text.strip().upper())
    if not m:
        raise UsageError(f"{what}: {text!r} is not a duration; use e.g. 30, 30s, 2m or 1h")
    value = float(m.group(1)) * _SECONDS[m.group(2)]
    if value > 86400:
        raise UsageError(f"{what}: {text!r} is longer than a day (86400 s)")
    return value


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "never"
    return f"{format_duration(max(0.0, now - ts))} ago"


def render_status(status: dict[str, Any], now: float | None = None) -> Group:
    """The status answer as rich renderables: header table + one progress bar per disk + total."""
    now = time.time() if now is None else now
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    console = status.get("console") or {}
    head.add_row("source", str(status.get("source_id") or "not registered (run: migrated register)"))
    link = "online" if console.get("online") else "OFFLINE"
    endpoint = console.get("endpoint") or "no console configured"
    line = f"{endpoint}  {link}, last heartbeat {_ago(console.get('last_heartbeat'), now)}"
    if console.get("clock_skew") is not None:
        line += f", clock skew {console['clock_skew']:+.1f} s"
    head.add_row("console", line)
    if console.get("last_error"):
        head.add_row("", Text(str(console["last_error"]), style="yellow"))
    bw = status.get("bandwidth_bps")
    head.add_row("bandwidth", bandwidth.format_rate(bw))
    task_d = status.get("task")
    if not task_d:
        head.add_row("task", "none")
        return Group(head)
    task = TaskProgress.from_dict(task_d)
    head.add_row("task", f"{task.task_id}  {task.state}" + (f"  stage {task.stage}" if task.stage else ""))
    if task.message:
        head.add_row("", Text(task.message, style="red" if task.state == "failed" else ""))
    rounds = continuous_line(task)
    if rounds:
        head.add_row("rounds", Text(rounds, style="yellow" if task.advice == "not-converging" else ""))
    settings = rounds_settings_line(task)
    if settings:
        head.add_row("" if rounds else "rounds", settings)
    for d in task.disks:
        head.add_row("disk", f"{d.name} -> {d.target}  (sent {format_bytes(d.bytes_sent)})")
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        TaskProgressColumn(),
        TextColumn("{task.fields[amount]}"),
        TextColumn("{task.fields[extra]}"),
        auto_refresh=False,
    )
    for d in task.disks:
        bars.add_task(_short(d.name), total=max(d.bytes_total, 1), completed=d.bytes_done,
                      amount=f"{format_bytes(d.bytes_done)} / {format_bytes(d.bytes_total)}", extra="")
    bars.add_task("total", total=max(task.bytes_total, 1), completed=task.bytes_done,
                  amount=f"{format_bytes(task.bytes_done)} / {format_bytes(task.bytes_total)}",
                  extra=f"{format_bytes(task.rate_bps)}/s  ETA {format_duration(task.eta_seconds)}")
    return Group(head, bars)


def _short(path: str, width: int = 16) -> str:
    """A disk's name for its progress bar: the path's tail when it is long."""
    return path if len(path) <= width else "…" + path[-(width - 1):]


def _socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    if args.config or DEFAULT_CONFIG_PATH.exists():
        try:
            return load_config(args.config).control.socket
        except MigratedError:
            if args.config:
                raise
    return ControlConfig().socket


async def _run(args: argparse.Namespace) -> int:
    client = ControlClient(_socket_path(args))
    out = Console()
    if args.command == "status":
        if args.watch is not None:
            with Live(console=out, auto_refresh=False) as live:
                while True:
                    live.update(render_status(await client.status()), refresh=True)
                    await asyncio.sleep(args.watch)
        status = await client.status()
        if args.json:
            print(json.dumps(status, indent=2, sort_keys=True))
        else:
            out.print(render_status(status))
        return 0
    if args.command in ("pause", "resume", "retry", "cutover"):
        result = await getattr(client, args.command)()
        if args.json:
            print(json.dumps(result, indent=2, sort_keys=True))
        else:
            print(result.get("message") or f"{args.command}: done")
        return 0
    if args.command == "bandwidth":
        result = await client.set_bandwidth(parse_rate(args.rate))
        if args.json:
            print(json.dumps(result, indent=2, sort_keys=True))
        else:
            print(result.get("message") or "bandwidth changed")
        return 0
    if args.command == "set":
        if args.round_interval is None and args.read_limit is None:
            raise UsageError("set: give --round-interval and/or --read-limit")
        interval = parse_seconds(args.round_interval) if args.round_interval is not None else None
        limit = (parse_rate(args.read_limit, "--read-limit") or 0) if args.read_limit is not None else None
        result = await client.set_rounds(interval, limit)
        if args.json:
            print(json.dumps(result, indent=2, sort_keys=True))
        else:
            print(result.get("message") or "changed")
        return 0
    if args.command == "check":
        result = await client.check()
        if args.json:
            print(json.dumps(result, indent=2, sort_keys=True))
        else:
            render_checks(out, result.get("checks", []))
        failed = any(c.get("result") == "fail" for c in result.get("checks", []))
        return int(ExitCode.CHECKS_FAILED) if failed else 0
    raise UsageError(f"unknown command {args.command}")


def render_checks(out: Console, checks: list[dict[str, Any]]) -> None:
    style = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
    table = Table(show_header=True, header_style="bold")
    table.add_column("check")
    table.add_column("result")
    table.add_column("what it found / what to do")
    for c in checks:
        r = str(c.get("result", "?"))
        table.add_row(str(c.get("name")), Text(r.upper(), style=style.get(r, "")), str(c.get("message", "")))
    out.print(table)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="migratectl", description="Control the running migrated daemon.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes: 0 done, 2 bad arguments or not allowed in the task's state, 3 connection problem,\n"
               "7 daemon not running, 8 not allowed to use the socket, 9 a check failed, 1 other (docs/agent.md)")
    p.add_argument("--socket", help="control socket (default: control.socket from the config)")
    p.add_argument("--config", help=f"daemon config file to read the socket path from (default {DEFAULT_CONFIG_PATH})")
    p.add_argument("--json", action="store_true", help="print the daemon's JSON answer")
    add_common_options(p)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("status", help="source, console link, task, per-disk progress, rate, ETA")
    s.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    s.add_argument("--watch", nargs="?", type=float, const=2.0, default=None, metavar="SECONDS",
                   help="redraw every SECONDS (default 2) until Ctrl-C")
    for name, text in (("pause", "pause the transfer after a checkpoint"),
                       ("resume", "continue a paused task from its checkpoint"),
                       ("retry", "retry a failed task from its checkpoint"),
                       ("cutover", "continuous task: quiesce the source for the final pass after the round "
                                   "in progress, verify, finish"),
                       ("check", "run the pre-migration checks as the daemon sees them")):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    b = sub.add_parser("bandwidth", help="change the bandwidth limit live (20MiB/s, 20480K, 160Mbit; a bare number "
                                         "is bytes/s; 0 or unlimited)")
    b.add_argument("rate")
    b.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    r = sub.add_parser("set", help="continuous task: change the round interval and/or the source read limit live "
                                   "(kept across a daemon restart)")
    r.add_argument("--round-interval", metavar="DURATION", help="pause between rounds: 30, 30s, 2m, 1h")
    r.add_argument("--read-limit", metavar="RATE", help="source read limit during the rounds: 20MiB/s, 500K, 160Mbit "
                                                        "(a bare number is bytes/s), 0 or unlimited")
    r.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        configure_logging(args, level="warning", fmt="console")  # stderr; stdout is the answer
        return asyncio.run(_run(args))
    except MigratedError as e:
        print(f"migratectl: {e}", file=sys.stderr)
        return int(e.exit_code)
    except KeyboardInterrupt:
        return 0 if args.command == "status" else int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
