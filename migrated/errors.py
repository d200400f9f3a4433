"""The one error tree of migrated.

Every error a user can see is a :class:`MigratedError`. Each class carries its
exit code and whether retrying the same operation can help (``retryable``):
temporary faults (a dropped connection, a console that is briefly away) are
retried by loops until a deadline; permanent ones (a bad config key, a wrong
host key, a target that is too small) stop and say what to fix.

Only ``main()`` functions turn errors into exit codes. Messages name the thing
to fix (the config key, the host, the disk), never a stack, and never a secret.

::

    MigratedError                      exit 1   internal / unexpected
    ├── UsageError                     exit 2   bad CLI arguments
    ├── ConfigError                    exit 2   bad config file (names the key path)
    ├── SourceError                    exit 6   the source disk cannot be read
    │   └── QuiesceError               exit 6   freeze / hook / snapshot for the cutover failed
    ├── ConnectionFailed               exit 3   network / SSH transport (retryable)
    │   └── AuthError                  exit 3   host key or credentials (permanent)
    ├── ProtocolError                  exit 4   the receiver answered nonsense (permanent)
    ├── TargetError                    exit 4   target too small, mounted, unwritable
    ├── CheckpointError                exit 1   damaged / foreign checkpoint (callers fall back)
    ├── VerificationFailed             exit 5   target blocks differ after --checksum
    ├── Interrupted                    exit 130 paused / SIGINT / SIGTERM: resumable
    ├── ConsoleError                   exit 3   the console answered an error (has .code)
    ├── StateError                     exit 2   an action the task's state does not allow
    ├── DaemonNotRunning               exit 7   migratectl cannot reach the daemon
    ├── ControlAccessDenied            exit 8   migratectl may not use the control socket
    ├── DaemonAlreadyRunning           exit 2   a live daemon already owns the control socket
    ├── ChecksFailed                   exit 9   a pre-migration check failed (message lists them)
    └── CloudError                     exit 3   Tencent Cloud refused a call (has .code, .request_id)
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    USAGE = 2
    CONNECTION = 3
    TARGET = 4
    VERIFY = 5
    SOURCE = 6
    DAEMON_NOT_RUNNING = 7
    ACCESS_DENIED = 8
    CHECKS_FAILED = 9
    INTERRUPTED = 130


class MigratedError(Exception):
    """Base of every error migrated reports to a person."""

    exit_code: ExitCode = ExitCode.INTERNAL
    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return self.message


class UsageError(MigratedError):
    """Bad command-line arguments."""

    exit_code = ExitCode.USAGE


class ConfigError(MigratedError):
    """A config file that does not validate. The message starts with the key path."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class SourceError(MigratedError):
    """The source disk cannot be opened or read."""

    exit_code = ExitCode.SOURCE


class ConnectionFailed(MigratedError):
    """The network or SSH transport failed; trying again may help."""

    exit_code = ExitCode.CONNECTION
    retryable = True


class AuthError(ConnectionFailed):
    """Host key unknown or changed, or credentials refused. Retrying cannot help."""

    retryable = False


class ProtocolError(MigratedError):
    """The peer broke the wire protocol (bad lengths, offsets, hashes, versions)."""

    exit_code = ExitCode.TARGET


class TargetError(MigratedError):
    """The target cannot take the data: too small, mounted, unwritable, out of space."""

    exit_code = ExitCode.TARGET


class CheckpointError(MigratedError):
    """A checkpoint file is damaged, truncated or belongs to another disk/target.

    Callers do not fail on it: they fall back to comparing hashes with the target.
    """


class VerificationFailed(MigratedError):
    """After the transfer, target blocks still differ from the source."""

    exit_code = ExitCode.VERIFY


class Interrupted(MigratedError):
    """Stopped on request (pause, Ctrl-C, SIGTERM) after a checkpoint; run again to resume."""

    exit_code = ExitCode.INTERRUPTED


class ConsoleError(MigratedError):
    """The console answered with an error response.

    ``code`` is the Tencent-style error code (``AuthFailure.SignatureFailure``...).
    """

    exit_code = ExitCode.CONNECTION

    def __init__(self, code: str, message: str, *, request_id: str = "", retryable: bool | None = None):
        super().__init__(f"{code}: {message}", retryable=retryable)
        self.code = code
        self.request_id = request_id


class StateError(MigratedError):
    """The action is not allowed in the task's current state."""

    exit_code = ExitCode.USAGE


class DaemonNotRunning(MigratedError):
    """migratectl could not reach the daemon's control socket."""

    exit_code = ExitCode.DAEMON_NOT_RUNNING


class ControlAccessDenied(MigratedError):
    """migratectl may not use the daemon's control socket (not root, not in its group)."""

    exit_code = ExitCode.ACCESS_DENIED


class DaemonAlreadyRunning(MigratedError):
    """Another daemon answers on the control socket; refuse to start a second one."""

    exit_code = ExitCode.USAGE


class ChecksFailed(MigratedError):
    """A pre-migration check failed; the message names each failed check and what to do."""

    exit_code = ExitCode.CHECKS_FAILED


class QuiesceError(SourceError):
    """The source could not be made quiet for the cutover: a filesystem freeze, a pre/post
    hook command or an LVM snapshot failed. The source is left running (thawed)."""


class CloudError(MigratedError):
    """A Tencent Cloud API call failed. ``code`` is Tencent's error code (``AuthFailure.SecretIdNotFound``,
    ``RequestLimitExceeded``...), ``request_id`` the RequestId to quote to Tencent support.
    Retryable for rate limits, Tencent's internal errors and network faults."""

    exit_code = ExitCode.CONNECTION

    def __init__(self, code: str, message: str, *, request_id: str = "", action: str = "",
                 retryable: bool | None = None) -> None:
        if retryable is None:
            retryable = code.startswith(("RequestLimitExceeded", "InternalError")) or code == "NetworkError"
        where = f"{action}: " if action else ""
        rid = f" (RequestId {request_id})" if request_id else ""
        super().__init__(f"Tencent Cloud {where}{code}: {message}{rid}", retryable=retryable)
        self.code = code
        self.request_id = request_id
        self.action = action
