"""``backbeat demo`` stage: build a store, publish it through the blobs port, serve it back."""

from __future__ import annotations

import time
from typing import Any

BUCKET = "backbeat-kv"
PREFIX = "stores/demo"


def run(ctx: Any, entries: int = 200_000) -> dict[str, Any]:
    """Build ``entries`` pairs, publish, download once through a StoreCache, look every key up in
    a batch and a sample one by one, and check the values (compressed stores: see the tests and
    ``bench.kvstore``; the demo keeps to the fastest path so the whole stage stays a few seconds)."""
    from backbeat.kvstore.publish import StoreCache, publish_blobs
    from backbeat.kvstore.store import write_store

    folder = ctx.workdir / "kvstore"
    folder.mkdir(parents=True, exist_ok=True)
    keys = [b"user:%08d" % i for i in range(entries)]

    def value(i: int) -> bytes:
        return b"track:%d;plays:%d;country:SE" % (i * 7919 % 1_000_003, i % 977)

    start = time.perf_counter()
    header = write_store(
        ((k, value(i)) for i, k in enumerate(keys)),
        folder / "demo.spl",
        compression="snappy",
        block_size=1024,
    )
    build_s = time.perf_counter() - start
    blobs = ctx.platform.blobs
    blobs.ensure_bucket(BUCKET)
    published = publish_blobs(blobs, BUCKET, PREFIX, folder / "demo.spl", folder / "demo.spi")
    cache = StoreCache(blobs, BUCKET, PREFIX, folder / "serving")
    reader = cache.reader()
    if cache.reader() is not reader or cache.downloads != 1:
        raise AssertionError("the store cache downloaded a version twice")
    start = time.perf_counter()
    values = reader.get_many(keys)
    many_s = time.perf_counter() - start
    bad = sum(1 for i, v in enumerate(values) if v != value(i))
    sample = keys[:: max(1, entries // 20_000)]
    start = time.perf_counter()
    for k in sample:
        reader.get(k)
    get_s = time.perf_counter() - start
    if reader.get(b"no such key") is not None:
        bad += 1
    if bad:
        raise AssertionError(f"{bad} lookups returned a wrong value")
    ctx.console.print(f"kvstore: {entries:,} entries published as {published.version}")
    return {
        "entries": header.num_entries,
        "build_s": round(build_s, 2),
        "version": published.version,
        "get_us": round(get_s / len(sample) * 1e6, 2),
        "get_many_keys_per_s": int(entries / many_s),
    }
