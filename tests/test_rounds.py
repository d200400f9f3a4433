"""Table tests for the round bookkeeping and convergence decision (pure)."""

from __future__ import annotations

import pytest

from migrated.model.rounds import Advice, Policy, RoundStats, change_rate, mbps, summarize

GB = 1_000_000_000
MB = 1_000_000
DISK = 2 * GB


def rounds(*spec: tuple[float, float, int, int]) -> list[RoundStats]:
    """(started_at, duration, scanned, changed) per round."""
    return [RoundStats(i, s, d, sc, ch) for i, (s, d, sc, ch) in enumerate(spec)]


# full pass: 2 GB in 10 s, of which 2 s reading -> scan 1 GB/s, send 250 MB/s
FULL = (0.0, 10.0, DISK, DISK)

CASES = [
    pytest.param([], Advice.KEEP_GOING, "full pass not finished", id="nothing-yet"),
    pytest.param([FULL], Advice.KEEP_GOING, "first incremental round measures", id="only-full-pass"),
    pytest.param(
        # 1 MB changed in a 12 s window: tiny rate; final pass = 2 s scan + ~0 -> within target 2.5 s
        [FULL, (12.0, 2.0, DISK, 1 * MB)],
        Advice.CUTOVER, "ready for cutover", id="quiet-source-cuts-over"),
    pytest.param(
        # 600 MB changed over 6 s = 100 MB/s, under 250 MB/s send; forecast 2 + 100 MB/s * 4.4 s / 250 MB/s
        # = 3.76 s > 2.5 s, and two incremental rounds are no plateau yet
        [FULL, (12.0, 6.0, DISK, 1000 * MB), (18.0, 4.4, DISK, 600 * MB)],
        Advice.KEEP_GOING, "round 2: 600.0 MB changed, 100 MB/s changing; final pass forecast 3.8 s",
        id="shrinking-keeps-going"),
    pytest.param(
        # 3 GB dirty in a 10 s window = 300 MB/s > 250 MB/s we can send
        [FULL, (10.0, 14.0, DISK, 3 * GB)],
        Advice.NOT_CONVERGING, "not converging: 300 MB/s changing, 250 MB/s sent", id="too-fast"),
    pytest.param(
        # rounds stuck at ~400 MB: forecast 2 + 0.016*... fits the 30 s budget -> propose cutover
        [FULL, (12.0, 3.6, DISK, 400 * MB), (15.6, 3.6, DISK, 400 * MB), (19.2, 3.6, DISK, 395 * MB),
         (22.8, 3.6, DISK, 400 * MB)],
        Advice.CUTOVER, "rounds stopped shrinking", id="plateau-within-budget"),
]


@pytest.mark.parametrize(("spec", "advice", "message"), CASES)
def test_advice_table(spec: list[tuple[float, float, int, int]], advice: Advice, message: str) -> None:
    s = summarize(rounds(*spec), DISK, Policy(downtime_target=2.5, freeze_budget=30))
    assert s.advice is advice, s.message
    assert message in s.message
    assert s.rounds == len(spec)


def test_not_converging_names_both_rates() -> None:
    # 80 MB/s changing against a link that ships 40 MB/s (scan 1 GB/s):
    # full pass 2 s scan + 400 MB in 10 s; round 1: 960 MB dirty after 12 s, 2 s + 24 s
    s = summarize(rounds((0.0, 12.0, DISK, 400 * MB), (12.0, 26.0, DISK, 960 * MB)), DISK)
    assert s.advice is Advice.NOT_CONVERGING
    assert s.message == "not converging: 80 MB/s changing, 40 MB/s sent"


