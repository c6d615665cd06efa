from __future__ import annotations

from datetime import UTC, datetime

from backbeat.delivery.export import RecordingExporter, job_id, load_request
from backbeat.delivery.watermark import MonitoringWatermark, monitoring_request, watermark_from_series

from .conftest import BUCKET

SHA = "ab" * 32


def test_load_request_targets_the_hour_partition_with_a_manifest_derived_job_id():
    req = load_request(
        "proj",
        "events",
        "bkt",
        "page_view",
        "2026-03-01T10",
        SHA,
        ["final/page_view/dt=2026-03-01/hour=10/part-00000.avro"],
    )
    assert (
        req["jobReference"]["jobId"]
        == job_id("page_view", "2026-03-01T10", SHA)
        == "backbeat_page_view_2026030110_abababababababababab"
    )
    load = req["configuration"]["load"]
    assert load["sourceUris"] == ["gs://bkt/final/page_view/dt=2026-03-01/hour=10/part-00000.avro"]
    assert load["destinationTable"] == {
        "projectId": "proj",
        "datasetId": "events",
        "tableId": "page_view$2026030110",
    }
    assert load["sourceFormat"] == "AVRO" and load["useAvroLogicalTypes"] is True
    assert load["writeDisposition"] == "WRITE_TRUNCATE" and load["timePartitioning"] == {"type": "HOUR"}
    other = load_request("proj", "events", "bkt", "page_view", "2026-03-01T10", "cd" * 32, ["p"])
    assert other["jobReference"]["jobId"] != req["jobReference"]["jobId"]


def test_recording_exporter_is_idempotent_per_job_id(platform):
    platform.blobs.ensure_bucket(BUCKET)
    ex = RecordingExporter(platform.blobs, BUCKET)
    req = load_request("p", "events", BUCKET, "play", "2026-03-01T10", SHA, ["a.avro"])
    assert ex.submit(req) == "submitted"
    assert ex.submit(req) == "duplicate"
    assert platform.blobs.stat(BUCKET, "exports/play/2026-03-01T10.json") is not None


def test_monitoring_watermark_request_and_parsing():
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    req = monitoring_request("proj", "ingest-events.play", now)
    assert req["name"] == "projects/proj"
    assert 'subscription_id = "ingest-events.play"' in req["filter"]
    assert "oldest_unacked_message_age" in req["filter"]
    resp = {
        "timeSeries": [
            {
                "points": [
                    {"interval": {"endTime": "2026-03-01T11:59:00Z"}, "value": {"int64Value": "900"}},
                    {"interval": {"endTime": "2026-03-01T11:58:00Z"}, "value": {"int64Value": "10"}},
                ]
            }
        ]
    }
    assert watermark_from_series(resp, now) == datetime(2026, 3, 1, 11, 45, tzinfo=UTC)
    assert watermark_from_series({"timeSeries": []}, now) is None
    seen = []
    wm = MonitoringWatermark("proj", lambda r: (seen.append(r), resp)[1])
    assert wm.oldest_unacked("play", now) == datetime(2026, 3, 1, 11, 45, tzinfo=UTC)
    assert 'subscription_id = "ingest-events.play"' in seen[0]["filter"]
