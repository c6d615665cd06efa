"""``backbeat demo`` stage "delivery": a realistic stream through ingest, close and dedupe.

Three hours of every registered type, with producer retries duplicated (5% of batches sent twice),
a client holding back events (late rows stamped into an hour that is already closed by then), a
producer resending a batch of an hour that closed already, and one poison message. Each hour closes
and is deduplicated through the bus; the final check compares every acknowledged event id with the
ids in the _SUCCESS-referenced files: lost = 0 and duplicates = 0, or the stage fails.

Two clocks (``BACKBEAT_HOUR_SECONDS``, see :mod:`backbeat.delivery.hours`):

* real hours (the default): the three hours ending at the last full hour are *replayed* through
  ``received_at``, and each tick runs with a clock set past that hour's grace. Takes a few seconds.
* a scaled clock (e.g. 60-second hours): the stream is published *live*, stamped with the wall
  clock, over three scaled hours, ticking every round with the real clock, so each hour is seen
  closing (after its grace, hour/12) and deduplicating as it passes. Takes about three scaled hours
  plus the grace (~3.5 min with 60-second hours).

:func:`run_stage` runs either on any clock (tests use the replay on a scaled clock too).
"""

from __future__ import annotations

import io
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
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
HOURS = 3
DUPLICATE_RATE = 0.05  # share of batches a producer sends twice (new message id, same event ids)
LATE_RATE = 0.02  # share of events stamped one hour early (a client that held them), after hour 0


def grace_s() -> float:
    """The close grace for the current clock: hour/12, i.e. 300 s for real hours, 5 s for 60 s."""
    return max(1.0, H.hour_seconds() / 12)


def final_ids(platform: Any, bucket: str) -> tuple[dict[str, Counter], dict[tuple[str, str], dict]]:
    """Every event id in the _SUCCESS-referenced files (with its count), and the _SUCCESS records."""
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


@dataclass
class _Stream:
    """What the producer side sent and had acknowledged: the ground truth of the final check."""

    delivery: Delivery
    producer: Producer
    rng: random.Random
    acked: dict[str, set[str]] = field(default_factory=dict)
    dead: dict[str, set[str]] = field(default_factory=dict)
    published: int = 0
    republished: int = 0
    resend: list[Any] | None = None  # a batch of hour 0, sent again once hour 0 is closed

    def send(self, event_type: str, events: list[dict[str, Any]]) -> None:
        report = self.producer.send(event_type, events, duplicate_rate=DUPLICATE_RATE)
        self.acked.setdefault(event_type, set()).update(report.acked_ids)
        self.published += report.events
        self.republished += report.republished

    def keep_for_resend(self, events: list[dict[str, Any]]) -> None:
        self.resend = self.producer.envelopes("play", events[-50:])

    def send_resend(self) -> None:
        """A producer resending a batch of an hour that is closed already: diverted, then deduped
        against that hour's final ids (duplicates_prior_hours)."""
        for env in self.resend or []:
            self.producer.publish_envelope(env)
            self.republished += 1
        self.resend = None

    def send_poison(self, at: datetime) -> None:
        """An undecodable message: ingest dead-letters it, the hour still closes and reports it."""
        registry = self.delivery.registry
        env = self.producer.envelopes(
            "error", make_events(registry.latest("error"), 25, rng=self.rng, start=at)
        )[0]
        poisoned = type(env)(b"\x28\xb5\x2f\xfd not zstd", env.attributes, env.event_ids)
        self.producer.publish_envelope(poisoned)
        self.dead.setdefault("error", set()).update(env.event_ids)
        self.acked.setdefault("error", set()).update(env.event_ids)


def run(ctx: Any) -> dict[str, Any]:
    """The demo stage: replayed real hours, or live scaled hours when ``BACKBEAT_HOUR_SECONDS`` is set."""
    return run_stage(ctx, live=H.hour_seconds() != 3600)


def run_stage(
    ctx: Any, *, live: bool, hours: int = HOURS, round_s: float | None = None, volume: float = 1.0
) -> dict[str, Any]:
    """Publish ``hours`` hours (``volume`` x PER_HOUR events per type and hour), close and dedupe
    them, print the table and check exactly-once. ``round_s``: live publishing/tick period."""
    platform = ctx.platform
    delivery = Delivery.from_settings(platform, ctx.settings, config=DeliveryConfig(grace_s=grace_s()))
    subs = delivery.wire_local()
    stream = _Stream(
        delivery,
        Producer(
            platform.bus,
            delivery.registry,
            watermark=BacklogWatermark(platform.documents),
            rng=random.Random(1),
            batch_size=250,
        ),
        random.Random(2026),
    )
    per_hour = {t: max(1, round(PER_HOUR.get(t, 300) * volume)) for t in delivery.registry.types()}
    try:
        if live:
            keys = _live(ctx, stream, per_hour, hours, round_s or max(0.5, H.hour_seconds() / 30))
        else:
            keys = _replay(ctx, stream, per_hour, hours)
        return _report(ctx, stream, keys, "live" if live else "replay")
    finally:
        for s in subs:
            s.close()


