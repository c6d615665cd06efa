"""Dataproc job templates: PySpark, Spark, Hive, Pig, Hadoop, Spark SQL jobs on a cluster, and
Serverless batches, submitted through the ``Dataproc`` port without blocking a worker.

``run()`` submits the job with an id derived from the task id and the job number (see
``backbeat.dag.jobs``), records it, and raises ``Poll`` while the job is pending or running; the
scheduler calls it again later (the worker is free meanwhile; resources and lease stay held). A
resubmission of the same id meets AlreadyExists and resumes the existing job. DONE finishes the
task (``on_job_done`` may write a marker); ERROR/CANCELLED raise JobFailed, and a retry gets a new
job id. Requests use the field names of ``google.cloud.dataproc_v1`` (snake_case).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backbeat.dag import context, jobs
from backbeat.dag.errors import DagError, JobFailed
from backbeat.dag.runner import Poll
from backbeat.dag.task import Task

RUNNING_STATES = {"PENDING", "SETUP_DONE", "RUNNING", "CANCEL_PENDING", "CANCEL_STARTED", "STATE_UNSPECIFIED"}
FAILED_STATES = {"ERROR", "CANCELLED", "ATTEMPT_FAILURE"}
BATCH_RUNNING = {"PENDING", "RUNNING", "CANCELLING", "STATE_UNSPECIFIED"}
BATCH_FAILED = {"FAILED", "CANCELLED"}


def _state(obj: Mapping[str, Any], *path: str) -> str:
    value: Any = obj
    for key in path:
        value = (value or {}).get(key) if isinstance(value, Mapping) else getattr(value, key, None)
    name = getattr(value, "name", value)
    return str(name or "STATE_UNSPECIFIED")


class _DataprocBase(Task):
    """Shared knobs: ``gcp_project`` (default: settings.project), ``region``, ``poll_interval``,
    ``dataproc`` (the port; default: ``context.use_client("dataproc", ...)``)."""

    gcp_project: str | None = None
    region: str = "europe-west1"
    poll_interval: float = 15.0
    dataproc: Any = None
    resources = {"dataproc": 1}

    def project_id(self) -> str:
        return self.gcp_project or context.current_settings().project

    def client(self) -> Any:
        return self.dataproc if self.dataproc is not None else context.current_client("dataproc")

    def on_job_done(self, job: Mapping[str, Any]) -> None:
        """Called once the job succeeded (e.g. write a marker target)."""


class DataprocJobTask(_DataprocBase):
    """A job on a cluster. Subclasses give ``job_type`` and ``job_config()``; set ``cluster_name``
    or ``cluster_labels`` (placement by labels, e.g. a pool of ephemeral clusters)."""

    job_type: str = ""
    cluster_name: str | None = None
    cluster_labels: dict[str, str] | None = None
    max_failures_per_hour: int | None = None
    properties: dict[str, str] = {}

    def job_config(self) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def job_id(self, number: int) -> str:
        """``<family>-<hash of task id>-<n>``: letters, digits, '-' only, at most 100 characters."""
        return f"{jobs.family_slug(self.task_family, 60)}-{jobs.task_hash(self.task_id)}-{number}"

    def request_id(self, number: int) -> str:
        """At most 40 characters (Dataproc's limit), unique per task and job number."""
        return f"bb-{jobs.task_hash(self.task_id, 24)}-{number}"

    def job_request(self, number: int) -> dict[str, Any]:
        if not self.job_type:
            raise DagError(f"{type(self).__name__}: set job_type")
        if self.cluster_name:
            placement: dict[str, Any] = {"cluster_name": self.cluster_name}
        elif self.cluster_labels:
            placement = {"cluster_labels": dict(self.cluster_labels)}
        else:
            raise DagError(f"{self.task_id}: set cluster_name or cluster_labels for the job's placement")
        job: dict[str, Any] = {
            "reference": {"project_id": self.project_id(), "job_id": self.job_id(number)},
            "placement": placement,
            self.job_type: self.job_config(),
            "labels": jobs.labels_for(self),
        }
        if self.max_failures_per_hour is not None:
            job["scheduling"] = {"max_failures_per_hour": int(self.max_failures_per_hour)}
        return job

    def run(self) -> None:
        from backbeat.cloud.ports import AlreadyExists

        number = jobs.job_number(self)
        client, project, region = self.client(), self.project_id(), self.region
        job_id = self.job_id(number)
        try:
            job = client.submit_job(
                project, region, self.job_request(number), request_id=self.request_id(number)
            )
            jobs.record_job(self, job_id, "SUBMITTED")
        except AlreadyExists:
            job = client.get_job(project, region, job_id)
        state = _state(job, "status", "state")
        if state in RUNNING_STATES:
            job = client.get_job(project, region, job_id)
            state = _state(job, "status", "state")
        if state == "DONE":
            jobs.record_job(self, job_id, state)
            self.on_job_done(job)
            return
        if state in FAILED_STATES:
            jobs.record_job(self, job_id, state, failed=True)
            details = _state(job, "status", "details") if isinstance(job, Mapping) else ""
            raise JobFailed(f"Dataproc job {job_id} ({self.task_id}) ended {state}: {details}")
        raise Poll(self.poll_interval, f"job {job_id} {state}")


class PySparkTask(DataprocJobTask):
    job_type = "pyspark_job"
    main_python_file_uri: str = ""
    python_file_uris: list[str] = []
    jar_file_uris: list[str] = []

    def job_args(self) -> list[str]:
        return []

    def job_config(self) -> dict[str, Any]:
        if not self.main_python_file_uri:
            raise DagError(f"{self.task_id}: set main_python_file_uri")
        cfg: dict[str, Any] = {
            "main_python_file_uri": self.main_python_file_uri,
            "args": list(self.job_args()),
        }
        if self.python_file_uris:
            cfg["python_file_uris"] = list(self.python_file_uris)
        if self.jar_file_uris:
            cfg["jar_file_uris"] = list(self.jar_file_uris)
        if self.properties:
            cfg["properties"] = dict(self.properties)
        return cfg


class SparkTask(DataprocJobTask):
    job_type = "spark_job"
    main_class: str | None = None
    main_jar_file_uri: str | None = None
    jar_file_uris: list[str] = []

    def job_args(self) -> list[str]:
        return []

    def job_config(self) -> dict[str, Any]:
        if bool(self.main_class) == bool(self.main_jar_file_uri):
            raise DagError(f"{self.task_id}: set exactly one of main_class and main_jar_file_uri")
        cfg: dict[str, Any] = {"args": list(self.job_args())}
        if self.main_class:
            cfg["main_class"] = self.main_class
        else:
            cfg["main_jar_file_uri"] = self.main_jar_file_uri
        if self.jar_file_uris:
            cfg["jar_file_uris"] = list(self.jar_file_uris)
        if self.properties:
            cfg["properties"] = dict(self.properties)
        return cfg


class HadoopTask(SparkTask):
    """A MapReduce job (e.g. Hadoop streaming: ``main_jar_file_uri`` = the streaming jar)."""

    job_type = "hadoop_job"


class _QueryJob(DataprocJobTask):
    query_file_uri: str | None = None

    def queries(self) -> list[str]:
        return []

    def script_variables(self) -> dict[str, str]:
        return {}

    def job_config(self) -> dict[str, Any]:
        queries = list(self.queries())
        if bool(queries) == bool(self.query_file_uri):
            raise DagError(f"{self.task_id}: give exactly one of queries() and query_file_uri")
        cfg: dict[str, Any] = (
            {"query_list": {"queries": queries}} if queries else {"query_file_uri": self.query_file_uri}
        )
        variables = self.script_variables()
        if variables:
            cfg["script_variables"] = {k: str(v) for k, v in variables.items()}
        if self.properties:
            cfg["properties"] = dict(self.properties)
        return cfg


class HiveTask(_QueryJob):
    job_type = "hive_job"


class PigTask(_QueryJob):
    job_type = "pig_job"


class SparkSqlTask(_QueryJob):
    job_type = "spark_sql_job"


class DataprocBatchTask(_DataprocBase):
    """A Dataproc Serverless batch. ``batch_type`` is ``pyspark_batch``, ``spark_batch`` or
    ``spark_sql_batch``; ``batch_config()`` its body. Batch ids follow the API's rule
    (``[a-z][a-z0-9-]{2,61}[a-z0-9]``)."""

    batch_type: str = "pyspark_batch"
    runtime_version: str | None = None
    service_account: str | None = None
    subnetwork_uri: str | None = None
    properties: dict[str, str] = {}

    def batch_config(self) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def batch_id(self, number: int) -> str:
        return f"bb-{jobs.family_slug(self.task_family, 40)}-{jobs.task_hash(self.task_id)}-{number}"

    def request_id(self, number: int) -> str:
        return f"bb-{jobs.task_hash(self.task_id, 24)}-{number}"

    def batch_request(self) -> dict[str, Any]:
        batch: dict[str, Any] = {self.batch_type: self.batch_config(), "labels": jobs.labels_for(self)}
        runtime: dict[str, Any] = {}
        if self.runtime_version:
            runtime["version"] = self.runtime_version
        if self.properties:
            runtime["properties"] = dict(self.properties)
        if runtime:
            batch["runtime_config"] = runtime
        execution: dict[str, Any] = {}
        if self.service_account:
            execution["service_account"] = self.service_account
        if self.subnetwork_uri:
            execution["subnetwork_uri"] = self.subnetwork_uri
        if execution:
            batch["environment_config"] = {"execution_config": execution}
        return batch

    def run(self) -> None:
        from backbeat.cloud.ports import AlreadyExists

        number = jobs.job_number(self)
        client, project, region = self.client(), self.project_id(), self.region
        batch_id = self.batch_id(number)
        try:
            batch = client.create_batch(
                project, region, self.batch_request(), batch_id=batch_id, request_id=self.request_id(number)
            )
            jobs.record_job(self, batch_id, "SUBMITTED")
        except AlreadyExists:
            batch = client.get_batch(project, region, batch_id)
        state = _state(batch, "state")
        if state in BATCH_RUNNING:
            batch = client.get_batch(project, region, batch_id)
            state = _state(batch, "state")
        if state == "SUCCEEDED":
            jobs.record_job(self, batch_id, state)
            self.on_job_done(batch)
            return
        if state in BATCH_FAILED:
            jobs.record_job(self, batch_id, state, failed=True)
            raise JobFailed(
                f"Dataproc batch {batch_id} ({self.task_id}) ended {state}: "
                f"{batch.get('state_message', '') if isinstance(batch, Mapping) else ''}"
            )
        raise Poll(self.poll_interval, f"batch {batch_id} {state}")


class PySparkBatchTask(DataprocBatchTask):
    batch_type = "pyspark_batch"
    main_python_file_uri: str = ""

    def job_args(self) -> list[str]:
        return []

    def batch_config(self) -> dict[str, Any]:
        if not self.main_python_file_uri:
            raise DagError(f"{self.task_id}: set main_python_file_uri")
        return {"main_python_file_uri": self.main_python_file_uri, "args": list(self.job_args())}
