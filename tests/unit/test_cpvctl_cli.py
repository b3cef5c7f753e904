"""cpvctl's pure layers: argv -> client call, exit codes, validation, rendering, defaults.

The CLI is driven through ``main(argv)`` with real argv and a recording fake client (the
transport is exercised against a real socket in tests/integration/test_cpvctl_client.py).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from cpvctl import cli, defaults, errors, render
from cpvctl.errors import (
    ApiMismatch,
    BadRequest,
    Conflict,
    CpvctlError,
    DaemonUnreachable,
    Forbidden,
    NotFound,
    Unavailable,
)
from cpvctl.progress import Progress, format_progress
from cpvctl.protocol import CPV_VERSION
from cpvctl.pull import BadManifest, PullResult, check_component, check_relpath

JOB_ID = "0123456789abcdef"


def _pruned(include_pruned: bool) -> dict[str, bool]:
    """The option as recorded: only when given, so the other expectations stay as they are."""
    return {"include_pruned": True} if include_pruned else {}


class FakeClient:
    """Records every call; answers with canned data or raises ``self.fail``."""

    def __init__(self, socket_path: str | None, timeout: float) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.fail: Exception | None = None
        self.final_state = "done"
        self.verify_answer: dict[str, Any] = {"checked": 3, "missing": [], "corrupt": []}

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))
        if self.fail is not None:
            raise self.fail

    def status(self) -> dict[str, Any]:
        self._record("status")
        return STATUS

    def artifacts(self) -> list[dict[str, Any]]:
        self._record("artifacts")
        return [{"name": "vision/resnet50", "kind": "model", "latest": "v1.1.0", "count": 2}]

    def versions(self, name: str, **kw: Any) -> list[dict[str, Any]]:
        self._record("versions", name, **kw)
        return VERSIONS

    def show(self, name: str, version: str) -> dict[str, Any]:
        self._record("show", name, version)
        return VERSIONS[0]

    def push(self, path: str, artifact: str, metrics: Any = None, bump: str = "minor") -> Any:
        self._record("push", path, artifact, metrics=metrics, bump=bump)
        return {"job_id": JOB_ID, "state": "queued"}

    def wait(self, job_id: str, timeout: float | None = None, on_event: Any = None) -> Any:
        self._record("wait", job_id, timeout=timeout)
        if on_event is not None:
            on_event("progress", {"job_id": job_id, "bytes": 50, "total": 100})
            on_event("progress", {"job_id": job_id, "bytes": 100, "total": 100})
        job = {"job_id": job_id, "state": self.final_state, "artifact": "vision/resnet50",
               "version": "v1.2.0"}
        if self.final_state == "failed":
            job["error"] = "storage unreachable"
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        self._record("job", job_id)
        return {"job_id": job_id, "state": self.final_state}

    def retry(self, job_id: str) -> dict[str, Any]:
        self._record("retry", job_id)
        return {"job_id": job_id, "state": "queued"}

    def pull_detailed(self, name: str, version: str | None, out_dir: str, progress: Any = None,
                      force: bool = False, include_pruned: bool = False) -> PullResult:
        self._record("pull", name, version, out_dir, force=force, **_pruned(include_pruned))
        if progress is not None:
            progress(10, 10)
        return PullResult(Path(out_dir) / "model.pt", name, version or "v1.1.0", "file")

    def revert(self, name: str, version: str, with_data: bool = False, to: Any = None,
               include_pruned: bool = False) -> Any:
        self._record("revert", name, version, with_data=with_data, to=to,
                     **_pruned(include_pruned))
        return {"reverted": [{"artifact": name, "version": version, "path": "/data/x.pt"}]}

    def promote(self, name: str, version: str, stage: str, with_data: bool = False) -> Any:
        self._record("promote", name, version, stage, with_data=with_data)
        return {"promoted": [{"artifact": name, "version": version, "stage": stage,
                              "tag": f"{name}#{stage}#1"}]}

    def pause(self, name: str | None = None) -> dict[str, Any]:
        self._record("pause", name)
        return {"paused": "all" if name is None else [name]}

    def resume(self, name: str | None = None) -> dict[str, Any]:
        self._record("resume", name)
        return {"paused": []}

    def verify(self, sample: int | None = None, artifact: str | None = None) -> Any:
        self._record("verify", sample=sample, artifact=artifact)
        return self.verify_answer

    def recent_events(self, since: float | None = None, count: int | None = None) -> Any:
        self._record("recent_events", since=since, count=count)
        events = [{"id": i + 1, "type": "progress", "time": 1.0e9 + i,
                   "data": {"job_id": JOB_ID, "bytes": i, "total": 10}} for i in range(3)]
        return {"events": events, "last_id": 3}

    def events(self, read_timeout: Any = None, after_id: Any = None, raw: bool = False) -> Any:
        self._record("events", after_id=after_id, raw=raw)
        yield "versioned", {"id": 4, "type": "versioned", "time": 1.0e9 + 4,
                            "data": {"artifact": "vision/resnet50", "version": "v1.2.0"}}


VERSIONS = [
    {"artifact": "vision/resnet50", "version": "v1.1.0", "tag": "vision/resnet50@v1.1.0",
     "md5": "0123456789abcdef0123456789abcdef", "size": 3 * 1024 * 1024,
     "created_at": "2025-03-04T05:06:07+00:00", "metrics": {"acc": 0.931234, "epoch": 12},
     "stages": ["prod"], "lineage": {"vision/imagenet": "v1.0.0"}},
    {"artifact": "vision/resnet50", "version": "v1.0.0", "tag": "vision/resnet50@v1.0.0",
     "md5": "fedcba9876543210fedcba9876543210", "size": 512,
     "created_at": "2025-03-03T05:06:07+00:00", "metrics": {}, "stages": []},
]

STATUS = {
    "daemon": {"pid": 4242, "cpv_version": "0.1.0", "api_version": 1, "uptime": 3725},
    "queue": {"queued": 2, "running": 1, "failed": 1},
    "jobs": [{"job_id": JOB_ID, "state": "failed", "artifact": "vision/resnet50",
              "path": "/data/runs/a.pt", "error": "storage unreachable"}],
    "watches": [{"path": "/data/runs", "artifact": "vision/resnet50", "kind": "model",
                 "paused": False, "mode": "inotify"}],
    "storage": {"url": "s3://acme/ckpt", "reachable": False, "error": "timeout"},
    "registry": {"path": "/var/lib/cpv/registry", "remote": "git@host:r.git", "unpushed": 3},
    "waiting": [{"path": "/data/runs/torn.pt", "artifact": "vision/resnet50",
                 "reason": "zip central directory unreadable"}],
}


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient(None, 30.0)


def run(fake: FakeClient, *argv: str) -> int:
    def factory(socket_path: str | None, timeout: float) -> Any:
        fake.socket_path = socket_path
        fake.timeout = timeout
        return fake

    return cli.main(list(argv), client_factory=factory)


def only_call(fake: FakeClient) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    assert len(fake.calls) == 1, fake.calls
    return fake.calls[0]


# --- argv -> client calls --------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["status"], ("status", (), {})),
        (["artifacts"], ("artifacts", (), {})),
        (["versions", "vision/resnet50"], ("versions", ("vision/resnet50",), {})),
        (["versions", "a/b", "--all"], ("versions", ("a/b",), {"all": True})),
        (["show", "vision/resnet50@v1.1"], ("show", ("vision/resnet50", "v1.1.0"), {})),
        (["show", "vision/resnet50@1.1.0"], ("show", ("vision/resnet50", "v1.1.0"), {})),
        (["promote", "a/b@v2.0", "prod"], ("promote", ("a/b", "v2.0.0", "prod"),
                                          {"with_data": False})),
        (["promote", "a/b@v2.0.1", "best", "--with-data"],
         ("promote", ("a/b", "v2.0.1", "best"), {"with_data": True})),
        (["revert", "a/b", "v1.1"], ("revert", ("a/b", "v1.1.0"),
                                     {"with_data": False, "to": None})),
        (["revert", "a/b@v1.1", "--with-data"], ("revert", ("a/b", "v1.1.0"),
                                                 {"with_data": True, "to": None})),
        # references (DESIGN.md "References"): the selector travels as the version
        (["show", "a/b"], ("show", ("a/b", None), {})),
        (["show", "a/b@latest"], ("show", ("a/b", "latest"), {})),
        (["show", "a/b#prod"], ("show", ("a/b", "#prod"), {})),
        (["promote", "a/b", "prod"], ("promote", ("a/b", None, "prod"), {"with_data": False})),
        (["promote", "a/b#best", "prod"], ("promote", ("a/b", "#best", "prod"),
                                           {"with_data": False})),
        (["promote", "a/b@latest", "prod"], ("promote", ("a/b", "latest", "prod"),
                                             {"with_data": False})),
        (["revert", "a/b#prod"], ("revert", ("a/b", "#prod"), {"with_data": False, "to": None})),
        (["revert", "a/b@v1.0", "--include-pruned"], ("revert", ("a/b", "v1.0.0"),
            {"with_data": False, "to": None, "include_pruned": True})),
        (["revert", "a/b", "latest"], ("revert", ("a/b", "latest"),
                                       {"with_data": False, "to": None})),
        (["revert", "a/b", "#prod"], ("revert", ("a/b", "#prod"),
                                      {"with_data": False, "to": None})),
        (["pause"], ("pause", (None,), {})),
        (["pause", "a/b"], ("pause", ("a/b",), {})),
        (["resume"], ("resume", (None,), {})),
        (["resume", "a/b"], ("resume", ("a/b",), {})),
        (["verify"], ("verify", (), {"sample": None, "artifact": None})),
        (["verify", "--sample", "5", "--artifact", "a/b"],
         ("verify", (), {"sample": 5, "artifact": "a/b"})),
        (["retry", JOB_ID], ("retry", (JOB_ID,), {})),
        (["job", JOB_ID], ("job", (JOB_ID,), {})),
    ],
)
def test_verbs_call_the_client(fake: FakeClient, argv: list[str], expected: Any) -> None:
    assert run(fake, *argv) == 0
    assert only_call(fake) == expected


def test_revert_to_is_made_absolute(fake: FakeClient, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(fake, "revert", "a/b", "v1.0.0", "--to", "restore") == 0
    assert only_call(fake)[2]["to"] == str(tmp_path / "restore")


def test_push_sends_absolute_path_metrics_and_bump(
    fake: FakeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "epoch-3.pt").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    code = run(fake, "push", "epoch-3.pt", "--artifact", "vision/resnet50",
               "--metrics", '{"acc": 0.9, "note": "x"}', "--metric", "loss=0.25",
               "--metric", "acc=0.95", "--metric", "tag=warm", "--major")
    assert code == 0
    name, args, kwargs = only_call(fake)
    assert name == "push"
    assert args == (str(tmp_path / "epoch-3.pt"), "vision/resnet50")
    assert kwargs == {"metrics": {"acc": 0.95, "note": "x", "loss": 0.25, "tag": "warm"},
                      "bump": "major"}
    assert JOB_ID in capsys.readouterr().out


def test_push_wait_prints_version_and_progress(
    fake: FakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"x")
    assert run(fake, "push", str(ckpt), "-a", "vision/resnet50", "--wait") == 0
    assert [c[0] for c in fake.calls] == ["push", "wait"]
    out, err = capsys.readouterr()
    assert out.strip() == f"vision/resnet50@v1.2.0  (job {JOB_ID})"
    assert "push vision/resnet50" in err and "100%" in err  # plain progress lines (no TTY)


def test_push_wait_failed_job_exits_1(
    fake: FakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.final_state = "failed"
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"x")
    assert run(fake, "push", str(ckpt), "-a", "a/b", "--wait", "--json") == 1
    out = capsys.readouterr().out
    assert '"state": "failed"' in out


def test_pull_parses_ref_and_output(fake: FakeClient, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert run(fake, "pull", "vision/resnet50@v1.1", "-o", str(tmp_path), "--force") == 0
    assert only_call(fake) == ("pull", ("vision/resnet50", "v1.1.0", str(tmp_path)),
                               {"force": True})
    fake.calls.clear()
    assert run(fake, "pull", "vision/resnet50", "-o", str(tmp_path), "--json") == 0
    assert only_call(fake) == ("pull", ("vision/resnet50", None, str(tmp_path)),
                               {"force": False})
    assert '"version": "v1.1.0"' in capsys.readouterr().out
    for ref, selector in (("vision/r50@latest", "latest"), ("vision/r50#best", "#best")):
        fake.calls.clear()
        assert run(fake, "pull", ref, "-o", str(tmp_path)) == 0
        assert only_call(fake) == ("pull", ("vision/r50", selector, str(tmp_path)),
                                   {"force": False})
        # the restored checkpoint's path comes first, so a script can take the first word
        assert capsys.readouterr().out.split()[0] == str(tmp_path / "model.pt")
    fake.calls.clear()
    assert run(fake, "pull", "vision/r50@v1.0", "-o", str(tmp_path), "--include-pruned") == 0
    assert only_call(fake) == ("pull", ("vision/r50", "v1.0.0", str(tmp_path)),
                               {"force": False, "include_pruned": True})


def test_events_prints_history_and_exits(fake: FakeClient,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert run(fake, "events", "--count", "3", "--json") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert json.loads(lines[0]) == {"event": "progress", "id": 1, "time": 1.0e9,
                                    "data": {"job_id": JOB_ID, "bytes": 0, "total": 10}}
    assert [c[0] for c in fake.calls] == ["recent_events"]  # no stream opened: it exits
    assert fake.calls[0][2] == {"since": None, "count": 3}


def test_events_since_is_a_unix_time(fake: FakeClient) -> None:
    before = time.time()
    assert run(fake, "events", "--since", "10m") == 0
    since = fake.calls[0][2]["since"]
    assert before - 600 - 1 < since <= time.time() - 600
    fake.calls.clear()
    assert run(fake, "events", "--since", "2026-03-04T05:06:07+00:00") == 0
    assert fake.calls[0][2]["since"] == 1772600767.0


def test_events_follow_goes_on_from_the_last_id(fake: FakeClient,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert run(fake, "events", "--follow") == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and "versioned" in out[3] and "version=v1.2.0" in out[3]
    assert fake.calls[1] == ("events", (), {"after_id": 3, "raw": True})


def test_events_follow_says_it_waits(fake: FakeClient,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    fake.recent_events = lambda since=None, count=None: {"events": [], "last_id": 7}  # type: ignore[method-assign]
    assert run(fake, "events", "-f") == 0
    captured = capsys.readouterr()
    assert "waiting for events" in captured.err
    assert fake.calls[-1] == ("events", (), {"after_id": 7, "raw": True})


def test_global_options(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(fake, "--socket", "/x/s.sock", "--timeout", "5", "status") == 0
    assert fake.socket_path == "/x/s.sock" and fake.timeout == 5.0
    assert run(fake, "status", "--socket", "/y/s.sock") == 0
    assert fake.socket_path == "/y/s.sock"


@pytest.mark.parametrize("argv", [["--json", "versions", "a/b"], ["versions", "a/b", "--json"]])
def test_json_before_or_after_verb(fake: FakeClient, capsys: pytest.CaptureFixture[str],
                                   argv: list[str]) -> None:
    assert run(fake, *argv) == 0
    assert json.loads(capsys.readouterr().out) == VERSIONS


def test_version_needs_no_client(capsys: pytest.CaptureFixture[str]) -> None:
    def factory(socket_path: str | None, timeout: float) -> Any:
        raise AssertionError("--version must not build a client")

    assert cli.main(["--version"], client_factory=factory) == 0
    assert capsys.readouterr().out == f"cpvctl {CPV_VERSION}\n"


# --- usage errors (exit 2, nothing sent) --------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["versions", "bad name"], "invalid artifact name"),
        (["versions", "-lead"], ""),  # argparse: looks like an option
        (["show", "a/b@newest"], "invalid version"),
        (["show", "a/b#no good"], "invalid stage"),
        (["show", "a/b#"], "invalid stage"),
        (["show", "a/b#prod#1"], "invalid stage"),
        (["show", "a/b@latest#prod"], "invalid artifact name"),
        (["pull", "a/b#pr@d", "-o", "d"], "invalid stage"),
        (["promote", "a/b#x y", "prod"], "invalid stage"),
        (["revert", "a/b", "#-x"], "invalid stage"),
        (["show", "a//b@v1.0"], "invalid artifact name"),
        (["pull", "a/b@", "-o", "d"], "invalid version"),
        (["pull", "a/b"], ""),  # -o required
        (["promote", "a/b@v1.0", "no good"], "invalid stage"),
        (["revert", "a/b"], "name the version to revert to"),
        (["revert", "a/b", "v1.x"], "invalid version"),
        (["pause", "a b"], "invalid artifact name"),
        (["retry", "not-a-job"], "invalid job id"),
        (["verify", "--sample", "0"], ""),
        (["events", "--count", "x"], ""),
        (["events", "--since", "yesterday"], "expected a duration"),
        (["push", "/nonexistent/x.pt", "-a", "a/b"], "no such file"),
        (["push", "."], ""),  # --artifact required
        (["frobnicate"], ""),
        ([], ""),
    ],
)
def test_usage_errors_exit_2(fake: FakeClient, capsys: pytest.CaptureFixture[str],
                             argv: list[str], message: str) -> None:
    assert run(fake, *argv) == 2
    assert fake.calls == []
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("metrics", "pairs", "message"),
    [("[1]", [], "JSON object"), ("{", [], "not valid JSON"), (None, ["novalue"], "KEY=VALUE")],
)
def test_bad_metrics_exit_2(fake: FakeClient, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            metrics: str | None, pairs: list[str], message: str) -> None:
    (tmp_path / "c.pt").write_bytes(b"x")
    argv = ["push", str(tmp_path / "c.pt"), "-a", "a/b"]
    if metrics is not None:
        argv += ["--metrics", metrics]
    for p in pairs:
        argv += ["--metric", p]
    assert run(fake, *argv) == 2
    assert message in capsys.readouterr().err
    assert fake.calls == []


# --- daemon errors -> exit codes --------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (NotFound("unknown artifact a/b", code="unknown_artifact"), 1),
        (BadRequest("bad", code="bad_request"), 1),
        (Forbidden("outside watches", code="path_outside_watch"), 1),
        (Conflict("unchanged", code="unchanged"), 1),
        (Unavailable("storage down", code="storage_unreachable"), 1),
        (ApiMismatch("client is older, upgrade cpvctl"), 1),
        (DaemonUnreachable("cpvd is not running"), 3),
    ],
)
def test_errors_map_to_exit_codes(fake: FakeClient, capsys: pytest.CaptureFixture[str],
                                  exc: CpvctlError, code: int) -> None:
    fake.fail = exc
    assert run(fake, "versions", "a/b") == code
    assert capsys.readouterr().err == f"cpvctl: {exc.message}\n"


@pytest.mark.parametrize(
    ("exc", "code", "exit_code"),
    [
        (NotFound("unknown artifact a/b", code="unknown_artifact"), "unknown_artifact", 1),
        (DaemonUnreachable("cpvd is not running", code="socket_missing"), "socket_missing", 3),
        (errors.UsageError("expected NAME@VERSION"), "usage_error", 2),
        (OSError(13, "Permission denied", "/out/x"), "io", 1),
    ],
)
def test_json_errors_are_one_json_object_on_stderr(
    fake: FakeClient, capsys: pytest.CaptureFixture[str], exc: Exception, code: str,
    exit_code: int,
) -> None:
    fake.fail = exc
    assert run(fake, "--json", "versions", "a/b") == exit_code
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout holds answers only
    err = json.loads(captured.err)
    assert err["error"]["code"] == code and err["error"]["exit_code"] == exit_code
    assert err["error"]["message"]


def test_verify_problems_exit_1(fake: FakeClient, capsys: pytest.CaptureFixture[str]) -> None:
    fake.verify_answer = {"checked": 4, "missing": [{"artifact": "a/b", "version": "v1.0.0"}],
                          "corrupt": []}
    assert run(fake, "verify") == 1
    out = capsys.readouterr().out
    assert "1 missing, 0 corrupt" in out and "missing: a/b@v1.0.0" in out


@pytest.mark.parametrize(
    ("status", "body", "cls", "code", "message"),
    [
        (404, b'{"error": {"code": "unknown_version", "message": "no v9"}}', NotFound,
         "unknown_version", "no v9"),
        (400, b'{"error": {"code": "invalid_name", "message": "bad"}}', BadRequest,
         "invalid_name", "bad"),
        (413, b'{"error": {"code": "body_too_large", "message": "big"}}', BadRequest,
         "body_too_large", "big"),
        (415, b"", BadRequest, "http_415", "HTTP 415 Unsupported"),
        (403, b'{"error": {"code": "forbidden", "message": "no"}}', Forbidden, "forbidden", "no"),
        (409, b'{"error": {"code": "conflict", "message": "c"}}', Conflict, "conflict", "c"),
        (503, b'{"error": {"code": "storage_unreachable", "message": "s3"}}', Unavailable,
         "storage_unreachable", "s3"),
        (500, b"Traceback...", CpvctlError, "http_500", "daemon error: Traceback..."),
        (404, b"404: Not Found", NotFound, "http_404", "404: Not Found"),
    ],
)
def test_from_response(status: int, body: bytes, cls: type, code: str, message: str) -> None:
    err = errors.from_response(status, body, "Unsupported" if status == 415 else "")
    assert type(err) is cls
    assert (err.code, err.message, err.status, err.exit_code) == (code, message, status, 1)


def test_unreachable_messages_differ() -> None:
    missing = errors.unreachable("/s", FileNotFoundError(2, "x"), 30)
    refused = errors.unreachable("/s", ConnectionRefusedError(111, "x"), 30)
    denied = errors.unreachable("/s", PermissionError(13, "x"), 30)
    timeout = errors.unreachable("/s", TimeoutError(), 2.5)
    assert "not running" in missing.message and "cpvd run --config" in missing.message
    assert "systemctl --user start cpvd" in missing.message
    assert "stale socket" in refused.message and "crashed" in refused.message
    assert "permission denied" in denied.message
    assert "2.5 s" in timeout.message
    assert {e.exit_code for e in (missing, refused, denied, timeout)} == {3}
    assert len({e.code for e in (missing, refused, denied, timeout)}) == 4


# --- rendering ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
     (5 * 1024**3, "5.0 GiB"), (None, "-"), (-1, "-"), (True, "-")],
)
def test_human_size(n: object, text: str) -> None:
    assert render.human_size(n) == text


def test_render_versions_is_an_aligned_table() -> None:
    lines = render.render_versions(VERSIONS).splitlines()
    assert lines[0].split() == ["VERSION", "CREATED", "SIZE", "MD5", "METRICS", "STAGES"]
    col = lines[0].index("SIZE")
    assert lines[1][col:].startswith("3.0 MiB") and lines[2][col:].startswith("512 B")
    assert "01234567 " in lines[1] and "0123456789" not in lines[1]
    assert "acc=0.9312 epoch=12" in lines[1] and lines[1].endswith("prod")
    assert lines[2].rstrip().endswith("-")
    assert render.render_versions([]) == "no versions yet"


def test_render_status_shows_everything_a_user_asks_about() -> None:
    text = render.render_status(STATUS)
    assert "pid 4242" in text and "up 1h02m" in text
    assert "queued 2  running 1  failed 1" in text
    assert "s3://acme/ckpt  UNREACHABLE  (timeout)" in text
    assert "unpushed 3" in text
    assert "zip central directory unreadable" in text and "/data/runs/torn.pt" in text
    assert "storage unreachable" in text  # the failed job's reason
    assert "watching" in text


def test_render_status_daemon_spellings() -> None:
    """cpvd's own keys: daemon.version, daemon.paused, watch.poll/exists, job id/source."""
    text = render.render_status({
        "daemon": {"pid": 1, "version": "0.1.0", "api_version": 1, "paused": "all"},
        "watches": [{"path": "/nfs/runs", "artifact": "a/b", "kind": "model", "poll": True,
                     "exists": False, "paused": True}],
        "jobs": [{"id": JOB_ID, "state": "queued", "artifact": "a/b", "source": "/nfs/runs/x"}],
    })
    assert text.startswith("cpvd 0.1.0 (API 1), pid 1")
    assert "storage: -  not checked yet" in text
    assert "PAUSED: all watches" in text
    assert "poll" in text and "paused (directory missing)" in text
    assert JOB_ID in text and "/nfs/runs/x" in text


