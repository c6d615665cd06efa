"""Shared helpers of the event-delivery tests: a seeded multi-type stream and the exactly-once check
over every ``_SUCCESS``-referenced file (lost events = 0, duplicate event_ids = 0)."""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import fastavro

from backbeat.cloud.ports import Platform
from backbeat.delivery import hours as H
from backbeat.delivery.envelope import Envelope
from backbeat.delivery.producer import Producer
from backbeat.delivery.synth import make_events


@dataclass
class Stream:
    envelopes: list[Envelope] = field(default_factory=list)
    ids: dict[str, set[str]] = field(default_factory=dict)  # type -> every event id sent

    def add(self, env: Envelope) -> None:
        self.envelopes.append(env)
        self.ids.setdefault(env.attributes["type"], set()).update(env.event_ids)


def make_stream(
    producer: Producer,
    registry,
    *,
    types: list[str],
    hours: list[str],
    per_hour: int,
    seed: int,
    batch_size: int = 200,
) -> Stream:
    """``per_hour`` events per (type, hour), spread over the hour, cut into envelopes."""
    rng = random.Random(seed)
    producer.batch_size = batch_size
    stream = Stream()
    for t in types:
        schema = registry.latest(t)
        for h in hours:
            events = make_events(schema, per_hour, rng=rng, start=H.hour_start(h), spread_s=3590)
            for env in producer.envelopes(t, events):
                stream.add(env)
    return stream


@dataclass
class FinalCheck:
    rows: dict[str, int]
    successes: dict[tuple[str, str], dict]
    ids: dict[str, Counter]


def read_final(platform: Platform, bucket: str, day: str | tuple[str, ...] | None = None) -> FinalCheck:
    """Every _SUCCESS (of hours starting with ``day`` when given) and the ids of its parts."""
    successes: dict[tuple[str, str], dict] = {}
    ids: dict[str, Counter] = {}
    rows: dict[str, int] = {}
    for info in platform.blobs.list(bucket, "final/"):
        if not info.name.endswith("/_SUCCESS"):
            continue
        success = json.loads(platform.blobs.get(bucket, info.name))
        t, h = success["type"], success["hour"]
        if day and not h.startswith(day):
            continue
        assert info.name == H.success_name(t, h)
        successes[(t, h)] = success
        n = 0
        for part in success["parts"]:
            for rec in fastavro.reader(io.BytesIO(platform.blobs.get(bucket, part))):
                assert isinstance(rec["received_at"], datetime) and rec["received_at"].tzinfo is not None
                ids.setdefault(t, Counter())[rec["event_id"]] += 1
                n += 1
        assert n == success["rows_out"], f"{info.name}: rows_out {success['rows_out']} but {n} rows in parts"
        assert success["rows_in"] - success["rows_out"] == success["duplicates"]
        rows[t] = rows.get(t, 0) + n
    return FinalCheck(rows, successes, ids)


def assert_exactly_once(
    platform: Platform,
    bucket: str,
    expected: dict[str, set[str]],
    dead: dict[str, set[str]] | None = None,
    day: str | tuple[str, ...] | None = None,
) -> FinalCheck:
    """Every expected id (minus accounted dead letters) exactly once across all final files."""
    check = read_final(platform, bucket, day)
    dead = dead or {}
    for t, want in expected.items():
        got = check.ids.get(t, Counter())
        dups = {i: c for i, c in got.items() if c > 1}
        lost = want - dead.get(t, set()) - set(got)
        extra = set(got) - want
        assert not dups, f"{t}: {len(dups)} duplicate event_ids, e.g. {list(dups)[:3]}"
        assert not lost, f"{t}: {len(lost)} lost events, e.g. {sorted(lost)[:3]}"
        assert not extra, f"{t}: {len(extra)} events nobody sent"
    return check


def snapshot(platform: Platform, bucket: str, prefix: str = "final/") -> dict[str, bytes]:
    return {i.name: platform.blobs.get(bucket, i.name) for i in platform.blobs.list(bucket, prefix)}
