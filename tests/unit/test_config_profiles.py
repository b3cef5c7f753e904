"""``[[registry]]`` and ``[[storage]]`` profiles: several teams on one machine.

Parsing, the view each registry's lane sees, the artifact -> registry route, writing both
shapes back, and every mistake reported at once naming its table, number and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpvd.config.dump import dump_config
from cpvd.config.load import config_from_flags, parse_config
from cpvd.config.views import artifacts_of, is_multi, registry_names, registry_of, view
from cpvd.errors import ConfigError

TWO_TEAMS = """
[[storage]]
name = "a"
url = "s3://acme-vision/ckpt"
profile = "vision"
region = "eu-west-1"

[[storage]]
name = "b"
url = "s3://acme-nlp/ckpt"
endpoint_url = "https://s3.example"
profile = "nlp"

[[registry]]
name = "vision"
path = "/srv/cpv/vision"
remote = "git@example.com:acme/vision-registry.git"
storage = "a"

[[registry]]
name = "nlp"
path = "/srv/cpv/nlp"
remote = "git@example.com:acme/nlp-registry.git"
ssh_key = "/home/u/.ssh/id_nlp"
storage = "b"

[[watch]]
path = "/data/r50"
artifact = "vision/resnet50"
registry = "vision"
data = ["vision/imagenet"]

[[watch]]
path = "/data/llm"
artifact = "nlp/llm"
registry = "nlp"
"""


def test_two_registries_each_with_its_storage_and_watches() -> None:
    cfg = parse_config(TWO_TEAMS, "/etc/cpv.toml")
    assert is_multi(cfg)
    assert registry_names(cfg) == ["vision", "nlp"]
    nlp = view(cfg, "nlp")
    assert nlp.registry.path == Path("/srv/cpv/nlp")
    assert nlp.registry.ssh_key == Path("/home/u/.ssh/id_nlp")
    assert (nlp.storage.url, nlp.storage.profile) == ("s3://acme-nlp/ckpt", "nlp")
    assert nlp.storage.endpoint_url == "https://s3.example"
    assert [w.artifact for w in nlp.watches] == ["nlp/llm"]
    vision = view(cfg, "vision")
    assert (vision.storage.profile, vision.storage.region) == ("vision", "eu-west-1")
    assert [w.artifact for w in vision.watches] == ["vision/resnet50"]
    # the single fields older readers use are the first registry's
    assert cfg.registry == vision.registry and cfg.storage == vision.storage


def test_artifacts_route_to_their_registry_lineage_data_included() -> None:
    cfg = parse_config(TWO_TEAMS, "/etc/cpv.toml")
    assert registry_of(cfg, "nlp/llm") == "nlp"
    assert registry_of(cfg, "vision/resnet50") == "vision"
    assert registry_of(cfg, "vision/imagenet") == "vision"
    assert artifacts_of(cfg, "vision") == {"vision/resnet50", "vision/imagenet"}
    assert artifacts_of(cfg, "nlp") == {"nlp/llm"}


def test_profiles_are_written_back_as_profiles() -> None:
    cfg = parse_config(TWO_TEAMS, "/etc/cpv.toml")
    text = dump_config(cfg)
    back = parse_config(text, "/tmp/x.toml")
    assert back.registries == cfg.registries
    assert back.storages == cfg.storages
    assert back.watches == cfg.watches


def test_a_single_registry_config_is_unchanged_and_its_own_view() -> None:
    text = """
[registry]
path = "/srv/reg"
[storage]
url = "/srv/store"
[[watch]]
path = "/data/a"
artifact = "team/a"
"""
    cfg = parse_config(text, "/etc/cpv.toml")
    assert not is_multi(cfg) and cfg.registries == () and cfg.storages == ()
    assert registry_names(cfg) == ["default"]
    assert view(cfg, "default") is cfg
    assert registry_of(cfg, "team/a") == "default"
    assert "[[registry]]" not in dump_config(cfg) and "registry = [" not in dump_config(cfg)


def test_one_registry_profile_needs_no_registry_key_on_its_watches() -> None:
    text = """
[[storage]]
name = "s"
url = "/srv/store"
[[registry]]
name = "team"
path = "/srv/reg"
storage = "s"
[[watch]]
path = "/data/a"
artifact = "team/a"
"""
    cfg = parse_config(text, "/etc/cpv.toml")
    assert registry_names(cfg) == ["team"] and not is_multi(cfg)
    assert cfg.storage.url == "/srv/store" and cfg.registry.path == Path("/srv/reg")


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "/etc/cpv.toml")
    lines = err.value.message.splitlines()
    assert all(line.startswith("/etc/cpv.toml: ") for line in lines), lines
    return lines


def test_every_profile_mistake_is_reported_at_once_naming_table_and_key() -> None:
    lines = _problems("""
[[storage]]
name = "a"
url = "s3://bucket/a"
[[storage]]
name = "a"
url = "s3://bucket/a"
[[storage]]
name = "c"
url = "s3://bucket/a/"
[[registry]]
name = "one"
path = "/srv/one"
storage = "a"
[[registry]]
name = "two"
path = "/srv/one"
storage = "zz"
[[registry]]
name = "three"
path = "/srv/three"
storage = "c"
[[registry]]
name = "four"
path = "/srv/four"
[[watch]]
path = "/data/a"
artifact = "team/a"
[[watch]]
path = "/data/b"
artifact = "team/b"
registry = "nope"
[[watch]]
path = "/data/c"
artifact = "team/c"
registry = "one"
data = ["shared/data"]
[[watch]]
path = "/data/d"
artifact = "team/d"
registry = "three"
data = ["shared/data"]
""")
    expected = [
        "[[storage]] #2 name:",  # duplicate name
        "[[registry]] #2 path:",  # two registries on one path
        '[[registry]] #2 storage: no [[storage]] is named "zz"',
        "[[registry]] #3 storage: \"s3://bucket/a\" already holds the objects of [[registry]] #1",
        "[[registry]] #4: missing required key 'storage'",
        "[[watch]] #1: missing key 'registry'",
        '[[watch]] #2 registry: no [[registry]] is named "nope"',
        '[[watch]] #4 registry: artifact "shared/data" is already in registry "one"',
    ]
    for want in expected:
        assert any(want in line for line in lines), (want, lines)
    assert len(lines) == len(expected), lines


def test_duplicate_registry_names_and_bad_names_are_named() -> None:
    lines = _problems("""
