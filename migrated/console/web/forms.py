"""The create-task form <-> the API's ``CreateTask`` parameters.

The form is only a different spelling of the API request: this module turns what the operator
typed into exactly the ``CreateTask`` parameters a signed API call would carry, and turns the
console's refusals back into messages beside the form fields. It decides no task rule itself: the
parameter rules are the API's pydantic model (:class:`migrated.console.params.CreateTask`) and the
rest (source exists, one unfinished task per source, start at least N minutes ahead) is the
console's service, called by the backend.

The only things decided here are the UI's own spellings: a ``datetime-local`` value is read in the
operator's time zone and sent as ISO 8601 with its offset; a limit is typed in any unit of
:mod:`migrated.model.bandwidth` (``20MiB/s``, ``160Mbit``; a bare number is Mbit/s for the bandwidth
limit and MiB/s for the read limit, as these fields always took) and sent in the API's KB/s.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from migrated.cloud.provider import traits_for
from migrated.model import bandwidth

from .model import FormErrors, TaskForm

# API parameter -> form field
PARAM_FIELD = {
    "TaskName": "name",
    "Description": "description",
    "Region": "region",
    "TargetType": "target_type",
    "ImageName": "image_name",
    "TargetInstanceId": "target_instance",
    "ScheduledStartTime": "start_at",
    "BandwidthLimitKBps": "bandwidth_mbps",
    "Checksum": "checksum",
    "TargetSsh": "ssh_endpoint",
    "TargetHostKey": "host_key",
    "DiskMapping": "disks",
    "ContinuousSync": "continuous",
    "ConsistentFinish": "consistent_finish",
    "RoundIntervalSeconds": "round_interval",
    "ReadLimitKBps": "read_limit_mib",
    "Quiesce": "quiesce",
    "PreHook": "pre_hook",
    "PostHook": "post_hook",
    "FreezeBudgetSeconds": "freeze_budget",
    "HookTimeoutSeconds": "hook_timeout",
    "SnapshotSize": "snapshot_size",
    "IgnoreChecks": "ignore_checks",
}

# the continuous-only form fields, in the order their errors are shown
CONTINUOUS_FIELDS = ("round_interval", "read_limit_mib", "quiesce", "snapshot_size", "pre_hook", "post_hook",
                     "hook_timeout", "freeze_budget")
ONLY_CONTINUOUS = "only for incremental sync until cutover or a consistent finish (tick one, or leave this empty)"

# friendlier words for the API's pattern rules (the rule itself stays the API's)
PATTERN_HINT = {
    "Region": "must be a region such as ap-guangzhou",
    "ImageName": "may hold letters, digits, '.', '_' and '-' only",
    "TargetInstanceId": f"must be an instance ID such as {traits_for(None).instance_id_example}",
}

BANDWIDTH_ERROR = (f"must be a number of Mbit/s or a rate with its unit, e.g. {bandwidth.EXAMPLES} "
                   "(0 or empty: no limit)")
IMAGE_NAME_REQUIRED = "required for an image target: the name the new custom image gets"
READ_LIMIT_ERROR = "must be a number of MiB/s up to 102400 (0 or empty: no limit)"


def _parse_limit(text: str, bare: bandwidth.Unit, field: str, unreadable: str) -> int:
    """A typed limit -> KB/s for the API (any unit of model/bandwidth; a bare number is ``bare``; a
    decimal comma is read as a point); empty or 0 = unlimited (0). FormErrors keyed ``field``."""
    text = text.strip().replace(",", ".")
    if not text:
        return 0
    try:
        return bandwidth.parse_kbps(text, bare)
    except bandwidth.RateError as e:
        raise FormErrors({field: unreadable if e.unreadable else str(e)}) from None


def parse_bandwidth(text: str) -> int:
    """The bandwidth limit field (a bare number is Mbit/s, as the field always took) -> KB/s."""
    return _parse_limit(text, bandwidth.MBIT, "bandwidth_mbps", BANDWIDTH_ERROR)


def parse_mib(text: str, field: str = "read_limit_mib") -> int:
    """The source read limit field (a bare number is MiB/s, as the field always took) -> KB/s."""
    return _parse_limit(text, bandwidth.MIB, field, READ_LIMIT_ERROR)


def local_to_iso(value: str, tz: str) -> str:
    """``2026-11-25T19:00`` typed in ``tz`` -> ``2026-11-25T19:00:00+08:00``. ValueError if unreadable."""
    naive = datetime.fromisoformat(value)
    if naive.tzinfo is not None:
        raise ValueError("unexpected time zone in a local time")
    return naive.replace(tzinfo=ZoneInfo(tz)).isoformat(timespec="seconds")


def form_to_params(source_id: str, form: TaskForm, tz: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``CreateTask`` parameters for this form, and errors for values the UI could not even
    spell as parameters (a non-number bandwidth, an unreadable date). Fields that are empty are
    left out where the API has a default, so the API's own "missing" rules apply."""
    errors: dict[str, str] = {}
    p: dict[str, Any] = {"SourceId": source_id, "TaskName": form.name, "TargetType": form.target_type,
                         "Checksum": form.checksum}
    if form.region:
        p["Region"] = form.region
    if form.description:
        p["Description"] = form.description
    if form.target_type == "image":
        if form.image_name:
            p["ImageName"] = form.image_name
        else:  # the service refuses it too, but only once every other field is right: say it now
            errors["image_name"] = IMAGE_NAME_REQUIRED
        if form.target_instance:  # the relay instance the image is made from (docs/cloud.md)
            p["TargetInstanceId"] = form.target_instance
    elif form.target_type == "instance":
        if form.target_instance:
            p["TargetInstanceId"] = form.target_instance
    else:
        errors["target_type"] = "choose image or instance"
    if form.continuous or form.consistent_finish:
        if form.continuous:
            p["ContinuousSync"] = True
        if form.consistent_finish:  # both ticked: the API says which to keep, beside the field
            p["ConsistentFinish"] = True
        for name, param in (("round_interval", "RoundIntervalSeconds"), ("freeze_budget", "FreezeBudgetSeconds"),
                            ("hook_timeout", "HookTimeoutSeconds")):
            text = getattr(form, name)
            if text:
                try:
                    p[param] = int(text)
                except ValueError:
                    errors[name] = "must be a whole number of seconds"
        if form.read_limit_mib:
            try:
                p["ReadLimitKBps"] = parse_mib(form.read_limit_mib)
            except FormErrors as e:
                errors.update(e.fields)
        if form.quiesce:
            p["Quiesce"] = form.quiesce
        if form.snapshot_size:  # the API refuses it unless Quiesce is lvm, and says so beside the field
            p["SnapshotSize"] = form.snapshot_size
        if form.pre_hook:
            p["PreHook"] = form.pre_hook
        if form.post_hook:
            p["PostHook"] = form.post_hook
    else:
        for name in CONTINUOUS_FIELDS:
            if getattr(form, name):
                errors[name] = ONLY_CONTINUOUS
    if form.start_at:
        try:
            p["ScheduledStartTime"] = local_to_iso(form.start_at, tz)
        except ValueError:
            errors["start_at"] = f"{form.start_at!r} is not a date and time (YYYY-MM-DD HH:MM)"
    if form.bandwidth_mbps:
        try:
            p["BandwidthLimitKBps"] = parse_bandwidth(form.bandwidth_mbps)
        except FormErrors as e:
            errors.update(e.fields)
    if form.ssh_endpoint:
        p["TargetSsh"] = form.ssh_endpoint
    if form.host_key:
        p["TargetHostKey"] = form.host_key
    if form.ignore_checks:  # names from CHECKS; the API refuses any other, beside the field
        p["IgnoreChecks"] = list(form.ignore_checks)
    mapping = [{"Source": name, "Target": target} for name, migrate, target in form.disks if migrate]
    if form.disks:
        if not mapping:
            errors["disks"] = "choose at least one disk to migrate"
        p["DiskMapping"] = mapping
    return p, errors


