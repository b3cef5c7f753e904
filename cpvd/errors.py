"""One typed error hierarchy for the engine and the daemon.

Each error carries a protocol ``code`` (see ``cpvctl.protocol.ERROR_STATUS``) so the API maps
it to an HTTP status without knowing the engine, and ``retryable`` so the worker knows
whether backoff can help.
"""

from __future__ import annotations


class CpvError(Exception):
    code = "internal"
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(CpvError):
    """The config file (or flags) are wrong; the message names the file and key."""

    code = "bad_request"


class InputError(CpvError):
    """The caller asked for something invalid (bad path, name, version)."""

    code = "bad_request"

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


class NotFound(CpvError):
    code = "not_found"

    def __init__(self, message: str, code: str = "not_found") -> None:
        super().__init__(message)
        self.code = code


class StorageError(CpvError):
    """The DVC remote could not be reached or refused an operation.

    ``outage``: the store was unreachable, timed out or answered 5xx/throttling, so waiting
    will cure it and the job keeps retrying however long it lasts; a refusal (access denied,
    no such bucket) is not an outage.

    ``permanent``: the store refused the request for a reason a retry cannot change (access
    denied, no such bucket, wrong credentials, any 4xx but throttling), so the job gives up
    after a second attempt and says why.
    """

    code = "storage_unreachable"
    retryable = True

    def __init__(self, message: str, outage: bool = False, permanent: bool = False) -> None:
        super().__init__(message)
        self.outage = outage
        self.permanent = permanent and not outage


class IntegrityError(CpvError):
    """Bytes did not match their recorded md5 (corrupt object, file rewritten mid-hash)."""

    code = "conflict"
    retryable = True


class GitError(CpvError):
    """A git operation failed; ``retryable`` when the remote was unreachable or raced."""

    code = "remote_unreachable"
    retryable = True


class StateError(CpvError):
    """The daemon's state (queue DB, lock, socket dir) is unusable."""

    code = "internal"


class NoSpace(StateError):
    """The state directory's filesystem is full; the work is retried once there is room."""

    code = "insufficient_storage"
    retryable = True
