"""``migrated thaw DISK|MOUNTPOINT...``: thaw filesystems a killed agent left frozen.

The freeze guardian thaws on its own when the agent dies, when the budget passes or on
SIGTERM; only when the agent *and* its guardian were both killed with -9 mid-freeze can a
filesystem stay frozen. This is the way out (like ``fsfreeze -u``, but it finds every mounted
filesystem of a disk). Thawing a filesystem that is not frozen is harmless and reported.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys

from migrated.errors import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("thaw", help="thaw filesystems left frozen by a killed agent (a disk or mountpoints)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="*", metavar="DISK|MOUNTPOINT",
                   help="a source disk (every mounted filesystem of it) or a mountpoint")
    p.add_argument("--recorded", nargs="?", const="", metavar="RECORD",
                   help="thaw what a killed freeze guardian recorded (default $RUNTIME_DIRECTORY/frozen.json, "
                        "else /run/migrated/frozen.json); the unit's ExecStopPost")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _mountpoints(path: str) -> list[str]:
    from migrated.source.freeze import mounted_filesystems

    try:
        st = os.stat(path)
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        return [path]
    if stat.S_ISBLK(st.st_mode) or stat.S_ISREG(st.st_mode):
        return [m.mountpoint for m in reversed(mounted_filesystems(path))]  # inner mounts first
    raise UsageError(f"{path} is neither a disk, an image file nor a mountpoint")


def _recorded(args: argparse.Namespace) -> int:
    from migrated.source.freeze import default_record, thaw_recorded

    path = args.recorded or default_record() or "/run/migrated/frozen.json"
    rec = thaw_recorded(path)
    if args.json:
        print(json.dumps({"record": path, "thawed": rec}))
    elif rec is None:
        print(f"migrated: nothing recorded as frozen ({path} absent)", file=sys.stderr)
    else:
        for m, was in rec["was_frozen"].items():
            print(f"{m}: {'thawed' if was else 'was not frozen'} (recorded by freeze guardian "
                  f"{rec['guardian_pid']}, {'still running' if rec['guardian_alive'] else 'gone'})", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    from migrated.source.freeze import thaw_fs

    if args.recorded is not None:
        if args.paths:
            raise UsageError("give either DISK|MOUNTPOINT arguments or --recorded, not both")
        return _recorded(args)
    if not args.paths:
        raise UsageError("what to thaw: DISK|MOUNTPOINT arguments, or --recorded")
    results = []
    for path in args.paths:
        for mp in _mountpoints(path):
            results.append({"mountpoint": mp, "was_frozen": thaw_fs(mp)})
    if args.json:
        print(json.dumps({"thawed": results}))
    else:
        for r in results:
            print(f"{r['mountpoint']}: {'thawed' if r['was_frozen'] else 'was not frozen'}", file=sys.stderr)
        if not results:
            print("migrated: no mounted filesystem found", file=sys.stderr)
    return 0
