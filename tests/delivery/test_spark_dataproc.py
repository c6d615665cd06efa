"""The Spark path submitted to a Dataproc cluster: submit -> local cluster -> parts + _SUCCESS.

The cluster is ``backbeat.cloud.local_dataproc.LocalDataproc`` (what ``connect()`` gives the
``local`` backend): the job's entry script and the ``backbeat`` zip are staged through the blobs
port, fetched back by the "cluster" from their gs:// URIs, and run in a subprocess with the zip on
PYTHONPATH (no editable install) and Spark in local mode. What differs on real Dataproc (the
google-cloud-dataproc calls, spark-submit, GCS) is covered by tests/unit/test_gcp_dataproc.py and
the contract tests of the gcs adapter, not here.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from backbeat.cloud.ports import Message
from backbeat.dag.dataproc_sim import DataprocSimulation
from backbeat.delivery import hours as H
from backbeat.delivery.close import close_hour
from backbeat.delivery.config import DeliveryConfig
from backbeat.delivery.dedupe import dedupe_hour
from backbeat.delivery.envelope import make_envelope
from backbeat.delivery.errors import DeliveryError
from backbeat.delivery.registry import default_registry
from backbeat.delivery.spark_submit import (
    DataprocJobFailed,
    DataprocJobTimeout,
    DataprocTarget,
    job_id,
    stage_code,
    submit_dedupe,
)
from backbeat.delivery.synth import make_events

from .conftest import BUCKET
from .helpers import assert_exactly_once, snapshot
from .test_spark import _final_rows

REG = default_registry()
CFG = DeliveryConfig(
    grace_s=60,
    lookback_hours=6,
    spark_threshold_rows=500,
    dataproc_cluster="dedupe-local",
    dataproc_region="europe-west1",
    dataproc_poll_s=0.2,
    dataproc_timeout_s=300,
)
H10, H11 = "2026-04-01T10", "2026-04-01T11"


def _send(delivery, events, mid, version=None):
    env = make_envelope(REG.get("play", version), events, batch_id=f"b-{mid}")
    return delivery.ingest(Message(env.data, env.attributes, mid, datetime.now(UTC)))


def _two_hours(platform, delivery):
    """10:00 closed and deduplicated; 11:00 closed with duplicates, an older schema version and
    skewed late rows, 100 of whose ids are already final in 10:00. Returns every id sent."""
    rng = random.Random(5)
    ev = make_events(REG.latest("play"), 900, rng=rng, start=H.hour_start(H10), spread_s=3000)
    _send(delivery, ev[:600], "m1")
    close_hour(platform, BUCKET, "play", H10)
    dedupe_hour(platform, BUCKET, "play", H10, config=CFG, force_engine="function")
    e11 = make_events(REG.latest("play"), 700, rng=rng, start=H.hour_start(H11), spread_s=3000)
    v1 = make_events(REG.get("play", 1), 60, rng=rng, start=H.hour_start(H11), spread_s=3000)
    _send(delivery, e11[:400], "m2")
    _send(delivery, e11[300:], "m3")  # 100 duplicates across messages
    _send(delivery, e11[:50], "m4")  # a fully duplicated message
    _send(delivery, v1, "m5", version=1)
    _send(delivery, ev[500:700], "m6")  # late for 10:00: diverted to 11:00, 100 already final there
    close_hour(platform, BUCKET, "play", H11)
    return {e["event_id"] for e in ev[:700] + e11 + v1}


@pytest.mark.slow
def test_an_hour_above_the_threshold_runs_on_the_cluster_like_in_function(
    platform, delivery, settings, monkeypatch
):
    sent = _two_hours(platform, delivery)
    reference = dedupe_hour(platform, BUCKET, "play", H11, config=CFG, force_engine="function")
    fn_success, fn_rows = _final_rows(platform, H11)
    for info in list(platform.blobs.list(BUCKET, H.final_prefix("play", H11))):
        platform.blobs.delete(BUCKET, info.name)
    platform.blobs.put(BUCKET, H.part_name("play", H11, 7), b"stale part of a killed attempt")

    monkeypatch.setattr("backbeat.delivery.spark_dedupe.ROWS_PER_PART", 300)
    t0 = time.perf_counter()
    result = dedupe_hour(platform, BUCKET, "play", H11, config=CFG, settings=settings)
    wall = time.perf_counter() - t0
    print(f"\nlocal-cluster submission of {result.rows_in} rows: {wall:.1f} s wall")

    sim = platform.dataproc
    assert len(sim.submissions) == 1
    submitted = sim.submissions[0]
    spec = submitted["pyspark_job"]
    assert submitted["reference"]["job_id"] == job_id("play", H11, reference.manifest_sha256, 0)
    assert spec["main_python_file_uri"].startswith(f"gs://{BUCKET}/dataproc/code/")
    assert spec["main_python_file_uri"].endswith("/spark_job.py")
    assert spec["python_file_uris"][0].endswith("/backbeat.zip")
    out = (sim.workdir / submitted["reference"]["job_id"] / "driveroutput").read_text()
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["rows_out"] == reference.rows_out
    assert summary["code"].endswith("/backbeat.zip/backbeat")  # the shipped zip, not this checkout

    sp_success, sp_rows = _final_rows(platform, H11)
    assert result.engine == "spark" and not result.rerun_noop
    keys = ("rows_in", "rows_out", "duplicates", "skewed", "manifest_sha256", "schema_version",
            "duplicates_prior_hours")  # fmt: skip
    assert {k: sp_success[k] for k in keys} == {k: fn_success[k] for k in keys}
    assert sp_success["duplicates_prior_hours"] == 100 and sp_success["skewed"] == 100
    assert len(sp_success["parts"]) == math.ceil(reference.rows_in / 300) > 1
    assert sp_rows == fn_rows  # the same records, field for field
    for k in ("rows_out", "duplicates", "parts"):
        assert getattr(result, k) == sp_success[k]
    assert platform.blobs.stat(BUCKET, H.part_name("play", H11, 7)) is None  # stale part removed
    sidecars = [i.name for i in platform.blobs.list(BUCKET, H.final_prefix("play", H11) + "_event_ids")]
    assert len(sidecars) == len(sp_success["parts"])
    assert_exactly_once(platform, BUCKET, {"play": sent})

    # re-triggered: a no-op from _SUCCESS; and a resubmission of the same hour attaches to its job
    before = snapshot(platform, BUCKET)
    again = dedupe_hour(platform, BUCKET, "play", H11, config=CFG, settings=settings)
    assert again.rerun_noop
    manifest = json.loads(platform.blobs.get(BUCKET, H.manifest_name("play", H11)))
    target = DataprocTarget.from_config(CFG, settings, BUCKET)
    attached = submit_dedupe(
        platform, BUCKET, manifest, reference.manifest_sha256, config=CFG, settings=settings, target=target
    )
    assert attached.rows_out == result.rows_out and attached.parts == result.parts
    assert len(sim.submissions) == 1 and len(sim.runs) == 1  # nothing submitted or run twice
    assert snapshot(platform, BUCKET) == before


def _one_small_hour(platform, delivery):
    rng = random.Random(9)
    ev = make_events(REG.latest("play"), 40, rng=rng, start=H.hour_start(H10), spread_s=3000)
    _send(delivery, ev, "m1")
    _send(delivery, ev[:10], "m2")
    close_hour(platform, BUCKET, "play", H10)


def test_a_failing_job_gives_a_typed_error_and_no_success(platform, delivery, settings):
    _one_small_hour(platform, delivery)
    cfg = replace(CFG, spark_threshold_rows=10)
    _, zip_uri = stage_code(platform.blobs, BUCKET)
    platform.blobs.put(BUCKET, zip_uri.split("/", 3)[3], b"this is not a zip")  # a corrupt staged file
    with pytest.raises(DataprocJobFailed) as err:
        dedupe_hour(platform, BUCKET, "play", H10, config=cfg, settings=settings)
    assert err.value.job_id.endswith("-0") and err.value.job_id in str(err.value)
    assert "No module named 'backbeat'" in err.value.details  # the job got only the corrupt zip
    assert "ERROR" in str(err.value)
    assert platform.blobs.stat(BUCKET, H.success_name("play", H10)) is None
    assert not list(platform.blobs.list(BUCKET, "final/"))
    # the next trigger does not re-attach to the failed job: it submits the next attempt
    with pytest.raises(DataprocJobFailed) as err2:
        dedupe_hour(platform, BUCKET, "play", H10, config=cfg, settings=settings)
    assert err2.value.job_id.endswith("-1")
    assert [s["reference"]["job_id"][-2:] for s in platform.dataproc.submissions] == ["-0", "-1"]
    # a missing staged object fails the job at fetch time, naming the URI
    platform.blobs.delete(BUCKET, zip_uri.split("/", 3)[3])
    platform.blobs.put(BUCKET, zip_uri.split("/", 3)[3] + ".x", b"")  # keep the folder listed
    platform.dataproc.blobs = type(platform.blobs)(settings.data_dir / "elsewhere")
    with pytest.raises(DataprocJobFailed, match="could not fetch"):
        dedupe_hour(platform, BUCKET, "play", H10, config=cfg, settings=settings)


def test_done_without_success_and_timeouts_are_typed(platform, delivery, settings):
    """Against the simulation (no process): a job DONE without _SUCCESS, and a job that outlives
    the timeout (left running; the next trigger attaches to it)."""
    _one_small_hour(platform, delivery)
    cfg = replace(CFG, spark_threshold_rows=10, dataproc_poll_s=0.0)
    cluster = {"cluster_name": cfg.dataproc_cluster}
    platform.dataproc = DataprocSimulation(steps=1)
    platform.dataproc.create_cluster(settings.project, cfg.dataproc_region, cluster)
    with pytest.raises(DeliveryError, match="is DONE but wrote no"):
        dedupe_hour(platform, BUCKET, "play", H10, config=cfg, settings=settings)

    platform.dataproc = DataprocSimulation(steps=10**6)
    platform.dataproc.create_cluster(settings.project, cfg.dataproc_region, cluster)
    slow = replace(cfg, dataproc_timeout_s=0.0)
    with pytest.raises(DataprocJobTimeout, match="still PENDING"):
        dedupe_hour(platform, BUCKET, "play", H10, config=slow, settings=settings)
    with pytest.raises(DataprocJobTimeout, match="still RUNNING"):
        dedupe_hour(platform, BUCKET, "play", H10, config=replace(slow, dataproc_timeout_s=0.01))
    assert len(platform.dataproc.submissions) == 1  # the second trigger attached to the running job
    assert platform.blobs.stat(BUCKET, H.success_name("play", H10)) is None


def test_the_job_checks_the_manifest_and_skips_a_done_hour(platform, delivery, settings):
    """The entry script's checks before any Spark work (no session is needed for them)."""
    from backbeat.delivery.errors import ManifestMismatch
    from backbeat.delivery.spark_job import job_args, parse_args, run

    _one_small_hour(platform, delivery)
    manifest_sha = hashlib.sha256(platform.blobs.get(BUCKET, H.manifest_name("play", H10))).hexdigest()

    def args(sha):
        return parse_args(
            job_args(bucket=BUCKET, event_type="play", hour=H10, sha=sha, settings=settings, lookback=6)
        )

    with pytest.raises(ManifestMismatch, match="submitted for manifest 000000000000"):
        run(args("0" * 64), spark=None)
    done = dedupe_hour(platform, BUCKET, "play", H10, config=CFG, force_engine="function")
    before = snapshot(platform, BUCKET)
    record = run(args(manifest_sha), spark=None)  # a retried job over a done hour: nothing rewritten
    assert record["manifest_sha256"] == done.manifest_sha256 == manifest_sha
    assert record["rows_out"] == done.rows_out == 40 and snapshot(platform, BUCKET) == before
