"""The ``gcp`` documents adapter: google-cloud-firestore (also against the Firestore emulator).

Transactions: each attempt is one Firestore transaction (reads first, writes buffered, committed
at the end). A conflict (``Aborted``, which the emulator also returns when two transactions
contend for a document) is retried here with jittered exponential backoff; after
``max_attempts`` :class:`TransactionConflict` is raised. Other errors are mapped to the typed
errors and not retried.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from backbeat.cloud._docvalues import (
    INEQUALITIES,
    check_collection,
    check_data,
    check_filters,
    split_document,
)
from backbeat.cloud._gcp import anonymous_credentials, emulator_env, map_error, mapped
from backbeat.cloud.ports import CloudError, Filter, TransactionConflict
from backbeat.settings import Settings

T = TypeVar("T")


def _update_paths(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level field names quoted as field paths, so ``{"a.b": 1}`` sets field ``a.b``, not ``a``->``b``."""
    from google.cloud.firestore_v1.field_path import FieldPath

    return {FieldPath(k).to_api_repr(): v for k, v in fields.items()}


class _FirestoreTxn:
    """The handle given to a transaction function (ports.Transaction)."""

    def __init__(self, client: Any, txn: Any) -> None:
        self._client = client
        self._txn = txn
        self._wrote = False

    def get(self, path: str) -> dict[str, Any] | None:
        if self._wrote:
            raise CloudError(
                f"transaction read of {path!r} after a write: do every read before the first write"
            )
        split_document(path)
        snap = self._client.document(path).get(transaction=self._txn)
        return snap.to_dict() if snap.exists else None

    def create(self, path: str, data: Mapping[str, Any]) -> None:
        split_document(path)
        self._wrote = True
        self._txn.create(self._client.document(path), check_data(path, data))

    def set(self, path: str, data: Mapping[str, Any]) -> None:
        split_document(path)
        self._wrote = True
        self._txn.set(self._client.document(path), check_data(path, data))

    def update(self, path: str, fields: Mapping[str, Any]) -> None:
        split_document(path)
        self._wrote = True
        self._txn.update(self._client.document(path), _update_paths(check_data(path, fields)))

    def delete(self, path: str) -> None:
        split_document(path)
        self._wrote = True
        self._txn.delete(self._client.document(path))


class FirestoreDocuments:
    """Firestore (Native mode) through the official client (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        from google.cloud import firestore

        self.settings = settings
        with emulator_env(settings):
            creds = anonymous_credentials() if settings.firestore_emulator_host else None
            self._client = firestore.Client(project=settings.project, credentials=creds)

    # ------------------------------------------------------------------------------ single calls
    def get(self, path: str) -> dict[str, Any] | None:
        split_document(path)
        with mapped(f"document {path!r}"):
            snap = self._client.document(path).get()
        return snap.to_dict() if snap.exists else None

    def create(self, path: str, data: Mapping[str, Any]) -> None:
        split_document(path)
        with mapped(f"document {path!r}"):
            self._client.document(path).create(check_data(path, data))

    def set(self, path: str, data: Mapping[str, Any]) -> None:
        split_document(path)
        with mapped(f"document {path!r}"):
            self._client.document(path).set(check_data(path, data))

    def update(self, path: str, fields: Mapping[str, Any]) -> None:
        split_document(path)
        with mapped(f"document {path!r}"):
            self._client.document(path).update(_update_paths(check_data(path, fields)))

    def delete(self, path: str) -> None:
        split_document(path)
        with mapped(f"document {path!r}"):
            self._client.document(path).delete()

    # ------------------------------------------------------------------------------ transactions
    def transaction(self, fn: Callable[[_FirestoreTxn], T], *, max_attempts: int = 10) -> T:
        from google.api_core import exceptions as gx
        from google.cloud import firestore

        last: BaseException | None = None
        for attempt in range(1, max(1, max_attempts) + 1):
            txn = self._client.transaction(max_attempts=1)

            @firestore.transactional
            def body(t: Any) -> T:
                return fn(_FirestoreTxn(self._client, t))

            try:
                return body(txn)
            except gx.Aborted as exc:  # contention on a read or at commit
                last = exc
            except ValueError as exc:  # the client's "failed to commit in 1 attempts" wraps Aborted
                if not isinstance(exc.__cause__, gx.Aborted):
                    raise
                last = exc.__cause__
            except CloudError:
                raise
            except gx.GoogleAPIError as exc:
                raise map_error(exc, "documents transaction") from exc
            time.sleep(min(2.0, 0.02 * 2**attempt) * (0.5 + random.random()))
        raise TransactionConflict(
            f"documents transaction still conflicting after {max_attempts} attempts: {last}"
        )

    # ------------------------------------------------------------------------------------ queries
    def query(
        self,
        collection: str,
        filters: Sequence[Filter] = (),
        *,
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[tuple[str, dict[str, Any]]]:
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        check_collection(collection)
        q: Any = self._client.collection(collection)
        flts = check_filters(filters)
        for field, op, value in flts:
            q = q.where(filter=FieldFilter(field, op, value))
        if not order_by and descending:  # the implicit order (inequality field, else id), reversed
            order_by = next((f for f, op, _ in flts if op in INEQUALITIES), "__name__")
        if order_by:
            direction = firestore.Query.DESCENDING if descending else firestore.Query.ASCENDING
            q = q.order_by(order_by, direction=direction)
        if limit is not None:
            if limit < 0:
                raise CloudError(f"query limit {limit} must be >= 0")
            if limit == 0:
                return []
            q = q.limit(limit)
        with mapped(f"query on {collection!r}"):
            return [(snap.reference.path, snap.to_dict() or {}) for snap in q.stream()]

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if callable(close):
            close()

    def __repr__(self) -> str:
        s = self.settings
        return f"FirestoreDocuments(project={s.project!r}, emulator={s.firestore_emulator_host!r})"
