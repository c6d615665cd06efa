"""Event-delivery knobs, read from the environment like every other setting.

BACKBEAT_GRACE_S              seconds after an hour's end before it may close (default 600)
BACKBEAT_DEDUPE_LOOKBACK      K: previous closed hours whose ids skewed rows are checked against (24)
BACKBEAT_SPARK_THRESHOLD      rows above which an hour is deduplicated by the PySpark job (5,000,000)
BACKBEAT_WATERMARK            backlog (default, documents-backed) | monitoring | none; see watermark.py
BACKBEAT_BQ_DATASET           BigQuery dataset of the hourly exports (default events)
BACKBEAT_EXPORT               record (write the load request to exports/, default) | bigquery (jobs.insert)
BACKBEAT_HOUR_SECONDS         real seconds in one bucket "hour" (default 3600; 10..3600 for tests and
                              benchmarks, see hours.py for the naming); grace stays in real seconds

Dataproc submission of the Spark path (spark_submit.py). Unset cluster: the Spark path runs in the
dedupe process itself (Spark local mode). Set: the hour is submitted as a PySpark job to that cluster
through the platform's dataproc port (``gcp``: google-cloud-dataproc; ``local``: a local cluster
that runs the job in a subprocess, see backbeat.cloud.local_dataproc).

BACKBEAT_DATAPROC_CLUSTER     cluster name the dedupe jobs run on (default: unset = in-process Spark)
BACKBEAT_DATAPROC_REGION      its region (default europe-west1)
BACKBEAT_DATAPROC_PROJECT     its project (default: the settings' project)
BACKBEAT_DATAPROC_STAGING     bucket for the job's code (entry script + backbeat zip, uploaded once
                              per content hash under dataproc/); default: the events bucket
BACKBEAT_DATAPROC_TIMEOUT_S   how long dedupe waits for the job before failing (default 480, under the
                              function's 540 s); a re-trigger attaches to the still-running job
BACKBEAT_DATAPROC_POLL_S      seconds between get_job polls (default 10)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from backbeat.errors import ConfigError

DEAD_LETTER_TOPIC = "ingest-dead-letter"
HOUR_CLOSED_TOPIC = "hour-closed"
OPEN, CLOSING, CLOSED = "OPEN", "CLOSING", "CLOSED"


def hour_seconds_from_env(env: Mapping[str, str] | None = None) -> int:
    """``BACKBEAT_HOUR_SECONDS`` as an int in 10..3600 (ConfigError naming the value otherwise)."""
    env = os.environ if env is None else env
    raw = env.get("BACKBEAT_HOUR_SECONDS")
    if raw in (None, ""):
        return 3600
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"BACKBEAT_HOUR_SECONDS={raw!r} is not an integer") from None
    if not 10 <= value <= 3600:
        raise ConfigError(f"BACKBEAT_HOUR_SECONDS={raw!r} must be between 10 and 3600")
    return value


def events_topic(event_type: str) -> str:
    return f"events.{event_type}"


@dataclass(frozen=True)
class DeliveryConfig:
    grace_s: float = 600.0
    lookback_hours: int = 24
    spark_threshold_rows: int = 5_000_000
    watermark: str = "backlog"
    bq_dataset: str = "events"
    export: str = "record"
    divert_search_hours: int = 72
    dead_letter_topic: str = DEAD_LETTER_TOPIC
    hour_closed_topic: str = HOUR_CLOSED_TOPIC
    hour_seconds: int = 3600
    dataproc_cluster: str = ""
    dataproc_region: str = "europe-west1"
    dataproc_project: str = ""
    dataproc_staging: str = ""
    dataproc_timeout_s: float = 480.0
    dataproc_poll_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DeliveryConfig:
        env = os.environ if env is None else env

        def num(name: str, default: float, cast: type = float) -> float:
            raw = env.get(name)
            if raw in (None, ""):
                return default
            try:
                value = cast(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a number") from None
            if value < 0:
                raise ConfigError(f"{name}={raw!r} must be >= 0")
            return value

        watermark = env.get("BACKBEAT_WATERMARK", "backlog") or "backlog"
        if watermark not in ("backlog", "monitoring", "none"):
            raise ConfigError(f"BACKBEAT_WATERMARK={watermark!r} is not one of backlog, monitoring, none")
        export = env.get("BACKBEAT_EXPORT", "record") or "record"
        if export not in ("record", "bigquery"):
            raise ConfigError(f"BACKBEAT_EXPORT={export!r} is not one of record, bigquery")
        return cls(
            grace_s=num("BACKBEAT_GRACE_S", 600.0),
            lookback_hours=int(num("BACKBEAT_DEDUPE_LOOKBACK", 24, int)),
            spark_threshold_rows=int(num("BACKBEAT_SPARK_THRESHOLD", 5_000_000, int)),
            watermark=watermark,
            bq_dataset=env.get("BACKBEAT_BQ_DATASET") or "events",
            export=export,
            hour_seconds=hour_seconds_from_env(env),
            dataproc_cluster=(env.get("BACKBEAT_DATAPROC_CLUSTER") or "").strip(),
            dataproc_region=(env.get("BACKBEAT_DATAPROC_REGION") or "").strip() or "europe-west1",
            dataproc_project=(env.get("BACKBEAT_DATAPROC_PROJECT") or "").strip(),
            dataproc_staging=(env.get("BACKBEAT_DATAPROC_STAGING") or "").strip(),
            dataproc_timeout_s=num("BACKBEAT_DATAPROC_TIMEOUT_S", 480.0),
            dataproc_poll_s=num("BACKBEAT_DATAPROC_POLL_S", 10.0),
        )
