"""The wire contract shared by cpvd and cpvctl: versions, names, error codes.

``cpvd`` imports this module; this module never imports ``cpvd``.

HTTP/1.1 over the daemon's Unix socket, JSON bodies, everything under ``/v1``:

==========  ===========================  =============================================
method      path                         body / query -> answer
==========  ===========================  =============================================
GET         /v1/version                  -> {"api_version": int, "cpv_version": str}
GET         /v1/status                   -> status object (daemon, queue, jobs, watches,
                                            storage, registry, waiting, artifacts: per
                                            watch latest/best/kept/pruned)
GET         /v1/artifacts                -> [{"name", "kind", "latest", "count"}]
GET         /v1/versions?artifact=N      -> [version object], newest first
            [&all=1]                        (all=1: pruned ones too, "pruned": true)
GET         /v1/show?artifact=N&version=V -> version object (with stages and lineage)
POST        /v1/push                     {"path", "artifact", "metrics"?, "bump"?}
                                            -> {"job_id": str, "state": str}
GET         /v1/jobs/<id>                -> job object
POST        /v1/jobs/<id>/retry          -> job object
GET         /v1/pull/manifest?artifact=N&version=V
                                         -> {"artifact", "version", "kind": "file"|"dir",
                                             "name", "md5", "size",
                                             "files": [{"relpath", "md5", "size"}]}
GET         /v1/pull/object?artifact=N&version=V&relpath=R
                                         -> the bytes of one file (application/octet-stream)
POST        /v1/revert                   {"artifact", "version", "with_data"?, "to"?}
                                            -> {"reverted": [{"artifact", "version", "path",
                                                "backup"?}]}
POST        /v1/promote                  {"artifact", "version", "stage", "with_data"?}
                                            -> {"promoted": [{"artifact", "version", "stage",
                                                "tag"}]}
POST        /v1/pause                    {"artifact"?} -> {"paused": [names] | "all"}
POST        /v1/resume                   {"artifact"?} -> {"paused": [...]}
POST        /v1/verify                   {"sample"?: int, "artifact"?: str}
                                            -> {"checked": int, "missing": [...], "corrupt": [...]}
GET         /v1/events                   server-sent events (detected, queued, progress,
                                            versioned, unchanged, failed, reverted, promoted,
                                            stage.moved, version.pruned)
GET         /v1/events/recent?since=T&count=N
                                         -> {"events": [{"id", "type", "time", "data"}],
                                             "last_id": int}: remembered events, oldest
                                             first (T a Unix time; N default 20)
GET         /metrics                     Prometheus text
==========  ===========================  =============================================

Errors: ``{"error": {"code": "snake_case", "message": "..."}}`` with the status below.

Details the client (``cpvctl``) relies on. Keys marked ``?`` may be absent or null; the client
renders what is there and ignores unknown keys, so the daemon may add more.

* Every query value is URL-encoded; versions on the wire are always full ``vX.Y.Z`` (the
  client normalises ``v1.1`` to ``v1.1.0`` before sending).
* References: wherever a request names a version (``show``, ``pull/*``, ``revert``,
  ``promote``), its ``version`` field may instead be ``latest`` (the newest version that is
  tagged, stored and pushed to the registry remote; tagged and stored when there is none),
  ``#STAGE`` (the version the GTO stage points at now), or absent (the current version: what
  the registry's HEAD points at). Answers name the resolved ``vX.Y.Z``. Errors: 404
  ``unknown_stage``, 404 ``no_pushed_version``. ``Ref``/``parse_ref`` hold the syntax.
* ``POST`` bodies are JSON objects sent with ``Content-Type: application/json``.
* ``/v1/version`` must keep working in every future API version: the client asks it first and
  treats a 404 there as "daemon is older (API 0)".
* version object: ``{"artifact", "version", "tag", "md5", "size": int, "created_at": ISO-8601,
  "metrics": {k: number|str}, "stages": [str], "kind"?: "model"|"data", "is_dir"?: bool,
  "name"?: original file/dir name, "nfiles"?: int, "source"?: path, "host"?, "lineage"?:
  {data artifact: version}, "job_id"?}``.
* ``POST /v1/push``: ``path`` is absolute; ``metrics`` an object; ``bump`` is ``"minor"``
  (default) or ``"major"``. Answer 202 (or 200) with at least ``job_id`` and ``state``; a full
  job object is welcome.
* job object: ``{"job_id" (or "id"), "state", "artifact", "path" (or "source"), "version"?:
  "vX.Y.Z" once known, "error"?: str, "created_at"?, "updated_at"?, "result"?: {"reason"?}}``.
  ``state`` is one of ``queued``, ``running``, ``done`` (a new version: ``version`` set),
  ``unchanged`` (content equals the current version: ``version`` names that one),
  ``failed`` (``error`` says why) or ``skipped`` (never versioned, e.g. the file vanished);
  the last four are final (``JOB_FINAL_STATES``). A retryable failure goes back to
  ``queued``, so a ``failed`` event alone does not end a wait: the client re-reads the job.
  ``/v1/jobs/<id>/retry`` re-queues a ``failed`` job (409 otherwise) and answers the job.
* status object: ``{"daemon": {"pid", "cpv_version" (or "version"), "api_version",
  "uptime"?: seconds, "paused"?: [names] | "all"}, "queue": {"queued": int, "running": int,
  "failed": int, "done"?: int},
  "jobs": [job object] (active and recently failed), "watches": [{"path", "artifact",
  "kind", "paused": bool, "poll"?: bool, "error"?}], "storage": {"url",
  "reachable": bool, "error"?}, "registry": {"path", "remote"?, "unpushed": int (commits/tags
  not yet on the remote), "error"?}, "waiting": [{"path", "artifact"?, "reason", "since"?}],
  "settling"?: [{"path", "artifact"?, "quiet_left": seconds}],
  "paused": [names] | "all"?}``.
* ``GET /v1/artifacts``: ``kind`` is ``"model"``/``"data"``, ``latest`` a version or null,
  ``count`` an int; ``stages``? ``{stage: version}``.
* ``GET /v1/pull/manifest``: ``version`` may be omitted: the daemon answers the artifact's
  current version and names it in ``version``. ``name`` is the checkpoint's original file or
  directory name (one path component). For ``kind: "file"``, ``files`` holds exactly one entry
  whose ``relpath`` equals ``name``; for ``"dir"``, ``relpath`` is ``/``-separated relative to
  the directory (never absolute, never ``..``). ``/v1/pull/object`` takes that ``relpath`` and
  the resolved ``version``; it may send ``Content-Length`` (the client checks size and md5
  itself either way).
* ``POST /v1/revert``: ``to`` is an absolute directory; ``with_data`` also reverts the data
  artifacts in the version's lineage. ``POST /v1/promote`` likewise for ``with_data``.
* ``POST /v1/pause`` / ``/v1/resume`` without ``artifact`` act on every watch; the answer
  lists what is paused afterwards.
* ``GET /v1/events``: ``Content-Type: text/event-stream``; each event is ``event: <name>``
  plus one ``data: <JSON object>`` line (the payload, or the envelope ``{"id", "type",
  "time", "data": payload}``: the client unwraps it) and a blank line; ``id:`` lines are
  ignored by the client; ``: comment`` keep-alive lines are
  welcome (every ~15 s). Job events carry ``job_id``; ``progress`` carries ``{"job_id",
  "bytes", "total"}``; ``versioned`` ``{"job_id", "artifact", "version", ...}``; ``unchanged``
  ``{"job_id", "artifact", "version"}``; ``failed`` ``{"job_id", "error", ...}``;
  ``queued``/``detected`` ``{"job_id"?, "artifact", "path"}``; ``reverted``/``promoted``
  as the items of those answers. The client subscribes and then reads the job, so an event
  sent before it subscribed is not needed.
* ``POST /v1/verify``: ``missing`` and ``corrupt`` are lists of ``{"tag"}`` or
  ``{"artifact", "version"}``, plus ``"relpath"?``, ``"object"?`` (the client prints them and
  exits 1 when either is non-empty).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CPV_VERSION = "0.1.0"
API_VERSION = 1
API_PREFIX = "/v1"

#: Maximum request body the daemon accepts (bytes).
MAX_BODY = 64 * 1024

# GTO's artifact name rule: letters, digits, '-', '_', '/'; starts and ends alphanumeric.
_NAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9\-/_]*[a-zA-Z0-9])?$")
_STAGE_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9\-_]*[a-zA-Z0-9])?$")
_VERSION_RE = re.compile(r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?$")
_JOB_ID_RE = re.compile(r"^[0-9a-f]{8,64}$")

#: error code -> HTTP status
ERROR_STATUS: dict[str, int] = {
    "bad_request": 400,
    "invalid_json": 400,
    "invalid_name": 400,
    "invalid_version": 400,
    "invalid_stage": 400,
    "invalid_path": 400,
    "forbidden": 403,
    "path_outside_watch": 403,
    "not_found": 404,
    "unknown_artifact": 404,
    "unknown_version": 404,
    "unknown_job": 404,
    "unknown_stage": 404,
    "no_pushed_version": 404,
    "objects_missing": 404,
    "pruned_version": 409,
    "method_not_allowed": 405,
    "conflict": 409,
    "unchanged": 409,
    "artifact_overlaps": 409,
    "body_too_large": 413,
    "insufficient_storage": 507,
    "unsupported_media_type": 415,
    "storage_unreachable": 503,
    "remote_unreachable": 503,
    "internal": 500,
}


class ProtocolError(ValueError):
    """Input that breaks the wire contract; ``code`` is one of ERROR_STATUS."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid artifact name (GTO rules), else raise."""
    if not isinstance(name, str) or not name:
        raise ProtocolError("invalid_name", "artifact name must be a non-empty string")
    if len(name) > 200 or not _NAME_RE.match(name) or "//" in name:
        raise ProtocolError(
            "invalid_name",
            f"invalid artifact name {name!r}: use letters, digits, '-', '_' and '/' "
            "(e.g. 'vision/resnet50'), starting and ending with a letter or digit",
        )
    return name


