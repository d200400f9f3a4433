"""The control socket: modes from birth, stale vs live sockets, JSON errors, migratectl, permissions."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from migrated.cli import ctl
from migrated.control.client import ControlClient
from migrated.control.server import ControlServer
from migrated.errors import DaemonAlreadyRunning, DaemonNotRunning, StateError, UsageError
from tests.conftest import REPO, cli, repo_env
from tests.control_helper import MemoryBackend

GROUP = "daemon"  # exists on Debian; stands in for the 'migrated' group


@pytest.fixture
def rundir() -> Iterator[Path]:
    """A directory other users can traverse (pytest's tmp dirs are root-only)."""
    base = Path(tempfile.mkdtemp(prefix="migrated-ctl-", dir="/tmp"))
    base.chmod(0o755)
    yield base / "run"
    shutil.rmtree(base, ignore_errors=True)


async def test_socket_and_directory_modes(rundir: Path) -> None:
    path = str(rundir / "control.sock")
    async with ControlServer(path, GROUP, MemoryBackend()):
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == grp.getgrnam(GROUP).gr_gid
        d = os.stat(rundir)
        assert stat.S_IMODE(d.st_mode) == 0o750 and d.st_gid == grp.getgrnam(GROUP).gr_gid
        assert [p.name for p in rundir.iterdir()] == ["control.sock"]  # no temp name left behind
    assert not os.path.exists(path)


async def test_root_only_without_group(rundir: Path) -> None:
    path = str(rundir / "control.sock")
    async with ControlServer(path, None, MemoryBackend()):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(rundir).st_mode) == 0o700


async def test_stale_socket_is_replaced_live_one_refused(rundir: Path) -> None:
    path = str(rundir / "control.sock")
    rundir.mkdir(mode=0o750)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: a crashed daemon's socket
    async with ControlServer(path, GROUP, MemoryBackend()):
        assert (await ControlClient(path).status())["source_id"] == "src-test"
        with pytest.raises(DaemonAlreadyRunning, match="answers"):
            await ControlServer(path, GROUP, MemoryBackend()).start()
        assert (await ControlClient(path).status())["source_id"] == "src-test"  # still ours


async def test_unknown_group_names_the_key(rundir: Path) -> None:
    with pytest.raises(UsageError, match=r"control\.group"):
        await ControlServer(str(rundir / "c.sock"), "no-such-group-xyz", MemoryBackend()).start()


async def test_api_and_errors(rundir: Path) -> None:
    path = str(rundir / "control.sock")
    async with ControlServer(path, GROUP, MemoryBackend()):
        client = ControlClient(path)
        status = await client.status()
        assert status["api_version"] == 1 and status["task"]["state"] == "transferring"
        assert (await client.pause())["task"]["state"] == "paused"
        with pytest.raises(StateError, match="cannot pause a task that is paused"):
            await client.pause()
        assert (await client.resume())["task"]["state"] == "transferring"
        assert (await client.set_bandwidth(1 << 20))["bandwidth_bps"] == 1 << 20
        with pytest.raises(UsageError, match="bps must be"):
            await client.request("POST", "/v1/bandwidth", {"bps": -1})
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as s:
            async def call(method: str, url: str, data: bytes | None = None) -> tuple[int, dict]:
                async with s.request(method, "http://x" + url, data=data) as r:
                    return r.status, await r.json()
            code, body = await call("POST", "/v1/bandwidth", b"{not json")
            assert code == 400 and "not JSON" in body["error"]["message"]
            code, body = await call("GET", "/v2/status")
            assert code == 404 and "/v1/status" in body["error"]["message"]
            code, body = await call("POST", "/v1/status")
            assert code == 405 and "takes GET" in body["error"]["message"]
            code, body = await call("POST", "/v1/pause", b'{"now": true}')
            assert code == 400 and "takes no parameters" in body["error"]["message"]


async def test_client_without_daemon(rundir: Path) -> None:
    with pytest.raises(DaemonNotRunning, match="not running"):
        await ControlClient(str(rundir / "control.sock")).status()


