"""The one error tree of migrated.

Every error a user can see is a :class:`MigratedError`. Each class carries every outward form
of itself: its exit code (``exit_code``, docs/exit-codes.md), its console API code (``api_code``,
docs/console-api.md) and whether retrying the same operation can help (``retryable``):
temporary faults (a dropped connection, a console that is briefly away) are retried by loops
until a deadline; permanent ones (a bad config key, a wrong host key, a target that is too
small) stop and say what to fix.

Only ``main()`` functions turn errors into exit codes, and only ``error_reply`` in
``migrated/console/app.py`` turns them into API replies. A raise site may refine the class's API
code with ``detail`` (``ResourceNotFound(..., detail="Task")`` answers ``ResourceNotFound.Task``);
a code that needs its own exit code or that a client acts on gets its own class. The console
CLI's exit code follows the console's error code through the same table (:func:`exit_code_for`).
Messages name the thing to fix (the config key, the host, the disk), never a stack, and never a
secret.

::

    class                              exit  API code                                meaning
    MigratedError                      1     InternalError                           internal / unexpected
    ├── UsageError                     2     InvalidParameter                        bad CLI arguments or request
    │   ├── InvalidParameter           2     InvalidParameter[.*]                    wrong type or form
    │   ├── InvalidParameterValue      2     InvalidParameterValue                   parses, not acceptable
    │   │   └── OutOfRange             2     InvalidParameterValue                   beyond its bound
    │   ├── MissingParameter           2     MissingParameter                        parameter / header absent
    │   ├── UnknownParameter           2     UnknownParameter                        not taken by the action
    │   ├── InvalidAction              2     InvalidAction                           no such API action
    │   ├── NoSuchVersion              2     NoSuchVersion                           X-TC-Version unsupported
    │   ├── RequestTooLarge            2     RequestSizeLimitExceeded                body over the cap
    │   └── ResourceNotFound           2     ResourceNotFound[.*]                    no such source, task ...
    ├── ConfigError                    2     InvalidParameterValue                   config (names the key path)
    ├── StateError                     2     FailedOperation.ActionDenied            the task's state forbids it
    │   ├── IllegalStateTransition     2     FailedOperation.IllegalStateTransition  a report along no edge
    │   ├── ResourceInUse              2     ResourceInUse[.*]                       held by an unfinished task
    │   └── Refused                    2     FailedOperation[.*]                     a rule (last admin key ...)
    ├── SourceError                    6     FailedOperation.Source                  the source cannot be read
    │   └── QuiesceError               6     FailedOperation.Source                  freeze / hook / snapshot
    ├── ConnectionFailed               3     ResourceUnavailable                     network / SSH (retryable)
    │   ├── SourceOffline              3     FailedOperation.SourceOffline           no heartbeat from the agent
    │   └── AuthError                  3     AuthFailure[.*]                         host key / credentials
    │       ├── SignatureExpire        3     AuthFailure.SignatureExpire             clock skew over the window
    │       └── UnauthorizedOperation  3     AuthFailure.UnauthorizedOperation       the key may not do this
    ├── ProtocolError                  4     FailedOperation.Protocol                the receiver broke protocol
    ├── TargetError                    4     FailedOperation.Target                  too small, mounted ...
    │   └── TargetInstanceUnusable     4     FailedOperation.TargetInstance          (cloud) not RUNNING ...
    ├── CheckpointError                1     FailedOperation.Checkpoint              callers fall back
    ├── VerificationFailed             5     FailedOperation.Verification            blocks differ (--checksum)
    ├── Interrupted                    130   FailedOperation.Interrupted             pause / signal: resumable
    ├── Busy                           3     InternalError.Busy                      kept changing: try again
    ├── ConsoleError                   code  (the console's code, ``.code``)         the console refused
    ├── DaemonNotRunning               7     ResourceUnavailable.Daemon              no daemon on the socket
    ├── ControlAccessDenied            8     UnauthorizedOperation                   socket not for this user
    ├── DaemonAlreadyRunning           2     ResourceInUse.ControlSocket             a live daemon has it
    ├── ChecksFailed                   9     FailedOperation.ChecksFailed            a pre-migration check
    └── CloudError                     3     FailedOperation.CloudApi                Tencent Cloud refused a call

``ConsoleError``'s exit code is the one of the class answering its code ("code" above);
``CloudError`` also has ``.code`` (Tencent's) and ``.request_id``.
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
    """Base of every error migrated reports to a person.

    ``detail`` refines the class's API code for this instance: ``ResourceNotFound(msg,
    detail="Task")`` has ``api_code`` ``ResourceNotFound.Task``; exit code and retryability stay
    the class's."""

    exit_code: ExitCode = ExitCode.INTERNAL
    api_code: str = "InternalError"
    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable
        if detail:
            self.api_code = f"{type(self).api_code}.{detail}"

    def __str__(self) -> str:
        return self.message