def test_render_job_reason_from_result() -> None:
    line = render.render_job({"id": JOB_ID, "state": "skipped", "artifact": "a/b",
                              "source": "/x.pt", "result": {"reason": "vanished"}})
    assert line == f"job {JOB_ID}  skipped  a/b  /x.pt  (vanished)"


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ('{"job_id": "j", "bytes": 1}', {"job_id": "j", "bytes": 1}),
        ('{"id": 7, "type": "progress", "time": 1.0, "data": {"job_id": "j"}}', {"job_id": "j"}),
        ("not json", {"raw": "not json"}),
        ("[1, 2]", {"value": [1, 2]}),
    ],
)
def test_event_payloads_flat_or_enveloped(text: str, data: dict[str, Any]) -> None:
    from cpvctl.client import _event_data

    assert _event_data(text) == data


def test_render_status_tolerates_a_sparse_answer() -> None:
    text = render.render_status({})
    assert "no watches configured" in text


def test_render_show_includes_lineage() -> None:
    text = render.render_show(VERSIONS[0])
    assert "lineage:  vision/imagenet@v1.0.0" in text
    assert "stages:   prod" in text


def test_format_progress() -> None:
    line = format_progress("pull a", 5 * 1024**2, 10 * 1024**2, 2.0)
    assert line == "pull a   50%  5.0 MiB / 10.0 MiB  2.5 MiB/s  ETA 2s"
    assert format_progress("x", 100, None, 0.0) == "x  100 B  -/s"
    assert format_progress("x", 10, 10, 65).endswith("in 1m05s")


