"""``migrated sync --continuous SOURCE TARGET``: full pass, incremental rounds while the source
runs, then a cutover (quiesced final pass, verified, downtime reported). See docs/consistency.md.
``--quiesce lvm`` (with ``--snapshot-size``) makes an LVM snapshot the cutover point: the final
pass reads the snapshot while the source runs on, and the snapshot is removed on every path.

Options are added to ``migrated sync`` by :func:`add_arguments`; ``sync_cmd.run`` hands over
to :func:`run` when ``--continuous`` is given. Signals: SIGUSR1 = cut over now (after the round
in progress); SIGINT/SIGTERM = stop, checkpoint, exit 130 (resumable; a freeze in progress is
thawed first); a second one exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import TYPE_CHECKING, Any

from migrated.errors import Interrupted, UsageError
from migrated.model.lvmsize import DEFAULT_SNAPSHOT_SIZE
from migrated.model.rounds import mbps
from migrated.model.status import format_bytes
from migrated.model.taskspec import (
    DEFAULT_FREEZE_BUDGET_SECONDS,
    DEFAULT_HOOK_TIMEOUT_SECONDS,
    DEFAULT_QUIESCE,
    DEFAULT_ROUND_INTERVAL_SECONDS,
    QUIESCE_METHODS,
)

if TYPE_CHECKING:  # imported when run: `migrated --help` stays quick
    from migrated.engine.continuous import ContinuousOptions
    from migrated.engine.sync import SyncControl, SyncOptions
    from migrated.transport.ssh import SshEndpoint


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("continuous sync and cutover (docs/consistency.md)")
    g.add_argument("--continuous", action="store_true",
                   help="after the full pass, keep sending what changes in rounds until a cutover "
                        "(SIGUSR1, --cutover-after or --auto-cutover)")
    g.add_argument("--interval", type=float, default=float(DEFAULT_ROUND_INTERVAL_SECONDS), metavar="SECONDS",
                   help=f"pause between rounds (default {DEFAULT_ROUND_INTERVAL_SECONDS})")
    g.add_argument("--read-limit", metavar="RATE", help="source read rate during the full pass and the rounds, "
                                                       "e.g. 50MiB/s or 400Mbit (protects production I/O; the final "
                                                       "pass is not limited)")
    g.add_argument("--cutover-after", type=int, metavar="N", help="cut over after N incremental rounds")
    g.add_argument("--auto-cutover", action="store_true",
                   help="cut over as soon as the forecast final pass fits --downtime-target")
    g.add_argument("--quiesce", default=DEFAULT_QUIESCE, choices=list(QUIESCE_METHODS),
                   help=f"how to make the source quiet for the final pass (default {DEFAULT_QUIESCE}: "
                        "FIFREEZE of every "
                        "mounted filesystem of the disk; lvm: an LVM snapshot is the cutover point, the final pass "
                        "reads it while the source runs on)")
    g.add_argument("--snapshot-size", metavar="SIZE",
                   help="--quiesce lvm: copy-on-write space of the snapshot, e.g. 2G or 20%%ORIGIN (default "
                        f"{DEFAULT_SNAPSHOT_SIZE.replace('%', '%%')}); the origin's writes during the final pass "
                        "must fit in it")
    g.add_argument("--freeze-budget", type=float, default=float(DEFAULT_FREEZE_BUDGET_SECONDS), metavar="SECONDS",
                   help="hard limit of the freeze; past it the source is thawed and the cutover retried "
                        f"(default {DEFAULT_FREEZE_BUDGET_SECONDS})")
    g.add_argument("--downtime-target", type=float, default=2.0, metavar="SECONDS",
                   help="a forecast final pass under this is 'ready for cutover' (default 2)")
    g.add_argument("--no-track-writes", dest="track_writes", action="store_false",
                   help="make the frozen final pass re-read the whole disk instead of only the writes traced "
                        "since the last round (longer downtime; for when kernel tracing is distrusted)")
    g.add_argument("--pre-hook", metavar="CMD", help="shell command run before the final pass (stop services)")
    g.add_argument("--post-hook", metavar="CMD",
                   help="shell command run after it, always, even when the pre hook failed (start services)")
    g.add_argument("--hook-timeout", type=float, default=float(DEFAULT_HOOK_TIMEOUT_SECONDS), metavar="SECONDS",
                   help=f"per hook (default {DEFAULT_HOOK_TIMEOUT_SECONDS})")


def check_arguments(args: argparse.Namespace) -> None:
    """Continuous-only options without --continuous are a mistake worth naming."""
    if args.snapshot_size and not (args.continuous and args.quiesce == "lvm"):
        raise UsageError("--snapshot-size needs --continuous --quiesce lvm")
    if args.continuous:
        return
    for flag, value in (("--cutover-after", args.cutover_after), ("--auto-cutover", args.auto_cutover),
                        ("--pre-hook", args.pre_hook), ("--post-hook", args.post_hook),
                        ("--read-limit", args.read_limit)):
        if value:
            raise UsageError(f"{flag} needs --continuous")


def continuous_options(args: argparse.Namespace) -> ContinuousOptions:
    """The validated continuous options of the command line (UsageError names the flag)."""
    from migrated.engine.continuous import ContinuousOptions
    from migrated.model import bandwidth

    read_limit = None
    if args.read_limit:  # any unit of model/bandwidth; a bare number is bytes/s
        try:
            read_limit = bandwidth.parse_rate(args.read_limit, bandwidth.BYTES) or None
        except bandwidth.RateError as e:
            raise UsageError(f"--read-limit: {e}") from None
    copts = ContinuousOptions(interval=args.interval, read_limit=read_limit, cutover_after=args.cutover_after,
                              auto_cutover=args.auto_cutover, quiesce=args.quiesce,
                              freeze_budget=args.freeze_budget, downtime_target=args.downtime_target,
                              pre_hook=args.pre_hook, post_hook=args.post_hook, hook_timeout=args.hook_timeout,
                              track_writes=args.track_writes, snapshot_size=args.snapshot_size or "10%ORIGIN")
    copts.validate()
    return copts


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(f"migrated: {text}", file=sys.stderr, flush=True)


def _on_event(args: argparse.Namespace, ev: dict[str, Any]) -> None:
    kind = ev["event"]
    if kind == "round":
        name = "full pass" if ev["round"] == 0 else f"round {ev['round']}"
        _say(args, f"{name}: {format_bytes(ev['bytes_changed'])} changed, {format_bytes(ev['bytes_sent'])} sent "
                   f"in {ev['seconds']:.1f} s; {ev['message']}")
    elif kind == "cutover":
        where = ", ".join(ev["mountpoints"] or ev.get("volumes") or []) or "nothing mounted"
        _say(args, f"cutover: quiesce {ev['quiesce']} ({where})")
    elif kind == "snapshot-leftover-removed":
        _say(args, f"removed the snapshot {ev['snapshot']} a killed earlier run left behind")
    elif kind == "snapshot":
        names = ", ".join(f"{s['name']} ({s['device']})" for s in ev["snapshots"])
        _say(args, f"cutover: snapshot {names} taken, source running again; downtime {ev['downtime']:.3f} s; "
                   "final pass from the snapshot")
    elif kind == "freeze-budget-exceeded":
        _say(args, f"cutover attempt {ev['attempt']}: {ev['message']}")
    elif kind == "thawed":
        traced = ev.get("traced_bytes")
        read = "the whole disk" if traced is None else f"{format_bytes(traced)} of traced writes"
        if ev.get("quiesce") == "lvm":
            _say(args, f"cutover: final pass from the snapshot done (read {read}); verifying against it")
        else:
            _say(args, f"cutover: final pass done (read {read}), source running again; "
                       f"downtime {ev['downtime']:.3f} s")
    elif kind == "verified":
        _say(args, f"cutover: target verified ({ev['blocks']} blocks match the source at the cutover point)")


def run(args: argparse.Namespace, endpoint: SshEndpoint, path: str, options: SyncOptions,
        control: SyncControl, copts: ContinuousOptions) -> int:
    return asyncio.run(_run(args, endpoint, path, options, control, copts))


async def _run(args: argparse.Namespace, endpoint: SshEndpoint, path: str, options: SyncOptions,
               sync_control: SyncControl, copts: ContinuousOptions) -> int:
    from migrated.engine import open_session
    from migrated.engine.continuous import ContinuousControl, run_continuous

    control = ContinuousControl(sync_control)
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    signals = {"n": 0}

    def on_stop(name: str) -> None:
        signals["n"] += 1
        if signals["n"] == 1:
            _say(args, f"{name}: stopping after a checkpoint (a freeze in progress is thawed first)")
            control.stop(f"stopped by {name}")
        elif main_task is not None:
            main_task.cancel()

    def on_cutover() -> None:
        _say(args, "SIGUSR1: cutover requested")
        control.request_cutover()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_stop, sig.name)
    loop.add_signal_handler(signal.SIGUSR1, on_cutover)
    try:
        async with open_session(endpoint) as session:
            result = await run_continuous(session, args.source, path, options, copts, control,
                                          lambda ev: _on_event(args, ev))
    except Interrupted as e:
        print(f"migrated: {e}", file=sys.stderr)
        if args.json:
            print(json.dumps({"interrupted": True, **control.status()}))
        return int(e.exit_code)
    except asyncio.CancelledError:
        print("migrated: stopped; the last checkpoint is kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            loop.remove_signal_handler(sig)
    if args.json:
        print(json.dumps(result.to_dict()))
    elif not args.quiet:
        c = result.cutover
        assert c is not None
        rate = result.summary.change_rate if result.summary else None
        print(f"{result.source} -> {result.target}: {len(result.rounds) - 1} rounds after the full pass"
              f"{f', source changing {mbps(rate)}' if rate is not None else ''}; cutover downtime "
              f"{c.downtime:.3f} s, final pass {format_bytes(c.final_changed)} changed; "
              f"{'verified' if c.verified else 'NOT verified'}", file=sys.stderr)
    return 0
