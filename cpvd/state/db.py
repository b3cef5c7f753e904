"""The state database: one SQLite file in WAL mode under ``state_dir``, shared by the job
queue and the ledger (one file, one lock, one transaction order).

Durability choice: ``synchronous=FULL``. In WAL mode ``NORMAL`` already survives a killed
process; ``FULL`` also survives power loss (the WAL is fsynced at every commit). The queue
sees a handful of transitions per checkpoint, so the extra fsync costs nothing measurable.
Every sqlite error leaves here as :class:`cpvd.errors.StateError`, with what to do.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cpvd.errors import StateError

BUSY_TIMEOUT_S = 10.0


def _bind(value: Any) -> Any:
    """A parameter as SQLite can store it. A path whose name is not valid UTF-8 arrives as a
    str holding surrogate escapes (``os.fsdecode``), which sqlite3 cannot encode: it is stored
    as its raw bytes (a BLOB) instead, which compares equal only to the same bytes, and
    :func:`_row` turns it back into the very same str. Lossless, and every valid name is
    stored as text exactly as before."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return os.fsencode(value)
    return value


def _row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(os.fsdecode(v) if isinstance(v, bytes) else v for v in row)


class _Connection(sqlite3.Connection):
    """Binds every parameter through :func:`_bind` (the daemon stores no real BLOBs)."""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return super().execute(sql, _params(parameters))

    def executemany(self, sql: str, seq: Iterable[Any], /) -> sqlite3.Cursor:
        return super().executemany(sql, (_params(p) for p in seq))


def _params(parameters: Any) -> Any:
    if isinstance(parameters, dict):
        return {k: _bind(v) for k, v in parameters.items()}
    return tuple(_bind(v) for v in parameters)

_CORRUPT_HINTS = ("not a database", "malformed", "corrupt", "file is encrypted")


def _is_corruption(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(h in text for h in _CORRUPT_HINTS)


def corrupt_message(path: Path, detail: str) -> str:
    return (
        f"the state database {path} is corrupt ({detail}). Start the daemon once with "
        "`cpvd run --rebuild-queue` to move it aside and start with an empty queue: versions "
        "already in the registry are kept, the start-up rescan queues the checkpoints "
        "still on disk again, and snapshots of checkpoints still waiting are moved to "
        f"{path.parent / 'orphans'}, not deleted"
    )


class StateDB:
    """One SQLite connection in WAL mode plus the lock that serialises its use.

    Shared by :class:`JobQueue` and :class:`cpvd.state.ledger.Ledger` so both live in one file and
    one transaction order. Every sqlite error leaves here as :class:`StateError`.
    """

    def __init__(self, path: Path, *, busy_timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                # 0600: the queue holds paths of the user's checkpoints
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StateError(f"cannot create the state database {self.path}: {exc}") from exc
        try:
            self._conn = sqlite3.connect(
                str(self.path),
                timeout=busy_timeout,
                isolation_level=None,  # explicit BEGIN IMMEDIATE / COMMIT below
                check_same_thread=False,
                factory=_Connection,
            )
            self._conn.row_factory = _row
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the state database {self.path}: {exc}") from exc
        try:
            self._configure(busy_timeout)
        except StateError:
            self._conn.close()
            raise

    def _configure(self, busy_timeout: float) -> None:
        try:
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            check = [r[0] for r in self._conn.execute("PRAGMA quick_check").fetchall()]
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_versions "
                "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc
        if check != ["ok"]:
            raise StateError(corrupt_message(self.path, "; ".join(check[:3])))
        if str(mode).lower() != "wal":
            raise StateError(
                f"the state database {self.path} cannot use WAL journaling (got {mode!r}); "
                "put state_dir on a local filesystem"
            )

    def _error(self, exc: sqlite3.Error) -> StateError:
        if _is_corruption(exc):
            return StateError(corrupt_message(self.path, str(exc)))
        if "full" in str(exc).lower():
            return StateError(
                f"the state database {self.path} could not be written: {exc}. Free space on "
                "the state directory's filesystem; queued work resumes once there is room"
            )
        return StateError(f"state database {self.path}: {exc}")

    def ensure_schema(self, component: str, version: int, ddl: str) -> None:
        """Create ``component``'s tables; refuse a file written by a newer cpvd."""
        with self.write() as conn:
            row = conn.execute(
                "SELECT version FROM schema_versions WHERE component = ?", (component,)
            ).fetchone()
            if row is not None and int(row[0]) > version:
                raise StateError(
                    f"the state database {self.path} was written by a newer cpvd "
                    f"({component} schema {row[0]}, this one knows {version}): upgrade cpvd"
                )
            for statement in ddl.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT OR REPLACE INTO schema_versions (component, version) VALUES (?, ?)",
                (component, version),
            )

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error.

        A ``write()`` inside another on the same thread joins the outer transaction: what
        both write is committed together or not at all (an error inside rolls back both).
        """
        with self._lock:
            conn = self._live()
            if conn.in_transaction:  # ours: only the thread holding the lock gets here
                yield conn
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            try:
                yield conn
            except sqlite3.Error as exc:
                self._rollback(conn)
                raise self._error(exc) from exc
            except BaseException:
                self._rollback(conn)
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                raise self._error(exc) from exc

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._live()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            # if this fails the connection is already broken; the original error is raised
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def _live(self) -> sqlite3.Connection:
        if self._closed:
            raise StateError(f"state database {self.path} is closed")
        return self._conn

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    @property
    def closed(self) -> bool:
        return self._closed