def validate_stage(stage: object) -> str:
    if not isinstance(stage, str) or not _STAGE_RE.match(stage) or len(stage) > 100:
        raise ProtocolError(
            "invalid_stage",
            f"invalid stage {stage!r}: use letters, digits, '-' and '_' (e.g. 'prod')",
        )
    return stage


@dataclass(frozen=True, order=True)
class Version:
    """A semantic version ``vMAJOR.MINOR.PATCH``."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: object) -> Version:
        """Parse ``v1.2.3``, ``1.2.3`` or ``v1.2`` (PATCH defaults to 0)."""
        m = _VERSION_RE.match(text) if isinstance(text, str) else None
        if m is None:
            raise ProtocolError(
                "invalid_version",
                f"invalid version {text!r}: expected vMAJOR.MINOR[.PATCH], e.g. v1.2 or v1.2.0",
            )
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))

    def bump(self, part: str = "minor") -> Version:
        if part == "major":
            return Version(self.major + 1, 0, 0)
        if part == "minor":
            return Version(self.major, self.minor + 1, 0)
        if part == "patch":
            return Version(self.major, self.minor, self.patch + 1)
        raise ProtocolError("bad_request", f"unknown bump {part!r}: use major, minor or patch")

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"


FIRST_VERSION = Version(1, 0, 0)


LATEST = "latest"


@dataclass(frozen=True)
class Ref:
    """A reference to one version, as ``gto show`` takes it (DESIGN.md "References").

    At most one of ``version`` (a full ``vX.Y.Z``), ``stage`` and ``latest`` is set; none
    means the artifact's current version. ``selector`` is what travels on the wire in the
    ``version`` field of a query or body; the daemon resolves it (cpvd.registry.references).
    """

    name: str
    version: str | None = None
    stage: str | None = None
    latest: bool = False

    @property
    def selector(self) -> str | None:
        """``vX.Y.Z``, ``latest``, ``#STAGE``, or None for the current version."""
        if self.stage is not None:
            return f"#{self.stage}"
        return LATEST if self.latest else self.version

    @property
    def is_current(self) -> bool:
        return self.selector is None

    def __str__(self) -> str:
        sel = self.selector
        if sel is None:
            return self.name
        return self.name + (sel if sel.startswith("#") else f"@{sel}")


