"""keep_local's choice (pure) and its deletion inside the watch, on a real directory."""

from __future__ import annotations

import os
from pathlib import Path

from cpvd.lifecycle.local_space import Unit, choose, delete_unit, units_in
from cpvd.state.ledger import LedgerEntry


def row(version: str | None, unit: Unit, reason: str = "versioned") -> LedgerEntry:
    return LedgerEntry("a/m", f"/w/{unit.name}", "0" * 32, unit.size, unit.mtime_ns, version,
                       reason, 0.0)  # fmt: skip


def test_only_old_versioned_pushed_unstaged_units_go() -> None:
    u = [Unit(f"e{i}.pt", 100, 1000 + i) for i in range(7)]  # e6 is the newest
    handled = {
        "e0.pt": row("v1.0.0", u[0]),  # pushed, unstaged: goes
        "e1.pt": row("v1.1.0", u[1]),  # staged (best): stays
        "e2.pt": row("v1.2.0", u[2]),  # not pushed yet: stays
        "e3.pt": row("v1.3.0", Unit("e3.pt", 100, 999)),  # rewritten since: stays
        "e4.pt": None,  # never versioned: stays
        "e5.pt": row("v1.5.0", u[5]),  # pushed, but among the 2 newest: stays
        "e6.pt": row("v1.6.0", u[6]),
    }
    durable = {"v1.0.0", "v1.1.0", "v1.3.0", "v1.5.0", "v1.6.0"}
    chosen = choose(u, 2, handled, durable, protected={"v1.1.0"})
    assert [(d.unit.name, d.version) for d in chosen] == [("e0.pt", "v1.0.0")]
    assert choose(u, 0, handled, durable, set()) == []  # off
    reverted = {"e0.pt": row("v1.0.0", u[0], reason="reverted")}
    assert choose(u, 2, reverted, durable, set()) == []


def test_delete_unit_removes_a_directory_but_never_follows_a_link(tmp_path: Path) -> None:
    watch, outside = tmp_path / "watch", tmp_path / "outside"
    (watch / "ck-1").mkdir(parents=True)
    outside.mkdir()
    (outside / "precious").write_bytes(b"keep me")
    (watch / "ck-1" / "model.bin").write_bytes(b"x" * 10)
    os.symlink(outside, watch / "ck-1" / "link-out")  # a link inside the checkpoint
    os.symlink(outside / "precious", watch / "planted.pt")  # a link as a checkpoint
    units = {u.name: u for u in units_in(watch)}
    assert set(units) == {"ck-1"}  # the planted link is no checkpoint
    assert delete_unit(watch, units["ck-1"])
    assert not (watch / "ck-1").exists()
    assert (outside / "precious").read_bytes() == b"keep me"
    assert (watch / "planted.pt").is_symlink()


def test_delete_unit_keeps_a_unit_that_changed_since_chosen(tmp_path: Path) -> None:
    (tmp_path / "e.pt").write_bytes(b"one")
    [unit] = units_in(tmp_path)
    (tmp_path / "e.pt").write_bytes(b"one and more")
    assert not delete_unit(tmp_path, unit)
    assert (tmp_path / "e.pt").read_bytes() == b"one and more"
