"""BigQuery templates: partition targets, load and query jobs with deterministic job ids.

No BigQuery emulator exists, so the port is small and the requests are plain REST ``Job``
resources (``jobReference``/``configuration``) that tests check field by field. The client is
any object with ``insert_job(project, job) -> job`` (AlreadyExists for an existing job id),
``get_job(project, job_id, location) -> job`` and ``list_partitions(table) -> [partition ids]``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Protocol

from backbeat.dag import context, jobs
from backbeat.dag.errors import DagError, JobFailed
from backbeat.dag.runner import Poll
from backbeat.dag.targets import Target
from backbeat.dag.task import Task


class BigQueryJobs(Protocol):
    def insert_job(self, project: str, job: Mapping[str, Any]) -> dict[str, Any]: ...

    def get_job(self, project: str, job_id: str, location: str | None = None) -> dict[str, Any]: ...

    def list_partitions(self, table: str) -> list[str]: ...


def partition_id(value: dt.date | dt.datetime | str) -> str:
    """BigQuery's partition id: ``YYYYMMDD`` for a day, ``YYYYMMDDHH`` for an hour (UTC)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.strftime("%Y%m%d%H")
    return value.strftime("%Y%m%d")


def _split_table(table: str) -> tuple[str, str, str]:
    parts = table.replace(":", ".").split(".")
    if len(parts) != 3 or not all(parts):
        raise DagError(f"table {table!r} must be project.dataset.table")
    return parts[0], parts[1], parts[2]


def _client(task_or_target: Any) -> Any:
    client = getattr(task_or_target, "bigquery", None)
    return client if client is not None else context.current_client("bigquery")


class BigQueryPartitionTarget(Target):
    """One partition of a partitioned table; exists when the table lists that partition id."""

    def __init__(self, table: str, partition: dt.date | dt.datetime | str, client: Any = None) -> None:
        _split_table(table)
        self.table = table
        self.partition = partition_id(partition)
        self.bigquery = client

    def exists(self) -> bool:
        return self.partition in set(_client(self).list_partitions(self.table))

    def destination(self) -> dict[str, str]:
        project, dataset, table = _split_table(self.table)
        return {"projectId": project, "datasetId": dataset, "tableId": f"{table}${self.partition}"}

    def __repr__(self) -> str:
        return f"BigQueryPartitionTarget({self.table}${self.partition})"


class _BigQueryJobTask(Task):
    gcp_project: str | None = None
    location: str = "EU"
    poll_interval: float = 5.0
    bigquery: Any = None
    write_disposition: str = "WRITE_TRUNCATE"

    def project_id(self) -> str:
        return self.gcp_project or context.current_settings().project

    def job_id(self, number: int) -> str:
        family = jobs.family_slug(self.task_family, 60).replace("-", "_")
        return f"backbeat_{family}_{jobs.task_hash(self.task_id, 20)}_{number}"

    def configuration(self) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def job_request(self, number: int) -> dict[str, Any]:
        return {
            "jobReference": {
                "projectId": self.project_id(),
                "jobId": self.job_id(number),
                "location": self.location,
            },
            "configuration": {**self.configuration(), "labels": jobs.labels_for(self)},
        }

    def run(self) -> None:
        from backbeat.cloud.ports import AlreadyExists

        number = jobs.job_number(self)
        client, project = _client(self), self.project_id()
        job_id = self.job_id(number)
        try:
            job = client.insert_job(project, self.job_request(number))
            jobs.record_job(self, job_id, "SUBMITTED")
        except AlreadyExists:
            job = client.get_job(project, job_id, self.location)
        status = job.get("status") or {}
        if status.get("state") != "DONE":
            job = client.get_job(project, job_id, self.location)
            status = job.get("status") or {}
        if status.get("state") == "DONE":
            error = status.get("errorResult")
            if error:
                jobs.record_job(self, job_id, "ERROR", failed=True)
                raise JobFailed(
                    f"BigQuery job {job_id} ({self.task_id}) failed: {error.get('message', error)}"
                )
            jobs.record_job(self, job_id, "DONE")
            return
        raise Poll(self.poll_interval, f"BigQuery job {job_id} {status.get('state', 'PENDING')}")


class BigQueryLoadTask(_BigQueryJobTask):
    """Load files (Avro by default) into one partition. ``output()`` must be the partition target."""

    source_format: str = "AVRO"
    use_avro_logical_types: bool = True
    time_partitioning: dict[str, Any] | None = None
    schema: list[dict[str, Any]] | None = None

    def source_uris(self) -> list[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def configuration(self) -> dict[str, Any]:
        target = self.output()
        if not isinstance(target, BigQueryPartitionTarget):
            raise DagError(f"{self.task_id}: output() must be a BigQueryPartitionTarget")
        uris = list(self.source_uris())
        if not uris:
            raise DagError(f"{self.task_id}: no source URIs to load")
        load: dict[str, Any] = {
            "sourceUris": uris,
            "destinationTable": target.destination(),
            "sourceFormat": self.source_format,
            "writeDisposition": self.write_disposition,
            "createDisposition": "CREATE_IF_NEEDED",
        }
        if self.source_format == "AVRO":
            load["useAvroLogicalTypes"] = self.use_avro_logical_types
        if self.time_partitioning:
            load["timePartitioning"] = dict(self.time_partitioning)
        if self.schema:
            load["schema"] = {"fields": list(self.schema)}
        return {"load": load}


class BigQueryQueryTask(_BigQueryJobTask):
    """Run a standard-SQL query into one partition (``output()``: the partition target)."""

    def query(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def query_parameters(self) -> list[dict[str, Any]]:
        return []

    def configuration(self) -> dict[str, Any]:
        target = self.output()
        if not isinstance(target, BigQueryPartitionTarget):
            raise DagError(f"{self.task_id}: output() must be a BigQueryPartitionTarget")
        query: dict[str, Any] = {
            "query": self.query(),
            "useLegacySql": False,
            "destinationTable": target.destination(),
            "writeDisposition": self.write_disposition,
            "createDisposition": "CREATE_IF_NEEDED",
        }
        params = self.query_parameters()
        if params:
            query["parameterMode"] = "NAMED"
            query["queryParameters"] = params
        return {"query": query}
