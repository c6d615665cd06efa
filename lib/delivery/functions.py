"""Glue between functions-framework CloudEvents and :class:`~backbeat.delivery.service.Delivery`.

Kept apart from the handlers so ``functions/<name>/main.py`` stay three-line adapters. The platform
and the registry are built once per instance (cold start) and reused by every event. Error policy:
anything raised makes the function fail, so Pub/Sub redelivers (and dead-letters after the
subscription's max attempts); permanent problems with one message are handled inside (dead-lettered
with a record), never raised.
"""

from __future__ import annotations

import base64
import logging
import threading
from datetime import UTC, datetime
from typing import Any

from backbeat.cloud.ports import Message

log = logging.getLogger("backbeat.delivery")
_lock = threading.Lock()
_delivery: Any = None


def delivery() -> Any:
    """The process-wide Delivery (platform + registry + config from the environment)."""
    global _delivery
    with _lock:
        if _delivery is None:
            from backbeat.cloud import connect
            from backbeat.delivery.service import Delivery
            from backbeat.settings import get_settings

            settings = get_settings()
            _delivery = Delivery.from_settings(connect(settings), settings)
        return _delivery


def _parse_time(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)


def message_from_event(event: Any) -> Message:
    """A Pub/Sub CloudEvent (``messagePublished``) as a port Message."""
    data = event.get_data() if hasattr(event, "get_data") else event
    if isinstance(data, bytes | str):
        import json

        data = json.loads(data)
    msg = (data or {}).get("message", {})
    attempt = (data or {}).get("deliveryAttempt") or msg.get("deliveryAttempt") or 1
    try:
        source = event["source"]
    except (KeyError, TypeError):
        source = ""
    return Message(
        data=base64.b64decode(msg.get("data") or b""),
        attributes=dict(msg.get("attributes") or {}),
        message_id=str(msg.get("messageId") or msg.get("message_id") or ""),
        publish_time=_parse_time(msg.get("publishTime") or msg.get("publish_time")),
        delivery_attempt=int(attempt),
        topic=str(source).rsplit("/", 1)[-1],
    )


def on_events(event: Any) -> dict[str, Any]:
    """ingest: one batch of events."""
    from backbeat.delivery import faults

    r = delivery().ingest(message_from_event(event))
    faults.point("ingest.before_ack", r.message_id)
    log.info("ingest %s %s -> %s %s rows=%d invalid=%d", r.event_type, r.message_id, r.status, r.hour,
             r.rows, r.invalid)
    return {"status": r.status, "hour": r.hour, "rows": r.rows, "invalid": r.invalid}


def on_dead_letter(event: Any) -> str:
    """ingest_dead_letters: account a message the bus gave up on."""
    return delivery().dead_letter(message_from_event(event))


def on_tick(event: Any) -> dict[str, Any]:
    """close_bucket: one scheduler tick (the clock is the function's own, not the tick's)."""
    report = delivery().tick()
    closed = [f"{c.event_type}/{c.hour}" for c in report.closed]
    log.info("tick closed %s, waiting %d", closed, len(report.waiting))
    return {"closed": closed, "waiting": len(report.waiting)}


def on_hour_closed(event: Any) -> dict[str, Any]:
    """dedupe: one closed hour, then its export."""
    r = delivery().hour_closed(message_from_event(event))
    d = r.dedupe
    log.info("dedupe %s %s rows_in=%d rows_out=%d dup=%d export=%s", d.event_type, d.hour, d.rows_in,
             d.rows_out, d.duplicates, r.export)
    return {"rows_in": d.rows_in, "rows_out": d.rows_out, "duplicates": d.duplicates, "export": r.export}
