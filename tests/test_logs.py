"""Log output: tracebacks without local variables, and with --log-format json one JSON object a
line whatever writes it (structlog, the logging module, warnings, an uncaught exception)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest
import structlog

from migrated import logs
from tests.conftest import repo_env

SECRET = "TC3-HMAC-SHA256 Credential=AKIDplanted/2026-12-08/migrate/tc3_request, Signature=f00dfeedplanted"


@pytest.fixture
def restore():
    yield
    logs.configure("info", "console")


def _fail_with_a_secret_in_a_local() -> None:
    headers = {"authorization": SECRET, "host": "console"}  # a frame local, as api_handler's were
    raise ValueError(f"no such key in {len(headers)} headers")


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_tracebacks_are_logged_without_local_variables(fmt, restore) -> None:
    out = io.StringIO()
    logs.configure("info", fmt, stream=out)
    try:
        _fail_with_a_secret_in_a_local()
    except ValueError:
        structlog.get_logger("t").exception("request failed")
        logging.getLogger("aiohttp.server").exception("Error handling request")
    text = out.getvalue()
    assert text.count("ValueError: no such key in 2 headers") == 2, text  # the tracebacks are there ...
    assert "planted" not in text and "Signature=" not in text, text  # ... the locals are not


def test_json_logs_of_the_logging_module_are_one_object_a_line(restore) -> None:
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    try:
        raise RuntimeError("multi\nline")
    except RuntimeError:
        logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=True)
    logging.getLogger("aiohttp.access").info("GET / 200")  # below WARNING: dropped, as before
    lines = out.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["logger"] for r in records] == ["asyncio"], records
    assert "RuntimeError: multi\nline" in records[0]["exception"] and records[0]["level"] == "error"


def test_a_warning_and_an_uncaught_exception_are_one_json_line_each(tmp_path) -> None:
    code = ("import warnings; from migrated import logs; logs.configure('info', 'json'); "
            "warnings.warn('a warning\\nover two lines', UserWarning, stacklevel=1); "
            f"headers = {{'authorization': {SECRET!r}}}; raise RuntimeError('boom')")
    r = subprocess.run([sys.executable, "-c", code], env=repo_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    warned, crashed = (json.loads(line) for line in r.stderr.splitlines())
    assert warned["logger"] == "py.warnings" and "over two lines" in warned["event"]
    assert crashed["event"] == "uncaught exception" and "RuntimeError: boom" in crashed["exception"]
    assert "planted" not in r.stderr


def test_a_failed_sync_writes_its_error_and_no_library_warnings(tmp_path) -> None:
    # asyncssh's import warned "DSA is deprecated" three times, each two lines, before every error
    from tests.conftest import cli
    proc = subprocess.run([*cli("migrated"), "--log-format", "console", "sync", str(tmp_path / "missing.img"),
                           "127.0.0.1:/x"], capture_output=True, text=True, env=repo_env(), timeout=60)
    assert proc.returncode == 6
    assert "DSA" not in proc.stderr and "py.warnings" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"migrated: source {tmp_path / 'missing.img'} does not exist"]
