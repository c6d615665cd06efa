"""The backlog watermark port: the publish time of the oldest message not yet acknowledged.

An hour may close only once this is past the hour's end (nothing published before then is still
waiting). Three implementations:

* :class:`BacklogWatermark` (local backend and the emulator stack): the producer library writes
  ``backlog/<batch_id>`` before publishing and ingest deletes it in its registration transaction
  (or the dead-letter handler does, for a message the bus gave up on). The watermark of a type is
  the smallest ``oldest_us`` (earliest edge time in the batch) of its pending records: a lower
  bound of the publish time, so it is conservative, and it stays meaningful when replaying history
  with ``--received-at``. Producers that bypass the library are invisible to it.
* :class:`MonitoringWatermark` (production): Cloud Monitoring's
  ``pubsub.googleapis.com/subscription/oldest_unacked_message_age`` of the type's ingest
  subscription; watermark = now - age. The request and the parsing are plain functions (tested);
  the call goes through an injected ``list_time_series`` callable (the monitoring client's method).
* :class:`NoWatermark`: grace only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from backbeat.cloud.ports import Documents
from backbeat.delivery import hours as H


class Watermark(Protocol):
    def oldest_unacked(self, event_type: str, now: datetime) -> datetime | None:
        """Oldest unacknowledged publish time of ``event_type``'s ingest backlog; None = empty."""


class NoWatermark:
    def oldest_unacked(self, event_type: str, now: datetime) -> datetime | None:
        return None


class BacklogWatermark:
    def __init__(self, documents: Documents) -> None:
        self.documents = documents

    def record(self, batch_id: str, event_type: str, hour: str, oldest_us: int, count: int) -> None:
        """Producer side: called before publishing a batch (idempotent for retries)."""
        self.documents.set(
            H.backlog_doc(batch_id),
            {
                "type": event_type,
                "hour": hour,
                "oldest_us": int(oldest_us),
                "count": int(count),
            },
        )

    def forget(self, batch_id: str) -> None:
        """Producer side: the publish definitively failed, nothing will be delivered."""
        self.documents.delete(H.backlog_doc(batch_id))

    def pending(self, event_type: str) -> list[dict[str, Any]]:
        return [d for _, d in self.documents.query("backlog", [("type", "==", event_type)])]

    def oldest_unacked(self, event_type: str, now: datetime) -> datetime | None:
        pending = self.pending(event_type)
        if not pending:
            return None
        return H.from_micros(min(int(d["oldest_us"]) for d in pending))


def monitoring_request(project: str, subscription: str, now: datetime, window_s: int = 300) -> dict[str, Any]:
    """The ListTimeSeries request (REST/JSON form) for a subscription's oldest unacked age."""
    start = now - timedelta(seconds=window_s)
    return {
        "name": f"projects/{project}",
        "filter": (
            'metric.type = "pubsub.googleapis.com/subscription/oldest_unacked_message_age" AND '
            f'resource.type = "pubsub_subscription" AND resource.labels.subscription_id = "{subscription}"'
        ),
        "interval": {
            "startTime": H.utc(start).isoformat().replace("+00:00", "Z"),
            "endTime": H.utc(now).isoformat().replace("+00:00", "Z"),
        },
        "view": "FULL",
    }


def watermark_from_series(response: Mapping[str, Any], now: datetime) -> datetime | None:
    """now - the newest sample's age (seconds). No series or age 0 = empty backlog."""
    newest: tuple[str, float] | None = None
    for series in response.get("timeSeries", []) or []:
        for point in series.get("points", []) or []:
            end = point.get("interval", {}).get("endTime", "")
            value = point.get("value", {})
            age = float(value.get("int64Value", value.get("doubleValue", 0)) or 0)
            if newest is None or end > newest[0]:
                newest = (end, age)
    if newest is None or newest[1] <= 0:
        return None
    return H.utc(now) - timedelta(seconds=newest[1])


class MonitoringWatermark:
    def __init__(
        self,
        project: str,
        list_time_series: Callable[[dict[str, Any]], Mapping[str, Any]],
        subscription_for: Callable[[str], str] = lambda t: f"ingest-events.{t}",
    ) -> None:
        self.project = project
        self.list_time_series = list_time_series
        self.subscription_for = subscription_for

    def oldest_unacked(self, event_type: str, now: datetime) -> datetime | None:
        req = monitoring_request(self.project, self.subscription_for(event_type), now)
        return watermark_from_series(self.list_time_series(req), now)
