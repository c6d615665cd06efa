"""Publishing store versions atomically, on a local disk or through the blobs port.

A store is two files that must change together, so a version is never updated in place:

* **locally** (:func:`publish_local`): the files are placed as ``root/<version>.spl|.spi`` and the
  pointer file ``root/CURRENT`` (the version name) is replaced with a rename, so a reader opening
  the store sees the old pair or the new pair, never a mix;
* **through the blobs port** (:func:`publish_blobs`): log and index are uploaded create-only under
  ``prefix/versions/<version>/``, then the small pointer object ``prefix/CURRENT`` is switched with a
  generation precondition (create-only the first time). Of two concurrent publishers exactly one
  wins; the other gets :class:`~backbeat.kvstore.errors.PublishError`.

Serving code keeps a :class:`StoreCache`: it reads the pointer (at most every ``check_every_s``
seconds), downloads a version's two files once into a local folder, and hands out an mmap
:class:`~backbeat.kvstore.reader.Reader`; a newly published version is picked up by the next call.
Old readers are not closed under the feet of threads still using them; they are unmapped when the
last reference goes away.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backbeat.kvstore.errors import KvStoreError, PublishError
from backbeat.kvstore.format import HASH_HEADER_SIZE, HashHeader
from backbeat.kvstore.reader import Reader

POINTER = "CURRENT"


def new_version() -> str:
    """A sortable, unique version name: UTC time plus 32 random bits."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(4)


def _index_header(index_path: Path) -> HashHeader:
    with open(index_path, "rb") as fh:
        raw = fh.read(HASH_HEADER_SIZE)
    return HashHeader.unpack(raw, index_path, os.path.getsize(index_path))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------- local
