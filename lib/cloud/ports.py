"""The ports: the small interfaces through which every workflow reaches the platform.

Workflows (delivery, dag, clusters, audit, firewall) take these objects as arguments and never
import a Google client. Two adapters implement each port: ``local`` (a directory, SQLite, an
in-process bus; the embedded default) and ``gcp`` (the official google-cloud-* clients, which also
run against the emulators). One contract test suite runs unchanged over both.

Semantics every adapter keeps:

* Blobs: ``if_generation_match=0`` means "create only"; a failed precondition raises
  :class:`PreconditionFailed`. Generations are positive integers that change on every write.
  Listing is lexicographic by name and paginates transparently.
* Documents: paths alternate collection/document (``hours/play_2026-01-01T10/files/m1``).
  Values are JSON-like (str, int, float, bool, None, list, dict). A transaction function must do
  all its reads before its writes (Firestore's rule); it may be called more than once, so it must
  have no side effects outside the transaction. Conflicts are retried by ``transaction``; after
  ``max_attempts`` it raises :class:`TransactionConflict`.
* Bus: at-least-once delivery; a handler that raises is retried with backoff; after
  ``max_delivery_attempts`` the message goes to the dead-letter topic (if any) with its attributes
  intact. Attributes are ``str -> str``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from backbeat.errors import BackbeatError

T = TypeVar("T")


# ----------------------------------------------------------------------------------------- errors
class CloudError(BackbeatError):
    """A platform call failed; the message names the resource."""


class NotFound(CloudError):
    """The object, document, topic or subscription does not exist."""


class AlreadyExists(CloudError):
    """A create-only write met an existing object or document."""


class PreconditionFailed(CloudError):
    """A generation precondition did not hold (create-only upload hit an existing object, or the
    object changed since it was read)."""


class TransactionConflict(CloudError):
    """A documents transaction kept conflicting after all its attempts."""


class TransientError(CloudError):
    """A call failed in a way worth retrying (unavailable, deadline exceeded, throttled)."""


# ------------------------------------------------------------------------------------------ blobs
@dataclass(frozen=True)
class BlobInfo:
    bucket: str
    name: str
    generation: int
    size: int
    updated: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None


@runtime_checkable
class Blobs(Protocol):
    """Object storage (Cloud Storage)."""

    def ensure_bucket(self, bucket: str) -> None:
        """Create the bucket if it does not exist (idempotent)."""

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
        """Write an object atomically. ``if_generation_match=0``: create only; ``=g``: replace only
        generation ``g``. Raises PreconditionFailed when the precondition fails."""

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
        """Upload a local file (streamed, not read into memory at once)."""

    def get(self, bucket: str, name: str, *, generation: int | None = None) -> bytes:
        """The object's bytes. Raises NotFound."""

    def download_to(self, bucket: str, name: str, path: str | Path) -> BlobInfo:
        """Download to a local path atomically (temp file + rename). Raises NotFound."""

    def stat(self, bucket: str, name: str) -> BlobInfo | None:
        """The object's metadata, or None if it does not exist."""

    def list(self, bucket: str, prefix: str = "", *, page_size: int | None = None) -> Iterator[BlobInfo]:
        """Every object whose name starts with ``prefix``, in name order, paginating transparently."""

    def list_prefixes(self, bucket: str, prefix: str = "", delimiter: str = "/") -> list[str]:
        """The "folders" directly under ``prefix`` (each ends with the delimiter), sorted."""

    def delete(self, bucket: str, name: str, *, if_generation_match: int | None = None) -> None:
        """Delete an object. Raises NotFound / PreconditionFailed."""


# -------------------------------------------------------------------------------------- documents
@runtime_checkable
class Transaction(Protocol):
    """Handle passed to a transaction function. All reads must come before the first write."""

    def get(self, path: str) -> dict[str, Any] | None: ...

    def create(self, path: str, data: Mapping[str, Any]) -> None:
        """Fails the transaction with AlreadyExists if the document exists at commit."""

    def set(self, path: str, data: Mapping[str, Any]) -> None: ...

    def update(self, path: str, fields: Mapping[str, Any]) -> None:
        """Merge top-level fields into an existing document (NotFound if missing)."""

    def delete(self, path: str) -> None: ...


Filter = tuple[str, str, Any]  # (field, op, value); op in ==, !=, <, <=, >, >=, in


