"""Continuous sync and cutover end to end: a real ext4 on a loop device, mounted, written to by
another process during the whole migration; `migrated sync --continuous` through a real SSH server
(asyncssh on 127.0.0.1 port 0); then fsck, mount and compare the target."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.asshd import (
    AsyncSSHD,
    asyncssh_server,  # noqa: F401 - the `sshd` fixture of this module
)
from tests.conftest import cli, repo_env
from tests.loopfs import (
    FrozenRecorder,
    can_write,
    frozen_wait,
    fsck_clean,
    guardian_of,
    loop_ext4,
    mounted_ro,
    root_only,
    tracefs_cleanup,  # noqa: F401 - fixture
    tree_digest,
    writer_process,
)


async def run_cli(sshd: AsyncSSHD, src: str, dst: Path, *extra: str, state: Path,
                  until_stderr: str | None = None, then_signal: int = signal.SIGTERM,
                  timeout: float = 240, env: dict[str, str] | None = None) -> tuple[int, dict | None, str]:
    """``migrated sync --continuous SRC DST EXTRA...`` as a subprocess: (exit code, its --json summary,
    its stderr). ``until_stderr``: send ``then_signal`` once a stderr line contains it."""
    args = [*cli("migrated"), "sync", src, sshd.target(dst), *sshd.ssh_args(), "--state-dir", str(state),
            "--recv-command", "upload", "--json", "--continuous", *extra]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env or repo_env())
    err_lines: list[str] = []
    signalled = False

    async def read_err() -> None:
        nonlocal signalled
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode(errors="replace")
            err_lines.append(text)
            # once: the message is on the round line and in a warning log line; a second SIGTERM
            # would mean "exit now" without the summary
            if until_stderr and until_stderr in text and proc.returncode is None and not signalled:
                signalled = True
                proc.send_signal(then_signal)

    try:
        out, _ = await asyncio.wait_for(_collect(proc, read_err), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    err = "".join(err_lines)
    print(err[-4000:])
    text = out.decode().strip()
    return proc.returncode or 0, json.loads(text.splitlines()[-1]) if text else None, err


async def _collect(proc, read_err) -> tuple[bytes, None]:
    out, _, _ = await asyncio.gather(proc.stdout.read(), read_err(), proc.wait())
    return out, None


@pytest.mark.root
@pytest.mark.slow
@root_only
async def test_rounds_then_cutover_of_a_live_ext4_gives_a_clean_identical_target(sshd, tmp_path):
    with loop_ext4(tmp_path, size_mb=192) as fs:
        state = fs.mountpoint / "state"  # the state dir lives on the filesystem that gets frozen
        dst = tmp_path / "target.img"
        with writer_process(fs.mountpoint) as writer:
            rec = FrozenRecorder(writer.pid, fs.mountpoint)
            rec.start()
            try:
                # --bwlimit keeps the frozen final pass around a second or two (it sends a few MiB), so
                # the recorder has time to read every file while frozen even on a loaded machine
                rc, s, err = await run_cli(sshd, fs.loopdev, dst, "--interval", "0.3", "--cutover-after", "3",
                                           "--freeze-budget", "60", "--bwlimit", "4MiB", state=state)
            finally:
                rec.done.set()
                rec.join()
            assert rc == 0, err
            # the source is writable right after: the writer went on, and so does a fresh write
            assert can_write(fs.mountpoint, timeout=30)
            assert writer.poll() is None
        assert s is not None and s["verified"] is True
        assert len(s["rounds"]) == 4  # the full pass and three incremental rounds
        assert all(r["bytes_changed"] > 0 for r in s["rounds"][1:]), "the writer changed nothing?"
        cut = s["cutover"]
        assert cut["mountpoints"] == [str(fs.mountpoint)] and cut["attempts"] == 1
        assert 0 < s["downtime"] < 60 and cut["blocks_verified"] > 0
        # the final pass read only what was written since the last round (traced), not the disk
        assert cut["traced_bytes"] is not None and 0 < cut["traced_bytes"] < 192 * 1024 * 1024
        assert rec.freezes_seen == 1 and rec.record is not None, "the freeze was never observed"
        # the checkpoint, held during the freeze, was written to the state dir after the thaw
        from migrated.model.checkpoint import Checkpoint

        cps = [Checkpoint.decode(p.read_bytes()) for p in state.glob("*.ckpt")]
        assert [c.round for c in cps] == [5] and cps[0].complete
        # the target: a clean ext4 whose files are the source's files at the freeze
        r = fsck_clean(dst)
        assert r.returncode == 0, r.stdout + r.stderr
        with mounted_ro(dst, tmp_path / "target.mnt") as tm:
            assert tree_digest(tm) == rec.record


@pytest.mark.root
@pytest.mark.slow
@root_only
async def test_a_final_pass_past_the_freeze_budget_thaws_and_fails_plainly(sshd, tmp_path):
    with loop_ext4(tmp_path, size_mb=128) as fs:
        state = tmp_path / "state"
        dst = tmp_path / "target.img"
        with writer_process(fs.mountpoint) as writer:
            # 6 MiB/s on the wire: the final pass cannot send what changed within 0.8 s
            rc, _s, err = await run_cli(sshd, fs.loopdev, dst, "--interval", "0.2", "--cutover-after", "1",
                                       "--freeze-budget", "0.8", "--bwlimit", "6MiB", "--read-limit", "64MiB",
                                       state=state)
            assert rc == 6, err
            assert "did not finish within the freeze budget of 0.8 s" in err
            assert "cutover attempt 1" in err and "cutover attempt 2" in err  # retried after one more round
            assert can_write(fs.mountpoint, timeout=30) and writer.poll() is None


@pytest.mark.root
@root_only
async def test_failing_pre_hook_means_no_freeze_and_post_hook_still_runs(sshd, tmp_path):
    with loop_ext4(tmp_path, size_mb=32) as fs:
        log = tmp_path / "hooks.log"
        rc, _s, err = await run_cli(sshd, fs.loopdev, tmp_path / "t.img", "--interval", "0", "--cutover-after", "0",
                                   "--pre-hook", f"echo pre >> {log}; echo db refused to stop; exit 4",
                                   "--post-hook", f"echo post >> {log}", state=tmp_path / "state")
        assert rc == 6, err
        assert "pre hook `echo pre" in err and "exited with status 4: db refused to stop" in err
        assert log.read_text().split() == ["pre", "post"]
        assert can_write(fs.mountpoint)


async def test_a_source_that_never_converges_is_said_plainly(sshd, tmp_path):
    """Changes arrive faster than the link sends: the rounds say so, and stopping keeps the checkpoint."""
    src = tmp_path / "src.img"
    with open(src, "wb") as f:
        f.truncate(32 * 1024 * 1024)
    churn = (
        "import os, random, sys, time\n"
        "rng = random.Random(3); fd = os.open(sys.argv[1], os.O_WRONLY)\n"
        "while True:\n"
        "    os.pwrite(fd, rng.randbytes(65536), rng.randrange(512) * 65536)\n"
        "    time.sleep(0.01)\n")  # ~6 MB/s of incompressible changes
    p = subprocess.Popen([sys.executable, "-c", churn, str(src)])
    try:
        rc, s, err = await run_cli(sshd, str(src), tmp_path / "dst.img", "--interval", "0", "--bwlimit", "1MiB",
                                   "--quiesce", "none", state=tmp_path / "state",
                                   until_stderr="not converging", timeout=180)
    finally:
        p.kill()
        p.wait()
    assert rc == 130, err
    line = next(x for x in err.splitlines() if "not converging" in x)
    assert "MB/s changing" in line and "MB/s sent" in line
    assert s is not None and s["interrupted"] and s["summary"]["advice"] == "not-converging"


def test_continuous_options_without_continuous_are_refused(tmp_path):
    r = subprocess.run([*cli("migrated"), "sync", str(tmp_path / "x"), "h:/x", "--cutover-after", "2"],
                       capture_output=True, text=True, env=repo_env(), timeout=60)
    assert r.returncode == 2 and "--cutover-after needs --continuous" in r.stderr


def test_hooks_quiesce_needs_a_hook(tmp_path):
    img = tmp_path / "x"
    img.write_bytes(b"\0" * 4096)
    r = subprocess.run([*cli("migrated"), "sync", str(img), "127.0.0.1:1:/x", "--continuous", "--quiesce", "hooks"],
                       capture_output=True, text=True, env=repo_env(), timeout=60)
    assert r.returncode == 2 and "--quiesce hooks needs --pre-hook" in r.stderr


@pytest.mark.root
@pytest.mark.slow
@root_only
@pytest.mark.usefixtures("tracefs_cleanup")
async def test_kill_9_of_the_agent_during_the_freeze_leaves_the_source_thawed(sshd, tmp_path):
    with loop_ext4(tmp_path, size_mb=64) as fs, writer_process(fs.mountpoint) as writer:
        args = [*cli("migrated"), "sync", fs.loopdev, sshd.target(tmp_path / "t.img"), *sshd.ssh_args(),
                "--state-dir", str(tmp_path / "state"), "--recv-command", "upload", "--continuous",
                "--interval", "0", "--cutover-after", "1", "--freeze-budget", "600", "--bwlimit", "1MiB", "-q"]
        agent = await asyncio.create_subprocess_exec(*args, env=repo_env())
        try:
            for _ in range(240 * 200):  # until the writer waits on the freeze (the final pass is slow: 1 MiB/s)
                if frozen_wait(writer.pid) or agent.returncode is not None:
                    break
                await asyncio.sleep(0.005)
            assert agent.returncode is None, "the agent ended before freezing"
            agent.kill()
            await agent.wait()
        finally:
            if agent.returncode is None:
                agent.kill()
                await agent.wait()
        # long before the 600 s budget: the guardian saw the agent die and thawed
        assert can_write(fs.mountpoint, timeout=30)
        assert writer.poll() is None


@pytest.mark.root
@pytest.mark.slow
@root_only
@pytest.mark.usefixtures("tracefs_cleanup")
async def test_a_guardian_thawed_by_a_signal_mid_pass_fails_the_cutover(sshd, tmp_path):
    """SIGTERM to the guardian (an admin, a service manager) thaws at once, by design; the final
    pass then goes on reading a live filesystem, so it must not be trusted: exit 6, not a
    "verified" target that is a mix of before and after the thaw."""
    with loop_ext4(tmp_path, size_mb=64) as fs, writer_process(fs.mountpoint) as writer:
        args = [*cli("migrated"), "sync", fs.loopdev, sshd.target(tmp_path / "t.img"), *sshd.ssh_args(),
                "--state-dir", str(tmp_path / "state"), "--recv-command", "upload", "--continuous",
                "--interval", "0", "--cutover-after", "1", "--freeze-budget", "600", "--bwlimit", "1MiB"]
        agent = await asyncio.create_subprocess_exec(*args, env=repo_env(), stderr=asyncio.subprocess.PIPE)
        try:
            for _ in range(240 * 200):  # until the writer waits on the freeze (the final pass is slow: 1 MiB/s)
                if frozen_wait(writer.pid) or agent.returncode is not None:
                    break
                await asyncio.sleep(0.005)
            assert agent.returncode is None, "the agent ended before freezing"
            guardian = guardian_of(agent.pid)
            assert guardian is not None and frozen_wait(writer.pid)
            os.kill(guardian, signal.SIGTERM)
            assert can_write(fs.mountpoint, timeout=30)
            _out, err = await asyncio.wait_for(agent.communicate(), 180)
        finally:
            if agent.returncode is None:
                agent.kill()
                await agent.wait()
        text = err.decode(errors="replace")
        assert agent.returncode == 6, text[-3000:]
        assert "thawed before the final pass ended (signal)" in text, text[-3000:]
        assert writer.poll() is None


async def test_hooks_as_the_quiesce_method_stop_and_restart_the_writer(sshd, tmp_path):
    """--quiesce hooks: the pre hook stops the 'service' (SIGSTOP) and the post hook starts it again;
    the target equals the source as it was while the service was stopped."""
    src = tmp_path / "src.img"
    with open(src, "wb") as f:
        f.truncate(8 * 1024 * 1024)
    churn = ("import os, random, sys, time\n"
             "rng = random.Random(5); fd = os.open(sys.argv[1], os.O_WRONLY)\n"
             "while True:\n"
             "    os.pwrite(fd, rng.randbytes(4096), rng.randrange(2048) * 4096)\n"
             "    time.sleep(0.005)\n")
    p = subprocess.Popen([sys.executable, "-c", churn, str(src)])
    frozen_sum = tmp_path / "frozen.sha256"
    try:
        rc, s, err = await run_cli(
            sshd, str(src), tmp_path / "dst.img", "--interval", "0", "--cutover-after", "1", "--quiesce", "hooks",
            "--pre-hook", f"kill -STOP {p.pid} && sleep 0.2 && sha256sum {src} | cut -d' ' -f1 > {frozen_sum}",
            "--post-hook", f"kill -CONT {p.pid}", state=tmp_path / "state")
        assert rc == 0, err
        assert p.poll() is None and Path(f"/proc/{p.pid}/stat").read_text().split(")")[1].split()[0] != "T"
    finally:
        p.kill()
        p.wait()
    assert s is not None and s["verified"] and [h["name"] for h in s["cutover"]["hooks"]] == ["pre", "post"]
    assert hashlib.sha256((tmp_path / "dst.img").read_bytes()).hexdigest() == frozen_sum.read_text().strip()
