"""TaskSpec (pure): the task's settings with their defaults, what CreateTask validates into and what
the agent reads; a mistyped setting names its key; no `spec.get(` left in the agent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from migrated.console import params as P
from migrated.model.taskspec import CHECKS, SpecError, TaskSpec

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH0wAmIxZ0mQ7T0Yx3b5sW8bD3u4Xk0kq9E3nPpq1kWw"
BASE = {"SourceId": "src-1", "TaskName": "web", "Region": "ap-guangzhou", "TargetType": "image",
        "ImageName": "img", "TargetSsh": "root@203.0.113.7", "TargetHostKey": HOST_KEY}


def test_defaults_are_defined_once() -> None:
    s = TaskSpec()
    assert (s.effective_quiesce, s.effective_freeze_budget, s.effective_hook_timeout) == ("freeze", 30.0, 300.0)
    assert (s.effective_snapshot_size, s.effective_round_interval) == ("10%ORIGIN", 60.0)
    assert (s.read_limit_bps, s.bandwidth_bps, s.hooks, s.has_cutover) == (None, None, (), False)
    assert TaskSpec(round_interval_seconds=0).effective_round_interval == 0.0  # 0 is a setting, not "unset"


def test_create_task_validates_into_the_spec_and_round_trips() -> None:
    p = P.CreateTask.model_validate({**BASE, "ContinuousSync": True, "Quiesce": "lvm", "SnapshotSize": "2G",
                                     "BandwidthLimitKBps": 512, "IgnoreChecks": ["selinux", "clock_skew"],
                                     "DiskMapping": [{"Source": "/dev/vdb", "Target": "/dev/vdc"}]})
    s = p.spec()
    assert (s.continuous_sync, s.quiesce, s.snapshot_size, s.bandwidth_bps) == (True, "lvm", "2G", 512 * 1024)
    assert s.ignore_checks == ("selinux", "clock_skew") and s.disk_mapping == (("/dev/vdb", "/dev/vdc"),)
    assert TaskSpec.from_api(s.to_api()) == s
    assert s.to_api()["FreezeBudgetSeconds"] is None  # not given: null in the API, the default on the agent


def test_create_task_refuses_unknown_checks_by_name() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as ei:
        P.CreateTask.model_validate({**BASE, "IgnoreChecks": ["selinux", "virtio"]})
    code, msg = P.validation_error(ei.value)
    assert code == "InvalidParameterValue" and "IgnoreChecks.1" in msg and "'virtio'" in msg and "virtio_drivers" in msg
    with pytest.raises(ValidationError):
        P.CreateTask.model_validate({**BASE, "IgnoreChecks": "all"})


@pytest.mark.parametrize(("spec", "key", "words"), [
    ({"Quiesce": "frezee"}, "Quiesce", "must be one of freeze, hooks, none, lvm"),
    ({"Checksum": "yes"}, "Checksum", "true or false"),
    ({"BandwidthLimitKBps": "100"}, "BandwidthLimitKBps", "whole number"),
    ({"BandwidthLimitKBps": True}, "BandwidthLimitKBps", "whole number"),
    ({"FreezeBudgetSeconds": 0}, "FreezeBudgetSeconds", "1 or more"),
    ({"HookTimeoutSeconds": "5"}, "HookTimeoutSeconds", "a whole number of seconds"),
    ({"HookTimeoutSeconds": 2.5}, "HookTimeoutSeconds", "a whole number of seconds"),
    ({"SnapshotSize": "lots"}, "SnapshotSize", "not a snapshot size"),
    ({"PreHook": ["a"]}, "PreHook", "a string"),
    ({"DiskMapping": [{"Source": "/dev/vdb"}]}, "DiskMapping.0", "Target"),
    ({"IgnoreChecks": ["selinux", "virtio"]}, "IgnoreChecks", "unknown check 'virtio'"),
    ({"IgnoreChecks": "some"}, "IgnoreChecks", "list of check names"),
    ({"RoundIntervalSeconds": float("nan")}, "RoundIntervalSeconds", "a whole number of seconds"),
])
def test_a_mistyped_setting_names_its_key(spec: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(SpecError) as ei:
        TaskSpec.from_api({"TaskId": "task-1", **spec})
    assert ei.value.key == key and str(ei.value).startswith(f"setting {key}: ") and words in str(ei.value)


def test_absent_null_and_unknown_keys() -> None:
    assert TaskSpec.from_api({"TaskId": "t", "Quiesce": None, "SomethingNewer": 1}) == TaskSpec(task_id="t")
    assert TaskSpec.from_api({"IgnoreChecks": "all"}).skips_every_check  # an older spelling: every check
    assert not TaskSpec.from_api({"IgnoreChecks": ["selinux"]}).skips_every_check
    assert TaskSpec(ignore_checks=CHECKS).skips_every_check
    assert TaskSpec.from_api({"FreezeBudgetSeconds": 30.0}).freeze_budget_seconds == 30  # whole, as JSON may spell it



def test_no_spec_get_left_in_the_agent() -> None:
    """The agent reads its task's settings through TaskSpec, never by looking keys up in the dict."""
    root = Path(__file__).resolve().parent.parent / "migrated" / "agent"
    found = [f"{f.relative_to(root)}:{n}" for f in sorted(root.rglob("*.py"))
             for n, line in enumerate(f.read_text().splitlines(), 1) if re.search(r"\bspec\.get\(", line)]
    assert found == []
