"""The ``gcp`` blobs adapter: google-cloud-storage (also against fake-gcs-server).

Preconditions are GCS's own ``ifGenerationMatch`` (412 -> :class:`PreconditionFailed`), so
create-only writes are atomic on the server. With ``STORAGE_EMULATOR_HOST`` in the settings the
client talks to that endpoint with anonymous credentials.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from backbeat.cloud._gcp import anonymous_credentials, mapped
from backbeat.cloud.ports import BlobInfo, NotFound, PreconditionFailed
from backbeat.settings import Settings

_DEFAULT_CONTENT_TYPE = "application/octet-stream"


class GcsBlobs:
    """Cloud Storage through the official client (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        from google.cloud import storage

        self.settings = settings
        if settings.storage_emulator_host:
            endpoint = settings.storage_emulator_host
            if "://" not in endpoint:
                endpoint = f"http://{endpoint}"
            self._client = storage.Client(
                project=settings.project,
                credentials=anonymous_credentials(),
                client_options={"api_endpoint": endpoint},
            )
        else:
            self._client = storage.Client(project=settings.project)

    @staticmethod
    def _info(blob: Any) -> BlobInfo:
        return BlobInfo(
            bucket=blob.bucket.name,
            name=blob.name,
            generation=int(blob.generation),
            size=int(blob.size or 0),
            updated=blob.updated,
            metadata=dict(blob.metadata or {}),
            content_type=blob.content_type,
        )

    def ensure_bucket(self, bucket: str) -> None:
        from google.api_core import exceptions as gx

        with mapped(f"bucket {bucket!r}"):
            if self._client.lookup_bucket(bucket) is not None:
                return
            try:
                self._client.create_bucket(bucket)
            except gx.Conflict:
                pass  # created meanwhile by someone else

    def put(
        self,
        bucket: str,
        name: str,
        data: bytes,
        *,
        if_generation_match: int | None = None,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        blob = self._client.bucket(bucket).blob(name)
        if metadata:
            blob.metadata = {str(k): str(v) for k, v in metadata.items()}
        with mapped(f"gs://{bucket}/{name}"):
            blob.upload_from_string(
                bytes(data),
                content_type=content_type or _DEFAULT_CONTENT_TYPE,
                if_generation_match=if_generation_match,
            )
        return self._info(blob)

    def put_file(
        self,
        bucket: str,
        name: str,
        path: str | Path,
        *,
        if_generation_match: int | None = None,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BlobInfo:
        if not Path(path).is_file():
            raise NotFound(f"local file {str(path)!r} (for gs://{bucket}/{name}) is missing")
        blob = self._client.bucket(bucket).blob(name)
        if metadata:
            blob.metadata = {str(k): str(v) for k, v in metadata.items()}
        with mapped(f"gs://{bucket}/{name}"):
            blob.upload_from_filename(
                str(path),
                content_type=content_type or _DEFAULT_CONTENT_TYPE,
                if_generation_match=if_generation_match,
            )
        return self._info(blob)

    def get(self, bucket: str, name: str, *, generation: int | None = None) -> bytes:
        blob = self._client.bucket(bucket).blob(name, generation=generation)
        with mapped(f"gs://{bucket}/{name}" + (f"#{generation}" if generation else "")):
            return bytes(blob.download_as_bytes())

    def download_to(self, bucket: str, name: str, path: str | Path) -> BlobInfo:
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with mapped(f"gs://{bucket}/{name}"):
            blob = self._client.bucket(bucket).get_blob(name)
            if blob is None:
                raise NotFound(f"gs://{bucket}/{name} does not exist")
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            os.close(fd)
            try:
                # pin the generation we stat'ed so the bytes and the returned info agree
                self._client.bucket(bucket).blob(name, generation=blob.generation).download_to_filename(tmp)
                os.replace(tmp, dest)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        return self._info(blob)

    def stat(self, bucket: str, name: str) -> BlobInfo | None:
        from google.api_core import exceptions as gx

        try:
            with mapped(f"gs://{bucket}/{name}"):
                blob = self._client.bucket(bucket).get_blob(name)
        except NotFound:
            return None
        except gx.NotFound:  # pragma: no cover - mapped above
            return None
        return self._info(blob) if blob is not None else None

    def list(self, bucket: str, prefix: str = "", *, page_size: int | None = None) -> Iterator[BlobInfo]:
        with mapped(f"gs://{bucket}/{prefix}*"):
            for blob in self._client.list_blobs(bucket, prefix=prefix or None, page_size=page_size):
                yield self._info(blob)

    def list_prefixes(self, bucket: str, prefix: str = "", delimiter: str = "/") -> list[str]:
        with mapped(f"gs://{bucket}/{prefix}*"):
            it = self._client.list_blobs(bucket, prefix=prefix or None, delimiter=delimiter)
            for _page in it.pages:
                pass
            return sorted(it.prefixes, key=lambda s: s.encode())

    def delete(self, bucket: str, name: str, *, if_generation_match: int | None = None) -> None:
        if if_generation_match is not None:
            # GCS checks ifGenerationMatch atomically; fake-gcs-server ignores it on delete, so also
            # check here (the server check is what makes it race-free on Google Cloud).
            cur = self.stat(bucket, name)
            if cur is None:
                raise NotFound(f"gs://{bucket}/{name} does not exist")
            if cur.generation != if_generation_match:
                raise PreconditionFailed(
                    f"gs://{bucket}/{name} is generation {cur.generation}, not {if_generation_match}"
                )
        with mapped(f"gs://{bucket}/{name}"):
            self._client.bucket(bucket).blob(name).delete(if_generation_match=if_generation_match)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()

    def __repr__(self) -> str:
        return (
            f"GcsBlobs(project={self.settings.project!r}, emulator={self.settings.storage_emulator_host!r})"
        )
