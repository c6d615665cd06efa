"""ingest: one envelope in, one staging file registered exactly once in one hour.

Steps, each safe to repeat (Pub/Sub delivers at least once, and a crash can happen between any two):

1. decode + validate (envelope.py). A message that cannot be decoded at all is dead-lettered with its
   reason; events that fail validation are dead-lettered, the rest of the batch proceeds.
2. write ``staging/<type>/hour=<H>/<messageId>.avro`` create-only; ``PreconditionFailed`` means a
   previous delivery already wrote it, which is fine.
3. register in one documents transaction that reads the hour's state: the file document
   ``hours/<type>_<H>/files/<messageId>`` is created only while the hour is OPEN. If the hour is
   CLOSING/CLOSED, the transaction records a *diversion* to the next open hour instead and the batch
   is rewritten there as skewed rows (and registered there, by the same rule). Because the close
   flips the state in a transaction on the same document, a registration is either in the manifest
   or diverted, never both and never neither. The same transaction deletes the batch's backlog
   record (watermark) and records its dead-letter count, so accounting and registration agree.

Only after all that does the handler return (= acknowledge).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from backbeat.cloud.ports import Message, Platform, PreconditionFailed, Transaction
from backbeat.delivery import faults
from backbeat.delivery import hours as H
from backbeat.delivery.config import CLOSED, CLOSING, OPEN, DeliveryConfig
from backbeat.delivery.envelope import Batch, decode, staging_file
from backbeat.delivery.errors import EnvelopeError, HourStateError
from backbeat.delivery.registry import Registry, default_registry


@dataclass
class IngestResult:
    event_type: str
    hour: str  # the hour the batch is registered in (differs from receive_hour when diverted)
    message_id: str
    rows: int
    invalid: int
    status: str  # registered | already | diverted | dead_letter
    receive_hour: str = ""
    reasons: list[str] = field(default_factory=list)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _publish_dead_letters(
    platform: Platform,
    config: DeliveryConfig,
    message: Message,
    event_type: str,
    hour: str,
    entries: list[dict[str, Any]],
    reason: str,
) -> None:
    """Invalid events (or a whole undecodable message) to the dead-letter topic, with the reason."""
    body = "\n".join(json.dumps(e, default=str, separators=(",", ":")) for e in entries).encode()
    attrs = {
        "type": event_type,
        "receive_hour": hour,
        "reason": reason[:1000],
        "count": str(len(entries)),
        "source_message_id": message.message_id,
        "accounted": "1",  # ingest already recorded these in the hour's deadletters documents
    }
    platform.bus.publish(config.dead_letter_topic, body or message.data, attrs)


def _settle_txn(
    event_type: str,
    hour: str,
    message_id: str,
    receive_hour: str,
    rows: int,
    dead: dict[str, Any] | None,
    batch_id: str,
    config: DeliveryConfig,
):
    """The registration transaction for ``hour`` (reads first, then writes: Firestore's rule)."""

    def fn(tx: Transaction) -> tuple[str, str]:
        if rows and tx.get(H.file_doc(event_type, hour, message_id)) is not None:
            return "already", hour
        dl_path = H.dead_letter_doc(event_type, hour, message_id)
        if not rows and tx.get(dl_path) is not None:
            return "already", hour
        diverted = tx.get(H.diverted_doc(event_type, hour, message_id))
        if diverted is not None:
            return "divert", str(diverted["target"])
        doc = tx.get(H.hour_doc(event_type, hour))
        state = doc.get("state") if doc else None
        if state in (None, OPEN):
            if doc is None:
                tx.set(
                    H.hour_doc(event_type, hour),
                    {
                        "type": event_type,
                        "hour": hour,
                        "state": OPEN,
                        "opened_at": _now_iso(),
                        "published": False,
                    },
                )
            if rows:
                tx.create(
                    H.file_doc(event_type, hour, message_id),
                    {
                        "name": H.staging_name(event_type, hour, message_id),
                        "rows": rows,
                        "skewed": hour != receive_hour,
                        "receive_hour": receive_hour,
                        "registered_at": _now_iso(),
                    },
                )
            if dead:
                tx.set(dl_path, dict(dead, receive_hour=receive_hour))
            if batch_id:
                tx.delete(H.backlog_doc(batch_id))
            return "registered", hour
        if state not in (CLOSING, CLOSED):
            raise HourStateError(f"{H.hour_doc(event_type, hour)} has unknown state {state!r}")
        target = None
        for k in range(1, config.divert_search_hours + 1):
            cand = H.shift(hour, k)
            cdoc = tx.get(H.hour_doc(event_type, cand))
            if cdoc is None or cdoc.get("state") == OPEN:
                target = cand
                break
        if target is None:
            raise HourStateError(
                f"{event_type}: no open hour within {config.divert_search_hours} h after {hour} to divert to"
            )
        tx.set(H.diverted_doc(event_type, hour, message_id), {"target": target, "at": _now_iso()})
        return "divert", target

    return fn


def settle(
    platform: Platform,
    bucket: str,
    event_type: str,
    receive_hour: str,
    message_id: str,
    *,
    staging: bytes | None,
    rows: int,
    dead: dict[str, Any] | None,
    batch_id: str,
    config: DeliveryConfig,
) -> tuple[str, str]:
    """Write (if rows) and register a batch, following diversions; returns (status, hour)."""
    hour = receive_hour
    diverted = False
    for _ in range(config.divert_search_hours + 2):
        if rows:
            assert staging is not None
            try:
                platform.blobs.put(
                    bucket,
                    H.staging_name(event_type, hour, message_id),
                    staging,
                    if_generation_match=0,
                )  # no object metadata: the name carries type, hour and message id, and on the
                # local adapter a metadata sidecar would cost two more fsyncs per batch
            except PreconditionFailed:
                pass  # a previous delivery wrote it; registration below decides what happens
            faults.point("ingest.after_upload", message_id)
        status, where = platform.documents.transaction(
            _settle_txn(event_type, hour, message_id, receive_hour, rows, dead, batch_id, config)
        )
        if status == "divert":
            hour, diverted = where, True
            continue
        if status == "registered" and diverted:
            status = "diverted"
        return status, where
    raise HourStateError(f"{event_type} message {message_id}: diversion from {receive_hour} did not settle")


def ingest_message(
    platform: Platform,
    bucket: str,
    message: Message,
    *,
    registry: Registry | None = None,
    config: DeliveryConfig | None = None,
) -> IngestResult:
    """Handle one Pub/Sub message of events. Raises only on transient failures (= redeliver)."""
    registry = registry or default_registry()
    config = config or DeliveryConfig()
    attrs = dict(message.attributes)
    faults.poison("ingest.poison", attrs.get("batch_id", ""))
    event_type = attrs.get("type", "")
    receive_hour = attrs.get("receive_hour", "")
    try:
        batch: Batch = decode(message.data, attrs, registry)
    except EnvelopeError as exc:
        return _dead_letter_whole(platform, bucket, message, str(exc), config, registry)
    reasons = sorted({e["reason"] for e in batch.invalid})
    dead = None
    if batch.invalid:
        _publish_dead_letters(platform, config, message, event_type, receive_hour, batch.invalid, reasons[0])
        dead = {
            "events": len(batch.invalid),
            "event_ids": [e["event_id"] for e in batch.invalid if isinstance(e.get("event_id"), str)],
            "reasons": reasons[:20],
            "message_id": message.message_id,
            "whole_message": False,
        }
    staging = staging_file(batch) if batch.rows else None
    status, hour = settle(
        platform,
        bucket,
        event_type,
        receive_hour,
        message.message_id,
        staging=staging,
        rows=batch.rows,
        dead=dead,
        batch_id=batch.batch_id,
        config=config,
    )
    return IngestResult(
        event_type, hour, message.message_id, batch.rows, len(batch.invalid), status, receive_hour, reasons
    )


def _dead_letter_whole(
    platform: Platform,
    bucket: str,
    message: Message,
    reason: str,
    config: DeliveryConfig,
    registry: Registry,
) -> IngestResult:
    """A message that cannot be decoded: to the dead-letter topic, and accounted in its hour when
    the attributes say which (so the hour still closes and reports it)."""
    attrs = message.attributes
    event_type, hour = attrs.get("type", ""), attrs.get("receive_hour", "")
    try:
        count = int(attrs.get("count", "0") or 0)
    except ValueError:
        count = 0
    _publish_dead_letters(platform, config, message, event_type or "unknown", hour, [], reason)
    dead = {
        "events": count,
        "event_ids": [],
        "reasons": [reason[:500]],
        "message_id": message.message_id,
        "whole_message": True,
    }
    attributable = event_type in registry.types()
    try:
        H.hour_start(hour)
    except Exception:
        attributable = False
    if attributable:
        settle(
            platform,
            bucket,
            event_type,
            hour,
            message.message_id,
            staging=None,
            rows=0,
            dead=dead,
            batch_id=attrs.get("batch_id", ""),
            config=config,
        )
    else:
        platform.documents.set(f"deadletters/{message.message_id}", dict(dead, attributes=dict(attrs)))
        if attrs.get("batch_id"):
            platform.documents.delete(H.backlog_doc(attrs["batch_id"]))
    return IngestResult(event_type, hour, message.message_id, 0, count, "dead_letter", hour, [reason])


def handle_dead_letter(
    platform: Platform,
    bucket: str,
    message: Message,
    *,
    registry: Registry | None = None,
    config: DeliveryConfig | None = None,
) -> str:
    """Subscriber of the dead-letter topic. Messages ingest dead-lettered itself are already
    accounted; a message the bus dead-lettered (ingest kept failing on it) is accounted here:
    recorded in its hour's deadletters and removed from the backlog watermark."""
    registry = registry or default_registry()
    config = config or DeliveryConfig()
    attrs = message.attributes
    if attrs.get("accounted") == "1":
        return "already-accounted"
    key = "batch-" + attrs["batch_id"] if attrs.get("batch_id") else message.message_id
    # Pub/Sub records how often the source subscription tried in this attribute; the dead-letter
    # subscription's own delivery attempt (usually 1) says nothing about the original failures
    tries = attrs.get("CloudPubSubDeadLetterSourceDeliveryCount") or str(message.delivery_attempt)
    reason = f"delivery attempts exhausted ({tries} attempts)"
    event_type, hour = attrs.get("type", ""), attrs.get("receive_hour", "")
    try:
        count = int(attrs.get("count", "0") or 0)
    except ValueError:
        count = 0
    dead = {"events": count, "event_ids": [], "reasons": [reason], "message_id": key, "whole_message": True}
    try:
        H.hour_start(hour)
        ok = event_type in registry.types()
    except Exception:
        ok = False
    if ok:
        settle(
            platform,
            bucket,
            event_type,
            hour,
            key,
            staging=None,
            rows=0,
            dead=dead,
            batch_id=attrs.get("batch_id", ""),
            config=config,
        )
    else:
        platform.documents.set(f"deadletters/{key}", dict(dead, attributes=dict(attrs)))
        if attrs.get("batch_id"):
            platform.documents.delete(H.backlog_doc(attrs["batch_id"]))
    return "accounted"
