"""migrated.model.bandwidth: every spelling of a limit, each input's bare unit, one way to show it."""

from __future__ import annotations

import pytest

from migrated.model.bandwidth import (
    BYTES,
    KB,
    MAX_BPS,
    MAX_KBPS,
    MBIT,
    MIB,
    RateError,
    Unit,
    format_kbps,
    format_rate,
    kbps_text,
    parse_kbps,
    parse_rate,
    to_kbps,
)

MiB = 1 << 20


@pytest.mark.parametrize(("typed", "bare", "bps"), [
    # explicit units mean the same whatever the input's bare unit is
    ("20480K", KB, 20 * MiB), ("20480K", MBIT, 20 * MiB), ("20480KB", BYTES, 20 * MiB),
    ("20480KiB", MIB, 20 * MiB), ("20480KB/s", KB, 20 * MiB), ("20480kib/s", KB, 20 * MiB),
    ("20M", KB, 20 * MiB), ("20MiB/s", MBIT, 20 * MiB), ("20MiB", BYTES, 20 * MiB), ("20MBps", KB, 20 * MiB),
    ("20mb", KB, 20 * MiB), ("20 MiB/s", KB, 20 * MiB), ("1.5G", BYTES, int(1.5 * (1 << 30))),
    ("1GiB/s", KB, 1 << 30), ("0.01T", BYTES, round(0.01 * (1 << 40))), ("512B", KB, 512), ("512B/s", MBIT, 512),
    ("800KiB/s", BYTES, 800 << 10), ("50M", BYTES, 50 << 20),
    # bits count decimal, as links do; a lowercase b before ps or /s is a bit
    ("160Mbit", KB, 20_000_000), ("160Mbit/s", BYTES, 20_000_000), ("160mbit", KB, 20_000_000),
    ("160Mbps", KB, 20_000_000), ("160Mb/s", KB, 20_000_000), ("800kbit", MIB, 100_000),
    ("800kbps", KB, 100_000), ("1Gbps", KB, 125_000_000), ("1Gbit", KB, 125_000_000), ("8bit", KB, 1),
    ("80bps", KB, 10),
    # a bare number keeps the input's old unit
    ("20480", KB, 20 * MiB), ("20", MIB, 20 * MiB), ("160", MBIT, 20_000_000), ("4096", BYTES, 4096),
    ("2.5", MIB, int(2.5 * MiB)), (".5", MIB, MiB // 2), ("5.", MIB, 5 * MiB),
    # no limit
    ("0", KB, 0), ("0", MBIT, 0), ("0K", BYTES, 0), ("unlimited", KB, 0), ("NONE", BYTES, 0), ("off", MIB, 0),
    (" 20M ", KB, 20 * MiB),
])
def test_parse_rate(typed: str, bare: Unit, bps: int) -> None:
    assert parse_rate(typed, bare) == bps


@pytest.mark.parametrize("typed", [
    "", "fast", "-1", "-5M", "nan", "inf", "1e999", "1e5", "20 MiB per second", "20Q", "20Mi", "M", "20ps",
    "1,5", "20480,5K", "0x10",
])
def test_unreadable_rates_are_refused_with_examples(typed: str) -> None:
    with pytest.raises(RateError) as ei:
        parse_rate(typed, MBIT)
    assert "e.g. 20MiB/s, 20480K, 160Mbit" in str(ei.value) and "Mbit/s" in str(ei.value)


@pytest.mark.parametrize("typed", ["101G", "100.1GiB", "1000000000000000000000000000000000", "2000Gbit"])
def test_rates_over_the_api_cap_are_refused(typed: str) -> None:
    with pytest.raises(RateError, match=r"over the limit of 100\.0 GiB/s"):
        parse_rate(typed, KB)


def test_the_cap_itself_is_allowed() -> None:
    assert parse_rate("100G", BYTES) == MAX_BPS == MAX_KBPS * 1024
    assert parse_kbps("100GiB/s", KB) == MAX_KBPS


def test_a_limit_under_one_byte_per_second_is_refused() -> None:
    with pytest.raises(RateError, match="under 1 byte/s"):
        parse_rate("0.4", BYTES)


@pytest.mark.parametrize(("typed", "bare", "kbps"), [
    ("", MBIT, None), ("0", MBIT, 0), ("8", MBIT, 977), ("1000", MBIT, 122070), ("100", MBIT, 12207),
    ("80", MBIT, 9766), ("20480", KB, 20480), ("1", BYTES, 1), ("512B", KB, 1), ("1536B", KB, 2),
    ("2.5", MIB, 2560), ("20MiB/s", KB, 20480), ("160Mbit", KB, 19531),
])
def test_parse_kbps_never_turns_a_limit_into_no_limit(typed: str, bare: Unit, kbps: int | None) -> None:
    if kbps is None:
        with pytest.raises(RateError):
            parse_kbps(typed, bare)
    else:
        assert parse_kbps(typed, bare) == kbps


def test_to_kbps() -> None:
    assert [to_kbps(b) for b in (0, -5, 1, 511, 512, 1024, 1536, 20 * MiB)] == [0, 0, 1, 1, 1, 1, 2, 20480]


def test_mbit_limits_round_trip_through_the_apis_kbps() -> None:
    for mbps in (1, 10, 80, 100, 1000):
        assert round(parse_kbps(str(mbps), MBIT) * 1024 * 8 / 1e6, 1) == mbps


@pytest.mark.parametrize(("bps", "shown"), [
    (None, "unlimited"), (0, "unlimited"), (-1, "unlimited"), (float("inf"), "unlimited"),
    (float("nan"), "unlimited"), (512, "512 B/s"), (20 * MiB, "20.0 MiB/s"), (20_000_000, "19.1 MiB/s"),
    (1.5 * (1 << 30), "1.5 GiB/s"), (MAX_BPS, "100.0 GiB/s"),
])
def test_format_rate(bps: float | None, shown: str) -> None:
    assert format_rate(bps) == shown


@pytest.mark.parametrize(("kbps", "shown"), [
    (None, "unlimited"), (0, "unlimited"), (1, "1.0 KiB/s"), (20480, "20.0 MiB/s"), (9766, "9.5 MiB/s"),
    (MAX_KBPS, "100.0 GiB/s"),
])
def test_format_kbps(kbps: int | None, shown: str) -> None:
    assert format_kbps(kbps) == shown


def test_what_is_shown_reads_back_as_the_same_limit() -> None:
    for kbps in (1, 977, 9766, 20480, 102400, MAX_KBPS):
        shown = format_kbps(kbps).replace(" ", "")
        assert abs(parse_kbps(shown, KB) - kbps) <= kbps * 0.05 + 1


@pytest.mark.parametrize(("kbps", "text"), [(None, ""), (0, ""), (1, "1KiB/s"), (9766, "9766KiB/s"),
                                            (20480, "20MiB/s"), (MAX_KBPS, "102400MiB/s")])
def test_kbps_text_reads_back_exactly(kbps: int | None, text: str) -> None:
    assert kbps_text(kbps) == text
    if kbps:
        for bare in (KB, MBIT, MIB, BYTES):
            assert parse_kbps(text, bare) == kbps


def test_out_of_range_is_told_apart_from_unreadable() -> None:
    for typed, unreadable in (("fast", True), ("200G", False), ("0.1", False)):
        with pytest.raises(RateError) as ei:
            parse_rate(typed, BYTES)
        assert ei.value.unreadable is unreadable
