"""Serving the published recommendations (what the ``recommend`` function calls).

Follows ``recommend/LATEST`` in the recommendations bucket, downloads that version's files once
per instance into a local cache, and answers from the mmap-ed kvstore and ann index. The pointer
is re-read at most every ``refresh_s`` seconds, so a new version is picked up without a restart.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from backbeat.dag.errors import DagError


class NotPublished(DagError):
    """No recommendations have been published to the bucket yet."""


class UnknownKey(DagError):
    """The user or track is not in the published version."""


class RecommendationService:
    def __init__(self, blobs: Any, bucket: str, cache_dir: str, refresh_s: float = 60.0) -> None:
        self.blobs = blobs
        self.bucket = bucket
        self.cache_dir = cache_dir
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._loaded: dict[str, Any] | None = None
        self._checked = 0.0

    def _current(self) -> dict[str, Any]:
        from backbeat.cloud.ports import NotFound

        with self._lock:
            if self._loaded is not None and time.monotonic() - self._checked < self.refresh_s:
                return self._loaded
            try:
                pointer = json.loads(self.blobs.get(self.bucket, "recommend/LATEST"))
            except NotFound:
                raise NotPublished(f"gs://{self.bucket}/recommend/LATEST does not exist yet") from None
            self._checked = time.monotonic()
            if self._loaded is not None and self._loaded["version"] == pointer["version"]:
                return self._loaded
            self._loaded = self._load(pointer)
            return self._loaded

    def _load(self, pointer: dict[str, Any]) -> dict[str, Any]:
        from backbeat.ann import AnnIndex
        from backbeat.kvstore import Reader

        manifest = json.loads(self.blobs.get(self.bucket, pointer["manifest"]))
        folder = os.path.join(self.cache_dir, manifest["version"])
        os.makedirs(folder, exist_ok=True)
        local = {}
        for key, name in manifest["files"].items():
            path = os.path.join(folder, os.path.basename(name))
            if not os.path.exists(path):
                self.blobs.download_to(self.bucket, name, path)
            local[key] = path
        with open(local["items"], encoding="utf-8") as f:
            items = json.load(f)
        index = AnnIndex(int(manifest["dim"]), "angular")
        index.load(local["ann"])
        reader = Reader(local["recs_index"], local["recs_log"])
        return {
            "version": manifest["version"],
            "items": items,
            "item_ids": {t: i for i, t in enumerate(items)},
            "index": index,
            "reader": reader,
        }

    def version(self) -> str:
        return self._current()["version"]

    def for_user(self, user_id: str, n: int = 10) -> dict[str, Any]:
        cur = self._current()
        raw = cur["reader"].get(user_id.encode())
        if raw is None:
            raise UnknownKey(f"user {user_id!r} is not in version {cur['version']}")
        recs = json.loads(raw)[: max(0, n)]
        return {
            "user_id": user_id,
            "version": cur["version"],
            "tracks": [{"track_id": t, "score": s} for t, s in recs],
        }

    def similar(self, track_id: str, n: int = 10) -> dict[str, Any]:
        cur = self._current()
        i = cur["item_ids"].get(track_id)
        if i is None:
            raise UnknownKey(f"track {track_id!r} is not in version {cur['version']}")
        ids, dists = cur["index"].get_nns_by_item(i, n + 1, include_distances=True)
        out = [
            {"track_id": cur["items"][j], "distance": round(float(d), 4)}
            for j, d in zip(ids, dists, strict=True)
            if j != i
        ][:n]
        return {"track_id": track_id, "version": cur["version"], "similar": out}
