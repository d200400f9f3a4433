"""Hostile and random requests to a real console: every answer is a Tencent-style reply with a
client-error code, never a 500 and never InternalError."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time

import aiohttp
import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from migrated.console.app import ACTIONS
from migrated.model import tc3
from tests.console_support import register, running_console

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def _field_names() -> list[str]:
    names: set[str] = set()
    for spec in ACTIONS.values():
        names.update(spec.model.model_fields)
    return sorted(names)


params_strategy = st.dictionaries(st.sampled_from(_field_names()) | st.text(max_size=8), json_values, max_size=6)


def post(url: str, host: str, sid: str, skey: str, action: str, body: bytes) -> dict:
    h = tc3.sign_headers(secret_id=sid, secret_key=skey, service="migrate", host=host, action=action,
                         version="2026-11-01", timestamp=int(time.time()), body=body,
                         nonce=str(time.monotonic_ns()))
    r = requests.post(url + "/", data=body, headers=h, timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    return r.json()["Response"]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A console on its own event loop in a thread, so hypothesis can drive it synchronously."""
    ready: queue.Queue = queue.Queue()
    stop = threading.Event()

    async def serve() -> None:
        async with running_console(tmp_path_factory.mktemp("fuzz")) as c:
            agent_id, agent_key = await c.new_key("agent")
            async with c.client(agent_id, agent_key) as a:
                src = await register(a)
            ready.put((c, agent_id, agent_key, src))
            while not stop.is_set():
                await asyncio.sleep(0.05)

    t = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    t.start()
    yield ready.get(timeout=30)
    stop.set()
    t.join(30)


SEEN: set[str] = set()


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(action=st.sampled_from(sorted(ACTIONS)), params=params_strategy, real_source=st.booleans())
# Always tried, whatever the random draws (which change when actions are added): one request each
# validator must refuse, so test_the_fuzzer_reached_the_validators checks the validators, not luck.
@example(action="DescribeTasks", params={"Limit": 0}, real_source=False)
@example(action="DescribeTasks", params={"Limit": "many"}, real_source=False)
@example(action="StartTask", params={}, real_source=False)
def test_random_parameters_never_make_an_internal_error(live, action, params, real_source):
    c, agent_id, agent_key, src = live
    if real_source and "SourceId" in params:
        params["SourceId"] = src
    sid, skey = (c.admin_id, c.admin_key) if ACTIONS[action].role == "admin" else (agent_id, agent_key)
    if action == "RevokeKey":
        params.pop("SecretId", None)  # keep the keys this test signs with
    reply = post(c.url, c.url.removeprefix("http://"), sid, skey, action, json.dumps(params).encode())
    err = reply.get("Error")
    if err:
        assert not err["Code"].startswith("InternalError"), (action, params, err)
        assert err["Message"]
        SEEN.add(err["Code"])


def test_the_fuzzer_reached_the_validators():
    assert {"MissingParameter", "InvalidParameter", "InvalidParameterValue"} <= SEEN, SEEN


def test_an_empty_body_means_no_parameters(live):
    c = live[0]
    reply = post(c.url, c.url.removeprefix("http://"), c.admin_id, c.admin_key, "DescribeKeys", b"")
    assert "KeySet" in reply


@pytest.mark.parametrize("raw", [b"{", b"[]", b"null", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000,
                                 b'{"Limit": 1e999}', b'{"TaskIds": [' + b"1," * 1000 + b"1]}"])
def test_malformed_bodies(live, raw):
    c = live[0]
    reply = post(c.url, c.url.removeprefix("http://"), c.admin_id, c.admin_key, "DescribeTasks", raw)
    err = reply.get("Error")
    assert err is not None and err["Code"] in ("InvalidParameter", "InvalidParameterValue"), (raw[:20], err)


async def test_chunked_body_over_the_cap(tmp_path):
    async with running_console(tmp_path, api={"max_body_bytes": 4096}) as c:
        body = json.dumps({"Name": "x" * 10_000, "Role": "agent"}).encode()
        h = tc3.sign_headers(secret_id=c.admin_id, secret_key=c.admin_key, service="migrate",
                             host=c.url.removeprefix("http://"), action="CreateKey", version="2026-11-01",
                             timestamp=int(time.time()), body=body, nonce="n")

        async def chunks():
            for i in range(0, len(body), 1000):
                yield body[i:i + 1000]

        async with aiohttp.ClientSession() as s, s.post(c.url + "/", data=chunks(), headers=h) as r:
            reply = json.loads(await r.read())["Response"]
        assert reply["Error"]["Code"] == "RequestSizeLimitExceeded" and "4096" in reply["Error"]["Message"]


# ---------------------------------------------------------------- numbers an attacker sends

def _int_fields(model, prefix=""):
    """(path, a params dict with 2**63 at that path) for every integer field of an action, nested too."""
    import types
    import typing

    from pydantic import BaseModel

    for name, f in model.model_fields.items():
        ann = f.annotation
        union = typing.get_origin(ann) in (typing.Union, types.UnionType)
        args = [a for a in typing.get_args(ann) if a is not type(None)] if union else [ann]
        for a in args:
            if a is int:
                yield f"{prefix}{name}", {name: 2**63}
            elif typing.get_origin(a) is list and typing.get_args(a):
                (inner,) = typing.get_args(a)
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    for path, sub in _int_fields(inner, f"{prefix}{name}.0."):
                        yield path, {name: [sub]}


