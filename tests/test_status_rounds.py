"""The rounds line of a continuous task (pure): what migratectl status, the console CLI and the web UI show."""

from __future__ import annotations

from migrated.model.status import TaskProgress, continuous_line


def test_one_shot_task_has_no_rounds_line() -> None:
    assert continuous_line(TaskProgress(task_id="t", state="transferring")) == ""


def test_rounds_line_and_not_converging() -> None:
    p = TaskProgress(task_id="t", state="syncing", round=4, round_changed_bytes=3 << 20, lag_seconds=75,
                     forecast_seconds=2.25, advice="keep-going", convergence="rounds are shrinking")
    assert continuous_line(p) == "round 4, changed 3.0 MiB per round, lag 01:15, forecast of the final pass 2.2 s"
    p.advice, p.convergence = "not-converging", "not converging: 80 MB/s changing, 40 MB/s sent"
    assert continuous_line(p).endswith("; not converging: 80 MB/s changing, 40 MB/s sent")


def test_downtime_after_the_cutover_and_round_trip() -> None:
    p = TaskProgress(task_id="t", state="success", round=6, downtime_seconds=0.84)
    assert continuous_line(p) == "round 6, downtime 0.84 s"
    assert TaskProgress.from_dict(p.to_dict()) == p
