"""The "must hold" scenarios end to end on the ``backbeat up`` stack: Pub/Sub, Firestore and
fake-gcs-server emulators, one functions-framework process per delivery function, push
subscriptions with dead-letter policies, the push relay and its scheduler endpoint.

The stack runs this repository's function entries (functions/manifest.yaml) with crashes injected
through ``BACKBEAT_FAULTS``: ingest dies after the upload or before the ack for a share of messages,
every dedupe is killed before its _SUCCESS once. The test drives it like an operator would: it
publishes with the producer library over the real Pub/Sub client, fires ``close_bucket`` through the
scheduler endpoint, then reads every _SUCCESS-referenced file back from fake-gcs-server and asserts
lost events = 0 and duplicate event ids = 0.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from backbeat.cloud import connect
from backbeat.delivery import hours as H
from backbeat.delivery.envelope import Envelope
from backbeat.delivery.producer import Producer
from backbeat.delivery.registry import default_registry
from backbeat.delivery.watermark import BacklogWatermark
from backbeat.settings import Settings
from tests.stacktools import require_emulators, run_cli, wait_for

from .helpers import assert_exactly_once, make_stream, snapshot

pytestmark = [pytest.mark.e2e, pytest.mark.emulators, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PROJECT = "backbeat-delivery-e2e"
BUCKET = "backbeat-events"
TYPES = ["play", "search", "ad_impression"]
REG = default_registry()
FAULTS = "ingest.after_upload=0.3,ingest.before_ack=0.3,dedupe.before_success=1"




def delivery_manifest(path: Path) -> Path:
    """functions/manifest.yaml's delivery functions, with absolute paths, the scheduler's own cron
    disabled (the test fires close_bucket itself) and ingest limited to 8 concurrent requests."""
    raw = yaml.safe_load((REPO / "functions" / "manifest.yaml").read_text())
    keep = ("ingest", "ingest_dead_letters", "close_bucket", "dedupe")
    raw["functions"] = {k: v for k, v in raw["functions"].items() if k in keep}
    assert set(raw["functions"]) == set(keep), (
        "the delivery functions are missing from functions/manifest.yaml"
    )
    for fn in raw["functions"].values():
        fn["source"] = str(REPO / fn["source"])
    raw["event_types"]["schemas_dir"] = str(REPO / raw["event_types"]["schemas_dir"])
    raw["functions"]["close_bucket"]["trigger"]["schedule"] = "0 0 1 1 *"
    raw["functions"]["ingest"]["max_instances"] = 8
    raw["functions"]["dedupe"]["max_instances"] = 4
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


class Stack:
    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir, self.env = data_dir, env
        self.state = json.loads((data_dir / "stack" / "state.json").read_text())
        self.client_env = dict(self.state["env"], BACKBEAT_BACKEND="gcp", BACKBEAT_PROJECT=PROJECT)
        self.settings = Settings.from_env({**self.client_env, "BACKBEAT_EVENTS_BUCKET": BUCKET})
        self.relay = next(p for p in self.state["pieces"] if p["name"] == "push relay + scheduler")["url"]
        self.ingest_url = next(p for p in self.state["pieces"] if p["name"] == "function ingest")["url"]

    def counts(self) -> dict[str, int]:
        with urllib.request.urlopen(self.relay + "/healthz", timeout=10) as resp:
            return json.loads(resp.read())["counts"]

    def tick(self) -> None:
        req = urllib.request.Request(self.relay + "/tick/close_bucket", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_emulators("the delivery e2e")
    base = tmp_path_factory.mktemp("delivery-stack")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_EMULATOR_HOST") and not k.startswith("BACKBEAT_")
    }
    env.update(
        BACKBEAT_PROJECT=PROJECT,
        BACKBEAT_GRACE_S="30",
        BACKBEAT_FAULTS=FAULTS,
        BACKBEAT_DEDUPE_LOOKBACK="6",
        BACKBEAT_EVENTS_BUCKET=BUCKET,
    )
    data_dir = base / "data"
    up = run_cli(
        ["up", "--manifest", str(delivery_manifest(base / "manifest.yaml")), "--data-dir", str(data_dir)], env
    )
    assert up.returncode == 0, f"backbeat up failed:\n{up.stdout}\n{up.stderr}"
    try:
        yield Stack(data_dir, env)
    finally:
        down = run_cli(["down", "--data-dir", str(data_dir)], env, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr


@pytest.fixture(scope="module")
def platform(stack: Stack):
    saved = {k: os.environ.get(k) for k in stack.client_env}
    os.environ.update(stack.client_env)  # the google clients read the *_EMULATOR_HOST variables
    p = connect(stack.settings)
    yield p
    p.close()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _producer(platform, seed: int, watermark: bool = True) -> Producer:
    return Producer(
        platform.bus,
        REG,
        watermark=BacklogWatermark(platform.documents) if watermark else None,
        rng=random.Random(seed),
        backoff_s=0.1,
    )


def _drained(platform) -> bool:
    return not platform.documents.query("backlog")


def _close_and_wait(stack: Stack, platform, expected: set[tuple[str, str]], timeout: float = 120) -> dict:
    """Wait for ingest to drain, fire close_bucket, wait for every expected hour's _SUCCESS."""
    wait_for(lambda: _drained(platform), timeout, "ingest to drain the backlog")

    def done() -> bool:
        missing = [k for k in expected if platform.blobs.stat(BUCKET, H.success_name(*k)) is None]
        if missing:
            stack.tick()
        return not missing

    wait_for(done, timeout, f"_SUCCESS of {sorted(expected)}")
    return {k: json.loads(platform.blobs.get(BUCKET, H.success_name(*k))) for k in expected}