def test_migratectl_daemon_not_running_exit_7(rundir: Path) -> None:
    r = subprocess.run([*cli("migratectl"), "--socket", str(rundir / "control.sock"), "status"],
                       env=repo_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 7
    assert "daemon is not running" in r.stderr


@pytest.fixture
def served(rundir: Path) -> Iterator[str]:
    path = str(rundir / "control.sock")
    proc = subprocess.Popen([sys.executable, "-m", "tests.control_helper", path, GROUP], cwd=REPO,
                            env=repo_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield path
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_ctl(socket_path: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli("migratectl"), "--socket", socket_path, *args], env=repo_env(COLUMNS="120"),
                          capture_output=True, text=True, timeout=60)


def test_migratectl_commands(served: str) -> None:
    r = run_ctl(served, "status")
    assert r.returncode == 0, r.stderr
    for words in ("src-test", "task-42", "transferring", "/dev/vdb", "4.0 GiB / 10.0 GiB", "40%", "100.0 MiB/s",
                  "ETA 01:01"):
        assert words in r.stdout, (words, r.stdout)
    r = run_ctl(served, "status", "--json")
    assert json.loads(r.stdout)["task"]["bytes_done"] == 4 << 30
    assert run_ctl(served, "pause").returncode == 0
    r = run_ctl(served, "pause")
    assert r.returncode == 2 and "cannot pause a task that is paused" in r.stderr
    r = run_ctl(served, "bandwidth", "50M")
    assert r.returncode == 0 and json.loads(run_ctl(served, "status", "--json").stdout)["bandwidth_bps"] == 50 << 20
    r = run_ctl(served, "bandwidth", "fast")
    assert r.returncode == 2 and "not a rate" in r.stderr
    r = run_ctl(served, "check")
    assert r.returncode == 0 and "PASS" in r.stdout and "selinux" in r.stdout


def _as_user_ctl(socket_path: str, user: str, groups: list[int]) -> tuple[int, str]:
    """Fork; in the child drop to ``user`` with supplementary ``groups`` and run migratectl status."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 99
        try:
            os.dup2(wfd, 1)
            os.dup2(wfd, 2)
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 (pytest replaced sys.stdout)
            sys.stderr = sys.stdout
            pw = pwd.getpwnam(user)
            os.setgroups(groups)
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            code = ctl.main(["--socket", socket_path, "status", "--json"])
            sys.stdout.flush()
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        output = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output


def test_non_permitted_user_cannot_connect(served: str) -> None:
    code, out = _as_user_ctl(served, "nobody", [])
    assert code == 8, out
    assert "permission denied" in out and "group" in out
    code, out = _as_user_ctl(served, "nobody", [grp.getgrnam(GROUP).gr_gid])
    assert code == 0, out
    assert json.loads(out)["source_id"] == "src-test"


def test_parse_rate() -> None:
    assert ctl.parse_rate("50M") == 50 << 20
    assert ctl.parse_rate("1.5G") == int(1.5 * (1 << 30))
    assert ctl.parse_rate("800KiB/s") == 800 << 10
    assert ctl.parse_rate("unlimited") is None and ctl.parse_rate("0") is None


class RoundsBackend(MemoryBackend):
    async def set_rounds(self, interval: float | None, read_limit_bps: int | None) -> dict:
        return {"interval_seconds": interval, "read_limit_bps": read_limit_bps}


async def test_numbers_and_bodies_a_client_sends_are_bounded(rundir: Path) -> None:
    """POST /v1/bandwidth took 2**70 (the console caps bandwidth; the daemon now does too), and a deeply
    nested body was a 500 InternalError: every bad body is a 4xx with a JSON error."""
    from migrated.control import MAX_BPS

    path = str(rundir / "control.sock")
    async with ControlServer(path, GROUP, RoundsBackend()), \
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as s:
        async def call(url: str, data: bytes) -> tuple[int, dict]:
            async with s.post("http://x" + url, data=data) as r:
                return r.status, await r.json()

        for body, words in [
            (json.dumps({"bps": 2**70}).encode(), "bps must be a whole number 0-"),
            (json.dumps({"bps": MAX_BPS + 1}).encode(), "bps must be"),
            (b'{"bps": 1e400}', "bps must be"),
            (b'{"bps": "50M"}', "bps must be"),
            (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
            (b'{"bps": ' + b"9" * 5000 + b"}", "not JSON"),
            (b"\xff\xfe{}", "not JSON"),
            (b"[1]", "must be a JSON object"),
        ]:
            code, reply = await call("/v1/bandwidth", body)
            assert code == 400 and words in reply["error"]["message"], (body[:30], code, reply)
            assert len(reply["error"]["message"]) < 300
        code, reply = await call("/v1/bandwidth", json.dumps({"bps": 2**70}).encode())
        assert reply["error"]["code"] == "OutOfRange" and reply["error"]["exit_code"] == 2
        code, reply = await call("/v1/bandwidth", b"{" + b" " * (70 * 1024) + b"}")
        assert code == 413 and reply["error"]["code"] == "UsageError", reply
        for body in ({"read_limit_bps": 2**70}, {"interval_seconds": float("nan")},
                     {"interval_seconds": float("inf")}):
            code, reply = await call("/v1/rounds", json.dumps(body).encode())
            assert code == 400, (body, reply)
        code, reply = await call("/v1/bandwidth", json.dumps({"bps": MAX_BPS}).encode())
        assert code == 200 and reply["bandwidth_bps"] == MAX_BPS
        code, reply = await call("/v1/rounds", json.dumps({"read_limit_bps": MAX_BPS}).encode())
        assert code == 200 and reply["read_limit_bps"] == MAX_BPS


def test_with_json_logs_every_line_the_server_writes_is_one_json_object(rundir: Path) -> None:
    """Bad HTTP on the control socket made aiohttp write multi-line tracebacks into a --log-format json log."""
    import signal

    path = str(rundir / "control.sock")
    proc = subprocess.Popen([sys.executable, "-m", "tests.control_helper", path, GROUP, "json"], cwd=REPO,
                            env=repo_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for raw in (b"GET /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                    b"GET /v1/status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                    b"\x00\x01\x02 garbage\r\n\r\n"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                c.settimeout(30)
                c.connect(path)
                c.sendall(raw)
                assert c.recv(4096).startswith(b"HTTP/1.")  # answered 400: the record is logged by then
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    lines = err.splitlines()
    assert lines, "aiohttp logs a bad request (Error handling request)"
    records = [json.loads(line) for line in lines]  # every line is JSON ...
    assert all(isinstance(r, dict) for r in records), lines  # ... and an object
    assert any(r.get("logger") == "aiohttp.server" and "Traceback" in r.get("exception", "") for r in records), lines
