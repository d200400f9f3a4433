"""The operators' web UI: aiohttp routes under ``/ui``.

Mounted on the console's app by :func:`setup_web`. Every page needs a logged-in session (otherwise
a redirect to the login page, or 401 for the JSON endpoints the page polls); every POST needs the
session's CSRF token (otherwise 403). Task rules are not implemented here: the backend applies the
console's own validation and :func:`migrated.model.states.check_action`; the pages only *show*
actions that :func:`migrated.model.states.allowed_actions` allows.

Live updates: the tasks list and the task page poll small JSON endpoints (``/ui/api/...``) every
two seconds from ``static/app.js``; the server formats every number, so the page only swaps text.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import structlog
from aiohttp import web

from migrated.cloud.provider import traits_for
from migrated.errors import MigratedError, StateError
from migrated.model.bandwidth import format_kbps, kbps_text
from migrated.model.lvmsize import DEFAULT_SNAPSHOT_SIZE
from migrated.model.states import NOT_STARTED, Action, ActionDenied, TaskState, allowed_actions
from migrated.model.status import continuous_line, format_bytes, format_duration, rounds_settings_line
from migrated.model.taskspec import CHECKS, DEFAULT_FREEZE_BUDGET_SECONDS, DEFAULT_HOOK_TIMEOUT_SECONDS

from .auth import (
    COOKIE_PATH,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    LoginThrottle,
    SessionStore,
    WebSession,
    new_token,
    tokens_equal,
)
from .model import FormErrors, SourceView, TaskForm, TaskView, WebBackend

log = structlog.get_logger(__name__)

HERE = Path(__file__).resolve().parent
BACKEND: web.AppKey[WebBackend] = web.AppKey("web_backend", WebBackend)  # type: ignore[arg-type]
SESSIONS: web.AppKey[SessionStore] = web.AppKey("web_sessions", SessionStore)
THROTTLE: web.AppKey[LoginThrottle] = web.AppKey("web_throttle", LoginThrottle)
JINJA: web.AppKey[jinja2.Environment] = web.AppKey("web_jinja", jinja2.Environment)

POLL_MS = 2000
REGIONS = list(traits_for(None).regions)  # the form's suggestions: the default provider's (migrated/cloud/provider.py)

STATE_LABEL = {
    TaskState.CREATED: "Created", TaskState.SCHEDULED: "Scheduled", TaskState.STARTING: "Starting",
    TaskState.TRANSFERRING: "Transferring", TaskState.SYNCING: "Syncing (rounds)", TaskState.PAUSED: "Paused",
    TaskState.VERIFYING: "Verifying",
    TaskState.SUCCESS: "Success", TaskState.FAILED: "Failed", TaskState.DELETED: "Deleted",
}
ACTION_LABEL = {Action.START: "Start", Action.RETRY: "Retry", Action.PAUSE: "Pause", Action.DELETE: "Delete",
                Action.CUTOVER: "Cutover"}
STAGE_LABEL = {"init": "Initialising target", "transfer": "Transferring data", "verify": "Verifying",
               "release": "Releasing target", "rounds": "Incremental rounds", "cutover": "Cutover: final pass"}

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


# ---------------------------------------------------------------------------- formatting helpers

def zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def valid_tz(tz: str) -> str:
    """The IANA zone name if this machine knows it, else ``UTC``."""
    if not tz or len(tz) > 64:
        return "UTC"
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC"
    return tz


def fmt_time(ts: float | None, tz: str) -> str:
    if not ts:
        return "—"
    return datetime.fromtimestamp(ts, zone(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")


def fmt_ago(ts: float | None, now: float | None = None) -> str:
    if not ts:
        return "never"
    d = max(0, int((now or time.time()) - ts))
    if d < 60:
        return f"{d} s ago"
    if d < 3600:
        return f"{d // 60} min ago"
    if d < 86400:
        return f"{d // 3600} h ago"
    return f"{d // 86400} d ago"


def tz_label(tz: str) -> str:
    off = datetime.now(zone(tz)).strftime("%z")
    return f"{tz} (UTC{off[:3]}:{off[3:]})"


def lead_text(seconds: float) -> str:
    """``scheduler.min_lead_seconds`` in words: 600 -> "10 minutes", 60 -> "1 minute", 90 -> "90 seconds"."""
    s = max(0, round(seconds))
    if s % 60 or not s:
        return f"{s} second" + ("" if s == 1 else "s")
    return f"{s // 60} minute" + ("" if s == 60 else "s")


def message_level(t: TaskView, stalled: bool) -> str:
    """How the task's message is shown: ``ok`` (green) for a finished task's summary, ``error`` (red)
    for everything else, as before (a failure, an offline source, an agent's warning)."""
    return "ok" if t.state == TaskState.SUCCESS and not stalled else "error"


def task_live(t: TaskView, tz: str = "UTC") -> dict[str, Any]:
    """What the tasks list shows for a task and refreshes while polling; all text formatted here."""
    p = t.progress
    total = p.bytes_total if p else 0
    done = p.bytes_done if p else 0
    fraction = (1.0 if total == 0 and t.state == TaskState.SUCCESS else (done / total if total else 0.0))
    # an active task whose agent went quiet makes no progress: say so instead of showing a stale rate
    stalled = t.state.active and not t.source_online
    running = t.state.active and not stalled
    allowed = [a.value for a in allowed_actions(t.state)]
    return {
        "id": t.id,
        "state": t.state.value,
        "state_label": STATE_LABEL[t.state],
        "stage": ("Finished" if t.state == TaskState.SUCCESS  # not the last stage's "Releasing target"
                  else STAGE_LABEL.get(p.stage, p.stage) if (p and p.stage)
                  else f"starts {fmt_time(t.start_at, tz)}" if (t.state == TaskState.SCHEDULED and t.start_at)
                  else "—"),
        "fraction": round(min(1.0, fraction), 4),
        "percent": f"{min(1.0, fraction) * 100:.1f}%",
        "bytes": f"{format_bytes(done)} / {format_bytes(total)}" if total else "—",
        "rate": f"{format_bytes(p.rate_bps)}/s" if (p and running and p.rate_bps) else "—",
        "eta": format_duration(p.eta_seconds) if (p and running and p.eta_seconds is not None) else "—",
        "message": ("The source server is offline: no progress until its agent is back."
                    if stalled else t.message or (p.message if p else "")),
        "message_level": message_level(t, stalled),
        "rounds": continuous_line(p) if p else "",
        "rounds_settings": rounds_settings_line(p) if p else "",  # in effect on the agent, as last reported
        "allowed": allowed,
        "start_label": "Resume" if t.state == TaskState.PAUSED else "Start",
    }


def disks_live(t: TaskView) -> list[dict[str, Any]]:
    out = []
    for d in (t.progress.disks if t.progress else []):
        out.append({"name": d.name, "target": d.target, "size": format_bytes(d.bytes_total),
                    "done": format_bytes(d.bytes_done), "fraction": round(d.fraction, 4),
                    "percent": f"{d.fraction * 100:.1f}%",
                    "sent": format_bytes(d.bytes_sent)})
    return out


def make_jinja() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["bytes"] = format_bytes
    env.filters["kbps"] = format_kbps  # every limit is shown as model/bandwidth shows it: 20.0 MiB/s
    env.filters["kbps_text"] = kbps_text
    env.filters["ago"] = fmt_ago
    env.globals.update(STATE_LABEL=STATE_LABEL, ACTION_LABEL=ACTION_LABEL, POLL_MS=POLL_MS, Action=Action,
                       NOT_STARTED=NOT_STARTED, DEFAULT_SNAPSHOT_SIZE=DEFAULT_SNAPSHOT_SIZE,
                       DEFAULT_FREEZE_BUDGET=DEFAULT_FREEZE_BUDGET_SECONDS,
                       DEFAULT_HOOK_TIMEOUT=DEFAULT_HOOK_TIMEOUT_SECONDS)  # the defaults of model/taskspec
    return env


# ---------------------------------------------------------------------------- request plumbing

def _secure_headers(resp: web.StreamResponse) -> web.StreamResponse:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers["Cache-Control"] = "no-store"
    return resp


def render(request: web.Request, template: str, *, status: int = 200, session: WebSession | None = None,
           **ctx: Any) -> web.Response:
    env = request.app[JINJA]
    if session is not None and "partial" not in request.query:
        ctx.setdefault("flash", session.flash[:])
        session.flash.clear()
    ctx.setdefault("flash", [])
    ctx.setdefault("session", session)
    ctx.setdefault("nav", "")
    text = env.get_template(template).render(**ctx)
    return _secure_headers(web.Response(text=text, status=status, content_type="text/html", charset="utf-8"))


def _json(data: Any, status: int = 200) -> web.Response:
    return _secure_headers(web.json_response(data, status=status))


def _redirect(location: str) -> web.Response:
    resp = web.Response(status=303, headers={"Location": location})
    _secure_headers(resp)
    return resp


def _session(request: web.Request) -> WebSession | None:
    return request.app[SESSIONS].get(request.cookies.get(SESSION_COOKIE))


def _safe_next(value: str | None) -> str:
    """Only same-site paths under /ui are followed after login (no open redirect)."""
    if not value:
        return "/ui/tasks"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui/") or value.startswith("//"):
        return "/ui/tasks"
    return value


Handler = Callable[[web.Request, WebSession], Awaitable[web.StreamResponse]]


def page(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Require a session. GET pages redirect to the login page; JSON endpoints answer 401;
    a POST without the session's CSRF token answers 403 and changes nothing."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        session = _session(request)
        if session is not None and not await request.app[BACKEND].admin_active(session.secret_id):
            request.app[SESSIONS].drop_secret_id(session.secret_id)  # key revoked: its sessions end
            session = None
        is_api = request.path.startswith("/ui/api/")
        if session is None:
            if is_api:
                return _json({"error": "not logged in", "login": "/ui/login"}, status=401)
            if request.method == "GET":
                return _redirect("/ui/login?next=" + quote(request.path_qs, safe="/?=&"))
            return render(request, "error.html", status=401, title="Logged out",
                          message="Your session has ended. Log in again; nothing was changed.")
        if request.method == "POST":
            form = await request.post()
            token = form.get("csrf") or request.headers.get("X-CSRF-Token")
            if not isinstance(token, str) or not tokens_equal(token, session.csrf):
                log.warning("web.csrf_refused", path=request.path, secret_id=session.secret_id)
                return render(request, "error.html", status=403, session=session, title="Refused",
                              message="The form's security token is missing or out of date, so nothing was "
                                      "changed. Reload the page and try again.")
        return await handler(request, session)

    return wrapped


# ---------------------------------------------------------------------------- login / logout

async def login_get(request: web.Request) -> web.StreamResponse:
    if _session(request):
        return _redirect(_safe_next(request.query.get("next")))
    return _login_page(request)


def _login_page(request: web.Request, *, error: str = "", secret_id: str = "", status: int = 200,
                next_url: str | None = None) -> web.Response:
    token = new_token()
    resp = render(request, "login.html", status=status, error=error, secret_id=secret_id, login_csrf=token,
                  next_url=_safe_next(next_url if next_url is not None else request.query.get("next")))
    resp.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict", path=COOKIE_PATH,
                    secure=request.secure, max_age=3600)
    return resp


async def login_post(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    secret_id = str(form.get("secret_id", "")).strip()
    secret_key = str(form.get("secret_key", ""))
    next_url = str(form.get("next", ""))
    if not tokens_equal(str(form.get("csrf", "")), request.cookies.get(LOGIN_COOKIE)):
        return _login_page(request, status=403, secret_id=secret_id, next_url=next_url,
                           error="The login form expired or its security token is missing. Try again.")
    throttle = request.app[THROTTLE]
    peer = request.remote or "?"
    keys = (f"addr:{peer}", f"id:{secret_id}")
    wait = throttle.wait_seconds(*keys)
    if wait > 0:
        log.warning("web.login_throttled", peer=peer, wait=round(wait, 1))
        return _login_page(request, status=429, secret_id=secret_id, next_url=next_url,
                           error=f"Too many failed logins. Try again in {int(wait) + 1} s.")
    if not secret_id or not secret_key:
        return _login_page(request, status=400, secret_id=secret_id, next_url=next_url,
                           error="Enter the SecretId and SecretKey of an admin key.")
    if not await request.app[BACKEND].verify_admin(secret_id, secret_key):
        throttle.failed(*keys)
        # a SecretKey pasted into the SecretId field must not end up in the log
        shown = secret_id if re.fullmatch(r"AKID[A-Za-z0-9]{1,60}", secret_id) else "(not a SecretId)"
        log.warning("web.login_failed", secret_id=shown, peer=peer)
        return _login_page(request, status=401, secret_id=secret_id, next_url=next_url,
                           error="SecretId or SecretKey is wrong, or the key is not an admin key "
                                 "(make one with: migrate-console keys create --role admin --name NAME).")
    throttle.succeeded(*keys)
    old = request.cookies.get(SESSION_COOKIE)
    request.app[SESSIONS].drop(old)  # never reuse a session token across a login (fixation)
    session = request.app[SESSIONS].create(secret_id, valid_tz(str(form.get("tz", ""))))
    log.info("web.login", secret_id=secret_id, peer=peer)
    resp = _redirect(_safe_next(next_url))
    resp.set_cookie(SESSION_COOKIE, session.token, httponly=True, samesite="Strict", path=COOKIE_PATH,
                    secure=request.secure)
    resp.del_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return resp


@page
async def logout_post(request: web.Request, session: WebSession) -> web.StreamResponse:
    request.app[SESSIONS].drop(session.token)
    log.info("web.logout", secret_id=session.secret_id)
    resp = _redirect("/ui/login")
    resp.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return resp


async def index(request: web.Request) -> web.StreamResponse:
    return _redirect("/ui/tasks")


# ---------------------------------------------------------------------------- sources

def source_live(s: SourceView, now: float) -> dict[str, Any]:
    return {"id": s.id, "online": s.online, "status": "Online" if s.online else "Offline",
            "heartbeat": fmt_ago(s.last_heartbeat, now)}


@page
async def sources_page(request: web.Request, session: WebSession) -> web.StreamResponse:
    sources = await request.app[BACKEND].list_sources()
    now = time.time()
    return render(request, "sources.html", session=session, nav="sources", sources=sources, now=now,
                  fmt_time=lambda ts: fmt_time(ts, session.tz), live={s.id: source_live(s, now) for s in sources})


@page
async def sources_api(request: web.Request, session: WebSession) -> web.StreamResponse:
    now = time.time()
    return _json({"sources": [source_live(s, now) for s in await request.app[BACKEND].list_sources()]})


# ---------------------------------------------------------------------------- create task

def _form_from_post(post: Any, source: SourceView) -> TaskForm:
    def s(name: str) -> str:
        return str(post.get(name, "")).strip()

    disks = []
    for i, d in enumerate(source.disks):
        disks.append((d.name, post.get(f"disk-{i}-migrate") == "on", s(f"disk-{i}-target")))
    return TaskForm(region=s("region"), name=s("name"), description=s("description"),
                    target_type=s("target_type") or "image", image_name=s("image_name"),
                    target_instance=s("target_instance"), start_at=s("start_at"), bandwidth_mbps=s("bandwidth_mbps"),
                    checksum=post.get("checksum") == "on", ssh_endpoint=s("ssh_endpoint"),
                    host_key=s("host_key"), disks=disks, continuous=post.get("continuous") == "on",
                    consistent_finish=post.get("consistent_finish") == "on",
                    round_interval=s("round_interval"), read_limit_mib=s("read_limit_mib"), quiesce=s("quiesce"),
                    pre_hook=s("pre_hook"), post_hook=s("post_hook"),
                    freeze_budget=s("freeze_budget"), snapshot_size=s("snapshot_size"),
                    hook_timeout=s("hook_timeout"),
                    ignore_checks=[str(n).strip() for n in post.getall("ignore_check", [])])


def _default_form(source: SourceView) -> TaskForm:
    return TaskForm(disks=[(d.name, d.migrate_by_default, d.name) for d in source.disks])


def _create_page(request: web.Request, session: WebSession, source: SourceView, form: TaskForm,
                 errors: FormErrors | None = None, status: int = 200) -> web.Response:
    lead = request.app[BACKEND].min_lead_seconds
    return render(request, "create_task.html", status=status, session=session, nav="sources", source=source,
                  form=form, errors=errors.fields if errors else {}, general=errors.general if errors else "",
                  regions=REGIONS, tz_label=tz_label(session.tz), checks=CHECKS,
                  now_local=datetime.now(zone(session.tz)).strftime("%Y-%m-%d %H:%M"),
                  min_lead=lead_text(lead) if lead > 0 else "",
                  min_start=(datetime.now(zone(session.tz)) + timedelta(seconds=lead)).strftime("%Y-%m-%dT%H:%M"))


@page
async def create_get(request: web.Request, session: WebSession) -> web.StreamResponse:
    source = await request.app[BACKEND].get_source(request.match_info["source_id"])
    if source is None:
        return render(request, "error.html", status=404, session=session, title="No such source",
                      message="That source server is not registered with this console.")
    return _create_page(request, session, source, _default_form(source))


@page
async def create_post(request: web.Request, session: WebSession) -> web.StreamResponse:
    backend = request.app[BACKEND]
    source = await backend.get_source(request.match_info["source_id"])
    if source is None:
        return render(request, "error.html", status=404, session=session, title="No such source",
                      message="That source server is not registered with this console.")
    form = _form_from_post(await request.post(), source)
    try:
        task_id = await backend.create_task(source.id, form, session.tz, actor=session.secret_id)
    except FormErrors as e:
        return _create_page(request, session, source, form, e, status=400)
    log.info("web.task_created", task_id=task_id, source_id=source.id, secret_id=session.secret_id)
    session.flash.append(("ok", f"Task {form.name} created ({task_id})."))
    return _redirect(f"/ui/tasks/{quote(task_id)}")


# ---------------------------------------------------------------------------- tasks

@page
async def tasks_page(request: web.Request, session: WebSession) -> web.StreamResponse:
    tasks = await request.app[BACKEND].list_tasks()
    return render(request, "tasks.html", session=session, nav="tasks", tasks=tasks,
                  live={t.id: task_live(t, session.tz) for t in tasks})


@page
async def tasks_api(request: web.Request, session: WebSession) -> web.StreamResponse:
    tasks = await request.app[BACKEND].list_tasks()
    return _json({"tasks": [task_live(t, session.tz) for t in tasks]})


async def _task_or_404(request: web.Request, session: WebSession) -> TaskView | web.Response:
    task = await request.app[BACKEND].get_task(request.match_info["task_id"])
    if task is None or task.state == TaskState.DELETED:
        return render(request, "error.html", status=404, session=session, title="No such task",
                      message="That task does not exist or was deleted.")
    return task


@page
async def task_page(request: web.Request, session: WebSession) -> web.StreamResponse:
    task = await _task_or_404(request, session)
    if isinstance(task, web.Response):
        return task
    events = await request.app[BACKEND].task_events(task.id)
    return render(request, "task.html", session=session, nav="tasks", task=task, live=task_live(task, session.tz),
                  disks=disks_live(task), events=events, fmt_time=lambda ts: fmt_time(ts, session.tz))


@page
async def task_api(request: web.Request, session: WebSession) -> web.StreamResponse:
    backend = request.app[BACKEND]
    task = await backend.get_task(request.match_info["task_id"])
    if task is None or task.state == TaskState.DELETED:
        return _json({"error": "no such task"}, status=404)
    events = await backend.task_events(task.id)
    return _json({"task": task_live(task, session.tz), "disks": disks_live(task), "image_id": task.image_id,
                  "events": [{"time": fmt_time(e.time, session.tz), "level": e.level, "message": e.message}
                             for e in events]})


@page
async def delete_confirm(request: web.Request, session: WebSession) -> web.StreamResponse:
    task = await _task_or_404(request, session)
    if isinstance(task, web.Response):
        return task
    allowed = Action.DELETE in allowed_actions(task.state)
    return render(request, "confirm_delete.html", session=session, nav="tasks", task=task, allowed=allowed,
                  denied="" if allowed else str(ActionDenied(Action.DELETE, task.state)))


async def _change_task(session: WebSession, task_id: str, change: Awaitable[Any], what: str, done: str,
                       event: str) -> web.StreamResponse:
    """Run a task change from a form; flash ``done`` or why ``what`` was not changed; back to the task."""
    try:
        await change
    except FormErrors as e:
        session.flash.append(("error", f"{what} not changed: {'; '.join(e.fields.values()) or e.general}"))
    except MigratedError as e:
        session.flash.append(("error", f"{what} not changed: {e}"))
    else:
        log.info(event, task_id=task_id, secret_id=session.secret_id)
        session.flash.append(("ok", done))
    return _redirect(f"/ui/tasks/{quote(task_id)}")


@page
async def task_bandwidth(request: web.Request, session: WebSession) -> web.StreamResponse:
    task_id = request.match_info["task_id"]
    post = await request.post()
    change = request.app[BACKEND].set_bandwidth(task_id, str(post.get("bandwidth_mbps", "")), actor=session.secret_id)
    return await _change_task(session, task_id, change, "Bandwidth limit",
                              "Bandwidth limit changed; a running task applies it at once.", "web.task_bandwidth")


@page
async def task_rounds(request: web.Request, session: WebSession) -> web.StreamResponse:
    task_id = request.match_info["task_id"]
    post = await request.post()
    change = request.app[BACKEND].set_rounds(task_id, str(post.get("round_interval", "")),
                                             str(post.get("read_limit_mib", "")), actor=session.secret_id)
    return await _change_task(session, task_id, change, "Rounds", "Rounds changed; running rounds apply it at once.",
                              "web.task_rounds")


@page
async def task_action(request: web.Request, session: WebSession) -> web.StreamResponse:
    task_id = request.match_info["task_id"]
    try:
        action = Action(request.match_info["action"])
    except ValueError:
        raise web.HTTPNotFound() from None
    post = await request.post()
    back = _safe_next(str(post.get("back", "")) or "/ui/tasks")
    try:
        await request.app[BACKEND].act(task_id, action, actor=session.secret_id)
    except (StateError, ActionDenied) as e:
        session.flash.append(("error", str(e)))
    except MigratedError as e:
        session.flash.append(("error", f"{ACTION_LABEL[action]} failed: {e}"))
    else:
        log.info("web.task_action", task_id=task_id, action=action.value, secret_id=session.secret_id)
        session.flash.append(("ok", f"{ACTION_LABEL[action]}: sent to task {task_id}."))
        if action == Action.DELETE and back.startswith(f"/ui/tasks/{task_id}"):
            back = "/ui/tasks"
    return _redirect(back)


# ---------------------------------------------------------------------------- mounting

def mount(app: web.Application, backend: WebBackend, *, sessions: SessionStore | None = None,
              throttle: LoginThrottle | None = None) -> None:
    """Mount the UI under ``/ui`` (and ``GET /`` → ``/ui/tasks``) on the console's app."""
    app[BACKEND] = backend
    app[SESSIONS] = sessions or SessionStore()
    app[THROTTLE] = throttle or LoginThrottle()
    app[JINJA] = make_jinja()
    r = app.router
    r.add_get("/", index)
    r.add_get("/ui", index)
    r.add_get("/ui/", index)
    r.add_get("/ui/login", login_get)
    r.add_post("/ui/login", login_post)
    r.add_post("/ui/logout", logout_post)
    r.add_get("/ui/sources", sources_page)
    r.add_get("/ui/api/sources", sources_api)
    r.add_get("/ui/sources/{source_id}/new-task", create_get)
    r.add_post("/ui/sources/{source_id}/new-task", create_post)
    r.add_get("/ui/tasks", tasks_page)
    r.add_get("/ui/api/tasks", tasks_api)
    r.add_get("/ui/tasks/{task_id}", task_page)
    r.add_get("/ui/api/tasks/{task_id}", task_api)
    r.add_get("/ui/tasks/{task_id}/delete", delete_confirm)
    r.add_post("/ui/tasks/{task_id}/bandwidth", task_bandwidth)
    r.add_post("/ui/tasks/{task_id}/rounds", task_rounds)
    r.add_post("/ui/tasks/{task_id}/{action}", task_action)
    r.add_static("/ui/static", HERE / "static", append_version=True, name="web_static")
    app[JINJA].globals["static"] = lambda f: str(app.router["web_static"].url_for(filename=f))