class UsageError(MigratedError):
    """Bad command-line arguments, or a bad API request."""

    exit_code = ExitCode.USAGE
    api_code = "InvalidParameter"


class InvalidParameter(UsageError):
    """An API parameter (or header) of the wrong type or form. The message names the parameter."""


class InvalidParameterValue(UsageError):
    """An API parameter that parses but is not acceptable. The message names the parameter."""

    api_code = "InvalidParameterValue"


class OutOfRange(InvalidParameterValue, ValueError):
    """A number beyond its bound: what can be stored and served (every API integer fits 63 bits;
    storage's ``check_int64`` raises it too), or a cap (a bandwidth over 100 GiB/s on the control
    socket). A ``ValueError`` as well, for callers of storage that expect one."""


class MissingParameter(UsageError):
    """A required API parameter or header is absent; the message names it."""

    api_code = "MissingParameter"


class UnknownParameter(UsageError):
    """A parameter the API action does not take (refused, as Tencent Cloud does)."""

    api_code = "UnknownParameter"


class InvalidAction(UsageError):
    """No such API action (checked after the signature)."""

    api_code = "InvalidAction"


class NoSuchVersion(UsageError):
    """An ``X-TC-Version`` this console does not serve."""

    api_code = "NoSuchVersion"


class RequestTooLarge(UsageError):
    """A request body over ``api.max_body_bytes``."""

    api_code = "RequestSizeLimitExceeded"


class ResourceNotFound(UsageError):
    """No such source, task, command or key (``detail`` names which)."""

    api_code = "ResourceNotFound"


class ConfigError(MigratedError):
    """A config file that does not validate. The message starts with the key path."""

    exit_code = ExitCode.USAGE
    api_code = "InvalidParameterValue"

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class StateError(MigratedError):
    """The action is not allowed in the task's current state."""

    exit_code = ExitCode.USAGE
    api_code = "FailedOperation.ActionDenied"


class IllegalStateTransition(StateError):
    """A progress report moves a task along an edge the state machine does not have."""

    api_code = "FailedOperation.IllegalStateTransition"


class ResourceInUse(StateError):
    """The resource is held by something unfinished (a source with an unfinished task)."""

    api_code = "ResourceInUse"


class Refused(StateError):
    """A rule other than the task's state refuses the request as it stands (``detail`` names the
    rule: LastAdminKey, MachineOwnedByOtherKey, NotContinuous); the message says what to do."""

    api_code = "FailedOperation"


class SourceError(MigratedError):
    """The source disk cannot be opened or read."""

    exit_code = ExitCode.SOURCE
    api_code = "FailedOperation.Source"


class ConnectionFailed(MigratedError):
    """The network or SSH transport failed; trying again may help."""

    exit_code = ExitCode.CONNECTION
    api_code = "ResourceUnavailable"
    retryable = True


class SourceOffline(ConnectionFailed):
    """The console has no recent heartbeat from the source's agent."""

    api_code = "FailedOperation.SourceOffline"


class AuthError(ConnectionFailed):
    """Host key unknown or changed, or credentials refused. Retrying cannot help.

    On the console ``detail`` names the check that failed (InvalidAuthorization,
    SecretIdNotFound, SignatureFailure, ReplayedRequest)."""

    api_code = "AuthFailure"
    retryable = False


class SignatureExpire(AuthError):
    """The request's timestamp is outside the console's signature window (a client acts on it:
    it signs again with the console's time)."""

    api_code = "AuthFailure.SignatureExpire"


class UnauthorizedOperation(AuthError):
    """The key is valid but may not do this (its role, or a source registered with another key)."""

    api_code = "AuthFailure.UnauthorizedOperation"


class ProtocolError(MigratedError):
    """The peer broke the wire protocol (bad lengths, offsets, hashes, versions)."""

    exit_code = ExitCode.TARGET
    api_code = "FailedOperation.Protocol"


class TargetError(MigratedError):
    """The target cannot take the data: too small, mounted, unwritable, out of space."""

    exit_code = ExitCode.TARGET
    api_code = "FailedOperation.Target"


class TargetInstanceUnusable(TargetError):
    """(cloud) The target instance is not RUNNING, runs Windows, or its disks are too small."""

    api_code = "FailedOperation.TargetInstance"


class CheckpointError(MigratedError):
    """A checkpoint file is damaged, truncated or belongs to another disk/target.

    Callers do not fail on it: they fall back to comparing hashes with the target.
    """

    api_code = "FailedOperation.Checkpoint"


