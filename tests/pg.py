"""A real PostgreSQL server for tests: Debian's ``postgresql`` package (server 15), run with
``initdb`` + ``pg_ctl`` in a temp dir as an unprivileged user (``postgres`` when the tests run as
root), listening only on a Unix socket in that dir, password authentication (scram) on.

:func:`pg_server` (session-scoped; one server per xdist worker and per test module that imports
it) starts it on first use and removes it at the end; :meth:`PgServer.create_database` gives each
test its own database. Missing binaries fail the test with the package to install: never a silent
skip (``.ci/run`` and ``scripts/test`` install them).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "migrated"  # the superuser initdb makes; the tests connect as it


def pg_bindir() -> Path:
    """/usr/lib/postgresql/15/bin (or $PG_BINDIR); a clear failure when it is not there."""
    explicit = os.environ.get("PG_BINDIR")
    candidates = [Path(explicit)] if explicit else [Path("/usr/lib/postgresql/15/bin"),
                                                     *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file():
            return c
    pytest.fail("PostgreSQL server binaries not found (initdb/pg_ctl in /usr/lib/postgresql/15/bin): "
                "install Debian's `postgresql` package (apt-get install -y postgresql; .ci/run and "
                "scripts/test do), or set PG_BINDIR", pytrace=False)


class PgServer:
    def __init__(self, root: Path, bindir: Path) -> None:
        self.root = root
        self.bindir = bindir
        self.data = root / "data"
        self.socket_dir = root  # short: a Unix socket path must fit in 107 bytes
        self.password = secrets.token_hex(16)
        self.password_file = root / "password"
        self.log = root / "server.log"
        self._owner: tuple[int, int] | None = None
        self._n = 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kw = {}
        if self._owner is not None:
            kw = {"user": self._owner[0], "group": self._owner[1], "extra_groups": []}
        r = subprocess.run(list(args), capture_output=True, text=True, timeout=120, cwd=self.root,
                           env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}, **kw)
        if check and r.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise AssertionError(f"{' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}{log}")
        return r

    def start(self) -> None:
        if os.geteuid() == 0:  # initdb refuses root: run the server as an unprivileged user
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pw = pwd.getpwnam("nobody")
            self._owner = (pw.pw_uid, pw.pw_gid)
            os.chown(self.root, *self._owner)
        self.password_file.write_text(self.password + "\n")
        os.chmod(self.password_file, 0o644)  # initdb (the server's user) reads it; a throwaway secret
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER, "--pwfile", str(self.password_file),
                  "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8")
        self.password_file.chmod(0o600)
        if self._owner is not None:
            os.chown(self.password_file, 0, 0)
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", f"-k {self.socket_dir} -c listen_addresses='' -c max_connections=200", "start")

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def dsn(self, database: str = "postgres") -> str:
        """A DSN without the password (that is in :attr:`password_file`)."""
        return f"postgresql://{USER}@/{database}?host={self.socket_dir}"

    def create_database(self, name: str | None = None) -> str:
        self._n += 1
        name = name or f"t{self._n}_{secrets.token_hex(4)}"
        r = subprocess.run([str(self.bindir / "createdb"), "-h", str(self.socket_dir), "-U", USER, name],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PGPASSWORD": self.password})
        assert r.returncode == 0, r.stderr
        return name


@contextlib.contextmanager
def running_server() -> Iterator[PgServer]:
    bindir = pg_bindir()
    root = Path(tempfile.mkdtemp(prefix="pg-"))
    server = PgServer(root, bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    with running_server() as server:
        yield server
