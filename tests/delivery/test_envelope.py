from __future__ import annotations

import io
import json
import random

import fastavro
import pytest
import zstandard

from backbeat.delivery import hours as H
from backbeat.delivery.envelope import decode, make_envelope, read_keys, staging_file
from backbeat.delivery.errors import EnvelopeError, InvalidEvent
from backbeat.delivery.registry import default_registry
from backbeat.delivery.synth import make_events

REG = default_registry()
T0 = H.parse_time("2026-03-01T10:00")


def _events(t="play", n=50, seed=1):
    return make_events(REG.latest(t), n, rng=random.Random(seed), start=T0, spread_s=3000)


@pytest.mark.parametrize("encoding", ["avro", "jsonl"])
@pytest.mark.parametrize("event_type", sorted(REG.types()))
def test_roundtrip_every_type(event_type, encoding):
    events = _events(event_type)
    env = make_envelope(REG.latest(event_type), events, batch_id="b1", encoding=encoding)
    assert env.attributes["type"] == event_type
    assert env.attributes["receive_hour"] == "2026-03-01T10"
    assert env.attributes["count"] == "50"
    batch = decode(env.data, env.attributes, REG)
    assert batch.invalid == []
    assert batch.event_ids == [e["event_id"] for e in events]
    rows = list(fastavro.reader(io.BytesIO(batch.avro)))
    assert rows == events


def test_staging_file_carries_the_keys_and_the_same_rows():
    events = _events()
    env = make_envelope(REG.latest("play"), events, batch_id="b1")
    batch = decode(env.data, env.attributes, REG)
    data = staging_file(batch)
    reader = fastavro.reader(io.BytesIO(data))
    assert reader.codec == "snappy"
    ids, rec = read_keys(reader.metadata)
    assert ids == [e["event_id"] for e in events] and rec == [e["received_at"] for e in events]
    assert list(reader) == events


def test_invalid_events_are_reported_with_reasons_and_the_rest_proceeds():
    events = _events(n=10)
    lines = [json.dumps(e) for e in events]
    lines[2] = json.dumps(dict(events[2], ms_played="long time"))  # wrong type
    lines[5] = json.dumps(dict(events[5], event_id=""))  # empty id
    lines[7] = json.dumps(dict(events[7], received_at=H.to_micros(T0) - 1))  # previous hour
    lines[8] = "{broken"
    env = make_envelope(REG.latest("play"), events, batch_id="b", encoding="jsonl")
    data = zstandard.ZstdCompressor().compress("\n".join(lines).encode())
    batch = decode(data, env.attributes, REG)
    assert [b["index"] for b in batch.invalid] == [2, 5, 7, 8]
    reasons = {b["index"]: b["reason"] for b in batch.invalid}
    assert "ms_played" in reasons[2]
    assert "event_id" in reasons[5]
    assert "outside receive_hour 2026-03-01T10" in reasons[7]
    assert "bad JSON" in reasons[8]
    assert batch.event_ids == [e["event_id"] for i, e in enumerate(events) if i not in (2, 5, 7, 8)]
    assert [r["event_id"] for r in fastavro.reader(io.BytesIO(batch.avro))] == batch.event_ids


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d, a: (b"garbage", a), "not zstd"),
        (lambda d, a: (zstandard.ZstdCompressor().compress(b"Obj\x01junk"), a), "not a readable Avro"),
        (lambda d, a: (d, {**a, "type": "nope"}), "no registered schema"),
        (lambda d, a: (d, {**a, "schema_version": "1"}), "not registry version v1"),
        (lambda d, a: (d, {**a, "receive_hour": "2026-03-01 10h"}), "receive_hour"),
        (lambda d, a: (d, {k: v for k, v in a.items() if k != "type"}), "missing: type"),
    ],
)
def test_undecodable_messages_raise_a_typed_error_naming_the_problem(mutate, needle):
    env = make_envelope(REG.latest("play"), _events(), batch_id="b")
    data, attrs = mutate(env.data, env.attributes)
    with pytest.raises(EnvelopeError, match=needle):
        decode(data, attrs, REG)


def test_the_producer_refuses_invalid_events_and_batches_spanning_hours():
    events = _events(n=5)
    with pytest.raises(InvalidEvent, match=r"event #1 .*ms_played"):
        make_envelope(REG.latest("play"), [events[0], dict(events[1], ms_played=1.5)], batch_id="b")
    late = dict(events[1], received_at=H.to_micros(T0) - 10)
    with pytest.raises(InvalidEvent, match="spans hours"):
        make_envelope(REG.latest("play"), [events[0], late], batch_id="b")
