"""Logging setup (structlog). One call at program start; modules do
``log = structlog.get_logger(__name__)`` and log events with key=value fields.

Formats: ``console`` (readable, for a terminal), ``json`` (one object a line),
``journald`` (native journal fields: ``journalctl -o verbose`` shows TASK_ID,
SOURCE_ID, STAGE, ... as their own fields), and ``auto``: journald when stderr is
the journal stream systemd gave us (``$JOURNAL_STREAM``), console on a tty, else json.
Never log a secret: the ``redact`` processor drops keys that look like one, and tracebacks
are written without local variables (a frame's locals once put every request header,
``Authorization`` included, into the log).

Records of the standard ``logging`` module (aiohttp's "Error handling request", asyncio's "Task
exception was never retrieved", warnings) go through the same structlog chain, so with ``json``
every line a program writes is one JSON object, tracebacks included; uncaught exceptions too.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import struct
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import structlog

JOURNAL_SOCKET = "/run/systemd/journal/socket"
_SECRET_KEYS = ("secret", "password", "token", "authorization", "private_key")


def redact(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if any(s in key.lower() for s in _SECRET_KEYS):
            event[key] = "[redacted]"
    return event


def configure(level: str = "info", fmt: str = "console", stream: Any = None,
              journal_socket: str = JOURNAL_SOCKET) -> None:
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = pick_format(stream)
    if fmt == "journald":
        _configure_journald(level, journal_socket)
        return
    lvl = logging.getLevelNamesMapping().get(level.upper())
    if lvl is None:
        from migrated.errors import UsageError

        raise UsageError(f"--log-level: unknown level {level!r} (debug, info, warning, error)")
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        # plain_traceback: never rich's default (show_locals=True), which logs every frame's variables
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty(),
                                                 exception_formatter=structlog.dev.plain_traceback)
    _route_stdlib_logging(lvl, one_line=fmt == "json")
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


class _ToStructlog(logging.Handler):
    """A ``logging`` handler that hands each record to structlog: one chain, one format for both."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            kw: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                kw["exc_info"] = record.exc_info
            structlog.get_logger(record.name).log(record.levelno, record.getMessage(), **kw)
        except Exception:
            self.handleError(record)


