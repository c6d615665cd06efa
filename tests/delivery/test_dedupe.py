"""dedupe: deterministic winner, skewed rows against previous hours, idempotent reruns, a run killed
midway, mixed schema versions."""

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
from backbeat.delivery.errors import HourStateError
from backbeat.delivery.registry import default_registry
from backbeat.delivery.synth import make_events

from .conftest import BUCKET
from .helpers import assert_exactly_once, snapshot

REG = default_registry()
HOUR = "2026-03-01T10"


def _events(n, seed, hour=HOUR, version=None):
    return make_events(
        REG.get("play", version), n, rng=random.Random(seed), start=H.hour_start(hour), spread_s=3000
    )


def _send(delivery, events, mid, version=None):
    env = make_envelope(REG.get("play", version), events, batch_id=f"b-{mid}")
    return delivery.ingest(Message(env.data, env.attributes, mid, datetime.now(UTC)))


def _rows(platform, t="play", hour=HOUR):
    success = json.loads(platform.blobs.get(BUCKET, H.success_name(t, hour)))
    out = []
    for p in success["parts"]:
        out += list(fastavro.reader(io.BytesIO(platform.blobs.get(BUCKET, p))))
    return success, out


def test_duplicates_removed_with_a_deterministic_winner(platform, delivery):
    a = _events(100, 1)
    _send(delivery, a[:60], "m2")
    _send(delivery, a[40:], "m1")  # 20 ids in both messages
    close_hour(platform, BUCKET, "play", HOUR)
    r = dedupe_hour(platform, BUCKET, "play", HOUR)
    assert (r.rows_in, r.rows_out, r.duplicates, r.skewed) == (120, 100, 20, 0)
    success, rows = _rows(platform)
    assert sorted(x["event_id"] for x in rows) == sorted(e["event_id"] for e in a)
    # same received_at in both copies: the smaller message id wins, so m2's copies of the overlap are gone
    m1 = json.loads(platform.blobs.get(BUCKET, H.manifest_name("play", HOUR)))["files"][0]
    assert m1["message_id"] == "m1"
    assert [x["event_id"] for x in rows][:60] == [e["event_id"] for e in a[40:]]
    assert success["manifest_sha256"] == r.manifest_sha256 and success["schema_version"] == 2
    assert rows[0]["received_at"].tzinfo is not None  # final files carry timestamp-micros


def test_rerun_is_a_noop_and_a_run_killed_midway_is_redone_correctly(platform, delivery, monkeypatch):
    ev = _events(300, 2)
    _send(delivery, ev[:200], "m1")
    _send(delivery, ev[100:], "m2")
    close_hour(platform, BUCKET, "play", HOUR)
    blobs = platform.blobs
    real_put = blobs.put

    def killed(bucket, name, data, **kw):
        if name.endswith("_SUCCESS"):
            raise KeyboardInterrupt("killed before _SUCCESS")
        return real_put(bucket, name, data, **kw)

    monkeypatch.setattr(blobs, "put", killed)
    with pytest.raises(KeyboardInterrupt):
        dedupe_hour(platform, BUCKET, "play", HOUR)
    assert blobs.stat(BUCKET, H.success_name("play", HOUR)) is None
    # a stale part from an earlier, different attempt must not survive the rerun
    real_put(BUCKET, H.final_prefix("play", HOUR) + "part-00007.avro", b"stale")
    monkeypatch.setattr(blobs, "put", real_put)
    first = dedupe_hour(platform, BUCKET, "play", HOUR)
    assert not first.rerun_noop and (first.rows_out, first.duplicates) == (300, 100)
    assert blobs.stat(BUCKET, H.final_prefix("play", HOUR) + "part-00007.avro") is None
    before = snapshot(platform, BUCKET)
    again = dedupe_hour(platform, BUCKET, "play", HOUR)
    assert again.rerun_noop and again.rows_out == 300
    assert snapshot(platform, BUCKET) == before
    # forced full redo (as after deleting _SUCCESS) writes byte-identical parts
    blobs.delete(BUCKET, H.success_name("play", HOUR))
    dedupe_hour(platform, BUCKET, "play", HOUR)
    assert snapshot(platform, BUCKET) == before
    assert_exactly_once(platform, BUCKET, {"play": {e["event_id"] for e in ev}})


