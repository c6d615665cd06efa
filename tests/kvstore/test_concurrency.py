"""Many readers at once (threads and processes) and switching versions under them."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from backbeat.kvstore import PublishError, Reader, write_store
from backbeat.kvstore.publish import LocalStore, StoreCache, publish_blobs, publish_local
from tests.kvstore.conftest import sample_pairs

PAIRS = sample_pairs(5000, seed=11)


@pytest.mark.parametrize("compression", ["none", "snappy", "zstd"])
def test_one_reader_shared_by_threads(tmp_path: Path, compression: str) -> None:
    write_store(PAIRS, tmp_path / "s.spl", compression=compression, block_size=512)
    errors: list[str] = []
    with Reader(tmp_path / "s.spi") as r:

        def work(offset: int) -> None:
            for k, v in PAIRS[offset::8]:
                if r.get(k) != v:
                    errors.append(f"get {k!r}")
            if r.get_many([k for k, _ in PAIRS[offset::16]]) != [v for _, v in PAIRS[offset::16]]:
                errors.append("get_many")

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def _child(index: str, offset: int, queue: multiprocessing.Queue) -> None:
    with Reader(index) as r:
        bad = sum(1 for k, v in PAIRS[offset::4] if r.get(k) != v)
    queue.put(bad)


def test_reader_processes_on_one_store(tmp_path: Path) -> None:
    write_store(PAIRS, tmp_path / "s.spl", compression="snappy")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(str(tmp_path / "s.spi"), i, queue)) for i in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results == [0, 0, 0, 0] and all(p.exitcode == 0 for p in procs)


def test_local_publish_switches_readers_to_the_new_version(tmp_path: Path) -> None:
    root = tmp_path / "served"
    write_store({b"k": b"v1", b"only-old": b"x"}, tmp_path / "a.spl")
    v1 = publish_local(tmp_path / "a.spl", tmp_path / "a.spi", root)
    store = LocalStore(root)
    old = store.reader()
    assert store.get(b"k") == b"v1" and store.version == v1
    write_store({b"k": b"v2"}, tmp_path / "b.spl")
    v2 = publish_local(tmp_path / "b.spl", tmp_path / "b.spi", root)
    assert store.get(b"k") == b"v2" and store.get(b"only-old") is None and store.version == v2
    assert old.get(b"k") == b"v1"  # a reader still in use keeps its version
    assert store.reader() is store.reader()
    with pytest.raises(PublishError, match="never overwritten"):
        publish_local(tmp_path / "b.spl", tmp_path / "b.spi", root, version=v2)


def test_publish_through_the_blobs_port(tmp_path: Path) -> None:
    from backbeat.cloud.local_blobs import DirectoryBlobs

    blobs = DirectoryBlobs(tmp_path / "buckets")
    blobs.ensure_bucket("kv-test")
    write_store({b"k": b"v1"}, tmp_path / "a.spl", compression="zstd")
    first = publish_blobs(blobs, "kv-test", "stores/x", tmp_path / "a.spl", tmp_path / "a.spi")
    cache = StoreCache(blobs, "kv-test", "stores/x", tmp_path / "cache")
    other = StoreCache(blobs, "kv-test", "stores/x", tmp_path / "cache")  # a second process on the same disk
    assert cache.get(b"k") == b"v1" and cache.get(b"k") == b"v1" and cache.downloads == 1
    assert other.get(b"k") == b"v1" and other.downloads == 0  # already on disk: no second download
    write_store({b"k": b"v2"}, tmp_path / "b.spl")
    second = publish_blobs(blobs, "kv-test", "stores/x", tmp_path / "b.spl", tmp_path / "b.spi")
    assert cache.get(b"k") == b"v2" and cache.version == second.version and cache.downloads == 2
    # a publisher that read the pointer before `second` switched it loses, and says so
    with pytest.raises(PublishError, match="another publisher won"):
        publish_blobs(
            blobs,
            "kv-test",
            "stores/x",
            tmp_path / "a.spl",
            tmp_path / "a.spi",
            expected_generation=first.pointer_generation,
        )
    assert cache.get(b"k") == b"v2"
    names = sorted(b.name for b in blobs.list("kv-test", "stores/x/"))
    assert names[0] == "stores/x/CURRENT" and sum(n.endswith(".spl") for n in names) == 3
