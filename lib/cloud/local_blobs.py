"""The ``local`` blobs adapter: bucket ``B``'s object ``O`` is the plain file ``root/B/O``.

Why it is safe to share between threads and processes:

* every write goes to a temp file under ``root/.bb-tmp`` (same filesystem), is fsynced, and is
  renamed into place, so a reader sees the old bytes or the new ones, never half;
* create-only writes (``if_generation_match=0``) finish with ``link()``, which fails if the name
  exists, so of two racing creators exactly one wins even without the lock;
* the precondition check and the rename run under an exclusive ``flock`` on ``root/.bb-locks/B.lock``
  (one per bucket), so "replace generation g" is atomic across processes;
* the **generation is the file's mtime in nanoseconds**, set explicitly (strictly increasing per
  object) before the rename: it travels with the bytes, survives restarts, and a file copied in by
  hand simply gets a new generation;
* metadata and content type live in a sidecar ``root/.bb-meta/B/<sha256(O)>.json`` tagged with
  the generation they belong to (ignored if stale). Bucket folders hold only objects, so nothing
  hidden is ever listed.

Object names that a filesystem cannot hold (empty segments, ``.``/``..``, NUL, a name that is both
an object and a "folder" of another) raise :class:`CloudError` naming the object.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat as stat_mod
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from backbeat.cloud._fs import atomic_write_bytes, flocked, fsync_dir
from backbeat.cloud.ports import BlobInfo, CloudError, NotFound, PreconditionFailed

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
_DEFAULT_CONTENT_TYPE = "application/octet-stream"
_PAGE = 1000
_CHUNK = 1 << 20


class DirectoryBlobs:
    """Object storage in a directory tree (see the module docstring)."""

    def __init__(self, root: str | Path, *, durable: bool = True) -> None:
        """``durable=False`` skips the fsyncs (writes stay atomic, only a power cut could lose the
        latest ones): about 10x faster puts, for scratch folders and tests."""
        self.root = Path(root).resolve()
        self.durable = durable
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp = self.root / ".bb-tmp"
        self._meta = self.root / ".bb-meta"
        self._locks = self.root / ".bb-locks"
        for d in (self._tmp, self._meta, self._locks):
            d.mkdir(exist_ok=True)
        self._clean_stale_temps()

    # ------------------------------------------------------------------------------ paths, checks
    def _bucket_dir(self, bucket: str, *, must_exist: bool = True) -> Path:
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise CloudError(
                f"invalid bucket name {bucket!r} (3-63 chars of a-z 0-9 - _ ., alphanumeric ends)"
            )
        path = self.root / bucket
        if must_exist and not path.is_dir():
            raise NotFound(f"bucket {bucket!r} does not exist (under {self.root})")
        return path

    def _object_path(self, bucket: str, name: str) -> Path:
        base = self._bucket_dir(bucket)
        if not name or len(name.encode()) > 1024:
            raise CloudError(f"invalid object name {name!r} in bucket {bucket!r}: must be 1-1024 bytes")
        parts = name.split("/")
        if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in name or "\n" in name:
            raise CloudError(
                f"object name {name!r} in bucket {bucket!r} cannot be stored in a directory "
                "(no leading/trailing/double '/', no '.' or '..' segments, no NUL or newline)"
            )
        return base.joinpath(*parts)

    def _meta_path(self, bucket: str, name: str) -> Path:
        digest = hashlib.sha256(name.encode()).hexdigest()
        return self._meta / bucket / digest[:2] / f"{digest}.json"

    def _lock(self, bucket: str, shared: bool = False) -> contextlib.AbstractContextManager[None]:
        return flocked(self._locks / f"{bucket}.lock", shared=shared)

    def _clean_stale_temps(self, older_than_s: float = 3600) -> None:
        """Temp files left by a crashed writer (never visible, but they take space)."""
        cutoff = time.time() - older_than_s
        with contextlib.suppress(OSError):
            for p in self._tmp.iterdir():
                with contextlib.suppress(OSError):
                    if p.stat().st_mtime < cutoff:
                        p.unlink()

    def _info(self, bucket: str, name: str, st: os.stat_result) -> BlobInfo:
        gen = st.st_mtime_ns
        metadata: dict[str, str] = {}
        content_type: str | None = _DEFAULT_CONTENT_TYPE
        try:
            side = json.loads(self._meta_path(bucket, name).read_text())
            if side.get("generation") == gen:
                metadata = dict(side.get("metadata") or {})
                content_type = side.get("content_type") or _DEFAULT_CONTENT_TYPE
        except (OSError, ValueError):
            pass
        return BlobInfo(
            bucket=bucket,
            name=name,
            generation=gen,
            size=st.st_size,
            updated=datetime.fromtimestamp(gen / 1e9, UTC),
            metadata=metadata,
            content_type=content_type,
        )

    # ------------------------------------------------------------------------------------ buckets
    def ensure_bucket(self, bucket: str) -> None:
        self._bucket_dir(bucket, must_exist=False).mkdir(exist_ok=True)

    # ------------------------------------------------------------------------------------- writes
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
        self._object_path(bucket, name)  # validate before writing anything
        fd, tmp = tempfile.mkstemp(prefix="put-", dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(bytes(data))
                f.flush()
                if self.durable:
                    os.fsync(f.fileno())
            return self._commit(bucket, name, Path(tmp), if_generation_match, content_type, metadata)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

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
        self._object_path(bucket, name)
        fd, tmp = tempfile.mkstemp(prefix="put-", dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    src = open(path, "rb")  # noqa: SIM115 - closed below
                except FileNotFoundError as exc:
                    raise NotFound(
                        f"local file {str(path)!r} to upload as gs://{bucket}/{name} is missing"
                    ) from exc
                with src:
                    shutil.copyfileobj(src, out, _CHUNK)
                out.flush()
                if self.durable:
                    os.fsync(out.fileno())
            return self._commit(bucket, name, Path(tmp), if_generation_match, content_type, metadata)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _commit(
        self,
        bucket: str,
        name: str,
        tmp: Path,
        if_generation_match: int | None,
        content_type: str | None,
        metadata: Mapping[str, str] | None,
    ) -> BlobInfo:
        target = self._object_path(bucket, name)
        with self._lock(bucket):
            cur = _stat_file(target)
            cur_gen = cur.st_mtime_ns if cur else None
            _check_precondition(bucket, name, cur_gen, if_generation_match)
            gen = max(time.time_ns(), (cur_gen or 0) + 1)
            os.utime(tmp, ns=(gen, gen))
            self._make_parents(bucket, name, target)
            try:
                if if_generation_match == 0:
                    os.link(tmp, target)  # fails if anything got there first, lock or not
                else:
                    os.replace(tmp, target)
            except FileExistsError as exc:
                raise PreconditionFailed(f"gs://{bucket}/{name} already exists (create-only write)") from exc
            except IsADirectoryError as exc:
                raise CloudError(f"gs://{bucket}/{name} is a 'folder' of other objects here") from exc
            if self.durable:
                fsync_dir(target.parent)
            st = os.stat(target)
            side = self._meta_path(bucket, name)
            if metadata or content_type:
                record = {
                    "generation": st.st_mtime_ns,
                    "metadata": {str(k): str(v) for k, v in (metadata or {}).items()},
                    "content_type": content_type,
                }
                atomic_write_bytes(side, json.dumps(record).encode(), durable=self.durable)
            else:
                with contextlib.suppress(FileNotFoundError):
                    side.unlink()
            return self._info(bucket, name, st)

    def _make_parents(self, bucket: str, name: str, target: Path) -> None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise CloudError(
                f"gs://{bucket}/{name}: a parent of it is an object here, so it cannot also be a 'folder'"
            ) from exc

    def delete(self, bucket: str, name: str, *, if_generation_match: int | None = None) -> None:
        target = self._object_path(bucket, name)
        bucket_dir = self._bucket_dir(bucket)
        with self._lock(bucket):
            cur = _stat_file(target)
            if cur is None:
                raise NotFound(f"gs://{bucket}/{name} does not exist")
            _check_precondition(bucket, name, cur.st_mtime_ns, if_generation_match)
            target.unlink()
            with contextlib.suppress(FileNotFoundError):
                self._meta_path(bucket, name).unlink()
            parent = target.parent
            while parent != bucket_dir:  # GCS has no empty folders: prune them
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent
            if self.durable:
                fsync_dir(parent)

    # -------------------------------------------------------------------------------------- reads
    def get(self, bucket: str, name: str, *, generation: int | None = None) -> bytes:
        target = self._object_path(bucket, name)
        try:
            with open(target, "rb") as f:
                st = os.fstat(f.fileno())
                if generation is not None and st.st_mtime_ns != generation:
                    raise NotFound(f"gs://{bucket}/{name}#{generation} does not exist (now {st.st_mtime_ns})")
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFound(f"gs://{bucket}/{name} does not exist") from exc

    def download_to(self, bucket: str, name: str, path: str | Path) -> BlobInfo:
        target = self._object_path(bucket, name)
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            src = open(target, "rb")  # noqa: SIM115 - closed by the with below
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFound(f"gs://{bucket}/{name} does not exist") from exc
        with src:
            st = os.fstat(src.fileno())
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            try:
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, dest)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        with self._lock(bucket, shared=True):
            return self._info(bucket, name, st)

    def stat(self, bucket: str, name: str) -> BlobInfo | None:
        target = self._object_path(bucket, name) if (self.root / bucket).is_dir() else None
        if target is None:
            return None
        with self._lock(bucket, shared=True):
            st = _stat_file(target)
            return self._info(bucket, name, st) if st else None

    def _names(self, bucket: str, prefix: str) -> list[str]:
        base = self._bucket_dir(bucket)
        head, _, _ = prefix.rpartition("/")
        if any(seg in (".", "..") for seg in head.split("/")) or prefix.startswith("/") or "\0" in prefix:
            raise CloudError(f"invalid listing prefix {prefix!r} in bucket {bucket!r}")
        start = base.joinpath(*head.split("/")) if head else base
        if not start.is_dir():
            return []
        names: list[str] = []
        for dirpath, _dirs, files in os.walk(start):
            rel = os.path.relpath(dirpath, base)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for f in files:
                n = rel + f
                if n.startswith(prefix):
                    names.append(n)
        names.sort(key=lambda n: n.encode())
        return names

    def list(self, bucket: str, prefix: str = "", *, page_size: int | None = None) -> Iterator[BlobInfo]:
        names = self._names(bucket, prefix)
        page = max(1, page_size or _PAGE)
        for i in range(0, len(names), page):
            infos: list[BlobInfo] = []
            with self._lock(bucket, shared=True):  # released before yielding: the caller may write
                for n in names[i : i + page]:
                    st = _stat_file(self._object_path(bucket, n))
                    if st is not None:
                        infos.append(self._info(bucket, n, st))
            yield from infos

    def list_prefixes(self, bucket: str, prefix: str = "", delimiter: str = "/") -> list[str]:
        if not delimiter:
            raise CloudError("list_prefixes needs a non-empty delimiter")
        found: set[str] = set()
        for n in self._names(bucket, prefix):
            rest = n[len(prefix) :]
            cut = rest.find(delimiter)
            if cut >= 0:
                found.add(prefix + rest[: cut + len(delimiter)])
        return sorted(found, key=lambda s: s.encode())

    def close(self) -> None:
        """Nothing to release (every call opens and closes its own files)."""

    def __repr__(self) -> str:
        return f"DirectoryBlobs({str(self.root)!r})"


def _stat_file(path: Path) -> os.stat_result | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # pragma: no cover - e.g. ENAMETOOLONG
        if exc.errno == errno.ENAMETOOLONG:
            raise CloudError(f"object path too long for this filesystem: {path}") from exc
        raise
    return st if stat_mod.S_ISREG(st.st_mode) else None


def _check_precondition(bucket: str, name: str, current: int | None, expected: int | None) -> None:
    if expected is None:
        return
    if expected == 0 and current is not None:
        raise PreconditionFailed(
            f"gs://{bucket}/{name} already exists (generation {current}); create-only write"
        )
    if expected != 0 and current != expected:
        now = "missing" if current is None else f"generation {current}"
        raise PreconditionFailed(f"gs://{bucket}/{name} is {now}, not generation {expected}")