class VerificationFailed(MigratedError):
    """After the transfer, target blocks still differ from the source."""

    exit_code = ExitCode.VERIFY
    api_code = "FailedOperation.Verification"


class Interrupted(MigratedError):
    """Stopped on request (pause, Ctrl-C, SIGTERM) after a checkpoint; run again to resume."""

    exit_code = ExitCode.INTERRUPTED
    api_code = "FailedOperation.Interrupted"


class Busy(MigratedError):
    """A record kept changing under a read-check-write; trying again helps."""

    exit_code = ExitCode.CONNECTION
    api_code = "InternalError.Busy"
    retryable = True


class ConsoleError(MigratedError):
    """The console answered with an error response.

    ``code`` is the Tencent-style error code (``AuthFailure.SignatureFailure``...); it is also
    this error's ``api_code``, and the exit code is the one of the class that answers that code
    (:func:`exit_code_for`), so ``migrate-console`` exits as if it had raised the error itself.
    """

    exit_code = ExitCode.CONNECTION
    api_code = ""

    def __init__(self, code: str, message: str, *, request_id: str = "", retryable: bool | None = None):
        super().__init__(f"{code}: {message}", retryable=retryable)
        self.code = code
        self.api_code = code
        self.exit_code = exit_code_for(code)
        self.request_id = request_id


class DaemonNotRunning(MigratedError):
    """migratectl could not reach the daemon's control socket."""

    exit_code = ExitCode.DAEMON_NOT_RUNNING
    api_code = "ResourceUnavailable.Daemon"


class ControlAccessDenied(MigratedError):
    """migratectl may not use the daemon's control socket (not root, not in its group)."""

    exit_code = ExitCode.ACCESS_DENIED
    api_code = "UnauthorizedOperation"


class DaemonAlreadyRunning(MigratedError):
    """Another daemon answers on the control socket; refuse to start a second one."""

    exit_code = ExitCode.USAGE
    api_code = "ResourceInUse.ControlSocket"


class ChecksFailed(MigratedError):
    """A pre-migration check failed; the message names each failed check and what to do."""

    exit_code = ExitCode.CHECKS_FAILED
    api_code = "FailedOperation.ChecksFailed"


class QuiesceError(SourceError):
    """The source could not be made quiet for the cutover: a filesystem freeze, a pre/post
    hook command or an LVM snapshot failed. The source is left running (thawed)."""


class CloudError(MigratedError):
    """A Tencent Cloud API call failed. ``code`` is Tencent's error code (``AuthFailure.SecretIdNotFound``,
    ``RequestLimitExceeded``...), ``request_id`` the RequestId to quote to Tencent support.
    Retryable for rate limits, Tencent's internal errors and network faults. On the console API
    it is ``FailedOperation.CloudApi`` (the message has Tencent's code and RequestId)."""

    exit_code = ExitCode.CONNECTION
    api_code = "FailedOperation.CloudApi"

    def __init__(self, code: str, message: str, *, request_id: str = "", action: str = "",
                 retryable: bool | None = None, provider: str = "Tencent Cloud") -> None:
        # provider: the cloud's title (ProviderTraits.title); another provider also passes retryable
        if retryable is None:
            retryable = code.startswith(("RequestLimitExceeded", "InternalError")) or code == "NetworkError"
        where = f"{action}: " if action else ""
        rid = f" (RequestId {request_id})" if request_id else ""
        super().__init__(f"{provider} {where}{code}: {message}{rid}", retryable=retryable)
        self.code = code
        self.request_id = request_id
        self.action = action


def _classes_by_code() -> dict[str, type[MigratedError]]:
    """API code -> the first class that answers it, in the tree's order (a parent before its
    children, siblings as defined)."""
    out: dict[str, type[MigratedError]] = {}
    todo: list[type[MigratedError]] = [MigratedError]
    while todo:
        cls = todo.pop()
        if cls.api_code:
            out.setdefault(cls.api_code, cls)
        todo.extend(reversed(cls.__subclasses__()))
    return out


def error_class_for(code: str) -> type[MigratedError] | None:
    """The class whose API code is ``code`` or the longest dotted prefix of it
    (``ResourceNotFound.Task`` -> :class:`ResourceNotFound`); None for a code no class answers."""
    table = _classes_by_code()
    parts = code.split(".")
    for n in range(len(parts), 0, -1):
        cls = table.get(".".join(parts[:n]))
        if cls is not None:
            return cls
    return None


def exit_code_for(code: str) -> ExitCode:
    """The exit code for a console error code: the answering class's; CONNECTION for a code no class
    answers (the console spoke, but of something this version does not know)."""
    cls = error_class_for(code)
    return cls.exit_code if cls is not None else ExitCode.CONNECTION
