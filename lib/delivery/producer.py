"""The producer library: batch per (type, hour), compress, publish, retry with the same ids.

Every event keeps the ``event_id`` and ``received_at`` it was given (stamped once at the edge);
a retried publish resends the identical envelope (same batch id, same event ids), so whatever the
bus does, dedupe sees duplicates it can remove, never new events. Before publishing, the batch is
recorded in the backlog watermark (when one is given) so an hour cannot close while it is in flight.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backbeat.cloud.ports import Bus
from backbeat.delivery.config import events_topic
from backbeat.delivery.envelope import Envelope, make_envelope, micros_of
from backbeat.delivery.errors import DeliveryError
from backbeat.delivery.hours import hour_of_micros
from backbeat.delivery.registry import Registry, default_registry
from backbeat.delivery.watermark import BacklogWatermark


@dataclass
class SendReport:
    messages: list[str] = field(default_factory=list)  # message ids the bus acknowledged
    acked_ids: list[str] = field(default_factory=list)  # event ids acknowledged (once each, in order)
    batches: int = 0
    republished: int = 0
    events: int = 0

    def merge(self, other: SendReport) -> None:
        seen = set(self.acked_ids)
        self.messages += other.messages
        self.acked_ids += [i for i in other.acked_ids if i not in seen]
        self.batches += other.batches
        self.republished += other.republished
        self.events += other.events


class Producer:
    def __init__(
        self,
        bus: Bus,
        registry: Registry | None = None,
        *,
        watermark: BacklogWatermark | None = None,
        batch_size: int = 1000,
        encoding: str = "avro",
        max_attempts: int = 5,
        backoff_s: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        if batch_size < 1:
            raise DeliveryError(f"batch_size must be >= 1, got {batch_size}")
        self.bus, self.registry = bus, registry or default_registry()
        self.watermark, self.batch_size, self.encoding = watermark, batch_size, encoding
        self.max_attempts, self.backoff_s = max_attempts, backoff_s
        self.rng = rng or random.Random()
        self._topics: set[str] = set()

    def _batch_id(self) -> str:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4).hex

    def envelopes(
        self, event_type: str, events: Sequence[Mapping[str, Any]], version: int | None = None
    ) -> list[Envelope]:
        """Split per receive hour and ``batch_size``; validate and encode each batch."""
        schema = self.registry.get(event_type, version)
        by_hour: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for e in events:
            by_hour[hour_of_micros(micros_of(e["received_at"]))].append(e)
        out = []
        for hour in sorted(by_hour):
            rows = by_hour[hour]
            for i in range(0, len(rows), self.batch_size):
                out.append(
                    make_envelope(
                        schema,
                        rows[i : i + self.batch_size],
                        batch_id=self._batch_id(),
                        encoding=self.encoding,
                    )
                )
        return out

    def publish_envelope(self, env: Envelope) -> str:
        """Publish one envelope, retrying transient failures with the same bytes and ids."""
        topic = events_topic(env.attributes["type"])
        if topic not in self._topics:
            self.bus.ensure_topic(topic)
            self._topics.add(topic)
        if self.watermark is not None:
            a = env.attributes
            self.watermark.record(
                a["batch_id"], a["type"], a["receive_hour"], int(a["oldest_us"]), int(a["count"])
            )
        last: Exception | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                return self.bus.publish(topic, env.data, env.attributes)
            except Exception as exc:  # the client raised: retry the identical message
                last = exc
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), 5.0))
        if self.watermark is not None:
            self.watermark.forget(env.attributes["batch_id"])
        raise DeliveryError(
            f"publish of batch {env.attributes['batch_id']} to {topic} failed "
            f"after {self.max_attempts} attempts: {last}"
        )

    def republish(self, env: Envelope) -> Envelope:
        """The same events sent again as a *new* batch (a producer that lost its ack and resent):
        new batch id -> new message id, same event ids."""
        return Envelope(env.data, dict(env.attributes, batch_id=self._batch_id()), env.event_ids)

    def send(
        self,
        event_type: str,
        events: Sequence[Mapping[str, Any]],
        *,
        version: int | None = None,
        duplicate_rate: float = 0.0,
        progress: Any = None,
    ) -> SendReport:
        report = SendReport()
        envs = self.envelopes(event_type, events, version)
        seen: set[str] = set()
        for env in envs:
            report.messages.append(self.publish_envelope(env))
            report.batches += 1
            report.events += len(env.event_ids)
            for eid in env.event_ids:
                if eid not in seen:
                    seen.add(eid)
                    report.acked_ids.append(eid)
            if duplicate_rate and self.rng.random() < duplicate_rate:
                report.messages.append(self.publish_envelope(self.republish(env)))
                report.republished += 1
            if progress is not None:
                progress(len(env.event_ids))
        return report