def _day_prefix(day: str) -> list[str]:
    return [f"final/{t}/dt={day}/" for t in TYPES]


def _ids_of(stream) -> dict[str, set[str]]:
    return {t: set(v) for t, v in stream.ids.items()}


def test_crashes_duplicates_and_shuffled_order_on_the_stack(stack: Stack, platform) -> None:
    hours = ["2026-01-05T10", "2026-01-05T11", "2026-01-05T12"]
    producer = _producer(platform, 1)
    stream = make_stream(producer, REG, types=TYPES, hours=hours, per_hour=200, seed=1, batch_size=50)
    envs = list(stream.envelopes)
    random.Random(1).shuffle(envs)  # publish order shuffled across hours
    republished = 0
    for i, env in enumerate(envs):
        producer.publish_envelope(env)
        if i % 20 == 3:  # 5% of the batches sent twice: new message id, same event ids
            producer.publish_envelope(producer.republish(env))
            republished += 1
    successes = _close_and_wait(stack, platform, {(t, h) for t in TYPES for h in hours})
    check = assert_exactly_once(platform, BUCKET, _ids_of(stream), day="2026-01-05")
    assert sum(s["duplicates"] for s in successes.values()) == republished * 50
    counts = stack.counts()
    assert counts.get("ingest:failed-retry", 0) > 0, counts  # injected crashes were retried by Pub/Sub
    assert counts.get("dedupe:failed-retry", 0) >= len(successes), counts  # every dedupe killed once
    assert set(check.successes) >= set(successes)


