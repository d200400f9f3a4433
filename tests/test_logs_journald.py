"""journald native protocol: the daemon's log events arrive as journal fields on our own datagram socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from migrated import logs
from tests.conftest import repo_env


@pytest.fixture
def journal(tmp_path: Path):
    path = str(tmp_path / "journal.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield path, sock
    sock.close()
    logs.configure("info", "console")


def receive(sock: socket.socket) -> dict[str, str]:
    data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 1)
    if fds:  # big message: passed as a memfd
        with os.fdopen(fds[0], "rb") as f:
            f.seek(0)
            data = f.read()
    return logs.decode_journal_datagram(data)


def test_event_fields_become_uppercase_journal_fields(journal) -> None:
    path, sock = journal
    logs.configure("info", "journald", journal_socket=path)
    structlog.get_logger("t").info("stage changed", task_id="task-1", source_id="src-9", stage="transfer",
                                   secret_key="hunter2")
    fields = receive(sock)
    assert fields["TASK_ID"] == "task-1"
    assert fields["SOURCE_ID"] == "src-9"
    assert fields["STAGE"] == "transfer"
    assert fields["PRIORITY"] == "6"
    assert fields["SYSLOG_IDENTIFIER"] == "migrated"
    assert fields["MESSAGE"].startswith("stage changed")
    assert fields["SECRET_KEY"] == "[redacted]"
    assert "hunter2" not in str(fields)


def test_levels_filter_and_map_to_priorities(journal) -> None:
    path, sock = journal
    logs.configure("warning", "journald", journal_socket=path)
    log = structlog.get_logger("t")
    log.info("dropped")
    log.error("kept", reason="disk gone")
    fields = receive(sock)
    assert fields["MESSAGE"].startswith("kept") and fields["PRIORITY"] == "3"
    assert fields["REASON"] == "disk gone"


def test_multiline_and_huge_values(journal) -> None:
    path, sock = journal
    logs.configure("info", "journald", journal_socket=path)
    log = structlog.get_logger("t")
    log.info("two\nlines", detail="a\nb")
    fields = receive(sock)
    assert fields["DETAIL"] == "a\nb" and fields["MESSAGE"].startswith("two\nlines")
    big = "x" * 400_000  # larger than a datagram may be: goes through a memfd
    log.info("big", blob=big)
    assert receive(sock)["BLOB"] == big


def test_field_names_are_sanitised() -> None:
    assert logs.journal_field_name("task-id") == "TASK_ID"
    assert logs.journal_field_name("_private") == "PRIVATE"
    assert logs.journal_field_name("3d") == "F_3D"


def test_auto_picks_journald_only_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    f = tmp_path / "stream"
    with f.open("w") as stream:
        st = os.fstat(stream.fileno())
        assert logs.pick_format(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}) == "journald"
        assert logs.pick_format(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}) == "json"
        assert logs.pick_format(stream, {}) == "json"


def test_auto_in_a_subprocess_whose_stderr_is_the_stream(journal, tmp_path: Path) -> None:
    path, sock = journal
    f = tmp_path / "stderr"
    code = ("import structlog; from migrated import logs; "
            f"logs.configure('info', 'auto', journal_socket={path!r}); "
            "structlog.get_logger().info('hello', task_id='t-7')")
    with f.open("w") as err:
        st = os.fstat(err.fileno())
        subprocess.run([sys.executable, "-c", code], stderr=err, check=True, timeout=30,
                       env=repo_env(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}"))
    assert receive(sock)["TASK_ID"] == "t-7"
    assert f.read_text() == ""
