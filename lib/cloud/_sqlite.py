"""A SQLite file shared by threads and processes: one connection per thread, WAL, write retries."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from backbeat.cloud.ports import CloudError, TransientError

T = TypeVar("T")


def is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class SqliteFile:
    """Per-thread connections to one WAL database; :meth:`write` runs a function in BEGIN IMMEDIATE."""

    def __init__(
        self, path: Path, schema: str, *, busy_timeout_s: float = 10.0, what: str = "database"
    ) -> None:
        self.path = Path(path).resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.what = what
        self._busy_s = busy_timeout_s
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        statements = [s for s in schema.split(";") if s.strip()]
        self.write(lambda c: [c.execute(s) for s in statements])

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path, timeout=self._busy_s, isolation_level=None, check_same_thread=False
                )
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_s * 1000)}")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error as exc:
                raise CloudError(f"cannot open {self.what} {self.path}: {exc}") from exc
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def write(self, fn: Callable[[sqlite3.Connection], T], attempts: int = 20) -> T:
        """Run ``fn(conn)`` inside BEGIN IMMEDIATE ... COMMIT, retrying when the database is busy."""
        conn = self.conn()
        for attempt in range(1, attempts + 1):
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                    conn.execute("COMMIT")
                    return result
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise CloudError(f"{self.what} {self.path}: {exc}") from exc
                if attempt == attempts:
                    raise TransientError(f"{self.what} {self.path} stayed locked: {exc}") from exc
                time.sleep(min(1.0, 0.01 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        try:
            return self.conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise CloudError(f"{self.what} {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()
