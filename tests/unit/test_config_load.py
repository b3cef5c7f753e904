"""Config loading: every error names the file and the key; dump -> load round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cpvd.config.dump import dump_config
from cpvd.config.load import config_from_flags, load_config, parse_config
from cpvd.config.model import Config, DaemonConfig, RegistryConfig, StorageConfig, WatchConfig
from cpvd.errors import ConfigError

GOOD = """
[daemon]
state_dir = "/var/lib/cpv"
rescan_seconds = 10
allow_uids = [1001, 1002]

[registry]
path = "/var/lib/cpv/registry"
remote = "git@bitbucket.org:acme/model-registry.git"
ssh_key = "~/.ssh/id_cpv"

[storage]
url = "s3://acme-ml/checkpoints/"
endpoint_url = "https://s3.example"
profile = "training"
region = "eu-west-1"

[[watch]]
path = "/data/runs/imagenet"
artifact = "vision/imagenet-train"
kind = "data"

[[watch]]
path = "/data/runs/resnet50/checkpoints"
artifact = "vision/resnet50"
data = ["vision/imagenet-train"]
settle_seconds = 2.5
poll = true
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cpv.toml"
    p.write_text(text)
    return p


def load_error(tmp_path: Path, text: str) -> str:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    msg = info.value.message
    assert msg.startswith(f"{p}: "), msg
    return msg


def test_good_config_loads_every_table(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD)
    cfg = load_config(p)
    assert cfg.source == p
    assert cfg.daemon.state_dir == Path("/var/lib/cpv")
    assert cfg.daemon.rescan_seconds == 10.0
    assert cfg.daemon.allow_uids == (1001, 1002)
    assert cfg.registry.ssh_key == Path.home() / ".ssh/id_cpv"
    assert cfg.registry.remote == "git@bitbucket.org:acme/model-registry.git"
    assert cfg.storage.url == "s3://acme-ml/checkpoints"
    assert cfg.storage.s3_bucket_prefix() == ("acme-ml", "checkpoints")
    assert cfg.storage.profile == "training"
    data, model = cfg.watches
    assert data == WatchConfig(Path("/data/runs/imagenet"), "vision/imagenet-train", "data")
    assert model.data == ("vision/imagenet-train",)
    assert model.settle_seconds == 2.5
    assert model.poll is True
    assert model.kind == "model"
    assert cfg.artifact_kinds() == {"vision/imagenet-train": "data", "vision/resnet50": "model"}


