"""Dead-lettering on the ``backbeat up`` stack, fast and deterministic, with ``deliveryAttempt``.

One stack runs the event-delivery functions of functions/manifest.yaml (ingest,
ingest_dead_letters, close_bucket, dedupe) plus the test function ``picky``
(tests/e2e/fixtures/recorder), on the real Pub/Sub, Firestore and fake-gcs-server emulators.

* A poison message (its handler raises every time) in a healthy stream: Pub/Sub redelivers it
  through the push relay, the handler sees ``deliveryAttempt`` 1, 2, 3, 4, 5, and the dead-letter
  policy then moves it to the dead-letter topic with ``CloudPubSubDeadLetterSourceDeliveryCount=5``;
  every other message is delivered exactly once, on its first attempt.
* The same through the real ingest (``BACKBEAT_FAULTS=ingest.poison@poison-`` makes it raise on one
  batch every time): the bus dead-letters the batch after 5 attempts, ``ingest_dead_letters``
  accounts it, and its hour closes and reports it, with nothing else lost or duplicated.

The stack sets no retry policy on its push subscriptions, so the emulator redelivers about once a
second (with one it waited ~3 s per attempt and could stall for minutes): each poison message is
dead-lettered ~5 s after it is published; the module takes ~40 s including ``up`` and ``down``.
The relay's attempt bookkeeping is also checked in-process against a loopback function server.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from backbeat.stack.relay import Relay, Route
from tests.stacktools import FakeFunction, require_emulators, run_cli, wait_for

REPO = Path(__file__).resolve().parents[2]
RECORDER = Path(__file__).resolve().parent / "fixtures" / "recorder"
PROJECT = "backbeat-e2e-dl"
BUCKET = "backbeat-events"
TOPIC, DEAD_TOPIC = "e2e-dl-stream", "e2e-dl-dead"
STREAM = 60  # healthy messages around the poison one
DELIVERY = ("ingest", "ingest_dead_letters", "close_bucket", "dedupe")


def write_manifest(path: Path) -> Path:
    """functions/manifest.yaml's delivery functions (absolute paths, the scheduler's own cron off:
    the test ticks close_bucket itself) and ``picky``, which raises on messages with poison=1."""
    raw = yaml.safe_load((REPO / "functions" / "manifest.yaml").read_text())
    raw["functions"] = {k: v for k, v in raw["functions"].items() if k in DELIVERY}
    assert set(raw["functions"]) == set(DELIVERY), "delivery functions missing from functions/manifest.yaml"
    for fn in raw["functions"].values():
        fn["source"] = str(REPO / fn["source"])
        fn["max_instances"] = min(int(fn.get("max_instances", 4)), 4)
    raw["event_types"]["schemas_dir"] = str(REPO / raw["event_types"]["schemas_dir"])
    raw["functions"]["close_bucket"]["trigger"]["schedule"] = "0 0 1 1 *"
    raw["functions"]["picky"] = {
        "description": "Records every message and raises on those with attribute poison=1.",
        "source": str(RECORDER),
        "entry_point": "picky",
        "trigger": {"topic": TOPIC},
        "dead_letter_topic": DEAD_TOPIC,
        "max_delivery_attempts": 5,
        "retry": True,
        "timeout_s": 20,
        "max_instances": 4,
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def records(folder: Path) -> list[dict[str, Any]]:
    path = folder / "picky.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_emulators()
    base = tmp_path_factory.mktemp("dl-stack")
    data_dir, record_dir = base / "data", base / "records"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_EMULATOR_HOST") and not k.startswith("BACKBEAT_")
    }
    env.update(
        RECORDER_DIR=str(record_dir),
        BACKBEAT_PROJECT=PROJECT,
        BACKBEAT_EVENTS_BUCKET=BUCKET,
        BACKBEAT_FAULTS="ingest.poison@poison-",  # ingest raises on batches whose id starts so
    )
    manifest = write_manifest(base / "manifest.yaml")
    up = run_cli(["up", "--manifest", str(manifest), "--data-dir", str(data_dir)], env)
    assert up.returncode == 0, f"backbeat up failed:\n{up.stdout}\n{up.stderr}"
    state = json.loads((data_dir / "stack" / "state.json").read_text())
    try:
        yield {"state": state, "records": record_dir, "env": env}
    finally:
        down = run_cli(["down", "--data-dir", str(data_dir)], env, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr


@pytest.mark.e2e
@pytest.mark.emulators
@pytest.mark.slow
def test_poison_message_is_dead_lettered_after_exactly_5_attempts(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.cloud import pubsub_v1

    for k, v in stack["state"]["env"].items():
        monkeypatch.setenv(k, v)
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(PROJECT, TOPIC)
    futures = [publisher.publish(topic, f"event {i}".encode(), n=str(i)) for i in range(STREAM // 2)]
    poison_id = publisher.publish(topic, b"poison", poison="1").result(30)
    futures += [publisher.publish(topic, f"event {i}".encode(), n=str(i)) for i in range(STREAM // 2, STREAM)]
    healthy = {f.result(30) for f in futures}
    started = time.monotonic()

    subscriber = pubsub_v1.SubscriberClient()
    dead_sub = subscriber.subscription_path(PROJECT, f"{DEAD_TOPIC}-sub")  # made by the stack
    dead: list[Any] = []

    def pulled(timeout: float = 5) -> bool:  # the emulator answers as soon as a message is there
        resp = subscriber.pull(request={"subscription": dead_sub, "max_messages": 10}, timeout=timeout)
        if resp.received_messages:
            subscriber.acknowledge(
                request={"subscription": dead_sub, "ack_ids": [m.ack_id for m in resp.received_messages]}
            )
            dead.extend(m.message for m in resp.received_messages)
        return any(m.data == b"poison" for m in dead)

    wait_for(pulled, 30, "the poison message on the dead-letter topic")
    took = time.monotonic() - started
    pulled(timeout=1.5)  # room for a (wrong) sixth push or a late healthy redelivery to show up
    subscriber.close()

    # the dead-letter topic holds the poison message only, marked with 5 delivery attempts
    assert [m.data for m in dead] == [b"poison"]
    msg = dead[0]
    assert msg.attributes["poison"] == "1"
    assert msg.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert msg.attributes["CloudPubSubDeadLetterSourceSubscription"] == f"picky--{TOPIC}"

    got = records(stack["records"])
    attempts = [r for r in got if r["id"] == poison_id]
    assert [r["data"]["deliveryAttempt"] for r in attempts] == [1, 2, 3, 4, 5], attempts
    assert all(r["outcome"] == "failed" for r in attempts)
    # the rest of the stream is unaffected: every message once, on its first attempt, none failed
    rest = [r for r in got if r["id"] != poison_id]
    assert sorted(r["id"] for r in rest) == sorted(healthy)
    assert {(r["outcome"], r["data"]["deliveryAttempt"]) for r in rest} == {("ok", 1)}
    assert {base64.b64decode(r["data"]["message"]["data"]) for r in rest} == {
        f"event {i}".encode() for i in range(STREAM)
    }

    counts = _relay_counts(stack)
    assert counts.get("picky:failed-retry") == 5 and counts.get("picky:delivered") == STREAM, counts
    print(f"poison dead-lettered {took:.1f}s after publishing")


def _relay_counts(stack: dict[str, Any]) -> dict[str, int]:
    relay = next(p for p in stack["state"]["pieces"] if p["name"] == "push relay + scheduler")
    with urllib.request.urlopen(relay["url"] + "/healthz", timeout=10) as resp:
        return json.loads(resp.read())["counts"]


@pytest.mark.e2e
@pytest.mark.emulators
@pytest.mark.slow
def test_ingest_poison_batch_is_dead_lettered_by_the_bus_and_its_hour_reports_it(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    from google.cloud import pubsub_v1

    from backbeat.cloud import connect
    from backbeat.delivery import hours as H
    from backbeat.delivery.envelope import Envelope
    from backbeat.delivery.producer import Producer
    from backbeat.delivery.registry import default_registry
    from backbeat.delivery.synth import make_events
    from backbeat.delivery.watermark import BacklogWatermark
    from backbeat.settings import Settings

    client_env = dict(stack["state"]["env"], BACKBEAT_BACKEND="gcp", BACKBEAT_PROJECT=PROJECT)
    for k, v in client_env.items():
        monkeypatch.setenv(k, v)
    platform = connect(Settings.from_env({**client_env, "BACKBEAT_EVENTS_BUCKET": BUCKET}))
    reg = default_registry()
    hour = "2026-03-10T10"
    producer = Producer(
        platform.bus, reg, watermark=BacklogWatermark(platform.documents), rng=random.Random(8), backoff_s=0.1
    )
    producer.batch_size = 50
    rng = random.Random(8)
    sent: dict[str, set[str]] = {}
    envs = []
    for t in ("play", "search"):
        events = make_events(reg.latest(t), 200, rng=rng, start=H.hour_start(hour), spread_s=3600)
        sent[t] = {e["event_id"] for e in events}
        envs += producer.envelopes(t, events)
    src = envs[2]  # a play batch, sent under a batch id that makes ingest raise every time
    poison = Envelope(src.data, dict(src.attributes, batch_id="poison-1"), src.event_ids)
    failed_before = _relay_counts(stack).get("ingest:failed-retry", 0)
    for env in envs[:2] + [poison] + envs[3:]:
        producer.publish_envelope(env)

    subscriber = pubsub_v1.SubscriberClient()
    dead_sub = subscriber.subscription_path(PROJECT, "ingest-dead-letter-sub")  # made by the stack
    dead: list[Any] = []

    def pulled() -> bool:
        resp = subscriber.pull(request={"subscription": dead_sub, "max_messages": 10}, timeout=2)
        if resp.received_messages:
            subscriber.acknowledge(
                request={"subscription": dead_sub, "ack_ids": [m.ack_id for m in resp.received_messages]}
            )
            dead.extend(m.message for m in resp.received_messages)
        return any(m.attributes.get("batch_id") == "poison-1" for m in dead)

    wait_for(pulled, 30, "the poison batch on ingest-dead-letter")
    subscriber.close()
    msg = next(m for m in dead if m.attributes.get("batch_id") == "poison-1")
    assert msg.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert msg.attributes["CloudPubSubDeadLetterSourceSubscription"] == "ingest--events.play"
    assert msg.data == poison.data
    assert _relay_counts(stack).get("ingest:failed-retry", 0) - failed_before == 5

    # ingest_dead_letters accounts it (backlog record gone), then the hour closes and reports it
    wait_for(lambda: not platform.documents.query("backlog"), 30, "the backlog to drain")
    relay = next(p for p in stack["state"]["pieces"] if p["name"] == "push relay + scheduler")

    def closed() -> bool:
        if all(platform.blobs.stat(BUCKET, H.success_name(t, hour)) for t in sent):
            return True
        req = urllib.request.Request(relay["url"] + "/tick/close_bucket", data=b"", method="POST")
        urllib.request.urlopen(req, timeout=30).read()
        return False

    wait_for(closed, 60, f"the _SUCCESS of {hour}")
    s = {t: json.loads(platform.blobs.get(BUCKET, H.success_name(t, hour))) for t in sent}
    assert s["play"]["dead_letter_events"] == len(poison.event_ids) == 50
    manifest = json.loads(platform.blobs.get(BUCKET, H.manifest_name("play", hour)))
    reasons = [r for e in manifest["dead_letters"]["entries"] for r in e["reasons"]]
    assert reasons == ["delivery attempts exhausted (5 attempts)"]  # the source subscription's count
    assert (s["play"]["rows_out"], s["search"]["rows_out"], s["search"]["dead_letter_events"]) == (
        150,
        200,
        0,
    )
    import fastavro

    final: dict[str, list[str]] = {}
    for t, success in s.items():
        for part in success["parts"]:
            final.setdefault(t, []).extend(
                r["event_id"] for r in fastavro.reader(io.BytesIO(platform.blobs.get(BUCKET, part)))
            )
    assert sorted(final["play"]) == sorted(sent["play"] - set(poison.event_ids))  # once each, none lost
    assert sorted(final["search"]) == sorted(sent["search"])
    platform.close()


# ------------------------------------------------------------------- the relay's attempt counter
@pytest.fixture()
def fn() -> Iterator[FakeFunction]:
    f = FakeFunction(status=500)
    yield f
    f.close()


def _push(mid: str, sub: str = "projects/p/subscriptions/s", **extra: Any) -> dict[str, Any]:
    return {"subscription": sub, "message": {"data": "", "messageId": mid, "publishTime": "x"}, **extra}


def test_relay_counts_attempts_per_message_and_forgets_settled_ones(fn: FakeFunction) -> None:
    route = Route("f", fn.url, "cloudevent", retry=True, timeout_s=5.0, max_delivery_attempts=3)
    relay = Relay("p", {"f": route})
    for _ in range(2):
        assert relay.deliver("f", "t-1", _push("m1")).status == 500
    relay.deliver("f", "t-1", _push("m2"))
    relay.deliver("f", "t-1", _push("m1", sub="projects/p/subscriptions/other"))
    fn.status = 200
    relay.deliver("f", "t-1", _push("m1"))  # third attempt succeeds: acked, count forgotten
    relay.deliver("f", "t-1", _push("m1"))  # a later duplicate delivery starts again at 1
    assert [(b["message"]["messageId"], b["deliveryAttempt"]) for b in fn.bodies] == [
        ("m1", 1),
        ("m1", 2),
        ("m2", 1),
        ("m1", 1),
        ("m1", 3),
        ("m1", 1),
    ]
    fn.status = 500
    for _ in range(3):
        relay.deliver("f", "t-1", _push("m3"))
    assert ("projects/p/subscriptions/s", "m3") not in relay._attempts  # dead-lettered: forgotten


def test_relay_passes_the_push_bodys_attempt_through_and_omits_it_without_dead_letters(
    fn: FakeFunction,
) -> None:
    with_dl = Route("f", fn.url, "cloudevent", retry=True, timeout_s=5.0, max_delivery_attempts=5)
    Relay("p", {"f": with_dl}).deliver("f", "t-1", _push("m1", deliveryAttempt=4))
    http = Route("f", fn.url, "http", retry=True, timeout_s=5.0, max_delivery_attempts=5)
    Relay("p", {"f": http}).deliver("f", "t-1", _push("m1"))
    plain = Route("f", fn.url, "cloudevent", retry=True, timeout_s=5.0)
    Relay("p", {"f": plain}).deliver("f", "t-1", _push("m1"))
    assert fn.bodies[0]["deliveryAttempt"] == 4
    assert fn.bodies[1]["deliveryAttempt"] == 1 and fn.bodies[1]["message"]["messageId"] == "m1"
    assert "deliveryAttempt" not in fn.bodies[2]  # as in Pub/Sub: only with a dead-letter policy
