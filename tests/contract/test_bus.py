"""Bus contract: the same tests over LocalBus and PubSubBus (emulator)."""

from __future__ import annotations

import threading

import pytest

from backbeat.cloud.ports import Bus, Message, NotFound
from backbeat.errors import ConfigError
from tests.contract.helpers import wait_for


class Recorder:
    """A handler that records every delivery and fails the first ``fail_first`` attempts."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.seen: list[Message] = []
        self._lock = threading.Lock()

    def __call__(self, msg: Message) -> None:
        with self._lock:
            self.seen.append(msg)
        if msg.delivery_attempt <= self.fail_first:
            raise RuntimeError(f"planned failure on attempt {msg.delivery_attempt}")


FAST = {"min_backoff_s": 0.05, "max_backoff_s": 0.2}


def test_publish_with_attributes(bus: Bus, uid: str) -> None:
    topic = f"t-{uid}"
    bus.ensure_topic(topic)
    bus.ensure_topic(topic)  # idempotent
    rec = Recorder()
    sub = bus.subscribe(topic, f"s-{uid}", rec, **FAST)
    ids = [bus.publish(topic, f"m{i}".encode(), {"kind": "play", "i": str(i)}) for i in range(3)]
    assert len(set(ids)) == 3 and all(ids)
    assert wait_for(lambda: len({m.message_id for m in rec.seen}) == 3, bus=bus)
    by_data = {m.data: m for m in rec.seen}
    assert sorted(by_data) == [b"m0", b"m1", b"m2"]
    for i in range(3):
        m = by_data[f"m{i}".encode()]
        assert dict(m.attributes) == {"kind": "play", "i": str(i)}
        assert m.delivery_attempt == 1 and m.message_id in ids
    sub.close()


def test_redelivery_after_handler_failure(bus: Bus, uid: str) -> None:
    topic = f"t-{uid}"
    bus.ensure_topic(topic)
    rec = Recorder(fail_first=2)
    dead = Recorder()
    bus.subscribe(topic, f"s-{uid}", rec, dead_letter_topic=f"dl-{uid}", max_delivery_attempts=5, **FAST)
    bus.subscribe(f"dl-{uid}", f"dls-{uid}", dead, **FAST)
    bus.publish(topic, b"flaky", {"a": "1"})
    assert wait_for(lambda: len(rec.seen) >= 3, bus=bus)
    attempts = [m.delivery_attempt for m in rec.seen]
    assert attempts[:3] == [1, 2, 3]  # delivery_attempt grows with each redelivery
    assert all(m.data == b"flaky" and dict(m.attributes) == {"a": "1"} for m in rec.seen)
    bus.drain(timeout_s=5)
    assert dead.seen == []  # succeeded on attempt 3: never dead-lettered


def test_dead_letter_after_max_attempts(bus: Bus, uid: str) -> None:
    topic, dlq = f"t-{uid}", f"dl-{uid}"
    bus.ensure_topic(topic)
    rec = Recorder(fail_first=1000)
    dead = Recorder()
    bus.subscribe(topic, f"s-{uid}", rec, dead_letter_topic=dlq, max_delivery_attempts=5, **FAST)
    bus.subscribe(dlq, f"dls-{uid}", dead, **FAST)
    bus.publish(topic, b"poison", {"source": "contract", "kind": "bad"})
    assert wait_for(lambda: len(dead.seen) == 1, timeout_s=40, bus=bus)
    assert [m.delivery_attempt for m in rec.seen][:5] == [1, 2, 3, 4, 5]
    msg = dead.seen[0]
    assert msg.data == b"poison"
    assert msg.attributes["source"] == "contract" and msg.attributes["kind"] == "bad"  # kept intact
    assert msg.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert msg.attributes["CloudPubSubDeadLetterSourceSubscription"].endswith(f"s-{uid}")


def test_closed_subscription_gets_no_more_messages(bus: Bus, uid: str) -> None:
    topic = f"t-{uid}"
    bus.ensure_topic(topic)
    rec = Recorder()
    sub = bus.subscribe(topic, f"s-{uid}", rec, **FAST)
    bus.publish(topic, b"before")
    assert wait_for(lambda: len(rec.seen) == 1, bus=bus)
    sub.close()
    bus.publish(topic, b"after")
    bus.drain(timeout_s=2)
    assert [m.data for m in rec.seen] == [b"before"]


def test_errors_are_typed(bus: Bus, uid: str) -> None:
    with pytest.raises(NotFound):
        bus.publish(f"missing-{uid}", b"x")
    with pytest.raises(NotFound):
        bus.subscribe(f"missing-{uid}", f"s-{uid}", Recorder())
    bus.ensure_topic(f"t-{uid}")
    with pytest.raises(ConfigError, match="max_delivery_attempts"):
        bus.subscribe(f"t-{uid}", f"s-{uid}", Recorder(), max_delivery_attempts=2)