def test_storage_local_dir_with_tilde_is_expanded(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[storage]\nurl = "~/cpv-store"\n'))
    assert cfg.storage.url == str(Path.home() / "cpv-store")
    assert not cfg.storage.is_s3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[storage]\nedpoint_url = "http://x"\n',
            "[storage] unknown key 'edpoint_url' (did you mean 'endpoint_url'?)",
        ),
        ("[deamon]\n", "unknown table [deamon] (did you mean 'daemon'?)"),
        (
            '[[watch]]\npath = "/d"\nartifact = "a"\nartefact = "b"\n',
            "[[watch]] #1 unknown key 'artefact' (did you mean 'artifact'?)",
        ),
        (
            '[[watch]]\npath = "/a"\nartifact = "a"\n[[watch]]\npath = "/b"\nartifact = "b"\n'
            'settle_seconds = "2s"\n',
            '[[watch]] #2 settle_seconds: expected a number, got "2s"',
        ),
        (
            '[[watch]]\npath = "/a"\nartifact = "a"\npoll = "yes"\n',
            '[[watch]] #1 poll: expected true or false, got "yes"',
        ),
        (
            '[daemon]\nallow_uids = [1, "x"]\n',
            '[daemon] allow_uids: item 2: expected an integer, got "x"',
        ),
        (
            "[daemon]\nrescan_seconds = true\n",
            "[daemon] rescan_seconds: expected a number, got true",
        ),
        ("[daemon]\nrescan_seconds = 0\n", "[daemon] rescan_seconds: must be greater than 0"),
        ("[storage]\npart_size_mb = 1\n", "[storage] part_size_mb: must be at least 5"),
        ("[storage]\nregion = 3\n", "[storage] region: expected a string, got 3"),
        (
            '[[watch]]\npath = "/a"\nartifact = "bad name!"\n',
            "[[watch]] #1 artifact: invalid artifact name 'bad name!'",
        ),
        (
            '[[watch]]\npath = "/a"\nartifact = "a"\ndata = ["ok", "-bad"]\n',
            "[[watch]] #1 data: invalid artifact name '-bad'",
        ),
        (
            '[[watch]]\npath = "/a"\nartifact = "a"\nkind = "dataset"\n',
            '[[watch]] #1 kind: must be "model" or "data", got "dataset"',
        ),
        (
            '[storage]\nurl = "relative/store"\n',
            "[storage] url: expected s3://bucket[/prefix] or an absolute directory",
        ),
        ('[storage]\nurl = "gs://bucket"\n', "[storage] url: unsupported storage"),
        ('[storage]\nurl = "s3://"\n', "[storage] url: invalid S3 bucket ''"),
        ('[storage]\nurl = "s3://Bad_Bucket/x"\n', "[storage] url: invalid S3 bucket 'Bad_Bucket'"),
        (
            '[storage]\nendpoint_url = "s3.example"\n',
            "[storage] endpoint_url: expected an http:// or https:// URL",
        ),
        (
            '[[watch]]\npath = "runs/ckpt"\nartifact = "a"\n',
            '[[watch]] #1 path: must be an absolute path (or start with ~), got "runs/ckpt"',
        ),
        ('[registry]\nssh_key = "keys/id"\n', "[registry] ssh_key: must be an absolute path"),
        ('[registry]\nremote = "--upload-pack=evil"\n', "[registry] remote: must not start"),
        (
            '[[watch]]\npath = "/a"\nartifact = "x"\n[[watch]]\npath = "/b"\nartifact = "x"\n',
            '[[watch]] #2 artifact: "x" is already watched by [[watch]] #1',
        ),
        (
            '[[watch]]\npath = "/a"\nartifact = "x"\n[[watch]]\npath = "/a"\nartifact = "y"\n',
            '[[watch]] #2 path: "/a" is already watched by [[watch]] #1',
        ),
        (
            '[[watch]]\npath = "/a"\nartifact = "m1"\n'
            '[[watch]]\npath = "/b"\nartifact = "m2"\ndata = ["m1"]\n',
            '[[watch]] #2 data: "m1" is watched as a model by [[watch]] #1',
        ),
        (
            '[[watch]]\npath = "/a"\nartifact = "m1"\ndata = ["m1"]\n',
            "[[watch]] #1 data: lists the watch's own artifact",
        ),
        ('[[watch]]\npath = "/a"\n', "[[watch]] #1 missing required key 'artifact'"),
        ('[watch]\npath = "/a"\nartifact = "a"\n', "[watch] must be an array of tables"),
        ("storage = 3\n", "[storage] must be a table, got 3"),
        ("[storage\n", "not valid TOML"),
    ],
)
def test_config_errors_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in load_error(tmp_path, text)


