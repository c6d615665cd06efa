"""The contract suite's fixtures: every test runs once per adapter, ``local`` (tmp dirs) and
``gcp`` (official clients against the emulators, marked ``emulators``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from backbeat.cloud.ports import Blobs, Bus, Documents
from backbeat.settings import Settings

ADAPTERS = [pytest.param("local", id="local"), pytest.param("gcp", id="gcp", marks=pytest.mark.emulators)]


@pytest.fixture
def uid() -> str:
    """A short unique, lowercase token for bucket/collection/topic names (tests never share one)."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(params=ADAPTERS)
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Blobs]:
    if request.param == "local":
        from backbeat.cloud.local_blobs import DirectoryBlobs

        adapter: Blobs = DirectoryBlobs(tmp_path / "buckets")
    else:
        from backbeat.cloud.gcp_blobs import GcsBlobs

        fake_gcs = request.getfixturevalue("fake_gcs")
        adapter = GcsBlobs(
            Settings(backend="gcp", project="backbeat-test", storage_emulator_host=fake_gcs.url)
        )
    yield adapter
    adapter.close()  # type: ignore[attr-defined]


@pytest.fixture(params=ADAPTERS)
def documents(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Documents]:
    if request.param == "local":
        from backbeat.cloud.local_documents import SqliteDocuments

        adapter: Documents = SqliteDocuments(tmp_path / "documents.sqlite3")
    else:
        from backbeat.cloud.gcp_documents import FirestoreDocuments

        fs = request.getfixturevalue("firestore_emulator")
        adapter = FirestoreDocuments(
            Settings(backend="gcp", project="backbeat-test", firestore_emulator_host=fs.host)
        )
    yield adapter
    adapter.close()  # type: ignore[attr-defined]


@pytest.fixture(params=ADAPTERS)
def bus(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Bus]:
    if request.param == "local":
        from backbeat.cloud.local_bus import LocalBus

        adapter: Bus = LocalBus(tmp_path / "bus.sqlite3")
    else:
        from backbeat.cloud.gcp_bus import PubSubBus

        ps = request.getfixturevalue("pubsub_emulator")
        adapter = PubSubBus(Settings(backend="gcp", project="backbeat-test", pubsub_emulator_host=ps.host))
    yield adapter
    adapter.close()  # type: ignore[attr-defined]
