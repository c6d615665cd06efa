"""The ``local`` documents adapter: one SQLite table in WAL mode, JSON values.

Why it is serialisable across threads and processes: every write, and every transaction, runs
inside ``BEGIN IMMEDIATE``, which takes SQLite's single write lock before the first read, so a
transaction's reads cannot be invalidated before it commits. A second writer waits (busy
timeout); if it still cannot get the lock it is retried with exponential backoff, and after
``max_attempts`` :class:`TransactionConflict` is raised. Reads outside transactions see the last
committed state (WAL lets them run beside a writer).

Each thread gets its own connection (sqlite3 connections are not shared across threads).
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from backbeat.cloud._docvalues import check_collection, check_data, run_query, split_document
from backbeat.cloud.ports import AlreadyExists, CloudError, Filter, NotFound, TransactionConflict

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    path        TEXT PRIMARY KEY,
    parent      TEXT NOT NULL,
    data        TEXT NOT NULL,
    update_time INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_parent ON documents(parent, path);
"""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class _Txn:
    """The handle given to a transaction function: reads go to the database, writes are buffered."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._writes: list[tuple[str, str, dict[str, Any] | None]] = []

    def get(self, path: str) -> dict[str, Any] | None:
        if self._writes:
            raise CloudError(
                f"transaction read of {path!r} after a write: do every read before the first write"
            )
        split_document(path)
        row = self._conn.execute("SELECT data FROM documents WHERE path = ?", (path,)).fetchone()
        return json.loads(row[0]) if row else None

    def create(self, path: str, data: Mapping[str, Any]) -> None:
        split_document(path)
        self._writes.append(("create", path, check_data(path, data)))

    def set(self, path: str, data: Mapping[str, Any]) -> None:
        split_document(path)
        self._writes.append(("set", path, check_data(path, data)))

    def update(self, path: str, fields: Mapping[str, Any]) -> None:
        split_document(path)
        self._writes.append(("update", path, check_data(path, fields)))

    def delete(self, path: str) -> None:
        split_document(path)
        self._writes.append(("delete", path, None))

    def _apply(self) -> None:
        now = time.time_ns()
        for op, path, data in self._writes:
            parent, _ = split_document(path)
            row = self._conn.execute("SELECT data FROM documents WHERE path = ?", (path,)).fetchone()
            if op == "create" and row is not None:
                raise AlreadyExists(f"document {path!r} already exists")
            if op == "update":
                if row is None:
                    raise NotFound(f"document {path!r} does not exist (update)")
                data = {**json.loads(row[0]), **(data or {})}
            if op == "delete":
                self._conn.execute("DELETE FROM documents WHERE path = ?", (path,))
                continue
            self._conn.execute(
                "INSERT INTO documents(path, parent, data, update_time) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(path) DO UPDATE SET data = excluded.data, update_time = excluded.update_time",
                (path, parent, json.dumps(data, separators=(",", ":")), now),
            )


class SqliteDocuments:
    """Documents in one SQLite file (see the module docstring)."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path).resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_ms = int(busy_timeout_s * 1000)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        conn = self._conn()
        for attempt in range(20):  # two processes creating the schema at once: one waits
            try:
                conn.executescript(_SCHEMA)
                break
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or attempt == 19:
                    raise CloudError(f"cannot initialise documents database {self.path}: {exc}") from exc
                time.sleep(0.05 * (attempt + 1))

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self._busy_ms / 1000, isolation_level=None,
                                       check_same_thread=False)  # fmt: skip
                conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error as exc:
                raise CloudError(f"cannot open documents database {self.path}: {exc}") from exc
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    # ------------------------------------------------------------------------------ transactions
    def transaction(self, fn: Callable[[_Txn], T], *, max_attempts: int = 10) -> T:
        conn = self._conn()
        last: Exception | None = None
        for attempt in range(1, max(1, max_attempts) + 1):
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise CloudError(f"documents database {self.path}: {exc}") from exc
                last = exc
                _backoff(attempt)
                continue
            try:
                txn = _Txn(conn)
                result = fn(txn)
                txn._apply()
                conn.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:
                conn.execute("ROLLBACK")
                if not _is_busy(exc):
                    raise CloudError(f"documents database {self.path}: {exc}") from exc
                last = exc
                _backoff(attempt)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        raise TransactionConflict(
            f"documents transaction on {self.path} still conflicting after {max_attempts} attempts: {last}"
        )

    # ------------------------------------------------------------------------------ single calls
    def get(self, path: str) -> dict[str, Any] | None:
        split_document(path)
        row = self._conn().execute("SELECT data FROM documents WHERE path = ?", (path,)).fetchone()
        return json.loads(row[0]) if row else None

    def create(self, path: str, data: Mapping[str, Any]) -> None:
        self.transaction(lambda t: t.create(path, data))

    def set(self, path: str, data: Mapping[str, Any]) -> None:
        self.transaction(lambda t: t.set(path, data))

    def update(self, path: str, fields: Mapping[str, Any]) -> None:
        self.transaction(lambda t: t.update(path, fields))

    def delete(self, path: str) -> None:
        self.transaction(lambda t: t.delete(path))

    def query(
        self,
        collection: str,
        filters: Sequence[Filter] = (),
        *,
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[tuple[str, dict[str, Any]]]:
        check_collection(collection)
        rows = (
            self._conn()
            .execute("SELECT path, data FROM documents WHERE parent = ?", (collection,))
            .fetchall()
        )
        return run_query([(p, json.loads(d)) for p, d in rows], filters, order_by, descending, limit)

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"SqliteDocuments({str(self.path)!r})"


def _backoff(attempt: int) -> None:
    time.sleep(min(1.0, 0.01 * 2**attempt) * (0.5 + random.random()))
