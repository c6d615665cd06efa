"""Submission of the dedupe Spark job to a Dataproc cluster, when ``BACKBEAT_DATAPROC_CLUSTER`` is set.

The dedupe function stays the coordinator; the cluster does the work and the commit:

1. the job's code is staged once per content hash through the blobs port:
   ``gs://<staging>/dataproc/code/<hash>/spark_job.py`` (the entry script, ``main_python_file_uri``)
   and ``.../backbeat.zip`` (the ``backbeat`` package, ``python_file_uris``), deterministic bytes, so
   an unchanged library is uploaded once and every job of a deployment runs the same code;
2. the PySpark job is submitted with a job id and a request id derived from the manifest's sha256
   and an attempt number. A re-triggered dedupe (Pub/Sub redelivery, the function killed while
   waiting) meets its own job (same request id, or AlreadyExists) and attaches to it instead of
   submitting twice. Only an attempt that already ended in ERROR/CANCELLED is followed by the next
   attempt number, so a retry after a failure runs again;
3. ``get_job`` is polled until DONE / ERROR / CANCELLED, at most ``BACKBEAT_DATAPROC_TIMEOUT_S``;
4. DONE: ``_SUCCESS`` must carry this manifest's hash, and the DedupeResult is read back from it
   (the same record the in-process path writes). ERROR: :class:`DataprocJobFailed` naming the job
   and the driver's status detail; the job never wrote ``_SUCCESS``, so nothing half-written is
   marked done, and the next trigger redoes the hour.
"""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from backbeat.cloud.ports import AlreadyExists, Blobs, Platform, PreconditionFailed
from backbeat.delivery import hours as H
from backbeat.delivery.config import DeliveryConfig
from backbeat.delivery.errors import DeliveryError, ManifestMismatch
from backbeat.errors import ConfigError

CODE_PREFIX = "dataproc/code/"
MAX_ATTEMPTS = 5
ENTRY_SCRIPT = "spark_job.py"
ZIP_NAME = "backbeat.zip"


class DataprocJobFailed(DeliveryError):
    """The dedupe job ended in ERROR/CANCELLED; the message names the job id and the driver's detail."""

    def __init__(self, message: str, job_id: str, details: str = "") -> None:
        super().__init__(message)
        self.job_id, self.details = job_id, details


class DataprocJobTimeout(DeliveryError):
    """The job did not finish within BACKBEAT_DATAPROC_TIMEOUT_S (it keeps running; a re-trigger
    attaches to it)."""


@dataclass(frozen=True)
class DataprocTarget:
    project: str
    region: str
    cluster: str
    staging_bucket: str
    timeout_s: float = 480.0
    poll_s: float = 10.0

    @classmethod
    def from_config(cls, config: DeliveryConfig, settings: Any, bucket: str) -> DataprocTarget | None:
        """The configured cluster, or None (the Spark path then runs in-process)."""
        if not config.dataproc_cluster:
            return None
        return cls(
            project=config.dataproc_project or settings.project,
            region=config.dataproc_region,
            cluster=config.dataproc_cluster,
            staging_bucket=config.dataproc_staging or bucket,
            timeout_s=config.dataproc_timeout_s,
            poll_s=config.dataproc_poll_s,
        )


