"""The one error tree (migrated/errors.py): every class carries its exit code and its API code,
the console CLI's exit code follows the console's code, and the renderers of what agents report
never raise. Pure: no servers."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from migrated import errors as E
from migrated.model.status import (
    DiskProgress,
    TaskProgress,
    continuous_line,
    format_bytes,
    format_duration,
    rounds_settings_line,
)

REPO = Path(__file__).resolve().parent.parent


def all_classes() -> list[type[E.MigratedError]]:
    out, todo = [], [E.MigratedError]
    while todo:
        c = todo.pop()
        if c.__module__ == "migrated.errors":
            out.append(c)
        todo.extend(c.__subclasses__())
    return out


def test_every_class_carries_an_exit_code_and_a_tencent_style_api_code():
    for cls in all_classes():
        assert isinstance(cls.exit_code, E.ExitCode), cls
        if cls is not E.ConsoleError:  # its code is the console's
            assert re.fullmatch(r"[A-Z][A-Za-z]+(\.[A-Z][A-Za-z]+)*", cls.api_code), cls


def test_the_tree_in_the_docstring_and_the_docs_name_every_class():
    doc = E.__doc__ or ""
    table = (REPO / "docs" / "exit-codes.md").read_text()
    for cls in all_classes():
        row = next((line for line in doc.splitlines() if re.search(rf"[─ ]{cls.__name__}\b", line)), None)
        assert row is not None, f"{cls.__name__} is not in the tree in migrated/errors.py's docstring"
        if cls is not E.ConsoleError:
            assert f" {int(cls.exit_code)} " in row and f" {cls.api_code}" in row, row
        assert f"`{cls.__name__}`" in table, f"{cls.__name__} is not in docs/exit-codes.md"


def test_detail_refines_the_api_code_and_keeps_the_rest():
    e = E.ResourceNotFound("task task-x does not exist", detail="Task")
    assert e.api_code == "ResourceNotFound.Task" and E.ResourceNotFound.api_code == "ResourceNotFound"
    assert e.exit_code == E.ExitCode.USAGE and str(e) == "task task-x does not exist"
    assert E.AuthError("no", detail="SignatureFailure").api_code == "AuthFailure.SignatureFailure"


@pytest.mark.parametrize(("code", "exit_code"), [
    ("InvalidParameter", 2), ("InvalidParameterValue", 2), ("MissingParameter", 2), ("UnknownParameter", 2),
    ("ResourceNotFound.Task", 2), ("ResourceNotFound.Source", 2), ("ResourceInUse.Source", 2),
    ("FailedOperation.ActionDenied", 2), ("FailedOperation.LastAdminKey", 2), ("FailedOperation.NotContinuous", 2),
    ("FailedOperation.IllegalStateTransition", 2), ("InvalidParameter.TargetInstance", 2),
    ("RequestSizeLimitExceeded", 2), ("InvalidAction", 2), ("NoSuchVersion", 2),
    ("AuthFailure.SignatureFailure", 3), ("AuthFailure.SignatureExpire", 3), ("AuthFailure.UnauthorizedOperation", 3),
    ("FailedOperation.SourceOffline", 3), ("FailedOperation.CloudApi", 3), ("InternalError.Busy", 3),
    ("FailedOperation.TargetInstance", 4),
    ("InternalError", 1),
    ("Something.NewerThanThisClient", 3),  # the console spoke of something this version does not know
])
def test_the_console_clis_exit_code_follows_the_consoles_code(code, exit_code):
    assert E.exit_code_for(code) == exit_code
    assert E.ConsoleError(code, "m").exit_code == exit_code


def test_a_raised_class_and_its_code_agree():
    """What a console raises and what its client then exits with are the same exit code."""
    for cls in all_classes():
        if cls in (E.ConsoleError, E.ConfigError, E.CloudError):
            continue
        err = cls("m")
        assert E.exit_code_for(err.api_code) == err.exit_code, cls


def test_api_error_is_gone():
    for path in (REPO / "migrated").rglob("*.py"):
        assert "ApiError" not in path.read_text(), path


# ---------------------------------------------------------------- renderers of what agents report

BAD = [10**4000, -(10**4000), 2**63, float("inf"), float("-inf"), float("nan"), "12", None, True, [], {}]


@pytest.mark.parametrize("value", BAD)
def test_renderers_never_raise(value):
    assert isinstance(format_bytes(value), str)
    assert isinstance(format_duration(value), str)
    d = DiskProgress(name="/dev/vda", target="/dev/vda", bytes_total=value, bytes_done=value)  # type: ignore[arg-type]
    assert 0.0 <= d.fraction <= 1.0
    p = TaskProgress(task_id="t", state="syncing", disks=[d], rate_bps=value, eta_seconds=value,  # type: ignore[arg-type]
                     round=3, round_changed_bytes=value, lag_seconds=value, forecast_seconds=value,  # type: ignore[arg-type]
                     downtime_seconds=value, round_interval_seconds=value, read_limit_bps=value)  # type: ignore[arg-type]
    assert isinstance(continuous_line(p), str) and isinstance(rounds_settings_line(p), str)


def test_renderers_show_what_they_showed():
    assert format_bytes(5) == "5 B" and format_bytes(1536) == "1.5 KiB" and format_bytes(2**63 - 1) == "8388608.0 TiB"
    assert format_bytes(float("inf")) == "?" and format_bytes(10**4000) == "?"
    assert format_duration(65) == "01:05" and format_duration(3725) == "1:02:05" and format_duration(None) == "--:--"
    assert format_duration(math.inf) == "--:--"


def test_storage_refuses_with_the_trees_out_of_range():
    """One OutOfRange: what storage's check_int64 raises is answered InvalidParameterValue, not InternalError."""
    from migrated.console.storage import OutOfRange, check_int64

    assert OutOfRange is E.OutOfRange and issubclass(OutOfRange, ValueError)
    with pytest.raises(E.InvalidParameterValue) as ei:
        check_int64("offset", 2**63)
    assert ei.value.api_code == "InvalidParameterValue" and ei.value.exit_code == E.ExitCode.USAGE
