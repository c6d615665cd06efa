"""The chaos hooks (BACKBEAT_FAULTS) and the CloudEvent glue of the function adapters."""

from __future__ import annotations

import base64
import random

import pytest
from cloudevents.http import CloudEvent

from backbeat.delivery import faults
from backbeat.delivery import hours as H
from backbeat.delivery.envelope import make_envelope
from backbeat.delivery.functions import message_from_event
from backbeat.delivery.registry import default_registry
from backbeat.delivery.synth import make_events
from backbeat.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("BACKBEAT_FAULTS", raising=False)
    faults.reset()
    yield
    faults.reset()


def test_faults_fire_once_per_key_for_a_deterministic_share(monkeypatch):
    monkeypatch.setenv("BACKBEAT_FAULTS", "ingest.after_upload=0.5")
    faults.reset()
    keys = [f"m{i}" for i in range(200)]
    fired = []
    for k in keys:
        try:
            faults.point("ingest.after_upload", k)
        except faults.InjectedFault:
            fired.append(k)
    assert 60 < len(fired) < 140
    assert fired == [k for k in keys if faults.selected("ingest.after_upload", k, 0.5)]
    for k in fired:  # the retry goes through
        faults.point("ingest.after_upload", k)
    faults.point("dedupe.before_success", "play/2026-01-01T10")  # not configured: no-op


def test_poison_spec_fails_every_time_and_bad_specs_are_named(monkeypatch):
    monkeypatch.setenv("BACKBEAT_FAULTS", "ingest.poison@poison-")
    for _ in range(3):
        with pytest.raises(faults.InjectedFault):
            faults.poison("ingest.poison", "poison-1")
    faults.poison("ingest.poison", "healthy")
    monkeypatch.setenv("BACKBEAT_FAULTS", "ingest.after_upload=lots")
    faults.reset()
    with pytest.raises(ConfigError, match="ingest.after_upload=lots"):
        faults.point("ingest.after_upload", "k")


def test_message_from_an_eventarc_pubsub_cloudevent():
    reg = default_registry()
    events = make_events(reg.latest("skip"), 3, rng=random.Random(1), start=H.hour_start("2026-01-01T10"))
    env = make_envelope(reg.latest("skip"), events, batch_id="b1")
    event = CloudEvent(
        {
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "id": "42",
            "source": "//pubsub.googleapis.com/projects/p/topics/events.skip",
        },
        {
            "message": {
                "data": base64.b64encode(env.data).decode(),
                "attributes": env.attributes,
                "messageId": "42",
                "publishTime": "2026-01-01T10:00:01.5Z",
            },
            "deliveryAttempt": 3,
            "subscription": "s",
        },
    )
    m = message_from_event(event)
    assert (m.data, dict(m.attributes), m.message_id, m.delivery_attempt, m.topic) == (
        env.data,
        env.attributes,
        "42",
        3,
        "events.skip",
    )
    assert m.publish_time == H.parse_time("2026-01-01T10:00:01.5Z")