[[storage]]
name = "b c"
url = "/srv/b"
""")
    assert any("[[storage]] #1 name: must be letters" in ln for ln in lines), lines
    lines = _problems("""
[[storage]]
name = "a"
url = "/srv/a"
[[registry]]
name = "x"
path = "/srv/x"
storage = "a"
[[registry]]
name = "x"
path = "/srv/y"
storage = "a"
""")
    assert any('[[registry]] #2 name: "x" is already the name of [[registry]] #1' in ln
               for ln in lines), lines  # fmt: skip


def test_an_artifact_watched_in_two_registries_is_refused() -> None:
    lines = _problems(TWO_TEAMS.replace('artifact = "nlp/llm"', 'artifact = "vision/resnet50"'))
    assert any("already watched by [[watch]] #1" in ln for ln in lines), lines


def test_mixing_single_tables_with_profiles_says_what_to_write() -> None:
    lines = _problems("""
[registry]
path = "/srv/reg"
[[storage]]
name = "a"
url = "/srv/a"
""")
    assert any("[[storage]] profiles need [[registry]] profiles too" in ln for ln in lines), lines
    with pytest.raises(ConfigError) as err:  # TOML itself refuses [registry] + [[registry]]
        parse_config('[registry]\npath = "/a"\n[[registry]]\nname = "x"\n', "/etc/cpv.toml")
    assert "/etc/cpv.toml" in err.value.message


def test_single_tables_refuse_profile_keys() -> None:
    lines = _problems("""
[registry]
storage = "a"
[[watch]]
path = "/data/a"
artifact = "team/a"
registry = "team-a"
""")
    assert any("[registry] storage: only a [[registry]] table names" in ln for ln in lines)
    assert any('[[watch]] #1 registry: no registry is named "team-a"' in ln for ln in lines)


def test_profile_paths_must_not_overlap_a_watch() -> None:
    lines = _problems(TWO_TEAMS.replace('path = "/data/llm"', 'path = "/srv/cpv/nlp/x"'))
    assert any("[[watch]] #2 path" in ln and "[[registry]] #2 path" in ln for ln in lines), lines


def test_cpvd_run_watch_flag_cannot_pick_one_of_several_registries() -> None:
    cfg = parse_config(TWO_TEAMS, "/etc/cpv.toml")
    with pytest.raises(ConfigError, match="several \\[\\[registry\\]\\]"):
        config_from_flags(Path("/data/new"), "team/new", base=cfg)


def test_sighup_keeps_the_running_profiles_and_names_what_needs_a_restart() -> None:
    from cpvd.daemon import split_reload

    running = parse_config(TWO_TEAMS, "/etc/cpv.toml")
    moved = TWO_TEAMS.replace('path = "/srv/cpv/nlp"', 'path = "/srv/cpv/nlp2"')
    added = moved + """
[[storage]]
name = "c"
url = "s3://acme-c/ckpt"
[[registry]]
name = "c"
path = "/srv/cpv/c"
storage = "c"
[[watch]]
path = "/data/c"
artifact = "c/model"
registry = "c"
[[watch]]
path = "/data/llm2"
artifact = "nlp/llm2"
registry = "nlp"
"""
    applied, restart = split_reload(running, parse_config(added, "/etc/cpv.toml"))
    assert applied.registries == running.registries and applied.storages == running.storages
    assert view(applied, "nlp").registry.path == Path("/srv/cpv/nlp")
    assert [w.artifact for w in applied.watches] == ["vision/resnet50", "nlp/llm", "nlp/llm2"]
    assert "[[registry]] nlp" in restart and "[[registry]] c" in restart
    assert "[[storage]] c" in restart and "[[watch]] c/model registry" in restart
    assert "[[registry]] vision" not in restart


def test_migrate_storage_asks_which_of_several_registries(
    short_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cpvd.cli import main
    from cpvd.config.views import chosen

    cfg = parse_config(TWO_TEAMS, short_tmp / "cpvd.toml")
    assert chosen(cfg, "nlp").storage.url == "s3://acme-nlp/ckpt"
    with pytest.raises(ConfigError, match="no registry is named 'x'"):
        chosen(cfg, "x")
    (short_tmp / "cpvd.toml").write_text(TWO_TEAMS)
    rc = main(["migrate-storage", "--config", str(short_tmp / "cpvd.toml"), "--to", "/srv/new"])
    assert rc != 0
    assert "say which with --registry (vision, nlp)" in capsys.readouterr().err


def test_the_readme_example_of_several_teams_is_a_valid_config() -> None:
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Several teams on one machine") :]
    found = re.search(r"```toml\n(.*?)```", section, re.S)
    assert found is not None
    cfg = parse_config(found.group(1), "README.md")
    assert registry_names(cfg) == ["vision", "nlp"]
    assert view(cfg, "nlp").storage.profile == "nlp"
    assert registry_of(cfg, "nlp/llm-7b") == "nlp"
