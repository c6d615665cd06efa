"""Targets: what a task produces. Writes are atomic, so a crash never leaves half an output.

* LocalTarget: temp file in the same folder, fsync, ``os.replace``, fsync of the folder.
* GCSTarget: one object through the blobs port, uploaded create-only (``if_generation_match=0``).
* GCSFlagTarget: a folder of objects, complete only when its ``_SUCCESS`` marker exists; the
  marker is written last, after every part.
* HourClosedTarget: event delivery's "hour closed and deduplicated" marker for one event type.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backbeat.dag.errors import TargetError


class Nop:
    """Luigi's ``format=Nop``: binary reads and writes."""


class UTF8:
    """Text in UTF-8 (the default)."""


class format:  # noqa: N801 - mirrors luigi.format
    Nop = Nop
    UTF8 = UTF8


def _binary(mode: str, fmt: Any) -> bool:
    return "b" in mode or fmt is Nop


class Target:
    """Something that exists or not."""

    def exists(self) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def listing(self) -> tuple[str, str, Any] | None:
        """``(namespace, name, list_names(prefix))`` when existence can be decided by a prefix listing
        (gap detection of ranges); None otherwise."""
        return None


# ---------------------------------------------------------------------------------------- local
class _AtomicLocalFile(io.FileIO):
    """A file written under a temporary name and moved into place on a successful close."""

    def __init__(self, path: str) -> None:
        self._final = path
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        os.close(fd)
        self._tmp = tmp
        self._aborted = False
        super().__init__(tmp, "w")

    def abort(self) -> None:
        self._aborted = True
        with contextlib.suppress(Exception):
            super().close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    def close(self) -> None:
        if self.closed:
            return
        if self._aborted:
            return
        self.flush()
        os.fsync(self.fileno())
        super().close()
        os.replace(self._tmp, self._final)
        folder = os.path.dirname(self._final) or "."
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        if not self.closed and not self._aborted:
            self.abort()


class _TextAtomic(io.TextIOWrapper):
    """Text wrapper that aborts the underlying atomic file when the ``with`` block raised."""

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.buffer.raw.abort()  # type: ignore[attr-defined]
        else:
            self.close()


def _atomic_open(raw: io.RawIOBase, binary: bool) -> Any:
    if binary:
        return raw
    return _TextAtomic(io.BufferedWriter(raw), encoding="utf-8", newline="")


class _LocalFS:
    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def remove(self, path: str, recursive: bool = True) -> None:
        import shutil

        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.unlink(path)

    def mkdir(self, path: str, parents: bool = True, raise_if_exists: bool = False) -> None:
        os.makedirs(path, exist_ok=not raise_if_exists)


class LocalTarget(Target):
    """A file on the local disk, written atomically."""

    fs = _LocalFS()

    def __init__(self, path: str | Path | None = None, format: Any = None, is_tmp: bool = False) -> None:
        if path is None:
            if not is_tmp:
                raise TargetError("LocalTarget needs a path (or is_tmp=True)")
            path = os.path.join(tempfile.gettempdir(), f"backbeat-tmp-{random.randrange(10**10):010d}")
        self.path = os.fspath(path)
        self.format = format
        self.is_tmp = is_tmp

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def open(self, mode: str = "r") -> Any:
        binary = _binary(mode, self.format)
        if "w" in mode:
            return _atomic_open(_AtomicLocalFile(self.path), binary)
        if "r" in mode:
            try:
                return open(self.path, "rb") if binary else open(self.path, encoding="utf-8")
            except FileNotFoundError:
                raise TargetError(f"{self.path}: does not exist") from None
        raise TargetError(f"{self.path}: unsupported mode {mode!r} (use r, w, rb, wb)")

    def makedirs(self) -> None:
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)

    def remove(self) -> None:
        self.fs.remove(self.path)

    @contextlib.contextmanager
    def temporary_path(self) -> Iterator[str]:
        """A temporary path to hand to a tool; moved into place (atomically) if the block succeeds."""
        folder = os.path.dirname(self.path) or "."
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(self.path)}.tmp-{random.randrange(10**10):010d}")
        try:
            yield tmp
        except BaseException:
            LocalTarget.fs.remove(tmp)
            raise
        if not os.path.exists(tmp):
            raise TargetError(f"{self.path}: temporary path {tmp} was not written")
        os.replace(tmp, self.path)

    def listing(self) -> tuple[str, str, Any]:
        return ("local", os.path.abspath(self.path), _list_local)

    def __repr__(self) -> str:
        return f"LocalTarget({self.path!r})"


