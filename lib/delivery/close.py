"""close_bucket: the scheduled tick that closes complete hours (Spotify's "Completionist").

An OPEN hour of a type closes when ``now >= end + grace``, the type's backlog watermark is past the
hour's end (see watermark.py; a message the bus dead-lettered leaves the backlog only once the
dead-letter handler has accounted it). Closing, race-free against concurrent ingest:

1. transaction: OPEN -> CLOSING on ``hours/<type>_<H>``. Every registration transaction reads
   that document, so registrations serialise with it: those before are in ``files``, those after
   see CLOSING and divert. The file set is now frozen.
2. the manifest ``manifests/<type>/<H>.json`` (deterministic JSON of the frozen file set and the
   dead letters) is written create-only; a rerun after a crash finds the same bytes.
3. transaction: CLOSING -> CLOSED with the manifest's sha256 and counts.
4. publish ``hour-closed`` (attributes type, hour, manifest_sha256), then mark ``published``.
   A crash between 3 and 4 is repaired by the next tick (CLOSED and not published).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from backbeat.cloud.ports import Platform, PreconditionFailed, Transaction
from backbeat.delivery import hours as H
from backbeat.delivery.config import CLOSED, CLOSING, OPEN, DeliveryConfig
from backbeat.delivery.errors import ManifestMismatch
from backbeat.delivery.watermark import Watermark


@dataclass
class ClosedHour:
    event_type: str
    hour: str
    files: int
    rows: int
    dead_letter_events: int
    manifest_sha256: str


@dataclass
class TickReport:
    now: datetime
    closed: list[ClosedHour] = field(default_factory=list)
    waiting: list[tuple[str, str, str]] = field(default_factory=list)  # (type, hour, why)
    published: list[tuple[str, str]] = field(default_factory=list)


def build_manifest(platform: Platform, bucket: str, event_type: str, hour: str) -> dict[str, Any]:
    """The frozen file set of a CLOSING hour as a deterministic document."""
    files = []
    for path, doc in platform.documents.query(H.files_collection(event_type, hour)):
        files.append(
            {
                "message_id": path.rsplit("/", 1)[-1],
                "name": doc["name"],
                "rows": int(doc["rows"]),
                "skewed": bool(doc.get("skewed", False)),
                "receive_hour": doc.get("receive_hour", hour),
            }
        )
    files.sort(key=lambda f: f["name"])
    dead = []
    for path, doc in platform.documents.query(H.dead_letters_collection(event_type, hour)):
        dead.append(
            {
                "key": path.rsplit("/", 1)[-1],
                "events": int(doc.get("events", 0)),
                "whole_message": bool(doc.get("whole_message", False)),
                "reasons": list(doc.get("reasons", []))[:5],
                "receive_hour": doc.get("receive_hour", hour),
            }
        )
    dead.sort(key=lambda d: d["key"])
    return {
        "format": "backbeat.manifest/1",
        "bucket": bucket,
        "type": event_type,
        "hour": hour,
        "files": files,
        "rows": sum(f["rows"] for f in files),
        "skewed_rows": sum(f["rows"] for f in files if f["skewed"]),
        "dead_letters": {"messages": len(dead), "events": sum(d["events"] for d in dead), "entries": dead},
    }


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def _to_closing(event_type: str, hour: str, now: datetime):
    def fn(tx: Transaction) -> str | None:
        doc = tx.get(H.hour_doc(event_type, hour))
        if doc is None:
            return None
        if doc.get("state") == OPEN:
            tx.update(H.hour_doc(event_type, hour), {"state": CLOSING, "closing_at": now.isoformat()})
            return CLOSING
        return doc.get("state")

    return fn


def _to_closed(event_type: str, hour: str, fields: dict[str, Any]):
    def fn(tx: Transaction) -> str | None:
        doc = tx.get(H.hour_doc(event_type, hour))
        if doc is None:
            return None
        if doc.get("state") == CLOSING:
            tx.update(H.hour_doc(event_type, hour), dict(fields, state=CLOSED))
            return CLOSED
        return doc.get("state")

    return fn


def close_hour(
    platform: Platform, bucket: str, event_type: str, hour: str, now: datetime | None = None
) -> ClosedHour:
    """Close one hour now (the tick decided it may). Idempotent; resumes a crashed close.
    ``now`` stamps closing_at/closed_at (the tick's clock, so replays report sensible lags)."""
    now = H.utc(now or datetime.now(UTC))
    state = platform.documents.transaction(_to_closing(event_type, hour, now))
    if state is None:
        raise ManifestMismatch(f"{H.hour_doc(event_type, hour)} does not exist")
    name = H.manifest_name(event_type, hour)
    if state == CLOSED:
        data = platform.blobs.get(bucket, name)
        return _closed_from(json.loads(data), hashlib.sha256(data).hexdigest())
    manifest = build_manifest(platform, bucket, event_type, hour)
    data = manifest_bytes(manifest)
    try:
        platform.blobs.put(bucket, name, data, if_generation_match=0, content_type="application/json")
    except PreconditionFailed:
        existing = platform.blobs.get(bucket, name)
        if existing != data:
            raise ManifestMismatch(
                f"{bucket}/{name} exists with different content; the file set of a CLOSING hour changed"
            ) from None
    sha = hashlib.sha256(data).hexdigest()
    platform.documents.transaction(
        _to_closed(
            event_type,
            hour,
            {
                "manifest_sha256": sha,
                "manifest": name,
                "files": len(manifest["files"]),
                "rows": manifest["rows"],
                "skewed_rows": manifest["skewed_rows"],
                "dead_letter_events": manifest["dead_letters"]["events"],
                "dead_letter_messages": manifest["dead_letters"]["messages"],
                "closed_at": now.isoformat(),
                "published": False,
            },
        )
    )
    return _closed_from(manifest, sha)


def _closed_from(manifest: dict[str, Any], sha: str) -> ClosedHour:
    return ClosedHour(
        manifest["type"],
        manifest["hour"],
        len(manifest["files"]),
        manifest["rows"],
        manifest["dead_letters"]["events"],
        sha,
    )


def publish_closed(platform: Platform, config: DeliveryConfig, closed: ClosedHour) -> None:
    platform.bus.publish(
        config.hour_closed_topic,
        json.dumps(
            {
                "type": closed.event_type,
                "hour": closed.hour,
                "manifest_sha256": closed.manifest_sha256,
            }
        ).encode(),
        {"type": closed.event_type, "hour": closed.hour, "manifest_sha256": closed.manifest_sha256},
    )
    platform.documents.update(H.hour_doc(closed.event_type, closed.hour), {"published": True})


def may_close(hour: str, now: datetime, grace_s: float, watermark: datetime | None) -> str | None:
    """None if the hour may close, else why not."""
    end = H.hour_end(hour)
    if now < end + timedelta(seconds=grace_s):
        return f"in grace until {(end + timedelta(seconds=grace_s)).isoformat()}"
    if watermark is not None and watermark < end:
        return f"backlog watermark {watermark.isoformat()} is before the hour's end"
    return None


def tick(
    platform: Platform, bucket: str, now: datetime, watermark: Watermark, config: DeliveryConfig | None = None
) -> TickReport:
    """One scheduler tick: close every hour that may close, publish ``hour-closed`` for each."""
    config = config or DeliveryConfig()
    now = H.utc(now)
    report = TickReport(now)
    docs = platform.documents.query("hours", [("state", "in", [OPEN, CLOSING])])
    docs += [
        (p, d)
        for p, d in platform.documents.query("hours", [("state", "==", CLOSED)])
        if not d.get("published")
    ]
    marks: dict[str, datetime | None] = {}
    for _, doc in sorted(docs, key=lambda pd: (pd[1]["hour"], pd[1]["type"])):
        event_type, hour, state = doc["type"], doc["hour"], doc["state"]
        if state == OPEN:
            if event_type not in marks:
                marks[event_type] = watermark.oldest_unacked(event_type, now)
            why = may_close(hour, now, config.grace_s, marks[event_type])
            if why:
                report.waiting.append((event_type, hour, why))
                continue
        closed = close_hour(platform, bucket, event_type, hour, now)
        if state != CLOSED:
            report.closed.append(closed)
        publish_closed(platform, config, closed)
        report.published.append((event_type, hour))
    return report
