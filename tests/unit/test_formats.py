"""Every rule of cpvd.watch.formats on real bytes: zips built with zipfile, hand-written headers."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import pytest

from cpvd.watch.formats import HDF5_SIGNATURE, validate


def make_zip(path: Path, members: dict[str, bytes] | None = None) -> Path:
    members = members or {"archive/data.pkl": b"\x80\x02" + b"x" * 5000, "archive/version": b"3"}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def make_safetensors(path: Path, tensors: dict[str, int], trailing: int = 0) -> Path:
    """A safetensors file: u64 header length, JSON header, then the tensors' bytes."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, nbytes in tensors.items():
        header[name] = {"dtype": "U8", "shape": [nbytes], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\x01" * (offset + trailing))
    return path


def truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


# -- zip-based files ------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".pt", ".pth", ".ckpt", ".keras", ".zip", ".bin"])
def test_whole_zip_is_valid(tmp_path: Path, ext: str) -> None:
    assert validate(make_zip(tmp_path / f"m{ext}")) is None


@pytest.mark.parametrize("keep_fraction", [0.3, 0.6, 0.95])
def test_torn_zip_is_invalid(tmp_path: Path, keep_fraction: float) -> None:
    p = make_zip(tmp_path / "epoch-1.pt")
    truncate(p, int(p.stat().st_size * keep_fraction))
    reason = validate(p)
    assert reason is not None and "zip" in reason


def test_zip_without_last_bytes_is_invalid(tmp_path: Path) -> None:
    p = make_zip(tmp_path / "last.ckpt")
    truncate(p, p.stat().st_size - 1)
    assert validate(p) is not None


def test_keras_that_is_not_a_zip_is_invalid(tmp_path: Path) -> None:
    p = tmp_path / "model.keras"
    p.write_bytes(b"garbage that is not a zip")
    assert validate(p) == "not a zip archive (no PK signature)"


def test_legacy_torch_pickle_is_accepted(tmp_path: Path) -> None:
    p = tmp_path / "old.pt"
    p.write_bytes(b"\x80\x02\x8a\x0alegacy pickle")
    assert validate(p) is None


def test_opaque_bin_is_unknown_and_valid(tmp_path: Path) -> None:
    p = tmp_path / "weights.bin"
    p.write_bytes(b"\x00\x01 raw floats")
    assert validate(p) is None


def test_bin_that_starts_with_pk_is_checked_as_zip(tmp_path: Path) -> None:
    p = make_zip(tmp_path / "pytorch_model.bin")
    truncate(p, p.stat().st_size // 2)
    assert validate(p) is not None


def test_empty_file_is_invalid(tmp_path: Path) -> None:
    (tmp_path / "x.pt").write_bytes(b"")
    assert validate(tmp_path / "x.pt") == "empty file"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        *((n, None) for n in ("marker.txt", "events.log", ".gitkeep", "README")),
        *(
            (n, f"run/{n}: empty file")  # these formats are never empty when whole
            for n in ("model.pt", "pytorch_model.bin", "model.safetensors", "model.h5", "a.ckpt")
        ),
    ],
)
def test_empty_file_inside_a_directory(tmp_path: Path, name: str, expected: str | None) -> None:
    d = tmp_path / "run"
    d.mkdir()
    (d / "weights.npy").write_bytes(b"anything")
    (d / name).write_bytes(b"")
    assert validate(d) == expected
    assert validate(d / name) == "empty file"  # alone it is a writer that just created it


def test_unknown_format_is_valid(tmp_path: Path) -> None:
    (tmp_path / "weights.npy").write_bytes(b"anything")
    assert validate(tmp_path / "weights.npy") is None


def test_missing_path(tmp_path: Path) -> None:
    assert validate(tmp_path / "nope.pt") == "missing"


# -- safetensors ----------------------------------------------------------------------------


def test_safetensors_consistent_is_valid(tmp_path: Path) -> None:
    assert validate(make_safetensors(tmp_path / "m.safetensors", {"a": 16, "b": 40})) is None