def _replay(ctx: Any, stream: _Stream, per_hour: dict[str, int], n: int) -> list[str]:
    """The ``n`` hours ending at the last full hour, replayed through ``received_at``; each tick
    runs with its clock just past the hour's grace."""
    delivery, platform, console = stream.delivery, ctx.platform, ctx.console
    length = H.bucket_length()
    first = H.hour_key(H.floor_hour(datetime.now(UTC)) - n * length)
    keys = [H.shift(first, i) for i in range(n)]
    for i, hour in enumerate(keys):
        for t, count in per_hour.items():
            events = make_events(
                delivery.registry.latest(t),
                count,
                rng=stream.rng,
                start=H.hour_start(hour),
                spread_s=length.total_seconds(),
                late_rate=LATE_RATE if i else 0.0,
            )
            stream.send(t, events)
            if i == 0 and t == "play":
                stream.keep_for_resend(events)
        if i == 1:
            stream.send_resend()  # hour 0 closed at the previous tick
            stream.send_poison(H.hour_start(hour) + length / 2)
        now = H.hour_end(hour) + timedelta(seconds=grace_s() + 1)
        tick = delivery.tick(now)
        platform.bus.drain()
        console.print(
            f"tick {now:%H:%M:%S}: closed {len(tick.closed)} hour(s) of {hour}, {len(tick.waiting)} waiting"
        )
    return keys


