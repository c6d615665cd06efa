"""The PySpark path of dedupe, for hours above ``BACKBEAT_SPARK_THRESHOLD`` rows.

Same output contract as the in-function path (dedupe.py): parts ``part-NNNNN.avro`` (snappy, the
registry schema, deterministic bytes), ``_event_ids-NNNNN.zst`` sidecars, ``_SUCCESS`` last with
the same counts. The job:

1. one task per group of staging files reads each file's keys (from its Avro header; no row is
   decoded) and emits ``(event_id, (received_at, message_id, file, row))``;
2. ``reduceByKey(min)``: the winner of every id, the same rule as in-function;
3. skewed rows whose id is final in one of the previous K hours are dropped (broadcast set);
4. the winners are grouped per file and files are assigned to ``ceil(rows / rows_per_part)`` parts
   (file index modulo the part count, deterministic); each part task writes its Avro part, copying
   whole blocks for files whose rows all win.

Executors read staging files through the blobs adapter built from the (picklable) settings: local
files here, Cloud Storage on Dataproc. The written parts return to the driver, which uploads them
through the platform, so the commit order (parts, sidecars, stale-part cleanup, _SUCCESS) is the
driver's. Tested in Spark local mode; on Dataproc the same module is submitted as a PySpark job
(``backbeat.delivery.spark_dedupe`` as the main file) through the dataproc port.
"""

from __future__ import annotations

import math
from typing import Any

from backbeat.cloud.ports import Platform
from backbeat.delivery import hours as H
from backbeat.delivery.config import DeliveryConfig
from backbeat.delivery.registry import Registry

ROWS_PER_PART = 1_000_000


def _blobs_for(settings: Any) -> Any:
    """The blobs adapter for an executor (the same choice ``backbeat.cloud.connect`` makes)."""
    if settings.backend == "gcp":
        from backbeat.cloud.gcp_blobs import GcsBlobs

        return GcsBlobs(settings)
    from backbeat.cloud.local_blobs import DirectoryBlobs

    return DirectoryBlobs(settings.data_dir / "buckets")


def spark_session(app: str = "backbeat-dedupe", master: str | None = None) -> Any:
    import os
    import sys

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app)
    if master or not os.environ.get("SPARK_MASTER"):
        builder = builder.master(master or "local[2]")  # 2 cores here
    return (
        builder.config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )


def dedupe_hour_spark(
    platform: Platform,
    bucket: str,
    manifest: dict[str, Any],
    sha: str,
    *,
    registry: Registry,
    config: DeliveryConfig,
    settings: Any = None,
    spark: Any = None,
    rows_per_part: int | None = None,
) -> Any:
    import zstandard

    from backbeat.delivery.dedupe import DedupeResult, file_keys, output_schema, skewed_prior, write_part
    from backbeat.settings import get_settings

    settings = settings or get_settings()
    event_type, hour = manifest["type"], manifest["hour"]
    files = manifest["files"]
    rows_per_part = rows_per_part or ROWS_PER_PART
    nparts = max(1, math.ceil(manifest["rows"] / max(1, rows_per_part)))
    own = spark is None
    spark = spark or spark_session()
    try:
        sc = spark.sparkContext
        names = [f["name"] for f in files]
        mids = sc.broadcast([f["message_id"] for f in files])
        skewed_files = sc.broadcast({i for i, f in enumerate(files) if f["skewed"]})
        prior = sc.broadcast(skewed_prior(platform, bucket, manifest, config.lookback_hours))
        expected_rows = [f["rows"] for f in files]

        def keys_of(items):  # runs on executors
            blobs = _blobs_for(settings)
            for fi, name in items:
                ids, rec, canonical = file_keys(blobs.get(bucket, name), name)
                if len(ids) != expected_rows[fi]:
                    raise ValueError(f"{name}: {len(ids)} rows, the manifest says {expected_rows[fi]}")
                mid = mids.value[fi]
                yield ("\x00canonical", (fi, canonical))
                for ri, eid in enumerate(ids):
                    yield (eid, (rec[ri], mid, fi, ri))

        slices = max(1, min(len(names), sc.defaultParallelism * 2))
        keyed = sc.parallelize(list(enumerate(names)), slices).mapPartitions(keys_of).cache()
        canonicals = dict(keyed.filter(lambda kv: kv[0] == "\x00canonical").values().collect())
        schema = output_schema(registry, event_type, canonicals.values())
        rows_in = sum(expected_rows)

        dropped = sc.accumulator(0)

        def not_prior(kv):
            if kv[1][2] in skewed_files.value and kv[0] in prior.value:
                dropped.add(1)
                return False
            return True

        winners = keyed.filter(lambda kv: kv[0] != "\x00canonical").reduceByKey(min)
        kept = winners.filter(not_prior)
        per_file = kept.map(lambda kv: (kv[1][2], kv[1][3])).groupByKey()
        by_part = per_file.map(lambda fr: (fr[0] % nparts, (fr[0], sorted(fr[1])))).partitionBy(
            nparts, lambda p: p
        )
        canon_b = sc.broadcast(canonicals)
        event_version = (event_type, schema.version)

        def write(p, items):  # runs on executors: one Avro part per Spark partition
            import io

            from backbeat.delivery.registry import default_registry

            blobs = _blobs_for(settings)
            out_schema = default_registry().get(*event_version)
            entries = sorted(v for _, v in items)
            sources, ids_out, n, n_skewed = [], [], 0, 0
            for fi, rows in entries:
                data = blobs.get(bucket, names[fi])
                keep = None if len(rows) == expected_rows[fi] else [False] * expected_rows[fi]
                if keep is not None:
                    for r in rows:
                        keep[r] = True
                sources.append((data, canon_b.value[fi], keep))
                file_ids = file_keys(data, names[fi])[0]
                ids_out += [file_ids[r] for r in rows]
                n += len(rows)
                n_skewed += len(rows) if fi in skewed_files.value else 0
            buf = io.BytesIO()
            write_part(buf, out_schema, sha, p, sources)
            yield (p, buf.getvalue(), "\n".join(sorted(ids_out)).encode(), n, n_skewed)

        results = sorted(by_part.mapPartitionsWithIndex(write).collect())
        dropped_prior = dropped.value
        keyed.unpersist()
    finally:
        if own:
            spark.stop()
    parts, rows_out, skewed = [], 0, 0
    zc = zstandard.ZstdCompressor(level=3)
    for p, data, ids, n, n_skewed in results:
        name = H.part_name(event_type, hour, p)
        platform.blobs.put(bucket, name, data, content_type="avro/binary")
        platform.blobs.put(
            bucket, H.final_prefix(event_type, hour) + f"_event_ids-{p:05d}.zst", zc.compress(ids)
        )
        parts.append(name)
        rows_out += n
        skewed += n_skewed
    return DedupeResult(
        event_type,
        hour,
        rows_in,
        rows_out,
        rows_in - rows_out,
        skewed,
        sha,
        parts,
        "spark",
        schema.version,
        dropped_prior,
        manifest["dead_letters"]["events"],
    )
