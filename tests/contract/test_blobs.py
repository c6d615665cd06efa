"""Blobs contract: the same tests over DirectoryBlobs and GcsBlobs (fake-gcs-server)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from backbeat.cloud.ports import BlobInfo, Blobs, NotFound, PreconditionFailed


@pytest.fixture
def bucket(blobs: Blobs, uid: str) -> str:
    name = f"bkt-{uid}"
    blobs.ensure_bucket(name)
    blobs.ensure_bucket(name)  # idempotent
    return name


def test_create_only_write_fails_the_second_time(blobs: Blobs, bucket: str) -> None:
    first = blobs.put(bucket, "hours/h1/a.avro", b"one", if_generation_match=0)
    assert first.generation > 0 and first.size == 3
    with pytest.raises(PreconditionFailed):
        blobs.put(bucket, "hours/h1/a.avro", b"two", if_generation_match=0)
    assert blobs.get(bucket, "hours/h1/a.avro") == b"one"
    info = blobs.stat(bucket, "hours/h1/a.avro")
    assert info is not None and info.generation == first.generation


def test_racing_creators_exactly_one_wins(blobs: Blobs, bucket: str) -> None:
    results: list[str] = []
    barrier = threading.Barrier(4)

    def create(i: int) -> None:
        barrier.wait()
        try:
            blobs.put(bucket, "lock", f"owner-{i}".encode(), if_generation_match=0)
            results.append(f"won-{i}")
        except PreconditionFailed:
            results.append("lost")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r.startswith("won")]
    assert len(winners) == 1 and results.count("lost") == 3
    assert blobs.get(bucket, "lock") == f"owner-{winners[0][4:]}".encode()


def test_generation_changes_on_overwrite_and_guards_replace(blobs: Blobs, bucket: str) -> None:
    g1 = blobs.put(bucket, "state.json", b"v1").generation
    g2 = blobs.put(bucket, "state.json", b"v2").generation
    assert g2 != g1
    with pytest.raises(PreconditionFailed):
        blobs.put(bucket, "state.json", b"stale writer", if_generation_match=g1)
    g3 = blobs.put(bucket, "state.json", b"v3", if_generation_match=g2).generation
    assert g3 not in (g1, g2)
    assert blobs.get(bucket, "state.json") == b"v3"
    assert blobs.get(bucket, "state.json", generation=g3) == b"v3"
    with pytest.raises(PreconditionFailed):  # replace-only on a missing object
        blobs.put(bucket, "missing.json", b"x", if_generation_match=g3)


def test_listing_by_prefix_in_name_order_across_pages(blobs: Blobs, bucket: str) -> None:
    names = [f"events/play/{i:03d}.avro" for i in range(13)] + [f"events/skip/{i}.avro" for i in range(4)]
    names += ["events-index", "other/x", "events/top"]
    for n in reversed(names):
        blobs.put(bucket, n, n.encode())
    listed = [b.name for b in blobs.list(bucket, "events/", page_size=5)]  # 18 items, 4 pages
    assert listed == sorted(n for n in names if n.startswith("events/"))
    assert len(listed) == 18
    everything = list(blobs.list(bucket, page_size=3))
    assert [b.name for b in everything] == sorted(names, key=str.encode)  # "events-index" < "events/..."
    assert all(isinstance(b, BlobInfo) and b.size == len(b.name) for b in everything)
    assert [b.name for b in blobs.list(bucket, "events/pl")] == [
        n for n in sorted(names) if n.startswith("events/pl")
    ]
    assert list(blobs.list(bucket, "nothing/")) == []


def test_list_prefixes(blobs: Blobs, bucket: str) -> None:
    for n in [
        "hours/2026-01-01T10/a",
        "hours/2026-01-01T10/b",
        "hours/2026-01-01T11/a",
        "hours/top",
        "z/q/r",
    ]:
        blobs.put(bucket, n, b"x")
    assert blobs.list_prefixes(bucket) == ["hours/", "z/"]
    assert blobs.list_prefixes(bucket, "hours/") == ["hours/2026-01-01T10/", "hours/2026-01-01T11/"]
    assert blobs.list_prefixes(bucket, "hours/2026-01-01T10/") == []


def test_delete(blobs: Blobs, bucket: str) -> None:
    g = blobs.put(bucket, "a/b/c", b"x").generation
    blobs.put(bucket, "a/keep", b"y")
    with pytest.raises(PreconditionFailed):
        blobs.delete(bucket, "a/b/c", if_generation_match=g + 1)
    blobs.delete(bucket, "a/b/c", if_generation_match=g)
    assert blobs.stat(bucket, "a/b/c") is None
    with pytest.raises(NotFound):
        blobs.get(bucket, "a/b/c")
    with pytest.raises(NotFound):
        blobs.delete(bucket, "a/b/c")
    assert [b.name for b in blobs.list(bucket)] == ["a/keep"]
    assert blobs.list_prefixes(bucket, "a/") == []  # no empty "folder" left behind


def test_put_file_download_to_and_metadata(blobs: Blobs, bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    payload = bytes(range(256)) * 5000  # 1.28 MB: more than one chunk
    src.write_bytes(payload)
    info = blobs.put_file(bucket, "big/file.bin", src, content_type="application/x-test",
                          metadata={"origin": "contract", "n": "1"})  # fmt: skip
    assert info.size == len(payload)
    stat = blobs.stat(bucket, "big/file.bin")
    assert stat is not None
    assert stat.generation == info.generation
    assert dict(stat.metadata) == {"origin": "contract", "n": "1"}
    assert stat.content_type == "application/x-test"
    dest = tmp_path / "out" / "copy.bin"
    got = blobs.download_to(bucket, "big/file.bin", dest)
    assert dest.read_bytes() == payload and got.generation == info.generation
    assert sorted(p.name for p in dest.parent.iterdir()) == ["copy.bin"]  # no temp file left
    with pytest.raises(NotFound):
        blobs.download_to(bucket, "big/missing.bin", tmp_path / "out" / "m.bin")
    assert not (tmp_path / "out" / "m.bin").exists()


def test_missing_objects_and_buckets(blobs: Blobs, bucket: str, uid: str) -> None:
    assert blobs.stat(bucket, "nope") is None
    with pytest.raises(NotFound):
        blobs.get(bucket, "nope")
    with pytest.raises(NotFound):
        blobs.put(f"absent-{uid}", "x", b"x")
