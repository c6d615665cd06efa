"""ingest on the local adapters: create-only staging, exactly-once registration, dead letters,
diversion of batches whose hour is closed."""

from __future__ import annotations

import io
import json
import random
from datetime import UTC, datetime

import fastavro
import zstandard

from backbeat.cloud.ports import Message
from backbeat.delivery import hours as H
from backbeat.delivery.close import close_hour
from backbeat.delivery.envelope import make_envelope
from backbeat.delivery.registry import default_registry
from backbeat.delivery.synth import make_events

from .conftest import BUCKET

REG = default_registry()


def _msg(env, mid: str, attempt: int = 1) -> Message:
    return Message(env.data, env.attributes, mid, datetime.now(UTC), attempt, "events.play")


def _env(hour="2026-03-01T10", n=20, seed=1, t="play"):
    events = make_events(REG.latest(t), n, rng=random.Random(seed), start=H.hour_start(hour), spread_s=3000)
    return make_envelope(REG.latest(t), events, batch_id=f"b{seed}")


def test_writes_staging_create_only_and_registers_once(platform, delivery):
    env = _env()
    r1 = delivery.ingest(_msg(env, "m1"))
    assert (r1.status, r1.hour, r1.rows) == ("registered", "2026-03-01T10", 20)
    name = H.staging_name("play", "2026-03-01T10", "m1")
    info = platform.blobs.stat(BUCKET, name)
    rows = list(fastavro.reader(io.BytesIO(platform.blobs.get(BUCKET, name))))
    assert [r["event_id"] for r in rows] == env.event_ids
    r2 = delivery.ingest(_msg(env, "m1", attempt=2))  # redelivery: precondition hit, acknowledged
    assert r2.status == "already"
    assert platform.blobs.stat(BUCKET, name).generation == info.generation
    files = platform.documents.query(H.files_collection("play", "2026-03-01T10"))
    assert [(p.rsplit("/", 1)[-1], d["rows"], d["skewed"]) for p, d in files] == [("m1", 20, False)]
    assert platform.documents.get(H.hour_doc("play", "2026-03-01T10"))["state"] == "OPEN"


def test_invalid_events_go_to_the_dead_letter_topic_and_are_counted(platform, delivery):
    got: list[Message] = []
    platform.bus.subscribe(delivery.config.dead_letter_topic, "dl-spy", got.append)
    events = make_events(REG.latest("play"), 6, rng=random.Random(3), start=H.hour_start("2026-03-01T10"))
    lines = [json.dumps(e) for e in events]
    lines[1] = json.dumps(dict(events[1], platform="gramophone"))
    lines[4] = json.dumps({k: v for k, v in events[4].items() if k != "track_id"})
    env = make_envelope(REG.latest("play"), events, batch_id="bj", encoding="jsonl")
    data = zstandard.ZstdCompressor().compress("\n".join(lines).encode())
    r = delivery.ingest(Message(data, env.attributes, "mj", datetime.now(UTC)))
    assert (r.status, r.rows, r.invalid) == ("registered", 4, 2)
    assert (
        len(got) == 1 and got[0].attributes["count"] == "2" and got[0].attributes["source_message_id"] == "mj"
    )
    dead = [json.loads(line) for line in got[0].data.splitlines()]
    assert [d["event_id"] for d in dead] == [events[1]["event_id"], events[4]["event_id"]]
    assert "platform" in dead[0]["reason"] and "track_id" in dead[1]["reason"]
    doc = platform.documents.get(H.dead_letter_doc("play", "2026-03-01T10", "mj"))
    assert doc["events"] == 2 and doc["event_ids"] == [events[1]["event_id"], events[4]["event_id"]]


def test_an_undecodable_message_is_dead_lettered_and_accounted_in_its_hour(platform, delivery):
    got: list[Message] = []
    platform.bus.subscribe(delivery.config.dead_letter_topic, "dl-spy", got.append)
    env = _env()
    r = delivery.ingest(Message(b"\x00poison", env.attributes, "mp", datetime.now(UTC)))
    assert r.status == "dead_letter"
    assert "not zstd" in got[0].attributes["reason"]
    doc = platform.documents.get(H.dead_letter_doc("play", "2026-03-01T10", "mp"))
    assert doc["whole_message"] and doc["events"] == 20
    assert platform.blobs.stat(BUCKET, H.staging_name("play", "2026-03-01T10", "mp")) is None


def test_a_batch_for_a_closed_hour_is_diverted_to_the_open_hour_as_skewed(platform, delivery):
    delivery.ingest(_msg(_env("2026-03-01T10", seed=1), "m1"))
    delivery.ingest(_msg(_env("2026-03-01T11", seed=2), "m2"))
    close_hour(platform, BUCKET, "play", "2026-03-01T10")
    late = _env("2026-03-01T10", seed=3)
    r = delivery.ingest(_msg(late, "m3"))
    assert (r.status, r.hour, r.receive_hour) == ("diverted", "2026-03-01T11", "2026-03-01T10")
    doc = platform.documents.get(H.file_doc("play", "2026-03-01T11", "m3"))
    assert doc["skewed"] and doc["receive_hour"] == "2026-03-01T10"
    assert platform.documents.get(H.file_doc("play", "2026-03-01T10", "m3")) is None
    moved = platform.blobs.get(BUCKET, H.staging_name("play", "2026-03-01T11", "m3"))
    assert [r["event_id"] for r in fastavro.reader(io.BytesIO(moved))] == late.event_ids
    # a redelivery follows the recorded diversion even after the target closed too: never both
    close_hour(platform, BUCKET, "play", "2026-03-01T11")
    again = delivery.ingest(_msg(late, "m3", attempt=2))
    assert (again.status, again.hour) == ("already", "2026-03-01T11")
    assert platform.documents.get(H.file_doc("play", "2026-03-01T12", "m3")) is None


def test_the_backlog_record_is_removed_when_the_batch_is_registered(platform, delivery, producer):
    env = _env()
    wm = producer.watermark
    wm.record("b1", "play", "2026-03-01T10", int(env.attributes["oldest_us"]), 20)
    assert wm.oldest_unacked("play", datetime.now(UTC)) == H.from_micros(int(env.attributes["oldest_us"]))
    delivery.ingest(_msg(env, "m1"))
    assert wm.oldest_unacked("play", datetime.now(UTC)) is None
