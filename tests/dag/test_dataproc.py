"""Dataproc templates against the in-memory simulation (lib/dag/dataproc_sim.py), whose requests
are also parsed by the real google.cloud.dataproc_v1 types (strict mode)."""

from __future__ import annotations

import pytest

import backbeat.dag as dag
from backbeat.dag import context
from backbeat.dag.dataproc import (
    HadoopTask,
    HiveTask,
    PigTask,
    PySparkBatchTask,
    PySparkTask,
    SparkSqlTask,
    SparkTask,
)
from backbeat.dag.dataproc_sim import DataprocSimulation, InvalidArgument

PROJECT, REGION = "proj-1", "europe-west1"


@pytest.fixture()
def sim():
    s = DataprocSimulation(steps=2)
    s.create_cluster(PROJECT, REGION, {"cluster_name": "etl", "labels": {"pool": "etl"}})
    context.use_client("dataproc", s)
    return s


class Aggregate(PySparkTask):
    day = dag.DateParameter()
    gcp_project = PROJECT
    region = REGION
    cluster_name = "etl"
    main_python_file_uri = "gs://code/aggregate.py"
    poll_interval = 0.01
    done_jobs: list[str] = []

    def job_args(self):
        return ["--day", str(self.day)]

    def output(self):
        return dag.GCSTarget(f"gs://derived/aggregate/{self.day}/_DONE")

    def on_job_done(self, job):
        Aggregate.done_jobs.append(job["reference"]["job_id"])
        self.output().put_bytes(job["reference"]["job_id"].encode())


def test_pyspark_job_request_submit_and_poll(sim, platform) -> None:
    Aggregate.done_jobs = []
    task = Aggregate(day="2026-01-03")
    summary = dag.build([task])
    assert summary.ok, summary.to_json()
    assert len(sim.submissions) == 1
    job = sim.submissions[0]
    job_id = job["reference"]["job_id"]
    assert job_id == task.job_id(1) and job_id.startswith("aggregate-") and job_id.endswith("-1")
    assert job["reference"]["project_id"] == PROJECT
    assert job["placement"] == {"cluster_name": "etl"}
    assert job["pyspark_job"] == {
        "main_python_file_uri": "gs://code/aggregate.py",
        "args": ["--day", "2026-01-03"],
    }
    assert job["labels"]["backbeat-task"] == "aggregate"
    assert Aggregate.done_jobs == [job_id]
    assert summary.tasks[task.task_id]["attempts"] == 1
    # the same task always derives the same job id
    assert Aggregate(day="2026-01-03").job_id(1) == job_id != Aggregate(day="2026-01-04").job_id(1)
    # rerun: complete, nothing submitted
    assert dag.build([task]).counts == {"complete": 1} and len(sim.submissions) == 1


def test_resubmission_after_a_crash_resumes_the_same_job(sim, platform) -> None:
    Aggregate.done_jobs = []
    task = Aggregate(day="2026-01-05")
    # a previous runner submitted the job and died
    sim.submit_job(PROJECT, REGION, task.job_request(1), request_id="other-runner")
    summary = dag.build([task])
    assert summary.ok
    assert len(sim.submissions) == 1  # AlreadyExists: resumed, not resubmitted
    assert Aggregate.done_jobs == [task.job_id(1)]


class RetriedJob(Aggregate):
    def is_transient(self, exc):
        return isinstance(exc, dag.JobFailed) or None


def test_failed_job_is_retried_under_a_new_job_id(sim, platform) -> None:
    Aggregate.done_jobs = []
    sim.fail_when(lambda job: job["reference"]["job_id"].endswith("-1"))
    task = RetriedJob(day="2026-01-06")
    task.retry_delay = 0.01
    summary = dag.build([task])
    assert summary.ok, summary.to_json()
    ids = [j["reference"]["job_id"] for j in sim.submissions]
    assert ids == [task.job_id(1), task.job_id(2)]
    assert summary.tasks[task.task_id]["attempts"] == 2


def test_failed_job_fails_the_task_and_the_next_run_uses_a_new_id(sim, platform) -> None:
    sim.fail_when(lambda job: job["reference"]["job_id"].endswith("-1"))
    task = Aggregate(day="2026-01-07")
    first = dag.build([task])
    assert not first.ok
    assert (
        "JobFailed" in first.to_dict()["errors"][task.task_id]
        and task.job_id(1) in first.to_dict()["errors"][task.task_id]
    )
    second = dag.build([task])  # the failure was recorded in the documents port
    assert second.ok
    assert [j["reference"]["job_id"] for j in sim.submissions] == [task.job_id(1), task.job_id(2)]


