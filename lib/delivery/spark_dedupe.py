"""The PySpark path of dedupe, for hours above ``BACKBEAT_SPARK_THRESHOLD`` rows.

Same output contract as the in-function path (dedupe.py): parts ``part-NNNNN.avro`` (snappy, the
registry schema, deterministic bytes), ``_event_ids-NNNNN.zst`` sidecars, ``_SUCCESS`` last with
the same counts. The job (:func:`run_dedupe`):

1. one task per group of staging files reads each file's keys (from its Avro header; no row is
   decoded) and emits ``(event_id, (received_at, message_id, file, row))``;
2. ``reduceByKey(min)``: the winner of every id, the same rule as in-function;
3. skewed rows whose id is final in one of the previous K hours are dropped (broadcast set);
4. the winners are grouped per file and files are assigned to ``ceil(rows / rows_per_part)`` parts
   (file index modulo the part count, deterministic); each part task writes its Avro part and its
   ids sidecar **straight to the blobs port from the executor** (copying whole blocks for files
   whose rows all win); only the per-part counts come back to the driver.

The commit (stale-part cleanup, then ``_SUCCESS`` last) is the driver's and stays in dedupe.py's
``_finish``: a run that dies before it leaves parts but no ``_SUCCESS``, and is redone whole.

Executors reach the bucket through the blobs adapter built from the (picklable) settings: a
directory here, Cloud Storage on Dataproc. Two drivers run this code: :func:`dedupe_hour_spark`
(in the calling process, Spark local mode) and ``backbeat.delivery.spark_job`` (the entry script a
Dataproc cluster runs; submitted by ``spark_submit`` when ``BACKBEAT_DATAPROC_CLUSTER`` is set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from backbeat.cloud.ports import Platform
from backbeat.delivery import hours as H
from backbeat.delivery.config import DeliveryConfig
from backbeat.delivery.registry import Registry

ROWS_PER_PART = 1_000_000
SIDECAR_ZSTD_LEVEL = 3


@dataclass(frozen=True)
class BlobsOnly:
    """A stand-in for :class:`Platform` where only ``.blobs`` exists (a Spark driver on a cluster has
    no documents database or bus); the dedupe helpers it is passed to touch ``.blobs`` only."""

    blobs: Any


def _blobs_for(settings: Any) -> Any:
    """The blobs adapter for an executor (the same choice ``backbeat.cloud.connect`` makes)."""
    if settings.backend == "gcp":
        from backbeat.cloud.gcp_blobs import GcsBlobs

        return GcsBlobs(settings)
    from backbeat.cloud.local_blobs import DirectoryBlobs

    return DirectoryBlobs(settings.data_dir / "buckets")


def spark_session(app: str = "backbeat-dedupe", master: str | None = None) -> Any:
    """A Spark session for the in-process path (local mode unless ``SPARK_MASTER`` is set)."""
    import os
    import sys

    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.errors import PySparkRuntimeError

    builder = SparkSession.builder.appName(app)
    if master or not os.environ.get("SPARK_MASTER"):
        builder = builder.master(master or "local[2]")  # 2 cores here
    builder = (builder.config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "4")
               .config("spark.driver.memory", "1g"))
    try:
        return builder.getOrCreate()
    except PySparkRuntimeError as exc:
        # The JVM behind py4j is forked from this process; when the fork races threads of other
        # libraries (gRPC clients) the child can exit before it reports its port (seen once in a
        # CI run: "JAVA_GATEWAY_EXITED"). A second launch is independent; other errors are not.
        if exc.getCondition() != "JAVA_GATEWAY_EXITED":
            raise
        return builder.getOrCreate()


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
    """The Spark job in this process (local mode unless ``spark`` is given); the caller commits."""
    from backbeat.settings import get_settings

    own = spark is None
    spark = spark or spark_session()
    try:
        return run_dedupe(
            platform,
            bucket,
            manifest,
            sha,
            registry=registry,
            lookback_hours=config.lookback_hours,
            settings=settings or get_settings(),
            spark=spark,
            rows_per_part=rows_per_part,
        )
    finally:
        if own:
            spark.stop()


def run_dedupe(
    platform: Platform | BlobsOnly,
    bucket: str,
    manifest: dict[str, Any],
    sha: str,
    *,
    registry: Registry,
    lookback_hours: int,
    settings: Any,
    spark: Any,
    rows_per_part: int | None = None,
) -> Any:
    """Plan on the cluster and write every part and sidecar from the executors. Returns the
    DedupeResult; writes no ``_SUCCESS`` (the caller's commit step)."""
    from backbeat.delivery.dedupe import DedupeResult, file_keys, output_schema, skewed_prior, write_part

    event_type, hour = manifest["type"], manifest["hour"]
    files = manifest["files"]
    rows_per_part = rows_per_part or ROWS_PER_PART
    nparts = max(1, math.ceil(manifest["rows"] / max(1, rows_per_part)))
    sc = spark.sparkContext
    names = [f["name"] for f in files]
    mids = sc.broadcast([f["message_id"] for f in files])
    skewed_files = sc.broadcast({i for i, f in enumerate(files) if f["skewed"]})
    prior = sc.broadcast(skewed_prior(platform, bucket, manifest, lookback_hours))
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
    try:
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
        schema_b = sc.broadcast(schema)  # the EventSchema itself: executors need no registry files

        def write(p, items):  # runs on executors: one Avro part + its ids sidecar per Spark partition
            import io

            import zstandard

            blobs = _blobs_for(settings)
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
            write_part(buf, schema_b.value, sha, p, sources)
            blobs.put(bucket, H.part_name(event_type, hour, p), buf.getvalue(), content_type="avro/binary")
            zc = zstandard.ZstdCompressor(level=SIDECAR_ZSTD_LEVEL)
            ids = zc.compress("\n".join(sorted(ids_out)).encode())
            blobs.put(bucket, H.final_prefix(event_type, hour) + f"_event_ids-{p:05d}.zst", ids)
            yield (p, n, n_skewed)

        results = sorted(by_part.mapPartitionsWithIndex(write).collect())
        dropped_prior = dropped.value
    finally:
        keyed.unpersist()
    written = [p for p, _, _ in results]
    if written != list(range(nparts)):
        from backbeat.delivery.errors import DeliveryError

        raise DeliveryError(f"{event_type} {hour}: the Spark job wrote parts {written}, not 0..{nparts - 1}")
    return DedupeResult(
        event_type,
        hour,
        rows_in,
        sum(n for _, n, _ in results),
        rows_in - sum(n for _, n, _ in results),
        sum(s for _, _, s in results),
        sha,
        [H.part_name(event_type, hour, p) for p, _, _ in results],
        "spark",
        schema.version,
        dropped_prior,
        manifest["dead_letters"]["events"],
    )
