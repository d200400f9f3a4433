"""The create-task form <-> the API's ``CreateTask`` parameters.

The form is only a different spelling of the API request: this module turns what the operator
typed into exactly the ``CreateTask`` parameters a signed API call would carry, and turns the
console's refusals back into messages beside the form fields. It decides no task rule itself: the
parameter rules are the API's pydantic model (:class:`migrated.console.params.CreateTask`) and the
rest (source exists, one unfinished task per source, start at least N minutes ahead) is the
console's service, called by the backend.

The only things decided here are the UI's own units and spellings: a ``datetime-local`` value is
read in the operator's time zone and sent as ISO 8601 with its offset; the bandwidth limit is typed
in Mbit/s and sent in KB/s (1 KB = 1024 bytes, as the agent's token bucket counts).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from migrated.cloud.provider import traits_for

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

KBPS_PER_MBIT = 1_000_000 / 8 / 1024  # Mbit/s -> KB/s (KiB)


def mbps_to_kbps(mbps: float) -> int:
    return round(mbps * KBPS_PER_MBIT)


def kbps_to_mbps(kbps: int) -> float:
    return round(kbps / KBPS_PER_MBIT, 1)


def parse_bandwidth(text: str) -> int:
    """A typed limit in Mbit/s -> KiB/s for the API; empty or 0 = unlimited (0). FormErrors if unreadable."""
    text = text.strip().replace(",", ".")
    if not text:
        return 0
    try:
        mbps = float(text)
    except ValueError:
        mbps = -1.0
    if not (mbps >= 0 and mbps != float("inf")):
        raise FormErrors({"bandwidth_mbps": "must be a number of Mbit/s (0 or empty: no limit)"})
    return max(1, mbps_to_kbps(mbps)) if mbps > 0 else 0


def parse_mib(text: str, field: str = "read_limit_mib") -> int:
    """A typed source read limit in MiB/s -> KiB/s for the API; empty or 0 = unlimited (0)."""
    text = text.strip().replace(",", ".")
    if not text:
        return 0
    try:
        mib = float(text)
    except ValueError:
        mib = -1.0
    if not (0 <= mib <= 100 * 1024):
        raise FormErrors({field: "must be a number of MiB/s up to 102400 (0 or empty: no limit)"})
    return max(1, round(mib * 1024)) if mib > 0 else 0


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
