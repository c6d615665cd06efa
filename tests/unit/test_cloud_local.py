"""What only the local adapters promise: files where the settings say, survival across restarts
and processes, crash recovery of the bus, and clear errors for names a filesystem cannot hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from backbeat.cloud import connect
from backbeat.cloud.local_blobs import DirectoryBlobs
from backbeat.cloud.local_bus import LocalBus
from backbeat.cloud.local_documents import SqliteDocuments
from backbeat.cloud.ports import CloudError, Message, PreconditionFailed
from backbeat.settings import Settings


def _run_python(code: str, *args: str) -> subprocess.Popen[str]:
    pipe = subprocess.PIPE
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=pipe, stderr=pipe, text=True)


# ------------------------------------------------------------------------------------------ blobs
def test_objects_are_plain_files_where_the_settings_say(tmp_path: Path) -> None:
    platform = connect(Settings(backend="local", data_dir=tmp_path))
    platform.blobs.ensure_bucket("events")
    platform.blobs.put("events", "hours/h1/part-0.avro", b"abc", metadata={"k": "v"})
    assert (tmp_path / "buckets" / "events" / "hours" / "h1" / "part-0.avro").read_bytes() == b"abc"
    # nothing but objects in the bucket folder: temp files and sidecars live elsewhere
    files = [
        p.relative_to(tmp_path / "buckets" / "events") for p in (tmp_path / "buckets" / "events").rglob("*")
    ]
    assert sorted(str(f) for f in files) == ["hours", "hours/h1", "hours/h1/part-0.avro"]
    platform.close()


def test_generations_and_metadata_survive_a_restart(tmp_path: Path) -> None:
    a = DirectoryBlobs(tmp_path)
    a.ensure_bucket("bkt")
    info = a.put("bkt", "x", b"1", metadata={"m": "1"}, content_type="text/plain")
    b = DirectoryBlobs(tmp_path)  # a new process would see the same
    again = b.stat("bkt", "x")
    assert again is not None
    assert (again.generation, dict(again.metadata), again.content_type) == (
        info.generation,
        {"m": "1"},
        "text/plain",
    )
    with pytest.raises(PreconditionFailed):
        b.put("bkt", "x", b"2", if_generation_match=info.generation + 1)
    # a file replaced by hand gets a new generation and loses the stale metadata
    target = tmp_path / "bkt" / "x"
    target.write_bytes(b"by hand")
    os.utime(target, ns=(info.generation + 5, info.generation + 5))
    hand = b.stat("bkt", "x")
    assert hand is not None and hand.generation != info.generation and dict(hand.metadata) == {}


def test_create_only_across_processes_has_one_winner(tmp_path: Path) -> None:
    DirectoryBlobs(tmp_path).ensure_bucket("bkt")
    code = (
        "import sys\nfrom backbeat.cloud.local_blobs import DirectoryBlobs\n"
        "from backbeat.cloud.ports import PreconditionFailed\n"
        "b = DirectoryBlobs(sys.argv[1])\n"
        "try:\n    b.put('bkt', 'lock', sys.argv[2].encode(), if_generation_match=0); print('won')\n"
        "except PreconditionFailed:\n    print('lost')\n"
    )
    procs = [_run_python(code, str(tmp_path), f"p{i}") for i in range(4)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(outs) == ["lost", "lost", "lost", "won"]
    winner = outs.index("won")
    assert DirectoryBlobs(tmp_path).get("bkt", "lock") == f"p{winner}".encode()


@pytest.mark.parametrize("name", ["", "/abs", "a//b", "a/../b", "./a", "trailing/", "nul\0byte"])
def test_names_a_directory_cannot_hold_are_typed_errors(tmp_path: Path, name: str) -> None:
    blobs = DirectoryBlobs(tmp_path)
    blobs.ensure_bucket("bkt")
    with pytest.raises(CloudError, match="bkt"):
        blobs.put("bkt", name, b"x")
    assert list(blobs.list("bkt")) == []


def test_object_that_is_also_a_folder_is_a_typed_error(tmp_path: Path) -> None:
    blobs = DirectoryBlobs(tmp_path)
    blobs.ensure_bucket("bkt")
    blobs.put("bkt", "a", b"file")
    with pytest.raises(CloudError, match="gs://bkt/a/b"):
        blobs.put("bkt", "a/b", b"x")
    blobs.put("bkt", "d/e", b"x")
    with pytest.raises(CloudError, match="gs://bkt/d"):
        blobs.put("bkt", "d", b"x")
    with pytest.raises(CloudError, match="bucket name"):
        blobs.ensure_bucket("Bad_Bucket!")


# -------------------------------------------------------------------------------------- documents
def test_documents_transactions_are_serialisable_across_processes(tmp_path: Path) -> None:
    db = tmp_path / "docs.sqlite3"
    SqliteDocuments(db).set("c/counter", {"n": 0})
    code = (
        "import sys\nfrom backbeat.cloud.local_documents import SqliteDocuments\n"
        "d = SqliteDocuments(sys.argv[1])\n"
        "def inc(t):\n    n = t.get('c/counter')['n']\n    t.set('c/counter', {'n': n + 1})\n"
        "for _ in range(25):\n    d.transaction(inc)\n"
    )
    procs = [_run_python(code, str(db)) for _ in range(3)]
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert SqliteDocuments(db).get("c/counter") == {"n": 75}


def test_non_json_values_are_rejected_naming_the_field(tmp_path: Path) -> None:
    docs = SqliteDocuments(tmp_path / "d.sqlite3")
    with pytest.raises(CloudError, match=r"c/d\.when"):
        docs.set("c/d", {"when": object()})
    with pytest.raises(CloudError, match="operator"):
        docs.query("c", [("n", "~=", 1)])
    assert docs.get("c/d") is None


# -------------------------------------------------------------------------------------------- bus
def test_publish_delivers_synchronously_including_chained_messages(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "bus.sqlite3")
    for t in ("stage1", "stage2"):
        bus.ensure_topic(t)
    seen: list[str] = []

    def first(m: Message) -> None:
        seen.append("1:" + m.data.decode())
        bus.publish("stage2", m.data + b"!", {"from": "stage1"})  # no recursion: delivered after return
        seen.append("1 done")

    bus.subscribe("stage1", "sub1", first)
    bus.subscribe("stage2", "sub2", lambda m: seen.append("2:" + m.data.decode() + m.attributes["from"]))
    bus.publish("stage1", b"go")
    assert seen == ["1:go", "1 done", "2:go!stage1"]  # all done before publish returned
    assert bus.stats()["pending"] == 0


def test_subscription_keeps_its_backlog_while_no_handler_is_attached(tmp_path: Path) -> None:
    path = tmp_path / "bus.sqlite3"
    bus = LocalBus(path)
    bus.ensure_topic("tick")
    bus.publish("tick", b"before any subscription")  # Pub/Sub drops it: nobody subscribed
    sub = bus.subscribe("tick", "worker", lambda m: None)
    sub.close()
    bus.publish("tick", b"queued-1", {"n": "1"})
    bus.publish("tick", b"queued-2", {"n": "2"})
    assert bus.stats()["pending"] == 2
    bus.close()
    got: list[bytes] = []
    LocalBus(path).subscribe("tick", "worker", lambda m: got.append(m.data))  # after a "restart"
    assert got == [b"queued-1", b"queued-2"]


def test_a_delivery_held_by_a_crashed_process_is_redelivered(tmp_path: Path) -> None:
    path = tmp_path / "bus.sqlite3"
    bus = LocalBus(path)
    bus.ensure_topic("jobs")
    bus.subscribe("jobs", "workers", lambda m: None).close()
    bus.publish("jobs", b"work", {"id": "7"})
    code = (
        "import os, sys\nfrom backbeat.cloud.local_bus import LocalBus\n"
        "b = LocalBus(sys.argv[1])\n"
        "b.subscribe('jobs', 'workers', lambda m: os._exit(3))  # dies mid-delivery\n"
    )
    p = _run_python(code, str(path))
    p.communicate(timeout=60)
    assert p.returncode == 3
    assert bus.stats()["leased"] == 1
    got: list[Message] = []
    fresh = LocalBus(path)
    fresh.subscribe("jobs", "workers", got.append)
    fresh.drain(timeout_s=10)
    assert [(m.data, dict(m.attributes), m.delivery_attempt) for m in got] == [(b"work", {"id": "7"}, 2)]


def test_without_a_dead_letter_topic_poison_messages_are_parked(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "bus.sqlite3")
    bus.ensure_topic("t-poison")
    calls: list[int] = []

    def bad(m: Message) -> None:
        calls.append(m.delivery_attempt)
        raise ValueError("always")

    bus.subscribe(
        "t-poison", "s-poison", bad, max_delivery_attempts=5, min_backoff_s=0.01, max_backoff_s=0.02
    )
    bus.publish("t-poison", b"x")
    bus.drain(timeout_s=5)
    assert calls == [1, 2, 3, 4, 5]
    assert bus.stats()["dead"] == 1 and bus.stats()["pending"] == 0


def test_background_delivery_mode_and_other_process_publishers(tmp_path: Path) -> None:
    path = tmp_path / "bus.sqlite3"
    bus = LocalBus(path, synchronous=False, poll_interval_s=0.05)
    bus.ensure_topic("feed")
    got: list[bytes] = []
    done = threading.Event()

    def handler(m: Message) -> None:
        got.append(m.data)
        if len(got) == 3:
            done.set()

    bus.subscribe("feed", "reader", handler)
    code = (
        "import sys\nfrom backbeat.cloud.local_bus import LocalBus\n"
        "b = LocalBus(sys.argv[1])\n"
        "for i in range(3):\n    b.publish('feed', f'm{i}'.encode())\n"
    )
    p = _run_python(code, str(path))
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert done.wait(20), got
    assert sorted(got) == [b"m0", b"m1", b"m2"]
    bus.close()


def test_bad_names_and_attributes_are_typed_errors(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "bus.sqlite3")
    with pytest.raises(CloudError, match="topic name"):
        bus.ensure_topic("x")
    bus.ensure_topic("good-topic")
    with pytest.raises(CloudError, match="attribute"):
        bus.publish("good-topic", b"x", {"n": 1})  # type: ignore[dict-item]
    with pytest.raises(CloudError, match="bytes"):
        bus.publish("good-topic", "text")  # type: ignore[arg-type]


def test_stats_reports_json_able_counts(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "bus.sqlite3")
    bus.ensure_topic("abc")
    assert json.loads(json.dumps(bus.stats())) == {"pending": 0, "leased": 0, "dead": 0, "topics": 1,
                                                   "subscriptions": 0}  # fmt: skip


def test_listing_prefixes_cannot_escape_the_bucket(tmp_path: Path) -> None:
    blobs = DirectoryBlobs(tmp_path)
    for b in ("bkt", "secret"):
        blobs.ensure_bucket(b)
    blobs.put("secret", "key", b"s")
    with pytest.raises(CloudError, match="prefix"):
        list(blobs.list("bkt", "../secret/"))
    with pytest.raises(CloudError, match="prefix"):
        blobs.list_prefixes("bkt", "../")


def test_non_durable_mode_keeps_the_same_semantics(tmp_path: Path) -> None:
    blobs = DirectoryBlobs(tmp_path, durable=False)
    blobs.ensure_bucket("bkt")
    g = blobs.put("bkt", "a", b"1", if_generation_match=0, metadata={"m": "x"}).generation
    with pytest.raises(PreconditionFailed):
        blobs.put("bkt", "a", b"2", if_generation_match=0)
    assert blobs.put("bkt", "a", b"3", if_generation_match=g).generation > g
    assert blobs.get("bkt", "a") == b"3"
    blobs.delete("bkt", "a")
    assert blobs.stat("bkt", "a") is None


def test_messages_nobody_subscribed_to_are_not_kept(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "bus.sqlite3")
    bus.ensure_topic("lonely")
    assert bus.publish("lonely", b"x") != bus.publish("lonely", b"y")  # ids stay unique
    bus.close()
    import sqlite3

    with sqlite3.connect(tmp_path / "bus.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone() == (0,)
