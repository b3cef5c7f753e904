"""Checkpoint units (cpvd.watch.units, unit_scan): which files and directories under a watch
become versions, for each real trainer layout, and why the rest does not."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cpvd.config.load import parse_config
from cpvd.config.model import WatchConfig
from cpvd.errors import ConfigError
from cpvd.registry.metadata import VersionInfo
from cpvd.watch.settle import Tracker
from cpvd.watch.unit_scan import MAX_IGNORED, find_units
from cpvd.watch.units import UnitRules, glob_problem, glob_regex, unit_of, unit_relpath

AUTO = UnitRules("auto")
ENTRIES = UnitRules("entries")


def touch(root: Path, *rels: str, data: bytes = b"x") -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def units(root: Path, rules: UnitRules = AUTO) -> list[str]:
    return [p.relative_to(root).as_posix() for p in find_units(root, rules).units]


def ignored(root: Path, rules: UnitRules = AUTO) -> dict[str, str]:
    return dict(find_units(root, rules, ignored=True).ignored)


# -- globs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "rel", "hit"),
    [
        ("**/*.ckpt", "a.ckpt", True),
        ("**/*.ckpt", "lightning_logs/version_0/checkpoints/epoch=1-step=9.ckpt", True),
        ("**/*.ckpt", "a.ckpt.tmp", False),
        ("*.ckpt", "deep/down/a.ckpt", True),  # no "/": the name at any depth
        ("ckpts/*.pt", "ckpts/a.pt", True),
        ("ckpts/*.pt", "run/ckpts/a.pt", False),  # with "/": the whole relative path
        ("ckpts/*.pt", "ckpts/sub/a.pt", False),  # "*" stays within a name
        ("runs/**", "runs/a/b/c.bin", True),
        ("ckpt_*/", "ckpt_12", True),
        ("step_[0-9]*/", "step_5", True),
        ("step_[!0-9]*/", "step_5", False),
        ("e?.pt", "e1.pt", True),
        ("e?.pt", "e10.pt", False),
        ("a+b(c).pt", "a+b(c).pt", True),  # regex characters are literal
    ],
)
def test_glob_matching(pattern: str, rel: str, hit: bool) -> None:
    assert (glob_regex(pattern).fullmatch(rel) is not None) is hit


@pytest.mark.parametrize("pattern", ["", "/", "/abs/*.pt", "../*.pt", "a/../b", 3])
def test_bad_globs_are_named(pattern: object) -> None:
    assert glob_problem(pattern) is not None


def test_good_glob_has_no_problem() -> None:
    assert glob_problem("**/*.ckpt") is None
    assert glob_problem("ckpt_*/") is None


# -- the auto layout, one real trainer layout at a time -------------------------------------


def test_lightning_default_layout(tmp_path: Path) -> None:
    v0 = "lightning_logs/version_0"
    touch(
        tmp_path,
        f"{v0}/checkpoints/epoch=0-step=10.ckpt",
        f"{v0}/checkpoints/epoch=1-step=20.ckpt",
        f"{v0}/hparams.yaml",
        f"{v0}/events.out.tfevents.1700000000.host.1.0",
        "train.log",
        "notes.txt",
    )
    assert units(tmp_path) == [
        f"{v0}/checkpoints/epoch=0-step=10.ckpt",
        f"{v0}/checkpoints/epoch=1-step=20.ckpt",
    ]
    why = ignored(tmp_path)
    assert why[f"{v0}/events.out.tfevents.1700000000.host.1.0"] == "TensorBoard event file"
    assert why[f"{v0}/hparams.yaml"].startswith("not a checkpoint file")
    assert set(why) == {
        f"{v0}/hparams.yaml",
        f"{v0}/events.out.tfevents.1700000000.host.1.0",
        "train.log",
        "notes.txt",
    }


def test_lightning_dirpath_with_last_ckpt_symlink(tmp_path: Path) -> None:
    touch(tmp_path, "epoch=3-step=40.ckpt", "epoch=3-step=40.ckpt.metrics.json")
    os.symlink("epoch=3-step=40.ckpt", tmp_path / "last.ckpt")
    assert units(tmp_path) == ["epoch=3-step=40.ckpt"]
    why = ignored(tmp_path)
    assert why["last.ckpt"].startswith("symlink")
    assert why["epoch=3-step=40.ckpt.metrics.json"].startswith("metrics sidecar")


def test_hugging_face_output_dir(tmp_path: Path) -> None:
    for n in (500, 1000):
        touch(
            tmp_path,
            *(
                f"checkpoint-{n}/{f}"
                for f in (
                    "model.safetensors",
                    "optimizer.pt",
                    "trainer_state.json",
                    "rng_state_0.pth",
                    "rng_state_1.pth",
                )
            ),
        )
    touch(
        tmp_path,
        "runs/Dec03_12-00-00_host/events.out.tfevents.1.host.0",
        "tmp-checkpoint-1500/model.safetensors",  # being written: HF renames it when done
    )
    assert units(tmp_path) == ["checkpoint-1000", "checkpoint-500"]
    why = ignored(tmp_path)
    assert why["tmp-checkpoint-1500/"] == "temporary name (still being written)"
    assert why["runs/Dec03_12-00-00_host/events.out.tfevents.1.host.0"] == "TensorBoard event file"


def test_deepspeed_layout(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "global_step100/mp_rank_00_model_states.pt",
        "global_step100/zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "latest",
        "zero_to_fp32.py",
    )
    assert units(tmp_path) == ["global_step100"]
    assert ignored(tmp_path)["latest"] == "trainer marker file, not a checkpoint"


def test_torch_dcp_step_directories(tmp_path: Path) -> None:
    touch(tmp_path, "step_100/__0_0.distcp", "step_100/__1_0.distcp", "step_100/.metadata")
    touch(tmp_path, "step_200/__0_0.distcp")  # still writing: a unit all the same (it waits)
    touch(tmp_path, "step_300/notes.txt")  # a plain directory: descended
    assert units(tmp_path) == ["step_100", "step_200"]
    assert "step_300/notes.txt" in ignored(tmp_path)


def test_plain_torch_save_keras_and_others_at_any_depth(tmp_path: Path) -> None:
    names = [f"m.{ext}" for ext in ("pt", "pth", "bin", "safetensors", "keras", "h5", "npz")]
    names += ["deep/a/b/c.pkl", "x.msgpack", "x.gguf", "x.onnx", "UPPER.PT"]
    touch(tmp_path, *names)
    touch(tmp_path, "m.pt.tmp", "m.safetensors.part", ".hidden.pt", ".cache/x.pt", "m.pt~")
    assert units(tmp_path) == sorted(names)


def test_file_units_inside_a_directory_unit_are_not_units_of_their_own(tmp_path: Path) -> None:
    touch(tmp_path, "checkpoint-5/sub/model.pt", "checkpoint-5/trainer_state.json")
    assert units(tmp_path) == ["checkpoint-5"]
    assert ignored(tmp_path) == {}


# -- include / exclude ----------------------------------------------------------------------


def test_exclude_wins_over_the_defaults_and_prunes_directories(tmp_path: Path) -> None:
    touch(tmp_path, "a.pt", "old/b.pt", "c.bin", "checkpoint-1/m.bin")
    rules = UnitRules("auto", exclude=("old/", "*.bin", "checkpoint-*/"))
    assert units(tmp_path, rules) == ["a.pt"]
    why = ignored(tmp_path, rules)
    assert why["old/"] == "excluded by 'old/'"
    assert why["c.bin"] == "excluded by '*.bin'"


def test_include_file_globs_replace_the_extensions_but_keep_trainer_dirs(tmp_path: Path) -> None:
    touch(tmp_path, "a.ckpt", "b.pt", "weights.raw", "checkpoint-7/x.bin")
    rules = UnitRules("auto", include=("**/*.ckpt", "*.raw"))
    assert units(tmp_path, rules) == ["a.ckpt", "checkpoint-7", "weights.raw"]
    assert ignored(tmp_path, rules)["b.pt"] == "not matched by include"


def test_include_dir_globs_replace_the_trainer_dir_rules(tmp_path: Path) -> None:
    touch(tmp_path, "ckpt_1/shard0", "ckpt_1/shard1", "checkpoint-7/x.txt", "e.pt")
    rules = UnitRules("auto", include=("ckpt_*/",))
    assert units(tmp_path, rules) == ["ckpt_1", "e.pt"]


def test_include_and_exclude_together(tmp_path: Path) -> None:
    touch(tmp_path, "run1/a.ckpt", "run2/b.ckpt", "run2/last.ckpt")
    rules = UnitRules("auto", include=("**/*.ckpt",), exclude=("last.ckpt",))
    assert units(tmp_path, rules) == ["run1/a.ckpt", "run2/b.ckpt"]


# -- entries --------------------------------------------------------------------------------


def test_entries_is_one_unit_per_top_level_entry(tmp_path: Path) -> None:
    touch(tmp_path, "train/part-0.parquet", "val.csv", "notes.txt", ".hidden", "x.tmp")
    assert units(tmp_path, ENTRIES) == ["notes.txt", "train", "val.csv"]
    assert set(ignored(tmp_path, ENTRIES)) == {".hidden", "x.tmp"}
    only = UnitRules("entries", include=("*.csv", "train/"), exclude=("val.*",))
    assert units(tmp_path, only) == ["train"]


def test_layout_defaults_by_kind() -> None:
    assert WatchConfig(Path("/w"), "a").unit_layout == "auto"
    assert WatchConfig(Path("/w"), "a", kind="data").unit_layout == "entries"
    assert WatchConfig(Path("/w"), "a", kind="data", layout="auto").unit_layout == "auto"


def test_ignored_list_is_capped(tmp_path: Path) -> None:
    for i in range(MAX_IGNORED + 5):
        (tmp_path / f"{i}.log").write_bytes(b"")
    scan = find_units(tmp_path, AUTO, ignored=True)
    assert len(scan.ignored) == MAX_IGNORED and scan.truncated


# -- mapping an event path to its unit ------------------------------------------------------


def test_unit_of_event_paths(tmp_path: Path) -> None:
    touch(tmp_path, "checkpoint-5/model.safetensors", "lightning_logs/version_0/hparams.yaml")
    touch(tmp_path, "dcp/step_1/.metadata", "x/e.pt", "tmp-checkpoint-6/model.safetensors")
    r = tmp_path
    assert unit_of(r, r / "checkpoint-5/model.safetensors", AUTO) == r / "checkpoint-5"
    assert unit_of(r, r / "checkpoint-5/rng_state_1.pth", AUTO) == r / "checkpoint-5"
    assert unit_of(r, r / "checkpoint-5", AUTO) == r / "checkpoint-5"
    assert unit_of(r, r / "x/e.pt", AUTO) == r / "x/e.pt"
    assert unit_of(r, r / "dcp/step_1/__0_0.distcp", AUTO) == r / "dcp/step_1"
    assert unit_of(r, r / "dcp/step_2/__0_0.distcp", AUTO) == r / "dcp/step_2"  # by its name
    assert unit_of(r, r / "lightning_logs/version_0/hparams.yaml", AUTO) is None
    assert unit_of(r, r / "lightning_logs/version_0", AUTO) is None
    assert unit_of(r, r / "tmp-checkpoint-6/model.safetensors", AUTO) is None
    assert unit_of(r, r / "x/e.pt.tmp", AUTO) is None
    assert unit_of(r, r, AUTO) is None
    assert unit_of(r, tmp_path.parent / "elsewhere.pt", AUTO) is None
    assert unit_of(r, r / "x/e.pt", ENTRIES) == r / "x"
    # a unit already tracked owns everything below it, even if it is gone now
    gone = r / "renamed-away"
    assert unit_of(r, gone / "f", AUTO, known=lambda p: p == gone) == gone


def test_unit_relpath() -> None:
    watches = [WatchConfig(Path("/w/a"), "a"), WatchConfig(Path("/w/b"), "b")]
    assert unit_relpath("/w/b/lightning_logs/version_3/e.ckpt", watches) == (
        "lightning_logs/version_3/e.ckpt"
    )
    assert unit_relpath("/w/a/checkpoint-5", watches) == "checkpoint-5"
    assert unit_relpath("/w/ab/x.pt", watches) is None
    assert unit_relpath("/w/a", watches) is None


# -- the settle tracker with units ----------------------------------------------------------


def test_tracker_scan_finds_nested_units(tmp_path: Path) -> None:
    touch(tmp_path, "lightning_logs/version_0/checkpoints/e.ckpt", "train.log")
    t = Tracker(tmp_path, 1.0, validate=lambda p: None, rules=AUTO)
    t.scan(0.0)
    assert t.tracked() == [tmp_path / "lightning_logs/version_0/checkpoints/e.ckpt"]
    assert [d.path for d in t.due(1.0)] == t.tracked()


def test_late_rank_file_rearms_the_directory_unit(tmp_path: Path) -> None:
    """HF writes checkpoint-N/ then another rank's rng_state lands late: one version, whole."""
    d = tmp_path / "checkpoint-10"
    t = Tracker(tmp_path, 2.0, validate=lambda p: None, rules=AUTO)
    for name in ("model.safetensors", "trainer_state.json", "rng_state_0.pth"):
        touch(d, name)
        assert t.observe(d / name, 0.0) == d
    touch(d, "rng_state_1.pth")
    assert t.observe(d / "rng_state_1.pth", 1.5) == d
    assert t.due(2.0) == []
    out = t.due(3.5)
    assert [(x.path, x.status, x.signature.files) for x in out] == [(d, "ready", 4)]