def disk_field(form: TaskForm, mapping_index: int) -> str:
    """Form field of the ``mapping_index``-th migrated disk (``DiskMapping.<i>`` in API errors)."""
    chosen = [i for i, (_, migrate, _) in enumerate(form.disks) if migrate]
    if 0 <= mapping_index < len(chosen):
        return f"disk-{chosen[mapping_index]}-target"
    return "disks"


def field_for_loc(loc: tuple[Any, ...] | list[Any], form: TaskForm) -> str | None:
    """The form field an API parameter path (``('DiskMapping', 1, 'Target')``) belongs to."""
    if not loc:
        return None
    head = str(loc[0])
    if head == "DiskMapping" and len(loc) >= 2 and isinstance(loc[1], int):
        return disk_field(form, loc[1])
    return PARAM_FIELD.get(head)


def pydantic_errors(exc: Any, form: TaskForm) -> tuple[dict[str, str], str]:
    """Every problem of a pydantic ``ValidationError`` of ``CreateTask``, by form field."""
    fields: dict[str, str] = {}
    general: list[str] = []
    for e in exc.errors():
        loc = tuple(e.get("loc", ()))
        kind = e.get("type", "")
        name = field_for_loc(loc, form)
        text = str(e.get("msg", "")).removeprefix("Value error, ")
        if not loc and text.startswith("parameter "):  # a rule across parameters: it names its parameter
            name = message_field(text, form)
            fields.setdefault(name, text.split(": ", 1)[-1]) if name else general.append(text)
            continue
        if kind == "missing" or (kind == "string_too_short" and (e.get("ctx") or {}).get("min_length") == 1):
            msg = "required"
        elif kind == "string_pattern_mismatch" and loc and str(loc[0]) in PATTERN_HINT:
            msg = PATTERN_HINT[str(loc[0])]
        else:
            msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if name is None:
            general.append(f"{'.'.join(str(x) for x in loc)}: {msg}")
        else:
            fields.setdefault(name, msg)
    return fields, "; ".join(general)


_PARAM_IN_MESSAGE = re.compile(r"\b(" + "|".join(sorted(PARAM_FIELD, key=len, reverse=True)) + r")(?:\.(\d+))?\b")


def message_field(message: str, form: TaskForm) -> str | None:
    """The form field a console error message names (``parameter ScheduledStartTime: ...``), if any."""
    m = _PARAM_IN_MESSAGE.search(message)
    if not m:
        return None
    if m.group(1) == "DiskMapping" and m.group(2) is not None:
        return disk_field(form, int(m.group(2)))
    return PARAM_FIELD[m.group(1)]
