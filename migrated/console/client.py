"""Async client of the console API (used by the agent daemon and by ``migrate-console``'s
admin subcommands).

Requests are signed with TC3-HMAC-SHA256 by :mod:`migrated.model.tc3` (the SDK's own
``Sign.sign_tc3``) and sent with aiohttp, not the SDK's async ``CommonClient`` (its
httpx proxy/CA settings are broken in 3.1.195, see DESIGN.md). Each request also
signs a random ``X-TC-Nonce``, so two identical calls in one second are not taken
for a replay.

::

    async with ConsoleClient("https://console:8930", sid, skey) as c:
        r = await c.call("Heartbeat", {"SourceId": "src-..."})

Errors: the console's error answer raises :class:`migrated.errors.ConsoleError`
(``.code`` is the Tencent-style code; ``.retryable`` is true for ``InternalError*``,
``RequestLimitExceeded*``, ``ServiceUnavailable*`` and ``ResourceUnavailable*``); a
network failure, a timeout or a reply that is not the console's JSON raises
:class:`migrated.errors.ConnectionFailed` (retryable). For HTTPS with a private CA,
pass a ``session`` whose connector carries the SSL context.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from migrated.console.config import API_VERSION, SERVICE
from migrated.errors import ConnectionFailed, ConsoleError, UsageError
from migrated.model import tc3

RETRYABLE_PREFIXES = ("InternalError", "RequestLimitExceeded", "ServiceUnavailable", "ResourceUnavailable")


class ConsoleClient:
    def __init__(
        self,
        endpoint: str,
        secret_id: str,
        secret_key: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 40,
        service: str = SERVICE,
        version: str = API_VERSION,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parts = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"console endpoint {endpoint!r}: expected http(s)://host[:port]")
        if parts.query or parts.fragment:
            raise UsageError(f"console endpoint {endpoint!r}: no ?query or #fragment; expected http(s)://host[:port]")
        if not secret_id or not secret_key:
            raise UsageError("console credentials: SecretId and SecretKey are both required")
        # posted to as given: a path is kept (a reverse proxy may serve the console under one), so a
        # wrong path fails here instead of being dropped; the console itself serves its API at /
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"
        self.host = parts.netloc
        self.secret_id = secret_id
        self._secret_key = secret_key
        self._session = session
        self._own_session = session is None
        self.timeout = timeout
        self.service = service
        self.version = version
        self._clock = clock
        self._server_date: float | None = None
        self.clock_offset = 0.0  # server time - our time, learnt from a SignatureExpire answer

    def __repr__(self) -> str:  # never the key
        return f"ConsoleClient({self.url!r}, secret_id={self.secret_id!r})"

    async def __aenter__(self) -> ConsoleClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def signed_request(self, action: str, params: dict[str, Any], *, timestamp: int | None = None
                       ) -> tuple[dict[str, str], bytes]:
        """(headers, body) of one signed call; public so tests and tools can alter a copy."""
        body = json.dumps(params, separators=(",", ":")).encode()
        headers = tc3.sign_headers(
            secret_id=self.secret_id, secret_key=self._secret_key, service=self.service, host=self.host,
            action=action, version=self.version,
            timestamp=int(self._clock() + self.clock_offset) if timestamp is None else timestamp,
            body=body, nonce=secrets.token_hex(8),
        )
        return headers, body

    async def call(self, action: str, params: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Call ``action``; returns the ``Response`` object without ``RequestId``.

        When the console answers ``AuthFailure.SignatureExpire`` (this machine's clock is off by
        more than the signature window), the call is signed again once with the console's time
        taken from the reply's ``Date`` header; the offset is kept for later calls."""
        try:
            return await self._call_once(action, params, timeout)
        except ConsoleError as exc:
            if exc.code != "AuthFailure.SignatureExpire" or self._server_date is None:
                raise
            offset = self._server_date - self._clock()
            if abs(offset - self.clock_offset) < 2:
                raise
            self.clock_offset = offset
            return await self._call_once(action, params, timeout)

    async def _call_once(self, action: str, params: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        self._server_date = None
        headers, body = self.signed_request(action, params)
        t = aiohttp.ClientTimeout(total=self.timeout if timeout is None else timeout)
        try:
            async with self._get_session().post(self.url, data=body, headers=headers, timeout=t) as resp:
                raw = await resp.read()
                status = resp.status
                date = resp.headers.get("Date")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            what = "timed out" if isinstance(exc, asyncio.TimeoutError) else (str(exc) or type(exc).__name__)
            raise ConnectionFailed(f"console {self.url} {action}: {what}") from None
        try:
            data = json.loads(raw)
            response = data["Response"]
            if not isinstance(response, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            if status in (404, 405):
                raise ConnectionFailed(
                    f"console {self.url} {action}: HTTP {status}, no console API at this URL; the console serves "
                    f"its API at its root (e.g. {urlsplit(self.url)._replace(path='/').geturl()}): check the path"
                ) from None
            raise ConnectionFailed(
                f"console {self.url} {action}: HTTP {status}, not a console reply (wrong endpoint or a proxy error?)"
            ) from None
        if date:
            try:
                self._server_date = parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError):
                self._server_date = None
        rid = str(response.pop("RequestId", ""))
        err = response.get("Error")
        if err is not None:
            code = str(err.get("Code", "InternalError")) if isinstance(err, dict) else "InternalError"
            msg = str(err.get("Message", "")) if isinstance(err, dict) else str(err)
            raise ConsoleError(code, msg, request_id=rid, retryable=code.startswith(RETRYABLE_PREFIXES))
        return response
