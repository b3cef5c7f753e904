"""What the API asks of hooks: the list with their deliveries (``cpvctl hooks``), a short
summary for ``status``, and a test delivery (``cpvctl hooks test NAME``). Nothing shown
here holds a secret: a webhook URL shows only its scheme, host and port, and
``secret_env`` names the variable, never its value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cpvd.errors import NotFound
from cpvd.hooks.dispatcher import Dispatcher
from cpvd.hooks.event import sample_event
from cpvd.hooks.model import HookConfig
from cpvd.hooks.record import HookRecord


@dataclass(eq=False)
class HookService:
    dispatcher: Dispatcher

    def list(self) -> dict[str, Any]:
        d = self.dispatcher
        pending = d.pending()
        hooks = [
            {**_describe(h), "pending": pending.get(h.name, 0),
             **d.records.get(h.name, HookRecord()).to_json()}
            for h in d.config().hooks
        ]  # fmt: skip
        known = {h.name for h in d.config().hooks}
        orphans = {name: n for name, n in pending.items() if name not in known}
        return {"hooks": hooks, "orphaned": orphans, "dropped": d.outbox.dropped}

    def summary(self) -> dict[str, Any]:
        """For ``status``: pending deliveries and the hooks whose last attempt failed."""
        full = self.list()
        return {
            "count": len(full["hooks"]),
            "pending": sum(h["pending"] for h in full["hooks"]),
            "failing": [
                {"name": h["name"], "error": h["last_error"], "failures": h["failing"]}
                for h in full["hooks"]
                if h["failing"]
            ],
        }

    async def test(self, name: str) -> dict[str, Any]:
        hook = self.dispatcher.hook(name)
        if hook is None:
            known = ", ".join(h.name for h in self.dispatcher.config().hooks) or "none configured"
            raise NotFound(f"no hook named {name!r} (hooks: {known})", "unknown_hook")
        event = sample_event()
        attempt = await self.dispatcher.send(hook, event)
        return {
            "hook": name,
            "event_id": event.id,
            "type": event.type,
            "ok": attempt.ok,
            "detail": attempt.detail,
            "seconds": round(attempt.seconds, 3),
        }


def _describe(h: HookConfig) -> dict[str, Any]:
    return {
        "name": h.name,
        "kind": h.kind,
        "target": h.target(),
        "on": list(h.on),
        "artifact": h.artifact,
        "timeout": h.timeout,
        "secret_env": h.secret_env,
        "signed": h.secret_env is not None,
    }
