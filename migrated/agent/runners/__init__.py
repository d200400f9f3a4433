"""The agent's task runners, side by side, behind one host interface.

* ``host.py``: :class:`RunnerHost`, the public part of the daemon a runner uses (its config,
  store and probes, state changes, events, saving the task record), and ``RunControl``, what the
  daemon steers the run in progress with (pause, delete, shutdown, bandwidth, cutover, rounds).
  The daemon implements ``RunnerHost``; nothing here imports ``migrated.agent.daemon``
  (``tests/test_agent_imports.py``).
* ``driver.py``: runs a task's attempts (checks, SSH session, retries from the checkpoint until
  ``transfer_retry_deadline``), branching to the one-shot or the continuous runner.
* ``oneshot.py``: the one-shot sync, disk by disk.
* ``continuous.py``: rounds until a cutover (``ContinuousSync``, ``ConsistentFinish``).
* ``progress.py``: the task record's progress (disks, rate, the continuous fields it keeps).

To add a kind of task: one module here with an ``async def run(host, ...)`` the driver branches to.
"""