def publish_local(
    log_path: str | Path,
    index_path: str | Path,
    root: str | Path,
    version: str | None = None,
    *,
    move: bool = False,
) -> str:
    """Place a built store in ``root`` as a new version and switch ``root/CURRENT`` to it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    version = version or new_version()
    if "/" in version or version.startswith("."):
        raise PublishError(f"version name {version!r} must be a plain file name")
    header = _index_header(Path(index_path))
    for src, suffix in ((Path(log_path), ".spl"), (Path(index_path), ".spi")):
        dest = root / f"{version}{suffix}"
        if dest.exists():
            raise PublishError(f"{dest} already exists: versions are never overwritten")
        tmp = root / f".{version}{suffix}.tmp"
        if move:
            os.replace(src, tmp)
        else:
            shutil.copyfile(src, tmp)
        _fsync(tmp)
        os.replace(tmp, dest)
    pointer = {
        "version": version,
        "file_identifier": f"{header.file_identifier:08x}",
        "entries": header.num_entries,
    }
    tmp = root / f".{POINTER}.{secrets.token_hex(4)}.tmp"
    tmp.write_text(json.dumps(pointer) + "\n")
    _fsync(tmp)
    os.replace(tmp, root / POINTER)
    return version


def current_local(root: str | Path) -> str:
    """The version ``root/CURRENT`` names (KvStoreError when nothing is published)."""
    try:
        return json.loads((Path(root) / POINTER).read_text())["version"]
    except FileNotFoundError:
        raise KvStoreError(f"{root}: no store published (no {POINTER} pointer)") from None
    except (ValueError, KeyError, TypeError):
        raise PublishError(f"{Path(root) / POINTER}: unreadable pointer") from None


def open_local(root: str | Path) -> Reader:
    root = Path(root)
    version = current_local(root)
    return Reader(root / f"{version}.spi", root / f"{version}.spl")


class LocalStore:
    """A reader that follows ``root/CURRENT``: :meth:`reader` reopens when a new version is
    published (checked with one ``stat`` of the pointer, at most every ``check_every_s``)."""

    def __init__(self, root: str | Path, check_every_s: float = 0.0) -> None:
        self.root = Path(root)
        self.check_every_s = check_every_s
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._reader: Reader | None = None
        self._checked = 0.0
        self.version: str | None = None

    def reader(self) -> Reader:
        now = time.monotonic()
        current = self._reader
        if current is not None and now - self._checked < self.check_every_s:
            return current
        with self._lock:
            self._checked = now
            try:
                st = os.stat(self.root / POINTER)
            except FileNotFoundError:
                raise KvStoreError(f"{self.root}: no store published (no {POINTER} pointer)") from None
            stamp = (st.st_ino, st.st_mtime_ns)
            if self._reader is None or stamp != self._stamp:
                version = current_local(self.root)
                if version != self.version or self._reader is None:
                    self._reader = Reader(self.root / f"{version}.spi", self.root / f"{version}.spl")
                    self.version = version
                self._stamp = stamp
            return self._reader

    def get(self, key: bytes | str) -> bytes | None:
        return self.reader().get(key)


# ---------------------------------------------------------------------------------------- blobs
@dataclass(frozen=True)
class Published:
    version: str
    log_object: str
    index_object: str
    pointer_generation: int


def _names(prefix: str, version: str) -> tuple[str, str, str]:
    base = f"{prefix.rstrip('/')}/" if prefix else ""
    return f"{base}versions/{version}/store.spl", f"{base}versions/{version}/store.spi", f"{base}{POINTER}"


def publish_blobs(
    blobs: Any,
    bucket: str,
    prefix: str,
    log_path: str | Path,
    index_path: str | Path,
    version: str | None = None,
    *,
    expected_generation: int | None = None,
) -> Published:
    """Upload a store under ``prefix/versions/<version>/`` and switch ``prefix/CURRENT`` to it.

    The pointer switch is conditional: on the generation read just before (or
    ``expected_generation`` when given; 0 = there must be no pointer yet). A concurrent publisher
    that switched it first makes this call raise :class:`PublishError`; the uploaded version stays
    (unreferenced) and can be published again."""
    from backbeat.cloud.ports import PreconditionFailed

    version = version or new_version()
    header = _index_header(Path(index_path))
    log_name, index_name, pointer = _names(prefix, version)
    try:
        blobs.put_file(
            bucket, log_name, log_path, if_generation_match=0, content_type="application/octet-stream"
        )
        blobs.put_file(
            bucket, index_name, index_path, if_generation_match=0, content_type="application/octet-stream"
        )
    except PreconditionFailed:
        raise PublishError(f"gs://{bucket}/{log_name}: version {version} already exists") from None
    if expected_generation is None:
        info = blobs.stat(bucket, pointer)
        expected_generation = info.generation if info is not None else 0
    body = {
        "version": version,
        "log": log_name,
        "index": index_name,
        "file_identifier": f"{header.file_identifier:08x}",
        "entries": header.num_entries,
    }
    try:
        info = blobs.put(
            bucket,
            pointer,
            (json.dumps(body) + "\n").encode(),
            if_generation_match=expected_generation,
            content_type="application/json",
        )
    except PreconditionFailed:
        raise PublishError(
            f"gs://{bucket}/{pointer} changed while publishing {version} (expected generation "
            f"{expected_generation}); another publisher won"
        ) from None
    return Published(version, log_name, index_name, info.generation)


class StoreCache:
    """Serving side of :func:`publish_blobs`: download each version once, mmap it, follow the
    pointer. Safe to share between threads; several processes may share ``cache_dir`` (downloads
    are atomic renames, so a racing download simply replaces an identical file)."""

    def __init__(
        self,
        blobs: Any,
        bucket: str,
        prefix: str,
        cache_dir: str | Path,
        check_every_s: float = 0.0,
        keep_versions: int = 2,
    ) -> None:
        self.blobs = blobs
        self.bucket = bucket
        self.prefix = prefix
        self.cache_dir = Path(cache_dir)
        self.check_every_s = check_every_s
        self.keep_versions = keep_versions
        self._lock = threading.Lock()
        self._reader: Reader | None = None
        self._checked = float("-inf")
        self._generation: int | None = None
        self.version: str | None = None
        self.downloads = 0

    def reader(self) -> Reader:
        from backbeat.cloud.ports import NotFound

        now = time.monotonic()
        if self._reader is not None and now - self._checked < self.check_every_s:
            return self._reader
        with self._lock:
            if self._reader is not None and now - self._checked < self.check_every_s:
                return self._reader
            _, _, pointer = _names(self.prefix, "x")
            info = self.blobs.stat(self.bucket, pointer)
            if info is None:
                raise KvStoreError(f"gs://{self.bucket}/{pointer}: no store published")
            if self._reader is None or info.generation != self._generation:
                try:
                    body = json.loads(self.blobs.get(self.bucket, pointer, generation=info.generation))
                    version, log_name, index_name = body["version"], body["log"], body["index"]
                except NotFound:  # replaced between stat and get: take the newest
                    body = json.loads(self.blobs.get(self.bucket, pointer))
                    version, log_name, index_name = body["version"], body["log"], body["index"]
                except (ValueError, KeyError, TypeError):
                    raise PublishError(f"gs://{self.bucket}/{pointer}: unreadable pointer") from None
                if version != self.version or self._reader is None:
                    self._reader = self._open(version, log_name, index_name)
                    self.version = version
                self._generation = info.generation
            self._checked = now
            return self._reader

    def _open(self, version: str, log_name: str, index_name: str) -> Reader:
        folder = self.cache_dir / version
        log_path, index_path = folder / "store.spl", folder / "store.spi"
        if not (log_path.exists() and index_path.exists()):
            folder.mkdir(parents=True, exist_ok=True)
            self.blobs.download_to(self.bucket, log_name, log_path)
            self.blobs.download_to(self.bucket, index_name, index_path)
            self.downloads += 1
        reader = Reader(index_path, log_path)
        self._prune(keep=version)
        return reader

    def _prune(self, keep: str) -> None:
        """Delete old downloaded versions beyond ``keep_versions`` (open mmaps stay valid)."""
        try:
            folders = sorted(
                (p for p in self.cache_dir.iterdir() if p.is_dir() and p.name != keep), reverse=True
            )
        except FileNotFoundError:
            return
        for old in folders[max(0, self.keep_versions - 1) :]:
            shutil.rmtree(old, ignore_errors=True)

    def get(self, key: bytes | str) -> bytes | None:
        return self.reader().get(key)
