"""``[[hook]]`` tables: good ones load (and dump back); every mistake names the hook and the
key; placeholders, URL redaction and the artifact filter are pure functions."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w

from cpvd.config.load import parse_config
from cpvd.config.model import Config, StorageConfig
from cpvd.errors import ConfigError
from cpvd.hooks.config import dump_hook
from cpvd.hooks.model import HookConfig, fill_placeholders, redact_url
from cpvd.setup.check import run_checks

GOOD = """
[[hook]]
name = "eval"
on = ["version.created"]
artifact = "vision/*"
exec = ["/usr/local/bin/eval-checkpoint", "{artifact}", "{version}"]
timeout = 600

[[hook]]
on = ["stage.moved", "job.failed", "version.pruned", "upload.stalled"]
url = "https://hooks.slack.example/services/T0/B0/XYZ"
secret_env = "CPV_HOOK_SECRET"
"""


def test_good_hooks_load_and_dump_back() -> None:
    cfg = parse_config(GOOD, "cpvd.toml")
    first, second = cfg.hooks
    assert first == HookConfig(
        name="eval", on=("version.created",), artifact="vision/*", timeout=600.0,
        exec=("/usr/local/bin/eval-checkpoint", "{artifact}", "{version}"),
    )  # fmt: skip
    assert second.name == "hook-2" and second.kind == "url" and second.timeout == 30.0
    tables = tomli_w.dumps({"hook": [dump_hook(h) for h in cfg.hooks]})
    assert parse_config(tables, "again.toml").hooks == cfg.hooks


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ('on = ["version.create"]\nexec = ["/x"]', "on:", 'did you mean "version.created"'),
        ('on = ["deployed"]\nexec = ["/x"]', "on:", "unknown event"),
        ('exec = ["/x"]', "on:", "missing"),
        ('on = ["job.failed"]\nurl = "ftp://h/x"', "url:", "http:// or https://"),
        ('on = ["job.failed"]\nurl = "file:///etc/passwd"', "url:", "http:// or https://"),
        ('on = ["job.failed"]\nurl = "http://h:port/x"', "url:", "not a valid URL"),
        ('on = ["job.failed"]\nurl = "http://h/x"\nexec = ["/x"]', "exec:", "both set"),
        ('on = ["job.failed"]', "#1", "needs exec"),
        ('on = ["job.failed"]\nexec = []', "exec:", "non-empty strings"),
        ('on = ["job.failed"]\nexec = "/x"\nsecret_env = "S"', "secret_env:", "needs url"),
        ('on = ["job.failed"]\nurl = "http://h/"\nsecret_env = "A B"', "secret_env:", "variable"),
        ('on = ["job.failed"]\nexec = ["/x"]\ntimeout = 0', "timeout:", "expected seconds"),
        ('on = ["job.failed"]\nexec = ["/x"]\ntimout = 5', "#1", "did you mean 'timeout'"),
        ('on = ["job.failed"]\nexec = ["/x"]\nname = "a b"', "name:", "letters, digits"),
    ],
)
def test_bad_hooks_name_the_key(table: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"[[hook]]\n{table}\n", "/etc/cpvd.toml")
    message = err.value.message
    assert message.startswith("/etc/cpvd.toml: [[hook]] #1")
    assert key in message and words in message


def test_every_bad_hook_is_reported_at_once() -> None:
    bad = '[[hook]]\non = ["nope"]\nexec = ["/x"]\n[[hook]]\non = ["job.failed"]\nurl = "ftp://x"\n'
    with pytest.raises(ConfigError) as err:
        parse_config(bad, "c.toml")
    first, second = err.value.message.splitlines()
    assert first.startswith("c.toml: [[hook]] #1 on:")
    assert second.startswith("c.toml: [[hook]] #2 url:")


def test_duplicate_names_are_refused() -> None:
    one = '[[hook]]\nname = "x"\non = ["job.failed"]\nexec = ["/x"]\n'
    with pytest.raises(ConfigError, match=r"\[\[hook\]\] #2 name: \"x\" is already used"):
        parse_config(one + one, "c.toml")


def test_placeholders_fill_only_their_slots() -> None:
    data = {"artifact": "team/m", "version": "v1.2.0", "path": "/ck/a b.pt", "tag": None}
    argv = ("/bin/eval", "--ckpt={path}", "{artifact}@{version}", "{tag}", "{stage}", "{x}")
    assert fill_placeholders(argv, data) == [
        "/bin/eval", "--ckpt=/ck/a b.pt", "team/m@v1.2.0", "", "", "{x}",
    ]  # fmt: skip
    named_so = {"path": "/ck/{version}.pt", "version": "v1"}  # a file named "{version}.pt"
    assert fill_placeholders(("{path}", "{version}"), named_so) == ["/ck/{version}.pt", "v1"]


def test_redacted_urls_keep_no_path_or_credentials() -> None:
    assert redact_url("https://hooks.slack.com/services/T0/B0/SECRET") == "https://hooks.slack.com/…"
    assert redact_url("http://user:pw@127.0.0.1:8080/cpv?token=t") == "http://127.0.0.1:8080/…"
    assert redact_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"


def test_artifact_filter_and_event_types() -> None:
    hook = HookConfig(name="h", on=("version.created",), exec=("/x",), artifact="vision/*")
    assert hook.matches("version.created", {"artifact": "vision/r50"})
    assert not hook.matches("version.created", {"artifact": "nlp/bert"})
    assert not hook.matches("version.created", {})
    assert not hook.matches("job.failed", {"artifact": "vision/r50"})


def test_cpvd_check_names_a_missing_program_and_an_unset_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "eval.sh"
    script.write_text("#!/bin/sh\n")
    hooks = (
        HookConfig(name="a", on=("job.failed",), exec=(str(tmp_path / "nope"),)),
        HookConfig(name="b", on=("job.failed",), exec=(str(script),)),
        HookConfig(name="c", on=("job.failed",), exec=("no-such-program-cpv",)),
        HookConfig(name="d", on=("job.failed",), url="https://h.example/x", secret_env="CPV_S"),
        HookConfig(name="e", on=("job.failed",), exec=("sh", "-c", "true")),
    )
    monkeypatch.delenv("CPV_S", raising=False)
    results = {r.name: r for r in run_checks(Config(storage=StorageConfig(url=str(tmp_path)),
                                                    hooks=hooks))}  # fmt: skip
    detail = {name: r.detail for name, r in results.items() if not r.ok}
    assert "not found; fix [[hook]] #1 exec" in detail["hook a"]
    assert "chmod +x" in detail["hook b"]
    assert "not found on PATH" in detail["hook c"]
    assert "CPV_S (secret_env of [[hook]] #4)" in detail["hook d"]
    assert results["hook e"].ok
    script.chmod(0o755)
    monkeypatch.setenv("CPV_S", "x")
    results = {r.name: r for r in run_checks(Config(storage=StorageConfig(url=str(tmp_path)),
                                                    hooks=hooks))}  # fmt: skip
    assert results["hook b"].ok and results["hook d"].ok
    want = "posts to https://h.example/… on job.failed, signed with $CPV_S"
    assert results["hook d"].detail == want
