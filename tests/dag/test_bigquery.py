"""BigQuery load/query templates: the requests (no emulator exists) and the job life cycle."""

from __future__ import annotations

import copy
import datetime as dt
import re

import pytest

import backbeat.dag as dag
from backbeat.cloud.ports import AlreadyExists, NotFound
from backbeat.dag import context
from backbeat.dag.bigquery import BigQueryLoadTask, BigQueryPartitionTarget, BigQueryQueryTask


class FakeBigQuery:
    """Keeps the jobs API semantics that matter: job ids are unique (409 on reuse), a job is RUNNING
    then DONE, and a finished load/query makes its destination partition exist."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict] = {}
        self.inserted: list[dict] = []
        self.partitions: dict[str, set[str]] = {}

    def insert_job(self, project, job):
        job_id = job["jobReference"]["jobId"]
        if job_id in self.jobs:
            raise AlreadyExists(f"job {project}:{job_id}")
        body = copy.deepcopy(job)
        body["status"] = {"state": "RUNNING"}
        self.jobs[job_id] = body
        self.inserted.append(copy.deepcopy(job))
        return copy.deepcopy(body)

    def get_job(self, project, job_id, location=None):
        if job_id not in self.jobs:
            raise NotFound(job_id)
        body = self.jobs[job_id]
        if body["status"]["state"] != "DONE":
            body["status"] = {"state": "DONE"}
            conf = body["configuration"].get("load") or body["configuration"].get("query")
            dest = conf["destinationTable"]
            table, _, part = dest["tableId"].partition("$")
            self.partitions.setdefault(f"{dest['projectId']}.{dest['datasetId']}.{table}", set()).add(part)
        return copy.deepcopy(body)

    def list_partitions(self, table):
        return sorted(self.partitions.get(table, set()))


@pytest.fixture()
def bq():
    fake = FakeBigQuery()
    context.use_client("bigquery", fake)
    return fake


class LoadPlays(BigQueryLoadTask):
    hour = dag.DateHourParameter()
    gcp_project = "proj-1"
    poll_interval = 0.01
    time_partitioning = {"type": "HOUR"}

    def source_uris(self):
        return [f"gs://backbeat-events/final/play/dt={self.hour:%Y-%m-%d}/hour={self.hour:%H}/*.avro"]

    def output(self):
        return BigQueryPartitionTarget("proj-1.events.plays", self.hour)


class DailyTop(BigQueryQueryTask):
    day = dag.DateParameter()
    gcp_project = "proj-1"
    poll_interval = 0.01

    def requires(self):
        return [LoadPlays(hour=dt.datetime(2026, 1, 1, h)) for h in range(2)]

    def query(self):
        return (
            "SELECT track_id, COUNT(*) n FROM `proj-1.events.plays` WHERE DATE(received_at) = @day GROUP BY 1"
        )

    def query_parameters(self):
        return [
            {"name": "day", "parameterType": {"type": "DATE"}, "parameterValue": {"value": str(self.day)}}
        ]

    def output(self):
        return BigQueryPartitionTarget("proj-1.derived.daily_top", self.day)


def test_load_and_query_requests(bq) -> None:
    summary = dag.build([DailyTop(day="2026-01-01")])
    assert summary.ok, summary.to_json()
    loads = [j for j in bq.inserted if "load" in j["configuration"]]
    queries = [j for j in bq.inserted if "query" in j["configuration"]]
    assert len(loads) == 2 and len(queries) == 1
    load = sorted(loads, key=lambda j: j["configuration"]["load"]["destinationTable"]["tableId"])[0]
    conf = load["configuration"]["load"]
    assert conf["destinationTable"] == {
        "projectId": "proj-1",
        "datasetId": "events",
        "tableId": "plays$2026010100",
    }
    assert conf["sourceUris"] == ["gs://backbeat-events/final/play/dt=2026-01-01/hour=00/*.avro"]
    assert conf["sourceFormat"] == "AVRO" and conf["useAvroLogicalTypes"] is True
    assert conf["writeDisposition"] == "WRITE_TRUNCATE" and conf["timePartitioning"] == {"type": "HOUR"}
    ref = load["jobReference"]
    assert ref["projectId"] == "proj-1" and ref["location"] == "EU"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,1024}", ref["jobId"])
    q = queries[0]["configuration"]["query"]
    assert q["useLegacySql"] is False and q["destinationTable"]["tableId"] == "daily_top$20260101"
    assert q["parameterMode"] == "NAMED" and q["queryParameters"][0]["parameterValue"] == {
        "value": "2026-01-01"
    }
    # job ids are deterministic: the same task derives the same id, attempt by attempt
    t = LoadPlays(hour=dt.datetime(2026, 1, 1, 0))
    assert t.job_id(1) == LoadPlays(hour="2026-01-01T00").job_id(1) == ref["jobId"]
    assert t.job_id(2) != t.job_id(1)
    # done partitions make the tasks complete: a rerun inserts nothing
    assert dag.build([DailyTop(day="2026-01-01")]).counts == {"complete": 1}
    assert len(bq.inserted) == 3


def test_repeat_insert_of_the_same_job_id_resumes(bq) -> None:
    t = LoadPlays(hour=dt.datetime(2026, 1, 2, 5))
    bq.insert_job("proj-1", t.job_request(1))  # inserted by a runner that died
    assert dag.build([t]).ok
    assert len(bq.inserted) == 1


def test_partition_target_validates_table_names() -> None:
    with pytest.raises(dag.DagError, match="project.dataset.table"):
        BigQueryPartitionTarget("just_a_table", "20260101")
