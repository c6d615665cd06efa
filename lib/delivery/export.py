"""export: one BigQuery load job per closed hour, idempotent by its job id.

The job id is derived from the manifest's sha256, so a repeated export (dedupe rerun, duplicate
``hour-closed``) submits the same id and BigQuery answers 409 "already exists": a no-op. The load
truncates the hour's partition (``<table>$YYYYMMDDHH``) of an hourly ingestion-time partitioned
table named after the type, so even a new job for the same hour cannot double rows. No BigQuery
emulator exists: the request is built and checked here; :class:`RecordingExporter` (local backend
and emulator stack) writes it to ``exports/<type>/<hour>.json`` create-only, and
:class:`BigQueryExporter` posts it to the jobs.insert REST endpoint with an authorised session.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

from backbeat.cloud.ports import Blobs, PreconditionFailed
from backbeat.delivery import hours as H

_JOB_ID_OK = re.compile(r"[^A-Za-z0-9_-]")


def job_id(event_type: str, hour: str, manifest_sha256: str) -> str:
    """``backbeat_<type>_<YYYYMMDDHH>_<sha[:20]>`` (BigQuery job ids: letters, digits, _ and -)."""
    stamp = H.key_time(hour).strftime("%Y%m%d%H")
    return _JOB_ID_OK.sub("_", f"backbeat_{event_type}_{stamp}_{manifest_sha256[:20]}")


def load_request(
    project: str,
    dataset: str,
    bucket: str,
    event_type: str,
    hour: str,
    manifest_sha256: str,
    parts: list[str],
    location: str = "EU",
) -> dict[str, Any]:
    """The jobs.insert body for one closed hour."""
    if not parts:
        raise ValueError(f"{event_type} {hour}: nothing to export (no parts)")
    stamp = H.key_time(hour).strftime("%Y%m%d%H")
    return {
        "jobReference": {
            "projectId": project,
            "jobId": job_id(event_type, hour, manifest_sha256),
            "location": location,
        },
        "configuration": {
            "load": {
                "sourceUris": [f"gs://{bucket}/{p}" for p in sorted(parts)],
                "sourceFormat": "AVRO",
                "useAvroLogicalTypes": True,
                "destinationTable": {
                    "projectId": project,
                    "datasetId": dataset,
                    "tableId": f"{event_type}${stamp}",
                },
                "timePartitioning": {"type": "HOUR"},
                "writeDisposition": "WRITE_TRUNCATE",
                "createDisposition": "CREATE_IF_NEEDED",
                "schemaUpdateOptions": [],
            },
            "labels": {"backbeat_type": event_type.replace("_", "-"), "backbeat_hour": stamp},
        },
    }


class Exporter(Protocol):
    def submit(self, request: dict[str, Any]) -> str:
        """Submit a load; returns ``submitted`` or ``duplicate`` (same job id seen before)."""


class RecordingExporter:
    """Writes the request to the events bucket, create-only (the same id twice is a no-op)."""

    def __init__(self, blobs: Blobs, bucket: str) -> None:
        self.blobs, self.bucket = blobs, bucket

    def submit(self, request: dict[str, Any]) -> str:
        load = request["configuration"]["load"]
        table = load["destinationTable"]["tableId"]
        event_type, stamp = table.split("$")
        hour = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[8:10]}"
        body = json.dumps(request, sort_keys=True, indent=1).encode()
        try:
            self.blobs.put(
                self.bucket,
                H.export_name(event_type, hour),
                body,
                if_generation_match=0,
                content_type="application/json",
            )
        except PreconditionFailed:
            existing = json.loads(self.blobs.get(self.bucket, H.export_name(event_type, hour)))
            if existing["jobReference"]["jobId"] == request["jobReference"]["jobId"]:
                return "duplicate"
            self.blobs.put(
                self.bucket, H.export_name(event_type, hour), body, content_type="application/json"
            )
        return "submitted"


class BigQueryExporter:
    """jobs.insert over REST with Application Default Credentials (google-auth, lazily imported)."""

    URL = "https://bigquery.googleapis.com/bigquery/v2/projects/{project}/jobs"

    def __init__(self, session: Any = None) -> None:
        self._session = session

    def session(self) -> Any:
        if self._session is None:
            import google.auth
            from google.auth.transport.requests import AuthorizedSession

            creds, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/bigquery"])
            self._session = AuthorizedSession(creds)
        return self._session

    def submit(self, request: dict[str, Any]) -> str:
        project = request["jobReference"]["projectId"]
        resp = self.session().post(self.URL.format(project=project), json=request, timeout=60)
        if resp.status_code == 409:
            return "duplicate"
        if resp.status_code >= 400:
            from backbeat.delivery.errors import DeliveryError

            raise DeliveryError(
                f"BigQuery jobs.insert {request['jobReference']['jobId']}: "
                f"HTTP {resp.status_code} {resp.text[:300]}"
            )
        return "submitted"
