"""Sessions, CSRF tokens and login throttling for the operators' web UI.

Contracts:

- A session is a random 256-bit token in a cookie that is ``HttpOnly``, ``SameSite=Strict``,
  ``Path=/ui`` and ``Secure`` when the request came over HTTPS. The server keeps the session
  (in memory, per console process); the cookie carries nothing but the token. Logging out or
  expiring removes it server-side, so a stolen old cookie is worthless.
- No secret key is ever stored in a session or sent to the browser: the login form posts the
  admin SecretId + SecretKey once, they are checked against the console's keys, and only the
  SecretId is remembered (to show who is logged in).
- Every state-changing request (any POST under ``/ui``) carries a CSRF token equal to the
  session's (synchronizer token, constant-time compare). The login form, which has no session
  yet, uses a double-submit token: a random cookie that the form must repeat.
- Failed logins are throttled per client address and per SecretId: after ``free_failures``
  failures in ``window`` seconds each further attempt is refused until a delay that doubles
  with each failure (capped) has passed. A success clears the counter for that SecretId and address.

Pure apart from ``secrets``/``time``: the clock is passed in, so tests drive time directly.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SESSION_COOKIE = "migrated_session"
LOGIN_COOKIE = "migrated_login"
COOKIE_PATH = "/ui"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_equal(a: str | None, b: str | None) -> bool:
    """Constant-time compare; a missing token never matches."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass
class WebSession:
    token: str
    secret_id: str
    csrf: str
    tz: str  # the operator's IANA time zone (from the browser at login), "UTC" if unknown
    created: float
    last_seen: float
    flash: list[tuple[str, str]] = field(default_factory=list)  # (level, message) shown once


class SessionStore:
    """In-memory sessions with an idle and an absolute lifetime.

    One console process owns its sessions; several console processes behind one address need
    sticky routing (or the operator logs in again when moved). That is written in docs/webui.md.
    """

    def __init__(self, *, idle: float = 3600.0, absolute: float = 12 * 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.idle, self.absolute, self.clock = idle, absolute, clock
        self._sessions: dict[str, WebSession] = {}

    def create(self, secret_id: str, tz: str) -> WebSession:
        now = self.clock()
        self._expire(now)
        s = WebSession(token=new_token(), secret_id=secret_id, csrf=new_token(), tz=tz, created=now, last_seen=now)
        self._sessions[s.token] = s
        return s

    def get(self, token: str | None) -> WebSession | None:
        """The live session for ``token`` (touching it), or None."""
        if not token:
            return None
        now = self.clock()
        s = self._sessions.get(token)
        if s is None:
            return None
        if now - s.last_seen > self.idle or now - s.created > self.absolute:
            del self._sessions[token]
            return None
        s.last_seen = now
        return s

    def drop(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)

    def drop_secret_id(self, secret_id: str) -> None:
        """End every session of a key (used when the key is deleted or disabled)."""
        for t in [t for t, s in self._sessions.items() if s.secret_id == secret_id]:
            del self._sessions[t]

    def _expire(self, now: float) -> None:
        for t in [t for t, s in self._sessions.items()
                  if now - s.last_seen > self.idle or now - s.created > self.absolute]:
            del self._sessions[t]


@dataclass
class _Failures:
    count: int = 0
    first: float = 0.0
    last: float = 0.0


class LoginThrottle:
    """Counts failed logins per key (client address, SecretId) and says how long to wait."""

    def __init__(self, *, free_failures: int = 5, window: float = 900.0, base_delay: float = 2.0,
                 max_delay: float = 300.0, clock: Callable[[], float] = time.time) -> None:
        self.free_failures, self.window = free_failures, window
        self.base_delay, self.max_delay, self.clock = base_delay, max_delay, clock
        self._failures: dict[str, _Failures] = {}

    def wait_seconds(self, *keys: str) -> float:
        """Seconds before another attempt for these keys is allowed (0 = go ahead)."""
        now = self.clock()
        wait = 0.0
        for k in keys:
            f = self._failures.get(k)
            if f is None:
                continue
            if now - f.last > self.window:
                del self._failures[k]
                continue
            excess = f.count - self.free_failures
            if excess >= 0:
                delay = min(self.max_delay, self.base_delay * (2 ** excess))
                wait = max(wait, f.last + delay - now)
        return max(0.0, wait)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for k in keys:
            f = self._failures.get(k)
            if f is None or now - f.last > self.window:
                f = self._failures[k] = _Failures(first=now)
            f.count += 1
            f.last = now
        if len(self._failures) > 100_000:  # bound memory under a spray of made-up SecretIds
            oldest = sorted(self._failures.items(), key=lambda kv: kv[1].last)[: len(self._failures) // 2]
            for k, _ in oldest:
                del self._failures[k]

    def succeeded(self, *keys: str) -> None:
        for k in keys:
            self._failures.pop(k, None)
