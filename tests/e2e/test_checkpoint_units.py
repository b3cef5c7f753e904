"""Issue 14, checkpoint units, through the real daemon: each real trainer's layout (files with
their formats' real structure) gives exactly one version per checkpoint unit, none for logs,
event files, text or markers; each version's ``relpath`` says where below the watch it was;
pull gives the unit back; ``cpvctl status --ignored`` says why the rest was not versioned.

One daemon watches one directory per trainer (one artifact each), so a mistake in one layout
cannot hide behind another's versions.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import time
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from tests.e2e.harness import DaemonProcess, Watch, cpvctl, git, queue_depth, wait_for

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def torch_zip(tag: str) -> bytes:
    """What ``torch.save`` writes: a zip archive holding ``archive/data.pkl`` and storages."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00." + tag.encode())
        zf.writestr("archive/data/0", os.urandom(2048))
        zf.writestr("archive/version", b"3\n")
    return buf.getvalue()


def safetensors(n: int = 256) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}})
    return struct.pack("<Q", len(header)) + header.encode() + os.urandom(4 * n)


def hdf5(size: int = 4096) -> bytes:
    """A version-0 HDF5 superblock (what h5py writes) whose end-of-file address is ``size``."""
    sb = bytes([0, 0, 0, 0, 0, 8, 8, 0]) + struct.pack("<HHI", 4, 16, 0)
    sb += struct.pack("<QQQQ", 0, 0xFFFFFFFFFFFFFFFF, size, 0xFFFFFFFFFFFFFFFF)
    head = HDF5_SIGNATURE + sb
    return head + os.urandom(size - len(head))


def write(path: Path, data: bytes | str) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    path.write_bytes(raw)
    return raw


def versions(d: DaemonProcess, artifact: str) -> dict[str, str]:
    """relpath -> version of every version of ``artifact``."""
    return {v["relpath"]: v["version"] for v in d.client().versions(artifact)}


def has_versions(d: DaemonProcess, artifact: str, relpaths: set[str]) -> bool:
    return set(versions(d, artifact)) == relpaths


