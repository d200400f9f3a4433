"""Server-side TC3-HMAC-SHA256 verification: headers -> the key that signed, or a
:class:`~migrated.errors.MigratedError` whose API code is below.

Checks, in order, each with its Tencent-style code:

1. ``X-TC-Action``, ``X-TC-Version``, ``X-TC-Timestamp`` present (``MissingParameter``);
   timestamp an integer (``InvalidParameter``).
2. ``Authorization`` present and TC3-shaped (``AuthFailure.InvalidAuthorization``), every
   signed header present, credential scope service is ours (``AuthFailure.InvalidAuthorization``).
3. Timestamp within ±window of the server clock (``AuthFailure.SignatureExpire``).
4. SecretId known and not revoked (``AuthFailure.SecretIdNotFound``).
5. Signature (the SDK's own ``Sign.sign_tc3``) equal in constant time, and the credential
   date equal to the timestamp's UTC date (``AuthFailure.SignatureFailure``).
6. The same (action, version, signature) not seen before within the window
   (``AuthFailure.ReplayedRequest``), for every request that signs ``x-tc-nonce`` and
   for every action not in ``repeatable``. Repeatable actions (reads, and idempotent
   ones like Heartbeat, PollCommands, AckCommand) signed without a nonce are exempt:
   repeating them changes nothing, and an SDK client that sends the same call twice
   in one second sends byte-identical signed requests.

The official SDK signs only ``content-type;host``: its signature covers the body and
the timestamp but not ``X-TC-Action``, so two *different* actions with the same body
in the same second carry the same signature. The replay key therefore includes the
action; the price is that a captured SDK request could be re-sent once under another
action within the window. Our client signs ``x-tc-action`` (and a nonce), and
``api.require_signed_action: true`` refuses requests that do not. The cache is per
process and in memory: after a console restart a request captured in the last
``window`` seconds could be replayed once (documented in docs/console-api.md).
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable, Mapping

from migrated.console.storage import KeyRecord
from migrated.errors import AuthError, InvalidParameter, MissingParameter, SignatureExpire
from migrated.model import tc3


class ReplayCache:
    """Signatures seen, each kept until its timestamp leaves the window. O(log n) per request."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []  # heap

    def __len__(self) -> int:
        return len(self._seen)

    def check_and_add(self, signature: str, expires: float, now: float) -> bool:
        """True if new (and now remembered); False if seen before."""
        while self._expiry and self._expiry[0][0] < now:
            exp, sig = heapq.heappop(self._expiry)
            if self._seen.get(sig) == exp:
                del self._seen[sig]
        if signature in self._seen:
            return False
        self._seen[signature] = expires
        heapq.heappush(self._expiry, (expires, signature))
        return True


class Verifier:
    def __init__(self, *, service: str, window_seconds: int,
                 get_key: Callable[[str], Awaitable[KeyRecord | None]], require_signed_action: bool = False,
                 repeatable: frozenset[str] = frozenset()) -> None:
        self.service = service
        self.repeatable = repeatable
        self.require_signed_action = require_signed_action
        self.window = window_seconds
        self.get_key = get_key
        self.replays = ReplayCache()

    async def verify(self, *, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes,
                     now: float) -> KeyRecord:
        """``headers``: lower-case names -> values. Returns the active key that signed the request."""
        for name in ("x-tc-action", "x-tc-version", "x-tc-timestamp"):
            if not headers.get(name):
                raise MissingParameter(f"missing header {_title(name)}")
        raw_ts = headers["x-tc-timestamp"].strip()
        if not (raw_ts.isascii() and raw_ts.isdigit()):  # isdigit alone takes "²", which int() refuses
            raise InvalidParameter("header X-TC-Timestamp must be a unix time in whole seconds")
        ts = int(raw_ts)
        auth_value = headers.get("authorization")
        if not auth_value:
            raise AuthError("missing header Authorization (TC3-HMAC-SHA256)", detail="InvalidAuthorization")
        try:
            auth = tc3.parse_authorization(auth_value)
        except tc3.MalformedAuthorization as exc:
            raise AuthError(str(exc), detail="InvalidAuthorization") from None
        for name in auth.signed_headers:
            if name not in headers:
                raise AuthError(f"signed header {name} is not in the request", detail="InvalidAuthorization")
        if self.require_signed_action and "x-tc-action" not in auth.signed_headers:
            raise AuthError("this console requires X-TC-Action among the SignedHeaders (api.require_signed_action)",
                            detail="InvalidAuthorization")
        if auth.service != self.service:
            raise AuthError(f"the credential scope names service {auth.service!r}; this console is {self.service!r}",
                            detail="InvalidAuthorization")
        # 19 digits and more is past the year 10**10 (and beyond a float: now - ts would overflow)
        if len(raw_ts) > 18 or abs(now - ts) > self.window:
            shown, skew = (raw_ts, f"{int(now - ts)}") if len(raw_ts) <= 18 else (f"{raw_ts[:18]}...", "far")
            raise SignatureExpire(f"X-TC-Timestamp {shown} is {skew} s from the server time {int(now)}; "
                                  f"allowed ±{self.window} s (check the client's clock)")
        key = await self.get_key(auth.secret_id)
        if key is None or not key.active:
            raise AuthError("the SecretId does not exist or was revoked", detail="SecretIdNotFound")
        expected = tc3.signature(
            key.secret_key, timestamp=raw_ts, date=auth.date, service=auth.service, method=method, path=path,
            query=query, headers=headers, signed_headers=auth.signed_headers, body=body,
        )
        if not tc3.signatures_equal(expected, auth.signature) or auth.date != tc3.utc_date(ts):
            raise AuthError("the signature does not match (wrong SecretKey, or the request changed after signing)",
                            detail="SignatureFailure")
        action = headers["x-tc-action"]
        replay_key = f"{action}|{headers['x-tc-version']}|{auth.signature}"
        checked = "x-tc-nonce" in auth.signed_headers or action not in self.repeatable
        if checked and not self.replays.check_and_add(replay_key, ts + self.window + 1, now):
            raise AuthError("this signed request was already received; sign every request anew",
                            detail="ReplayedRequest")
        return key


def _title(name: str) -> str:
    return "-".join(p.upper() if p in ("tc",) else p.capitalize() for p in name.split("-"))
