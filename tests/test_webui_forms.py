"""The create-task form <-> CreateTask parameters: units, time zones, and errors mapped to fields
(with the API's real pydantic model and the service's real messages)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from migrated.console import params as P
from migrated.console.web.forms import (
    form_to_params,
    local_to_iso,
    message_field,
    parse_bandwidth,
    parse_mib,
    pydantic_errors,
)
from migrated.console.web.model import FormErrors, TaskForm
from tests.console_support import HOST_KEY

DISKS = [("/dev/vda", True, "/dev/vda"), ("/dev/vdb", False, "/dev/vdb"), ("/dev/vdc", True, "/dev/sdb")]


def good_form(**over) -> TaskForm:
    f = TaskForm(region="ap-guangzhou", name="web01", target_type="image", image_name="img-1",
                 ssh_endpoint="root@203.0.113.7:22", host_key=HOST_KEY, disks=list(DISKS))
    for k, v in over.items():
        setattr(f, k, v)
    return f


def test_a_good_form_is_a_valid_create_task_request() -> None:
    params, errors = form_to_params("src-1", good_form(bandwidth_mbps="100", checksum=True,
                                                       start_at="2030-01-02T03:04"), "Asia/Shanghai")
    assert errors == {}
    p = P.CreateTask.model_validate(params)
    assert p.SourceId == "src-1" and p.TaskName == "web01" and p.ImageName == "img-1" and p.Checksum
    assert p.TargetInstanceId == ""  # an image task sends no instance
    assert p.ScheduledStartTime == "2030-01-02T03:04:00+08:00"
    assert p.BandwidthLimitKBps == 12207  # 100 Mbit/s = 12.5e6 B/s = 12207 KiB/s
    assert [(m.Source, m.Target) for m in p.DiskMapping] == [("/dev/vda", "/dev/vda"), ("/dev/vdc", "/dev/sdb")]


@pytest.mark.parametrize(("tz", "typed", "iso"), [
    ("UTC", "2030-06-01T12:00", "2030-06-01T12:00:00+00:00"),
    ("Europe/Berlin", "2030-06-01T12:00", "2030-06-01T12:00:00+02:00"),  # summer time
    ("Europe/Berlin", "2030-12-01T12:00", "2030-12-01T12:00:00+01:00"),
    ("America/New_York", "2030-01-15T08:30", "2030-01-15T08:30:00-05:00"),
])
def test_schedule_is_read_in_the_operators_zone(tz: str, typed: str, iso: str) -> None:
    assert local_to_iso(typed, tz) == iso
    assert datetime.fromisoformat(iso).timestamp() == datetime.fromisoformat(typed).replace(
        tzinfo=ZoneInfo(tz)).timestamp()


@pytest.mark.parametrize(("field", "value", "expect_field"), [
    ("bandwidth_mbps", "fast", "bandwidth_mbps"),
    ("bandwidth_mbps", "-5", "bandwidth_mbps"),
    ("bandwidth_mbps", "nan", "bandwidth_mbps"),
    ("start_at", "tomorrow", "start_at"),
    ("target_type", "vm", "target_type"),
])
def test_values_the_ui_cannot_spell_as_parameters(field: str, value: str, expect_field: str) -> None:
    _, errors = form_to_params("src-1", good_form(**{field: value}), "UTC")
    assert expect_field in errors


def test_no_disk_chosen() -> None:
    _, errors = form_to_params("src-1", good_form(disks=[(n, False, t) for n, _, t in DISKS]), "UTC")
    assert errors == {"disks": "choose at least one disk to migrate"}


def test_pydantic_errors_land_beside_their_fields() -> None:
    form = good_form(region="Guangzhou!", name="", ssh_endpoint="not an endpoint", host_key="",
                     disks=[("/dev/vda", True, "/dev/vda"), ("/dev/vdb", False, ""), ("/dev/vdc", True, "")])
    params, _ = form_to_params("src-1", form, "UTC")
    with pytest.raises(ValidationError) as ei:
        P.CreateTask.model_validate(params)
    fields, general = pydantic_errors(ei.value, form)
    assert general == ""
    assert fields["region"] == "must be a region such as ap-guangzhou"
    assert "name" in fields
    assert fields["ssh_endpoint"].startswith("must be user@host:port")
    assert fields["host_key"] == "required"
    assert "disk-2-target" in fields  # the 2nd *migrated* disk is the 3rd row of the form


def test_service_messages_name_their_field() -> None:
    form = good_form()
    assert message_field("parameter ScheduledStartTime: must be at least 10 minutes from now", form) == "start_at"
    assert message_field("missing parameter ImageName (required when TargetType is image)", form) == "image_name"
    assert message_field("parameter DiskMapping.1.Source: source src-1 has no disk '/dev/vdc'", form) == "disk-2-target"
    assert message_field("parameter DiskMapping: each disk may appear once per side", form) == "disks"
    assert message_field("source src-1 already has unfinished task task-x", form) is None


@pytest.mark.parametrize(("typed", "kbps"), [("", 0), ("0", 0), ("8", 977), ("0,5", 61), ("1000", 122070)])
def test_bandwidth_limits(typed: str, kbps: int) -> None:
    assert parse_bandwidth(typed) == kbps


@pytest.mark.parametrize("typed", ["fast", "-1", "nan", "inf", "1e999"])
def test_bandwidth_limits_refused(typed: str) -> None:
    with pytest.raises(FormErrors) as ei:
        parse_bandwidth(typed)
    assert "bandwidth_mbps" in ei.value.fields


# the Mbit/s round trip (kbps_to_mbps(mbps_to_kbps(x)) == x) moved with the conversion to
# tests/test_bandwidth.py: test_mbit_limits_round_trip_through_the_apis_kbps


@pytest.mark.parametrize(("typed", "kbps"), [("20MiB/s", 20480), ("20480K", 20480), ("160Mbit", 19531),
                                             ("160 Mbit/s", 19531), ("0,5MiB", 512), ("unlimited", 0)])
def test_bandwidth_limits_take_explicit_units(typed: str, kbps: int) -> None:
    assert parse_bandwidth(typed) == kbps
    assert form_to_params("src-1", good_form(bandwidth_mbps=typed), "UTC")[0]["BandwidthLimitKBps"] == kbps


@pytest.mark.parametrize(("typed", "kbps"), [("2.5", 2560), ("20MiB/s", 20480), ("160Mbit", 19531), ("0", 0)])
def test_read_limits_take_explicit_units(typed: str, kbps: int) -> None:
    assert parse_mib(typed) == kbps


def test_limit_errors_say_which_units_are_read() -> None:
    with pytest.raises(FormErrors) as ei:
        parse_bandwidth("20Q")
    assert ei.value.fields["bandwidth_mbps"].startswith("must be a number of Mbit/s")
    assert "20MiB/s, 20480K, 160Mbit" in ei.value.fields["bandwidth_mbps"]
    with pytest.raises(FormErrors) as ei:
        parse_bandwidth("200GiB/s")
    assert ei.value.fields["bandwidth_mbps"] == "'200GiB/s' is over the limit of 100.0 GiB/s"


def test_an_image_task_sends_its_relay_instance_and_continuous_options() -> None:
    params, errors = form_to_params("src-1", good_form(target_instance="ins-abcd1234", continuous=True,
                                                       round_interval="30"), "UTC")
    assert errors == {}
    p = P.CreateTask.model_validate(params)
    assert p.TargetType == "image" and p.TargetInstanceId == "ins-abcd1234"  # the relay (docs/cloud.md)
    assert p.ContinuousSync and p.RoundIntervalSeconds == 30
    _, errors = form_to_params("src-1", good_form(continuous=True, round_interval="soon"), "UTC")
    assert errors == {"round_interval": "must be a whole number of seconds"}
    _, errors = form_to_params("src-1", good_form(round_interval="30"), "UTC")
    assert "round_interval" in errors
