"""A real OpenSSH ``sshd`` on 127.0.0.1, for tests and benchmarks.

One implementation, two ways in:

* :class:`LoopbackSshd` — a plain context manager (used by ``bench/`` and ``scripts/``)::

      with LoopbackSshd(Path("/tmp/x")) as server:
          subprocess.run([*server.ssh_argv(), "echo ok"])

* a command line for shell scripts (``scripts/demo``): ``python3 -m tests.sshd start DIR`` starts a
  detached sshd and prints ``SSHD_PORT=...`` style shell assignments (also written to ``DIR/sshd.env``);
  ``python3 -m tests.sshd stop DIR`` stops it.

* pytest fixtures (this module is a pytest plugin: ``pytest_plugins = ["tests.sshd"]``):

  - ``sshd``          a fresh server per test (function scope),
  - ``sshd_session``  one shared server for the whole session (do not stop or reconfigure it).

Contract of a started server:

* it listens on ``host``:``port`` (127.0.0.1, a port that was free), accepts only public-key login
  for ``user`` (the current user; ``PermitRootLogin prohibit-password`` when that is root) with the
  ed25519 key at ``client_key``;
* ``known_hosts`` is an OpenSSH known_hosts file holding exactly its host key for
  ``[127.0.0.1]:port``; ``host_key_line`` is that key as ``"ssh-ed25519 AAAA..."``;
* ``Subsystem sftp internal-sftp`` is enabled; sshd logs (LogLevel ERROR) go to ``log_path``;
* ``set_env`` (optional) is exported into every session via sshd's ``SetEnv`` (e.g. ``PYTHONPATH``
  so a receiver runs from this checkout); ``extra_config`` lines are appended to sshd_config
  (e.g. ``Ciphers aes128-gcm@openssh.com`` to force one cipher on every client).

``stop()`` kills the listener and every per-connection sshd it forked; it is idempotent.
Needs root (sshd privilege separation wants ``/run/sshd``) and ``/usr/sbin/sshd``
(``scripts/test`` installs openssh-server).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

try:  # the fixtures need pytest; the context manager (bench/, scripts/demo) does not
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

# One cipher for everything we compare (asyncssh, ssh, rsync over ssh): the fast one on this box.
CIPHER = "aes128-gcm@openssh.com"


def find_sshd() -> str:
    """Path of the sshd binary, or raise FileNotFoundError saying how to get it."""
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("sshd not found: install openssh-server (./scripts/test does it as root)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def _children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # comm may contain spaces/parens: fields after the last ')' are: state ppid ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


class LoopbackSshd:
    """A real sshd on 127.0.0.1 with generated keys in ``workdir`` (see module docstring)."""

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        *,
        user: str | None = None,
        set_env: Mapping[str, str] | None = None,
        extra_config: Sequence[str] = (),
        start_timeout: float = 15.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.user = user or getpass.getuser()
        self.set_env = dict(set_env or {})
        self.extra_config = list(extra_config)
        self.start_timeout = start_timeout
        self.port = 0
        self.host_key = self.workdir / "ssh_host_ed25519_key"
        self.client_key = self.workdir / "id_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        self.authorized_keys = self.workdir / "authorized_keys"
        self.config_path = self.workdir / "sshd_config"
        self.pid_file = self.workdir / "sshd.pid"
        self.log_path = self.workdir / "sshd.log"
        self.host_key_line = ""
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LoopbackSshd:
        """Generate keys, write the config, start sshd and wait until it speaks SSH on the port."""
        sshd = find_sshd()
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        for key, comment in ((self.host_key, "migrated-test-host"), (self.client_key, "migrated-test-client")):
            if not key.exists():
                _keygen(key, comment)
        self.host_key_line = " ".join(Path(f"{self.host_key}.pub").read_text().split()[:2])
        self.authorized_keys.write_text(Path(f"{self.client_key}.pub").read_text())
        os.chmod(self.authorized_keys, 0o600)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

        last_error = ""
        for _attempt in range(5):  # another process may grab the free port between probe and bind
            self.port = _free_port()
            self._write_config()
            self.known_hosts.write_text(f"[{self.host}]:{self.port} {self.host_key_line}\n")
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [sshd, "-D", "-e", "-f", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            if self._wait_ready():
                return self
            last_error = self.log_path.read_text(errors="replace")[-2000:]
            self._kill()
        raise RuntimeError(f"sshd did not start on 127.0.0.1 (config {self.config_path}); its log:\n{last_error}")

    def _write_config(self) -> None:
        lines = [
            f"ListenAddress {self.host}",
            f"Port {self.port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.pid_file}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "MaxStartups 64",
            "MaxSessions 64",
            f"AllowUsers {self.user}",
            "Subsystem sftp internal-sftp",
            "LogLevel ERROR",
        ]
        if self.set_env:
            lines.append("SetEnv " + " ".join(f'{k}="{v}"' for k, v in self.set_env.items()))
        lines += self.extra_config
        self.config_path.write_text("\n".join(lines) + "\n")

    def _wait_ready(self) -> bool:
        """True once the port answers with an SSH banner from our process; False if sshd died."""
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0) as s:
                    if s.recv(64).startswith(b"SSH-2.0-"):
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def drop_connections(self) -> int:
        """Kill every per-connection sshd (clients see the connection cut); the listener stays.

        Returns how many were killed.
        """
        if self._proc is None:
            return 0
        killed = 0
        for pid in _children_of(self._proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        return killed

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for pid in _children_of(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop sshd and its per-connection children. Safe to call twice."""
        self._kill()

    def shell_env(self) -> dict[str, str]:
        """What a shell script needs to reach this server (see :func:`main`)."""
        return {
            "SSHD_PID": str(self.pid or ""),
            "SSHD_HOST": self.host,
            "SSHD_PORT": str(self.port),
            "SSHD_USER": self.user,
            "SSHD_KEY": str(self.client_key),
            "SSHD_KNOWN_HOSTS": str(self.known_hosts),
        }

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def __enter__(self) -> LoopbackSshd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- ways to talk to it ------------------------------------------------------------------

    def target(self, path: str) -> str:
        """``user@host:port:/path`` — the TARGET syntax of ``migrated sync``."""
        return f"{self.user}@{self.host}:{self.port}:{path}"

    def ssh_options(self) -> list[str]:
        """OpenSSH client options (no host; also valid for sftp/scp): key, known_hosts, strict, one cipher."""
        return [
            "-i", str(self.client_key),
            "-o", f"Port={self.port}",
            "-o", f"Ciphers={CIPHER}",
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "Compression=no",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip

    def ssh_argv(self) -> list[str]:
        """``ssh ... user@host``: append the remote command."""
        return ["ssh", *self.ssh_options(), f"{self.user}@{self.host}"]

    def rsync_rsh(self) -> str:
        """Value for ``rsync -e`` (shell-quoted ssh command line)."""
        return shlex.join(["ssh", *self.ssh_options()])

    def asyncssh_options(self) -> dict[str, object]:
        """Keyword arguments for ``asyncssh.connect`` (host keys verified against ``known_hosts``)."""
        return {
            "host": self.host,
            "port": self.port,
            "username": self.user,
            "client_keys": [str(self.client_key)],
            "known_hosts": str(self.known_hosts),
            "encryption_algs": [CIPHER],
        }


# -- command line (for shell scripts) ------------------------------------------------------------


def stop_detached(workdir: Path) -> bool:
    """Stop the sshd that ``start`` left running for ``workdir``. True if one was running."""
    env_file = Path(workdir) / "sshd.env"
    if not env_file.exists():
        return False
    values = dict(line.split("=", 1) for line in env_file.read_text().split() if "=" in line)
    pid = int(values.get("SSHD_PID", "0").strip("'") or 0)
    env_file.unlink()
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if b"sshd" not in cmdline:  # the pid was reused by something else: leave it alone
        return False
    for child in _children_of(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    return True


def main(argv: list[str] | None = None) -> int:
    """``start DIR [--set-env K=V ...]`` or ``stop DIR``."""
    import argparse

    p = argparse.ArgumentParser(prog="python3 -m tests.sshd", description="a loopback sshd for scripts")
    p.add_argument("action", choices=["start", "stop"])
    p.add_argument("workdir", type=Path)
    p.add_argument("--set-env", action="append", default=[], metavar="K=V", help="SetEnv for sessions")
    args = p.parse_args(argv)
    if args.action == "stop":
        stop_detached(args.workdir)
        return 0
    set_env = dict(item.split("=", 1) for item in args.set_env)
    server = LoopbackSshd(args.workdir, set_env=set_env).start()  # not stopped: it outlives this process
    text = "".join(f"{k}={shlex.quote(v)}\n" for k, v in server.shell_env().items())
    (args.workdir / "sshd.env").write_text(text)
    print(text, end="")
    return 0


# -- pytest fixtures (only when pytest is importable) -------------------------------------------

if pytest is not None:

    def _start_or_fail(workdir: Path) -> LoopbackSshd:
        try:
            return LoopbackSshd(workdir).start()
        except FileNotFoundError as exc:
            pytest.fail(str(exc))

    @pytest.fixture
    def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
        """A fresh real sshd on 127.0.0.1 for one test (see :class:`LoopbackSshd`)."""
        server = _start_or_fail(tmp_path_factory.mktemp("sshd"))
        try:
            yield server
        finally:
            server.stop()

    @pytest.fixture(scope="session")
    def sshd_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
        """One real sshd shared by the whole session: do not stop it or change its files."""
        server = _start_or_fail(tmp_path_factory.mktemp("sshd-session"))
        try:
            yield server
        finally:
            server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