def _list_local(prefix: str) -> Iterator[str]:
    """Every file path under ``prefix`` (a path prefix, not necessarily a folder)."""
    folder = prefix if prefix.endswith(os.sep) else os.path.dirname(prefix)
    if not os.path.isdir(folder):
        return
    for root, _dirs, files in os.walk(folder):
        for name in files:
            full = os.path.join(root, name)
            if full.startswith(prefix):
                yield full


# ------------------------------------------------------------------------------------------ gcs
def parse_gs(path: str) -> tuple[str, str]:
    if not path.startswith("gs://"):
        raise TargetError(f"{path!r} is not a gs://bucket/object path")
    bucket, _, name = path[5:].partition("/")
    if not bucket:
        raise TargetError(f"{path!r} names no bucket")
    return bucket, name


class _GCSBase(Target):
    def __init__(self, path: str, name: str | None, blobs: Any, fmt: Any) -> None:
        if name is None:
            self.bucket, self.name = parse_gs(path)
        else:
            self.bucket, self.name = path, name
        self._blobs = blobs
        self.format = fmt

    @property
    def blobs(self) -> Any:
        if self._blobs is None:
            from backbeat.dag.context import current_blobs

            return current_blobs()
        return self._blobs

    @property
    def path(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    def _lister(self) -> Any:
        blobs, bucket = self.blobs, self.bucket

        def names(prefix: str) -> Iterator[str]:
            from backbeat.cloud.ports import NotFound

            try:
                for info in blobs.list(bucket, prefix):
                    yield info.name
            except NotFound:  # no bucket yet: nothing exists
                return

        return names

    def _stat(self, name: str) -> Any:
        from backbeat.cloud.ports import NotFound

        try:
            return self.blobs.stat(self.bucket, name)
        except NotFound:  # no bucket yet
            return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"


class _GCSWriter(io.FileIO):
    """Spools to a local temp file; on a successful close uploads it create-only."""

    def __init__(self, target: GCSTarget) -> None:
        fd, tmp = tempfile.mkstemp(prefix="backbeat-gcs-", suffix=".part")
        os.close(fd)
        self._target = target
        self._tmp = tmp
        self._aborted = False
        super().__init__(tmp, "w")

    def abort(self) -> None:
        self._aborted = True
        with contextlib.suppress(Exception):
            super().close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    def close(self) -> None:
        if self.closed or self._aborted:
            return
        super().close()
        try:
            self._target._upload_file(self._tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        if not self.closed and not self._aborted:
            self.abort()


class GCSTarget(_GCSBase):
    """One Cloud Storage object, through the blobs port, uploaded create-only.

    ``GCSTarget("gs://bucket/path")`` or ``GCSTarget("bucket", "path")``; ``blobs=`` overrides the
    platform of the run (see ``backbeat.dag.context``)."""

    def __init__(
        self, path: str, name: str | None = None, *, blobs: Any = None, format: Any = None, client: Any = None
    ) -> None:
        super().__init__(path, name, blobs or client, format)

    def exists(self) -> bool:
        return self._stat(self.name) is not None

    def open(self, mode: str = "r") -> Any:
        binary = _binary(mode, self.format)
        if "w" in mode:
            return _atomic_open(_GCSWriter(self), binary)
        if "r" in mode:
            data = self.get_bytes()
            return io.BytesIO(data) if binary else io.StringIO(data.decode("utf-8"))
        raise TargetError(f"{self.path}: unsupported mode {mode!r}")

    def get_bytes(self) -> bytes:
        from backbeat.cloud.ports import NotFound

        try:
            return self.blobs.get(self.bucket, self.name)
        except NotFound:
            raise TargetError(f"{self.path}: does not exist") from None

    def put_bytes(self, data: bytes, content_type: str | None = None) -> None:
        """Write the whole object at once, create-only."""
        from backbeat.cloud.ports import PreconditionFailed

        self.blobs.ensure_bucket(self.bucket)
        try:
            self.blobs.put(self.bucket, self.name, data, if_generation_match=0, content_type=content_type)
        except PreconditionFailed:
            raise TargetError(f"{self.path}: already exists (outputs are create-only)") from None

    def _upload_file(self, path: str) -> None:
        from backbeat.cloud.ports import PreconditionFailed

        self.blobs.ensure_bucket(self.bucket)
        try:
            self.blobs.put_file(self.bucket, self.name, path, if_generation_match=0)
        except PreconditionFailed:
            raise TargetError(f"{self.path}: already exists (outputs are create-only)") from None

    def download_to(self, path: str | Path) -> None:
        self.blobs.download_to(self.bucket, self.name, path)

    def remove(self) -> None:
        from backbeat.cloud.ports import NotFound

        with contextlib.suppress(NotFound):
            self.blobs.delete(self.bucket, self.name)

    def listing(self) -> tuple[str, str, Any]:
        return (f"gs://{self.bucket}", self.name, self._lister())


class _FolderWriter:
    """Writes the parts of a GCSFlagTarget; the flag is written by the target after the last part."""

    def __init__(self, target: GCSFlagTarget) -> None:
        self.target = target
        self.parts: dict[str, int] = {}

    def put(self, name: str, data: bytes, content_type: str | None = None) -> None:
        t = self.target
        self._check(name)
        t.blobs.put(t.bucket, t.prefix + name, data, if_generation_match=0, content_type=content_type)
        self.parts[name] = len(data)

    def put_file(self, name: str, path: str | Path) -> None:
        t = self.target
        self._check(name)
        t.blobs.put_file(t.bucket, t.prefix + name, path, if_generation_match=0)
        self.parts[name] = os.path.getsize(path)

    def _check(self, name: str) -> None:
        if not name or name.startswith("/") or name == self.target.flag:
            raise TargetError(f"{self.target.path}: bad part name {name!r}")


class GCSFlagTarget(_GCSBase):
    """A folder of objects that exists only once its flag object (``_SUCCESS``) exists.

    ``with target.writer() as w: w.put("part-0", data)`` uploads parts create-only and writes the
    flag (JSON naming every part and its size) last; leftovers of a failed attempt under the folder
    are removed first (the run holds the task's lease, so nothing else writes there)."""

    def __init__(
        self,
        path: str,
        name: str | None = None,
        *,
        flag: str = "_SUCCESS",
        blobs: Any = None,
        format: Any = None,
    ) -> None:
        super().__init__(path, name, blobs, format)
        if not self.name.endswith("/"):
            self.name += "/"
        self.flag = flag

    @property
    def prefix(self) -> str:
        return self.name

    def exists(self) -> bool:
        return self._stat(self.name + self.flag) is not None

    def parts(self) -> list[str]:
        """Object names of the folder's parts (the flag excluded)."""
        flag = self.name + self.flag
        return [n for n in self._lister()(self.name) if n != flag]

    def read_flag(self) -> dict[str, Any]:
        from backbeat.cloud.ports import NotFound

        try:
            return json.loads(self.blobs.get(self.bucket, self.name + self.flag) or b"{}")
        except NotFound:
            raise TargetError(f"{self.path}{self.flag}: does not exist") from None
        except ValueError:
            return {}

    @contextlib.contextmanager
    def writer(self, extra: dict[str, Any] | None = None) -> Iterator[_FolderWriter]:
        from backbeat.cloud.ports import NotFound

        blobs = self.blobs
        blobs.ensure_bucket(self.bucket)
        if self.exists():
            raise TargetError(f"{self.path}: already complete ({self.flag} exists)")
        for info in list(blobs.list(self.bucket, self.name)):
            with contextlib.suppress(NotFound):
                blobs.delete(self.bucket, info.name)
        w = _FolderWriter(self)
        yield w
        body = {"parts": w.parts, "written_at": datetime.now(UTC).isoformat(), **(extra or {})}
        blobs.put(
            self.bucket,
            self.name + self.flag,
            json.dumps(body, sort_keys=True).encode(),
            if_generation_match=0,
            content_type="application/json",
        )

    def listing(self) -> tuple[str, str, Any]:
        return (f"gs://{self.bucket}", self.name + self.flag, self._lister())


class HourClosedTarget(GCSFlagTarget):
    """Event delivery's promise for one event type and UTC hour: ``final/<type>/dt=<YYYY-MM-DD>/
    hour=<HH>/_SUCCESS`` exists in the events bucket once the hour is closed and deduplicated."""

    def __init__(
        self, event_type: str, hour: datetime, *, bucket: str | None = None, blobs: Any = None
    ) -> None:
        if bucket is None:
            from backbeat.dag.context import current_settings

            bucket = current_settings().events_bucket
        if hour.tzinfo is not None:
            hour = hour.astimezone(UTC)
        self.event_type = event_type
        self.hour = hour.replace(minute=0, second=0, microsecond=0, tzinfo=UTC)
        folder = f"final/{event_type}/dt={self.hour:%Y-%m-%d}/hour={self.hour:%H}/"
        super().__init__(bucket, folder, blobs=blobs)

    def data_files(self, suffix: str = ".avro") -> list[str]:
        return [n for n in self.parts() if n.endswith(suffix)]
