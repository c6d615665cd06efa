"""The entry script of the dedupe PySpark job on a Dataproc cluster (``main_python_file_uri``).

Submitted by ``backbeat.delivery.spark_submit`` with the ``backbeat`` package as a zip in
``python_file_uris``; the cluster runs ``spark_job.py <args>`` under spark-submit. The Spark session
comes from the cluster's configuration (no master is set here). The job:

1. loads the hour's manifest and checks its sha256 against ``--manifest-sha256`` (the hour the
   dedupe function was asked about, not whatever the bucket holds now);
2. does nothing when ``_SUCCESS`` already carries that hash (a retried job is a no-op);
3. runs :func:`backbeat.delivery.spark_dedupe.run_dedupe`: the executors write every part and ids
   sidecar straight to the bucket;
4. commits from the driver in order: stale parts of an earlier attempt deleted, ``_SUCCESS`` last.

Exit status: 0 done (or already done), 2 a typed Backbeat error (printed on one line to stderr,
which Dataproc keeps as the driver output), anything else a crash with its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

APP_PREFIX = "backbeat-dedupe"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="spark_job.py", description="Deduplicate one closed hour (Spark).")
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--type", required=True, dest="event_type")
    ap.add_argument("--hour", required=True)
    ap.add_argument("--manifest-sha256", required=True)
    ap.add_argument("--backend", choices=("local", "gcp"), default="gcp")
    ap.add_argument("--project", default="backbeat-local")
    ap.add_argument("--data-dir", default=None, help="root of the local backend (local only)")
    ap.add_argument("--storage-emulator-host", default=None)
    ap.add_argument("--lookback", type=int, default=24)
    ap.add_argument("--rows-per-part", type=int, default=None)
    return ap.parse_args(list(argv))


def job_args(
    *,
    bucket: str,
    event_type: str,
    hour: str,
    sha: str,
    settings: Any,
    lookback: int,
    rows_per_part: int | None = None,
) -> list[str]:
    """The argument list of :func:`main` for a submission (the submitter's storage settings, so the
    job reads and writes the same bucket the dedupe function sees)."""
    args = [
        f"--bucket={bucket}",
        f"--type={event_type}",
        f"--hour={hour}",
        f"--manifest-sha256={sha}",
        f"--backend={settings.backend}",
        f"--project={settings.project}",
        f"--lookback={int(lookback)}",
    ]
    if settings.backend == "local":
        args.append(f"--data-dir={settings.data_dir}")
    if getattr(settings, "storage_emulator_host", None):
        args.append(f"--storage-emulator-host={settings.storage_emulator_host}")
    if rows_per_part:
        args.append(f"--rows-per-part={int(rows_per_part)}")
    return args


def _registry() -> Any:
    """The event registry. From a zip (``--py-files``) the schema folder is not a directory, so
    its files are copied out once through importlib.resources (which reads zips)."""
    import importlib.resources
    import tempfile

    from backbeat.delivery.registry import SCHEMAS_DIR, Registry, default_registry

    if SCHEMAS_DIR.is_dir():
        return default_registry()
    root = Path(tempfile.mkdtemp(prefix="backbeat-schemas-"))
    src = importlib.resources.files("backbeat.delivery") / "schemas"
    for type_dir in src.iterdir():
        if type_dir.is_dir():
            (root / type_dir.name).mkdir()
            for f in type_dir.iterdir():
                (root / type_dir.name / f.name).write_bytes(f.read_bytes())
    return Registry(root)


def run(ns: argparse.Namespace, spark: Any) -> dict[str, Any]:
    """Steps 1-4 with an existing session; returns the ``_SUCCESS`` record (or the existing one)."""
    from backbeat.delivery.dedupe import _finish, load_manifest, read_success
    from backbeat.delivery.errors import ManifestMismatch
    from backbeat.delivery.spark_dedupe import BlobsOnly, _blobs_for, run_dedupe
    from backbeat.settings import Settings

    settings = Settings(
        backend=ns.backend,
        data_dir=Path(ns.data_dir or ".backbeat").resolve(),
        project=ns.project,
        events_bucket=ns.bucket,
        storage_emulator_host=ns.storage_emulator_host,
    )
    store = BlobsOnly(_blobs_for(settings))
    manifest, sha = load_manifest(store, ns.bucket, ns.event_type, ns.hour)  # type: ignore[arg-type]
    if sha != ns.manifest_sha256:
        raise ManifestMismatch(
            f"{ns.event_type} {ns.hour}: the job was submitted for manifest {ns.manifest_sha256[:12]}, "
            f"the bucket holds {sha[:12]}"
        )
    done = read_success(store, ns.bucket, ns.event_type, ns.hour)  # type: ignore[arg-type]
    if done and done.get("manifest_sha256") == sha:
        return done
    if done:
        raise ManifestMismatch(
            f"{ns.event_type} {ns.hour}: _SUCCESS names manifest {done.get('manifest_sha256')}, not {sha}"
        )
    result = run_dedupe(
        store,
        ns.bucket,
        manifest,
        sha,
        registry=_registry(),
        lookback_hours=ns.lookback,
        settings=settings,
        spark=spark,
        rows_per_part=ns.rows_per_part,
    )
    _finish(store, ns.bucket, result)  # type: ignore[arg-type]
    return result.success_record()


def main(argv: Sequence[str] | None = None) -> int:
    from backbeat.errors import BackbeatError

    ns = parse_args(sys.argv[1:] if argv is None else argv)
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName(f"{APP_PREFIX}-{ns.event_type}-{ns.hour}").getOrCreate()
    try:
        record = run(ns, spark)
    except BackbeatError as exc:
        print(f"backbeat dedupe job failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    import backbeat

    summary = {k: record.get(k) for k in ("type", "hour", "rows_in", "rows_out", "duplicates")}
    print(json.dumps({**summary, "code": str(Path(backbeat.__file__).parent)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