def _live(ctx: Any, stream: _Stream, per_hour: dict[str, int], n: int, round_s: float) -> list[str]:
    """``n`` scaled hours published as they pass (``received_at`` = the wall clock), one round of
    every type each ``round_s``, a tick with the real clock after each round."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    delivery, platform, console = stream.delivery, ctx.platform, ctx.console
    length = H.bucket_length()
    now = datetime.now(UTC)
    first = H.hour_key(now)
    if H.hour_end(first) - now < length * 0.6:  # too little left of this hour: start with the next
        first = H.shift(first, 1)
    keys = [H.shift(first, i) for i in range(n)]
    end = H.hour_end(keys[-1])
    share = round_s / length.total_seconds()
    deadline = end + timedelta(seconds=grace_s() + max(10.0, 3 * round_s))
    console.print(
        f"live, {H.hour_seconds()}-second hours {keys[0]} .. {keys[-1]} "
        f"({max(now, H.hour_start(keys[0])):%H:%M:%S} .. {end:%H:%M:%S} UTC), grace {grace_s():g} s"
    )
    reported: set[str] = set()
    poisoned = False
    last = max(now, H.hour_start(keys[0]))
    _sleep_until(H.hour_start(keys[0]))
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task("publishing", total=(deadline - last).total_seconds())
        while True:
            now = datetime.now(UTC)
            if now < end:
                hour = H.hour_key(now)
                i = keys.index(hour)
                start = max(last, H.hour_start(hour))
                for t, count in per_hour.items():
                    events = make_events(
                        delivery.registry.latest(t),
                        max(1, round(count * share)),
                        rng=stream.rng,
                        start=start,
                        spread_s=(now - start).total_seconds(),
                        late_rate=LATE_RATE if i else 0.0,
                    )
                    stream.send(t, events)
                    if i == 0 and t == "play":
                        stream.keep_for_resend(events)
                if i >= 1 and not poisoned:
                    stream.send_poison(now)
                    poisoned = True
                last = now
            closed = _closed_hours(platform, delivery.bucket, keys, per_hour)
            if stream.resend is not None and keys[0] in closed and now < end:
                stream.send_resend()
            tick = delivery.tick(datetime.now(UTC))
            platform.bus.drain()
            for hour in sorted({c.hour for c in tick.closed} - reported):
                reported.add(hour)
                bar.console.print(_closed_line(platform, delivery.bucket, hour, per_hour))
            bar.update(
                task,
                completed=(datetime.now(UTC) - H.hour_start(keys[0])).total_seconds(),
                description="publishing" if now < end else "closing the last hour",
            )
            if now >= end and set(keys) <= _closed_hours(platform, delivery.bucket, keys, per_hour):
                break
            if datetime.now(UTC) > deadline:
                raise DeliveryError(
                    f"live demo: hours {sorted(set(keys) - reported)} not closed by {deadline:%H:%M:%S} UTC"
                )
            _sleep_until(now + timedelta(seconds=round_s))
    return keys


def _sleep_until(at: datetime, sleep: Callable[[float], None] = time.sleep) -> None:
    wait = (at - datetime.now(UTC)).total_seconds()
    if wait > 0:
        sleep(wait)


def _closed_hours(platform: Any, bucket: str, keys: list[str], per_hour: dict[str, int]) -> set[str]:
    """The hours among ``keys`` whose every type has its _SUCCESS."""
    return {h for h in keys if all(platform.blobs.stat(bucket, H.success_name(t, h)) for t in per_hour)}


def _closed_line(platform: Any, bucket: str, hour: str, per_hour: dict[str, int]) -> str:
    totals = Counter()
    for t in per_hour:
        raw = platform.blobs.stat(bucket, H.success_name(t, hour)) and platform.blobs.get(
            bucket, H.success_name(t, hour)
        )
        if raw:
            s = json.loads(raw)
            totals.update(types=1, rows_in=s["rows_in"], rows_out=s["rows_out"], dups=s["duplicates"])
    return (
        f"{datetime.now(UTC):%H:%M:%S} closed {hour} ({H.hour_start(hour):%H:%M:%S}-"
        f"{H.hour_end(hour):%H:%M:%S} UTC): {totals['types']} types deduplicated, "
        f"{totals['rows_in']} rows in, {totals['rows_out']} out, {totals['dups']} duplicates removed"
    )


def _report(ctx: Any, stream: _Stream, keys: list[str], mode: str) -> dict[str, Any]:
    """Print the per-hour table and the exactly-once check; raise DeliveryError when it fails."""
    from rich.table import Table

    platform, console, bucket = ctx.platform, ctx.console, stream.delivery.bucket
    ids, successes = final_ids(platform, bucket)
    scaled = H.hour_seconds() != 3600
    console.print(
        f"hours {keys[0]} .. {keys[-1]}"
        + (" (virtual names of scaled hours; @ = real start, UTC)" if scaled else "")
    )
    table = Table(title=f"event delivery ({mode}, {H.hour_seconds()}-second hours)")
    for col in ("hour", "type", "files", "in", "out", "dups", "skewed", "dead"):
        table.add_column(col, justify="left" if col in ("type", "hour") else "right", no_wrap=True)
    for (t, h), s in sorted(successes.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        doc = platform.documents.get(H.hour_doc(t, h)) or {}
        table.add_row(
            h[11:] + (f" @{H.hour_start(h):%H:%M:%S}" if scaled else ":00"),
            t,
            str(doc.get("files", "")),
            str(s["rows_in"]),
            str(s["rows_out"]),
            str(s["duplicates"]),
            str(s["skewed"]),
            str(s.get("dead_letter_events", 0)),
        )
    console.print(table)
    acked, dead = stream.acked, stream.dead
    lost = sum(len(acked[t] - dead.get(t, set()) - set(ids.get(t, {}))) for t in acked)
    dups = sum(c - 1 for t in ids for c in ids[t].values() if c > 1)
    delivered = sum(len(c) for c in ids.values())
    distinct = sum(len(a) for a in acked.values())
    console.print(
        f"acknowledged {distinct} distinct events ({stream.published} sent, {stream.republished} "
        f"batches sent twice); final: {delivered} events, dead-lettered "
        f"{sum(len(d) for d in dead.values())}; lost {lost}, duplicates {dups}"
    )
    if lost or dups:
        raise DeliveryError(f"exactly-once violated: lost={lost} duplicates={dups}")
    closed = sorted(successes)
    ctx.shared["delivery"] = {
        "bucket": bucket,
        "closed": closed,
        "hours": keys,
        "play_final": [p for (t, _), s in sorted(successes.items()) if t == "play" for p in s["parts"]],
    }
    return {
        "mode": mode,
        "hour_s": H.hour_seconds(),
        "events": stream.published,
        "acked": distinct,
        "hours_closed": len(closed),
        "duplicates_removed": sum(s["duplicates"] for s in successes.values()),
        "skewed": sum(s["skewed"] for s in successes.values()),
        "dead_letters": sum(len(d) for d in dead.values()),
        "delivered": delivered,
        "lost": lost,
        "dup_ids": dups,
    }
