"""What the Dataproc and BigQuery templates share: deterministic job ids and job records.

A job id is derived from the task id and a job number, so resubmitting after a crash names the
same job (the service answers AlreadyExists and the task resumes polling it) while a retry after
a failed job gets a new id. The job number is ``max(scheduler attempt, failed jobs + 1)``; the
count of failed jobs lives in ``dag_jobs/<task>`` in the documents port when a platform is set.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

from backbeat.dag import context
from backbeat.dag.records import doc_id

JOBS = "dag_jobs"
_NOT_ID = re.compile(r"[^a-z0-9-]+")


def family_slug(family: str, size: int) -> str:
    slug = _NOT_ID.sub("-", family.lower()).strip("-") or "task"
    return slug[:size].rstrip("-")


def task_hash(task_id: str, size: int = 12) -> str:
    return hashlib.sha1(task_id.encode()).hexdigest()[:size]


def job_number(task: Any) -> int:
    attempt = int(getattr(task, "attempt", 1) or 1)
    docs = context.documents_or_none()
    if docs is None:
        return attempt
    rec = docs.get(f"{JOBS}/{doc_id(task.task_id)}") or {}
    return max(attempt, int(rec.get("failed_jobs", 0)) + 1)


def record_job(task: Any, job_id: str, state: str, failed: bool = False) -> None:
    docs = context.documents_or_none()
    if docs is None:
        return
    path = f"{JOBS}/{doc_id(task.task_id)}"

    def tx(t: Any) -> None:
        rec = t.get(path) or {"task_id": task.task_id, "failed_jobs": 0}
        rec.update({"job_id": job_id, "state": state, "updated": time.time()})
        if failed and rec.get("last_failed") != job_id:
            rec["failed_jobs"] = int(rec.get("failed_jobs", 0)) + 1
            rec["last_failed"] = job_id
        t.set(path, rec)

    docs.transaction(tx)


def labels_for(task: Any) -> dict[str, str]:
    """Labels on every job: GCP label rules (lowercase, digits, -, _; at most 63 characters)."""
    return {
        "backbeat-task": family_slug(task.task_family, 63),
        "backbeat-task-hash": task_hash(task.task_id, 16),
    }