class Slow(Aggregate):
    resources = {"dataproc": 1}


def test_polling_frees_the_worker_so_one_worker_drives_two_jobs(sim, platform) -> None:
    sim.steps = 6
    in_flight: list[int] = []
    original = sim.get_job

    def spy(project, region, job_id):
        job = original(project, region, job_id)
        in_flight.append(sum(1 for j in sim.jobs.values() if j["status"]["state"] in ("PENDING", "RUNNING")))
        return job

    sim.get_job = spy
    root = [Slow(day="2026-02-01"), Slow(day="2026-02-02")]
    summary = dag.build(root, workers=1, resources={"dataproc": 2})
    assert summary.ok
    assert max(in_flight) == 2  # both jobs ran at once on a single worker
    sim.jobs.clear()
    sim.requests.clear()
    in_flight.clear()
    root = [Slow(day="2026-02-03"), Slow(day="2026-02-04")]
    assert dag.build(root, workers=2, resources={"dataproc": 1}).ok
    assert max(in_flight) == 1  # the cap holds while jobs are polled


class Spark(SparkTask):
    gcp_project, region, cluster_name, poll_interval = PROJECT, REGION, "etl", 0.01
    main_class = "com.example.Main"

    def job_args(self):
        return ["a"]


class Hadoop(HadoopTask):
    gcp_project, region, cluster_labels, poll_interval = PROJECT, REGION, {"pool": "etl"}, 0.01
    main_jar_file_uri = "file:///usr/lib/hadoop-mapreduce/hadoop-streaming.jar"

    def job_args(self):
        return ["-mapper", "mapper.py", "-reducer", "reducer.py", "-input", "gs://in", "-output", "gs://out"]


class Hive(HiveTask):
    gcp_project, region, cluster_name, poll_interval = PROJECT, REGION, "etl", 0.01

    def queries(self):
        return ["ALTER TABLE plays ADD IF NOT EXISTS PARTITION (dt='2026-01-01')"]


class Pig(PigTask):
    gcp_project, region, cluster_name, poll_interval = PROJECT, REGION, "etl", 0.01
    query_file_uri = "gs://code/job.pig"


class SparkSql(SparkSqlTask):
    gcp_project, region, cluster_name, poll_interval = PROJECT, REGION, "etl", 0.01

    def queries(self):
        return ["SELECT 1"]

    def script_variables(self):
        return {"day": "2026-01-01"}


class Batch(PySparkBatchTask):
    gcp_project, region, poll_interval = PROJECT, REGION, 0.01
    main_python_file_uri = "gs://code/batch.py"
    runtime_version = "2.2"
    service_account = "etl@proj-1.iam.gserviceaccount.com"


@pytest.mark.parametrize(
    ("cls", "key"),
    [
        (Spark, "spark_job"),
        (Hadoop, "hadoop_job"),
        (Hive, "hive_job"),
        (Pig, "pig_job"),
        (SparkSql, "spark_sql_job"),
    ],
)
def test_every_job_type_builds_a_request_the_api_accepts(sim, cls, key) -> None:
    summary = dag.build([cls()])
    assert summary.ok, summary.to_json()
    (job,) = sim.submissions
    assert key in job
    from google.cloud import dataproc_v1

    parsed = dataproc_v1.Job(job)
    assert parsed.reference.job_id == cls().job_id(1)


def test_serverless_batch(sim) -> None:
    summary = dag.build([Batch()])
    assert summary.ok, summary.to_json()
    (batch,) = sim.submissions
    assert batch["pyspark_batch"]["main_python_file_uri"] == "gs://code/batch.py"
    assert batch["runtime_config"] == {"version": "2.2"}
    assert batch["environment_config"]["execution_config"]["service_account"].startswith("etl@")
    assert list(sim.batches)[0][2] == Batch().batch_id(1)


def test_simulation_rejects_what_the_api_rejects(sim) -> None:
    job = Spark().job_request(1)
    job["spark_job"]["no_such_field"] = 1
    with pytest.raises(InvalidArgument):
        sim.submit_job(PROJECT, REGION, job, request_id="r1")
    bad_place = Spark().job_request(1)
    bad_place["placement"] = {"cluster_name": "nope"}
    from backbeat.cloud.ports import NotFound

    with pytest.raises(NotFound, match="nope"):
        sim.submit_job(PROJECT, REGION, bad_place, request_id="r2")
    with pytest.raises(InvalidArgument, match="batch id"):
        sim.create_batch(PROJECT, REGION, Batch().batch_request(), batch_id="Bad_Id")