def test_plateau_past_the_freeze_budget_is_not_converging() -> None:
    slow_scan = (0.0, 200.0, DISK, DISK)  # 100 s scan + 100 s send: the final pass alone is > 30 s
    spec = [slow_scan] + [(200.0 + 120 * i, 100.5, DISK, 40 * MB) for i in range(4)]
    s = summarize(rounds(*spec), DISK, Policy(downtime_target=2, freeze_budget=30, plateau_rounds=3))
    assert s.advice is Advice.NOT_CONVERGING
    assert "exceeds the freeze budget of 30 s" in s.message


def test_forecast_scan_plus_send_of_what_changes_during_one_round() -> None:
    # rounds consistent with 1 GB/s scan and 250 MB/s send
    rs = rounds(FULL, (12.0, 2.4, DISK, 100 * MB))
    s = summarize(rs, DISK)
    assert s.scan_rate == pytest.approx(1 * GB)
    assert s.send_rate == pytest.approx(250 * MB)
    assert s.change_rate == pytest.approx(100 * MB / 12.0)
    # 2 s to re-read + (8.33 MB/s * 2.4 s) / 250 MB/s
    assert s.forecast_final == pytest.approx(2.0 + (100 * MB / 12.0) * 2.4 / (250 * MB))


def test_cost_fit_falls_back_when_rounds_cannot_tell_scan_from_send() -> None:
    # only rounds that changed everything they scanned: the cheapest one bounds the scan cost
    s = summarize(rounds((0.0, 10.0, DISK, DISK), (20.0, 12.0, DISK, DISK)), DISK)
    assert s.scan_rate == pytest.approx(DISK / 10.0)
    assert s.send_rate == pytest.approx(DISK / 2.0)  # 12 s - 10 s scan for 2 GB


def test_change_rate_uses_the_window_between_round_starts() -> None:
    assert change_rate(rounds(FULL)) is None
    assert change_rate(rounds(FULL, (20.0, 1.0, DISK, 40 * MB))) == pytest.approx(2 * MB)
    assert change_rate(rounds((5.0, 1, 1, 1), (5.0, 1, 1, 1))) is None  # no window: no rate


def test_all_reading_rounds_have_no_send_rate_and_still_forecast() -> None:
    s = summarize(rounds((0.0, 2.0, DISK, 0), (10.0, 2.0, DISK, 0)), DISK)
    assert s.send_rate is None and s.change_rate == 0
    assert s.forecast_final == pytest.approx(2.0) and s.advice is Advice.CUTOVER


def test_summary_serialises_for_status() -> None:
    d = summarize(rounds(FULL, (12.0, 2.0, DISK, MB)), DISK, Policy(downtime_target=2.5)).to_dict()
    assert d["advice"] == "cutover" and d["rounds"] == 2 and d["last_changed"] == MB


@pytest.mark.parametrize("bad", [dict(duration=-1), dict(bytes_changed=-5)])
def test_negative_numbers_are_refused(bad: dict[str, float]) -> None:
    kw = dict(index=1, started_at=0.0, duration=1.0, bytes_scanned=1, bytes_changed=1) | bad
    with pytest.raises(ValueError):
        RoundStats(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("rate", "text"), [(80 * MB, "80 MB/s"), (1.25 * MB, "1.2 MB/s"), (0, "0.0 MB/s")])
def test_mbps(rate: float, text: str) -> None:
    assert mbps(rate) == text


def test_policy_validates() -> None:
    with pytest.raises(ValueError):
        Policy(downtime_target=0)
    with pytest.raises(ValueError):
        Policy(shrink_factor=1.5)


def test_tracked_final_pass_forecast_does_not_grow_with_the_disk() -> None:
    rs = rounds(FULL, (12.0, 2.4, DISK, 100 * MB))
    untracked = summarize(rs, DISK)
    tracked = summarize(rs, DISK, Policy(tracked=True, pass_overhead=1.0))
    dirty = 100 * MB / 12.0 * 2.4
    assert tracked.forecast_final == pytest.approx(1.0 + dirty / GB + dirty / (250 * MB))
    assert tracked.forecast_final < untracked.forecast_final
    assert tracked.advice is Advice.CUTOVER
