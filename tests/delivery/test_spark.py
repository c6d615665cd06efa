"""The PySpark dedupe path (Spark local mode) keeps the in-function path's output contract."""

from __future__ import annotations

import io
import json
import random
from datetime import UTC, datetime

import fastavro
import pytest

from backbeat.cloud.ports import Message
from backbeat.delivery import hours as H
from backbeat.delivery.close import close_hour
from backbeat.delivery.dedupe import dedupe_hour
from backbeat.delivery.envelope import make_envelope
from backbeat.delivery.registry import default_registry
from backbeat.delivery.synth import make_events

from .conftest import BUCKET
from .helpers import assert_exactly_once, snapshot

pytestmark = pytest.mark.slow
REG = default_registry()


@pytest.fixture(scope="module")
def spark():
    from backbeat.delivery.spark_dedupe import spark_session

    s = spark_session("backbeat-test")
    yield s
    s.stop()


def _send(delivery, events, mid, version=None):
    env = make_envelope(REG.get("play", version), events, batch_id=f"b-{mid}")
    return delivery.ingest(Message(env.data, env.attributes, mid, datetime.now(UTC)))


def _final_rows(platform, hour):
    success = json.loads(platform.blobs.get(BUCKET, H.success_name("play", hour)))
    rows = []
    for part in success["parts"]:
        rows += list(fastavro.reader(io.BytesIO(platform.blobs.get(BUCKET, part))))
    return success, sorted(rows, key=lambda r: r["event_id"])


def test_spark_path_matches_the_in_function_path(platform, delivery, settings, spark, monkeypatch):
    rng = random.Random(11)
    h10, h11 = "2026-04-01T10", "2026-04-01T11"
    ev = make_events(REG.latest("play"), 1200, rng=rng, start=H.hour_start(h10), spread_s=3000)
    v1 = make_events(REG.get("play", 1), 100, rng=rng, start=H.hour_start(h10), spread_s=3000)
    _send(delivery, ev[:700], "m1")
    _send(delivery, ev[500:], "m2")  # 200 duplicates across messages
    _send(delivery, ev[:100], "m3")  # a fully duplicated message
    _send(delivery, v1, "m4", version=1)  # an older schema version in the same hour
    _send(delivery, make_events(REG.latest("play"), 10, rng=rng, start=H.hour_start(h11)), "m5")
    close_hour(platform, BUCKET, "play", h10)
    dedupe_hour(platform, BUCKET, "play", h10)
    late = ev[1000:1100] + make_events(REG.latest("play"), 40, rng=rng, start=H.hour_start(h10), spread_s=60)
    _send(delivery, late, "m6")  # diverted to 11:00: 100 are final in 10:00 already
    close_hour(platform, BUCKET, "play", h11)

    fn = dedupe_hour(platform, BUCKET, "play", h11, force_engine="function")
    fn_success, fn_rows = _final_rows(platform, h11)
    fn10_success, fn10_rows = _final_rows(platform, h10)
    for info in list(platform.blobs.list(BUCKET, "final/")):
        platform.blobs.delete(BUCKET, info.name)

    # 10:00 and 11:00 again through Spark, with several parts
    from backbeat.delivery.spark_dedupe import dedupe_hour_spark  # noqa: F401 - the module must import

    monkeypatch.setattr("backbeat.delivery.spark_dedupe.ROWS_PER_PART", 500)
    r10 = dedupe_hour(platform, BUCKET, "play", h10, force_engine="spark", settings=settings, spark=spark)
    r11 = dedupe_hour(platform, BUCKET, "play", h11, force_engine="spark", settings=settings, spark=spark)
    assert r10.engine == r11.engine == "spark"
    sp10_success, sp10_rows = _final_rows(platform, h10)
    sp_success, sp_rows = _final_rows(platform, h11)
    keys = ("rows_in", "rows_out", "duplicates", "skewed", "manifest_sha256", "schema_version")
    assert {k: sp10_success[k] for k in keys} == {k: fn10_success[k] for k in keys}
    assert {k: sp_success[k] for k in keys} == {k: fn_success[k] for k in keys}
    assert (sp10_success["rows_in"], sp10_success["rows_out"]) == (1600, 1300)
    assert len(sp10_success["parts"]) == 4  # ceil(1600 / 500)
    assert sp10_rows == fn10_rows and sp_rows == fn_rows  # the same records, field for field
    assert fn.duplicates_prior_hours == r11.duplicates_prior_hours == 100
    assert_exactly_once(
        platform, BUCKET, {"play": {e["event_id"] for e in ev + v1 + late} | {r["event_id"] for r in fn_rows}}
    )
    before = snapshot(platform, BUCKET)
    again = dedupe_hour(platform, BUCKET, "play", h10, force_engine="spark", settings=settings, spark=spark)
    assert again.rerun_noop and snapshot(platform, BUCKET) == before


def test_a_jvm_that_exits_at_launch_is_started_once_more(monkeypatch):
    from pyspark.errors import PySparkRuntimeError
    from pyspark.sql import SparkSession

    from backbeat.delivery.spark_dedupe import spark_session

    calls = []

    def launch(failures: int, condition: str):
        def get_or_create(self):
            calls.append(condition)
            if len(calls) <= failures:
                raise PySparkRuntimeError(errorClass=condition, messageParameters={})
            return "session"
        return get_or_create

    monkeypatch.setattr(SparkSession.Builder, "getOrCreate", launch(1, "JAVA_GATEWAY_EXITED"))
    assert spark_session("t") == "session" and len(calls) == 2
    calls.clear()
    monkeypatch.setattr(SparkSession.Builder, "getOrCreate", launch(2, "JAVA_GATEWAY_EXITED"))
    with pytest.raises(PySparkRuntimeError):  # once more, not forever
        spark_session("t")
    assert len(calls) == 2
    calls.clear()
    monkeypatch.setattr(SparkSession.Builder, "getOrCreate", launch(1, "NO_ACTIVE_SESSION"))
    with pytest.raises(PySparkRuntimeError):  # other failures are not retried
        spark_session("t")
    assert len(calls) == 1