def _uncaught(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    structlog.get_logger("migrated").critical("uncaught exception", exc_info=(kind, value, tb))


def _route_stdlib_logging(level: int, *, one_line: bool) -> None:
    """Send every ``logging`` record (and warnings) through structlog, replacing an earlier call's
    handler. ``one_line``: uncaught exceptions are logged too, instead of a traceback on stderr."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _ToStructlog)]:
        root.removeHandler(h)
    root.addHandler(_ToStructlog())
    # WARNING at least, as Python's last-resort handler had it: no aiohttp access or asyncssh info lines
    root.setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)
    # asyncssh's import-time "DSA is deprecated" warnings (cryptography) are about asyncssh, not about
    # anything an operator can change: without this every `migrated sync` began with three tracebacks
    warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh\.")
    sys.excepthook = _uncaught if one_line else sys.__excepthook__


# ---------------------------------------------------------------- journald

# structlog level -> syslog priority
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3, "critical": 2}
_FIELD_BAD = re.compile(r"[^A-Z0-9_]")


def under_journald(stream: Any = None, environ: Mapping[str, str] | None = None) -> bool:
    """True iff ``stream`` (stderr) is the journal stream systemd connected ($JOURNAL_STREAM=dev:ino)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat((stream or sys.stderr).fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def pick_format(stream: Any = None, environ: Mapping[str, str] | None = None) -> str:
    stream = stream or sys.stderr
    if under_journald(stream, environ):
        return "journald"
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty and isatty() else "json"


def journal_field_name(key: str) -> str:
    """A journal field name: uppercase letters, digits, underscore; not starting with '_' or a digit."""
    name = _FIELD_BAD.sub("_", key.upper()).lstrip("_")
    if not name or name[0].isdigit():
        name = "F_" + name
    return name[:64]


def encode_journal_fields(fields: Mapping[str, Any]) -> bytes:
    """Serialise fields in the journal's native datagram format.

    ``KEY=value\n`` when the value has no newline, else ``KEY\n`` + little-endian
    u64 length + raw value + ``\n`` (see systemd's JOURNAL_NATIVE_PROTOCOL)."""
    out = bytearray()
    for key, value in fields.items():
        raw = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
        name = key.encode("ascii")
        if b"\n" in raw:
            out += name + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n"
        else:
            out += name + b"=" + raw + b"\n"
    return bytes(out)


def decode_journal_datagram(data: bytes) -> dict[str, str]:
    """Inverse of :func:`encode_journal_fields` (used by tests and by nothing else)."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            fields[k.decode()] = v.decode()
            i = nl + 1
        else:
            (n,) = struct.unpack_from("<Q", data, nl + 1)
            start = nl + 9
            fields[line.decode()] = data[start:start + n].decode()
            i = start + n + 1
    return fields


class JournalLogger:
    """structlog logger that sends each event as one datagram to journald.

    Big events (over the datagram limit) go through a sealed memfd passed with
    SCM_RIGHTS, as sd_journal_send does. If the journal is unreachable the line
    goes to stderr instead (a log line is never the reason the daemon dies)."""

    def __init__(self, path: str = JOURNAL_SOCKET, identifier: str = "migrated") -> None:
        self.path = path
        self.identifier = identifier
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def send(self, fields: Mapping[str, Any]) -> None:
        data = encode_journal_fields(fields)
        try:
            self._sock.sendto(data, self.path)
        except OSError as e:
            if e.errno not in (90, 105):  # EMSGSIZE, ENOBUFS: too big for a datagram
                self._fallback(fields)
                return
            try:
                fd = os.memfd_create("journal-message", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
                try:
                    os.write(fd, data)
                    import fcntl

                    fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                                fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
                    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
                    self._sock.sendmsg([b""], rights, 0, self.path)
                finally:
                    os.close(fd)
            except OSError:
                self._fallback(fields)

    @staticmethod
    def _fallback(fields: Mapping[str, Any]) -> None:
        print(str(fields.get("MESSAGE", ""))[:4096], file=sys.stderr)

    def msg(self, **fields: Any) -> None:
        self.send(fields)

    log = debug = info = warning = warn = error = critical = exception = fatal = failure = msg


def journal_fields(_logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Final structlog processor: the event dict -> journal fields (returned as logger kwargs)."""
    event = dict(event)
    message = str(event.pop("event", ""))
    level = str(event.pop("level", method))
    event.pop("timestamp", None)  # the journal stamps entries itself
    exc = event.pop("exception", None)
    out: dict[str, Any] = {
        "MESSAGE": message,
        "PRIORITY": _PRIORITY.get(level, 6),
        "SYSLOG_IDENTIFIER": "migrated",
    }
    extra = " ".join(f"{k}={v}" for k, v in event.items() if k != "logger")
    if extra:
        out["MESSAGE"] = f"{message} {extra}"
    if exc:
        out["MESSAGE"] += "\n" + str(exc)
    for key, value in event.items():
        name = journal_field_name(key)
        if name in out or name in ("MESSAGE", "PRIORITY"):
            name = "F_" + name
        out[name] = value
    return out


def _configure_journald(level: str, path: str) -> None:
    lvl = logging.getLevelNamesMapping().get(level.upper())
    if lvl is None:
        from migrated.errors import UsageError

        raise UsageError(f"--log-level: unknown level {level!r} (debug, info, warning, error)")
    journal = JournalLogger(path)
    _route_stdlib_logging(lvl, one_line=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            redact,
            structlog.processors.format_exc_info,
            journal_fields,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=lambda *_a: journal,
        cache_logger_on_first_use=False,
    )