@runtime_checkable
class Documents(Protocol):
    """A document database (Firestore in Native mode)."""

    def get(self, path: str) -> dict[str, Any] | None: ...

    def create(self, path: str, data: Mapping[str, Any]) -> None:
        """Create; raises AlreadyExists if the document exists."""

    def set(self, path: str, data: Mapping[str, Any]) -> None:
        """Create or overwrite."""

    def update(self, path: str, fields: Mapping[str, Any]) -> None:
        """Merge top-level fields; raises NotFound if missing."""

    def delete(self, path: str) -> None:
        """Delete if present (idempotent)."""

    def transaction(self, fn: Callable[[Transaction], T], *, max_attempts: int = 10) -> T:
        """Run ``fn`` in a serialisable transaction, retrying conflicts with backoff."""

    def query(
        self,
        collection: str,
        filters: Sequence[Filter] = (),
        *,
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Documents directly in ``collection`` (a path like ``hours`` or ``hours/x/files``) that
        match every filter, as ``(path, data)`` pairs."""


# -------------------------------------------------------------------------------------------- bus
@dataclass(frozen=True)
class Message:
    data: bytes
    attributes: Mapping[str, str]
    message_id: str
    publish_time: datetime
    delivery_attempt: int = 1
    topic: str = ""


Handler = Callable[[Message], None]


@runtime_checkable
class Subscription(Protocol):
    def close(self) -> None:
        """Stop delivering to the handler."""


@runtime_checkable
class Bus(Protocol):
    """Publish/subscribe messaging (Pub/Sub)."""

    def ensure_topic(self, topic: str) -> None:
        """Create the topic if missing (idempotent). Names need 3+ characters."""

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        """Publish and wait for the server's message id."""

    def subscribe(
        self,
        topic: str,
        subscription: str,
        handler: Handler,
        *,
        max_delivery_attempts: int = 5,
        dead_letter_topic: str | None = None,
        min_backoff_s: float = 0.1,
        max_backoff_s: float = 10.0,
    ) -> Subscription:
        """Deliver every message published to ``topic`` from now on to ``handler``. Returning
        acknowledges; raising nacks (redelivered with backoff, then dead-lettered)."""

    def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until every published message has been handled, acknowledged or dead-lettered
        (local: runs pending deliveries; gcp: best effort wait on outstanding callbacks)."""


# -------------------------------------------------------------------------------- compute, dataproc
@runtime_checkable
class Compute(Protocol):
    """The Compute Engine calls the firewall enforcer needs; adapters come with that issue."""

    def list_firewalls(self, project: str) -> list[dict[str, Any]]: ...

    def insert_firewall(self, project: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    def patch_firewall(self, project: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    def delete_firewall(self, project: str, name: str) -> dict[str, Any]: ...

    def wait_operation(
        self, project: str, operation: Mapping[str, Any], timeout_s: float = 300
    ) -> dict[str, Any]: ...


@runtime_checkable
class Dataproc(Protocol):
    """The Dataproc calls the cluster manager, the dag templates and the dedupe Spark path need.
    Requests and answers are plain dicts with ``google.cloud.dataproc_v1`` field names (snake_case,
    enums as names: ``{"status": {"state": "DONE"}}``). Job and batch ids are chosen by the caller so a
    resubmission is idempotent: the same ``request_id`` returns the first job, another submission of
    an existing id raises AlreadyExists. Adapters: ``gcp_dataproc`` (google-cloud-dataproc),
    ``local_dataproc`` (runs PySpark jobs in subprocesses), ``backbeat.dag.dataproc_sim``."""

    def create_cluster(self, project: str, region: str, cluster: Mapping[str, Any]) -> dict[str, Any]: ...

    def get_cluster(self, project: str, region: str, name: str) -> dict[str, Any]: ...

    def delete_cluster(self, project: str, region: str, name: str) -> dict[str, Any]: ...

    def list_clusters(self, project: str, region: str, filter: str = "") -> list[dict[str, Any]]: ...

    def submit_job(
        self, project: str, region: str, job: Mapping[str, Any], request_id: str
    ) -> dict[str, Any]: ...

    def get_job(self, project: str, region: str, job_id: str) -> dict[str, Any]: ...

    def create_batch(
        self, project: str, region: str, batch: Mapping[str, Any], batch_id: str, request_id: str = ""
    ) -> dict[str, Any]:
        """A Dataproc Serverless batch (``pyspark_batch``...); returns it as created."""

    def get_batch(self, project: str, region: str, batch_id: str) -> dict[str, Any]: ...


# ------------------------------------------------------------------------------------ the platform
@dataclass
class Platform:
    """The bundle of adapters a workflow receives."""

    blobs: Blobs
    documents: Documents
    bus: Bus
    backend: str = "local"
    dataproc: Dataproc | None = None  # optional: the dedupe Spark path submits through it when configured

    def close(self) -> None:
        for part in (self.dataproc, self.bus, self.documents, self.blobs):
            close = getattr(part, "close", None)
            if callable(close):
                close()
