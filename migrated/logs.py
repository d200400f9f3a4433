"""Logging setup (structlog). One call at program start; modules do
``log = structlog.get_logger(__name__)`` and log events with key=value fields.

Formats: ``console`` (readable, for a terminal), ``json`` (one object a line).
The daemon adds ``journald`` (native journal fields) where it runs under systemd.
Never log a secret: the ``redact`` processor drops keys that look like one.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_SECRET_KEYS = ("secret", "password", "token", "authorization", "private_key")


def redact(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if any(s in key.lower() for s in _SECRET_KEYS):
            event[key] = "[redacted]"
    return event


def configure(level: str = "info", fmt: str = "console", stream: Any = None) -> None:
    stream = stream or sys.stderr
    lvl = logging.getLevelNamesMapping().get(level.upper())
    if lvl is None:
        from migrated.errors import UsageError

        raise UsageError(f"--log-level: unknown level {level!r} (debug, info, warning, error)")
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info if fmt == "json" else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