def test_progress_plain_lines_off_a_tty() -> None:
    out = io.StringIO()
    now = [0.0]
    bar = Progress("pull", stream=out, tty=False, clock=lambda: now[0])
    for done in range(0, 101):
        now[0] += 0.01
        bar.update(done, 100)
    bar.finish()
    lines = out.getvalue().splitlines()
    assert len(lines) == 11  # 0%, 10% ... 90%, then the final line
    assert "\r" not in out.getvalue()
    assert lines[-1].startswith("pull  100%")


def test_progress_redraws_on_a_tty() -> None:
    out = io.StringIO()
    now = [0.0]
    bar = Progress("pull", stream=out, tty=True, clock=lambda: now[0])
    for done in range(0, 101, 10):
        now[0] += 0.5
        bar.update(done, 100)
    bar.finish()
    text = out.getvalue()
    assert text.count("\r") == 12 and text.endswith("\n") and "[" in text


# --- pull manifest paths ----------------------------------------------------------------


@pytest.mark.parametrize("relpath", ["../x", "a/../../x", "/etc/passwd", "a\\b", "a//b", "./a",
                                     "", "a/", 7])
def test_unsafe_relpaths_refused(relpath: object) -> None:
    with pytest.raises(BadManifest):
        check_relpath(relpath)


