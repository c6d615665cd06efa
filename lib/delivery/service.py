"""The delivery service: the three handlers bound to one platform, and their local wiring.

Cloud Functions (functions/ingest, close_bucket, dedupe) and the CLI both go through
:class:`Delivery`; on the ``local`` backend :meth:`Delivery.wire_local` attaches the handlers to
the in-process bus the way the manifest wires them on Google Cloud (one ingest subscription per
event type with the dead-letter policy, the dead-letter subscriber, dedupe on ``hour-closed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backbeat.cloud.ports import Message, Platform, Subscription
from backbeat.delivery import hours as H
from backbeat.delivery.close import TickReport, tick
from backbeat.delivery.config import DeliveryConfig, events_topic
from backbeat.delivery.dedupe import DedupeResult, dedupe_hour, read_success
from backbeat.delivery.errors import DeliveryError
from backbeat.delivery.export import BigQueryExporter, Exporter, RecordingExporter, load_request
from backbeat.delivery.ingest import IngestResult, handle_dead_letter, ingest_message
from backbeat.delivery.registry import Registry, default_registry
from backbeat.delivery.watermark import BacklogWatermark, NoWatermark, Watermark


@dataclass
class HourClosedResult:
    dedupe: DedupeResult
    export: str


class Delivery:
    def __init__(
        self,
        platform: Platform,
        *,
        bucket: str,
        project: str = "backbeat-local",
        config: DeliveryConfig | None = None,
        registry: Registry | None = None,
        exporter: Exporter | None = None,
        watermark: Watermark | None = None,
    ) -> None:
        self.platform, self.bucket, self.project = platform, bucket, project
        self.config = config or DeliveryConfig.from_env()
        self.registry = registry or default_registry()
        if exporter is None:
            exporter = (
                BigQueryExporter()
                if self.config.export == "bigquery"
                else RecordingExporter(platform.blobs, bucket)
            )
        self.exporter = exporter
        self._watermark = watermark

    settings: Any = None

    @classmethod
    def from_settings(cls, platform: Platform, settings: Any, **kw: Any) -> Delivery:
        d = cls(platform, bucket=settings.events_bucket, project=settings.project, **kw)
        d.settings = settings
        return d

    # -------------------------------------------------------------------------------- handlers
    def ingest(self, message: Message) -> IngestResult:
        return ingest_message(self.platform, self.bucket, message, registry=self.registry, config=self.config)

    def dead_letter(self, message: Message) -> str:
        return handle_dead_letter(
            self.platform, self.bucket, message, registry=self.registry, config=self.config
        )

    def hour_closed(self, message: Message) -> HourClosedResult:
        attrs = message.attributes
        if not attrs.get("type") or not attrs.get("hour"):
            raise DeliveryError(f"hour-closed message {message.message_id} lacks type/hour attributes")
        return self.dedupe_and_export(attrs["type"], attrs["hour"], attrs.get("manifest_sha256"))

    def dedupe_and_export(
        self, event_type: str, hour: str, expected_sha: str | None = None, force_engine: str | None = None
    ) -> HourClosedResult:
        result = dedupe_hour(
            self.platform,
            self.bucket,
            event_type,
            hour,
            registry=self.registry,
            config=self.config,
            expected_sha=expected_sha,
            force_engine=force_engine,
            settings=self.settings,
        )
        status = "empty"
        if result.rows_out:
            status = self.exporter.submit(
                load_request(
                    self.project,
                    self.config.bq_dataset,
                    self.bucket,
                    event_type,
                    hour,
                    result.manifest_sha256,
                    result.parts,
                )
            )
        return HourClosedResult(result, status)

    def watermark(self) -> Watermark:
        if self._watermark is not None:
            return self._watermark
        if self.config.watermark == "none":
            return NoWatermark()
        if self.config.watermark == "monitoring":
            from backbeat.delivery.watermark import MonitoringWatermark

            def list_time_series(request: dict[str, Any]) -> dict[str, Any]:
                from google.cloud import monitoring_v3  # type: ignore[import-not-found]
                from google.protobuf.json_format import MessageToDict

                client = monitoring_v3.MetricServiceClient()
                pages = client.list_time_series(request=request)
                return {"timeSeries": [MessageToDict(ts._pb) for ts in pages]}

            return MonitoringWatermark(self.project, list_time_series)
        return BacklogWatermark(self.platform.documents)

    def tick(self, now: datetime | None = None) -> TickReport:
        return tick(self.platform, self.bucket, now or datetime.now(UTC), self.watermark(), self.config)

    # ---------------------------------------------------------------------------------- wiring
    def ensure_resources(self) -> None:
        self.platform.blobs.ensure_bucket(self.bucket)
        for t in self.registry.types():
            self.platform.bus.ensure_topic(events_topic(t))
        for topic in (self.config.dead_letter_topic, self.config.hour_closed_topic):
            self.platform.bus.ensure_topic(topic)

    def wire_local(
        self,
        *,
        ingest: bool = True,
        dedupe: bool = True,
        max_delivery_attempts: int = 5,
        min_backoff_s: float = 0.01,
        max_backoff_s: float = 0.1,
    ) -> list[Subscription]:
        """Attach the handlers to the bus in this process (the local backend's 'deployment')."""
        self.ensure_resources()
        bus, subs = self.platform.bus, []
        if ingest:
            subs.append(
                bus.subscribe(
                    self.config.dead_letter_topic,
                    "dead-letters",
                    self.dead_letter,
                    min_backoff_s=min_backoff_s,
                    max_backoff_s=max_backoff_s,
                )
            )
            for t in self.registry.types():
                subs.append(
                    bus.subscribe(
                        events_topic(t),
                        f"ingest-{events_topic(t)}",
                        self.ingest,
                        max_delivery_attempts=max_delivery_attempts,
                        dead_letter_topic=self.config.dead_letter_topic,
                        min_backoff_s=min_backoff_s,
                        max_backoff_s=max_backoff_s,
                    )
                )
        if dedupe:
            subs.append(
                bus.subscribe(
                    self.config.hour_closed_topic,
                    "dedupe-hour-closed",
                    self.hour_closed,
                    max_delivery_attempts=max_delivery_attempts,
                    min_backoff_s=min_backoff_s,
                    max_backoff_s=max_backoff_s,
                )
            )
        return subs

    # ---------------------------------------------------------------------------------- status
    def status(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Every (type, hour): state, files, rows, dead letters, dedupe counts and lag."""
        now = H.utc(now or datetime.now(UTC))
        out = []
        for _, doc in sorted(
            self.platform.documents.query("hours"), key=lambda pd: (pd[1]["type"], pd[1]["hour"])
        ):
            t, h = doc["type"], doc["hour"]
            row: dict[str, Any] = {"type": t, "hour": h, "state": doc["state"]}
            if doc["state"] == "CLOSED":
                row.update(
                    files=doc.get("files", 0),
                    rows=doc.get("rows", 0),
                    dead_letters=doc.get("dead_letter_events", 0),
                )
                success = read_success(self.platform, self.bucket, t, h)
                row["rows_out"] = success["rows_out"] if success else None
                row["duplicates"] = success["duplicates"] if success else None
                closed_at = doc.get("closed_at")
                row["lag_s"] = (
                    round((H.parse_time(closed_at) - H.hour_end(h)).total_seconds()) if closed_at else None
                )
            else:
                files = self.platform.documents.query(H.files_collection(t, h))
                dead = self.platform.documents.query(H.dead_letters_collection(t, h))
                row.update(
                    files=len(files),
                    rows=sum(int(d["rows"]) for _, d in files),
                    dead_letters=sum(int(d.get("events", 0)) for _, d in dead),
                    rows_out=None,
                    duplicates=None,
                    lag_s=round((now - H.hour_end(h)).total_seconds()),
                )
            out.append(row)
        return out
