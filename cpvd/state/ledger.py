"""The ledger of handled checkpoints: what (path, content) the daemon has already dealt with.

Why: DESIGN.md promises that a checkpoint already handled (same path and content) is never
versioned again, not by a rescan, not after a restart, not after a revert restored it. The
watcher asks :meth:`Ledger.seen_stat` first (no hashing when size and mtime are unchanged)
and :meth:`Ledger.seen_content` once it has an md5. Rows are only appended, so the history of
a path survives reverts.

It lives in the same SQLite file as the job queue (pass ``queue.db``) so one backup, one
rebuild and one lock cover both; it may also open its own connection on a path.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpvd.state.db import StateDB

REASONS = ("versioned", "unchanged", "reverted", "pushed", "superseded")

_LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    artifact TEXT NOT NULL,
    path TEXT NOT NULL,
    md5 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    version TEXT,
    reason TEXT NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_path ON ledger(artifact, path, seq);
CREATE INDEX IF NOT EXISTS ledger_md5 ON ledger(artifact, path, md5);
"""
LEDGER_SCHEMA_VERSION = 1
_COLUMNS = "artifact, path, md5, size, mtime_ns, version, reason, recorded_at"


@dataclass(frozen=True)
class LedgerEntry:
    artifact: str
    path: str
    md5: str
    size: int
    mtime_ns: int
    version: str | None
    reason: str
    recorded_at: float

    @classmethod
    def _from_row(cls, row: tuple[Any, ...]) -> LedgerEntry:
        return cls(
            artifact=row[0],
            path=row[1],
            md5=row[2],
            size=int(row[3]),
            mtime_ns=int(row[4]),
            version=row[5],
            reason=row[6],
            recorded_at=float(row[7]),
        )


class Ledger:
    """Append-only record of handled checkpoints, keyed by (artifact, path)."""

    def __init__(self, db: StateDB | Path) -> None:
        if isinstance(db, StateDB):
            self.db, self._owns_db = db, False
        else:
            self.db, self._owns_db = StateDB(Path(db)), True
        try:
            self.db.ensure_schema("ledger", LEDGER_SCHEMA_VERSION, _LEDGER_DDL)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._owns_db:
            self.db.close()

    def record(
        self,
        artifact: str,
        path: str,
        md5: str,
        size: int,
        mtime_ns: int,
        version: str | None,
        reason: str,
    ) -> LedgerEntry:
        """Remember that ``path`` with this content was handled (and why)."""
        if reason not in REASONS:
            raise ValueError(f"invalid ledger reason {reason!r}: expected one of {REASONS}")
        entry = LedgerEntry(
            artifact, str(path), md5, int(size), int(mtime_ns), version, reason, time.time()
        )
        with self.db.write() as conn:
            conn.execute(
                f"INSERT INTO ledger ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.artifact, entry.path, entry.md5, entry.size, entry.mtime_ns,
                    entry.version, entry.reason, entry.recorded_at,
                ),
            )  # fmt: skip
        return entry

    def is_empty(self) -> bool:
        with self.db.read() as conn:
            return conn.execute("SELECT 1 FROM ledger LIMIT 1").fetchone() is None

    def seed(self, handled: Iterable[tuple[str, str, str, str]]) -> int:
        """Record ``(artifact, path, md5, version)`` rows as versioned, in one transaction.

        Why: the ledger lives in the queue database; when that file is rebuilt (corrupt, or
        the state dir was wiped) the start-up rescan finds every checkpoint still on disk.
        Seeding from the registry's versions keeps them from becoming versions again. The
        stat is unknown (-1), so each is hashed once and then skipped by ``seen_content``.
        """
        now = time.time()
        rows = [(a, str(p), m, -1, -1, v, "versioned", now) for a, p, m, v in handled]
        with self.db.write() as conn:
            conn.executemany(
                f"INSERT INTO ledger ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
        return len(rows)

    def lookup(self, artifact: str, path: str) -> LedgerEntry | None:
        """The latest entry for ``path``."""
        with self.db.read() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM ledger WHERE artifact = ? AND path = ?"
                " ORDER BY seq DESC LIMIT 1",
                (artifact, str(path)),
            ).fetchone()
        return None if row is None else LedgerEntry._from_row(row)

    def seen_content(self, artifact: str, path: str, md5: str) -> bool:
        """Has this exact content at this path ever been handled (any reason, any time)?"""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT 1 FROM ledger WHERE artifact = ? AND path = ? AND md5 = ? LIMIT 1",
                (artifact, str(path), md5),
            ).fetchone()
        return row is not None

    def seen_stat(self, artifact: str, path: str, size: int, mtime_ns: int) -> LedgerEntry | None:
        """The latest entry for ``path`` if the file still has its size and mtime, else None.

        Only the latest entry counts: a file rewritten since must be hashed again, even if an
        older entry happened to have the same stat.
        """
        entry = self.lookup(artifact, path)
        if entry is not None and entry.size == int(size) and entry.mtime_ns == int(mtime_ns):
            return entry
        return None

    def entries(
        self, artifact: str, path: str | None = None, limit: int = 100
    ) -> list[LedgerEntry]:
        """Newest first; for status pages and debugging."""
        sql = f"SELECT {_COLUMNS} FROM ledger WHERE artifact = ?"
        params: list[Any] = [artifact]
        if path is not None:
            sql += " AND path = ?"
            params.append(str(path))
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(int(limit))
        with self.db.read() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [LedgerEntry._from_row(r) for r in rows]
