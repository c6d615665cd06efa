"""The ``platform`` stage of ``backbeat demo``: the three local ports doing real work briefly.

Blobs: create-only writes (a duplicate is refused), listing across pages, "folders". Documents:
records, a counter incremented by concurrent transactions, a query. Bus: messages with
attributes delivered to a handler, poison messages retried then dead-lettered.
"""

from __future__ import annotations

import threading
from typing import Any

from backbeat.cloud.ports import Message, PreconditionFailed

BUCKET = "demo-platform"


def run(ctx: Any) -> dict[str, Any]:
    p = ctx.platform
    figures: dict[str, Any] = {}

    # ---- blobs
    p.blobs.ensure_bucket(BUCKET)
    for hour in range(3):
        for part in range(10):
            p.blobs.put(BUCKET, f"hours/2026-01-01T{hour:02d}/part-{part:03d}", b"x" * (100 + part),
                        if_generation_match=0)  # fmt: skip
    refused = 0
    try:
        p.blobs.put(BUCKET, "hours/2026-01-01T00/part-000", b"again", if_generation_match=0)
    except PreconditionFailed:
        refused += 1
    figures["objects"] = sum(1 for _ in p.blobs.list(BUCKET, "hours/", page_size=7))
    figures["hour_folders"] = len(p.blobs.list_prefixes(BUCKET, "hours/"))
    figures["duplicate_creates_refused"] = refused

    # ---- documents
    for i in range(10):
        p.documents.set(f"demo_runs/run{i}", {"n": i, "state": "done" if i % 3 else "failed"})

    def bump(t: Any) -> None:
        doc = t.get("demo_counters/total") or {"n": 0}
        t.set("demo_counters/total", {"n": doc["n"] + 1})

    def writer() -> None:
        for _ in range(10):
            p.documents.transaction(bump)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    figures["documents"] = len(p.documents.query("demo_runs")) + 1
    figures["counter_after_40_concurrent_txns"] = (p.documents.get("demo_counters/total") or {}).get("n")
    figures["failed_runs_queried"] = len(p.documents.query("demo_runs", [("state", "==", "failed")]))

    # ---- bus
    delivered: list[Message] = []
    dead: list[Message] = []

    def handle(m: Message) -> None:
        if m.attributes.get("poison") == "1":
            raise ValueError("poison message")
        delivered.append(m)

    p.bus.ensure_topic("demo-events")
    p.bus.subscribe("demo-events", "demo-worker", handle, dead_letter_topic="demo-events-dlq",
                    max_delivery_attempts=5, min_backoff_s=0.01, max_backoff_s=0.05)  # fmt: skip
    p.bus.subscribe("demo-events-dlq", "demo-dlq-reader", dead.append)
    for i in range(20):
        p.bus.publish(
            "demo-events", f"event {i}".encode(), {"i": str(i), "poison": "1" if i in (4, 13) else "0"}
        )
    p.bus.drain(timeout_s=30)
    figures["messages_delivered"] = len(delivered)
    figures["dead_lettered"] = len(dead)
    return figures
