"""Pre/post hook commands around the cutover's final pass.

A *pre* hook makes the source quiet (stop services, flush a database), a *post*
hook undoes it (start them again). Contracts:

* Each hook is a shell command line (``/bin/sh -c``), run in its own process
  group with a timeout; on timeout the whole group is killed (SIGTERM, then
  SIGKILL after a grace period) and the hook counts as failed.
* :func:`hooks_around` runs *pre*, then the body, then *post*. **post always
  runs** once pre has started, even when pre failed or timed out (pre may have
  stopped one service of two) and even when the body raised: the server must
  not be left with its services down.
* Failures are reported as :class:`HookFailed` naming the hook, its exit
  status or timeout, and the last lines of its output. A failed pre hook means
  no final pass (the body does not run). A failed post hook is raised after
  the body's own result unless the body already raised (then it is attached as
  a note to that exception).
* Output is captured (last 4 KiB), never written to a file: the hooks may run
  while a filesystem is frozen (with ``--quiesce freeze`` they run outside the
  freeze: pre before it, post after the thaw).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from migrated.errors import QuiesceError

OUTPUT_TAIL = 4096
KILL_GRACE = 3.0


@dataclass
class HookResult:
    name: str  # "pre" / "post"
    command: str
    returncode: int | None  # None: killed on timeout
    duration: float
    output: str  # last OUTPUT_TAIL bytes of stdout+stderr, decoded
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.returncode == 0

    def describe(self) -> str:
        if self.timed_out:
            what = f"timed out after {self.duration:.1f} s and was killed"
        elif self.returncode is not None and self.returncode < 0:
            what = f"was killed by signal {-self.returncode}"
        else:
            what = f"exited with status {self.returncode}"
        tail = self.output.strip().splitlines()[-5:]
        return f"{self.name} hook `{self.command}` {what}" + (f": {' | '.join(tail)}" if tail else "")


class HookFailed(QuiesceError):
    def __init__(self, result: HookResult) -> None:
        super().__init__(result.describe())
        self.result = result


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def run_hook(name: str, command: str, timeout: float, *, env: dict[str, str] | None = None) -> HookResult:
    """Run one hook; never raises for the command's own failure (see HookResult.ok)."""
    if timeout <= 0:
        raise ValueError("hook timeout must be positive")
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True, cwd="/", env=env)
    tail = bytearray()

    async def collect() -> None:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            tail.extend(chunk)
            del tail[:-OUTPUT_TAIL]

    reader = asyncio.ensure_future(collect())
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        timed_out = True
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), KILL_GRACE)
        except TimeoutError:
            _kill_group(proc.pid, signal.SIGKILL)
            await proc.wait()
    finally:
        if proc.returncode is None:  # cancelled: leave nothing running
            _kill_group(proc.pid, signal.SIGKILL)
            await proc.wait()
        # children that kept the pipe open (a daemon the hook started) must not hold us up
        try:
            await asyncio.wait_for(asyncio.shield(reader), 1.0)
        except TimeoutError:
            reader.cancel()
    return HookResult(name=name, command=command, returncode=None if timed_out else proc.returncode,
                      duration=time.monotonic() - started, output=tail.decode(errors="replace"),
                      timed_out=timed_out)


@contextlib.asynccontextmanager
async def hooks_around(pre: str | None, post: str | None, timeout: float,
                       results: list[HookResult] | None = None) -> AsyncIterator[None]:
    """``async with hooks_around(pre, post, 60): ...final pass...`` (module doc for the rules).
    ``results``, when given, receives every HookResult in order (for the report)."""
    results = results if results is not None else []
    body_error: BaseException | None = None
    try:
        if pre:
            r = await run_hook("pre", pre, timeout)
            results.append(r)
            if not r.ok:
                raise HookFailed(r)
        yield
    except BaseException as e:
        body_error = e
        raise
    finally:
        if post:
            r = await run_hook("post", post, timeout)
            results.append(r)
            if not r.ok:
                if body_error is None:
                    raise HookFailed(r)
                body_error.add_note(r.describe())
