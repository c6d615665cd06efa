"""``backbeat demo`` stage "delivery": a realistic stream through ingest, close and dedupe.

Three replayed hours ending at the last full hour: every registered type is published with
producer retries duplicated (5% of batches sent twice), a client holding back events (late rows
stamped into an hour that is already closed by then), and one poison message. Each tick closes the
hour that is due and dedupes it through the bus; the final check compares every acknowledged event
id with the ids in the _SUCCESS-referenced files: lost = 0 and duplicates = 0, or the stage fails.
"""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from backbeat.delivery import hours as H
from backbeat.delivery.config import DeliveryConfig
from backbeat.delivery.errors import DeliveryError
from backbeat.delivery.producer import Producer
from backbeat.delivery.service import Delivery
from backbeat.delivery.synth import make_events
from backbeat.delivery.watermark import BacklogWatermark

PER_HOUR = {"play": 3000, "skip": 800, "search": 700, "page_view": 900, "ad_impression": 500, "error": 150}
GRACE_S = 300


def final_ids(platform: Any, bucket: str) -> tuple[dict[str, Counter], dict[tuple[str, str], dict]]:
    import fastavro

    ids: dict[str, Counter] = {}
    successes: dict[tuple[str, str], dict] = {}
    for info in platform.blobs.list(bucket, "final/"):
        if info.name.endswith("/_SUCCESS"):
            s = json.loads(platform.blobs.get(bucket, info.name))
            successes[(s["type"], s["hour"])] = s
            for part in s["parts"]:
                for rec in fastavro.reader(io.BytesIO(platform.blobs.get(bucket, part))):
                    ids.setdefault(s["type"], Counter())[rec["event_id"]] += 1
    return ids, successes


def run(ctx: Any) -> dict[str, Any]:
    from rich.table import Table

    platform, console = ctx.platform, ctx.console
    delivery = Delivery.from_settings(platform, ctx.settings, config=DeliveryConfig(grace_s=GRACE_S))
    subs = delivery.wire_local()
    rng = random.Random(2026)
    producer = Producer(
        platform.bus,
        delivery.registry,
        watermark=BacklogWatermark(platform.documents),
        rng=random.Random(1),
        batch_size=250,
    )
    first = H.floor_hour(datetime.now(UTC)) - timedelta(hours=3)
    hours = [H.hour_key(first + timedelta(hours=i)) for i in range(3)]
    acked: dict[str, set[str]] = {}
    dead: dict[str, set[str]] = {}
    published = republished = 0
    table = Table(title=f"event delivery {hours[0][:10]}: hours closed and deduplicated")
    for col in ("hour", "type", "files", "in", "out", "dups", "skewed", "dead"):
        table.add_column(col, justify="left" if col in ("type", "hour") else "right", no_wrap=True)
    last_batch = None
    try:
        for i, hour in enumerate(hours):
            for t in delivery.registry.types():
                schema = delivery.registry.latest(t)
                events = make_events(
                    schema,
                    PER_HOUR.get(t, 300),
                    rng=rng,
                    start=H.hour_start(hour),
                    spread_s=3599,
                    late_rate=0.02 if i else 0.0,
                )
                report = producer.send(t, events, duplicate_rate=0.05)
                acked.setdefault(t, set()).update(report.acked_ids)
                last_batch = producer.envelopes(t, events[-50:]) if i == 0 and t == "play" else last_batch
                published += report.events
                republished += report.republished
            if i == 1 and last_batch:  # a producer resending a batch of the hour that closed already
                for env in last_batch:
                    producer.publish_envelope(env)
                    republished += 1
            if i == 1:  # a poison message: the bus gives up on it, the hour still closes and reports it
                env = producer.envelopes(
                    "error",
                    make_events(
                        delivery.registry.latest("error"),
                        25,
                        rng=rng,
                        start=H.hour_start(hour) + timedelta(minutes=30),
                    ),
                )[0]
                poisoned = type(env)(b"\x28\xb5\x2f\xfd not zstd", env.attributes, env.event_ids)
                producer.publish_envelope(poisoned)
                dead.setdefault("error", set()).update(env.event_ids)
                acked["error"].update(env.event_ids)
            now = H.hour_end(hour) + timedelta(seconds=GRACE_S + 5)
            tick = delivery.tick(now)
            platform.bus.drain()
            console.print(
                f"tick {now:%H:%M:%S}: closed {len(tick.closed)} hour(s) of {hour}, "
                f"{len(tick.waiting)} waiting"
            )
        _, successes = final_ids(platform, delivery.bucket)
        for (t, h), s in sorted(successes.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            doc = platform.documents.get(H.hour_doc(t, h)) or {}
            table.add_row(
                h[11:] + ":00",
                t,
                str(doc.get("files", "")),
                str(s["rows_in"]),
                str(s["rows_out"]),
                str(s["duplicates"]),
                str(s["skewed"]),
                str(s.get("dead_letter_events", 0)),
            )
        console.print(table)
        ids, successes = final_ids(platform, delivery.bucket)
        lost = sum(len(acked[t] - dead.get(t, set()) - set(ids.get(t, {}))) for t in acked)
        dups = sum(c - 1 for t in ids for c in ids[t].values() if c > 1)
        delivered = sum(len(c) for c in ids.values())
        console.print(
            f"acknowledged {sum(len(a) for a in acked.values())} distinct events "
            f"({published} sent, {republished} batches sent twice); final: {delivered} events, "
            f"dead-lettered {sum(len(d) for d in dead.values())}; lost {lost}, duplicates {dups}"
        )
        if lost or dups:
            raise DeliveryError(f"exactly-once violated: lost={lost} duplicates={dups}")
        closed = sorted(successes)
        ctx.shared["delivery"] = {
            "bucket": delivery.bucket,
            "closed": closed,
            "hours": hours,
            "play_final": [p for (t, _), s in sorted(successes.items()) if t == "play" for p in s["parts"]],
        }
        return {
            "events": published,
            "hours_closed": len(closed),
            "duplicates_removed": sum(s["duplicates"] for s in successes.values()),
            "skewed": sum(s["skewed"] for s in successes.values()),
            "dead_letters": sum(len(d) for d in dead.values()),
            "lost": lost,
            "dup_ids": dups,
        }
    finally:
        for s in subs:
            s.close()
