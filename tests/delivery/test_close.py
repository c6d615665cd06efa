"""close_bucket: grace, backlog watermark, dead-letter accounting, immutable manifest, crash resume."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime

import pytest

from backbeat.cloud.ports import Message
from backbeat.delivery import hours as H
from backbeat.delivery.close import close_hour, may_close
from backbeat.delivery.envelope import make_envelope
from backbeat.delivery.errors import ManifestMismatch
from backbeat.delivery.registry import default_registry
from backbeat.delivery.synth import make_events

from .conftest import BUCKET

REG = default_registry()
HOUR = "2026-03-01T10"


def _ingest(delivery, mid, hour=HOUR, seed=1, n=10):
    events = make_events(
        REG.latest("play"), n, rng=random.Random(seed), start=H.hour_start(hour), spread_s=60
    )
    env = make_envelope(REG.latest("play"), events, batch_id=f"b-{mid}")
    delivery.ingest(Message(env.data, env.attributes, mid, datetime.now(UTC)))
    return env


def test_may_close_needs_grace_and_the_watermark_past_the_hour():
    end = H.hour_end(HOUR)
    assert "grace" in may_close(HOUR, end, 60, None)
    assert may_close(HOUR, H.parse_time("2026-03-01T11:01"), 60, None) is None
    assert "watermark" in may_close(
        HOUR, H.parse_time("2026-03-01T12:00"), 60, H.parse_time("2026-03-01T10:59")
    )
    assert may_close(HOUR, H.parse_time("2026-03-01T12:00"), 60, end) is None


def test_tick_closes_only_hours_that_may_close_and_publishes_hour_closed(platform, delivery):
    closed_msgs: list[Message] = []
    platform.bus.subscribe("hour-closed", "spy", closed_msgs.append)
    _ingest(delivery, "m1", HOUR, 1)
    _ingest(delivery, "m2", "2026-03-01T11", 2)
    report = delivery.tick(H.parse_time("2026-03-01T11:00:30"))
    assert report.closed == [] and {w[1] for w in report.waiting} == {HOUR, "2026-03-01T11"}
    report = delivery.tick(H.parse_time("2026-03-01T11:01:00"))
    assert [(c.event_type, c.hour, c.rows) for c in report.closed] == [("play", HOUR, 10)]
    assert [m.attributes["hour"] for m in closed_msgs] == [HOUR]
    data = platform.blobs.get(BUCKET, H.manifest_name("play", HOUR))
    assert closed_msgs[0].attributes["manifest_sha256"] == hashlib.sha256(data).hexdigest()
    manifest = json.loads(data)
    assert [f["name"] for f in manifest["files"]] == [H.staging_name("play", HOUR, "m1")]
    doc = platform.documents.get(H.hour_doc("play", HOUR))
    assert doc["state"] == "CLOSED" and doc["published"] is True and doc["rows"] == 10
    assert delivery.tick(H.parse_time("2026-03-01T11:02:00")).closed == []  # closed stays closed


def test_a_pending_batch_holds_the_hour_open_until_ingested(platform, delivery, producer):
    _ingest(delivery, "m1")
    events = make_events(REG.latest("play"), 5, rng=random.Random(9), start=H.hour_start(HOUR), spread_s=60)
    env = producer.envelopes("play", events)[0]
    a = env.attributes
    producer.watermark.record(a["batch_id"], "play", HOUR, int(a["oldest_us"]), 5)  # published, not yet acked
    report = delivery.tick(H.parse_time("2026-03-01T13:00"))
    assert report.closed == [] and "watermark" in report.waiting[0][2]
    delivery.ingest(Message(env.data, env.attributes, "m9", datetime.now(UTC)))
    report = delivery.tick(H.parse_time("2026-03-01T13:00"))
    assert [(c.hour, c.rows) for c in report.closed] == [(HOUR, 15)]


def test_a_crashed_close_resumes_and_the_manifest_is_immutable(platform, delivery, monkeypatch):
    _ingest(delivery, "m1")
    import backbeat.delivery.close as close_mod

    real = close_mod._to_closed

    def boom(*a, **k):
        raise RuntimeError("killed after the manifest was written")

    monkeypatch.setattr(close_mod, "_to_closed", boom)
    with pytest.raises(RuntimeError):
        delivery.tick(H.parse_time("2026-03-01T12:00"))
    assert platform.documents.get(H.hour_doc("play", HOUR))["state"] == "CLOSING"
    first = platform.blobs.get(BUCKET, H.manifest_name("play", HOUR))
    # a batch arriving while CLOSING is diverted, so the resumed close writes the same manifest
    late = _ingest(delivery, "m2", HOUR, 5)
    assert platform.documents.get(H.file_doc("play", "2026-03-01T11", "m2"))["skewed"]
    monkeypatch.setattr(close_mod, "_to_closed", real)
    report = delivery.tick(H.parse_time("2026-03-01T12:00"))
    assert [c.hour for c in report.closed] == [HOUR]
    assert platform.blobs.get(BUCKET, H.manifest_name("play", HOUR)) == first
    assert late.event_ids[0] not in first.decode()
    # someone tampering with the frozen set is detected, not silently overwritten
    platform.documents.update(H.hour_doc("play", HOUR), {"state": "CLOSING"})
    platform.documents.set(H.file_doc("play", HOUR, "zz"), {"name": "x", "rows": 1})
    with pytest.raises(ManifestMismatch, match="different content"):
        close_hour(platform, BUCKET, "play", HOUR)


def test_dead_letters_are_reported_by_the_closing_hour(platform, delivery):
    env = _ingest(delivery, "m1")
    delivery.ingest(Message(b"poison", dict(env.attributes, count="7"), "mp", datetime.now(UTC)))
    report = delivery.tick(H.parse_time("2026-03-01T12:00"))
    assert [(c.rows, c.dead_letter_events) for c in report.closed] == [(10, 7)]
    manifest = json.loads(platform.blobs.get(BUCKET, H.manifest_name("play", HOUR)))
    assert manifest["dead_letters"]["messages"] == 1
    assert "not zstd" in manifest["dead_letters"]["entries"][0]["reasons"][0]
