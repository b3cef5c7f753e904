"""``cpvctl hooks`` and ``cpvctl hooks test NAME``: argv -> client call -> output and exit
code, with a recording fake client (the real daemon answers in tests/e2e/test_hooks.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cpvctl import cli
from cpvctl.render import render_status
from cpvctl.render_hooks import render_hooks

LISTING = {
    "hooks": [
        {
            "name": "slack", "kind": "url", "target": "https://hooks.slack.com/…",
            "on": ["stage.moved"], "pending": 2, "delivered": 5, "failures": 3, "failing": 3,
            "last_error": "https://hooks.slack.com/… answered HTTP 500", "retry_at": None,
            "recent": [{"event_id": "e1", "type": "stage.moved", "at": 0, "ok": False,
                        "detail": "answered HTTP 500", "seconds": 0.01}],
        }
    ],
    "orphaned": {},
    "dropped": 0,
}  # fmt: skip


class Fake:
    def __init__(self, socket_path: str | None, timeout: float) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.test_ok = True

    def hooks(self) -> dict[str, Any]:
        self.calls.append(("hooks",))
        return LISTING

    def hook_test(self, name: str) -> dict[str, Any]:
        self.calls.append(("hook_test", name))
        return {"hook": name, "ok": self.test_ok, "detail": "HTTP 204", "event_id": "x",
                "type": "hook.test"}  # fmt: skip


def run(argv: list[str], test_ok: bool = True) -> tuple[int, Fake]:
    made: list[Fake] = []

    def factory(socket_path: str | None, timeout: float) -> Fake:
        fake = Fake(socket_path, timeout)
        fake.test_ok = test_ok
        made.append(fake)
        return fake

    code = cli.main(argv, client_factory=factory)  # type: ignore[arg-type]
    return code, made[0] if made else Fake(None, 0)


def test_hooks_lists(capsys: pytest.CaptureFixture[str]) -> None:
    code, fake = run(["hooks"])
    out = capsys.readouterr().out
    assert code == 0 and fake.calls == [("hooks",)]
    assert "slack" in out and "FAILING (3 attempts)" in out and "answered HTTP 500" in out


def test_hooks_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["hooks", "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out) == LISTING


@pytest.mark.parametrize(("ok", "code"), [(True, 0), (False, 1)])
def test_hooks_test_exit_code(ok: bool, code: int, capsys: pytest.CaptureFixture[str]) -> None:
    got, fake = run(["hooks", "test", "slack"], test_ok=ok)
    assert got == code and fake.calls == [("hook_test", "slack")]
    assert ("delivered" if ok else "FAILED") in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["hooks", "test"], ["hooks", "slack"], ["hooks", "fire"]])
def test_hooks_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, fake = run(argv)
    assert code == 2 and not fake.calls


def test_status_shows_failing_hooks() -> None:
    status = {"hooks": {"count": 2, "pending": 4,
                        "failing": [{"name": "slack", "error": "HTTP 500", "failures": 3}]}}
    text = render_status(status)
    assert "hooks: 2, pending 4" in text and "hook slack FAILING (3 attempts): HTTP 500" in text
    assert "hooks" not in render_status({})
    assert render_hooks({"hooks": []}).startswith("no hooks configured")
