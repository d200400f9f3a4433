"""TC3-HMAC-SHA256 request signing and verification, as pure code. Pure: no asyncio, no
aiohttp, no files, no clock (callers pass the timestamp in).

The key derivation and the final HMAC are the Tencent Cloud SDK's own
(:meth:`tencentcloud.common.sign.Sign.sign_tc3`); this module builds the canonical
request around it exactly as the SDK does (``abstract_client._get_tc3_signature``),
but for any list of signed headers, so the server side can verify requests from
the official SDK (which signs ``content-type;host``) as well as from clients that
sign more headers (ours adds ``x-tc-action``, so the action cannot be swapped, and
``x-tc-nonce``, so that two identical calls in the same second still differ and are
not taken for a replay).

Canonical request::

    POST\\n/\\n<query>\\n<name:value\\n per signed header>\\n<signed;headers>\\n<sha256(body) hex>

String to sign::

    TC3-HMAC-SHA256\\n<timestamp>\\n<YYYY-MM-DD>/<service>/tc3_request\\n<sha256(canonical request) hex>
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from tencentcloud.common.sign import Sign

ALGORITHM = "TC3-HMAC-SHA256"
CONTENT_TYPE = "application/json"

_AUTH_RE = re.compile(
    r"^TC3-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+)\s*,\s*SignedHeaders=(?P<headers>[^,\s]+)\s*,"
    r"\s*Signature=(?P<sig>[0-9a-fA-F]{64})\s*$"
)


class MalformedAuthorization(ValueError):
    """The Authorization header does not have the TC3 shape; the message says which part."""


@dataclass(frozen=True)
class Authorization:
    secret_id: str
    date: str  # YYYY-MM-DD (UTC) from the credential scope
    service: str
    signed_headers: tuple[str, ...]  # lower-case names, in the order given
    signature: str  # lower-case hex


def utc_date(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def parse_authorization(value: str) -> Authorization:
    """Split ``TC3-HMAC-SHA256 Credential=ID/DATE/SERVICE/tc3_request, SignedHeaders=a;b, Signature=HEX``."""
    m = _AUTH_RE.match(value.strip())
    if not m:
        raise MalformedAuthorization(
            "Authorization must be 'TC3-HMAC-SHA256 Credential=SecretId/Date/Service/tc3_request, "
            "SignedHeaders=content-type;host, Signature=<64 hex>'"
        )
    parts = m.group("cred").split("/")
    if len(parts) != 4 or parts[3] != "tc3_request" or not all(parts[:3]):
        raise MalformedAuthorization("Authorization Credential must be SecretId/YYYY-MM-DD/service/tc3_request")
    secret_id, date, service, _ = parts
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
        raise MalformedAuthorization("Authorization Credential date must be YYYY-MM-DD")
    signed = tuple(h.strip().lower() for h in m.group("headers").split(";") if h.strip())
    for needed in ("content-type", "host"):
        if needed not in signed:
            raise MalformedAuthorization(f"Authorization SignedHeaders must include {needed}")
    return Authorization(secret_id, date, service, signed, m.group("sig").lower())


def canonical_request(
    method: str, path: str, query: str, headers: Mapping[str, str], signed_headers: tuple[str, ...], body: bytes
) -> str:
    """``headers`` maps lower-case names to values; every signed header must be in it (KeyError otherwise)."""
    lines = []
    for name in signed_headers:
        value = headers[name].strip()
        lines.append(f"{name}:{value.lower() if name == 'x-tc-action' else value}\n")  # as Tencent's docs do
    canonical_headers = "".join(lines)
    payload_hash = hashlib.sha256(body).hexdigest()
    return f"{method}\n{path}\n{query}\n{canonical_headers}\n{';'.join(signed_headers)}\n{payload_hash}"


def string_to_sign(timestamp: int | str, date: str, service: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{date}/{service}/tc3_request\n{digest}"


def signature(
    secret_key: str,
    *,
    timestamp: int | str,
    date: str,
    service: str,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: tuple[str, ...],
    body: bytes,
) -> str:
    """The hex signature the SDK would compute for this request (its own ``Sign.sign_tc3``)."""
    canonical = canonical_request(method, path, query, headers, signed_headers, body)
    return Sign.sign_tc3(secret_key, date, service, string_to_sign(timestamp, date, service, canonical))


def signatures_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two hex signatures."""
    return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii", "replace"))


def sign_headers(
    *,
    secret_id: str,
    secret_key: str,
    service: str,
    host: str,
    action: str,
    version: str,
    timestamp: int,
    body: bytes,
    nonce: str | None = None,
    region: str | None = None,
) -> dict[str, str]:
    """Every header of a signed ``POST /`` with a JSON body: what the SDK sends, but with
    ``X-TC-Action`` signed too (the SDK signs only content-type and host, so its action header
    could be swapped) and an optional signed ``X-TC-Nonce``. ``host`` is ``host[:port]``
    exactly as it goes in the Host header."""
    headers = {"content-type": CONTENT_TYPE, "host": host, "x-tc-action": action.lower()}
    signed: tuple[str, ...] = ("content-type", "host", "x-tc-action")
    if nonce is not None:
        headers["x-tc-nonce"] = nonce
        signed = (*signed, "x-tc-nonce")
    date = utc_date(timestamp)
    sig = signature(
        secret_key,
        timestamp=timestamp,
        date=date,
        service=service,
        method="POST",
        path="/",
        query="",
        headers=headers,
        signed_headers=signed,
        body=body,
    )
    out = {
        "Content-Type": CONTENT_TYPE,
        "Host": host,
        "X-TC-Action": action,
        "X-TC-Version": version,
        "X-TC-Timestamp": str(timestamp),
        "Authorization": (
            f"{ALGORITHM} Credential={secret_id}/{date}/{service}/tc3_request, "
            f"SignedHeaders={';'.join(signed)}, Signature={sig}"
        ),
    }
    if nonce is not None:
        out["X-TC-Nonce"] = nonce
    if region:
        out["X-TC-Region"] = region
    return out
