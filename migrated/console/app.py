"""The console's aiohttp application: the signed API at ``POST /``, ``GET /healthz``,
``GET /metrics``. Other route sets (the web UI under ``/ui/``) are added to the same
app by whoever builds it: ``build_app`` returns a plain ``web.Application`` and the
:class:`ConsoleService` is at ``app[SERVICE]``.

Every API reply is HTTP 200 with ``Content-Type: application/json`` exactly (the
Tencent SDK only looks for an error body then): ``{"Response": {..., "RequestId"}}``
or ``{"Response": {"Error": {"Code", "Message"}, "RequestId"}}``, always strict JSON (no NaN
or Infinity). Errors become replies in one place, :func:`error_reply`: a
:class:`~migrated.errors.MigratedError` answers with its class's API code. No request can
produce a 500: anything unexpected is logged and answered ``InternalError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ValidationError

from migrated.cloud.provider import open_provider
from migrated.console import params as P
from migrated.console.auth import Verifier
from migrated.console.config import API_VERSION, ConsoleConfig
from migrated.console.scheduler import Scheduler
from migrated.console.service import ConsoleService, Principal
from migrated.console.storage import Storage, create_storage
from migrated.console.web import setup_web
from migrated.errors import (
    InvalidAction,
    InvalidParameter,
    InvalidParameterValue,
    MigratedError,
    MissingParameter,
    NoSuchVersion,
    RequestTooLarge,
    UnauthorizedOperation,
    UnknownParameter,
)

log = structlog.get_logger(__name__)

SERVICE = web.AppKey("service", ConsoleService)
METRICS = web.AppKey("metrics", object)
VERIFIER = web.AppKey("verifier", Verifier)


@dataclass(frozen=True)
class ActionSpec:
    role: str  # admin | agent
    model: type[BaseModel]
    handler: Callable[[ConsoleService, Principal, Any], Awaitable[dict[str, Any]]]


def _spec(role: str, model: type[BaseModel], method: str) -> ActionSpec:
    async def call(svc: ConsoleService, caller: Principal, p: Any) -> dict[str, Any]:
        return await getattr(svc, method)(caller, p)

    return ActionSpec(role, model, call)


ACTIONS: dict[str, ActionSpec] = {
    # agent actions
    "RegisterSource": _spec("agent", P.RegisterSource, "register_source"),
    "Heartbeat": _spec("agent", P.Heartbeat, "heartbeat"),
    "PollCommands": _spec("agent", P.PollCommands, "poll_commands"),
    "AckCommand": _spec("agent", P.AckCommand, "ack_command"),
    "ReportTaskProgress": _spec("agent", P.ReportTaskProgress, "report_task_progress"),
    "ReportTaskEvent": _spec("agent", P.ReportTaskEvent, "report_task_event"),
    # admin actions
    "CreateKey": _spec("admin", P.CreateKey, "create_key"),
    "DescribeKeys": _spec("admin", P.DescribeKeys, "describe_keys"),
    "RevokeKey": _spec("admin", P.RevokeKey, "revoke_key"),
    "DescribeSources": _spec("admin", P.DescribeSources, "describe_sources"),
    "RemoveSource": _spec("admin", P.RemoveSource, "remove_source"),
    "CreateTask": _spec("admin", P.CreateTask, "create_task"),
    "DescribeTasks": _spec("admin", P.DescribeTasks, "describe_tasks"),
    "StartTask": _spec("admin", P.StartTask, "start_task"),
    "PauseTask": _spec("admin", P.PauseTask, "pause_task"),
    "RetryTask": _spec("admin", P.RetryTask, "retry_task"),
    "DeleteTask": _spec("admin", P.DeleteTask, "delete_task"),
    "CutoverTask": _spec("admin", P.CutoverTask, "cutover_task"),
    "ModifyTaskBandwidth": _spec("admin", P.ModifyTaskBandwidth, "modify_task_bandwidth"),
    "ModifyTaskRounds": _spec("admin", P.ModifyTaskRounds, "modify_task_rounds"),
    "DescribeTaskEvents": _spec("admin", P.DescribeTaskEvents, "describe_task_events"),
}


# safe to receive twice (reads, or idempotent by design): exempt from the replay check when unsigned
# by a nonce, because the official SDK sends byte-identical requests for the same call in one second
REPEATABLE = frozenset({
    "RegisterSource", "Heartbeat", "PollCommands", "AckCommand",
    "DescribeKeys", "DescribeSources", "DescribeTasks", "DescribeTaskEvents",
})


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("migrate_console_requests", "API requests by action and result code",
                                ["action", "code"], registry=r)
        self.latency = Histogram("migrate_console_request_seconds", "API request latency (long-polls included)",
                                 ["action"], registry=r,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.sources = Gauge("migrate_console_sources", "Registered sources by status", ["status"], registry=r)
        self.tasks = Gauge("migrate_console_tasks", "Tasks by state", ["state"], registry=r)
        self.polls = Gauge("migrate_console_longpolls_held", "PollCommands requests waiting now", registry=r)
        self.pending = Gauge("migrate_console_commands_pending", "Commands not yet acked", registry=r)
        self.writes = Histogram("migrate_console_storage_write_seconds",
                                "Storage writes (durable commits), queueing included", registry=r,
                                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.loop_lag = Histogram("migrate_console_loop_lag_seconds",
                                  "How late a 0.25 s timer fires on the event loop (blocking shows here)",
                                  registry=r, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))

    def watch_gc(self) -> None:
        """Record every garbage-collector pause (a full collection stops the event loop)."""
        import gc

        started: list[float] = [0.0]
        self.gc_pause = Histogram("migrate_console_gc_pause_seconds", "Garbage-collector pauses by generation",
                                  ["generation"], registry=self.registry,
                                  buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))

        def cb(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                self.gc_pause.labels(str(info.get("generation", "?"))).observe(time.perf_counter() - started[0])

        gc.callbacks.append(cb)
        self._gc_cb = cb

    def unwatch_gc(self) -> None:
        import gc

        cb = getattr(self, "_gc_cb", None)
        if cb in gc.callbacks:
            gc.callbacks.remove(cb)

    async def watch_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.25)
            self.loop_lag.observe(max(0.0, loop.time() - t - 0.25))

    async def render(self, svc: ConsoleService) -> bytes:
        from migrated.model.states import TaskState

        now = svc.clock()
        srcs = await svc.storage.list_sources()
        online = sum(1 for s in srcs if svc.is_online(s, now))
        self.sources.labels("online").set(online)
        self.sources.labels("offline").set(len(srcs) - online)
        counts = await svc.storage.task_state_counts()
        for st in TaskState:
            self.tasks.labels(st.value).set(counts.get(st.value, 0))
        self.polls.set(svc.polls_held)
        self.pending.set(await svc.storage.count_pending_commands())
        return generate_latest(self.registry)


def _finite(value: Any) -> Any:
    """``value`` with every NaN / infinity replaced by None (JSON has no spelling for them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _reply(payload: dict[str, Any]) -> web.Response:
    """Strict JSON only: a non-finite number (one stored before the API refused them) is served as null."""
    try:
        body = json.dumps({"Response": payload}, allow_nan=False)
    except ValueError:
        body = json.dumps({"Response": _finite(payload)}, allow_nan=False)
    return web.Response(body=body.encode(), headers={"Content-Type": "application/json"})


# pydantic's problem (params.validation_error) -> the class that answers it
_PARAM_ERRORS: dict[str, type[MigratedError]] = {
    "MissingParameter": MissingParameter,
    "UnknownParameter": UnknownParameter,
    "InvalidParameter": InvalidParameter,
    "InvalidParameterValue": InvalidParameterValue,
}


def error_reply(exc: BaseException, rid: str) -> tuple[str, web.Response]:
    """The one place an error becomes an API reply: (code, response). A :class:`MigratedError` answers
    with its own API code and message; anything else is a bug, answered ``InternalError`` with the
    request ID to find in the log (the caller logs it) and nothing of the exception itself."""
    if isinstance(exc, MigratedError):
        code, message = exc.api_code, exc.message
    else:
        code, message = "InternalError", f"internal error; the console log has request {rid}"
    return code, _reply({"Error": {"Code": code, "Message": message}, "RequestId": rid})


async def _read_body(request: web.Request, cap: int) -> bytes:
    if request.content_length is not None and request.content_length > cap:
        raise RequestTooLarge(f"the request body is {request.content_length} bytes; the limit is {cap}")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > cap:
            raise RequestTooLarge(f"the request body is over the limit of {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def api_handler(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    metrics: Metrics = request.app[METRICS]  # type: ignore[assignment]
    verifier = request.app[VERIFIER]
    rid = str(uuid.uuid4())
    t0 = time.monotonic()
    action = request.headers.get("X-TC-Action", "")
    label = action if action in ACTIONS else "(unknown)"
    code = "OK"
    try:
        body = await _read_body(request, svc.config.api.max_body_bytes)
        headers = {k.lower(): v for k, v in request.headers.items()}
        key = await verifier.verify(method=request.method, path=request.path, query=request.query_string,
                                    headers=headers, body=body, now=time.time())
        spec = ACTIONS.get(action)
        if spec is None:
            raise InvalidAction(f"no action {action!r}; see docs/console-api.md")
        version = request.headers.get("X-TC-Version", "")
        if version != API_VERSION:
            raise NoSuchVersion(f"X-TC-Version {version!r} is not supported; use {API_VERSION}")
        if key.role != spec.role:
            raise UnauthorizedOperation(f"{action} needs an {spec.role} key; this is an {key.role} key")
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise InvalidParameter(f"Content-Type must be application/json, not {ctype!r}")
        try:
            data = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidParameter(f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise InvalidParameter("the body is nested too deeply") from None
        if not isinstance(data, dict):
            raise InvalidParameter("the body must be a JSON object of parameters")
        try:
            params = spec.model.model_validate(data)
        except ValidationError as exc:
            c, m = P.validation_error(exc)
            raise _PARAM_ERRORS.get(c, InvalidParameterValue)(m) from None
        result = await spec.handler(svc, Principal(key), params)
        result["RequestId"] = rid
        return _reply(result)
    except Exception as exc:
        code, reply = error_reply(exc, rid)
        if not isinstance(exc, MigratedError) or (code == "InternalError"):  # a bug: the log has the stack
            log.exception("request failed", action=action, request_id=rid)
        elif code.startswith("AuthFailure"):
            log.info("request refused", action=action, code=code, remote=request.remote)
        return reply
    finally:
        metrics.requests.labels(label, code).inc()
        metrics.latency.labels(label).observe(time.monotonic() - t0)


async def healthz(request: web.Request) -> web.Response:
    svc = request.app[SERVICE]
    try:
        await svc.storage.count_pending_commands()
    except Exception as exc:  # storage unusable: say so, with a non-200 for load balancers
        return web.json_response({"status": "error", "error": type(exc).__name__}, status=503)
    return web.json_response({"status": "ok", "version": API_VERSION})


async def metrics_handler(request: web.Request) -> web.Response:
    metrics: Metrics = request.app[METRICS]  # type: ignore[assignment]
    body = await metrics.render(request.app[SERVICE])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


API_PATH = "/"  # the one path the signed API is served at (docs/console-api.md)


@web.middleware
async def api_at_its_path_only(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                               ) -> web.StreamResponse:
    """A signed API call (it carries ``X-TC-Action``) to a path nothing serves gets a console error
    that says where the API is, with HTTP 404; it is never answered as if it were at ``/``, so
    ``migrated register --console http://host:port/wrong/path`` fails instead of saving that URL."""
    if (request.method == "POST" and request.path != API_PATH and "X-TC-Action" in request.headers
            and isinstance(getattr(request.match_info, "http_exception", None),
                           (web.HTTPNotFound, web.HTTPMethodNotAllowed))):
        message = (f"no console API at path {request.path[:200]!r}: this console serves its API at "
                   f"{API_PATH!r}; use the console's URL without a path (e.g. http://host:8930)")
        body = json.dumps({"Response": {"Error": {"Code": "InvalidAction", "Message": message},
                                        "RequestId": str(uuid.uuid4())}})
        return web.Response(status=404, body=body.encode(), headers={"Content-Type": "application/json"})
    return await handler(request)


def build_app(service: ConsoleService) -> web.Application:
    """The app around an already open service (storage lifecycle is the caller's)."""
    cfg = service.config
    app = web.Application(client_max_size=cfg.api.max_body_bytes + 1024)
    app[SERVICE] = service
    app[METRICS] = Metrics()
    app[VERIFIER] = Verifier(service=cfg.api.service, window_seconds=cfg.api.signature_window_seconds,
                             get_key=service.storage.get_key, require_signed_action=cfg.api.require_signed_action,
                             repeatable=REPEATABLE)
    app.middlewares.append(api_at_its_path_only)
    app.router.add_post(API_PATH, api_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    setup_web(app, service)  # the operators' web UI under /ui/ (migrated/console/web/)
    return app


def make_storage(cfg: ConsoleConfig) -> Storage:
    return create_storage(cfg.storage.backend, heartbeat_flush_seconds=cfg.storage.heartbeat_flush_seconds,
                          **cfg.storage.backend_options())


def create_app(cfg: ConsoleConfig, *, storage: Storage | None = None, clock: Callable[[], float] = time.time
               ) -> web.Application:
    """The full console: opens storage and runs the scheduler for the app's lifetime."""
    store = storage or make_storage(cfg)
    cloud = open_provider(cfg.cloud) if cfg.cloud is not None else None  # by name: docs/cloud.md
    service = ConsoleService(store, cfg, clock=clock, cloud=cloud)
    app = build_app(service)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        metrics: Metrics = app[METRICS]  # type: ignore[assignment]
        store.observe_write = metrics.writes.observe
        await store.open()
        sched = Scheduler(service, tick_seconds=cfg.scheduler.tick_seconds)
        sched.start()
        await service.resume_image_jobs()
        lag = asyncio.create_task(metrics.watch_loop_lag())
        metrics.watch_gc()
        try:
            yield
        finally:
            metrics.unwatch_gc()
            lag.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag
            await sched.stop()
            await service.aclose()
            await store.close()

    async def on_shutdown(app: web.Application) -> None:
        service.shutdown()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    return app
