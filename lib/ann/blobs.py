"""Publishing an index to object storage and serving it from a local, shared, mmapped copy.

A serving function calls :func:`open_published`: it asks the blobs port for the object's
generation, downloads it once per generation into a cache folder (atomic rename, so concurrent
processes never see half a file) and maps it read-only. Every process on the machine that opens the
same generation maps the same file and shares its pages.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from backbeat.ann.errors import AnnFormatError
from backbeat.ann.index import AnnIndex
from backbeat.cloud.ports import BlobInfo, Blobs


def publish(index_path: str | os.PathLike[str], blobs: Blobs, bucket: str, name: str, *, f: int, metric: str,
            if_generation_match: int | None = None) -> BlobInfo:
    """Upload an ``.ann`` file with its dimension and metric in the object's metadata."""
    blobs.ensure_bucket(bucket)
    return blobs.put_file(
        bucket, name, index_path,
        if_generation_match=if_generation_match,
        content_type="application/x-annoy-index",
        metadata={"ann_f": str(f), "ann_metric": metric},
    )


def cached_path(cache_dir: str | os.PathLike[str], bucket: str, name: str, generation: int) -> Path:
    safe = name.replace("/", "__")
    return Path(cache_dir) / bucket / f"{safe}@{generation}.ann"


def open_published(blobs: Blobs, bucket: str, name: str, cache_dir: str | os.PathLike[str],
                   prefault: bool = False) -> tuple[AnnIndex, dict[str, Any]]:
    """The published index, mapped from the local copy of its current generation.

    Returns the index and ``{"generation", "path", "downloaded"}``. Raises the port's NotFound if
    the object does not exist, AnnFormatError if it carries no dimension/metric."""
    from backbeat.cloud.ports import NotFound

    info = blobs.stat(bucket, name)
    if info is None:
        raise NotFound(f"gs://{bucket}/{name} does not exist")
    path = cached_path(cache_dir, bucket, name, info.generation)
    downloaded = False
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".dl.", dir=path.parent)
        os.close(fd)
        try:
            info = blobs.download_to(bucket, name, tmp)
            path = cached_path(cache_dir, bucket, name, info.generation)
            os.replace(tmp, path)
            downloaded = True
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    meta = dict(info.metadata or {})
    try:
        f, metric = int(meta["ann_f"]), meta["ann_metric"]
    except (KeyError, ValueError):
        raise AnnFormatError(f"gs://{bucket}/{name}: metadata lacks ann_f/ann_metric ({meta})") from None
    index = AnnIndex(f, metric)
    index.load(path, prefault=prefault)
    return index, {"generation": info.generation, "path": str(path), "downloaded": downloaded}