def test_safetensors_without_tensors_is_valid(tmp_path: Path) -> None:
    assert validate(make_safetensors(tmp_path / "m.safetensors", {})) is None


def test_safetensors_shorter_than_declared_is_invalid(tmp_path: Path) -> None:
    p = make_safetensors(tmp_path / "m.safetensors", {"a": 16, "b": 40})
    truncate(p, p.stat().st_size - 10)
    reason = validate(p)
    assert reason is not None and "declares" in reason


def test_safetensors_longer_than_declared_is_invalid(tmp_path: Path) -> None:
    p = make_safetensors(tmp_path / "m.safetensors", {"a": 16}, trailing=3)
    assert validate(p) is not None


def test_safetensors_torn_inside_header(tmp_path: Path) -> None:
    p = make_safetensors(tmp_path / "m.safetensors", {"a": 16})
    truncate(p, 20)
    reason = validate(p)
    assert reason is not None and "header" in reason


def test_safetensors_under_8_bytes(tmp_path: Path) -> None:
    (tmp_path / "m.safetensors").write_bytes(b"\x10\x00")
    assert validate(tmp_path / "m.safetensors") is not None


def test_safetensors_header_not_json(tmp_path: Path) -> None:
    raw = b"{not json}"
    (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    assert validate(tmp_path / "m.safetensors") == "safetensors header is not valid JSON"


def test_safetensors_bad_offsets(tmp_path: Path) -> None:
    raw = json.dumps({"a": {"dtype": "U8", "shape": [1], "data_offsets": [5, 2]}}).encode()
    (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + b"12345")
    reason = validate(tmp_path / "m.safetensors")
    assert reason is not None and "data_offsets" in reason


# -- HDF5 -----------------------------------------------------------------------------------


def hdf5_v0(eof: int) -> bytes:
    """Signature + a version-0 superblock with 8-byte offsets (what h5py writes by default)."""
    sb = bytes([0, 0, 0, 0, 0, 8, 8, 0]) + struct.pack("<HHI", 4, 16, 0)
    sb += struct.pack("<QQQQ", 0, 0xFFFFFFFFFFFFFFFF, eof, 0xFFFFFFFFFFFFFFFF)
    return HDF5_SIGNATURE + sb


def hdf5_v2(eof: int) -> bytes:
    sb = bytes([2, 8, 8, 0]) + struct.pack("<QQQQ", 0, 0xFFFFFFFFFFFFFFFF, eof, 48) + b"\0" * 4
    return HDF5_SIGNATURE + sb


@pytest.mark.parametrize("make", [hdf5_v0, hdf5_v2])
def test_hdf5_whole_is_valid(tmp_path: Path, make: object) -> None:
    head = make(4096)  # type: ignore[operator]
    (tmp_path / "m.h5").write_bytes(head + b"\0" * (4096 - len(head)))
    assert validate(tmp_path / "m.h5") is None


@pytest.mark.parametrize("make", [hdf5_v0, hdf5_v2])
def test_hdf5_shorter_than_superblock_eof_is_invalid(tmp_path: Path, make: object) -> None:
    head = make(4096)  # type: ignore[operator]
    (tmp_path / "m.hdf5").write_bytes(head + b"\0" * 100)
    reason = validate(tmp_path / "m.hdf5")
    assert reason is not None and "superblock" in reason


def test_hdf5_with_user_block(tmp_path: Path) -> None:
    body = hdf5_v0(2048)
    (tmp_path / "m.h5").write_bytes(b"u" * 512 + body + b"\0" * (2048 - len(body)))
    assert validate(tmp_path / "m.h5") is None


def test_hdf5_without_signature_is_invalid(tmp_path: Path) -> None:
    (tmp_path / "m.h5").write_bytes(b"\0" * 4096)
    assert validate(tmp_path / "m.h5") == "no HDF5 signature"


# -- directories ----------------------------------------------------------------------------


def hf_checkpoint(root: Path, name: str = "checkpoint-500", state: bytes | None = b"{}") -> Path:
    d = root / name
    d.mkdir()
    make_zip(d / "pytorch_model.bin")
    make_safetensors(d / "model.safetensors", {"w": 32})
    (d / "optimizer.pt").write_bytes(make_zip(root / "opt.zip").read_bytes())
    (d / "config.json").write_text("{}")
    if state is not None:
        (d / "trainer_state.json").write_bytes(state)
    return d


def test_hf_checkpoint_complete(tmp_path: Path) -> None:
    assert validate(hf_checkpoint(tmp_path)) is None


def test_hf_checkpoint_without_trainer_state_waits(tmp_path: Path) -> None:
    reason = validate(hf_checkpoint(tmp_path, state=None))
    assert reason == "no trainer_state.json yet (written last)"


def test_hf_checkpoint_with_half_written_trainer_state(tmp_path: Path) -> None:
    reason = validate(hf_checkpoint(tmp_path, state=b'{"global_step": 5'))
    assert reason == "trainer_state.json is not complete JSON"


def test_hf_rule_applies_only_to_checkpoint_n_names(tmp_path: Path) -> None:
    assert validate(hf_checkpoint(tmp_path, name="my-export", state=None)) is None


def test_dir_with_torn_member_file_is_invalid(tmp_path: Path) -> None:
    d = hf_checkpoint(tmp_path)
    truncate(d / "optimizer.pt", 100)
    reason = validate(d)
    assert reason is not None and reason.startswith("checkpoint-500/optimizer.pt:")


def test_empty_dir_is_invalid(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    assert validate(tmp_path / "run") == "empty directory"


def dcp_dir(root: Path, metadata: str | None) -> Path:
    d = root / "step-100"
    d.mkdir()
    for rank in range(2):
        (d / f"__{rank}_0.distcp").write_bytes(b"shard" * 100)
    if metadata:
        (d / metadata).write_bytes(b"\x80\x04metadata")
    return d


def test_dcp_complete_after_metadata_rename(tmp_path: Path) -> None:
    d = dcp_dir(tmp_path, ".metadata.tmp")
    reason = validate(d)
    assert reason is not None and ".metadata" in reason
    (d / ".metadata.tmp").rename(d / ".metadata")
    assert validate(d) is None


def test_dcp_nested_inside_hf_checkpoint(tmp_path: Path) -> None:
    d = hf_checkpoint(tmp_path)
    fsdp = d / "pytorch_model_fsdp_0"
    fsdp.mkdir()
    (fsdp / "__0_0.distcp").write_bytes(b"shard")
    assert validate(d) is not None
    (fsdp / ".metadata").write_bytes(b"m")
    assert validate(d) is None


def deepspeed_step(root: Path, step: int) -> Path:
    d = root / f"global_step{step}"
    d.mkdir()
    (d / "mp_rank_00_model_states.pt").write_bytes(make_zip(root / f"z{step}.zip").read_bytes())
    (d / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(
        make_zip(root / f"o{step}.zip").read_bytes()
    )
    return d


def test_deepspeed_needs_latest_naming_it(tmp_path: Path) -> None:
    d = deepspeed_step(tmp_path, 10)
    assert "latest" in (validate(d) or "")
    (tmp_path / "latest").write_text("global_step5")
    assert "names 'global_step5'" in (validate(d) or "")
    (tmp_path / "latest").write_text("global_step10")
    assert validate(d) is None


def test_deepspeed_older_step_stays_valid_when_latest_moved_on(tmp_path: Path) -> None:
    d = deepspeed_step(tmp_path, 10)
    (tmp_path / "latest").write_text("global_step20\n")
    assert validate(d) is None


def test_deepspeed_inside_hf_checkpoint_uses_its_own_latest(tmp_path: Path) -> None:
    d = hf_checkpoint(tmp_path)
    deepspeed_step(d, 500)
    assert validate(d) is not None
    (d / "latest").write_text("global_step500")
    assert validate(d) is None
