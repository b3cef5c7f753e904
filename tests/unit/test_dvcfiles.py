"""DVC files rendered as DVC writes them, and parsed back without trusting the registry."""

from __future__ import annotations

import pytest

from cpvd.registry.dvcfiles import (
    DvcFileError,
    Pointer,
    parse_dvc_yaml,
    parse_pointer,
    render_dvc_config,
    render_dvc_yaml,
    render_pointer,
)

MD5 = "0123456789abcdef0123456789abcdef"


def test_pointer_bytes_are_what_dvc_add_writes_and_read_back() -> None:
    file_ptr = Pointer(MD5, 12, 1, False)
    dir_ptr = Pointer(MD5 + ".dir", 30, 3, True)
    assert render_pointer(file_ptr) == (
        f"outs:\n- md5: {MD5}\n  size: 12\n  hash: md5\n  path: checkpoint\n"
    )
    assert render_pointer(dir_ptr) == (
        f"outs:\n- md5: {MD5}.dir\n  size: 30\n  nfiles: 3\n  hash: md5\n  path: checkpoint\n"
    )
    assert parse_pointer(render_pointer(file_ptr)) == file_ptr
    assert parse_pointer(render_pointer(dir_ptr)) == dir_ptr


def test_dvc_yaml_and_config_bytes() -> None:
    arts = {"vision/resnet50": "model", "data/train": "data"}
    assert render_dvc_yaml(arts) == (
        "artifacts:\n"
        "  data/train:\n    path: artifacts/data/train/checkpoint\n    type: data\n"
        "  vision/resnet50:\n    path: artifacts/vision/resnet50/checkpoint\n    type: model\n"
    )
    assert parse_dvc_yaml(render_dvc_yaml(arts)) == arts
    assert parse_dvc_yaml("") == {}
    assert render_dvc_config({"url": "s3://b/x", "region": "eu-west-1"}) == (
        "[core]\n    remote = storage\n    analytics = false\n    check_update = false\n"
        "    autostage = true\n['remote \"storage\"']\n    url = s3://b/x\n"
        "    region = eu-west-1\n"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "just text",
        "outs: [",
        "outs: 3",
        "outs: []",
        "outs:\n- size: 3",
        f"outs:\n- md5: {MD5}\n  size: -1",
        f"outs:\n- md5: {MD5}\n  size: true",
        f"outs:\n- md5: {MD5}\n  nfiles: many",
        "outs:\n- md5: [1, 2]",
        "a: 1\na: 2",
        "!!python/object/apply:os.system ['true']",
        "[" * 5000,
    ],
)
def test_a_malformed_pointer_is_a_clear_error(text: str) -> None:
    with pytest.raises(DvcFileError) as err:
        parse_pointer(text, "artifacts/a/b/checkpoint.dvc at HEAD")
    assert "artifacts/a/b/checkpoint.dvc at HEAD" in err.value.message


@pytest.mark.parametrize(
    "text",
    ["artifacts: 1", "artifacts:\n  x: 1", "artifacts:\n  x: {type: [1]}", "- 1", "{" * 5000],
)
def test_a_malformed_dvc_yaml_is_a_clear_error(text: str) -> None:
    with pytest.raises(DvcFileError):
        parse_dvc_yaml(text)
