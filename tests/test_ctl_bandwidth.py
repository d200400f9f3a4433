"""migratectl's bandwidth and read-limit inputs: explicit units, a bare number is still bytes/s, and
the limit is shown the way every program shows it (migrated.model.bandwidth)."""

from __future__ import annotations

import json

import pytest

from migrated.cli import ctl
from migrated.errors import UsageError
from tests.test_control import run_ctl, rundir, served  # noqa: F401  (fixtures)


@pytest.mark.parametrize(("typed", "bps"), [
    ("20480K", 20 << 20), ("20MiB/s", 20 << 20), ("160Mbit", 20_000_000), ("160Mbps", 20_000_000),
    ("20971520", 20 << 20),  # a bare number stays bytes/s
    ("off", None),
])
def test_parse_rate_takes_explicit_units(typed: str, bps: int | None) -> None:
    assert ctl.parse_rate(typed) == bps


def test_parse_rate_refusals_name_the_flag_and_the_bare_unit() -> None:
    with pytest.raises(UsageError, match=r"bandwidth: '20Q' is not a rate: give a number of bytes/s .*160Mbit"):
        ctl.parse_rate("20Q")
    with pytest.raises(UsageError, match=r"--read-limit: .200G. is over the limit of 100\.0 GiB/s"):
        ctl.parse_rate("200G", "--read-limit")


def test_migratectl_bandwidth_with_a_unit_is_shown_in_mib(served: str) -> None:  # noqa: F811
    r = run_ctl(served, "bandwidth", "160Mbit")
    assert r.returncode == 0, r.stderr
    assert json.loads(run_ctl(served, "status", "--json").stdout)["bandwidth_bps"] == 20_000_000
    r = run_ctl(served, "status")
    assert r.returncode == 0 and "19.1 MiB/s" in r.stdout, r.stdout
    assert run_ctl(served, "bandwidth", "20480K").returncode == 0
    assert "20.0 MiB/s" in run_ctl(served, "status").stdout
    assert run_ctl(served, "bandwidth", "0").returncode == 0
    assert json.loads(run_ctl(served, "status", "--json").stdout)["bandwidth_bps"] is None
