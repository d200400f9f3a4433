"""The freeze guardian: a small separate process that freezes filesystems and
guarantees they are thawed.

Run by :class:`migrated.source.freeze.GuardedFreeze`, never by hand::

    python3 -m migrated.source.guardian --budget SECONDS --mount /srv [--mount /var ...]

Protocol: commands on stdin, one per line (``freeze``, ``thaw``); reports on
stdout, one JSON object per line: ``{"event": "ready"}`` once started,
``{"event": "frozen", "frozen_at": T}`` after the freeze, and a last
``{"event": "thawed", "reason": R, "frozen_at": T0, "thawed_at": T1,
"errors": [...]}``. Times are CLOCK_MONOTONIC. Reasons:

* ``told``        the parent sent ``thaw``
* ``parent-gone`` stdin reached EOF: the parent died (even by ``kill -9``, the
                  kernel closes its end of the pipe) or closed it
* ``budget``      the budget passed (counted from the first FIFREEZE)
* ``signal``      SIGTERM, SIGINT or SIGHUP: someone is stopping us, so we thaw
                  first and then exit. We do not ignore them: "stop" must
                  never mean "stop and leave the server frozen"
* ``error``       a freeze failed; what had been frozen is thawed again

Rules this process keeps (see docs/consistency.md):

* It is started *before* anything is frozen, so its interpreter, modules and
  mount fds are all loaded/opened while the filesystems are writable.
* It writes nothing while anything is frozen: no files, no bytecode
  (PYTHONDONTWRITEBYTECODE), not even stderr (which may be a file on a frozen
  filesystem and would block us, and with us the thaw). It reports on its
  stdout pipe, and writes one line to stderr only after everything is thawed.
* SIGKILL of the guardian itself cannot be caught: the parent notices (its
  pipe closes) and thaws itself. Both killed at once (systemd's final SIGKILL
  of the whole unit) would leave the filesystems frozen: with ``--record PATH``
  (on tmpfs, e.g. ``$RUNTIME_DIRECTORY/frozen.json``) the guardian writes what
  it is about to freeze there *before* the first FIFREEZE and removes it once
  everything is thawed, and ``migrated thaw --recorded`` (the unit's
  ``ExecStopPost=``, and the daemon at start) thaws what a dead guardian left.
  ``migrated thaw DISK`` (or ``fsfreeze -u``) is the manual way out.
* Before freezing it syncs the filesystems while they are still writable, so
  FIFREEZE has little left to flush and the frozen window stays short.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import select
import signal
import sys
import time

sys.dont_write_bytecode = True

from migrated.store import atomic_write  # noqa: E402 - after the line above: no bytecode written for it either

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def freeze_failure_reason(err: int) -> str:
    """Why FIFREEZE failed, in words a person can act on."""
    return {
        errno.EBUSY: "it is already frozen (another fsfreeze or a snapshot in progress?)",
        errno.EOPNOTSUPP: "this filesystem type does not support freezing",
        errno.EPERM: "freezing needs root (CAP_SYS_ADMIN)",
        errno.EACCES: "freezing needs root (CAP_SYS_ADMIN)",
    }.get(err, os.strerror(err))


def _on_signal(_signum: int, _frame: object) -> None:
    """Does nothing: the signal number arrives on the wakeup fd, which the select loop watches.
    No exception is ever raised from a signal, so no signal can cut a thaw short."""


def _emit(obj: dict[str, object]) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def _syncfs(fd: int) -> None:
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        libc.syncfs(fd)
    except (OSError, AttributeError):
        os.sync()


def write_record(path: str, mounts: list[str], budget: float) -> bool:
    """Record what is about to be frozen (``store.atomic_write``, before the first FIFREEZE). False, and
    nothing written, when ``path`` lies on one of ``mounts`` (a record there would block on the freeze it describes)."""
    d = os.path.dirname(os.path.abspath(path))
    try:
        dev = os.stat(d).st_dev
        if any(os.stat(m).st_dev == dev for m in mounts):
            return False
        record = {"guardian_pid": os.getpid(), "mountpoints": mounts, "budget": budget, "since": time.time()}
        atomic_write(path, json.dumps(record).encode(), mode=0o644)
        return True
    except OSError:
        return False


class Guardian:
    def __init__(self, mounts: list[str], budget: float, wakeup: int, record: str | None = None) -> None:
        self.wakeup = wakeup  # read end of the signal wakeup pipe
        self.record = record
        self.recorded = False
        self.mounts = mounts
        self.budget = budget
        self.fds: list[int] = []
        self.frozen: list[int] = []  # indexes into mounts/fds, in freeze order
        self.frozen_at: float | None = None
        self.errors: list[str] = []

    def open_all(self) -> None:
        for m in self.mounts:
            self.fds.append(os.open(m, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))

    def freeze_all(self) -> bool:
        if self.record:
            self.recorded = write_record(self.record, self.mounts, self.budget)
        for fd in self.fds:
            _syncfs(fd)
        for i, fd in enumerate(self.fds):
            if self.frozen_at is None:
                self.frozen_at = time.monotonic()
            try:
                fcntl.ioctl(fd, FIFREEZE, 0)
            except OSError as e:
                self.errors.append(f"cannot freeze {self.mounts[i]}: {freeze_failure_reason(e.errno or 0)}")
                return False
            self.frozen.append(i)
        return True

    def thaw_all(self) -> float:
        while self.frozen:
            i = self.frozen[-1]
            for attempt in range(50):
                try:
                    fcntl.ioctl(self.fds[i], FITHAW, 0)
                    break
                except OSError as e:
                    if e.errno == errno.EINVAL:  # not frozen (any more): someone thawed it
                        break
                    if attempt == 49:
                        self.errors.append(f"cannot thaw {self.mounts[i]}: {os.strerror(e.errno or 0)}")
                    time.sleep(0.1)
            self.frozen.pop()
        return time.monotonic()

    def wait_command(self, deadline: float | None) -> str:
        """Next command line; "" on EOF, "timeout" when ``deadline`` passes, "signal" on a stop signal."""
        fd = sys.stdin.fileno()
        buf = b""
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            r, _, _ = select.select([fd, self.wakeup], [], [], timeout)
            if self.wakeup in r:
                return "signal"
            if not r:
                return "timeout"
            chunk = os.read(fd, 4096)
            if not chunk:
                return ""
            buf += chunk
            if b"\n" in buf:
                return buf.split(b"\n", 1)[0].decode(errors="replace").strip()

    def run(self) -> int:
        reason = "error"
        thawed_at: float | None = None
        try:
            self.open_all()
            _emit({"event": "ready", "pid": os.getpid()})
            cmd = self.wait_command(None)
            if cmd != "freeze":
                reason = {"": "parent-gone", "signal": "signal"}.get(cmd, "told")
                return 0
            if not self.freeze_all():
                reason = "error"
                return 1
            _emit({"event": "frozen", "frozen_at": self.frozen_at})
            assert self.frozen_at is not None
            cmd = self.wait_command(self.frozen_at + self.budget)
            reason = {"thaw": "told", "": "parent-gone", "timeout": "budget", "signal": "signal"}.get(cmd, "told")
            return 0
        except OSError as e:
            self.errors.append(f"guardian: {e}")
            return 1
        finally:
            thawed_at = self.thaw_all() if self.frozen else time.monotonic()
            _emit({"event": "thawed", "reason": reason, "frozen_at": self.frozen_at, "thawed_at": thawed_at,
                   "errors": self.errors})
            for fd in self.fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if self.recorded and not self.frozen and not self.errors:
                with contextlib.suppress(OSError):
                    os.unlink(self.record)  # type: ignore[arg-type]
            if self.frozen_at is not None:
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.write(
                        f"migrated guardian: thawed {', '.join(self.mounts)} after "
                        f"{thawed_at - self.frozen_at:.3f} s ({reason})"
                        + (f"; errors: {'; '.join(self.errors)}" if self.errors else "") + "\n")
                    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="migrated-guardian", description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, required=True, help="seconds the filesystems may stay frozen")
    p.add_argument("--mount", action="append", required=True, help="mountpoint to freeze (repeat)")
    p.add_argument("--record", help="file (on tmpfs) naming what is frozen while it is; removed after the thaw")
    args = p.parse_args(argv)
    if args.budget <= 0:
        p.error("--budget must be positive")
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    for s in _STOP_SIGNALS:
        signal.signal(s, _on_signal)
    # the OOM killer must not pick the process holding the thaw
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as f:
        f.write("-1000")
    return Guardian(args.mount, args.budget, wake_r, args.record).run()


if __name__ == "__main__":
    raise SystemExit(main())
