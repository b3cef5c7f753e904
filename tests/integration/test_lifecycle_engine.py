"""Best and retention on a real git registry with no remote (the lifecycle runs right after
each version): lineage and the current version protect what ``keep`` alone would prune."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from cpvd.api.events import EventBus
from cpvd.config.lifecycle import BestConfig, KeepConfig
from cpvd.config.model import WatchConfig
from cpvd.lifecycle.runner import Lifecycle
from cpvd.registry.engine import Engine
from cpvd.registry.model import VersionRequest
from cpvd.storage.hashing import hash_checkpoint
from tests.integration.engine_helpers import make_config, make_engine

DATA, MODEL = "t/data", "t/model"


def _watches(root: Path) -> tuple[WatchConfig, ...]:
    return (
        WatchConfig(root / "data", DATA, kind="data", keep=KeepConfig(last=1)),
        WatchConfig(
            root / "model",
            MODEL,
            data=(DATA,),
            best=BestConfig("loss", "min"),
            keep=KeepConfig(last=1),
        ),
    )


def _version(life: Lifecycle, engine: Engine, root: Path, artifact: str, **metrics: float) -> str:
    kind = "data" if artifact == DATA else "model"
    path = root / kind / f"{os.urandom(4).hex()}.bin"
    path.write_bytes(os.urandom(2048))
    req = VersionRequest(
        artifact, path, kind=kind, metrics=metrics, data=(DATA,) if kind == "model" else ()
    )
    content = hash_checkpoint(path)
    engine.upload(path, content)
    return life.after_version(lambda: engine.version(req, content, resume=False)).info.version


def _live(engine: Engine, artifact: str) -> list[str]:
    return [v.version for v in engine.versions(artifact) if not v.pruned]


def test_lineage_and_current_version_protect_what_keep_would_prune(tmp_path: Path) -> None:
    for d in ("data", "model"):
        (tmp_path / d).mkdir()
    cfg = make_config(tmp_path, str(tmp_path / "storage"), watches=_watches(tmp_path))
    engine = make_engine(cfg)
    bus = EventBus()
    live_cfg = [cfg]  # what a SIGHUP would swap
    life = Lifecycle(lambda: live_cfg[0], engine, bus)

    _version(life, engine, tmp_path, DATA)  # data v1.0.0
    _version(life, engine, tmp_path, MODEL, loss=0.9)  # model v1.0.0, trained on data v1.0.0
    _version(life, engine, tmp_path, DATA)  # data v1.1.0
    _version(life, engine, tmp_path, DATA)  # data v1.2.0
    # data v1.0.0 stays: the lineage of model v1.0.0, which stays (newest)
    assert _live(engine, DATA) == ["v1.2.0", "v1.0.0"]

    _version(life, engine, tmp_path, MODEL, loss=0.5)  # v1.1.0: best
    _version(life, engine, tmp_path, MODEL, loss=0.7)  # v1.2.0: not best
    # model v1.0.0 is pruned, so nothing protects data v1.0.0 any more
    assert _live(engine, MODEL) == ["v1.2.0", "v1.1.0"]
    assert engine.show(MODEL, "v1.1.0").stages == ["best"]
    assert _live(engine, DATA) == ["v1.2.0"]

    live_cfg[0] = replace(cfg, watches=(cfg.watches[0],))  # model retention off a while
    _version(life, engine, tmp_path, MODEL, loss=0.8)  # v1.3.0
    engine.revert(MODEL, "v1.2.0", to=tmp_path / "model" / "restored")
    live_cfg[0] = cfg
    life.after_push()  # the current version (reverted to) is protected
    assert _live(engine, MODEL) == ["v1.3.0", "v1.2.0", "v1.1.0"]

    pruned = [e.data["tag"] for e in bus.recent(types=["version.pruned"])]
    assert sorted(pruned) == [f"{DATA}@v1.0.0!#2", f"{DATA}@v1.1.0!#1", f"{MODEL}@v1.0.0!#3"]
    moved = [e.data["version"] for e in bus.recent(types=["stage.moved"])]
    assert moved == ["v1.0.0", "v1.1.0"]
    kept = [v for v in engine.index().artifact_versions(MODEL) if not v.pruned]
    assert life.summary[1] | {"without_metric": []} == {
        "artifact": MODEL, "latest": "v1.3.0", "best": "v1.1.0", "metric": "loss",
        "kept": 3, "pruned": 1, "without_metric": [], "without_metric_count": 0,
        "bytes": sum(v.size for v in kept),  # each kept version's content once
    }  # fmt: skip


def test_unpushed_deregistrations_are_dropped_at_start_and_made_again(
    tmp_path: Path, short_tmp: Path, bare_remote: Path
) -> None:
    """A kill between making deregistration tags and pushing them: the next start drops
    them (a name taken remotely meanwhile would block every push) and the first pass after
    the push makes and pushes them again."""
    (tmp_path / "model").mkdir()
    watch = WatchConfig(tmp_path / "model", MODEL, keep=KeepConfig(last=1))
    cfg = make_config(tmp_path, str(tmp_path / "storage"), remote=bare_remote, watches=(watch,))
    engine = make_engine(cfg)
    life = Lifecycle(lambda: cfg, engine, EventBus())
    for _ in range(3):
        _version(life, engine, tmp_path, MODEL)
    engine.push()
    leftover = f"{MODEL}@v1.0.0!#7"  # as a killed pass would leave it: local only
    head = engine.index().get(MODEL, "v1.0.0")
    assert head is not None and head.commit
    engine.registry.create_tag(leftover, head.commit, "left by a kill")
    engine.invalidate()
    assert engine.index().is_pruned(MODEL, "v1.0.0")

    life.start()
    assert leftover not in engine.index().tags and not engine.index().is_pruned(MODEL, "v1.0.0")
    assert life.after_push().pruned == [
        {"artifact": MODEL, "version": "v1.1.0", "tag": f"{MODEL}@v1.1.0!#1"},
        {"artifact": MODEL, "version": "v1.0.0", "tag": f"{MODEL}@v1.0.0!#2"},
    ]
    remote = engine.registry.remote_tags()
    assert {f"{MODEL}@v1.1.0!#1", f"{MODEL}@v1.0.0!#2"} <= set(remote) and leftover not in remote


def test_best_catches_up_after_a_rejected_push_replays_the_version(
    tmp_path: Path, bare_remote: Path
) -> None:
    """Machine B's version (with its unpushed best tag) loses the push race: replay
    renumbers the version and drops the tag; the pass after the push moves best again."""
    watch = WatchConfig(tmp_path / "model", MODEL, best=BestConfig("loss", "min"))
    (tmp_path / "model").mkdir()
    machines = []
    for name in ("ma", "mb"):
        cfg = make_config(
            tmp_path, str(tmp_path / "storage"), remote=bare_remote, watches=(watch,), name=name
        )
        engine = make_engine(cfg)
        machines.append((engine, Lifecycle(lambda cfg=cfg: cfg, engine, EventBus())))
    (a, a_life), (b, b_life) = machines
    _version(a_life, a, tmp_path, MODEL, loss=0.9)
    a.push()
    b.push()  # B is up to date
    _version(b_life, b, tmp_path, MODEL, loss=0.1)  # B: v1.1.0, best (tag not pushed)
    _version(a_life, a, tmp_path, MODEL, loss=0.5)  # A: v1.1.0 too, best, pushed first
    a.push()
    report = b.push()
    assert report.renumbered == [(f"{MODEL}@v1.1.0", f"{MODEL}@v1.2.0")]
    assert b.index().get(MODEL, "v1.1.0").stages == ["best"]  # type: ignore[union-attr]
    assert [m["version"] for m in b_life.after_push().moved] == ["v1.2.0"]
    remote = b.registry.remote_tags()
    best = max(
        (t for t in remote if t.startswith(f"{MODEL}#best#")),
        key=lambda t: int(t.rsplit("#", 1)[1]),
    )
    assert remote[best] == remote[f"{MODEL}@v1.2.0"]