def parse_ref(text: object) -> Ref:
    """``NAME@v1.2[.0]``, ``NAME@latest``, ``NAME#STAGE`` or a bare ``NAME``."""
    if not isinstance(text, str):
        raise ProtocolError("invalid_name", f"invalid reference {text!r}")
    name, hash_, stage = text.partition("#")
    if hash_:
        return ref_of(name, f"#{stage}")
    name, at, selector = text.rpartition("@")
    return ref_of(name, selector) if at else ref_of(text, None)


def ref_of(name: object, selector: object) -> Ref:
    """The reference a wire ``artifact`` plus ``version`` field make (``version`` may be
    ``vX.Y[.Z]``, ``latest``, ``#STAGE``, or absent for the current version)."""
    name = validate_name(name)
    if selector is None:
        return Ref(name)
    if not isinstance(selector, str):
        raise ProtocolError("invalid_version", f"invalid version {selector!r}")
    if selector.startswith("#"):
        return Ref(name, stage=validate_stage(selector[1:]))
    if selector == LATEST:
        return Ref(name, latest=True)
    try:
        return Ref(name, version=normalize_version(selector))
    except ProtocolError:
        raise ProtocolError(
            "invalid_version",
            f"invalid version {selector!r} in {name}@{selector}: use NAME@vX.Y.Z, NAME@vX.Y, "
            "NAME@latest, "
            "NAME#STAGE or a bare NAME (its current version)",
        ) from None


def validate_job_id(job_id: object) -> str:
    if not isinstance(job_id, str) or not _JOB_ID_RE.match(job_id):
        raise ProtocolError("bad_request", f"invalid job id {job_id!r}")
    return job_id


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


#: Job states after which nothing more happens to a job (see the module docstring).
JOB_FINAL_STATES = frozenset({"done", "unchanged", "failed", "skipped", "superseded"})

#: Event names that end a job, mapped to the job state they imply.
JOB_FINAL_EVENTS = {
    "versioned": "done",
    "unchanged": "unchanged",
    "failed": "failed",
    "skipped": "skipped",
    "job.superseded": "superseded",
}


def job_id_of(job: dict[str, object]) -> str | None:
    """A job object's id (``job_id``, or ``id`` as the daemon's job records name it)."""
    value = job.get("job_id", job.get("id"))
    return value if isinstance(value, str) else None


def normalize_version(text: object) -> str:
    """``v1.1`` -> ``v1.1.0``: the form used on the wire and in tags."""
    return str(Version.parse(text))
