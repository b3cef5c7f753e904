"""Human output of ``cpvctl hooks`` and ``cpvctl hooks test``: pure functions of the
daemon's JSON, tolerant of missing keys (shown as ``-``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cpvctl.render import DASH, human_duration, table

RECENT_SHOWN = 5


def _when(stamp: object) -> str:
    if not isinstance(stamp, int | float) or isinstance(stamp, bool):
        return DASH
    return datetime.fromtimestamp(stamp).strftime("%H:%M:%S")


def render_hooks(answer: Mapping[str, Any]) -> str:
    hooks = answer.get("hooks") or []
    if not hooks:
        return "no hooks configured (add [[hook]] tables to cpvd.toml)"
    out = [
        table(
            ("HOOK", "KIND", "ON", "PENDING", "DELIVERED", "FAILURES", "TARGET"),
            [
                (
                    h.get("name", DASH),
                    h.get("kind", DASH),
                    ",".join(h.get("on") or []) or DASH,
                    h.get("pending", 0),
                    h.get("delivered", 0),
                    h.get("failures", 0),
                    h.get("target", DASH),
                )
                for h in hooks
            ],
        )
    ]
    for h in hooks:
        out.extend(_hook_detail(h))
    orphans = answer.get("orphaned") or {}
    if orphans:
        listed = ", ".join(f"{k} ({v})" for k, v in orphans.items())
        out.append(f"\ndeliveries waiting for hooks no longer configured: {listed}")
    if answer.get("dropped"):
        out.append(f"\ndropped (outbox full): {answer['dropped']}")
    return "\n".join(out)


def _hook_detail(h: Mapping[str, Any]) -> list[str]:
    lines = []
    if h.get("failing"):
        retry = h.get("retry_at")
        when = f", next try at {_when(retry)}" if retry else ""
        lines.append(
            f"\n{h.get('name')}: FAILING ({h['failing']} attempts{when}): {h.get('last_error')}"
        )
    recent = (h.get("recent") or [])[:RECENT_SHOWN]
    if recent:
        lines.append(f"\n{h.get('name')}: last deliveries")
        for r in recent:
            seconds = r.get("seconds")
            took = _took(seconds)
            mark = "ok  " if r.get("ok") else "FAIL"
            lines.append(
                f"  {_when(r.get('at'))}  {mark}  {r.get('type', DASH)}  "
                f"{r.get('event_id', DASH)}  {took}  {r.get('detail', DASH)}"
            )
    return lines


def _took(seconds: object) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return DASH
    return f"{seconds:.2f}s" if seconds < 60 else human_duration(seconds)


def render_hook_test(result: Mapping[str, Any]) -> str:
    verdict = "delivered" if result.get("ok") else "FAILED"
    return (
        f"hook {result.get('hook', DASH)}: {verdict} ({result.get('detail', DASH)}) "
        f"event {result.get('event_id', DASH)} {result.get('type', DASH)}"
    )