def test_skewed_rows_are_deduplicated_against_previous_closed_hours(platform, delivery):
    ev = _events(50, 3)
    _send(delivery, ev, "m1")
    other = _events(10, 4, "2026-03-01T11")
    _send(delivery, other, "m2")
    close_hour(platform, BUCKET, "play", HOUR)
    dedupe_hour(platform, BUCKET, "play", HOUR)
    extra = _events(5, 5)
    r = _send(delivery, ev[:20] + extra, "m3")  # 20 already final in 10:00, 5 new late events
    assert (r.status, r.hour) == ("diverted", "2026-03-01T11")
    close_hour(platform, BUCKET, "play", "2026-03-01T11")
    res = dedupe_hour(platform, BUCKET, "play", "2026-03-01T11")
    assert (res.rows_in, res.rows_out, res.skewed, res.duplicates_prior_hours) == (35, 15, 5, 20)
    assert_exactly_once(platform, BUCKET, {"play": {e["event_id"] for e in ev + extra + other}})


def test_mixed_schema_versions_resolve_to_the_newest(platform, delivery):
    v1 = _events(10, 6, version=1)
    v2 = _events(10, 7, version=2)
    _send(delivery, v1, "m1", version=1)
    _send(delivery, v2, "m2", version=2)
    close_hour(platform, BUCKET, "play", HOUR)
    res = dedupe_hour(platform, BUCKET, "play", HOUR)
    assert res.schema_version == 2
    _, rows = _rows(platform)
    assert len(rows) == 20
    assert all(
        r["offline"] is False and r["shuffle"] is False
        for r in rows
        if r["event_id"] in {e["event_id"] for e in v1}
    )


def test_dedupe_refuses_an_hour_that_is_not_closed(platform, delivery):
    _send(delivery, _events(3, 8), "m1")
    with pytest.raises(HourStateError, match="not closed"):
        dedupe_hour(platform, BUCKET, "play", HOUR)


def _reference_plan(files, keys, prior):
    """The winner rule spelled out row by row: smallest (received_at, messageId, file, row) per id;
    an id final in a previous hour is dropped when its winner sits in a skewed file."""
    winner = {}
    for fi, (ids, rec) in enumerate(keys):
        for ri, eid in enumerate(ids):
            cand = (rec[ri], files[fi]["message_id"], fi, ri)
            if eid not in winner or cand < winner[eid]:
                winner[eid] = cand
    drop = {eid for eid, w in winner.items() if eid in prior and files[w[2]]["skewed"]}
    masks, winners = [], []
    for fi, (ids, _) in enumerate(keys):
        mask = [eid not in drop and winner[eid][2:] == (fi, ri) for ri, eid in enumerate(ids)]
        winners += [eid for eid, ok in zip(ids, mask, strict=True) if ok]
        masks.append(None if all(mask) else mask)
    return masks, winners


@pytest.mark.parametrize("seed", range(80))
def test_plan_matches_the_row_by_row_rule(seed):
    from backbeat.delivery.dedupe import _winner_ids_bytes, plan

    rng = random.Random(seed)
    pool = [f"id-{i}" for i in range(rng.choice([5, 40, 400]))]
    files, keys, blobs = [], [], []
    for fi in range(rng.randint(1, 10)):
        n = rng.randint(1, 30)
        # mostly distinct ids per file (what ingest produces), sometimes repeats inside a file
        ids = rng.sample(pool, min(n, len(pool))) if rng.random() < 0.7 else rng.choices(pool, k=n)
        rec = [rng.randint(0, 3) for _ in ids]
        files.append({"message_id": rng.choice(["a", "b", "c"]) + str(fi), "skewed": rng.random() < 0.3})
        keys.append((ids, rec))
        blobs.append("\n".join(ids).encode() if rng.random() < 0.5 else None)
    prior = set(rng.sample(pool, rng.randint(0, len(pool) // 3)))
    masks, counts = plan({"files": files}, keys, prior)
    want_masks, want_winners = _reference_plan(files, keys, prior)
    assert masks == want_masks
    assert counts["winner_ids"] == want_winners and counts["rows_out"] == len(want_winners)
    assert counts["rows_in"] == sum(len(ids) for ids, _ in keys)
    assert _winner_ids_bytes(keys, blobs, masks) == "\n".join(want_winners).encode()
