"""VersionInfo.to_json builds its dict field by field (fast); it must equal asdict's."""

from __future__ import annotations

from dataclasses import asdict

from cpvd.registry.metadata import VersionInfo


def test_to_json_equals_asdict_plus_tag_and_does_not_share_mutables() -> None:
    info = VersionInfo(
        artifact="team/m",
        version="v1.2.0",
        md5="0" * 32,
        size=3,
        nfiles=1,
        is_dir=False,
        name="e.pt",
        source="/w/e.pt",
        metrics={"loss": 0.5, "nested": {"a": 1}},
        lineage={"team/data": "v1.0.0"},
        parent="v1.1.0",
        job_id="j" * 32,
        commit="c" * 40,
        stages=["prod"],
        current=True,
    )
    out = info.to_json()
    assert out == {**asdict(info), "tag": "team/m@v1.2.0"}
    out["metrics"]["loss"] = 9
    out["stages"].append("dev")
    out["lineage"].clear()
    assert info.metrics["loss"] == 0.5
    assert info.stages == ["prod"]
    assert info.lineage == {"team/data": "v1.0.0"}