def test_model_lineage_may_name_a_watched_data_artifact(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.watches[1].data == ("vision/imagenet-train",)


def test_socket_path_longer_than_af_unix_limit_is_rejected(tmp_path: Path) -> None:
    long = "/tmp/" + "s" * 120 + ".sock"
    assert "[daemon] socket: path is longer than 107 bytes" in load_error(
        tmp_path, f'[daemon]\nsocket = "{long}"\n'
    )


def test_non_utf8_and_directory_are_clear_errors(tmp_path: Path) -> None:
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe[daemon]\n")
    with pytest.raises(ConfigError, match=r"bin\.toml: not UTF-8"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path)


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found \(named by --config"):
        load_config(missing)


def test_cpv_config_env_is_used_and_must_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = write(tmp_path, '[[watch]]\npath = "/a"\nartifact = "from-env"\n')
    monkeypatch.setenv("CPV_CONFIG", str(p))
    assert load_config().watches[0].artifact == "from-env"
    monkeypatch.setenv("CPV_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(
        ConfigError, match=r"gone\.toml: config file not found \(named by CPV_CONFIG"
    ):
        load_config()


def test_missing_default_file_gives_embedded_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    cfg = load_config()
    assert cfg == Config()
    assert cfg.watches == ()
    assert cfg.source is None


def test_default_file_is_read_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "cpv").mkdir()
    (tmp_path / "cpv" / "cpvd.toml").write_text('[registry]\nremote = "/srv/reg.git"\n')
    cfg = load_config()
    assert cfg.registry.remote == "/srv/reg.git"
    assert cfg.source == tmp_path / "cpv" / "cpvd.toml"


# ---------------------------------------------------------------- config_from_flags


def test_config_from_flags_on_embedded_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = config_from_flags(Path("runs"), "team/model", settle_seconds=0.5)
    assert cfg.watches == (WatchConfig(tmp_path / "runs", "team/model", "model", (), 0.5),)
    assert cfg.storage == StorageConfig()
    assert cfg.source is None
    assert config_from_flags(Path("/d"), "ds", kind="data").watches[0].settle_seconds == 2.0


def test_config_from_flags_replaces_same_artifact_in_base(tmp_path: Path) -> None:
    base = load_config(write(tmp_path, GOOD))
    cfg = config_from_flags(Path("/elsewhere"), "vision/resnet50", base=base)
    assert [w.artifact for w in cfg.watches] == ["vision/imagenet-train", "vision/resnet50"]
    assert cfg.watch_for("vision/resnet50") == WatchConfig(Path("/elsewhere"), "vision/resnet50")
    assert cfg.storage == base.storage
    added = config_from_flags(Path("/x"), "other", base=base)
    assert len(added.watches) == 3


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"artifact": "no spaces"}, "--artifact: invalid artifact name"),
        ({"artifact": "a", "kind": "weights"}, "--kind: must be model or data"),
        ({"artifact": "a", "settle_seconds": -1.0}, "--settle: must be a number of seconds"),
    ],
)
def test_config_from_flags_errors(kwargs: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_flags(Path("/d"), **kwargs)  # type: ignore[arg-type]
    assert expected in info.value.message


def test_config_from_flags_rejects_model_listed_as_lineage(tmp_path: Path) -> None:
    base = load_config(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match="is watched as a model"):
        config_from_flags(Path("/new"), "vision/imagenet-train", kind="model", base=base)


# ---------------------------------------------------------------- dump -> load


def test_dump_then_load_round_trips_everything(tmp_path: Path) -> None:
    cfg = Config(
        daemon=DaemonConfig(
            socket=Path("/run/cpv/cpvd.sock"),
            state_dir=Path("/var/lib/cpv"),
            allow_uids=(7, 8),
            allow_group="cpv",
            rescan_seconds=12.5,
            snapshot_limit_bytes=10**12,
            drain_timeout=0.0,
        ),
        registry=RegistryConfig(
            path=Path("/var/lib/cpv/reg"), remote="ssh://git@h/x.git", ssh_key=Path("/k/id")
        ),
        storage=StorageConfig(
            url="s3://b-1/p/q",
            endpoint_url="http://127.0.0.1:9",
            profile="p",
            region="r",
            part_size_mb=64,
            concurrency=2,
        ),
        watches=(
            WatchConfig(Path("/data/d"), "ds", "data"),
            WatchConfig(Path("/data/m"), "t/m", "model", ("ds", "ext"), 0.25, True),
        ),
    )
    p = tmp_path / "out.toml"
    p.write_text(dump_config(cfg))
    again = load_config(p)
    assert again == Config(cfg.daemon, cfg.registry, cfg.storage, cfg.watches, source=p)


def test_dump_of_defaults_writes_only_storage(tmp_path: Path) -> None:
    text = dump_config(Config())
    assert "[storage]" in text
    assert "[daemon]" not in text
    assert "[[watch]]" not in text
    assert parse_config(text, tmp_path / "x.toml").storage == StorageConfig()


@given(remote=st.text(min_size=1).filter(lambda s: s.strip() and not s.startswith("-")))
def test_dump_escapes_any_string(remote: str) -> None:
    cfg = Config(registry=RegistryConfig(remote=remote))
    assert parse_config(dump_config(cfg), "mem").registry.remote == remote
