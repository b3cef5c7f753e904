"""The client's one error hierarchy: HTTP status -> exception -> CLI exit code.

The daemon answers failures as ``{"error": {"code", "message"}}``; ``from_response`` is the
single place that turns a status and body into an exception (docker-py style), and each class
carries the exit code the CLI returns for it, so ``cli.py`` never inspects statuses.
Exit codes: 1 the operation failed (including requests the daemon rejected), 2 a usage error
caught locally before anything was sent, 3 the daemon could not be reached.
"""

from __future__ import annotations

from cpvctl.protocol import ProtocolError

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs start-up time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class CpvctlError(Exception):
    """Any failure cpvctl reports; ``code`` is the daemon's error code when it sent one."""

    exit_code = EXIT_FAILED
    #: the code when none is given (``--json`` prints it in the error object)
    default_code = "error"

    def __init__(self, message: str, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.status = status

    def to_json(self) -> dict[str, object]:
        """The error as ``cpvctl --json`` prints it (stderr): the daemon's error shape plus
        the exit code, so a script can tell a usage error from an unreachable daemon."""
        return {"error": {"code": self.code, "message": self.message, "exit_code": self.exit_code}}


class UsageError(CpvctlError):
    """Bad arguments detected locally (invalid name, version, missing file): nothing was sent."""

    exit_code = EXIT_USAGE
    default_code = "usage_error"


def validated(check: Callable[[Any], str], value: object) -> str:
    """``check(value)`` with a ``cpvctl.protocol`` validator, its ProtocolError raised as a
    UsageError: a typo is caught locally, before anything reaches the daemon."""
    try:
        return check(value)
    except ProtocolError as e:
        raise UsageError(e.message, code=e.code) from None


class BadRequest(CpvctlError):
    """The daemon rejected the request as malformed (400, 405, 413, 415)."""


class Forbidden(CpvctlError):
    """403: e.g. a push of a path outside every watched directory."""


class NotFound(CpvctlError):
    """404: unknown artifact, version or job."""


class Conflict(CpvctlError):
    """409 from the daemon, or a local target that differs and needs ``--force``."""


class Unavailable(CpvctlError):
    """503: the daemon runs but its storage or Git remote does not answer."""


class IntegrityError(CpvctlError):
    """Downloaded bytes did not match the manifest's md5 or size."""


class JobFailed(CpvctlError):
    """A job the client waited for ended in ``failed``; ``job`` is its final object."""

    def __init__(self, message: str, job: dict[str, object]) -> None:
        super().__init__(message, code="job_failed")
        self.job = job


class WaitTimeout(CpvctlError):
    """``wait``/``submit`` gave up before the job reached a final state (the job goes on)."""


class ApiMismatch(CpvctlError):
    """Client and daemon speak different API versions; the message says which to upgrade."""


class DaemonUnreachable(CpvctlError):
    """No daemon answered on the socket; the message says why and how to start one."""

    exit_code = EXIT_UNREACHABLE


_BY_STATUS: dict[int, type[CpvctlError]] = {
    400: BadRequest,
    403: Forbidden,
    404: NotFound,
    405: BadRequest,
    409: Conflict,
    413: BadRequest,
    415: BadRequest,
    503: Unavailable,
}


def from_response(status: int, body: bytes, reason: str = "") -> CpvctlError:
    """The exception for a non-2xx answer; tolerates bodies that are not the error JSON."""
    import json  # lazily: errors is imported at start-up, json only matters on failure

    code = "http_" + str(status)
    message = ""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        err = payload["error"]
        code = str(err.get("code") or code)
        message = str(err.get("message") or "")
    if not message:
        text = body.decode("utf-8", "replace").strip()
        message = text[:500] or f"HTTP {status} {reason}".strip()
    if status >= 500 and status != 503:
        message = f"daemon error: {message}"
    return _BY_STATUS.get(status, CpvctlError)(message, code=code, status=status)


_HOW_TO_START = (
    "start it with: cpvd run --config PATH  (or as a service: systemctl --user start cpvd; "
    "on macOS: launchctl kickstart gui/$(id -u)/io.cpv.cpvd), or point cpvctl at its socket "
    "with --socket or CPV_SOCKET"
)


#: (what went wrong, its code, what to say): "not running", "crashed", "not yours" and "hung"
#: each need a different fix. Checked in order; {socket}, {timeout}, {start} are filled in.
_UNREACHABLE: tuple[tuple[type[OSError], str, str], ...] = (
    (
        TimeoutError,
        "timeout",
        "cpvd did not answer on {socket} within {timeout:g} s (busy or hung); "
        "check its log (journalctl --user -u cpvd)",
    ),
    (
        FileNotFoundError,
        "socket_missing",
        "cpvd is not running: no socket at {socket}; {start}",
    ),
    (
        PermissionError,
        "permission_denied",
        "permission denied on {socket}: the socket (mode 0600) belongs to another "
        "user; run cpvctl as the daemon's user or use --socket for your own daemon",
    ),
    (
        ConnectionRefusedError,
        "connection_refused",
        "connection refused on {socket}: a stale socket, cpvd is not listening "
        "(it crashed or was killed); check its log (journalctl --user -u cpvd) and "
        "restart it; {start}",
    ),
)


def unreachable(socket_path: str, error: OSError, timeout: float) -> DaemonUnreachable:
    """Tell "not running" from "crashed" from "not yours": each needs a different fix."""
    for kind, code, message in _UNREACHABLE:
        if isinstance(error, kind):
            text = message.format(socket=socket_path, timeout=timeout, start=_HOW_TO_START)
            return DaemonUnreachable(text, code=code)
    return DaemonUnreachable(
        f"cannot reach cpvd on {socket_path}: {error.strerror or error}", code="unreachable"
    )
