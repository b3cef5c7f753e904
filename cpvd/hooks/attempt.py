"""The outcome of one delivery attempt, as both senders report it."""

from __future__ import annotations

from dataclasses import dataclass

#: how much of a failing program's output or a receiver's answer an error keeps
DETAIL_CHARS = 300


@dataclass(frozen=True)
class Attempt:
    ok: bool
    #: "exit 0", "HTTP 204", or what went wrong and how to fix it
    detail: str
    seconds: float


def tail(raw: bytes) -> str:
    """The last :data:`DETAIL_CHARS` of a program's output or a receiver's body, one line."""
    text = raw.decode("utf-8", "replace").strip().replace("\n", " | ")
    return text if len(text) <= DETAIL_CHARS else "…" + text[-DETAIL_CHARS:]