def test_tracker_ignores_logs_and_tracks_nested_checkpoints(tmp_path: Path) -> None:
    t = Tracker(tmp_path, 1.0, validate=lambda p: None, rules=AUTO)
    touch(tmp_path, "train.log", "run7/hparams.yaml", "run7/checkpoints/a.ckpt")
    assert t.observe(tmp_path / "train.log", 0.0) is None
    assert t.observe(tmp_path / "run7", 0.0) is None
    assert t.observe(tmp_path / "run7/hparams.yaml", 0.0) is None
    ckpt = tmp_path / "run7/checkpoints/a.ckpt"
    assert t.observe(ckpt, 0.0) == ckpt
    assert t.tracked() == [ckpt]


def test_tracker_sidecar_at_depth_delays_its_checkpoint(tmp_path: Path) -> None:
    t = Tracker(tmp_path, 2.0, validate=lambda p: None, rules=AUTO)
    touch(tmp_path, "run/e.pt")
    t.observe(tmp_path / "run/e.pt", 0.0)
    touch(tmp_path, "run/e.pt.metrics.json")
    assert t.observe(tmp_path / "run/e.pt.metrics.json", 1.5) is None
    assert t.due(2.0) == []
    assert [d.path for d in t.due(3.5)] == [tmp_path / "run/e.pt"]


