"""Leases and run records in the documents port.

A lease per task id (``dag_leases/<id>``) makes sure two runners never run the same task at once: it
is taken in a transaction, renewed while the task runs, released when it ends, and expires on its
own if the runner dies. Run records (``dag_runs/<run>`` and ``dag_runs/<run>/tasks/<id>``) keep each
task's start, end, attempts, state and error for ``backbeat dag status``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

LEASES = "dag_leases"
RUNS = "dag_runs"


def doc_id(task_id: str) -> str:
    """A document id for a task id: URL-quoted (no '/'), hashed when too long for Firestore."""
    text = quote(task_id, safe="()=,-_.")
    if len(text) > 400 or text in (".", ".."):
        family = quote(task_id.split("(", 1)[0], safe="")[:100]
        text = f"{family}~{hashlib.sha1(task_id.encode()).hexdigest()}"
    return text


class LeaseManager:
    """Take, renew and release per-task leases for one runner (``owner``)."""

    def __init__(self, documents: Any, owner: str, ttl: float = 300.0) -> None:
        self.documents = documents
        self.owner = owner
        self.ttl = float(ttl)
        self.held: set[str] = set()

    def acquire(self, task_id: str) -> tuple[bool, dict[str, Any] | None]:
        """(True, None) when taken; (False, holder's lease document) when another runner holds it."""
        path = f"{LEASES}/{doc_id(task_id)}"
        owner, ttl = self.owner, self.ttl

        def tx(t: Any) -> tuple[bool, dict[str, Any] | None]:
            now = time.time()
            doc = t.get(path)
            if doc and doc.get("owner") != owner and float(doc.get("expires_at", 0)) > now:
                return False, doc
            t.set(path, {"owner": owner, "task_id": task_id, "acquired_at": now, "expires_at": now + ttl})
            return True, None

        taken, holder = self.documents.transaction(tx)
        if taken:
            self.held.add(task_id)
        return taken, holder

    def renew(self, task_ids: Iterable[str] | None = None) -> None:
        for task_id in list(task_ids if task_ids is not None else self.held):
            path = f"{LEASES}/{doc_id(task_id)}"
            owner = self.owner

            def tx(t: Any, path: str = path, owner: str = owner) -> None:
                doc = t.get(path)
                if doc and doc.get("owner") == owner:
                    t.update(path, {"expires_at": time.time() + self.ttl})

            self.documents.transaction(tx)

    def release(self, task_id: str) -> None:
        path = f"{LEASES}/{doc_id(task_id)}"
        owner = self.owner

        def tx(t: Any) -> None:
            doc = t.get(path)
            if doc and doc.get("owner") == owner:
                t.delete(path)

        self.documents.transaction(tx)
        self.held.discard(task_id)

    def release_all(self) -> None:
        for task_id in list(self.held):
            self.release(task_id)


class RunRecorder:
    """Writes the run document and one document per task that ran, failed or was skipped."""

    def __init__(self, documents: Any, run_id: str) -> None:
        self.documents = documents
        self.run_id = run_id
        self.path = f"{RUNS}/{run_id}"

    def start(self, roots: list[str], owner: str, started: float) -> None:
        self.documents.set(
            self.path,
            {
                "run_id": self.run_id,
                "roots": roots[:50],
                "owner": owner,
                "started": started,
                "state": "running",
            },
        )

    def task(self, task_id: str, family: str, record: dict[str, Any]) -> None:
        self.documents.set(
            f"{self.path}/tasks/{doc_id(task_id)}", {"task_id": task_id, "family": family, **record}
        )

    def finish(self, summary: dict[str, Any]) -> None:
        self.documents.update(
            self.path,
            {
                "state": "ok" if summary["ok"] else "failed",
                "ended": summary["ended"],
                "seconds": summary["seconds"],
                "counts": summary["counts"],
                "failed": summary["failed"][:100],
            },
        )


def recent_runs(documents: Any, limit: int = 10) -> list[dict[str, Any]]:
    return [d for _, d in documents.query(RUNS, order_by="started", descending=True, limit=limit)]


def run_tasks(documents: Any, run_id: str) -> list[dict[str, Any]]:
    return [d for _, d in documents.query(f"{RUNS}/{run_id}/tasks")]