def test_every_integer_parameter_fits_63_bits():
    from pydantic import ValidationError

    from migrated.console import params as P

    checked = []
    for action, spec in sorted(ACTIONS.items()):
        for path, params in _int_fields(spec.model):
            with pytest.raises(ValidationError) as ei:
                spec.model.model_validate(params)
            mine = [e for e in ei.value.errors() if ".".join(map(str, e["loc"])) == path]
            # a range error (InvalidParameterValue in params.validation_error), not a type error
            assert mine and mine[0]["type"] in ("value_error", "less_than_equal"), (action, path, ei.value.errors())
            checked.append(f"{action}.{path}")
    assert {"DescribeTasks.Offset", "RegisterSource.Disks.0.SizeBytes", "DescribeTaskEvents.AfterEventId",
            "ReportTaskProgress.Round"} <= set(checked), checked
    P.DescribeTasks.model_validate({"Offset": P.MAX_INT})  # the largest one is taken


PROGRESS = b'{"SourceId": "SRC", "TaskId": "task-x", "State": "transferring", '


@pytest.mark.parametrize(("action", "body"), [
    ("DescribeTasks", b'{"Offset": 9223372036854775808}'),  # 2**63: was InternalError (SQLite OverflowError)
    ("DescribeTasks", b'{"Offset": 9223372036854775807}'),  # 2**63-1 passes the API; storage must not crash
    ("DescribeTaskEvents", b'{"TaskId": "task-x", "AfterEventId": 9223372036854775808}'),
    ("ReportTaskProgress", PROGRESS + b'"RateBps": 1e400}'),  # was stored as infinity, then served as Infinity
    ("ReportTaskProgress", PROGRESS + b'"RateBps": NaN}'),
    ("ReportTaskProgress", PROGRESS + b'"EtaSeconds": -Infinity}'),
    ("RegisterSource", b'{"MachineId": "m-big", "Hostname": "h", "Disks": [{"Name": "/dev/vda", "SizeBytes": '
                       + b"9" * 4000 + b"}]}"),
])
def test_out_of_range_and_non_finite_numbers_are_refused(live, action, body):
    c, agent_id, agent_key, src = live
    sid, skey = (c.admin_id, c.admin_key) if ACTIONS[action].role == "admin" else (agent_id, agent_key)
    reply = post(c.url, c.url.removeprefix("http://"), sid, skey, action, body.replace(b"SRC", src.encode()))
    if b"9223372036854775807}" in body:
        assert reply["TaskSet"] == [], reply
        return
    assert reply["Error"]["Code"] == "InvalidParameterValue", reply


def _strict_json(raw: bytes):
    def refuse(name):
        raise AssertionError(f"{name} is not JSON")
    return json.loads(raw, parse_constant=refuse)


async def test_a_stored_infinity_is_served_as_null_in_strict_json(tmp_path):
    from tests.console_support import task_params

    async with running_console(tmp_path) as c:
        aid, akey = await c.new_key("agent")
        async with c.client(aid, akey) as a:
            src = await register(a)
        tid = (await c.admin_call("CreateTask", task_params(src)))["TaskId"]
        # what an older console stored when ReportTaskProgress took RateBps 1e400 and 4,000-digit sizes
        huge = {"Name": "/dev/vda", "BytesTotal": int("9" * 4000), "BytesDone": 1}
        await c.service.storage.update_task(tid, expect_state="created", now=time.time(), changes={
            "progress": {"Disks": [huge], "RateBps": float("inf"), "EtaSeconds": float("nan"),
                         "UpdatedAt": time.time()}})
        body = json.dumps({"TaskIds": [tid]}).encode()
        h = tc3.sign_headers(secret_id=c.admin_id, secret_key=c.admin_key, service="migrate",
                             host=c.url.removeprefix("http://"), action="DescribeTasks", version="2026-11-01",
                             timestamp=int(time.time()), body=body, nonce="inf")
        async with aiohttp.ClientSession() as s, s.post(c.url + "/", data=body, headers=h) as r:
            raw = await r.read()
        (t,) = _strict_json(raw)["Response"]["TaskSet"]
        assert t["Progress"]["RateBps"] is None and t["Progress"]["EtaSeconds"] is None, t["Progress"]
        assert t["Progress"]["Percent"] == 0.0  # 1 of a 4,000-digit total: no OverflowError
        assert b"Infinity" not in raw and b"NaN" not in raw


@pytest.mark.parametrize(("timestamp", "code"), [
    ("9" * 400, "AuthFailure.SignatureExpire"),  # was InternalError (OverflowError at abs(now - ts))
    ("9" * 19, "AuthFailure.SignatureExpire"),
    ("\u00b2", "InvalidParameter"),  # "²".isdigit() is true, int("²") is an error
    ("\u0661\u0662", "InvalidParameter"),  # Arabic-Indic digits
])
def test_absurd_timestamps_are_signature_errors(live, timestamp, code):
    c = live[0]
    body = b"{}"
    h = tc3.sign_headers(secret_id=c.admin_id, secret_key=c.admin_key, service="migrate",
                         host=c.url.removeprefix("http://"), action="DescribeKeys", version="2026-11-01",
                         timestamp=int(time.time()), body=body, nonce=str(time.monotonic_ns()))
    h["X-TC-Timestamp"] = timestamp
    r = requests.post(c.url + "/", data=body, headers={k: v.encode() for k, v in h.items()}, timeout=30)
    assert r.status_code == 200
    err = r.json()["Response"]["Error"]
    assert err["Code"] == code, err
    assert len(err["Message"]) < 300, err
