"""Ports and adapters to the platform (see ``ports.py``).

``connect()`` builds the :class:`~backbeat.cloud.ports.Platform` that the settings select. The
adapters are imported lazily: a function on the ``local`` backend never imports a Google client,
and one on ``gcp`` only imports the clients it uses.
"""

from __future__ import annotations

from backbeat.cloud.ports import (
    AlreadyExists,
    BlobInfo,
    Blobs,
    Bus,
    CloudError,
    Documents,
    Message,
    NotFound,
    Platform,
    PreconditionFailed,
    TransactionConflict,
    TransientError,
)
from backbeat.settings import Settings, get_settings

__all__ = [
    "AlreadyExists",
    "BlobInfo",
    "Blobs",
    "Bus",
    "CloudError",
    "Documents",
    "Message",
    "NotFound",
    "Platform",
    "PreconditionFailed",
    "TransactionConflict",
    "TransientError",
    "connect",
]


def connect(settings: Settings | None = None) -> Platform:
    """The blobs, documents, bus and dataproc adapters of the selected backend.

    The dataproc adapter builds its Google client on first use (``gcp``), and the local one starts
    no process until a job is submitted: neither costs a function that never submits a job."""
    settings = settings or get_settings()
    if settings.backend == "gcp":
        from backbeat.cloud.gcp_blobs import GcsBlobs
        from backbeat.cloud.gcp_bus import PubSubBus
        from backbeat.cloud.gcp_dataproc import GcpDataproc
        from backbeat.cloud.gcp_documents import FirestoreDocuments

        return Platform(
            blobs=GcsBlobs(settings),
            documents=FirestoreDocuments(settings),
            bus=PubSubBus(settings),
            backend="gcp",
            dataproc=GcpDataproc(),
        )
    from backbeat.cloud.local_blobs import DirectoryBlobs
    from backbeat.cloud.local_bus import LocalBus
    from backbeat.cloud.local_dataproc import LocalDataproc
    from backbeat.cloud.local_documents import SqliteDocuments

    root = settings.data_dir
    blobs = DirectoryBlobs(root / "buckets")
    return Platform(
        blobs=blobs,
        documents=SqliteDocuments(root / "documents.sqlite3"),
        bus=LocalBus(root / "bus.sqlite3"),
        backend="local",
        dataproc=LocalDataproc(blobs, root / "dataproc", auto_clusters=True),
    )
