"""TaskProgress in the console API form (pure): to_api() is what the agent reports, from_api() reads
that, the console's stored form and a task view's Progress; the pydantic ReportTaskProgress takes
exactly what to_api() can send."""

from __future__ import annotations

import pytest

from migrated.console import params as P
from migrated.model.status import DiskProgress, TaskProgress, continuous_line

FULL = TaskProgress(
    task_id="task-1", state="syncing", stage="rounds", rate_bps=1.5e6, eta_seconds=12.0, message="ok",
    disks=[DiskProgress(name="/dev/vdb", target="/dev/vdc", bytes_total=1 << 30, bytes_done=1 << 29, bytes_sent=99)],
    phase="waiting", round=3, round_changed_bytes=4096, lag_seconds=7.5, forecast_seconds=1.25,
    convergence="rounds are shrinking", advice="keep-going", downtime_seconds=None,
    round_interval_seconds=30.0, read_limit_bps=20 << 20,
)


def test_round_trip_through_the_api_form() -> None:
    assert TaskProgress.from_api(FULL.to_api()) == FULL


def test_one_shot_report_has_no_optional_fields() -> None:
    p = TaskProgress(task_id="t", state="transferring", stage="transfer")
    assert sorted(p.to_api()) == ["Disks", "EtaSeconds", "Message", "RateBps", "Stage", "State", "TaskId"]
    assert TaskProgress.from_api(p.to_api()) == p


def test_report_validates_against_the_api_model_and_names_every_field() -> None:
    body = {"SourceId": "src-1", **FULL.to_api(), "DowntimeSeconds": 0.5}
    P.ReportTaskProgress.model_validate(body)
    assert set(body) == set(P.ReportTaskProgress.model_fields), "to_api() and ReportTaskProgress drifted apart"


def test_view_has_every_field_and_the_totals() -> None:
    v = FULL.to_view()
    assert (v["BytesTotal"], v["BytesDone"], v["Percent"]) == (1 << 30, 1 << 29, 50.0)
    assert (v["Round"], v["RoundIntervalSeconds"], v["ReadLimitKBps"]) == (3, 30.0, 20480)
    empty = TaskProgress.from_api({}).to_view()
    assert (empty["Phase"], empty["Round"], empty["RoundIntervalSeconds"], empty["ReadLimitKBps"]) == ("", None, None,
                                                                                                     None)
    assert empty["Percent"] == 0.0 and empty["Disks"] == []
    # the CLI renders from a view: the rounds line comes out the same
    assert continuous_line(TaskProgress.from_api(v)) == continuous_line(FULL)


def test_known_fields_win_over_the_api_form() -> None:
    p = TaskProgress.from_api({**FULL.to_api(), "UpdatedAt": 5.0}, task_id="t2", state="paused", message="m")
    assert (p.task_id, p.state, p.message, p.updated_at) == ("t2", "paused", "m", 5.0)


@pytest.mark.parametrize("odd", [
    {"Disks": "x"}, {"Disks": [1, None]}, {"RateBps": "fast"}, {"Round": 1.5}, {"Round": True},
    {"EtaSeconds": float("inf")}, {"LagSeconds": 10 ** 4000}, {"ReadLimitKBps": "1"}, {"Phase": 3},
    {"Disks": [{"Name": 5, "BytesTotal": "x"}]},
])
def test_odd_values_never_raise(odd: dict[str, object]) -> None:
    p = TaskProgress.from_api(odd)
    continuous_line(p)
    p.to_view()
