"""The push relay and the scheduler of the local stack, over real loopback HTTP (no emulators)."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from backbeat.stack.relay import STORAGE_ROUTE, Relay, Route, serve
from backbeat.stack.scheduler import Scheduler
from tests.stacktools import FakeFunction


@pytest.fixture()
def fn() -> Iterator[FakeFunction]:
    f = FakeFunction()
    yield f
    f.close()


def push(data: bytes, attributes: dict[str, str] | None = None, mid: str = "42") -> dict[str, Any]:
    return {
        "subscription": "projects/p/subscriptions/s",
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes or {},
            "messageId": mid,
            "publishTime": "2026-01-01T00:00:00.000Z",
        },
    }


def routes(url: str, **kw: Any) -> dict[str, Route]:
    base = {"function": "f", "url": url, "signature": "cloudevent", "retry": True, "timeout_s": 5.0}
    base.update(kw)
    return {"f": Route(**base)}


def test_topic_push_becomes_an_eventarc_pubsub_cloudevent(fn: FakeFunction) -> None:
    relay = Relay("proj", routes(fn.url))
    result = relay.deliver("f", "events.play", push(b"hi", {"a": "b"}))
    assert (result.status, result.outcome) == (204, "delivered")
    headers, body = fn.requests[0]
    assert headers["ce-type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert headers["ce-source"] == "//pubsub.googleapis.com/projects/proj/topics/events.play"
    assert headers["ce-id"] == "42" and headers["ce-specversion"] == "1.0"
    data = json.loads(body)
    assert base64.b64decode(data["message"]["data"]) == b"hi"
    assert data["message"]["attributes"] == {"a": "b"}
    assert data["subscription"] == "projects/p/subscriptions/s"


def test_storage_push_is_filtered_by_bucket_and_prefix(fn: FakeFunction) -> None:
    relay = Relay("proj", routes(fn.url, bucket="bkt", prefix="staging/"))

    def note(bucket: str, name: str, event: str = "OBJECT_FINALIZE") -> dict[str, Any]:
        obj = {"bucket": bucket, "name": name, "size": "3", "updated": "2026-01-01T00:00:00Z"}
        return push(json.dumps(obj).encode(), {"eventType": event, "bucketId": bucket, "objectId": name})

    assert relay.deliver("f", STORAGE_ROUTE, note("bkt", "final/x")).outcome == "filtered"
    assert relay.deliver("f", STORAGE_ROUTE, note("other", "staging/x")).outcome == "filtered"
    assert relay.deliver("f", STORAGE_ROUTE, note("bkt", "staging/x", "OBJECT_DELETE")).outcome == "filtered"
    assert fn.requests == []
    assert relay.deliver("f", STORAGE_ROUTE, note("bkt", "staging/x")).outcome == "delivered"
    headers, body = fn.requests[0]
    assert headers["ce-type"] == "google.cloud.storage.object.v1.finalized"
    assert headers["ce-source"] == "//storage.googleapis.com/projects/_/buckets/bkt"
    assert headers["ce-subject"] == "objects/staging/x"
    assert json.loads(body)["name"] == "staging/x"


def test_failure_retries_or_drops_per_the_retry_setting(fn: FakeFunction) -> None:
    fn.status = 500
    assert Relay("p", routes(fn.url)).deliver("f", "t-1", push(b"x")).status == 500  # emulator redelivers
    dropped = Relay("p", routes(fn.url, retry=False)).deliver("f", "t-1", push(b"x"))
    assert (dropped.status, dropped.outcome) == (204, "failed-dropped")
    unreachable = Relay("p", routes("http://127.0.0.1:9", retry=True)).deliver("f", "t-1", push(b"x"))
    assert unreachable.status == 500


def test_http_function_gets_the_raw_push_body(fn: FakeFunction) -> None:
    body = push(b"raw")
    Relay("p", routes(fn.url, signature="http")).deliver("f", "t-1", body)
    headers, sent = fn.requests[0]
    assert "ce-type" not in headers and json.loads(sent) == body


def test_relay_http_server_routes_push_tick_and_health(fn: FakeFunction) -> None:
    published: list[tuple[str, bytes, dict[str, str]]] = []
    sched = Scheduler({"f": "0 0 1 1 *"}, lambda t, d, a: published.append((t, d, dict(a))) or "m-1")
    server = serve(Relay("p", routes(fn.url), tick=sched.fire))
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        req = urllib.request.Request(
            f"{base}/push/f/topic-a", data=json.dumps(push(b"z")).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 204
        with urllib.request.urlopen(
            urllib.request.Request(f"{base}/tick/f", data=b"", method="POST")
        ) as resp:
            assert json.loads(resp.read()) == {"messageId": "m-1"}
        assert published[0][0] == "tick.f" and json.loads(published[0][1])["function"] == "f"
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as resp:
            assert json.loads(resp.read())["counts"] == {"f:delivered": 1}
        bad = urllib.request.Request(f"{base}/push/f/topic-a", data=b"not json", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(bad, timeout=5)
        assert info.value.code == 400
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(f"{base}/tick/nope", data=b"", method="POST"))
        assert info.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_scheduler_fires_only_matching_minutes() -> None:
    published: list[tuple[str, dict[str, str]]] = []
    sched = Scheduler(
        {"every5": "*/5 * * * *", "hourly": "0 * * * *"},
        lambda topic, data, attrs: published.append((topic, dict(attrs))) or "id",
    )
    assert sched.run_minute(datetime(2026, 1, 1, 10, 0, tzinfo=UTC)) == ["every5", "hourly"]
    assert sched.run_minute(datetime(2026, 1, 1, 10, 3, tzinfo=UTC)) == []
    assert sched.run_minute(datetime(2026, 1, 1, 10, 5, tzinfo=UTC)) == ["every5"]
    assert published == [
        ("tick.every5", {"function": "every5", "scheduled_time": "2026-01-01T10:00:00Z"}),
        ("tick.hourly", {"function": "hourly", "scheduled_time": "2026-01-01T10:00:00Z"}),
        ("tick.every5", {"function": "every5", "scheduled_time": "2026-01-01T10:05:00Z"}),
    ]
    with pytest.raises(KeyError):
        sched.fire("unknown")