def test_safe_relpaths_split() -> None:
    assert check_relpath("model/weights.bin") == ("model", "weights.bin")
    assert check_relpath(".metadata") == (".metadata",)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", None])
def test_unsafe_top_names_refused(name: object) -> None:
    with pytest.raises(BadManifest):
        check_component(name)


# --- default socket path == platformdirs -----------------------------------------------


def _platformdirs_socket() -> str:
    import platformdirs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return os.path.join(platformdirs.user_runtime_dir("cpv"), "cpvd.sock")


@pytest.fixture
def runtime_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("CPV_SOCKET", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    return monkeypatch


def _assert_same() -> str:
    mine = defaults.default_socket()
    assert mine == _platformdirs_socket()
    return mine


def test_default_socket_xdg_unset(runtime_env: pytest.MonkeyPatch) -> None:
    path = _assert_same()
    assert path.endswith("/cpv/cpvd.sock")


def test_default_socket_private_xdg(runtime_env: pytest.MonkeyPatch, short_tmp: Path) -> None:
    xdg = short_tmp / "rt"
    xdg.mkdir(mode=0o700)
    xdg.chmod(0o700)
    runtime_env.setenv("XDG_RUNTIME_DIR", str(xdg))
    assert _assert_same() == f"{xdg}/cpv/cpvd.sock"


@pytest.mark.parametrize("setup", ["mode755", "missing", "symlink", "file", "relative",
                                   "group_writable_parent", "trailing_slash"])
def test_default_socket_odd_xdg(runtime_env: pytest.MonkeyPatch, short_tmp: Path,
                                setup: str) -> None:
    xdg = short_tmp / "rt"
    value = str(xdg)
    if setup == "mode755":
        xdg.mkdir()
        xdg.chmod(0o755)
    elif setup == "symlink":
        real = short_tmp / "real"
        real.mkdir()
        real.chmod(0o700)
        xdg.symlink_to(real)
    elif setup == "file":
        xdg.write_text("")
    elif setup == "relative":
        value = "run/user/x"
    elif setup == "group_writable_parent":
        parent = short_tmp / "gw"
        parent.mkdir()
        parent.chmod(0o775)
        xdg = parent / "rt"
        xdg.mkdir()
        xdg.chmod(0o700)
        value = str(xdg)
    elif setup == "trailing_slash":
        xdg.mkdir()
        xdg.chmod(0o700)
        value = str(xdg) + "/"
    runtime_env.setenv("XDG_RUNTIME_DIR", value)
    _assert_same()


def test_default_socket_tmpdir_fallback(runtime_env: pytest.MonkeyPatch, short_tmp: Path) -> None:
    tmp = short_tmp / "tmp"
    tmp.mkdir()
    runtime_env.setenv("TMPDIR", str(tmp))
    runtime_env.setattr(tempfile, "tempdir", None)  # gettempdir() caches its answer
    _assert_same()


def test_cpv_socket_env_wins(runtime_env: pytest.MonkeyPatch) -> None:
    runtime_env.setenv("CPV_SOCKET", "/somewhere/else.sock")
    assert defaults.default_socket() == "/somewhere/else.sock"


def test_render_versions_marks_pruned_and_best() -> None:
    rows = [
        {**VERSIONS[0], "version": "v1.2.0", "stages": ["best"]},
        {**VERSIONS[1], "version": "v1.1.0", "stages": [], "pruned": True},
    ]
    lines = render.render_versions(rows).splitlines()
    assert lines[1].startswith("v1.2.0 ") and lines[1].endswith("best")
    assert lines[2].startswith("v1.1.0 (pruned)")


def test_render_status_shows_latest_best_kept_pruned_per_artifact() -> None:
    artifacts = [
        {
            "artifact": "vision/resnet50",
            "latest": "v1.5.0",
            "best": "v1.2.0",
            "metric": "eval_loss",
            "kept": 4,
            "pruned": 2,
            "bytes": 3 * 1024 * 1024,
            "without_metric": ["v1.3.0"],
            "without_metric_count": 1,
        }
    ]
    lines = render.render_status({**STATUS, "artifacts": artifacts}).splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("ARTIFACT "))
    assert lines[header].split() == ["ARTIFACT", "LATEST", "BEST", "KEPT", "PRUNED", "STORED"]
    row = ["vision/resnet50", "v1.5.0", "v1.2.0", "4", "2", "3.0", "MiB"]
    assert lines[header + 1].split() == row
    assert "1 version(s) without metric 'eval_loss', never best: v1.3.0" in lines[header + 2]