def test_late_batches_and_a_republish_after_the_close(stack: Stack, platform) -> None:
    hours = ["2026-01-06T10", "2026-01-06T11"]
    producer = _producer(platform, 2)
    stream = make_stream(producer, REG, types=TYPES, hours=hours, per_hour=150, seed=2, batch_size=50)
    envs = list(stream.envelopes)
    random.Random(2).shuffle(envs)
    early = [e for e in envs if e.attributes["receive_hour"] == hours[0]][:-2] + [
        e for e in envs if e.attributes["receive_hour"] == hours[1]
    ]
    late = [e for e in envs if e not in early]
    for env in early:
        producer.publish_envelope(env)
    closed = {
        (t, h)
        for t in TYPES
        for h in hours
        if any(e.attributes["type"] == t and e.attributes["receive_hour"] == h for e in early)
    }
    _close_and_wait(stack, platform, closed)
    before = {k: v for p in _day_prefix("2026-01-06") for k, v in snapshot(platform, BUCKET, p).items()}
    for env in late:  # after their hour closed: diverted into the next open hour as skewed rows
        producer.publish_envelope(env)
    again = producer.republish(early[0])  # a producer resending a batch of a closed hour
    producer.publish_envelope(again)
    wait_for(lambda: _drained(platform), 60, "the late batches")
    targets = set()
    for env in [*late, again]:
        t = env.attributes["type"]
        docs = platform.documents.query(f"hours/{t}_{env.attributes['receive_hour']}/diverted")
        targets |= {(t, d["target"]) for _, d in docs}
    assert targets and all(h > hours[1] or h == hours[1] for _, h in targets)
    successes = _close_and_wait(stack, platform, targets)
    assert_exactly_once(platform, BUCKET, _ids_of(stream), day="2026-01-06")
    after = {k: v for p in _day_prefix("2026-01-06") for k, v in snapshot(platform, BUCKET, p).items()}
    assert {k: after[k] for k in before} == before  # closed hours never change
    assert sum(s["skewed"] for s in successes.values()) == sum(len(e.event_ids) for e in late)
    assert sum(s["duplicates_prior_hours"] for s in successes.values()) == len(again.event_ids)


