"""``migrated sync SOURCE [user@]host[:port]:/path``: one-shot disk sync, no console (tool mode).

A thin layer over ``migrated.engine.open_session(...).sync_disk(...)``: parses arguments,
installs SIGINT/SIGTERM handlers (first signal: flush, checkpoint, exit 130; second: exit now,
the last checkpoint stays valid), shows progress on a terminal, prints a JSON summary with --json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from migrated.errors import Interrupted, MigratedError, UsageError
from migrated.model import bandwidth
from migrated.model.plan import parse_size
from migrated.model.status import format_bytes
from migrated.transport import recv as wire  # stdlib only: the codec table, cheap to import


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sync", help="copy a disk to a target over SSH, sending only what differs; resumable",
                       description="Copy SOURCE (block device or raw image) to TARGET ([user@]host[:port]:/path) "
                                   "over SSH. Interrupted runs resume when run again with the same arguments.")
    p.add_argument("source", help="block device or raw image file (opened read-only)")
    p.add_argument("target", help="[user@]host[:port]:/path (block device or file on the target)")
    p.add_argument("-i", "--identity", action="append", default=[], metavar="FILE", help="SSH private key file")
    p.add_argument("--known-hosts", metavar="FILE", help="known_hosts file (default ~/.ssh/known_hosts)")
    p.add_argument("--host-key", action="append", default=[], metavar="KEY",
                   help="pin the target's host key instead of known_hosts, e.g. 'ssh-ed25519 AAAA...'")
    p.add_argument("--state-dir", metavar="DIR", help="checkpoint directory (default /var/lib/migrated/checkpoints "
                                                      "as root, else ~/.local/state/migrated/checkpoints)")
    p.add_argument("--bwlimit", metavar="RATE", help="bandwidth limit on the wire, e.g. 20MiB/s, 20480K, 160Mbit "
                                                         "(a bare number is bytes/s)")
    p.add_argument("--checksum", action="store_true", help="verify every target block afterwards, re-send what differs")
    p.add_argument("--block-size", default="64KiB", metavar="SIZE", help="block size (default 64KiB)")
    p.add_argument("--compress", default="auto", choices=wire.compress_choices(),
                   help="codec on the wire (default auto: zstd when both ends have it, else none)")
    p.add_argument("--json", action="store_true", help="print one JSON summary on stdout at the end")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.add_argument("--recv-command", metavar="CMD", default=None,
                   help="how to start the receiver on the target: auto (default), upload, or a command line")
    p.add_argument("--checkpoint-interval", type=float, default=5.0, metavar="SECONDS", help=argparse.SUPPRESS)
    p.add_argument("--chunk-size", default="4MiB", help=argparse.SUPPRESS)
    from migrated.cli import continuous_cmd  # --continuous and the cutover options (docs/consistency.md)

    continuous_cmd.add_arguments(p)
    p.set_defaults(func=run)


def _size(text: str, flag: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise UsageError(f"{flag}: {e}") from None


def _rate(text: str, flag: str) -> int | None:
    """A limit in any unit of model/bandwidth (a bare number is bytes/s); None = no limit."""
    try:
        return bandwidth.parse_rate(text, bandwidth.BYTES) or None
    except bandwidth.RateError as e:
        raise UsageError(f"{flag}: {e}") from None


def run(args: argparse.Namespace) -> int:
    from migrated.engine import SshEndpoint, SyncControl, SyncOptions, parse_target

    user, host, port, path = parse_target(args.target)
    bw = _rate(args.bwlimit, "--bwlimit") if args.bwlimit else None
    options = SyncOptions(block_size=_size(args.block_size, "--block-size"), bwlimit=bw, checksum=args.checksum,
                          state_dir=args.state_dir, compress=args.compress,
                          checkpoint_seconds=args.checkpoint_interval,
                          chunk_size=_size(args.chunk_size, "--chunk-size"))
    options.validate()
    endpoint = SshEndpoint(host=host, port=port, username=user, identity_files=tuple(args.identity),
                           known_hosts=args.known_hosts, host_keys=tuple(args.host_key),
                           recv_command=args.recv_command)
    control = SyncControl(bw)
    from migrated.cli import continuous_cmd

    continuous_cmd.check_arguments(args)
    copts = continuous_cmd.continuous_options(args) if args.continuous else None
    # every usage error above, then the source, then the SSH set-up: a missing source is named first (exit 6)
    _check_source(args.source)
    if copts is not None:
        return continuous_cmd.run(args, endpoint, path, options, control, copts)
    return asyncio.run(_run(args, endpoint, path, options, control))


def _check_source(path: str) -> None:
    """Open the source read-only once and close it: raises SourceError naming it when it cannot be read."""
    from migrated.source import open_source

    open_source(path).close()


async def _run(args, endpoint, path, options, control) -> int:
    from migrated.engine import open_session

    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    signals = {"n": 0}

    def on_signal(name: str) -> None:
        signals["n"] += 1
        if signals["n"] == 1:
            control.request_stop(f"stopped by {name}")
        elif main_task is not None:
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)

    show = sys.stderr.isatty() and not args.quiet and not args.json
    progress = None
    task_id = None
    on_progress = None
    if show:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
                            TransferSpeedColumn(), TimeRemainingColumn(), transient=False)
        progress.start()

        def on_progress(p) -> None:
            nonlocal task_id
            if task_id is None:
                # Start from where the checkpoint left off, so rate and ETA are right after a resume.
                task_id = progress.add_task(p.name, total=p.bytes_total, completed=p.bytes_done)
            progress.update(task_id, completed=p.bytes_done)

    result = None
    code = 0
    try:
        async with open_session(endpoint) as session:
            result = await session.sync_disk(args.source, path, options, control, on_progress)
    except Interrupted as e:
        result = getattr(e, "result", None)
        code = int(e.exit_code)
        print(f"migrated: {e}", file=sys.stderr)
        if args.json:
            d = result.to_dict() if result else {}
            d.update(interrupted=True)
            print(json.dumps(d))
        return code
    except asyncio.CancelledError:
        print("migrated: stopped; the last checkpoint is kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    except MigratedError as e:
        if args.json:  # a script reading stdout learns what failed, too
            print(json.dumps({"error": str(e), "error_type": type(e).__name__, "exit_code": int(e.exit_code),
                              "retryable": e.retryable}))
        raise
    finally:
        if progress is not None:
            progress.stop()
    assert result is not None
    if args.json:
        print(json.dumps(result.to_dict()))
    elif not args.quiet:
        v = {None: "", True: ", verified", False: ", VERIFICATION FAILED"}[result.verified]
        print(f"{result.source} -> {result.target}: {format_bytes(result.bytes_total)} in {result.seconds:.1f} s, "
              f"{format_bytes(result.bytes_sent)} sent ({result.blocks_sent} blocks sent, {result.blocks_zero} zero, "
              f"{result.blocks_same} unchanged){v}", file=sys.stderr)
    return code