# ----------------------------------------------------------------------------------------- code
@lru_cache(maxsize=1)
def package_zip() -> tuple[bytes, str]:
    """The ``backbeat`` package as a deterministic zip (``backbeat/...`` entries, fixed timestamps;
    the same files the function zips ship) and its sha256. Built once per process."""
    from backbeat.stack.packaging import FIXED_TIME, _walk, library_dir

    lib = library_dir()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(_walk(lib), key=lambda p: p.relative_to(lib).as_posix()):
            info = zipfile.ZipInfo("backbeat/" + path.relative_to(lib).as_posix(), date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def _put_once(blobs: Blobs, bucket: str, name: str, data: bytes, content_type: str) -> None:
    if blobs.stat(bucket, name) is not None:
        return
    try:
        blobs.put(bucket, name, data, if_generation_match=0, content_type=content_type)
    except PreconditionFailed:
        pass  # a concurrent dedupe uploaded the same content-addressed object


def stage_code(blobs: Blobs, bucket: str) -> tuple[str, str]:
    """Upload the entry script and the package zip (once per content hash); their gs:// URIs."""
    data, digest = package_zip()
    folder = f"{CODE_PREFIX}{digest[:20]}/"
    entry = (Path(__file__).with_name(ENTRY_SCRIPT)).read_bytes()
    blobs.ensure_bucket(bucket)
    _put_once(blobs, bucket, folder + ZIP_NAME, data, "application/zip")
    _put_once(blobs, bucket, folder + ENTRY_SCRIPT, entry, "text/x-python")
    return f"gs://{bucket}/{folder}{ENTRY_SCRIPT}", f"gs://{bucket}/{folder}{ZIP_NAME}"


# ------------------------------------------------------------------------------------ the job
def job_id(event_type: str, hour: str, sha: str, attempt: int) -> str:
    """``bb-dedupe-<type>-<hour>-<sha16>-<n>``: Dataproc's [A-Za-z0-9_-], at most 100 characters."""
    return f"bb-dedupe-{event_type}-{hour}-{sha[:16]}-{attempt}"


def request_id(sha: str, attempt: int) -> str:
    """At most 40 characters (the API's limit): the same submission always carries the same id."""
    return f"bbd-{sha[:32]}-{attempt}"


def job_request(
    target: DataprocTarget, jid: str, main_uri: str, zip_uri: str, args: list[str], event_type: str, hour: str
) -> dict[str, Any]:
    """The ``dataproc_v1.Job`` body (snake_case field names)."""
    return {
        "reference": {"project_id": target.project, "job_id": jid},
        "placement": {"cluster_name": target.cluster},
        "pyspark_job": {"main_python_file_uri": main_uri, "python_file_uris": [zip_uri], "args": args},
        "labels": {"backbeat-job": "dedupe", "event-type": event_type, "hour": hour.lower()},
    }


def _state(job: Any, field: str) -> str:
    """``status.state`` or ``status.details`` of a job (a plain dict from the port)."""
    value = ((job or {}).get("status") or {}).get(field) or ""
    return str(value or ("STATE_UNSPECIFIED" if field == "state" else ""))


def submit_dedupe(
    platform: Platform,
    bucket: str,
    manifest: dict[str, Any],
    sha: str,
    *,
    config: DeliveryConfig,
    settings: Any,
    target: DataprocTarget,
    rows_per_part: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """Run the hour's Spark job on the cluster and return its DedupeResult (see the module doc)."""
    from backbeat.dag.dataproc import FAILED_STATES
    from backbeat.delivery import spark_dedupe
    from backbeat.delivery.dedupe import DedupeResult, read_success
    from backbeat.delivery.spark_job import job_args

    dataproc = getattr(platform, "dataproc", None)
    if dataproc is None:
        raise ConfigError(
            f"BACKBEAT_DATAPROC_CLUSTER={target.cluster} is set, but the {platform.backend} platform has no "
            "dataproc adapter"
        )
    event_type, hour = manifest["type"], manifest["hour"]
    main_uri, zip_uri = stage_code(platform.blobs, target.staging_bucket)
    args = job_args(
        bucket=bucket,
        event_type=event_type,
        hour=hour,
        sha=sha,
        settings=settings,
        lookback=config.lookback_hours,
        rows_per_part=rows_per_part or spark_dedupe.ROWS_PER_PART,
    )
    job: Any = None
    jid = ""
    for attempt in range(MAX_ATTEMPTS):
        jid = job_id(event_type, hour, sha, attempt)
        request = job_request(target, jid, main_uri, zip_uri, args, event_type, hour)
        try:
            rid = request_id(sha, attempt)
            job = dataproc.submit_job(target.project, target.region, request, request_id=rid)
        except AlreadyExists:
            job = dataproc.get_job(target.project, target.region, jid)
        if _state(job, "state") not in FAILED_STATES:
            break  # new, or an earlier trigger's job still running / done: attach to it
    else:
        raise DataprocJobFailed(
            f"{event_type} {hour}: all {MAX_ATTEMPTS} Dataproc attempts failed; last {jid}: "
            f"{_state(job, 'details')}",
            jid,
            _state(job, "details"),
        )
    deadline = clock() + target.timeout_s
    state = _state(job, "state")
    while state not in FAILED_STATES and state != "DONE":
        if clock() >= deadline:
            raise DataprocJobTimeout(
                f"{event_type} {hour}: Dataproc job {jid} is still {state} after {target.timeout_s:g}s "
                "(it keeps running; a re-trigger attaches to it)"
            )
        sleep(target.poll_s)
        job = dataproc.get_job(target.project, target.region, jid)
        state = _state(job, "state")
    if state != "DONE":
        details = _state(job, "details")
        raise DataprocJobFailed(
            f"{event_type} {hour}: Dataproc job {jid} ended {state}: {details}", jid, details
        )
    done = read_success(platform, bucket, event_type, hour)
    if done is None:
        raise DeliveryError(
            f"{event_type} {hour}: Dataproc job {jid} is DONE but wrote no {H.success_name(event_type, hour)}"
        )
    if done.get("manifest_sha256") != sha:
        raise ManifestMismatch(
            f"{event_type} {hour}: Dataproc job {jid} is DONE but _SUCCESS names manifest "
            f"{str(done.get('manifest_sha256'))[:12]}, not {sha[:12]}"
        )
    fields = {k: done[k] for k in DedupeResult.__dataclass_fields__ if k in done and k != "event_type"}
    return DedupeResult(event_type=event_type, **fields)