def test_reloaded_rules_apply_at_the_next_scan(tmp_path: Path) -> None:
    touch(tmp_path, "a.pt", "b.ckpt")
    t = Tracker(tmp_path, 1.0, validate=lambda p: None, rules=AUTO)
    t.scan(0.0)
    assert len(t.tracked()) == 2
    t.rules = UnitRules("auto", exclude=("*.pt",))
    t.scan(0.5)
    assert t.tracked() == [tmp_path / "b.ckpt"]


# -- config and metadata --------------------------------------------------------------------


def config_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/cpv.toml")
    return str(info.value)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('layout = "tree"', '[[watch]] #1 layout: must be "auto" or "entries", got "tree"'),
        ('include = ["/abs/*.pt"]', "[[watch]] #1 include: item 1: must be relative"),
        ('exclude = ["*.log", "../x"]', "[[watch]] #1 exclude: item 2: must not contain '..'"),
        ('include = "*.pt"', "[[watch]] #1 include: expected a list"),
    ],
)
def test_unit_config_errors_name_the_key(extra: str, expected: str) -> None:
    msg = config_error(f'[[watch]]\npath = "/w"\nartifact = "a"\n{extra}\n')
    assert "/etc/cpv.toml" in msg and expected in msg


def test_unit_config_loads() -> None:
    cfg = parse_config(
        '[[watch]]\npath = "/w"\nartifact = "a"\nlayout = "entries"\n'
        'include = ["**/*.ckpt", "ckpt_*/"]\nexclude = ["**/*.log"]\n',
        "/etc/cpv.toml",
    )
    (w,) = cfg.watches
    assert (w.unit_layout, w.include, w.exclude) == (
        "entries",
        ("**/*.ckpt", "ckpt_*/"),
        ("**/*.log",),
    )


def message(relpath: object) -> str:
    body = {"md5": "0" * 32, "size": 1, "nfiles": 1, "is_dir": False, "name": "e.ckpt"}
    return json.dumps({**body, "source": "/w/r/e.ckpt", "relpath": relpath})


def test_relpath_round_trips_through_the_tag_message() -> None:
    info = VersionInfo.from_message("a", "v1.0.0", message("lightning_logs/version_3/e.ckpt"))
    assert info is not None and info.relpath == "lightning_logs/version_3/e.ckpt"
    again = VersionInfo.from_message("a", "v1.0.0", info.message())
    assert again is not None and again.relpath == info.relpath
    old = json.loads(message(None))
    del old["relpath"]  # versions made before relpath existed
    legacy = VersionInfo.from_message("a", "v1.0.0", json.dumps(old))
    assert legacy is not None and legacy.relpath is None


@pytest.mark.parametrize("bad", ["../e.ckpt", "/abs/e.ckpt", "a//b", "a/./b", "a\nb", "", 5])
def test_an_unsafe_relpath_skips_the_tag(bad: object) -> None:
    assert VersionInfo.from_message("a", "v1.0.0", message(bad)) is None