def md5_tree(root: Path) -> dict[str, str]:
    if root.is_file():
        return {"": hashlib.md5(root.read_bytes()).hexdigest()}
    return {
        p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# -- each trainer writes like the real one ---------------------------------------------------


def lightning_default(w: Path) -> None:
    """Trainer(default_root_dir=w): logs and hparams beside the checkpoints, two levels down."""
    v0 = w / "lightning_logs" / "version_0"
    write(v0 / "hparams.yaml", "lr: 0.001\nbatch_size: 32\n")
    write(v0 / "events.out.tfevents.1733230000.host.4242.0", os.urandom(300))
    for epoch, step in ((0, 10), (1, 20)):
        write(v0 / "checkpoints" / f"epoch={epoch}-step={step}.ckpt", torch_zip(f"e{epoch}"))
        with open(v0 / "events.out.tfevents.1733230000.host.4242.0", "ab") as f:
            f.write(os.urandom(100))


def lightning_dirpath(w: Path) -> None:
    """ModelCheckpoint(dirpath=w, save_last="link"): epochs and a ``last.ckpt`` symlink."""
    write(w / "epoch=0-step=5.ckpt", torch_zip("d0"))
    write(w / "epoch=1-step=10.ckpt", torch_zip("d1"))
    os.symlink("epoch=1-step=10.ckpt", w / "last.ckpt")


def hugging_face(w: Path) -> None:
    """Trainer(output_dir=w), two ranks: rank 1's rng_state lands after trainer_state.json."""
    ck = w / "checkpoint-500"
    write(w / "runs" / "Dec03_12-00-00_host" / "events.out.tfevents.1733230000.host.1.0", "ev")
    write(ck / "model.safetensors", safetensors())
    write(ck / "optimizer.pt", torch_zip("opt"))
    write(ck / "scheduler.pt", torch_zip("sch"))
    write(ck / "rng_state_0.pth", torch_zip("rng0"))
    write(ck / "trainer_state.json", json.dumps({"global_step": 500, "log_history": []}))
    time.sleep(0.5)  # within the watch's quiet period (3 s)
    write(ck / "rng_state_1.pth", torch_zip("rng1"))
    # the next save, still in its temporary directory: never a version
    write(w / "tmp-checkpoint-1000" / "model.safetensors", safetensors())


def deepspeed(w: Path) -> None:
    """engine.save_checkpoint(w): shards in global_stepN/, then ``latest`` names the tag."""
    write(w / "global_step100" / "mp_rank_00_model_states.pt", torch_zip("ds"))
    write(w / "global_step100" / "zero_pp_rank_0_mp_rank_00_optim_states.pt", torch_zip("z0"))
    write(w / "zero_to_fp32.py", "# helper script DeepSpeed copies next to checkpoints\n")
    write(w / "latest", "global_step100")


def torch_dcp(w: Path) -> None:
    """torch.distributed.checkpoint.save(..., checkpoint_id=w/step_100): shards, then
    ``.metadata.tmp`` renamed to ``.metadata``."""
    d = w / "step_100"
    write(d / "__0_0.distcp", os.urandom(4096))
    write(d / "__1_0.distcp", os.urandom(4096))
    write(d / ".metadata.tmp", os.urandom(500))
    os.rename(d / ".metadata.tmp", d / ".metadata")


def plain_torch_and_keras(w: Path) -> None:
    """torch.save at two depths, Keras model.save / save_weights, and a log appended."""
    write(w / "epoch-1.pt", torch_zip("p1"))
    write(w / "exp" / "a" / "model.pt", torch_zip("pa"))
    write(w / "model.keras", torch_zip("keras"))  # a .keras file is a zip archive too
    write(w / "weights.h5", hdf5())
    write(w / "notes.txt", "baseline run\n")
    for i in range(3):
        with open(w / "train.log", "a") as f:
            f.write(f"step {i} loss 0.{9 - i}\n")


LAYOUTS: dict[str, tuple[Callable[[Path], None], dict[str, str]]] = {
    # watch dir -> (writer, {relpath: "file" | "dir"} expected as versions)
    "lt": (
        lightning_default,
        {
            "lightning_logs/version_0/checkpoints/epoch=0-step=10.ckpt": "file",
            "lightning_logs/version_0/checkpoints/epoch=1-step=20.ckpt": "file",
        },
    ),
    "ld": (lightning_dirpath, {"epoch=0-step=5.ckpt": "file", "epoch=1-step=10.ckpt": "file"}),
    "hf": (hugging_face, {"checkpoint-500": "dir"}),
    "ds": (deepspeed, {"global_step100": "dir"}),
    "dcp": (torch_dcp, {"step_100": "dir"}),
    "pt": (
        plain_torch_and_keras,
        {
            "epoch-1.pt": "file",
            "exp/a/model.pt": "file",
            "model.keras": "file",
            "weights.h5": "file",
        },
    ),
}


def test_every_trainer_layout_gives_one_version_per_unit(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    root = short_tmp / "w"
    watches = [
        Watch(
            root / name, f"units/{name}", layout=None, settle_seconds=3.0 if name == "hf" else 0.3
        )
        for name in LAYOUTS
    ]
    d = daemon_factory(watches=watches)
    with d:
        for name, (writer, _) in LAYOUTS.items():
            writer(root / name)
        for name, (_, expected) in LAYOUTS.items():
            wait_for(
                partial(has_versions, d, f"units/{name}", set(expected)), timeout=60, what=name
            )
        # more log lines and events after the versions: still nothing new
        with open(root / "pt" / "train.log", "a") as f:
            f.write("step 3 loss 0.5\n")
        time.sleep(3.0)  # > one rescan period (2 s) + the quiet period
        wait_for(lambda: queue_depth(d) == 0, what="an empty queue")
        for name, (_, expected) in LAYOUTS.items():
            got = d.client().versions(f"units/{name}")
            assert sorted(v["relpath"] for v in got) == sorted(expected), name
            for v in got:
                assert v["is_dir"] is (expected[v["relpath"]] == "dir"), (name, v)
                assert v["source"] == str(root / name / v["relpath"])
                assert v["name"] == Path(v["relpath"]).name

        # HF: one version holding both ranks' rng_state, exactly the directory
        hf = d.client().versions("units/hf")[0]
        out = Path(d.client().pull("units/hf", hf["version"], short_tmp / "pull-hf"))
        assert out == short_tmp / "pull-hf" / "checkpoint-500"
        assert md5_tree(out) == md5_tree(root / "hf" / "checkpoint-500")
        assert {"rng_state_0.pth", "rng_state_1.pth", "trainer_state.json"} <= set(md5_tree(out))
        assert os.listdir(short_tmp / "pull-hf") == ["checkpoint-500"]
        # DCP: the dot-file written last is part of the unit
        dcp = d.client().versions("units/dcp")[0]
        out = Path(d.client().pull("units/dcp", dcp["version"], short_tmp / "pull-dcp"))
        assert sorted(md5_tree(out)) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
        # a nested Lightning checkpoint comes back as that one file
        rel = "lightning_logs/version_0/checkpoints/epoch=1-step=20.ckpt"
        v = versions(d, "units/lt")[rel]
        out = Path(d.client().pull("units/lt", v, short_tmp / "pull-lt"))
        assert out == short_tmp / "pull-lt" / "epoch=1-step=20.ckpt"
        assert out.read_bytes() == (root / "lt" / rel).read_bytes()

        # the relpath is in the tag message, for anyone reading the registry with plain git
        message = git(d.registry, "tag", "-l", "--format=%(contents)", f"units/lt@{v}")
        assert json.loads(message)["relpath"] == rel
        # cpvctl show prints the relpath; status --ignored says why the rest is not a version
        shown = cpvctl(d.socket, "show", f"units/lt@{v}", check=True).stdout
        assert rel in shown
        status = cpvctl(d.socket, "status", "--ignored", check=True).stdout
        for line in (
            "lightning_logs/version_0/hparams.yaml",
            "lightning_logs/version_0/events.out.tfevents.1733230000.host.4242.0",
            "TensorBoard event file",
            "last.ckpt",
            "symlink",
            "tmp-checkpoint-1000/",
            "temporary name",
            "latest",
            "trainer marker file",
            "train.log",
            "notes.txt",
        ):
            assert line in status, line
        report = json.loads(cpvctl(d.socket, "--json", "status", "--ignored", check=True).stdout)
        by_watch = {w["artifact"]: w for w in report["ignored"]}
        assert {f["relpath"] for f in by_watch["units/ds"]["files"]} == {
            "latest",
            "zero_to_fp32.py",
        }
        assert by_watch["units/dcp"]["files"] == []
        assert "ignored" not in d.client().status()


def test_a_data_watch_keeps_one_unit_per_top_level_entry(
    short_tmp: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """kind "data" defaults to entries: a split directory and a text file are both versions;
    include/exclude narrow it."""
    w = short_tmp / "data"
    d = daemon_factory(watches=[Watch(w, "units/data", kind="data", layout=None, exclude=["*.md"])])
    with d:
        write(w / "train" / "part-0.csv", "a,b\n1,2\n")
        write(w / "train" / "part-1.csv", "a,b\n3,4\n")
        write(w / "labels.txt", "cat\ndog\n")
        write(w / "README.md", "how the split was made\n")
        wait_for(
            lambda: set(versions(d, "units/data")) == {"train", "labels.txt"}, what="2 versions"
        )
        time.sleep(2.5)  # > one rescan period
        assert set(versions(d, "units/data")) == {"train", "labels.txt"}
        report = d.client().status(ignored=True)
        assert report["ignored"][0]["files"] == [
            {"relpath": "README.md", "reason": "excluded by '*.md'"}
        ]
