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
    assert {"MissingParameter", "InvalidParameter"} <= SEEN, SEEN


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