def _push(url: str, env: Envelope, message_id: str) -> int:
    body = json.dumps(
        {
            "message": {
                "data": base64.b64encode(env.data).decode(),
                "attributes": env.attributes,
                "messageId": message_id,
                "publishTime": "2026-01-07T12:00:00Z",
            },
            "subscription": "projects/p/subscriptions/direct",
        }
    ).encode()
    headers = {
        "ce-specversion": "1.0",
        "ce-id": message_id,
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": f"//pubsub.googleapis.com/projects/{PROJECT}/topics/events.{env.attributes['type']}",
        "content-type": "application/json",
    }
    req = urllib.request.Request(url + "/", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_every_message_delivered_twice_concurrently_to_the_function(stack: Stack, platform) -> None:
    hours = ["2026-01-07T10"]
    producer = _producer(platform, 3, watermark=False)
    stream = make_stream(producer, REG, types=TYPES, hours=hours, per_hour=200, seed=3, batch_size=50)
    statuses: list[int] = []

    def deliver(env: Envelope, mid: str, barrier: threading.Barrier) -> None:
        barrier.wait()
        for _ in range(5):  # an injected crash answers 500: retry like Pub/Sub would
            code = _push(stack.ingest_url, env, mid)
            if code < 300:
                statuses.append(code)
                return
        statuses.append(code)

    threads = []
    for n, env in enumerate(stream.envelopes):
        barrier = threading.Barrier(2)
        threads += [threading.Thread(target=deliver, args=(env, f"twice-{n}", barrier)) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(c < 300 for c in statuses) and len(statuses) == 2 * len(stream.envelopes)
    for n, env in enumerate(stream.envelopes):  # registered exactly once
        t = env.attributes["type"]
        assert platform.documents.get(H.file_doc(t, hours[0], f"twice-{n}")) is not None
    successes = _close_and_wait(stack, platform, {(t, hours[0]) for t in TYPES})
    assert all(s["duplicates"] == 0 for s in successes.values())
    assert_exactly_once(platform, BUCKET, _ids_of(stream), day="2026-01-07")


def test_close_racing_8_concurrent_ingests_on_the_stack(stack: Stack, platform) -> None:
    hour = "2026-01-08T10"
    producer = _producer(platform, 4, watermark=False)  # no backlog record: the close does not wait
    stream = make_stream(producer, REG, types=["play"], hours=[hour], per_hour=2000, seed=4, batch_size=25)
    mids = [producer.publish_envelope(stream.envelopes[0])]
    wait_for(lambda: platform.documents.get(H.hour_doc("play", hour)), 30, "the hour to open")
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            stack.tick()
            time.sleep(0.2)

    def placement() -> dict[str, list[str]]:
        """message id -> hours whose files hold it, following diversions (they can chain)."""
        where: dict[str, list[str]] = {}
        todo, seen = [hour], set()
        while todo:
            h = todo.pop()
            if h in seen:
                continue
            seen.add(h)
            todo += [d["target"] for _, d in platform.documents.query(f"hours/play_{h}/diverted")]
            for path, _doc in platform.documents.query(H.files_collection("play", h)):
                where.setdefault(path.rsplit("/", 1)[-1], []).append(h)
        return where

    th = threading.Thread(target=ticker)
    th.start()
    try:
        mids += [producer.publish_envelope(env) for env in stream.envelopes[1:]]
        wait_for(lambda: set(mids) <= set(placement()), 120, "every message registered")
    finally:
        stop.set()
        th.join()
    where = placement()
    assert set(where) == set(mids)  # never neither
    assert all(len(hs) == 1 for hs in where.values()), where  # never both
    targets = {hs[0] for hs in where.values()} - {hour}
    expected = {("play", hour)} | {("play", t) for t in targets}
    successes = _close_and_wait(stack, platform, expected)
    assert sum(s["rows_out"] for s in successes.values()) == 2000
    # each diverted-to hour is itself closed by the next tick, so the chain may cross midnight
    assert_exactly_once(platform, BUCKET, _ids_of(stream), day=tuple(h for _, h in successes))


def test_poison_message_reaches_the_dead_letter_topic_and_the_hour_reports_it(stack: Stack, platform) -> None:
    """An undecodable message: ingest sends it to ``ingest-dead-letter`` with the reason and accounts
    it in its hour, which closes and reports it. (A message the *bus* gives up on after
    max_delivery_attempts is covered in test_scenarios.py: the Pub/Sub emulator's push backoff made
    that path take from seconds to over four minutes here, too slow and too variable for this suite.)"""
    from google.cloud import pubsub_v1

    hour = "2026-02-09T10"
    subscriber = pubsub_v1.SubscriberClient()
    spy = subscriber.subscription_path(PROJECT, "e2e-dead-letter-spy")
    subscriber.create_subscription(
        request={"name": spy, "topic": subscriber.topic_path(PROJECT, "ingest-dead-letter")}
    )
    producer = _producer(platform, 5)
    stream = make_stream(producer, REG, types=["play"], hours=[hour], per_hour=300, seed=5, batch_size=50)
    for env in stream.envelopes[:-1]:
        producer.publish_envelope(env)
    src = stream.envelopes[-1]
    corrupt = Envelope(
        b"\x28\xb5\x2f\xfd not zstd at all", dict(src.attributes, batch_id="corrupt-1"), src.event_ids
    )
    corrupt_id = producer.publish_envelope(corrupt)
    successes = _close_and_wait(stack, platform, {("play", hour)})
    s = successes[("play", hour)]
    assert s["dead_letter_events"] == len(corrupt.event_ids) and s["rows_out"] == 300 - len(corrupt.event_ids)
    manifest = json.loads(platform.blobs.get(BUCKET, H.manifest_name("play", hour)))
    assert manifest["dead_letters"]["messages"] == 1
    assert "payload is not zstd" in manifest["dead_letters"]["entries"][0]["reasons"][0]
    dead: list[Any] = []

    def pulled() -> bool:
        resp = subscriber.pull(request={"subscription": spy, "max_messages": 10}, timeout=10)
        if resp.received_messages:
            subscriber.acknowledge(
                request={"subscription": spy, "ack_ids": [m.ack_id for m in resp.received_messages]}
            )
            dead.extend(m.message for m in resp.received_messages)
        return any(m.attributes.get("source_message_id") == corrupt_id for m in dead)

    wait_for(pulled, 60, "the poison message on ingest-dead-letter")
    msg = next(m for m in dead if m.attributes.get("source_message_id") == corrupt_id)
    assert "not zstd" in msg.attributes["reason"] and msg.attributes["receive_hour"] == hour
    assert msg.data == corrupt.data  # the original bytes, for inspection or replay
    subscriber.close()
    assert_exactly_once(
        platform, BUCKET, _ids_of(stream), dead={"play": set(corrupt.event_ids)}, day="2026-02-09"
    )
