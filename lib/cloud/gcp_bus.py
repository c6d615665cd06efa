"""The ``gcp`` bus adapter: google-cloud-pubsub (also against the Pub/Sub emulator).

``subscribe`` creates (or reuses) a subscription with a retry policy (exponential backoff between
``min_backoff_s`` and ``max_backoff_s``) and, when a dead-letter topic is given, a dead-letter
policy with ``max_delivery_attempts``; the server then counts attempts, redelivers and moves
poison messages with Pub/Sub's ``CloudPubSubDeadLetterSource*`` attributes. Delivery is streaming
pull with a callback: the handler returning acks, raising nacks. On Google Cloud the Pub/Sub
service agent needs publisher on the dead-letter topic and subscriber on the subscription
(Terraform grants both). Without a dead-letter topic Pub/Sub retries until retention expires.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from backbeat.cloud._gcp import emulator_env, map_error, mapped
from backbeat.cloud.local_bus import check_attributes, check_delivery_policy, check_name
from backbeat.cloud.ports import CloudError, Handler, Message
from backbeat.settings import Settings

log = logging.getLogger(__name__)


class PubSubSubscription:
    """A running streaming pull; ``close()`` stops it (the subscription itself stays)."""

    def __init__(self, name: str, future: Any) -> None:
        self.name = name
        self._future = future

    def close(self) -> None:
        self._future.cancel()
        with contextlib.suppress(Exception):
            self._future.result(timeout=10)


class PubSubBus:
    """Pub/Sub through the official client (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        from google.cloud import pubsub_v1

        self.settings = settings
        self.project = settings.project
        with emulator_env(settings):
            self._publisher = pubsub_v1.PublisherClient()
            self._subscriber = pubsub_v1.SubscriberClient()
        self._subs: list[PubSubSubscription] = []
        self._cv = threading.Condition()
        self._active = 0
        self._last_activity = 0.0

    def topic_path(self, topic: str) -> str:
        if topic.startswith("projects/"):
            return topic
        return f"projects/{self.project}/topics/{check_name('topic', topic)}"

    def subscription_path(self, subscription: str) -> str:
        if subscription.startswith("projects/"):
            return subscription
        return f"projects/{self.project}/subscriptions/{check_name('subscription', subscription)}"

    def ensure_topic(self, topic: str) -> None:
        from google.api_core import exceptions as gx

        path = self.topic_path(topic)
        with mapped(f"topic {path}"):
            try:
                self._publisher.create_topic(name=path)
            except gx.AlreadyExists:
                pass

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise CloudError(f"publish to {topic!r}: data must be bytes, got {type(data).__name__}")
        path = self.topic_path(topic)
        attrs = check_attributes(attributes)
        with mapped(f"publish to {path}"):
            return str(self._publisher.publish(path, bytes(data), **attrs).result(timeout=60))

    def subscribe(
        self,
        topic: str,
        subscription: str,
        handler: Handler,
        *,
        max_delivery_attempts: int = 5,
        dead_letter_topic: str | None = None,
        min_backoff_s: float = 0.1,
        max_backoff_s: float = 10.0,
    ) -> PubSubSubscription:
        from google.api_core import exceptions as gx
        from google.protobuf.duration_pb2 import Duration
        from google.pubsub_v1.types import DeadLetterPolicy, RetryPolicy

        check_delivery_policy(max_delivery_attempts, min_backoff_s, max_backoff_s)
        topic_path = self.topic_path(topic)
        sub_path = self.subscription_path(subscription)
        request: dict[str, Any] = {
            "name": sub_path,
            "topic": topic_path,
            "ack_deadline_seconds": 30,
            "retry_policy": RetryPolicy(minimum_backoff=_duration(Duration, min_backoff_s),
                                        maximum_backoff=_duration(Duration, max_backoff_s)),
        }  # fmt: skip
        if dead_letter_topic:
            self.ensure_topic(dead_letter_topic)
            request["dead_letter_policy"] = DeadLetterPolicy(
                dead_letter_topic=self.topic_path(dead_letter_topic),
                max_delivery_attempts=int(max_delivery_attempts),
            )
        with mapped(f"subscription {sub_path} on {topic_path}"):
            try:
                self._subscriber.create_subscription(request=request)
            except gx.AlreadyExists:
                existing = self._subscriber.get_subscription(subscription=sub_path)
                if existing.topic != topic_path:
                    raise CloudError(
                        f"subscription {sub_path} exists on {existing.topic}, not {topic_path}"
                    ) from None

        def callback(pm: Any) -> None:
            with self._cv:
                self._active += 1
                self._last_activity = time.monotonic()
            try:
                msg = Message(
                    data=bytes(pm.data),
                    attributes=dict(pm.attributes),
                    message_id=str(pm.message_id),
                    publish_time=pm.publish_time,
                    delivery_attempt=int(pm.delivery_attempt or 1),
                    topic=topic,
                )
                try:
                    handler(msg)
                except Exception as exc:  # the handler's failure is a nack
                    log.info("pubsub: %s nacked %s (attempt %s): %s", subscription, pm.message_id,
                             pm.delivery_attempt, exc)  # fmt: skip
                    pm.nack()
                else:
                    pm.ack()
            finally:
                with self._cv:
                    self._active -= 1
                    self._last_activity = time.monotonic()
                    self._cv.notify_all()

        with mapped(f"subscription {sub_path}"):
            future = self._subscriber.subscribe(sub_path, callback)
        sub = PubSubSubscription(subscription, future)
        self._subs.append(sub)
        return sub

    def drain(self, timeout_s: float = 30.0, quiet_s: float = 1.0) -> None:
        """Best effort: wait until no callback is running and none has run for ``quiet_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while time.monotonic() < deadline:
                idle = self._active == 0 and time.monotonic() - self._last_activity >= quiet_s
                if idle:
                    return
                self._cv.wait(timeout=0.1)

    def delete_subscription(self, subscription: str) -> None:
        from google.api_core import exceptions as gx

        path = self.subscription_path(subscription)
        try:
            self._subscriber.delete_subscription(subscription=path)
        except gx.NotFound:
            pass
        except gx.GoogleAPIError as exc:
            raise map_error(exc, f"subscription {path}") from exc

    def close(self) -> None:
        for sub in self._subs:
            sub.close()
        self._subs.clear()
        with contextlib.suppress(Exception):
            self._subscriber.close()
        with contextlib.suppress(Exception):
            self._publisher.stop()

    def __repr__(self) -> str:
        return f"PubSubBus(project={self.project!r}, emulator={self.settings.pubsub_emulator_host!r})"


def _duration(cls: Any, seconds: float) -> Any:
    whole = int(seconds)
    return cls(seconds=whole, nanos=int(round((seconds - whole) * 1e9)))
