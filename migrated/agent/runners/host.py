"""The interface between the daemon and its task runners.

* :class:`RunnerHost`: what a runner needs from the daemon, implemented by
  :class:`migrated.agent.daemon.Agent` with public methods (tests may pass something smaller).
* :class:`RunControl`: what the daemon steers the run in progress with: a stop (pause, delete,
  SIGTERM) ends the engine's transfer at a checkpoint and a retry wait at once; a bandwidth change
  reaches the engine; a cutover or rounds change reaches a continuous run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from migrated.agent.checks import SystemProbe
    from migrated.agent.state import AgentStore
    from migrated.config import Config
    from migrated.engine.continuous import ContinuousControl
    from migrated.model.states import TaskState
    from migrated.model.status import TaskProgress


class RunnerHost(Protocol):
    cfg: Config
    store: AgentStore
    probe: SystemProbe
    session_opener: Callable[..., Any] | None  # None: the engine's open_session
    ssh_identity: str | None  # None: the store's identity file
    recv_command: str | None
    bandwidth_bps: int | None  # the limit in effect (None: unlimited)

    @property
    def clock_skew(self) -> float | None:
        """The console's clock minus ours, as the last heartbeat measured it (None: not known)."""

    @property
    def freeze_record(self) -> str:
        """Where the guardian records a freeze while it lasts."""

    def set_state(self, new: TaskState, stage: str | None = None, message: str | None = None) -> None:
        """Move the task along one edge of the state table (checked), persist, queue the report."""

    def event(self, level: str, message: str) -> None:
        """Queue a task event for the console, in order with the state changes."""

    def save_task(self) -> None:
        """Write the task record (progress included) to the state dir."""

    def wake_reporter(self) -> None:
        """Report the task's progress now rather than at the next interval."""

    def note_bytes_done(self, done: int) -> None:
        """Bytes covered so far by the run (for the transfer rate)."""

    def progress(self) -> TaskProgress | None:
        """The task's progress as shown to the console and ``migratectl``."""


class RunControl:
    """The steering of the task run in progress, held by the daemon for its whole life.

    ``control`` is the engine's SyncControl of the running attempt (a continuous run's
    :class:`~migrated.agent.runners.continuous.Steer`), None between runs; ``continuous`` is the
    ContinuousControl of a running continuous task, None otherwise."""

    def __init__(self) -> None:
        self.control: Any = None
        self.continuous: ContinuousControl | None = None
        self.stop_reason: str | None = None
        self.interrupt = asyncio.Event()  # pause/delete/stop: end a retry wait early

    def request_stop(self, reason: str, message: str) -> None:
        """Stop the run at a checkpoint: ``reason`` decides what the task becomes (``pause by ...``
        pauses it), ``message`` is what the engine is told."""
        self.stop_reason = reason
        self.interrupt.set()
        if self.control is not None:
            self.control.request_stop(message)

    def set_bwlimit(self, bps: int | None) -> None:
        if self.control is not None:
            self.control.set_bwlimit(bps)
