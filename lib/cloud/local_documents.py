"""The ``local`` documents adapter: one SQLite table in WAL mode, JSON values.

Why it is serialisable across threads and processes: every write, and every transaction, runs
inside ``BEGIN IMMEDIATE``, which takes SQLite's single write lock before the first read, so a
transaction's reads cannot be invalidated before it commits. A second writer waits (busy
timeout); if it still cannot get the lock it is retried with exponential backoff, and after
``max_attempts`` :class:`TransactionConflict` is raised. Reads outside transactions see the last
committed state (WAL lets them run beside a writer).

Each thread gets its own connection (sqlite3 connections are not shared across threads); see
``_sqlite.SqliteFile``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from backbeat.cloud._docvalues import check_collection, check_data, run_query, split_document
from backbeat.cloud._sqlite import SqliteFile
from backbeat.cloud.ports import (
    AlreadyExists,
    CloudError,
    Filter,
    NotFound,
    TransactionConflict,
    TransientError,
)

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
        self._db = SqliteFile(Path(path), _SCHEMA, busy_timeout_s=busy_timeout_s, what="documents database")
        self.path = self._db.path

    # ------------------------------------------------------------------------------ transactions
    def transaction(self, fn: Callable[[_Txn], T], *, max_attempts: int = 10) -> T:
        def body(conn: sqlite3.Connection) -> T:
            txn = _Txn(conn)
            result = fn(txn)
            txn._apply()
            return result

        try:
            return self._db.write(body, attempts=max(1, max_attempts))
        except TransientError as exc:
            raise TransactionConflict(
                f"documents transaction on {self.path} still conflicting after {max_attempts} attempts: {exc}"
            ) from exc

    # ------------------------------------------------------------------------------ single calls
    def get(self, path: str) -> dict[str, Any] | None:
        split_document(path)
        rows = self._db.read("SELECT data FROM documents WHERE path = ?", (path,))
        return json.loads(str(rows[0][0])) if rows else None

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
        rows = self._db.read("SELECT path, data FROM documents WHERE parent = ?", (collection,))
        docs = [(str(p), json.loads(str(d))) for p, d in rows]
        return run_query(docs, filters, order_by, descending, limit)

    def close(self) -> None:
        self._db.close()

    def __repr__(self) -> str:
        return f"SqliteDocuments({str(self.path)!r})"
