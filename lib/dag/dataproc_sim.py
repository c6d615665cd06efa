"""An in-memory Dataproc that keeps the service's semantics, for tests and the demo.

* ``submit_job``: the job must name an existing cluster (or cluster labels matching one), exactly
  one job type, and a job id of letters, digits, '-' or '_' (at most 100). It returns the job in
  PENDING. The same ``request_id`` again returns the same job; another submission of an existing
  job id raises AlreadyExists.
* ``get_job``: each call advances a job one step PENDING -> RUNNING -> ... -> DONE (or ERROR when
  a failure rule matches); ``steps`` sets how many polls a job stays RUNNING.
* ``create_batch``/``get_batch``: the same for Serverless batches (PENDING -> RUNNING ->
  SUCCEEDED/FAILED); batch ids must match ``[a-z][a-z0-9-]{2,61}[a-z0-9]``.
* ``on_done(job)`` runs when a job or batch succeeds: tests use it to play the job's output.

With ``strict=True`` every request is also parsed by ``google.cloud.dataproc_v1`` (Job/Batch), so
a field the real API does not know fails here too.
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from backbeat.cloud.ports import AlreadyExists, CloudError, NotFound

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
BATCH_ID = re.compile(r"^[a-z][a-z0-9-]{2,61}[a-z0-9]$")
REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
JOB_TYPES = (
    "hadoop_job",
    "spark_job",
    "pyspark_job",
    "hive_job",
    "pig_job",
    "spark_r_job",
    "spark_sql_job",
    "presto_job",
    "trino_job",
    "flink_job",
)
BATCH_TYPES = ("pyspark_batch", "spark_batch", "spark_r_batch", "spark_sql_batch")


class InvalidArgument(CloudError):
    """The request is malformed (what the API answers with 400 INVALID_ARGUMENT)."""


class DataprocSimulation:
    def __init__(self, steps: int = 1, strict: bool = True) -> None:
        self.steps = steps
        self.strict = strict
        self.clusters: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.jobs: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.batches: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: dict[str, tuple[str, str, str]] = {}
        self.submissions: list[dict[str, Any]] = []
        self.fail_rules: list[Callable[[Mapping[str, Any]], bool]] = []
        self.on_done: Callable[[dict[str, Any]], None] | None = None
        self._polls: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ clusters
    def create_cluster(self, project: str, region: str, cluster: Mapping[str, Any]) -> dict[str, Any]:
        name = cluster.get("cluster_name") or ""
        key = (project, region, name)
        with self._lock:
            if key in self.clusters:
                raise AlreadyExists(f"cluster projects/{project}/regions/{region}/clusters/{name}")
            body = {**copy.deepcopy(dict(cluster)), "project_id": project, "status": {"state": "RUNNING"}}
            self.clusters[key] = body
            return copy.deepcopy(body)

    def get_cluster(self, project: str, region: str, name: str) -> dict[str, Any]:
        try:
            return copy.deepcopy(self.clusters[(project, region, name)])
        except KeyError:
            raise NotFound(f"cluster projects/{project}/regions/{region}/clusters/{name}") from None

    def delete_cluster(self, project: str, region: str, name: str) -> dict[str, Any]:
        with self._lock:
            if self.clusters.pop((project, region, name), None) is None:
                raise NotFound(f"cluster projects/{project}/regions/{region}/clusters/{name}")
        return {"done": True}

    def list_clusters(self, project: str, region: str, filter: str = "") -> list[dict[str, Any]]:
        return [
            copy.deepcopy(c) for (p, r, _), c in sorted(self.clusters.items()) if p == project and r == region
        ]

    # ------------------------------------------------------------------ jobs
    def fail_when(self, rule: Callable[[Mapping[str, Any]], bool]) -> None:
        """Jobs/batches for which ``rule(request)`` is true end in ERROR/FAILED."""
        self.fail_rules.append(rule)

    def _check_strict(self, kind: str, body: Mapping[str, Any]) -> None:
        if not self.strict:
            return
        from google.cloud import dataproc_v1

        try:
            (dataproc_v1.Job if kind == "job" else dataproc_v1.Batch)(dict(body))
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidArgument(f"{kind} request rejected by dataproc_v1: {exc}") from None

    def submit_job(
        self, project: str, region: str, job: Mapping[str, Any], request_id: str
    ) -> dict[str, Any]:
        self._check_strict("job", job)
        if not REQUEST_ID.match(request_id or ""):
            raise InvalidArgument(f"request_id {request_id!r}: at most 40 of [A-Za-z0-9_-]")
        job_id = (job.get("reference") or {}).get("job_id", "")
        if not JOB_ID.match(job_id):
            raise InvalidArgument(f"job id {job_id!r}: at most 100 of [A-Za-z0-9_-]")
        types = [t for t in JOB_TYPES if t in job]
        if len(types) != 1:
            raise InvalidArgument(f"job {job_id}: exactly one job type expected, got {types}")
        placement = job.get("placement") or {}
        cluster = self._place(project, region, placement, job_id)
        key = (project, region, job_id)
        with self._lock:
            if request_id in self.requests:
                return copy.deepcopy(self.jobs[self.requests[request_id]])
            if key in self.jobs:
                raise AlreadyExists(f"job projects/{project}/regions/{region}/jobs/{job_id}")
            body = copy.deepcopy(dict(job))
            body["placement"] = {**placement, "cluster_name": cluster}
            body["status"] = {"state": "PENDING", "details": ""}
            body["_fails"] = any(rule(job) for rule in self.fail_rules)
            self.jobs[key] = body
            self.requests[request_id] = key
            self.submissions.append(copy.deepcopy(dict(job)))
            return self._public(body)

    def _place(self, project: str, region: str, placement: Mapping[str, Any], job_id: str) -> str:
        if placement.get("cluster_name"):
            name = placement["cluster_name"]
            if (project, region, name) not in self.clusters:
                raise NotFound(f"job {job_id}: cluster {name} not found in {project}/{region}")
            return name
        labels = placement.get("cluster_labels") or {}
        for (p, r, name), cluster in sorted(self.clusters.items()):
            have = cluster.get("labels") or {}
            if p == project and r == region and labels and all(have.get(k) == v for k, v in labels.items()):
                return name
        raise NotFound(f"job {job_id}: no cluster in {project}/{region} matches labels {dict(labels)}")

    @staticmethod
    def _public(body: Mapping[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in body.items() if not k.startswith("_")}

    def _advance(
        self,
        key: tuple[str, str, str],
        body: dict[str, Any],
        field: str,
        running: str,
        done: str,
        failed: str,
    ) -> None:
        state = body[field]["state"] if field == "status" else body["state"]
        if state in (done, failed, "CANCELLED"):
            return
        polls = self._polls.get(key, 0) + 1
        self._polls[key] = polls
        if polls <= self.steps:
            new = running
        else:
            new = failed if body.get("_fails") else done
        if field == "status":
            body["status"] = {"state": new, "details": "simulated failure" if new == failed else ""}
        else:
            body["state"] = new
            body["state_message"] = "simulated failure" if new == failed else ""
        if new == done and self.on_done is not None:
            self.on_done(self._public(body))

    def get_job(self, project: str, region: str, job_id: str) -> dict[str, Any]:
        key = (project, region, job_id)
        with self._lock:
            body = self.jobs.get(key)
            if body is None:
                raise NotFound(f"job projects/{project}/regions/{region}/jobs/{job_id}")
            self._advance(key, body, "status", "RUNNING", "DONE", "ERROR")
            return self._public(body)

    # ------------------------------------------------------------------ serverless batches
    def create_batch(
        self, project: str, region: str, batch: Mapping[str, Any], batch_id: str, request_id: str = ""
    ) -> dict[str, Any]:
        self._check_strict("batch", batch)
        if not BATCH_ID.match(batch_id or ""):
            raise InvalidArgument(f"batch id {batch_id!r} must match {BATCH_ID.pattern}")
        types = [t for t in BATCH_TYPES if t in batch]
        if len(types) != 1:
            raise InvalidArgument(f"batch {batch_id}: exactly one batch type expected, got {types}")
        key = (project, region, batch_id)
        with self._lock:
            if request_id and request_id in self.requests:
                return self._public(self.batches[self.requests[request_id]])
            if key in self.batches:
                raise AlreadyExists(f"batch projects/{project}/locations/{region}/batches/{batch_id}")
            body = copy.deepcopy(dict(batch))
            body["name"] = f"projects/{project}/locations/{region}/batches/{batch_id}"
            body["state"] = "PENDING"
            body["_fails"] = any(rule(batch) for rule in self.fail_rules)
            self.batches[key] = body
            if request_id:
                self.requests[request_id] = key
            self.submissions.append(copy.deepcopy(dict(batch)))
            return self._public(body)

    def get_batch(self, project: str, region: str, batch_id: str) -> dict[str, Any]:
        key = (project, region, batch_id)
        with self._lock:
            body = self.batches.get(key)
            if body is None:
                raise NotFound(f"batch projects/{project}/locations/{region}/batches/{batch_id}")
            self._advance(key, body, "state", "RUNNING", "SUCCEEDED", "FAILED")
            return self._public(body)
