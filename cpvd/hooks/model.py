"""What a ``[[hook]]`` is: the events it wants, an optional artifact filter, and exactly one
target (a program to run or a URL to POST to). No I/O here, so the config model can hold it.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: the event types a hook may name in ``on``
EVENT_TYPES = ("version.created", "stage.moved", "version.pruned", "job.failed", "upload.stalled")
#: what ``cpvctl hooks test`` sends: no receiver mistakes it for a real version
TEST_EVENT = "hook.test"
#: the placeholders an ``exec`` argument may hold, filled from the event's data
PLACEHOLDERS = ("artifact", "version", "tag", "stage", "path")
DEFAULT_TIMEOUT = 30.0
_PLACEHOLDER_RE = re.compile("{(" + "|".join(PLACEHOLDERS) + ")}")


@dataclass(frozen=True)
class HookConfig:
    name: str
    on: tuple[str, ...]
    exec: tuple[str, ...] = ()
    url: str | None = None
    #: a glob on the event's artifact name (``vision/*``); None: every artifact
    artifact: str | None = None
    #: seconds one delivery may take (the program runs, the receiver answers)
    timeout: float = DEFAULT_TIMEOUT
    #: the environment variable holding the HMAC secret of a webhook (never the secret)
    secret_env: str | None = None

    @property
    def kind(self) -> str:
        return "url" if self.url is not None else "exec"

    def matches(self, event_type: str, data: dict[str, Any]) -> bool:
        if event_type not in self.on:
            return False
        if self.artifact is None:
            return True
        artifact = data.get("artifact")
        return isinstance(artifact, str) and fnmatch.fnmatchcase(artifact, self.artifact)

    def target(self) -> str:
        """What the hook calls, safe to show: a URL keeps only scheme, host and port (a
        Slack-style webhook URL's path is itself the secret); a program keeps its argv."""
        if self.url is None:
            return " ".join(self.exec)
        return redact_url(self.url)


def redact_url(url: str) -> str:
    """``https://hooks.example/services/T0/B0/SECRET?x=1`` -> ``https://hooks.example/…``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    tail = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{tail}"


def fill_placeholders(argv: tuple[str, ...], data: dict[str, Any]) -> list[str]:
    """Each ``{artifact}``, ``{version}``, ``{tag}``, ``{stage}``, ``{path}`` replaced by the
    event's value (empty when the event has none), in one pass: a value that itself holds
    ``{version}`` (a checkpoint file named so) stays as it is. Not ``str.format``: an
    argument's other braces stay as written."""

    def value(match: re.Match[str]) -> str:
        found = data.get(match.group(1))
        return "" if found is None else str(found)

    return [_PLACEHOLDER_RE.sub(value, arg) for arg in argv]
